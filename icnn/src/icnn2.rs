//! `Icnn2`: the reference's tabular default (`ICNN2`), ActNorm inside every layer.

use candle_nn::VarBuilder;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::activation::{Activation, ActivationKind};
use crate::common::{chain_groups_with_actnorms, check_dense_sizes, impl_unconditional};
use crate::error::Result;
use crate::layers::{Linear, PosLinear};
use crate::network::{GroupAct, Network};
use crate::parameter_count as pc;

/// Configuration of [`Icnn2`] (reference `ICNN2(dim, dimh, num_hidden_layers, symm_act_first,
/// softplus_type, zero_softplus)`). Defaults are `train_tabular.py`'s: width 64, depth 10,
/// softplus, no shift, no symmetric first activation.
///
/// ```
/// use icnn::{ActivationKind, ConvexPotential, Icnn2, Icnn2Config, IcnnError};
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let config = Icnn2Config {
///     dim: 3, width: 8, depth: 2,
///     activation: ActivationKind::GaussianSoftplus, zero_shift: true, symm_act_first: true,
/// };
/// let net = Icnn2::new(vb.pp("icnn"), &config, &mut rng)?;
/// assert_eq!(net.config(), &config);
/// // Rows a, b and their midpoint: convexity gives F(m) ≤ (F(a) + F(b))/2.
/// let x = Tensor::new(&[[1.0f64, -2.0, 0.5], [-1.0, 0.0, 2.0], [0.0, -1.0, 1.25]], &Device::Cpu)?;
/// let f = net.potential(&x)?.to_vec1::<f64>()?;
/// assert!(f[2] <= 0.5 * (f[0] + f[1]) + 1e-12);
/// let bad = Icnn2Config { width: 0, ..config };
/// assert!(matches!(Icnn2::new(vb.pp("bad"), &bad, &mut rng), Err(IcnnError::InvalidConfig(_))));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Icnn2Config {
    /// Input dimension `d`.
    pub dim: usize,
    /// Hidden width `h` (`dimh`).
    pub width: usize,
    /// Number of hidden layers `L` (`num_hidden_layers`), at least 1.
    pub depth: usize,
    /// Activation `s` (`softplus_type`).
    pub activation: ActivationKind,
    /// Shift the activation to 0 at 0 (`zero_softplus`).
    pub zero_shift: bool,
    /// Use the symmetric activation `s(x) − x/2` on the first layer (`symm_act_first`).
    pub symm_act_first: bool,
}

impl Default for Icnn2Config {
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

impl Icnn2Config {
    /// Scalar parameters of the network this configuration builds (the `initialized` flag
    /// excluded), counted without building it; saturates at `usize::MAX`. The constructor
    /// refuses a count over [`crate::MAX_MODEL_PARAMETERS`].
    ///
    /// ```
    /// let config = icnn::Icnn2Config { dim: 2, width: 8, depth: 3, ..Default::default() };
    /// assert_eq!(config.parameter_count(), 276);
    /// ```
    pub fn parameter_count(&self) -> usize {
        let (d, h, l) = (self.dim, self.width, self.depth);
        let hidden = l.saturating_sub(1);
        pc::sum([
            pc::linear(d, h, true),
            pc::mul(hidden, pc::linear(h, h, true)),
            pc::linear(h, 1, false),
            pc::mul(hidden, pc::linear(d, h, true)),
            pc::linear(d, 1, false),
            pc::actnorm(h),
            pc::mul(hidden, pc::actnorm(h)),
            pc::actnorm(1),
        ])
    }

    /// Checks the configuration without building anything: `dim`, `width` and `depth` at
    /// least 1, at most [`crate::MAX_MODEL_PARAMETERS`] parameters. [`Icnn2::new`]
    /// runs this first and refuses with the same error.
    ///
    /// ```
    /// use icnn::Icnn2Config;
    /// assert!(Icnn2Config::default().validate().is_ok());
    /// let err = Icnn2Config { dim: 0, ..Default::default() }.validate().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid configuration: dim must be at least 1");
    /// ```
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("dim", self.dim),
            ("width", self.width),
            ("depth", self.depth),
        ];
        check_dense_sizes("Icnn2", &sizes, self.parameter_count())
    }
}

/// The reference's `ICNN2`:
/// ```text
/// z₁ = s̃(AN₀(W₀x + b₀))
/// z_{k+1} = s(AN_k(PosLin_k(z_k) + A_k x + c_k))          k = 1..L−1
/// F(x) = AN_L(PosLin_L(z_L) + aᵀx)                        (no biases in the output layer)
/// ```
/// Parameter names under the builder's prefix (identical to the PyTorch `state_dict`):
/// `Wzs.0.{weight,bias}` (h×d), `Wzs.k.{weight,bias}` (h×h, k = 1..L−1), `Wzs.L.weight`
/// (1×h), `Wxs.k.{weight,bias}` (h×d, k = 0..L−2), `Wxs.{L−1}.weight` (1×d),
/// `actnorm0.{b,logs}`, `actnorms.k.{b,logs}` (k = 0..L−1, shapes (1,C,1)), plus the flag
/// `initialized` (1,).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{ConvexPotential, Icnn2, Icnn2Config};
/// use rand::SeedableRng;
///
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let config = Icnn2Config { dim: 4, width: 16, depth: 3, ..Default::default() };
/// let mut rng = rand::rngs::StdRng::seed_from_u64(42);
/// let net = Icnn2::new(vb.pp("icnn"), &config, &mut rng)?;
/// // The first call runs the ActNorm data-dependent init on its batch, which needs at least
/// // 2 distinct points: a single point is an error and leaves the network uninitialised.
/// let one = Tensor::new(&[[0.1f32, 0.2, 0.3, 0.4]], &Device::Cpu)?;
/// assert!(matches!(net.potential(&one), Err(icnn::IcnnError::Initialization { .. })));
/// assert!(!net.is_initialized()?);
/// let x = Tensor::arange(0f32, 20.0, &Device::Cpu)?.affine(0.1, -1.0)?.reshape((5, 4))?;
/// let f = net.potential(&x)?;
/// assert_eq!(f.dims(), &[5]);
/// assert!(net.is_initialized()?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Icnn2 {
    pub(crate) net: Network,
    config: Icnn2Config,
}

impl Icnn2 {
    /// Creates (or loads, for names already present in `vb`) the parameters. Weights and
    /// biases get PyTorch's default `nn.Linear` init drawn from `rng`; the same config and
    /// seed give the same weights.
    pub fn new<R: Rng + ?Sized>(vb: VarBuilder, config: &Icnn2Config, rng: &mut R) -> Result<Self> {
        config.validate()?;
        let (d, h, l) = (config.dim, config.width, config.depth);
        let act = Activation::new(config.activation).with_zero_shift(config.zero_shift);
        let first = act.with_symmetric(config.symm_act_first);
        let (vz, vx) = (vb.pp("Wzs"), vb.pp("Wxs"));
        // Same creation order as the reference module: Wzs, Wxs, actnorm0, actnorms.
        let w0 = Linear::new(&vz.pp(0), d, h, true, rng)?;
        let pos = (1..l)
            .map(|k| PosLinear::new(&vz.pp(k), h, h, true, rng))
            .collect::<Result<Vec<_>>>()?;
        let pos_out = PosLinear::new(&vz.pp(l), h, 1, false, rng)?;
        let lins = (1..l)
            .map(|k| Linear::new(&vx.pp(k - 1), d, h, true, rng))
            .collect::<Result<Vec<_>>>()?;
        let lin_out = Linear::new(&vx.pp(l - 1), d, 1, false, rng)?;
        let groups = chain_groups_with_actnorms(
            &vb,
            (w0, GroupAct::Nonlinear(first)),
            pos.into_iter().zip(lins).collect(),
            GroupAct::Nonlinear(act),
            (pos_out, lin_out),
            false,
        )?;
        Ok(Self {
            net: Network::new(&vb, groups, d)?,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Icnn2Config {
        &self.config
    }
}

impl_unconditional!(Icnn2);
