//! The serialisable description of an image flow, and the reference's multi-scale layout
//! (`lib/multiscale_flow.py:MultiscaleFlow`, `StackedInvBlocks`; images-vae.md §1.5, §2.3).

use icnn::ImageShape;
use serde::{Deserialize, Serialize};

use crate::block::BlockConfig;
use crate::config::FloatType;
use crate::error::{CpflowError, Result};
use crate::image::logit::MNIST_LOGIT_ALPHA;
use crate::image::squeeze::squeezed_shape;
use crate::model_size::{self, Count};
use crate::potential::PotentialConfig;
use crate::prior::GaussianPrior;

/// One layer of an [`crate::image::ImageFlow`]. Every layer acts on flattened `(C, H, W)`
/// rows; the shape each layer sees follows from the input shape and the layers before it.
///
/// ```
/// use cpflow::image::{ImageFlowConfig, ImageLayerConfig as L};
/// use cpflow::{BlockConfig, FloatType, GaussianPrior, PotentialConfig};
/// use cpflow::icnn::{Icnn2Config, ImageShape};
/// // 1×4×4 → squeeze → 4×2×2 → factor out 2×2×2 → a dense block on the remaining 8 entries.
/// let icnn = Icnn2Config { dim: 8, width: 4, depth: 2, ..Default::default() };
/// let dense = PotentialConfig::Icnn2(icnn);
/// let cfg = ImageFlowConfig {
///     image: ImageShape::new(1, 4, 4),
///     layers: vec![
///         L::Logit { alpha: 0.05 },
///         L::Squeeze,
///         L::FactorOut,
///         L::Cpf(BlockConfig::new(dense)),
///     ],
///     prior: GaussianPrior::standard(),
///     float: FloatType::F64,
///     init_seed: 0,
/// };
/// assert_eq!(cfg.num_blocks(), 1);
/// assert_eq!(cfg.layer_shapes()?.output, ImageShape::new(2, 2, 2));
/// // Serialised with a `layer` tag.
/// assert!(serde_json::to_string(&cfg.layers[1])?.contains(r#""layer":"squeeze""#));
/// # Ok::<(), cpflow::CpflowError>(())
/// ```
// Unknown keys are refused (a damaged checkpoint): in `Logit`; serde does not apply it to
// the unit variants (serde-rs/serde#2123): the loaders' key check does
// (`checkpoint::known_keys`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "layer", rename_all = "snake_case", deny_unknown_fields)]
pub enum ImageLayerConfig {
    /// The logit transform with offset `alpha` (reference `LogitTransform(α)`).
    Logit {
        /// `α` (1e-6 for MNIST, 0.05 for CIFAR-10 in the reference).
        alpha: f64,
    },
    /// ActNorm per channel (log-det `H·W·Σ log s`).
    ActNorm,
    /// ActNorm per feature of the flattened row (the reference's `FCWrapper(ActNorm(D))`
    /// after an `fc_end` block).
    FeatureActNorm,
    /// Space-to-depth `(C, H, W) → (4C, H/2, W/2)`.
    Squeeze,
    /// Factor-out: the second half of the channels leaves the flow (it goes to `z` as it is);
    /// the first half continues (reference `MultiscaleFlow.forward` with `factor_out`).
    FactorOut,
    /// A CP-Flow block on the flattened row (its potential's dimension must be `C·H·W`, and
    /// a convolutional potential's image shape the current one).
    Cpf(BlockConfig),
}

/// Everything needed to rebuild an [`crate::image::ImageFlow`] (saved with its weights).
///
/// ```
/// use cpflow::image::{ImageFlowConfig, MultiscaleConfig};
/// let cfg = ImageFlowConfig::multiscale(&MultiscaleConfig::mnist())?;
/// assert_eq!(cfg.num_blocks(), 9); // the reference default 3-3-3
/// let json = serde_json::to_string(&cfg).unwrap();
/// assert_eq!(serde_json::from_str::<ImageFlowConfig>(&json).unwrap(), cfg);
/// # Ok::<(), cpflow::CpflowError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFlowConfig {
    /// The data image shape `(C, H, W)`.
    pub image: ImageShape,
    /// Layers applied in order from data `x` to latent `z`.
    pub layers: Vec<ImageLayerConfig>,
    /// Prior on the whole `z` (factored-out parts included).
    #[serde(default)]
    pub prior: GaussianPrior,
    /// Floating-point type of the parameters.
    #[serde(default)]
    pub float: FloatType,
    /// Seed of the host RNG that draws the initial ICNN weights.
    #[serde(default)]
    pub init_seed: u64,
}

/// The shapes seen by the layers of a valid configuration
/// ([`ImageFlowConfig::layer_shapes`]).
///
/// ```
/// use cpflow::image::{ImageFlowConfig, MultiscaleConfig};
/// use cpflow::PotentialConfig;
/// use cpflow::icnn::{Icnn2Config, ImageShape};
/// let ms = MultiscaleConfig {
///     image: ImageShape::new(1, 4, 4),
///     nblocks: vec![1, 1],
///     factor_out: true,
///     potential: PotentialConfig::Icnn2(Icnn2Config { width: 4, depth: 2, ..Default::default() }),
///     ..MultiscaleConfig::mnist()
/// };
/// let shapes = ImageFlowConfig::multiscale(&ms)?.layer_shapes()?;
/// assert_eq!(shapes.inputs[0], ImageShape::new(1, 4, 4));
/// // After the squeeze (4×2×2) half of the channels leave the flow.
/// assert_eq!(shapes.factored, vec![ImageShape::new(2, 2, 2)]);
/// assert_eq!(shapes.output, ImageShape::new(2, 2, 2));
/// # Ok::<(), cpflow::CpflowError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LayerShapes {
    /// Input shape of layer `i`.
    pub inputs: Vec<ImageShape>,
    /// The shape after the last layer.
    pub output: ImageShape,
    /// Shapes of the factored-out parts, in the order they leave the flow.
    pub factored: Vec<ImageShape>,
}

impl ImageFlowConfig {
    /// Data dimension `D = C·H·W`.
    pub fn dim(&self) -> usize {
        self.image.dim()
    }

    /// Number of CP-Flow blocks.
    pub fn num_blocks(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| matches!(l, ImageLayerConfig::Cpf(_)))
            .count()
    }

    /// Builder: set the float type.
    pub fn with_float(mut self, float: FloatType) -> Self {
        self.float = float;
        self
    }

    /// Builder: set the weight-init seed.
    pub fn with_init_seed(mut self, seed: u64) -> Self {
        self.init_seed = seed;
        self
    }

    /// Check the layer chain and return the shape each layer sees.
    pub fn layer_shapes(&self) -> Result<LayerShapes> {
        let bad = |i: usize, msg: String| CpflowError::InvalidConfig(format!("layer {i}: {msg}"));
        if self.image.dim() == 0 {
            return Err(CpflowError::InvalidConfig(
                "image shape must be non-empty".into(),
            ));
        }
        self.prior.validate()?;
        let mut shape = self.image;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut factored = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            inputs.push(shape);
            match l {
                ImageLayerConfig::Logit { alpha } => {
                    if !(0.0..0.5).contains(alpha) {
                        return Err(bad(i, format!("logit alpha {alpha} is not in [0, 0.5)")));
                    }
                }
                ImageLayerConfig::ActNorm | ImageLayerConfig::FeatureActNorm => {}
                ImageLayerConfig::Squeeze => {
                    if !shape.height.is_multiple_of(2) || !shape.width.is_multiple_of(2) {
                        return Err(bad(
                            i,
                            format!("cannot squeeze a {}×{} image", shape.height, shape.width),
                        ));
                    }
                    shape = squeezed_shape(shape);
                }
                ImageLayerConfig::FactorOut => {
                    if !shape.channels.is_multiple_of(2) {
                        return Err(bad(
                            i,
                            format!("cannot factor out half of {} channels", shape.channels),
                        ));
                    }
                    shape.channels /= 2;
                    factored.push(shape);
                }
                ImageLayerConfig::Cpf(b) => {
                    if b.potential.dim() != shape.dim() {
                        return Err(bad(
                            i,
                            format!(
                                "potential dimension {} differs from C·H·W = {}",
                                b.potential.dim(),
                                shape.dim()
                            ),
                        ));
                    }
                    if let Some(s) = b.potential.image_shape()
                        && s != shape
                    {
                        return Err(bad(
                            i,
                            format!(
                                "convolutional potential expects {s:?}, the layer sees {shape:?}"
                            ),
                        ));
                    }
                    if b.potential.context_dim().is_some() {
                        return Err(bad(i, "image flows take no context (PICNN)".into()));
                    }
                }
            }
        }
        model_size::check_model_size(
            &format!("an image flow of {} layers", self.layers.len()),
            self.count(&inputs).at_least,
        )?;
        Ok(LayerShapes {
            inputs,
            output: shape,
            factored,
        })
    }

    /// Scalar parameters of the flow this configuration builds (its ActNorms' and blocks'),
    /// counted without building it; `None` when a block's potential is a network of your
    /// own. Saturates at `usize::MAX`. What [`ImageFlowConfig::layer_shapes`] refuses (an
    /// invalid layer chain, more than [`icnn::MAX_MODEL_PARAMETERS`]) is an error here too.
    ///
    /// ```
    /// use cpflow::candle::Device;
    /// use cpflow::image::{ImageFlow, ImageFlowConfig, MultiscaleConfig};
    /// use cpflow::icnn::ImageShape;
    /// let ms = MultiscaleConfig { image: ImageShape::new(1, 8, 8), nblocks: vec![1, 1], ..MultiscaleConfig::mnist() };
    /// let cfg = ImageFlowConfig::multiscale(&ms)?;
    /// let flow = ImageFlow::new(cfg.clone(), &Device::Cpu)?;
    /// assert_eq!(cfg.parameter_count()?, Some(flow.num_parameters()));
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn parameter_count(&self) -> Result<Option<usize>> {
        let shapes = self.layer_shapes()?;
        Ok(self.count(&shapes.inputs).exact())
    }

    /// The hidden units per image of all CP-Flow blocks together
    /// ([`crate::PotentialConfig::hidden_units`], saturating): a training step keeps every
    /// block's forward pass for the backward pass. `None` when no block's potential has a
    /// count (networks of your own).
    ///
    /// ```
    /// use cpflow::image::{ImageFlowConfig, MultiscaleConfig};
    /// // MNIST: ConvICNN width 64, depth 3; one block per scale: 28×28, 14×14 and 7×7.
    /// let mut ms = MultiscaleConfig::mnist();
    /// ms.nblocks = vec![1, 1, 1];
    /// let cfg = ImageFlowConfig::multiscale(&ms)?;
    /// assert_eq!(cfg.total_hidden_units(), Some(64 * 3 * (28 * 28 + 14 * 14 + 7 * 7)));
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn total_hidden_units(&self) -> Option<usize> {
        self.block_hidden_units().reduce(crate::model_size::add)
    }

    /// The hidden units per image of the widest CP-Flow block (the evaluation passes run the
    /// blocks one after the other); `None` as for [`ImageFlowConfig::total_hidden_units`].
    ///
    /// ```
    /// use cpflow::image::{ImageFlowConfig, MultiscaleConfig};
    /// let cfg = ImageFlowConfig::multiscale(&MultiscaleConfig::mnist())?;
    /// // ConvICNN width 64, depth 3 at 28×28, the first scale.
    /// assert_eq!(cfg.max_hidden_units(), Some(64 * 3 * 28 * 28));
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn max_hidden_units(&self) -> Option<usize> {
        self.block_hidden_units().max()
    }

    fn block_hidden_units(&self) -> impl Iterator<Item = usize> + '_ {
        self.layers.iter().filter_map(|l| match l {
            ImageLayerConfig::Cpf(b) => b.potential.hidden_units(),
            _ => None,
        })
    }

    /// The parameters of the layers, each seeing `inputs[i]`.
    fn count(&self, inputs: &[ImageShape]) -> Count {
        self.layers
            .iter()
            .zip(inputs)
            .fold(Count::of(0), |n, (l, shape)| {
                n.plus(match l {
                    ImageLayerConfig::ActNorm => Count::of(model_size::actnorm(shape.channels)),
                    ImageLayerConfig::FeatureActNorm => Count::of(model_size::actnorm(shape.dim())),
                    ImageLayerConfig::Cpf(b) => Count::of_block(b),
                    ImageLayerConfig::Logit { .. }
                    | ImageLayerConfig::Squeeze
                    | ImageLayerConfig::FactorOut => Count::of(0),
                })
            })
    }

    /// The reference's multi-scale flow (module docs): for scale `i`, `[Logit, ActNorm]` at
    /// scale 0 only (with a logit), then `nblocks[i]` × `[ActNorm (if actnorm), CPF]`, then
    /// (not on the last scale) `Squeeze` and, with `factor_out`, `FactorOut`; on the last
    /// scale, with `fc_end`, a dense CPF on the flattened row and a `FeatureActNorm` (if
    /// actnorm). No trailing ActNorm after the last conv block.
    pub fn multiscale(ms: &MultiscaleConfig) -> Result<Self> {
        if ms.nblocks.is_empty() {
            return Err(CpflowError::InvalidConfig(
                "a multi-scale flow needs at least one scale".into(),
            ));
        }
        let sides = halvings(ms.image);
        if ms.nblocks.len() > sides.len() {
            // Refused here by the key (`model.nblocks` of an image run's config, whose
            // reader adds the dataset): the layer chain's error named a squeeze layer by index.
            let most = sides.len();
            let sides: Vec<String> = sides.iter().map(|(h, w)| format!("{h}×{w}")).collect();
            return Err(CpflowError::InvalidConfig(format!(
                "model.nblocks = {:?} has {} scales, but {}×{}×{} images allow at most {most} \
                 (every scale but the last halves the height and width, which must be even: \
                 {}): e.g. model.nblocks = {:?}",
                ms.nblocks,
                ms.nblocks.len(),
                ms.image.channels,
                ms.image.height,
                ms.image.width,
                sides.join(" → "),
                &ms.nblocks[..most]
            )));
        }
        let mut layers = Vec::new();
        let mut shape = ms.image;
        let mut counted = 0;
        let last = ms.nblocks.len() - 1;
        for (i, &n) in ms.nblocks.iter().enumerate() {
            if i == 0
                && let Some(alpha) = ms.logit_alpha
            {
                layers.push(ImageLayerConfig::Logit { alpha });
                layers.push(ImageLayerConfig::ActNorm);
            }
            if n > 0 {
                let mut block = BlockConfig::new(potential_for_shape(&ms.potential, shape)?);
                block.trainable_w0 = ms.trainable_w0;
                // Counted before the scale's layers are listed: the list of an absurd
                // `nblocks` would itself fill the memory before `layer_shapes` could refuse it.
                let actnorm = if ms.actnorm {
                    model_size::actnorm(shape.channels)
                } else {
                    0
                };
                let per_block = model_size::add(Count::of_block(&block).at_least, actnorm);
                counted = model_size::add(counted, model_size::mul(n, per_block));
                model_size::check_model_size(
                    &format!("a multi-scale flow of {:?} blocks", ms.nblocks),
                    counted,
                )?;
                for _ in 0..n {
                    if ms.actnorm {
                        layers.push(ImageLayerConfig::ActNorm);
                    }
                    layers.push(ImageLayerConfig::Cpf(block.clone()));
                }
            }
            if i < last {
                layers.push(ImageLayerConfig::Squeeze);
                shape = squeezed_shape(shape);
                if ms.factor_out {
                    layers.push(ImageLayerConfig::FactorOut);
                    shape.channels /= 2;
                }
            } else if let Some(fc) = &ms.fc_end {
                if fc.image_shape().is_some() {
                    return Err(CpflowError::InvalidConfig(
                        "fc_end takes a dense potential".into(),
                    ));
                }
                let mut block = BlockConfig::new(potential_for_shape(fc, shape)?);
                block.trainable_w0 = ms.trainable_w0;
                layers.push(ImageLayerConfig::Cpf(block));
                if ms.actnorm {
                    layers.push(ImageLayerConfig::FeatureActNorm);
                }
            }
        }
        let cfg = ImageFlowConfig {
            image: ms.image,
            layers,
            prior: GaussianPrior::standard(),
            float: ms.float,
            init_seed: ms.init_seed,
        };
        cfg.layer_shapes()?;
        Ok(cfg)
    }
}

/// The reference's `MultiscaleFlow` options (`train_img.py` flags, images-vae.md §2.1), turned
/// into layers by [`ImageFlowConfig::multiscale`].
///
/// ```
/// use cpflow::image::{ImageFlowConfig, ImageLayerConfig, MultiscaleConfig};
/// use cpflow::icnn::ImageShape;
/// let ms = MultiscaleConfig {
///     image: ImageShape::new(1, 8, 8),
///     nblocks: vec![2, 1],
///     ..MultiscaleConfig::mnist()
/// };
/// let cfg = ImageFlowConfig::multiscale(&ms)?;
/// // Logit, ActNorm, 2 × [ActNorm, CPF], Squeeze, 1 × [ActNorm, CPF].
/// assert_eq!(cfg.layers.len(), 2 + 4 + 1 + 2);
/// assert_eq!(cfg.num_blocks(), 3);
/// assert_eq!(cfg.layers[0], ImageLayerConfig::Logit { alpha: 1e-6 });
/// // An odd image cannot be squeezed between the scales.
/// let odd = MultiscaleConfig { image: ImageShape::new(1, 5, 5), ..ms };
/// assert!(ImageFlowConfig::multiscale(&odd).is_err());
/// # Ok::<(), cpflow::CpflowError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultiscaleConfig {
    /// Data image shape.
    pub image: ImageShape,
    /// Blocks per scale (`--nblocks 3-3-3`); the number of entries is the number of scales.
    pub nblocks: Vec<usize>,
    /// The logit offset of the init layer (`None`: no logit and no init ActNorm).
    pub logit_alpha: Option<f64>,
    /// An ActNorm before every block (`--actnorm`, default true).
    pub actnorm: bool,
    /// Factor out half of the channels after each non-final scale (`--factor_out`, default
    /// false).
    pub factor_out: bool,
    /// The potential of every block, as a template: its dimension (dense) or image shape
    /// (convolutional) is replaced by the scale's shape.
    pub potential: PotentialConfig,
    /// A final dense CPF on the flattened row (`--fc_end`, default none), as a template.
    pub fc_end: Option<PotentialConfig>,
    /// Whether the blocks' quadratic weight `w₀` is trained (reference: true).
    pub trainable_w0: bool,
    /// Float type.
    pub float: FloatType,
    /// Weight-init seed.
    pub init_seed: u64,
}

impl MultiscaleConfig {
    /// `train_img.py --data mnist` defaults: 1×28×28, logit α = 1e-6, ActNorm before every
    /// block, `ConvICNN` width 64 depth 3 ([`default_image_potential`]), blocks 3-3-3, no
    /// factor-out, f32.
    pub fn mnist() -> Self {
        MultiscaleConfig {
            image: ImageShape::new(1, 28, 28),
            nblocks: vec![3, 3, 3],
            logit_alpha: Some(MNIST_LOGIT_ALPHA),
            actnorm: true,
            factor_out: false,
            potential: default_image_potential(),
            fc_end: None,
            trainable_w0: true,
            float: FloatType::F32,
            init_seed: 0,
        }
    }

    /// The most scales (entries of `nblocks`) a multi-scale flow on `image` can have: every
    /// scale but the last ends with a squeeze, which needs an even height and width.
    ///
    /// ```
    /// use cpflow::image::MultiscaleConfig;
    /// use cpflow::icnn::ImageShape;
    /// assert_eq!(MultiscaleConfig::max_scales(ImageShape::new(1, 28, 28)), 3); // 28, 14, 7
    /// assert_eq!(MultiscaleConfig::max_scales(ImageShape::new(3, 32, 32)), 6); // 32 … 1
    /// ```
    pub fn max_scales(image: ImageShape) -> usize {
        halvings(image).len()
    }

    /// The same defaults on 3×32×32 images with logit α = 0.05 (`--data cifar10`).
    pub fn cifar10() -> Self {
        MultiscaleConfig {
            image: ImageShape::new(3, 32, 32),
            logit_alpha: Some(crate::image::logit::CIFAR10_LOGIT_ALPHA),
            ..Self::mnist()
        }
    }
}

/// The (height, width) of each scale a multi-scale flow on `image` can have: the image's,
/// then halved while both are even.
fn halvings(image: ImageShape) -> Vec<(usize, usize)> {
    let mut sides = vec![(image.height, image.width)];
    let (mut h, mut w) = (image.height, image.width);
    while h > 0 && w > 0 && h.is_multiple_of(2) && w.is_multiple_of(2) {
        (h, w) = (h / 2, w / 2);
        sides.push((h, w));
    }
    sides
}

/// The template `potential` resized for images of `shape`: a dense potential gets
/// `dim = C·H·W`, a convolutional one gets `image = shape`, a custom one both (`dim` and the
/// settings `image_channels`, `image_height`, `image_width`). PICNNs are refused.
///
/// ```
/// use cpflow::image::{default_image_potential, potential_for_shape};
/// use cpflow::PotentialConfig;
/// use cpflow::icnn::{Icnn2Config, ImageShape, PicnnConfig};
/// let s = ImageShape::new(4, 2, 2);
/// let dense = PotentialConfig::Icnn2(Icnn2Config::default());
/// assert_eq!(potential_for_shape(&dense, s)?.dim(), 16);
/// let conv = potential_for_shape(&default_image_potential(), s)?;
/// assert_eq!(conv.image_shape(), Some(s));
/// let picnn = PotentialConfig::Picnn(PicnnConfig::default());
/// assert!(matches!(potential_for_shape(&picnn, s), Err(cpflow::CpflowError::InvalidConfig(_))));
/// # Ok::<(), cpflow::CpflowError>(())
/// ```
pub fn potential_for_shape(
    potential: &PotentialConfig,
    shape: ImageShape,
) -> Result<PotentialConfig> {
    let d = shape.dim();
    let mut p = potential.clone();
    match &mut p {
        PotentialConfig::Icnn(c) => c.dim = d,
        PotentialConfig::Icnn2(c) => c.dim = d,
        PotentialConfig::Icnn3(c) => c.dim = d,
        PotentialConfig::DenseIcnn2(c) => c.dim = d,
        PotentialConfig::ConvIcnn(c) => c.image = shape,
        PotentialConfig::ConvIcnn2(c) => c.image = shape,
        PotentialConfig::ConvIcnn3(c) => c.image = shape,
        PotentialConfig::Custom(c) => {
            // The builder sees the image's shape among its settings.
            c.dim = d;
            for (key, value) in [
                ("image_channels", shape.channels),
                ("image_height", shape.height),
                ("image_width", shape.width),
            ] {
                c.settings.insert(key.into(), value as f64);
            }
        }
        PotentialConfig::Picnn(_) | PotentialConfig::CustomConditional(_) => {
            return Err(CpflowError::InvalidConfig(
                "image flows take no context: PICNN and other conditional potentials are not supported".into(),
            ));
        }
    }
    Ok(p)
}

/// The reference's image potential: `ConvICNN` width 64, depth 3, no pooling.
///
/// ```
/// use cpflow::PotentialConfig;
/// match cpflow::image::default_image_potential() {
///     PotentialConfig::ConvIcnn(c) => assert_eq!((c.width, c.depth, c.num_pooling), (64, 3, 0)),
///     other => panic!("not a ConvICNN: {other:?}"),
/// }
/// ```
pub fn default_image_potential() -> PotentialConfig {
    PotentialConfig::ConvIcnn(icnn::ConvIcnnConfig::default())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
