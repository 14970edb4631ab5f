//! `DenseIcnn2`: DenseNet-style ICNN (reference `DenseICNN2`).

use candle_nn::VarBuilder;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::activation::{Activation, ActivationKind};
use crate::common::{chain_groups_with_actnorms, check_dense_sizes, impl_unconditional};
use crate::error::Result;
use crate::layers::{Linear, PosLinear};
use crate::network::{GroupAct, Network};
use crate::parameter_count as pc;

/// Configuration of [`DenseIcnn2`] (same fields as [`crate::Icnn2Config`]).
///
/// ```
/// use icnn::{ConvexPotential, DenseIcnn2, DenseIcnn2Config};
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let config = DenseIcnn2Config { dim: 3, width: 4, depth: 3, ..Default::default() };
/// let net = DenseIcnn2::new(vb.pp("icnn"), &config, &mut rng)?;
/// assert_eq!(net.config(), &config);
/// // Rows a, b and their midpoint: convexity gives F(m) ≤ (F(a) + F(b))/2.
/// let x = Tensor::new(&[[1.0f64, -2.0, 0.5], [-1.0, 0.0, 2.0], [0.0, -1.0, 1.25]], &Device::Cpu)?;
/// let f = net.potential(&x)?.to_vec1::<f64>()?;
/// assert!(f[2] <= 0.5 * (f[0] + f[1]) + 1e-12);
/// let read: DenseIcnn2Config = serde_json::from_str(r#"{"dim": 3, "width": 4, "depth": 3}"#).unwrap();
/// assert_eq!(read, config);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DenseIcnn2Config {
    /// Input dimension `d`.
    pub dim: usize,
    /// Width `h` of each new block of units.
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

impl Default for DenseIcnn2Config {
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

impl DenseIcnn2Config {
    /// Scalar parameters of the network this configuration builds (the `initialized` flag
    /// excluded), counted without building it; saturates at `usize::MAX`. The constructor
    /// refuses a count over [`crate::MAX_MODEL_PARAMETERS`].
    ///
    /// ```
    /// let config = icnn::DenseIcnn2Config { dim: 2, width: 8, depth: 3, ..Default::default() };
    /// assert_eq!(config.parameter_count(), 324);
    /// ```
    pub fn parameter_count(&self) -> usize {
        let (d, h, l) = (self.dim, self.width, self.depth);
        let hidden = l.saturating_sub(1);
        // Hidden layer k reads all k earlier outputs: Σₖ h·k·h = h²·L(L−1)/2 weights.
        let triangle = if l % 2 == 0 {
            pc::mul(l / 2, hidden)
        } else {
            pc::mul(l, hidden / 2)
        };
        pc::sum([
            pc::linear(d, h, true),
            pc::mul(pc::mul(h, h), triangle),
            pc::linear(pc::mul(h, l), 1, false),
            pc::mul(hidden, pc::linear(d, h, false)),
            pc::linear(d, 1, false),
            pc::actnorm(h),
            pc::mul(hidden, pc::actnorm(h)),
            pc::actnorm(1),
        ])
    }

    /// Checks the configuration without building anything: `dim`, `width` and `depth` at
    /// least 1, at most [`crate::MAX_MODEL_PARAMETERS`] parameters. [`DenseIcnn2::new`]
    /// runs this first and refuses with the same error.
    ///
    /// ```
    /// use icnn::DenseIcnn2Config;
    /// assert!(DenseIcnn2Config::default().validate().is_ok());
    /// let err = DenseIcnn2Config { depth: 0, ..Default::default() }.validate().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid configuration: depth must be at least 1");
    /// ```
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("dim", self.dim),
            ("width", self.width),
            ("depth", self.depth),
        ];
        check_dense_sizes("DenseIcnn2", &sizes, self.parameter_count())
    }
}

/// The reference's `DenseICNN2`: every layer sees the concatenation of all previous blocks.
/// ```text
/// z = s̃(AN₀(W₀x + b₀))
/// z ← [z, s(AN_k(PosLin_k(z) + A_k x))]          k = 1..L−1 (no biases besides ActNorm)
/// F(x) = AN_L(PosLin_L(z) + aᵀx)
/// ```
/// Parameter names: `Wzs.0.{weight,bias}` (h×d), `Wzs.k.weight` (h×kh), `Wzs.L.weight`
/// (1×Lh), `Wxs.k.weight` (h×d, k = 0..L−2), `Wxs.{L−1}.weight` (1×d), `actnorm0.*`,
/// `actnorms.k.*` (k = 0..L−1), `initialized`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{ConvexPotential, DenseIcnn2, DenseIcnn2Config};
/// use rand::SeedableRng;
///
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let config = DenseIcnn2Config { dim: 3, width: 4, depth: 3, ..Default::default() };
/// let net = DenseIcnn2::new(vb.pp("icnn"), &config, &mut rand::rngs::StdRng::seed_from_u64(2))?;
/// let x = Tensor::new(&[[0.0f64, 1.0, 2.0], [1.0, -1.0, 0.5]], &Device::Cpu)?;
/// assert_eq!(net.linearize(&x)?.gradient().dims(), &[2, 3]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DenseIcnn2 {
    pub(crate) net: Network,
    config: DenseIcnn2Config,
}

impl DenseIcnn2 {
    /// Creates (or loads) the parameters, drawing initial values from `rng`.
    pub fn new<R: Rng + ?Sized>(
        vb: VarBuilder,
        config: &DenseIcnn2Config,
        rng: &mut R,
    ) -> Result<Self> {
        config.validate()?;
        let (d, h, l) = (config.dim, config.width, config.depth);
        let act = Activation::new(config.activation).with_zero_shift(config.zero_shift);
        let first = act.with_symmetric(config.symm_act_first);
        let (vz, vx) = (vb.pp("Wzs"), vb.pp("Wxs"));
        let w0 = Linear::new(&vz.pp(0), d, h, true, rng)?;
        let pos = (1..l)
            .map(|k| PosLinear::new(&vz.pp(k), h * k, h, false, rng))
            .collect::<Result<Vec<_>>>()?;
        let pos_out = PosLinear::new(&vz.pp(l), h * l, 1, false, rng)?;
        let lins = (1..l)
            .map(|k| Linear::new(&vx.pp(k - 1), d, h, false, rng))
            .collect::<Result<Vec<_>>>()?;
        let lin_out = Linear::new(&vx.pp(l - 1), d, 1, false, rng)?;
        let groups = chain_groups_with_actnorms(
            &vb,
            (w0, GroupAct::Nonlinear(first)),
            pos.into_iter().zip(lins).collect(),
            GroupAct::Nonlinear(act),
            (pos_out, lin_out),
            true,
        )?;
        Ok(Self {
            net: Network::new(&vb, groups, d)?,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DenseIcnn2Config {
        &self.config
    }
}

impl_unconditional!(DenseIcnn2);
