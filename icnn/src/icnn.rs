//! `Icnn`: the original input-convex network of Amos et al. (2017) (reference `ICNN`).

use candle_nn::VarBuilder;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::activation::{Activation, ActivationKind};
use crate::common::{ChainLayer, chain_groups, check_dense_sizes, impl_unconditional};
use crate::error::Result;
use crate::layers::{Linear, PosLinear};
use crate::network::{GroupAct, Network};
use crate::parameter_count as pc;

/// Configuration of [`Icnn`] (reference `ICNN(dim, dimh, num_hidden_layers)`; the activation
/// is always softplus and there is no ActNorm).
///
/// ```
/// use icnn::{ConvexPotential, Icnn, IcnnConfig, IcnnError};
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let config = IcnnConfig { dim: 3, width: 8, depth: 2 };
/// let net = Icnn::new(vb.pp("icnn"), &config, &mut rng)?;
/// assert_eq!((net.dim(), net.config()), (3, &config));
/// // Rows a, b and their midpoint: convexity gives F(m) ≤ (F(a) + F(b))/2.
/// let x = Tensor::new(&[[1.0f64, -2.0, 0.5], [-1.0, 0.0, 2.0], [0.0, -1.0, 1.25]], &Device::Cpu)?;
/// let f = net.potential(&x)?.to_vec1::<f64>()?;
/// assert!(f[2] <= 0.5 * (f[0] + f[1]) + 1e-12);
/// // Missing fields take their defaults when read from JSON.
/// let read: IcnnConfig = serde_json::from_str(r#"{"dim": 3}"#).unwrap();
/// assert_eq!((read.width, read.depth), (64, 10));
/// let bad = IcnnConfig { depth: 0, ..config };
/// assert!(matches!(Icnn::new(vb.pp("bad"), &bad, &mut rng), Err(IcnnError::InvalidConfig(_))));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IcnnConfig {
    /// Input dimension `d`.
    pub dim: usize,
    /// Hidden width `h`.
    pub width: usize,
    /// Number of hidden layers `L`, at least 1.
    pub depth: usize,
}

impl Default for IcnnConfig {
    fn default() -> Self {
        Self {
            dim: 2,
            width: 64,
            depth: 10,
        }
    }
}

impl IcnnConfig {
    /// Scalar parameters of the network this configuration builds (the `initialized` flag
    /// excluded), counted without building it; saturates at `usize::MAX`. The constructor
    /// refuses a count over [`crate::MAX_MODEL_PARAMETERS`].
    ///
    /// ```
    /// let config = icnn::IcnnConfig { dim: 2, width: 8, depth: 3 };
    /// assert_eq!(config.parameter_count(), 210);
    /// ```
    pub fn parameter_count(&self) -> usize {
        let (d, h, l) = (self.dim, self.width, self.depth);
        let hidden = l.saturating_sub(1);
        pc::sum([
            pc::linear(d, h, true),
            pc::mul(hidden, pc::linear(h, h, false)),
            pc::linear(h, 1, false),
            pc::mul(hidden, pc::linear(d, h, true)),
            pc::linear(d, 1, false),
        ])
    }

    /// Checks the configuration without building anything: `dim`, `width` and `depth` at
    /// least 1, at most [`crate::MAX_MODEL_PARAMETERS`] parameters. [`Icnn::new`] runs this
    /// first and refuses with the same error.
    ///
    /// ```
    /// use icnn::IcnnConfig;
    /// assert!(IcnnConfig::default().validate().is_ok());
    /// let err = IcnnConfig { width: 0, ..Default::default() }.validate().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid configuration: width must be at least 1");
    /// ```
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("dim", self.dim),
            ("width", self.width),
            ("depth", self.depth),
        ];
        check_dense_sizes("Icnn", &sizes, self.parameter_count())
    }
}

/// The reference's `ICNN` (Amos et al. 2017), softplus activations, no ActNorm:
/// ```text
/// z₁ = sp(W₀x + b₀)
/// z_{k+1} = sp(PosLin_k(z_k) + A_k x + c_k)      k = 1..L−1 (PosLin_k without bias)
/// F(x) = PosLin_L(z_L) + aᵀx                      (no biases)
/// ```
/// Parameter names: `Wzs.0.{weight,bias}`, `Wzs.k.weight` (k = 1..L), `Wxs.k.{weight,bias}`
/// (k = 0..L−2), `Wxs.{L−1}.weight`, and the flag `initialized` (always 1: nothing to init).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{ConvexPotential, Icnn, IcnnConfig};
/// use rand::SeedableRng;
///
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let config = IcnnConfig { dim: 2, width: 8, depth: 2 };
/// let net = Icnn::new(vb.pp("icnn"), &config, &mut rand::rngs::StdRng::seed_from_u64(1))?;
/// let x = Tensor::new(&[[0.0f64, 1.0]], &Device::Cpu)?;
/// let (f, g) = net.value_and_gradient(&x)?;
/// assert_eq!((f.dims(), g.dims()), (&[1][..], &[1, 2][..]));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Icnn {
    pub(crate) net: Network,
    config: IcnnConfig,
}

impl Icnn {
    /// Creates (or loads) the parameters, drawing initial values from `rng` (PyTorch's default
    /// `nn.Linear` init).
    pub fn new<R: Rng + ?Sized>(vb: VarBuilder, config: &IcnnConfig, rng: &mut R) -> Result<Self> {
        config.validate()?;
        let (d, h, l) = (config.dim, config.width, config.depth);
        let act = GroupAct::Nonlinear(Activation::new(ActivationKind::Softplus));
        let (vz, vx) = (vb.pp("Wzs"), vb.pp("Wxs"));
        let w0 = Linear::new(&vz.pp(0), d, h, true, rng)?;
        let pos = (1..l)
            .map(|k| PosLinear::new(&vz.pp(k), h, h, false, rng))
            .collect::<Result<Vec<_>>>()?;
        let pos_out = PosLinear::new(&vz.pp(l), h, 1, false, rng)?;
        let lins = (1..l)
            .map(|k| Linear::new(&vx.pp(k - 1), d, h, true, rng))
            .collect::<Result<Vec<_>>>()?;
        let lin_out = Linear::new(&vx.pp(l - 1), d, 1, false, rng)?;
        let hidden = pos
            .into_iter()
            .zip(lins)
            .map(|(pos, lin)| ChainLayer {
                pos,
                lin,
                actnorm: None,
            })
            .collect();
        let output = ChainLayer {
            pos: pos_out,
            lin: lin_out,
            actnorm: None,
        };
        let groups = chain_groups((w0, None, act), hidden, act, output, false);
        Ok(Self {
            net: Network::new(&vb, groups, d)?,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &IcnnConfig {
        &self.config
    }
}

impl_unconditional!(Icnn);
