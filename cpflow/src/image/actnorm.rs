//! ActNorm per channel on images (`lib/flows/flows.py:ActNorm` on `(B, C, H, W)`,
//! cpflow-reference.md §1.3, images-vae.md §1.4), acting on flattened `(C, H, W)` rows.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use icnn::ImageShape;

use crate::actnorm::ActNormVars;
use crate::error::{CpflowError, Result};

/// `y = (x + b_c)·(exp(logs_c) + 0.001)` for every pixel of channel `c`; the log-det is
/// `H·W·Σ_c log(exp(logs_c) + 0.001)`, the same for every sample. Data-dependent init over
/// the batch and the spatial positions (`b = −mean`, `logs = −log(std + 1e-6)`, biased
/// variance); the `initialized` flag is a saved variable, as in [`crate::ActNorm`].
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
/// use cpflow::image::ChannelActNorm;
/// use cpflow::icnn::ImageShape;
/// # fn main() -> cpflow::Result<()> {
/// let vm = VarMap::new();
/// let an = ChannelActNorm::new(&vm, "an", ImageShape::new(2, 2, 2), DType::F64, &Device::Cpu)?;
/// let x = Tensor::arange(0.0f64, 16.0, &Device::Cpu)?.reshape((2, 8))?;
/// an.initialize(&x)?;
/// let (y, logdet) = an.forward(&x)?;
/// let back = an.inverse(&y)?;
/// assert!((back - &x)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
/// assert!(logdet.to_scalar::<f64>()?.is_finite());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ChannelActNorm {
    shape: ImageShape,
    vars: ActNormVars,
}

impl ChannelActNorm {
    /// Create (or fetch) `<prefix>.bias` `(1, C)`, `<prefix>.logs` `(1, C)` and
    /// `<prefix>.initialized` `(1,)` in `varmap`.
    pub fn new(
        varmap: &VarMap,
        prefix: &str,
        shape: ImageShape,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if shape.dim() == 0 {
            return Err(CpflowError::InvalidConfig(
                "ActNorm image shape must be non-empty".into(),
            ));
        }
        let c = shape.channels;
        Ok(ChannelActNorm {
            shape,
            vars: ActNormVars::new(varmap, prefix, c, dtype, device)?,
        })
    }

    /// The image shape.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Whether the data-dependent initialisation has run (stored in the weights).
    pub fn is_initialized(&self) -> Result<bool> {
        self.vars.is_initialized()
    }

    /// `(B, D)` rows as `(B, C, H·W)`.
    fn channels_view(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let s = self.shape;
        Ok(x.reshape((b, s.channels, s.height * s.width))?)
    }

    /// Data-dependent initialisation on rows `x` `(B, C·H·W)`: per channel, mean and biased
    /// variance over the batch and the pixels. Marks the layer initialised.
    ///
    /// The statistics are accumulated on the host in `f64` (mean first, then the centred
    /// squares; [`icnn::channel_statistics`]) whatever the layer's dtype, as
    /// [`crate::ActNorm::initialize`] does, and rounded to it; on f64 data they are those of
    /// the f64 reductions before, bit for bit.
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        let x3 = self.channels_view(&x.detach())?;
        let values = x3.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let s = self.shape;
        let icnn::BatchStatistics { mean, std } =
            icnn::channel_statistics(&values, s.channels, s.height * s.width)?;
        let as_layer = |v: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (1, s.channels, 1), x.device())?.to_dtype(x.dtype())?)
        };
        self.vars
            .initialize_from(&as_layer(mean)?, &as_layer(std)?, "channel")
    }

    /// `(y (B, D), log-det)` with the log-det a scalar tensor `H·W·Σ_c log scale_c`
    /// (parameter-tracking).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.vars.ensure_initialized()?;
        let c = self.shape.channels;
        let scale = self.vars.scale()?;
        let y = self
            .channels_view(x)?
            .broadcast_add(&self.vars.bias.as_tensor().reshape((1, c, 1))?)?
            .broadcast_mul(&scale.reshape((1, c, 1))?)?
            .reshape(x.shape())?;
        let hw = (self.shape.height * self.shape.width) as f64;
        let logdet = (scale.log()?.sum_all()? * hw)?;
        Ok((y, logdet))
    }

    /// Closed-form inverse `x = y/scale − b` (detached parameters).
    pub fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        self.vars.ensure_initialized()?;
        let c = self.shape.channels;
        let scale = self.vars.scale()?.detach().reshape((1, c, 1))?;
        let bias = self.vars.bias.as_tensor().detach().reshape((1, c, 1))?;
        Ok(self
            .channels_view(y)?
            .broadcast_div(&scale)?
            .broadcast_sub(&bias)?
            .reshape(y.shape())?)
    }

    /// The trainable variables (bias, logs).
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.vars.trainable()
    }
}
