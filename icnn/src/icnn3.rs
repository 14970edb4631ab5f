//! `Icnn3`: the input-augmented ICNN of the paper's eq. (7) (reference `ICNN3`).

use candle_nn::VarBuilder;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::activation::{Activation, ActivationKind};
use crate::actnorm::ActNorm;
use crate::common::{check_dense_sizes, check_even_width, impl_unconditional};
use crate::error::Result;
use crate::layers::{Linear, PosLinear};
use crate::network::{GroupAct, GroupSpec, Network};
use crate::parameter_count as pc;

/// Configuration of [`Icnn3`] (reference `ICNN3(dim, dimh, num_hidden_layers,
/// symm_act_first, softplus_type, zero_softplus)`). `width` must be even.
///
/// ```
/// use icnn::{ConvexPotential, Icnn3, Icnn3Config, IcnnError};
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let config = Icnn3Config { dim: 3, width: 8, depth: 3, ..Default::default() };
/// let net = Icnn3::new(vb.pp("icnn"), &config, &mut rng)?;
/// // Rows a, b and their midpoint: convexity gives F(m) ≤ (F(a) + F(b))/2.
/// let x = Tensor::new(&[[1.0f64, -2.0, 0.5], [-1.0, 0.0, 2.0], [0.0, -1.0, 1.25]], &Device::Cpu)?;
/// let f = net.potential(&x)?.to_vec1::<f64>()?;
/// assert!(f[2] <= 0.5 * (f[0] + f[1]) + 1e-12);
/// // Each hidden layer splits its units in two halves: the width must be even.
/// let odd = Icnn3Config { width: 7, ..config };
/// assert!(matches!(Icnn3::new(vb.pp("odd"), &odd, &mut rng), Err(IcnnError::InvalidConfig(_))));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Icnn3Config {
    /// Input dimension `d`.
    pub dim: usize,
    /// Hidden width `h` (even): each hidden layer has `h/2` convex units and `h/2`
    /// input-augmented units.
    pub width: usize,
    /// Number of hidden layers `L`, at least 1.
    pub depth: usize,
    /// Activation `s`.
    pub activation: ActivationKind,
    /// Shift the activation to 0 at 0 (`zero_softplus`).
    pub zero_shift: bool,
    /// Use `s(x) − x/2` on the first layer and on the augmented units (`symm_act_first`).
    pub symm_act_first: bool,
}

impl Default for Icnn3Config {
    fn default() -> Self {
        Self {
            dim: 2,
            width: 64,
            depth: 10,
            activation: ActivationKind::Softplus,
            zero_shift: false,
            symm_act_first: false,
        }
    }
}

impl Icnn3Config {
    /// Scalar parameters of the network this configuration builds (the `initialized` flag
    /// excluded), counted without building it; saturates at `usize::MAX`. The constructor
    /// refuses a count over [`crate::MAX_MODEL_PARAMETERS`].
    ///
    /// ```
    /// let config = icnn::Icnn3Config { dim: 2, width: 8, depth: 3, ..Default::default() };
    /// assert_eq!(config.parameter_count(), 172);
    /// ```
    pub fn parameter_count(&self) -> usize {
        let (d, h, l) = (self.dim, self.width, self.depth);
        let (hh, hidden) = (h / 2, l.saturating_sub(1));
        pc::sum([
            pc::linear(d, h, true),
            pc::mul(hidden, pc::linear(h, hh, true)),
            pc::linear(h, 1, false),
            pc::mul(hidden, pc::linear(d, hh, true)),
            pc::linear(d, 1, false),
            pc::mul(hidden, pc::linear(d, hh, true)),
            pc::mul(hidden, pc::actnorm(hh)),
            pc::actnorm(1),
        ])
    }

    /// Checks the configuration without building anything: `dim`, `width` and `depth` at
    /// least 1, at most [`crate::MAX_MODEL_PARAMETERS`] parameters, and an even `width` (each
    /// hidden layer splits its units in two halves). [`Icnn3::new`] runs this first and
    /// refuses with the same error.
    ///
    /// ```
    /// use icnn::Icnn3Config;
    /// assert!(Icnn3Config::default().validate().is_ok());
    /// let odd = Icnn3Config { width: 5, ..Default::default() };
    /// assert_eq!(
    ///     odd.validate().unwrap_err().to_string(),
    ///     "invalid configuration: Icnn3 needs an even width, got 5"
    /// );
    /// ```
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("dim", self.dim),
            ("width", self.width),
            ("depth", self.depth),
        ];
        check_dense_sizes("Icnn3", &sizes, self.parameter_count())?;
        check_even_width("Icnn3", self.width)
    }
}

/// The reference's `ICNN3` (input-augmented ICNN):
/// ```text
/// z₁ = s̃(W₀x + b₀)                                         (width h, no ActNorm)
/// ẑ = s(AN_k(PosLin_k(z_k) + A_k x + c_k)),  g = s̃(G_k x + e_k)   (h/2 each)
/// z_{k+1} = [ẑ, g]                                          k = 1..L−1
/// F(x) = AN_L(PosLin_L(z_L) + aᵀx)                          (AN_L's shift is frozen)
/// ```
/// `s̃` is `s(x) − x/2` when `symm_act_first`, else `s`. Parameter names: `Wzs.0.*` (h×d),
/// `Wzs.k.*` (h/2×h), `Wzs.L.weight` (1×h), `Wxs.k.*` (h/2×d), `Wxs.{L−1}.weight` (1×d),
/// `Wx2s.k.*` (h/2×d, k = 0..L−2), `actnorms.k.{b,logs}` (k = 0..L−1), `initialized`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{ActivationKind, ConvexPotential, Icnn3, Icnn3Config};
/// use rand::SeedableRng;
///
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// // The toy configuration of the reference (smaller).
/// let config = Icnn3Config {
///     dim: 2, width: 8, depth: 3,
///     activation: ActivationKind::GaussianSoftplus, zero_shift: true, symm_act_first: true,
/// };
/// let net = Icnn3::new(vb.pp("icnn"), &config, &mut rand::rngs::StdRng::seed_from_u64(3))?;
/// let x = Tensor::new(&[[0.0f64, 1.0], [1.0, -1.0]], &Device::Cpu)?;
/// let h = net.linearize(&x)?.hessian()?;
/// assert_eq!(h.dims(), &[2, 2, 2]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Icnn3 {
    pub(crate) net: Network,
    config: Icnn3Config,
}

impl Icnn3 {
    /// Creates (or loads) the parameters, drawing initial values from `rng`.
    pub fn new<R: Rng + ?Sized>(vb: VarBuilder, config: &Icnn3Config, rng: &mut R) -> Result<Self> {
        config.validate()?;
        let (d, h, l) = (config.dim, config.width, config.depth);
        let hh = h / 2;
        let act = Activation::new(config.activation).with_zero_shift(config.zero_shift);
        let aug = act.with_symmetric(config.symm_act_first);
        let vz = vb.pp("Wzs");
        let vx = vb.pp("Wxs");
        let vx2 = vb.pp("Wx2s");
        let va = vb.pp("actnorms");
        // Group layout: 0 = first layer; for k = 1..L−1: 2k−1 = convex units, 2k = augmented
        // units; 2L−1 = output.
        let state = |k: usize| -> Vec<usize> {
            if k == 0 {
                vec![0]
            } else {
                vec![2 * k - 1, 2 * k]
            }
        };
        let mut groups = Vec::with_capacity(2 * l);
        groups.push(GroupSpec {
            inputs: vec![],
            pos: None,
            lin: Some(Linear::new(&vz.pp(0), d, h, true, rng)?),
            actnorm: None,
            act: GroupAct::Nonlinear(aug),
            width: h,
        });
        let mut pos = Vec::with_capacity(l);
        for k in 1..l {
            pos.push(PosLinear::new(&vz.pp(k), h, hh, true, rng)?);
        }
        let pos_out = PosLinear::new(&vz.pp(l), h, 1, false, rng)?;
        let mut lins = Vec::with_capacity(l);
        for k in 1..l {
            lins.push(Linear::new(&vx.pp(k - 1), d, hh, true, rng)?);
        }
        let lin_out = Linear::new(&vx.pp(l - 1), d, 1, false, rng)?;
        let mut augs = Vec::with_capacity(l);
        for k in 1..l {
            augs.push(Linear::new(&vx2.pp(k - 1), d, hh, true, rng)?);
        }
        let mut ans = Vec::with_capacity(l);
        for k in 1..l {
            ans.push(ActNorm::new(&va.pp(k - 1), hh)?);
        }
        let mut an_out = ActNorm::new(&va.pp(l - 1), 1)?;
        an_out.frozen_bias = true;
        for (k, ((p, li), (a, an))) in pos
            .into_iter()
            .zip(lins)
            .zip(augs.into_iter().zip(ans))
            .enumerate()
        {
            groups.push(GroupSpec {
                inputs: state(k),
                pos: Some(p),
                lin: Some(li),
                actnorm: Some(an),
                act: GroupAct::Nonlinear(act),
                width: hh,
            });
            groups.push(GroupSpec {
                inputs: vec![],
                pos: None,
                lin: Some(a),
                actnorm: None,
                act: GroupAct::Nonlinear(aug),
                width: hh,
            });
        }
        groups.push(GroupSpec {
            inputs: state(l - 1),
            pos: Some(pos_out),
            lin: Some(lin_out),
            actnorm: Some(an_out),
            act: GroupAct::Identity,
            width: 1,
        });
        Ok(Self {
            net: Network::new(&vb, groups, d)?,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Icnn3Config {
        &self.config
    }
}

impl_unconditional!(Icnn3);
