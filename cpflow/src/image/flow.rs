//! [`ImageFlow`]: a multi-scale CP-Flow over images, its data-dependent initialisation and
//! its density (exact dense log-dets for small `D`, SLQ with a standard error for large `D`).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use icnn::ImageShape;

use crate::actnorm::ActNorm;
use crate::block::CpFlowBlock;
use crate::config::FloatType;
use crate::error::{CpflowError, Result};
use crate::flow::{check_matrix_rows, refuse_empty};
use crate::image::actnorm::ChannelActNorm;
use crate::image::config::{ImageFlowConfig, ImageLayerConfig, LayerShapes};
use crate::image::logit::LogitTransform;
use crate::image::squeeze::Squeeze;
use crate::potential::Potential;
use crate::prior::GaussianPrior;
use crate::rng::FlowRng;

mod density;

/// Images per chunk of the evaluation passes at most ([`ImageFlow::eval_chunk_rows`]).
pub const IMAGE_EVAL_CHUNK: usize = 256;

/// Hidden units that one chunk of an SLQ evaluation or of a forward pass may carry: images
/// times the widest block's units per image ([`ImageFlowConfig::max_hidden_units`]). An SLQ
/// pass keeps about 17 values per unit (measured: a 200-image validation batch of a `conv_icnn`
/// of width 256 on MNIST peaked at 7.6 GB against 2.1 GB for 16 images), so 2²⁶ units are about
/// 4.5 GB in f32. Below it, chunks are [`IMAGE_EVAL_CHUNK`] images (every default
/// configuration).
const EVAL_CHUNK_UNITS: usize = 1 << 26;

/// One layer of an [`ImageFlow`], built from the matching [`crate::image::ImageLayerConfig`]
/// (see [`ImageFlow::layers`]).
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::image::{ImageFlow, ImageLayer, ImageModelConfig};
/// use cpflow::icnn::ImageShape;
/// # fn main() -> cpflow::Result<()> {
/// let model = ImageModelConfig { width: 4, depth: 2, nblocks: vec![1, 1], ..Default::default() };
/// let flow = ImageFlow::new(model.flow_config(ImageShape::new(1, 4, 4), 0.05)?, &Device::Cpu)?;
/// // Logit and its ActNorm first, then [ActNorm, CPF] per block with a squeeze between scales.
/// assert!(matches!(flow.layers()[0], ImageLayer::Logit(t) if t.alpha() == 0.05));
/// let blocks = flow.layers().iter().filter(|l| matches!(l, ImageLayer::Cpf(_))).count();
/// let squeezes = flow.layers().iter().filter(|l| matches!(l, ImageLayer::Squeeze(_))).count();
/// assert_eq!((blocks, squeezes), (2, 1));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
// A flow holds a handful of layers, once: boxing the large variant would save nothing.
#[allow(clippy::large_enum_variant)]
pub enum ImageLayer {
    /// Logit transform.
    Logit(LogitTransform),
    /// ActNorm per channel.
    ActNorm(ChannelActNorm),
    /// ActNorm per feature of the flattened row.
    FeatureActNorm(ActNorm),
    /// Space-to-depth.
    Squeeze(Squeeze),
    /// Factor-out of the second half of the channels (this many entries of the row).
    FactorOut(usize),
    /// CP-Flow block on the flattened row.
    Cpf(CpFlowBlock),
}

/// Mean and standard error of the mean (`NaN` below two values).
///
/// ```
/// use cpflow::image::mean_and_std_err;
/// // Sample variance of [1, 2, 3] is 1, so the standard error is 1/√3.
/// let (mean, se) = mean_and_std_err(&[1.0, 2.0, 3.0]);
/// assert_eq!(mean, 2.0);
/// assert!((se - 1.0 / 3f64.sqrt()).abs() < 1e-15);
/// assert!(mean_and_std_err(&[5.0]).1.is_nan());
/// ```
pub fn mean_and_std_err(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// A convex potential flow over images `x (B, C, H, W) → z (B, D)`: the layers of an
/// [`ImageFlowConfig`] (logit, ActNorm, squeeze, factor-out, CP-Flow blocks on the flattened
/// image) and a Gaussian prior on `z`. Everything runs on flattened `(B, D)` rows in
/// `(C, H, W)` order; images `(B, C, H, W)` are accepted as inputs too.
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::image::{ImageFlow, ImageFlowConfig, MultiscaleConfig};
/// use cpflow::{FloatType, PotentialConfig};
/// use cpflow::icnn::{Icnn2Config, ImageShape};
/// use cpflow::rand::SeedableRng;
///
/// # fn main() -> cpflow::Result<()> {
/// let ms = MultiscaleConfig {
///     image: ImageShape::new(1, 4, 4),
///     nblocks: vec![1, 1],
///     // a dense ICNN on the flattened image (or `PotentialConfig::ConvIcnn`)
///     potential: PotentialConfig::Icnn2(Icnn2Config { width: 8, depth: 2, ..Default::default() }),
///     float: FloatType::F64,
///     ..MultiscaleConfig::mnist()
/// };
/// let flow = ImageFlow::new(ImageFlowConfig::multiscale(&ms)?, &Device::Cpu)?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let levels = Tensor::arange(0u32, 48, &Device::Cpu)?.affine(5.0, 0.0)?.reshape((3, 1, 4, 4))?;
/// let x = cpflow::image::dequantize(&levels, DType::F64, &mut rng)?;
/// flow.initialize(&x)?;
/// let logp = flow.log_prob_exact(&x)?; // (B,) nats on [0, 1)^D
/// let bpd = cpflow::image::bits_per_dim(logp.to_vec1::<f64>()?[0], 16);
/// assert!(bpd.is_finite());
/// let back = flow.inverse(&flow.transform(&x)?.0)?;
/// assert!(back.report.all_converged());
/// # Ok(())
/// # }
/// ```
pub struct ImageFlow {
    config: ImageFlowConfig,
    varmap: VarMap,
    layers: Vec<ImageLayer>,
    shapes: LayerShapes,
    device: Device,
}

impl std::fmt::Debug for ImageFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFlow")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl ImageFlow {
    /// Build a flow (fresh weights drawn from `config.init_seed`) on `device`.
    pub fn new(config: ImageFlowConfig, device: &Device) -> Result<Self> {
        let shapes = config.layer_shapes()?;
        let varmap = VarMap::new();
        let dtype = config.float.dtype();
        let mut rng = FlowRng::seed_from_u64(config.init_seed);
        let mut layers = Vec::with_capacity(config.layers.len());
        for (i, (l, &shape)) in config.layers.iter().zip(&shapes.inputs).enumerate() {
            let prefix = format!("layers.{i}");
            layers.push(match l {
                ImageLayerConfig::Logit { alpha } => {
                    ImageLayer::Logit(LogitTransform::new(*alpha)?)
                }
                ImageLayerConfig::ActNorm => ImageLayer::ActNorm(ChannelActNorm::new(
                    &varmap, &prefix, shape, dtype, device,
                )?),
                ImageLayerConfig::FeatureActNorm => ImageLayer::FeatureActNorm(ActNorm::new(
                    &varmap,
                    &prefix,
                    shape.dim(),
                    dtype,
                    device,
                )?),
                ImageLayerConfig::Squeeze => ImageLayer::Squeeze(Squeeze::new(shape, device)?),
                ImageLayerConfig::FactorOut => ImageLayer::FactorOut(shape.dim() / 2),
                ImageLayerConfig::Cpf(b) => {
                    let vb = VarBuilder::from_varmap(&varmap, dtype, device).pp(prefix);
                    ImageLayer::Cpf(CpFlowBlock::new(vb, b, &mut rng)?)
                }
            });
        }
        Ok(ImageFlow {
            config,
            varmap,
            layers,
            shapes,
            device: device.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ImageFlowConfig {
        &self.config
    }

    /// The variables (weights, ActNorm states and init flags).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// All variables sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        crate::named_vars::sorted_vars(&self.varmap)
    }

    /// Number of scalar parameters (init flags excluded).
    pub fn num_parameters(&self) -> usize {
        crate::named_vars::count_parameters(&self.named_vars())
    }

    /// The layers.
    pub fn layers(&self) -> &[ImageLayer] {
        &self.layers
    }

    /// The CP-Flow blocks in order.
    pub fn blocks(&self) -> impl Iterator<Item = &CpFlowBlock> {
        self.layers.iter().filter_map(|l| match l {
            ImageLayer::Cpf(b) => Some(b),
            _ => None,
        })
    }

    /// The shapes the layers see.
    pub fn layer_shapes(&self) -> &LayerShapes {
        &self.shapes
    }

    /// The data image shape.
    pub fn image(&self) -> ImageShape {
        self.config.image
    }

    /// Data dimension `D = C·H·W` (also the dimension of `z`).
    pub fn dim(&self) -> usize {
        self.config.dim()
    }

    /// Parameter dtype.
    pub fn dtype(&self) -> DType {
        self.config.float.dtype()
    }

    /// Float type.
    pub fn float(&self) -> FloatType {
        self.config.float
    }

    /// Device of the parameters.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The prior.
    pub fn prior(&self) -> &GaussianPrior {
        &self.config.prior
    }

    /// Rows `(B, D)` as images `(B, C, H, W)`.
    pub fn to_images(&self, rows: &Tensor) -> Result<Tensor> {
        let s = self.image();
        Ok(rows.reshape((rows.dim(0)?, s.channels, s.height, s.width))?)
    }

    /// Whether every data-dependent initialisation has run (flags saved with the weights).
    pub fn is_initialized(&self) -> Result<bool> {
        for l in &self.layers {
            let ok = match l {
                ImageLayer::ActNorm(a) => a.is_initialized()?,
                ImageLayer::FeatureActNorm(a) => a.is_initialized()?,
                ImageLayer::Cpf(b) => b.is_initialized()?,
                _ => true,
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(crate) fn ensure_initialized(&self) -> Result<()> {
        if self.is_initialized()? {
            Ok(())
        } else {
            Err(CpflowError::NotInitialized)
        }
    }

    /// Validate and convert data: `(B, C, H, W)` images or `(B, D)` rows, at least one,
    /// finite; in `[0, 1]` or the logit's range ([`crate::image::LogitTransform::range`],
    /// where the flow's samples lie) when the first layer is a logit. Returns `(B, D)` rows in the flow's
    /// dtype and device.
    pub fn check_input(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.check_images(x)?;
        refuse_empty(&x, "images")?;
        Ok(x)
    }

    /// [`ImageFlow::check_input`] that accepts a batch of 0 images: the evaluation and
    /// inversion passes give empty results for it (as [`crate::Flow`]'s do, and as a sample
    /// of 0 images needs).
    pub(crate) fn check_images(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.image();
        let x = match *x.dims() {
            [b, c, h, w] if (c, h, w) == (s.channels, s.height, s.width) => {
                x.reshape((b, s.dim()))?
            }
            [_, _] => x.clone(),
            _ => {
                return Err(CpflowError::InvalidInput(format!(
                    "images must be (B, {}, {}, {}) or (B, {}) rows, got {:?}",
                    s.channels,
                    s.height,
                    s.width,
                    s.dim(),
                    x.dims()
                )));
            }
        };
        let x = check_matrix_rows(&x, s.dim(), "images", self.dtype(), &self.device)?;
        if let Some(ImageLayer::Logit(t)) = self.layers.first()
            && x.dim(0)? > 0
        {
            // The flow's support is the logit's range, which holds [0, 1] (the data) and the
            // flow's own samples (which leave [0, 1] by up to α/(1−2α)): both are scored.
            // A pixel at an end of the range gets a non-finite log-density alone; the
            // flow's samples stop short of the ends in their own dtype (the logit's inverse
            // saturates, `LogitTransform::saturation`), so they are all scored finitely.
            let (lo_range, hi_range) = t.range();
            let (lo_ok, hi_ok) = (lo_range.min(0.0), hi_range.max(1.0));
            let lo = x.min_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let hi = x.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if lo < lo_ok || hi > hi_ok {
                return Err(CpflowError::InvalidInput(format!(
                    "a logit flow models dequantised images in [0, 1] (its samples: \
                     [{lo_range}, {hi_range}], the logit's range); values span [{lo}, {hi}]"
                )));
            }
        }
        Ok(x)
    }

    /// Data-dependent initialisation on a batch (reference: the first training batch): each
    /// ActNorm standardises its input, each ICNN initialises its inner ActNorms, in order.
    ///
    /// Convolutional layers take their statistics over the images and their pixels, so one
    /// image is enough for them; a dense layer (the `fc_end` block and its ActNorm) needs at
    /// least 2 images.
    ///
    /// All or nothing: when any layer fails, every parameter and `initialized` flag is left
    /// exactly as before the call, earlier layers included.
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        let mut h = self.check_input(x)?.detach();
        let images = h.dim(0)?;
        // A dense layer's error on a single image, named as such (it spoke of rows and of
        // calling `initialize`, which the user had just done).
        let dense_hint = |i: usize, e: CpflowError| {
            if images >= 2 {
                return e;
            }
            CpflowError::InvalidInput(format!(
                "initialising from 1 image: layer {i} of this flow is dense (the fc_end \
                 CP-Flow block or its ActNorm) and standardises each feature over the images, \
                 which needs at least 2 images ({e})"
            ))
        };
        crate::named_vars::initialize_all_or_nothing(self.named_vars(), || {
            for (i, l) in self.layers.iter().enumerate() {
                h = match l {
                    ImageLayer::Logit(t) => t.forward(&h)?.0,
                    ImageLayer::ActNorm(a) => {
                        a.initialize(&h)?;
                        a.forward(&h)?.0.detach()
                    }
                    ImageLayer::FeatureActNorm(a) => {
                        a.initialize(&h).map_err(|e| dense_hint(i, e))?;
                        a.forward(&h)?.0.detach()
                    }
                    ImageLayer::Squeeze(s) => s.forward(&h)?,
                    ImageLayer::FactorOut(n) => h.narrow(1, 0, h.dim(1)? - n)?.contiguous()?,
                    ImageLayer::Cpf(b) => {
                        let conv = matches!(
                            b.potential,
                            Potential::ConvIcnn(_)
                                | Potential::ConvIcnn2(_)
                                | Potential::ConvIcnn3(_)
                        );
                        b.initialize(&h, None)
                            .map_err(|e| if conv { e } else { dense_hint(i, e) })?;
                        b.forward(&h, None)?.detach()
                    }
                };
            }
            Ok(())
        })
    }
}
