//! The convex potential `F` of a CP-Flow block: one of the `icnn` architectures, chosen by a
//! serialisable configuration.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use icnn::{
    ConditionalConvexPotential, ConvexPotential, DenseIcnn2, DenseIcnn2Config, Icnn, Icnn2,
    Icnn2Config, Icnn3, Icnn3Config, IcnnConfig, ImageShape, Linearization, Picnn, PicnnConfig,
};
use icnn::{ConvIcnn, ConvIcnn2, ConvIcnn2Config, ConvIcnn3, ConvIcnn3Config, ConvIcnnConfig};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::custom_conditional_potential::{CustomConditionalConfig, CustomConditionalPotential};
use crate::custom_potential::{CustomPotential, CustomPotentialConfig};
use crate::error::{CpflowError, Result};

/// Which ICNN architecture (and its configuration) a block uses.
///
/// ```
/// use cpflow::PotentialConfig;
/// use cpflow::icnn::{Icnn2Config, PicnnConfig};
/// let pot = PotentialConfig::Icnn2(Icnn2Config { dim: 5, ..Default::default() });
/// assert_eq!((pot.dim(), pot.context_dim(), pot.image_shape()), (5, None, None));
/// let cond = PotentialConfig::Picnn(PicnnConfig { dim: 2, context_dim: 3, ..Default::default() });
/// assert_eq!(cond.context_dim(), Some(3)); // a conditional block
/// // In configuration files the architecture is the `arch` tag.
/// let json = serde_json::to_value(&pot).unwrap();
/// assert_eq!(json["arch"], "icnn2");
/// assert_eq!(serde_json::from_value::<PotentialConfig>(json).unwrap(), pot);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum PotentialConfig {
    /// Amos et al.'s ICNN (reference `ICNN`).
    Icnn(IcnnConfig),
    /// Reference `ICNN2` (tabular default).
    Icnn2(Icnn2Config),
    /// Input-augmented ICNN (reference `ICNN3`, the paper's default).
    Icnn3(Icnn3Config),
    /// DenseNet-style ICNN (reference `DenseICNN2`).
    DenseIcnn2(DenseIcnn2Config),
    /// Partially input-convex network: a conditional block taking a context.
    Picnn(PicnnConfig),
    /// Convolutional ICNN over `(C, H, W)` images seen as flattened rows (reference
    /// `ConvICNN`, the `train_img.py` default).
    ConvIcnn(ConvIcnnConfig),
    /// Convolutional ICNN with augmented units (reference `ConvICNN2`).
    ConvIcnn2(ConvIcnn2Config),
    /// Input-augmented convolutional ICNN (reference `ConvICNN3`).
    ConvIcnn3(ConvIcnn3Config),
    /// A network of your own, built by the function registered under its name with
    /// [`crate::register_potential`].
    Custom(CustomPotentialConfig),
    /// A conditional network of your own (convex in `x` for every context), built by the
    /// function registered with [`crate::register_conditional_potential`].
    CustomConditional(CustomConditionalConfig),
}

impl PotentialConfig {
    /// The input dimension `d`.
    pub fn dim(&self) -> usize {
        match self {
            PotentialConfig::Icnn(c) => c.dim,
            PotentialConfig::Icnn2(c) => c.dim,
            PotentialConfig::Icnn3(c) => c.dim,
            PotentialConfig::DenseIcnn2(c) => c.dim,
            PotentialConfig::Picnn(c) => c.dim,
            PotentialConfig::ConvIcnn(c) => c.image.dim(),
            PotentialConfig::ConvIcnn2(c) => c.image.dim(),
            PotentialConfig::ConvIcnn3(c) => c.image.dim(),
            PotentialConfig::Custom(c) => c.dim,
            PotentialConfig::CustomConditional(c) => c.dim,
        }
    }

    /// The image shape `(C, H, W)` of a convolutional potential (`None` for the dense ones,
    /// which see any row of length [`PotentialConfig::dim`]).
    pub fn image_shape(&self) -> Option<ImageShape> {
        match self {
            PotentialConfig::ConvIcnn(c) => Some(c.image),
            PotentialConfig::ConvIcnn2(c) => Some(c.image),
            PotentialConfig::ConvIcnn3(c) => Some(c.image),
            _ => None,
        }
    }

    /// The context dimension of a conditional potential (`None` if unconditional).
    pub fn context_dim(&self) -> Option<usize> {
        match self {
            PotentialConfig::Picnn(c) => Some(c.context_dim),
            PotentialConfig::CustomConditional(c) => Some(c.context_dim),
            _ => None,
        }
    }

    /// Checks the configuration without building the network: the ICNN architectures run
    /// their own `validate` (positive sizes, at most [`icnn::MAX_MODEL_PARAMETERS`]
    /// parameters, an even width where the architecture halves it), the checks their
    /// constructors start with; the error is the one building would give. A network of your
    /// own is not checked here (its builder is yours; [`crate::FlowConfig::validate`] checks
    /// that its settings are finite).
    ///
    /// ```
    /// use cpflow::PotentialConfig;
    /// use cpflow::icnn::Icnn3Config;
    /// let pot = PotentialConfig::Icnn3(Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
    /// pot.validate()?;
    /// let odd = PotentialConfig::Icnn3(Icnn3Config { dim: 2, width: 5, depth: 2, ..Default::default() });
    /// let err = odd.validate().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid configuration: Icnn3 needs an even width, got 5");
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn validate(&self) -> Result<()> {
        match self {
            PotentialConfig::Icnn(c) => c.validate()?,
            PotentialConfig::Icnn2(c) => c.validate()?,
            PotentialConfig::Icnn3(c) => c.validate()?,
            PotentialConfig::DenseIcnn2(c) => c.validate()?,
            PotentialConfig::Picnn(c) => c.validate()?,
            PotentialConfig::ConvIcnn(c) => c.validate()?,
            PotentialConfig::ConvIcnn2(c) => c.validate()?,
            PotentialConfig::ConvIcnn3(c) => c.validate()?,
            PotentialConfig::Custom(_) => {}
            PotentialConfig::CustomConditional(_) => {}
        }
        Ok(())
    }
}

/// A built potential network.
#[derive(Clone, Debug)]
pub(crate) enum Potential {
    Icnn(Icnn),
    Icnn2(Icnn2),
    Icnn3(Icnn3),
    DenseIcnn2(DenseIcnn2),
    Picnn(Picnn),
    ConvIcnn(ConvIcnn),
    ConvIcnn2(ConvIcnn2),
    ConvIcnn3(ConvIcnn3),
    Custom(CustomPotential),
    CustomConditional(CustomConditionalPotential),
}

fn missing_context() -> CpflowError {
    CpflowError::InvalidInput(
        "this flow is conditional (PICNN blocks): a context tensor is required".into(),
    )
}

fn unexpected_context() -> CpflowError {
    CpflowError::InvalidInput("this flow is unconditional: it takes no context tensor".into())
}

macro_rules! unconditional {
    ($self:ident, $ctx:ident, $net:ident => $body:expr) => {
        match $self {
            Potential::Icnn($net) => {
                if $ctx.is_some() {
                    return Err(unexpected_context());
                }
                $body
            }
            Potential::Icnn2($net) => {
                if $ctx.is_some() {
                    return Err(unexpected_context());
                }
                $body
            }
            Potential::Icnn3($net) => {
                if $ctx.is_some() {
                    return Err(unexpected_context());
                }
                $body
            }
            Potential::DenseIcnn2($net) => {
                if $ctx.is_some() {
                    return Err(unexpected_context());
                }
                $body
            }
            Potential::ConvIcnn($net) => {
                if $ctx.is_some() {
                    return Err(unexpected_context());
                }
                $body
            }
            Potential::ConvIcnn2($net) => {
                if $ctx.is_some() {
                    return Err(unexpected_context());
                }
                $body
            }
            Potential::ConvIcnn3($net) => {
                if $ctx.is_some() {
                    return Err(unexpected_context());
                }
                $body
            }
            Potential::Custom($net) => {
                if $ctx.is_some() {
                    return Err(unexpected_context());
                }
                $body
            }
            Potential::Picnn(_) | Potential::CustomConditional(_) => unreachable!(),
        }
    };
}

impl Potential {
    pub(crate) fn new<R: Rng + ?Sized>(
        vb: VarBuilder,
        config: &PotentialConfig,
        rng: &mut R,
    ) -> Result<Self> {
        Ok(match config {
            PotentialConfig::Icnn(c) => Potential::Icnn(Icnn::new(vb, c, rng)?),
            PotentialConfig::Icnn2(c) => Potential::Icnn2(Icnn2::new(vb, c, rng)?),
            PotentialConfig::Icnn3(c) => Potential::Icnn3(Icnn3::new(vb, c, rng)?),
            PotentialConfig::DenseIcnn2(c) => Potential::DenseIcnn2(DenseIcnn2::new(vb, c, rng)?),
            PotentialConfig::Picnn(c) => Potential::Picnn(Picnn::new(vb, c, rng)?),
            PotentialConfig::ConvIcnn(c) => Potential::ConvIcnn(ConvIcnn::new(vb, c, rng)?),
            PotentialConfig::ConvIcnn2(c) => Potential::ConvIcnn2(ConvIcnn2::new(vb, c, rng)?),
            PotentialConfig::ConvIcnn3(c) => Potential::ConvIcnn3(ConvIcnn3::new(vb, c, rng)?),
            PotentialConfig::Custom(c) => Potential::Custom(CustomPotential::build(vb, c, rng)?),
            PotentialConfig::CustomConditional(c) => {
                Potential::CustomConditional(CustomConditionalPotential::build(vb, c, rng)?)
            }
        })
    }

    /// The cached linearisation at `x` (parameter-tracking).
    pub(crate) fn linearize(&self, x: &Tensor, ctx: Option<&Tensor>) -> Result<Linearization> {
        if let Some(lin) = self.conditional_linearization(x, ctx)? {
            return Ok(lin);
        }
        unconditional!(self, ctx, n => Ok(n.linearize(x)?))
    }

    /// The host-kernel linearisation for the CG-surrogate step (`icnn::HostLinearization`);
    /// `None` where the kernels do not apply (conditional potentials, tensors off the CPU or
    /// not f32/f64).
    pub(crate) fn host_linearize(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<Option<icnn::HostLinearization>> {
        match self.host_network(ctx) {
            Some(n) => Ok(n.host_linearize(x)?),
            None => Ok(None),
        }
    }

    /// The prepared parameters on the host (`icnn::HostWeights`), to linearize many row
    /// chunks with one copy; `None` where [`Potential::host_linearize`] would be, or before
    /// the ActNorm initialisation.
    pub(crate) fn host_weights(&self, ctx: Option<&Tensor>) -> Result<Option<icnn::HostWeights>> {
        match self.host_network(ctx) {
            Some(n) => Ok(n.host_weights()?),
            None => Ok(None),
        }
    }

    /// The network as an unconditional `icnn::ConvexPotential`, where the host kernels may
    /// take it: not with a context, not for the conditional potentials.
    fn host_network(&self, ctx: Option<&Tensor>) -> Option<&dyn ConvexPotential> {
        if ctx.is_some() {
            return None;
        }
        match self {
            Potential::Icnn(n) => Some(n),
            Potential::Icnn2(n) => Some(n),
            Potential::Icnn3(n) => Some(n),
            Potential::DenseIcnn2(n) => Some(n),
            Potential::ConvIcnn(n) => Some(n),
            Potential::ConvIcnn2(n) => Some(n),
            Potential::ConvIcnn3(n) => Some(n),
            Potential::Custom(n) => Some(n.network()),
            Potential::Picnn(_) | Potential::CustomConditional(_) => None,
        }
    }

    /// `(F(x), ∇F(x))` without second-order caches.
    pub(crate) fn value_and_gradient(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        if let Some(lin) = self.conditional_linearization(x, ctx)? {
            return Ok((lin.potential(), lin.gradient()));
        }
        unconditional!(self, ctx, n => Ok(n.value_and_gradient(x)?))
    }

    /// Whether the ICNN's internal ActNorms are initialised.
    pub(crate) fn is_initialized(&self) -> Result<bool> {
        Ok(match self {
            Potential::Icnn(n) => n.is_initialized()?,
            Potential::Icnn2(n) => n.is_initialized()?,
            Potential::Icnn3(n) => n.is_initialized()?,
            Potential::DenseIcnn2(n) => n.is_initialized()?,
            Potential::Picnn(n) => n.is_initialized()?,
            Potential::ConvIcnn(n) => n.is_initialized()?,
            Potential::ConvIcnn2(n) => n.is_initialized()?,
            Potential::ConvIcnn3(n) => n.is_initialized()?,
            Potential::Custom(_) | Potential::CustomConditional(_) => true,
        })
    }

    /// Run the ICNN's data-dependent ActNorm initialisation on `x`.
    pub(crate) fn initialize(&self, x: &Tensor, ctx: Option<&Tensor>) -> Result<()> {
        match self {
            Potential::Picnn(p) => {
                let c = ctx.ok_or_else(missing_context)?;
                return Ok(p.initialize(x, c)?);
            }
            // No data-dependent initialisation; the context is still required.
            Potential::CustomConditional(_) => {
                ctx.ok_or_else(missing_context)?;
                return Ok(());
            }
            _ => {}
        }
        unconditional!(self, ctx, n => Ok(n.initialize(x)?))
    }

    /// The linearisation of a conditional potential at `(x, ctx)` (`None` for the
    /// unconditional ones; a missing context is an error).
    fn conditional_linearization(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<Option<Linearization>> {
        Ok(match self {
            Potential::Picnn(p) => {
                Some(p.linearize_with_context(x, ctx.ok_or_else(missing_context)?)?)
            }
            Potential::CustomConditional(p) => {
                Some(p.linearize_with_context(x, ctx.ok_or_else(missing_context)?)?)
            }
            _ => None,
        })
    }
}
