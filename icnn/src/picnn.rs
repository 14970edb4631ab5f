//! `Picnn`: partially input-convex network (reference `PICNN`), convex in `x` for every
//! context `c`.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::activation::{Activation, ActivationKind, softplus};
use crate::actnorm::ActNorm;
use crate::actnorm_init::{ActNormInit, check_context_rows, check_input_rows};
use crate::common::{chain_groups_with_actnorms, check_dense_sizes};
use crate::error::{IcnnError, Result};
use crate::icnn2::Icnn2Config;
use crate::layers::{Linear, PosLinear};
use crate::linearization::Linearization;
use crate::network::{GroupAct, GroupContext, Network};
use crate::parameter_count as pc;
use crate::traits::ConditionalConvexPotential;

/// Configuration of [`Picnn`] (reference `PICNN(dim, dimh, dimc, num_hidden_layers,
/// symm_act_first, softplus_type, zero_softplus)`; the reference's default activation is the
/// gaussian softplus).
///
/// ```
/// use icnn::{ActivationKind, ConditionalConvexPotential, IcnnError, Picnn, PicnnConfig};
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// // The reference's PICNN uses the Gaussian softplus by default.
/// assert_eq!(PicnnConfig::default().activation, ActivationKind::GaussianSoftplus);
/// let config = PicnnConfig { dim: 2, context_dim: 3, width: 8, depth: 2, ..Default::default() };
/// let net = Picnn::new(vb.pp("picnn"), &config, &mut rng)?;
/// assert_eq!((net.dim(), net.context_dim()), (2, 3));
/// let x = Tensor::new(&[[0.5f64, 1.0], [-1.0, 0.0]], &Device::Cpu)?;
/// let c = Tensor::new(&[[1.0f64, 0.0, 2.0], [0.0, -1.0, 0.5]], &Device::Cpu)?;
/// assert_eq!(net.potential_with_context(&x, &c)?.dims(), &[2]);
/// let bad = PicnnConfig { context_dim: 0, ..config };
/// assert!(matches!(Picnn::new(vb.pp("bad"), &bad, &mut rng), Err(IcnnError::InvalidConfig(_))));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PicnnConfig {
    /// Input dimension `d` (the convex argument).
    pub dim: usize,
    /// Context dimension `d_c`.
    pub context_dim: usize,
    /// Hidden width `h`.
    pub width: usize,
    /// Number of hidden layers `L`, at least 1.
    pub depth: usize,
    /// Activation `s`.
    pub activation: ActivationKind,
    /// Shift the activation to 0 at 0 (`zero_softplus`).
    pub zero_shift: bool,
    /// Use `s(x) − x/2` on the first layer (`symm_act_first`).
    pub symm_act_first: bool,
}

impl Default for PicnnConfig {
    fn default() -> Self {
        Self {
            dim: 2,
            context_dim: 2,
            width: 64,
            depth: 10,
            activation: ActivationKind::GaussianSoftplus,
            zero_shift: false,
            symm_act_first: false,
        }
    }
}

impl PicnnConfig {
    /// Scalar parameters of the network this configuration builds (the `initialized` flag
    /// excluded), counted without building it; saturates at `usize::MAX`. The constructor
    /// refuses a count over [`crate::MAX_MODEL_PARAMETERS`].
    ///
    /// ```
    /// let config = icnn::PicnnConfig { dim: 2, context_dim: 3, width: 8, depth: 3, ..Default::default() };
    /// assert_eq!(config.parameter_count(), 738);
    /// ```
    pub fn parameter_count(&self) -> usize {
        let (d, dc, h, l) = (self.dim, self.context_dim, self.width, self.depth);
        let hidden = l.saturating_sub(1);
        // The convex path has `Icnn2`'s layers and ActNorms.
        let convex = Icnn2Config {
            dim: d,
            width: h,
            depth: l,
            ..Default::default()
        };
        pc::sum([
            convex.parameter_count(),
            // The context path and its gates.
            pc::linear(dc, h, true),
            pc::mul(l, pc::linear(h, h, true)),
            pc::mul(l, pc::linear(h, d, true)),
            pc::mul(hidden, pc::linear(h, h, true)),
            pc::actnorm(h),
        ])
    }

    /// Checks the configuration without building anything: `dim`, `context_dim`, `width`
    /// and `depth` at least 1, at most [`crate::MAX_MODEL_PARAMETERS`] parameters.
    /// [`Picnn::new`] runs this first and refuses with the same error.
    ///
    /// ```
    /// use icnn::PicnnConfig;
    /// assert!(PicnnConfig::default().validate().is_ok());
    /// let err = PicnnConfig { context_dim: 0, ..Default::default() }.validate().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid configuration: context_dim must be at least 1");
    /// ```
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("dim", self.dim),
            ("context_dim", self.context_dim),
            ("width", self.width),
            ("depth", self.depth),
        ];
        check_dense_sizes("Picnn", &sizes, self.parameter_count())
    }
}

/// The reference's `PICNN`, convex in `x` given the context `c`:
/// ```text
/// c̄ = ELU(AN_c(W_c c + b_c))
/// z₁ = s̃(AN₀(W₀x + b₀))
/// z_{k+1} = s(AN_k(PosLin_k(z_k ⊙ cz_k) + A_k(x ⊙ cx_k) + W_cc,k c̄))     k = 1..L−1
///   cz_k = sp(W_cz,k c̄ + e⁻¹) ≥ 0,   cx_k = W_cx,k c̄ + 1
/// F(x; c) = AN_L(PosLin_L(z_L ⊙ cz_L) + aᵀ(x ⊙ cx_L)),   cz_L = sp(W_cz,L c̄ + ln(e − 1))
/// ```
/// The gate layers `W_cz`, `W_cx` are zero-initialised (weights and biases), so at init the
/// gates are constants. Parameter names: `Wzs.*`, `Wxs.*` as [`crate::Icnn2`], `Wcs.0.*`
/// (h×d_c), `Wczs.k.*` (h×h, k = 0..L−1), `Wcxs.k.*` (d×h), `Wccs.k.*` (h×h, k = 0..L−2),
/// `actnorm0.*`, `actnorms.k.*`, `actnormc.*`, `initialized`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{ConditionalConvexPotential, Picnn, PicnnConfig};
/// use rand::SeedableRng;
///
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let config = PicnnConfig { dim: 2, context_dim: 1, width: 8, depth: 2, ..Default::default() };
/// let net = Picnn::new(vb.pp("picnn"), &config, &mut rand::rngs::StdRng::seed_from_u64(4))?;
/// let x = Tensor::new(&[[0.0f64, 1.0], [1.0, -1.0]], &Device::Cpu)?;
/// let c = Tensor::new(&[[0.3f64], [-0.7]], &Device::Cpu)?;
/// let lin = net.linearize_with_context(&x, &c)?;
/// assert_eq!(lin.hessian()?.dims(), &[2, 2, 2]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Picnn {
    pub(crate) net: Network,
    wc: Linear,
    actnorm_c: ActNorm,
    wcz: Vec<Linear>,
    wcx: Vec<Linear>,
    wcc: Vec<Linear>,
    config: PicnnConfig,
}

impl Picnn {
    /// Creates (or loads) the parameters, drawing initial values from `rng`.
    pub fn new<R: Rng + ?Sized>(vb: VarBuilder, config: &PicnnConfig, rng: &mut R) -> Result<Self> {
        config.validate()?;
        let (d, dc, h, l) = (config.dim, config.context_dim, config.width, config.depth);
        let act = Activation::new(config.activation).with_zero_shift(config.zero_shift);
        let first = act.with_symmetric(config.symm_act_first);
        let (vz, vx) = (vb.pp("Wzs"), vb.pp("Wxs"));
        let w0 = Linear::new(&vz.pp(0), d, h, true, rng)?;
        let pos = (1..l)
            .map(|k| PosLinear::new(&vz.pp(k), h, h, true, rng))
            .collect::<Result<Vec<_>>>()?;
        let pos_out = PosLinear::new(&vz.pp(l), h, 1, false, rng)?;
        let lins = (1..l)
            .map(|k| Linear::new(&vx.pp(k - 1), d, h, true, rng))
            .collect::<Result<Vec<_>>>()?;
        let lin_out = Linear::new(&vx.pp(l - 1), d, 1, false, rng)?;
        let wc = Linear::new(&vb.pp("Wcs").pp(0), dc, h, true, rng)?;
        let wcz = (0..l)
            .map(|k| Linear::new_zeros(&vb.pp("Wczs").pp(k), h, h))
            .collect::<Result<Vec<_>>>()?;
        let wcx = (0..l)
            .map(|k| Linear::new_zeros(&vb.pp("Wcxs").pp(k), h, d))
            .collect::<Result<Vec<_>>>()?;
        let wcc = (0..l.saturating_sub(1))
            .map(|k| Linear::new(&vb.pp("Wccs").pp(k), h, h, true, rng))
            .collect::<Result<Vec<_>>>()?;
        let groups = chain_groups_with_actnorms(
            &vb,
            (w0, GroupAct::Nonlinear(first)),
            pos.into_iter().zip(lins).collect(),
            GroupAct::Nonlinear(act),
            (pos_out, lin_out),
            false,
        )?;
        let actnorm_c = ActNorm::new(&vb.pp("actnormc"), h)?;
        Ok(Self {
            net: Network::new(&vb, groups, d)?,
            wc,
            actnorm_c,
            wcz,
            wcx,
            wcc,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PicnnConfig {
        &self.config
    }

    /// Whether the ActNorm data-dependent initialisation has run.
    pub fn is_initialized(&self) -> Result<bool> {
        self.net.is_initialized()
    }

    /// Sets the `initialized` flag without touching the ActNorm parameters.
    pub fn mark_initialized(&self) -> Result<()> {
        self.net.set_initialized(true)
    }

    /// Runs the data-dependent ActNorm initialisation on `(x, c)` now (also the context
    /// ActNorm), even if it already ran, and sets the flag.
    ///
    /// Otherwise it runs on the first `potential_with_context`/`linearize_with_context` call,
    /// and the batch of that call becomes the network's normalisation for good. Should
    /// several threads make their first calls at once, one of their batches initialises
    /// (which one is up to the scheduler) and every call computes with the network it wrote;
    /// call `initialize` on a batch of your choosing before sharing the network to decide it
    /// (an explicit call replaces any init before it, a lazy one included).
    ///
    /// The batch needs at least 2 distinct points `x`, finite `x` and `c`, and contexts that
    /// are not all the same (the context ActNorm standardises them); otherwise this is an
    /// [`IcnnError::Initialization`] and nothing is written.
    pub fn initialize(&self, x: &Tensor, c: &Tensor) -> Result<()> {
        let stats = self.init_statistics(x, c)?;
        self.net.init_lock().write(|| self.write_init(&stats))
    }

    /// The statistics of the init on `(x, c)`: the context ActNorm's, then the network's
    /// (computed with the context ActNorm applied). Nothing is written.
    fn init_statistics(&self, x: &Tensor, c: &Tensor) -> Result<PicnnInit> {
        self.check_context(x, c)?;
        check_input_rows("input", x)?;
        check_context_rows("context", c)?;
        let c = c.detach();
        let wc = self.wc.forward_unchecked(&c)?;
        let context = self.actnorm_c.statistics(&wc)?;
        let ctx = self.contexts_from_features(&context.forward(&wc)?.elu(1.0)?)?;
        let network = self.net.init_statistics(x, Some(&ctx))?;
        Ok(PicnnInit { context, network })
    }

    /// Writes statistics from [`Self::init_statistics`] and sets the flag.
    fn write_init(&self, stats: &PicnnInit) -> Result<()> {
        self.actnorm_c.write(&stats.context)?;
        self.net.write_init(&stats.network)
    }

    fn check_context(&self, x: &Tensor, c: &Tensor) -> Result<()> {
        self.net.check_input(x)?;
        let b = x.dims()[0];
        let dc = self.config.context_dim;
        if c.dims() != [b, dc] || c.dtype() != self.net.dtype() {
            return Err(IcnnError::Shape(format!(
                "context: expected ({b}, {dc}) {:?}, got {:?} {:?}",
                self.net.dtype(),
                c.dims(),
                c.dtype()
            )));
        }
        crate::layer_input::check_device("context", c, self.net.initialized_flag())
    }

    /// Gates and biases of every group for the context batch `c`, checked by
    /// [`Self::check_context`] (the layers' own input checks are skipped).
    fn contexts(&self, c: &Tensor) -> Result<Vec<GroupContext>> {
        let wc = self.wc.forward_unchecked(c)?;
        self.contexts_from_features(&self.actnorm_c.forward_unchecked(&wc)?.elu(1.0)?)
    }

    /// Gates and biases of every group from the context features `c̄` `(B, h)` (computed by
    /// the context layers from a checked context: the gates skip their input checks).
    fn contexts_from_features(&self, cf: &Tensor) -> Result<Vec<GroupContext>> {
        let l = self.config.depth;
        let mut ctx = Vec::with_capacity(l + 1);
        ctx.push(GroupContext::default());
        for k in 0..l {
            let shift = if k + 1 == l {
                (std::f64::consts::E - 1.0).ln()
            } else {
                (-1.0f64).exp()
            };
            let gate_z = softplus(&self.wcz[k].forward_unchecked(cf)?.affine(1.0, shift)?)?;
            let gate_x = self.wcx[k].forward_unchecked(cf)?.affine(1.0, 1.0)?;
            let bias = match self.wcc.get(k) {
                Some(w) => Some(w.forward_unchecked(cf)?),
                None => None,
            };
            ctx.push(GroupContext {
                gate_z: Some(gate_z),
                gate_x: Some(gate_x),
                bias,
            });
        }
        Ok(ctx)
    }

    /// Initialises on `(x, c)` unless the flag is set ([`Network::ensure_initialized`]'s
    /// rule: of racing first calls, one writes).
    fn ensure_initialized(&self, x: &Tensor, c: &Tensor) -> Result<()> {
        self.net.init_lock().ensure(
            || self.net.is_initialized(),
            || self.init_statistics(x, c),
            |stats| self.write_init(&stats),
        )
    }
}

/// The ActNorm statistics of a [`Picnn`] init: the context ActNorm's and the network's.
struct PicnnInit {
    context: ActNormInit,
    network: Vec<Option<ActNormInit>>,
}

impl ConditionalConvexPotential for Picnn {
    fn potential_with_context(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        self.check_context(x, c)?;
        self.ensure_initialized(x, c)?;
        let ctx = self.contexts(c)?;
        self.net.potential(x, Some(&ctx))
    }

    fn linearize_with_context(&self, x: &Tensor, c: &Tensor) -> Result<Linearization> {
        self.check_context(x, c)?;
        self.ensure_initialized(x, c)?;
        let ctx = self.contexts(c)?;
        self.net.linearize(x, Some(&ctx), true)
    }

    fn dim(&self) -> usize {
        self.net.dim
    }

    fn context_dim(&self) -> usize {
        self.config.context_dim
    }
}
