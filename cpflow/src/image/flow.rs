//! [`ImageFlow`]: a multi-scale CP-Flow over images, its data-dependent initialisation and
//! its density (exact dense log-dets for small `D`, SLQ with a standard error for large `D`).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use icnn::ImageShape;
use rand::Rng;

use crate::actnorm::ActNorm;
use crate::block::{CpFlowBlock, HessianOperator};
use crate::config::{FloatType, SlqConfig};
use crate::error::{CpflowError, Result};
use crate::flow::{LayerWeights, check_matrix_rows, refuse_empty};
use crate::image::actnorm::ChannelActNorm;
use crate::image::config::{ImageFlowConfig, ImageLayerConfig, LayerShapes};
use crate::image::logit::LogitTransform;
use crate::image::squeeze::Squeeze;
use crate::non_finite_rows::{
    exact_logdet_rows, name_not_convex, or_non_finite_rows, rows_without_value,
};
use crate::potential::Potential;
use crate::prior::GaussianPrior;
use crate::rng::FlowRng;
use crate::slq::{SlqLogProb, slq_logdet_block};

/// Images per chunk of the evaluation passes at most ([`ImageFlow::eval_chunk_rows`]).
pub const IMAGE_EVAL_CHUNK: usize = 256;

/// Hidden units that one chunk of an SLQ evaluation or of a forward pass may carry: images
/// times the widest block's units per image ([`ImageFlowConfig::max_hidden_units`]). An SLQ
/// pass keeps about 17 values per unit (measured: a 200-image validation batch of a `conv_icnn`
/// of width 256 on MNIST peaked at 7.6 GB against 2.1 GB for 16 images), so 2²⁶ units are about
/// 4.5 GB in f32. Below it, chunks are [`IMAGE_EVAL_CHUNK`] images (every default
/// configuration).
const EVAL_CHUNK_UNITS: usize = 1 << 26;

/// Hessian-vector products per pass when the exact log-det builds a dense Hessian
/// (`rows × columns` of one `apply_many` call).
const EXACT_HVPS_PER_PASS: usize = 256;

/// One layer of an [`ImageFlow`], built from the matching [`crate::image::ImageLayerConfig`]
/// (see [`ImageFlow::layers`]).
///
/// ```
/// use candle_core::Device;
/// use cpflow::image::{ImageFlow, ImageLayer, ImageModelConfig};
/// use icnn::ImageShape;
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
/// use candle_core::{DType, Device, Tensor};
/// use cpflow::image::{ImageFlow, ImageFlowConfig, MultiscaleConfig};
/// use cpflow::{FloatType, PotentialConfig};
/// use icnn::{Icnn2Config, ImageShape};
/// use rand::SeedableRng;
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
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
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
            // A pixel at an end of the range gets a non-finite log-density alone.
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

    /// The forward pass of validated rows, detached: `z (B, D)` (factored-out parts first,
    /// then the last scale, as the reference concatenates them), `Σ log-det` per row and
    /// `Σ se²` per row. Each block's `(z, log-det, se)` comes from `block(block, host
    /// weights, h, ld)`, given the log-det so far `ld` of each row (with `h`, what
    /// `non_finite_rows::rows_without_value` needs to tell which rows may fail on their own, as
    /// in [`crate::Flow`]). A block whose log-det finds its potential not positive definite is
    /// [`CpflowError::NotConvex`] naming its layer.
    pub(crate) fn forward_with<F>(
        &self,
        x: &Tensor,
        weights: &[Option<icnn::HostWeights>],
        mut block: F,
    ) -> Result<(Tensor, Vec<f64>, Vec<f64>)>
    where
        F: FnMut(
            &CpFlowBlock,
            Option<&icnn::HostWeights>,
            &Tensor,
            &[f64],
        ) -> Result<(Tensor, Vec<f64>, Vec<f64>)>,
    {
        let b = x.dim(0)?;
        let mut h = x.detach();
        let mut ld = vec![0.0f64; b];
        let mut var = vec![0.0f64; b];
        let mut out: Vec<Tensor> = Vec::new();
        let add_scalar = |ld: &mut [f64], t: &Tensor| -> Result<()> {
            let v = t.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            ld.iter_mut().for_each(|l| *l += v);
            Ok(())
        };
        for (i, l) in self.layers.iter().enumerate() {
            h = match l {
                ImageLayer::Logit(t) => {
                    let (y, l) = t.forward(&h)?;
                    let l = l.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                    ld.iter_mut().zip(l).for_each(|(a, b)| *a += b);
                    y.detach()
                }
                ImageLayer::ActNorm(a) => {
                    let (y, l) = a.forward(&h)?;
                    add_scalar(&mut ld, &l)?;
                    y.detach()
                }
                ImageLayer::FeatureActNorm(a) => {
                    let (y, l) = a.forward(&h)?;
                    add_scalar(&mut ld, &l)?;
                    y.detach()
                }
                ImageLayer::Squeeze(s) => s.forward(&h)?,
                ImageLayer::FactorOut(n) => {
                    let keep = h.dim(1)? - n;
                    out.push(h.narrow(1, keep, *n)?);
                    h.narrow(1, 0, keep)?.contiguous()?
                }
                ImageLayer::Cpf(blk) => {
                    let w = weights.get(i).and_then(Option::as_ref);
                    let (z, l, se) = block(blk, w, &h, &ld).map_err(|e| name_not_convex(i, e))?;
                    ld.iter_mut().zip(l).for_each(|(a, b)| *a += b);
                    var.iter_mut().zip(se).for_each(|(a, s)| *a += s * s);
                    z.detach()
                }
            };
        }
        out.push(h);
        let z = Tensor::cat(&out, 1)?.contiguous()?;
        Ok((z, ld, var))
    }

    /// Images per chunk of the evaluation passes (SLQ, forward, and at most this many in the
    /// exact pass): [`IMAGE_EVAL_CHUNK`], fewer for blocks of over 2¹⁸ hidden units per image
    /// (2²⁶ units a chunk: an SLQ pass keeps about 17 values per unit).
    ///
    /// ```
    /// use candle_core::Device;
    /// use cpflow::image::{ImageFlow, ImageFlowConfig, MultiscaleConfig};
    /// use cpflow::PotentialConfig;
    /// use icnn::{ConvIcnn3Config, ImageShape};
    /// let mut ms = MultiscaleConfig::mnist();
    /// ms.nblocks = vec![1];
    /// let flow = ImageFlow::new(ImageFlowConfig::multiscale(&ms)?, &Device::Cpu)?;
    /// assert_eq!(flow.eval_chunk_rows(), 256); // 64 · 3 · 28 · 28 units per image
    /// let image = ImageShape::new(1, 28, 28);
    /// ms.potential = PotentialConfig::ConvIcnn3(ConvIcnn3Config { image, width: 256, depth: 2, ..Default::default() });
    /// let flow = ImageFlow::new(ImageFlowConfig::multiscale(&ms)?, &Device::Cpu)?;
    /// assert_eq!(flow.eval_chunk_rows(), (1 << 26) / (256 * 2 * 28 * 28)); // 167
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn eval_chunk_rows(&self) -> usize {
        match self.config.max_hidden_units() {
            Some(units) => (EVAL_CHUNK_UNITS / units.max(1)).clamp(1, IMAGE_EVAL_CHUNK),
            None => IMAGE_EVAL_CHUNK,
        }
    }

    /// The host weights of each layer (`None` but for CP-Flow blocks whose potentials the
    /// host kernels cover), built once for the chunks of an evaluation.
    fn host_weights(&self) -> Result<LayerWeights> {
        self.layers
            .iter()
            .map(|l| match l {
                ImageLayer::Cpf(b) => b.host_weights(None),
                _ => Ok(None),
            })
            .collect()
    }

    /// Apply `f` to row chunks and concatenate its outputs, with `icnn`'s array pool paused
    /// ([`icnn::pause_array_pool`]: it would keep the chunks' arrays beside the live ones).
    fn chunked<F>(&self, x: &Tensor, rows: usize, mut f: F) -> Result<Vec<Tensor>>
    where
        F: FnMut(&Tensor) -> Result<Vec<Tensor>>,
    {
        let _pause = icnn::pause_array_pool();
        let n = x.dim(0)?;
        let rows = rows.max(1);
        let mut parts: Vec<Vec<Tensor>> = Vec::new();
        let mut start = 0;
        while start < n {
            let len = rows.min(n - start);
            parts.push(f(&x.narrow(0, start, len)?)?);
            start += len;
        }
        let k = parts.first().map_or(0, Vec::len);
        (0..k)
            .map(|j| {
                let cols: Vec<Tensor> = parts.iter().map(|p| p[j].clone()).collect();
                Ok(Tensor::cat(&cols, 0)?)
            })
            .collect()
    }

    /// `z = f(x)` `(B, D)` without any log-det (one gradient evaluation per block): for
    /// reconstructions `f⁻¹(f(x))` and latents. Detached; 0 images give `(0, D)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.ensure_initialized()?;
        let x = self.check_images(x)?;
        if x.dim(0)? == 0 {
            return Ok(x);
        }
        let out = self.chunked(&x, self.eval_chunk_rows(), |xc| {
            let (z, _, _) = self.forward_with(xc, &[], |blk, _, h, _| {
                let z = blk.forward(h, None)?;
                let zeros = vec![0.0; h.dim(0)?];
                Ok((z, zeros.clone(), zeros))
            })?;
            Ok(vec![z])
        })?;
        Ok(out[0].clone())
    }

    /// `z = f(x)` `(B, D)` and the exact `log|det ∂z/∂x|` per image `(B,)` (logit, ActNorm
    /// and every block's dense Hessian, built from `D` Hessian-vector products and factored
    /// by Cholesky: affordable for `D` up to a few thousand on a handful of images).
    /// Outputs are detached. An image that overflows a block gets a NaN log-det alone, as in
    /// [`crate::Flow::transform`] (also in [`ImageFlow::log_prob_slq`]). 0 images give
    /// `(0, D)` and `(0,)` tensors.
    pub fn transform(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.ensure_initialized()?;
        let x = self.check_images(x)?;
        if x.dim(0)? == 0 {
            let ld = Tensor::zeros(0, x.dtype(), x.device())?;
            return Ok((x, ld));
        }
        let rows = (4096 / self.dim()).clamp(1, self.eval_chunk_rows());
        let weights = self.host_weights()?;
        let out = self.chunked(&x, rows, |xc| {
            let (z, ld, _) = self.forward_with(xc, &weights, |blk, w, h, ld| {
                let (z, op) = blk.detached_operator_sharing(h, None, w)?;
                let tolerate = or_non_finite_rows(&rows_without_value(h, ld)?, &z)?;
                let lds = exact_logdet(&op, h, &tolerate)?;
                let zeros = vec![0.0; lds.len()];
                Ok((z, lds, zeros))
            })?;
            let ld = Tensor::from_vec(ld, xc.dim(0)?, xc.device())?.to_dtype(xc.dtype())?;
            Ok(vec![z, ld])
        })?;
        Ok((out[0].clone(), out[1].clone()))
    }

    /// `log p(x)` per image with exact log-dets (nats, density on the data space, e.g.
    /// `[0, 1)^D` for a logit flow), `(B,)`, detached. See [`crate::image::bits_per_dim`].
    pub fn log_prob_exact(&self, x: &Tensor) -> Result<Tensor> {
        let (z, ld) = self.transform(x)?;
        Ok((self.prior().log_prob(&z)? + ld)?)
    }

    /// `log p(x)` per image with each block's log-det estimated by stochastic Lanczos
    /// quadrature (`probes` unit Rademacher probes, `min(steps, D)` Lanczos steps;
    /// reference evaluation: 1 probe, 10 steps), with the standard error of the estimate.
    /// 0 images give empty results.
    pub fn log_prob_slq<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        params: &SlqConfig,
        rng: &mut R,
    ) -> Result<SlqLogProb> {
        self.ensure_initialized()?;
        if params.probes == 0 || params.steps == 0 {
            return Err(CpflowError::InvalidConfig(
                "SLQ needs probes ≥ 1 and steps ≥ 1".into(),
            ));
        }
        let x = self.check_images(x)?;
        if x.dim(0)? == 0 {
            return Ok(SlqLogProb {
                log_prob: Tensor::zeros(0, x.dtype(), x.device())?,
                std_err: Vec::new(),
            });
        }
        let mut var_all = Vec::with_capacity(x.dim(0)?);
        let weights = self.host_weights()?;
        let out = self.chunked(&x, self.eval_chunk_rows(), |xc| {
            let (z, ld, var) = self.forward_with(xc, &weights, |blk, w, h, ld| {
                let (z, op) = blk.detached_operator_sharing(h, None, w)?;
                let tolerate = or_non_finite_rows(&rows_without_value(h, ld)?, &z)?;
                let (estimate, std_err) = slq_logdet_block(&op, h, params, &mut *rng, &tolerate)?;
                Ok((z, estimate, std_err))
            })?;
            var_all.extend(var);
            let ld = Tensor::from_vec(ld, xc.dim(0)?, xc.device())?.to_dtype(xc.dtype())?;
            Ok(vec![(self.prior().log_prob(&z)? + ld)?])
        })?;
        Ok(SlqLogProb {
            log_prob: out[0].clone(),
            std_err: var_all.into_iter().map(f64::sqrt).collect(),
        })
    }
}

/// `log det H` per row from the dense Hessian assembled by `apply_many` on identity columns
/// (NaN for a row that overflows, as `non_finite_rows::exact_logdet_rows` says).
fn exact_logdet(op: &HessianOperator, h: &Tensor, tolerate: &[bool]) -> Result<Vec<f64>> {
    let (b, d) = h.dims2()?;
    let cols = (EXACT_HVPS_PER_PASS / b).clamp(1, d);
    let eye = Tensor::eye(d, h.dtype(), h.device())?;
    let mut parts = Vec::with_capacity(d.div_ceil(cols));
    let mut start = 0;
    while start < d {
        let len = cols.min(d - start);
        let e = eye
            .narrow(0, start, len)?
            .unsqueeze(0)?
            .broadcast_as((b, len, d))?
            .contiguous()?;
        // Row i of the result is (H e_i)ᵀ, i.e. row i of the symmetric H.
        parts.push(op.apply_many(&e)?);
        start += len;
    }
    let hess = Tensor::cat(&parts, 1)?;
    exact_logdet_rows(&hess, tolerate)
}
