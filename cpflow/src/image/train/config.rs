//! Configuration of image-flow training: the training loop ([`ImageTrainConfig`]), the model
//! ([`ImageModelConfig`], including the no-CP-Flow baseline), the data
//! ([`ImageDataConfig`]) and the whole TOML file of `cpflow train` ([`ImageExperimentConfig`]).

use std::path::PathBuf;

use icnn::{
    ActivationKind, ConvIcnn2Config, ConvIcnn3Config, ConvIcnnConfig, Icnn2Config, ImageShape,
};
use serde::{Deserialize, Serialize};

use crate::adam::AdamParams;
use crate::config::{FloatType, SlqConfig, SurrogateParams};
use crate::error::{CpflowError, Result};
use crate::image::config::{ImageFlowConfig, ImageLayerConfig, MultiscaleConfig};
use crate::image::logit::{CIFAR10_LOGIT_ALPHA, MNIST_LOGIT_ALPHA};
use crate::potential::PotentialConfig;

/// The exponential moving average of the weights (images-vae.md §2.6).
///
/// ```
/// use cpflow::image::EmaConfig;
/// let ema = EmaConfig { decay: 0.999, start_iteration: 100 };
/// // The shadows copy the weights up to step 100, then average.
/// assert_eq!((ema.decay_at(1), ema.decay_at(100), ema.decay_at(101)), (0.0, 0.0, 0.999));
/// let toml: EmaConfig = toml::from_str("start_iteration = 5").unwrap();
/// assert_eq!(toml, EmaConfig { decay: 0.999, start_iteration: 5 });
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmaConfig {
    /// Decay once averaging has started (reference 0.999).
    pub decay: f64,
    /// Optimiser steps before which the average just copies the weights (decay 0; the
    /// reference starts averaging at epoch 50 of 100, i.e. half-way).
    pub start_iteration: usize,
}

impl Default for EmaConfig {
    fn default() -> Self {
        EmaConfig {
            decay: 0.999,
            start_iteration: 0,
        }
    }
}

impl EmaConfig {
    /// The decay of the update that follows optimiser step `iteration` (1-based count of
    /// steps done).
    pub fn decay_at(&self, iteration: usize) -> f64 {
        if iteration <= self.start_iteration {
            0.0
        } else {
            self.decay
        }
    }
}

/// The final, once-only score of the test split (EMA weights).
///
/// ```
/// use cpflow::image::ImageTestConfig;
/// let cfg: ImageTestConfig = toml::from_str("images = 500").unwrap();
/// assert_eq!((cfg.images, cfg.exact_images), (Some(500), 16));
/// assert_eq!((cfg.slq.probes, cfg.slq.steps), (1, 10)); // the reference's estimator
/// assert!(toml::from_str::<ImageTestConfig>("exact = 3").is_err()); // unknown key
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageTestConfig {
    /// SLQ estimator of every block's log-det (reference: 1 probe, 10 Lanczos steps).
    pub slq: SlqConfig,
    /// Score the first `images` test images (`None`: all of them).
    pub images: Option<usize>,
    /// Also score the first `exact_images` of them with the exact log-det (dense `D × D`
    /// Hessian per block and image), to measure how far the SLQ number is off (0: skip).
    pub exact_images: usize,
}

impl Default for ImageTestConfig {
    fn default() -> Self {
        ImageTestConfig {
            slq: SlqConfig::default(),
            images: None,
            exact_images: 16,
        }
    }
}

/// The training loop (`train_img.py` defaults, images-vae.md §2.5–2.7): batch 64, Adam 1e-3
/// (β = (0.9, 0.99), coupled weight decay 1e-6), no warm-up, gradient clipping at norm 1,
/// the CG surrogate with `atol = rtol = 1e-3` and at most `D` iterations, an EMA with decay
/// 0.999. Validation (every `val_every` steps and at the end) and the test score use the EMA
/// weights and SLQ with one probe and 10 Lanczos steps. Unlike the reference, validation
/// images come from the training set and the test set is scored once, at the end.
///
/// At least one of `epochs`, `max_iterations`, `max_minutes` must be set; the run stops at the
/// first one reached.
///
/// ```
/// let cfg: cpflow::image::ImageTrainConfig = toml::from_str("max_minutes = 30.0").unwrap();
/// assert_eq!((cfg.batch_size, cfg.adam.lr, cfg.clip_grad_norm), (64, 1e-3, Some(1.0)));
/// assert_eq!((cfg.surrogate.cg_atol, cfg.surrogate.cg_rtol), (1e-3, 1e-3));
/// cfg.validate().unwrap();
/// let no_steps: cpflow::image::ImageTrainConfig = toml::from_str("epochs = 0").unwrap();
/// assert!(no_steps.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageTrainConfig {
    /// Passes over the training images (reference 100), counted in images seen (a resume
    /// may change the batch size).
    pub epochs: Option<usize>,
    /// Optimiser steps in total.
    pub max_iterations: Option<usize>,
    /// Time budget in minutes of training steps (validation, monitoring, checkpoints and the
    /// test score are not counted; a resumed run continues the count).
    pub max_minutes: Option<f64>,
    /// Mini-batch size (reference 64).
    pub batch_size: usize,
    /// Adam (reference: lr 1e-3, betas (0.9, 0.99), weight decay 1e-6 on every parameter).
    pub adam: AdamParams,
    /// Linear learning-rate warm-up over this many steps (reference 0: none).
    pub warmup_iterations: usize,
    /// Gradient clipping at this global norm (reference 1).
    pub clip_grad_norm: Option<f64>,
    /// The CG surrogate (reference: 1 probe, atol = rtol = 1e-3, at most `D` iterations).
    pub surrogate: SurrogateParams,
    /// Weight averaging.
    pub ema: EmaConfig,
    /// Random horizontal flips of training images (reference: on for CIFAR-10).
    pub hflip: bool,
    /// Validate (SLQ bpd of the validation images, EMA weights) every this many steps
    /// (0: only at the end).
    pub val_every: usize,
    /// SLQ estimator of the validation bpd.
    pub val_slq: SlqConfig,
    /// Images per evaluation pass (reference test batch 200).
    pub eval_batch_size: usize,
    /// Write a metrics line every this many steps.
    pub log_every: usize,
    /// SLQ bpd of the current training batch (current weights) every this many steps
    /// (0: never): the training bpd the surrogate's value is not.
    pub train_slq_every: usize,
    /// Write a checkpoint every this many steps (0: only at validations and at the end).
    pub checkpoint_every: usize,
    /// The test score.
    pub test: ImageTestConfig,
    /// Seed of the batch order, the dequantisation noise, the probes and the flips.
    pub seed: u64,
}

impl Default for ImageTrainConfig {
    fn default() -> Self {
        ImageTrainConfig {
            epochs: None,
            max_iterations: None,
            max_minutes: None,
            batch_size: 64,
            adam: AdamParams::default(),
            warmup_iterations: 0,
            clip_grad_norm: Some(1.0),
            surrogate: reference_image_surrogate(),
            ema: EmaConfig::default(),
            hflip: false,
            val_every: 0,
            val_slq: SlqConfig::default(),
            eval_batch_size: 200,
            log_every: 20,
            train_slq_every: 0,
            checkpoint_every: 0,
            test: ImageTestConfig::default(),
            seed: 0,
        }
    }
}

/// The reference's image CG settings (`cpflow_block_fn`: `rtol = atol = 1e-3`, `m2 = D`).
///
/// ```
/// let p = cpflow::image::train::reference_image_surrogate();
/// assert_eq!((p.probes, p.cg_atol, p.cg_rtol, p.cg_max_iters), (1, 1e-3, 1e-3, None));
/// assert_eq!(cpflow::image::ImageTrainConfig::default().surrogate, p);
/// ```
pub fn reference_image_surrogate() -> SurrogateParams {
    SurrogateParams {
        probes: 1,
        cg_atol: 1e-3,
        cg_rtol: 1e-3,
        cg_max_iters: None,
        ..SurrogateParams::default()
    }
}

impl ImageTrainConfig {
    /// Check the values (a stop condition, positive sizes and probe counts, decay in [0, 1]).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CpflowError::InvalidConfig(m));
        if self.epochs.is_none() && self.max_iterations.is_none() && self.max_minutes.is_none() {
            return bad("image training needs epochs, max_iterations or max_minutes".into());
        }
        if self.epochs == Some(0) || self.max_iterations == Some(0) {
            // The first step initialises ActNorm from data: no step, no usable flow.
            return bad("epochs and max_iterations must be at least 1 when given".into());
        }
        if let Some(m) = self.max_minutes
            && !(m.is_finite() && m >= 0.0)
        {
            return bad(format!("max_minutes must be finite and ≥ 0, got {m:?}"));
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch sizes must be positive".into());
        }
        self.adam.validate("train.adam")?;
        self.surrogate.validate("train.surrogate")?;
        if let Some(c) = self.clip_grad_norm
            && (c.is_nan() || c <= 0.0)
        {
            return bad(format!("clip_grad_norm must be positive, got {c}"));
        }
        if !(0.0..=1.0).contains(&self.ema.decay) {
            return bad(format!(
                "ema.decay must be in [0, 1], got {:?}",
                self.ema.decay
            ));
        }
        let slqs = [&self.val_slq, &self.test.slq];
        if self.surrogate.probes == 0 || slqs.iter().any(|s| s.probes == 0 || s.steps == 0) {
            return bad("probe counts and Lanczos steps must be positive".into());
        }
        Ok(())
    }

    /// Whether a run that has made `iteration` steps and seen `samples_seen` training images
    /// (of `n_train`) has reached `max_iterations` or `epochs`. Epochs are counted in images
    /// seen, `samples_seen / n_train`, so the limit holds whatever batch sizes the run used
    /// (a resume may change it).
    ///
    /// ```
    /// use cpflow::image::ImageTrainConfig;
    /// let cfg = ImageTrainConfig { epochs: Some(2), batch_size: 16, ..Default::default() };
    /// // 256 images: 32 steps of 16 are 2 epochs, and so are 16 steps of 32.
    /// assert!(!cfg.limit_reached(31, 496, 256) && cfg.limit_reached(32, 512, 256));
    /// assert!(cfg.limit_reached(16, 512, 256));
    /// let both = ImageTrainConfig { max_iterations: Some(10), ..cfg };
    /// assert!(both.limit_reached(10, 160, 256));
    /// ```
    pub fn limit_reached(&self, iteration: usize, samples_seen: u64, n_train: usize) -> bool {
        let by_iterations = self.max_iterations.is_some_and(|m| iteration >= m);
        let by_epochs = self
            .epochs
            .is_some_and(|e| samples_seen >= (e as u64).saturating_mul(n_train as u64));
        by_iterations || by_epochs
    }

    /// Learning rate of step `iteration` (0-based): `lr·min((iteration + 1)/warmup, 1)`.
    pub fn lr_at(&self, iteration: usize) -> f64 {
        let w = self.warmup_iterations.max(1) as f64;
        self.adam.lr * ((iteration + 1) as f64 / w).min(1.0)
    }
}

/// The convolutional ICNN of every block.
///
/// ```
/// use cpflow::PotentialConfig;
/// use cpflow::image::{ConvArch, ImageModelConfig};
/// let m: ImageModelConfig = toml::from_str(r#"arch = "conv_icnn3""#).unwrap();
/// assert_eq!(m.arch, ConvArch::ConvIcnn3);
/// assert!(matches!(m.potential(), Ok(PotentialConfig::ConvIcnn3(c)) if c.width == 64));
/// // Pooling exists for `conv_icnn` only.
/// let pooled =
///     ImageModelConfig { arch: ConvArch::ConvIcnn2, num_pooling: 1, ..Default::default() };
/// assert!(pooled.potential().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvArch {
    /// `ConvICNN` (`--icnn 1`, the reference default).
    ConvIcnn,
    /// `ConvICNN2`.
    ConvIcnn2,
    /// `ConvICNN3` (input-augmented).
    ConvIcnn3,
}

/// The image flow of a run: the reference's multi-scale flow (`MultiscaleFlow`,
/// images-vae.md §1.5, §2.3) with a convolutional ICNN per block (and, with `fc_end`, a last
/// dense block on the flattened output), or, with `baseline`, the same
/// layers without any CP-Flow block (logit, ActNorms and squeezes only: an elementwise affine
/// flow in logit space, the comparison of the issue's acceptance).
///
/// ```
/// use cpflow::image::{ImageLayerConfig, ImageModelConfig, MNIST_LOGIT_ALPHA};
/// use cpflow::icnn::ImageShape;
/// let mnist = ImageShape::new(1, 28, 28);
/// let model = ImageModelConfig::default();
/// let flow = model.flow_config(mnist, MNIST_LOGIT_ALPHA)?;
/// assert_eq!(flow.num_blocks(), 9); // 3-3-3
/// // The baseline keeps the logit, ActNorms and squeezes, and drops every block.
/// let base =
///     ImageModelConfig { baseline: true, ..model.clone() }.flow_config(mnist, MNIST_LOGIT_ALPHA)?;
/// assert_eq!(base.num_blocks(), 0);
/// assert_eq!(base.layers[0], ImageLayerConfig::Logit { alpha: MNIST_LOGIT_ALPHA });
/// // `--fc_end`: one more block, ICNN2 on all 784 values, and its per-feature ActNorm.
/// let fc = ImageModelConfig { fc_end: true, ..model }.flow_config(mnist, MNIST_LOGIT_ALPHA)?;
/// assert_eq!(fc.num_blocks(), 10);
/// assert_eq!(fc.layers.last(), Some(&ImageLayerConfig::FeatureActNorm));
/// # Ok::<(), cpflow::CpflowError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageModelConfig {
    /// ICNN family.
    pub arch: ConvArch,
    /// ICNN hidden channels (`--dimh`, 64).
    pub width: usize,
    /// ICNN depth (`--num_hidden_layers`, 3).
    pub depth: usize,
    /// `conv_icnn` only: pooling stages (0).
    pub num_pooling: usize,
    /// `conv_icnn3` only: activation (softplus).
    pub activation: ActivationKind,
    /// `conv_icnn3` only: shift the activation to 0 at 0 (true).
    pub zero_shift: bool,
    /// Blocks per scale (`--nblocks 3-3-3`).
    pub nblocks: Vec<usize>,
    /// An ActNorm before every block (true).
    pub actnorm: bool,
    /// Factor out half of the channels after each non-final scale (false).
    pub factor_out: bool,
    /// A last, fully connected CP-Flow block on the flattened output of the last scale
    /// (`--fc_end`, false): the reference's `ICNN2(D, width, depth)` with its defaults, then
    /// a per-feature ActNorm if `actnorm`. Its potential sees every pixel at once.
    pub fc_end: bool,
    /// Logit offset (`None`: the dataset's, 1e-6 for MNIST and 0.05 for CIFAR-10).
    pub logit_alpha: Option<f64>,
    /// Drop every CP-Flow block (keep logit, ActNorms and squeezes).
    pub baseline: bool,
    /// Train the blocks' quadratic weight `w₀` (true).
    pub trainable_w0: bool,
    /// Float type (reference f32).
    pub float: FloatType,
    /// Weight-init seed.
    pub init_seed: u64,
}

impl Default for ImageModelConfig {
    /// `train_img.py` defaults: `ConvICNN` 64 × 3, blocks 3-3-3, ActNorm before each block,
    /// no factor-out, f32.
    fn default() -> Self {
        ImageModelConfig {
            arch: ConvArch::ConvIcnn,
            width: 64,
            depth: 3,
            num_pooling: 0,
            activation: ActivationKind::Softplus,
            zero_shift: true,
            nblocks: vec![3, 3, 3],
            actnorm: true,
            factor_out: false,
            fc_end: false,
            logit_alpha: None,
            baseline: false,
            trainable_w0: true,
            float: FloatType::F32,
            init_seed: 0,
        }
    }
}

impl ImageModelConfig {
    /// The potential template (its image shape is set per scale).
    pub fn potential(&self) -> Result<PotentialConfig> {
        let image = ImageShape::default();
        let (width, depth) = (self.width, self.depth);
        if self.arch != ConvArch::ConvIcnn && self.num_pooling > 0 {
            return Err(CpflowError::InvalidConfig(
                "model.num_pooling applies to arch = \"conv_icnn\" only".into(),
            ));
        }
        Ok(match self.arch {
            ConvArch::ConvIcnn => PotentialConfig::ConvIcnn(ConvIcnnConfig {
                image,
                width,
                depth,
                num_pooling: self.num_pooling,
            }),
            ConvArch::ConvIcnn2 => PotentialConfig::ConvIcnn2(ConvIcnn2Config {
                image,
                width,
                depth,
            }),
            ConvArch::ConvIcnn3 => PotentialConfig::ConvIcnn3(ConvIcnn3Config {
                image,
                width,
                depth,
                activation: self.activation,
                zero_shift: self.zero_shift,
            }),
        })
    }

    /// The dense potential of the `fc_end` block, `ICNN2(D, width, depth)` with the
    /// reference's defaults (its dimension is set from the last scale's shape), or `None`
    /// without `fc_end`.
    pub fn fc_end_potential(&self) -> Option<PotentialConfig> {
        self.fc_end.then(|| {
            PotentialConfig::Icnn2(Icnn2Config {
                width: self.width,
                depth: self.depth,
                ..Icnn2Config::default()
            })
        })
    }

    /// The flow for images of `image` shape, with logit offset `self.logit_alpha` or
    /// `default_alpha`. With `baseline`, the CP-Flow blocks of the multi-scale layout
    /// (the `fc_end` block too) are removed and everything else is kept.
    pub fn flow_config(&self, image: ImageShape, default_alpha: f64) -> Result<ImageFlowConfig> {
        let ms = MultiscaleConfig {
            image,
            nblocks: self.nblocks.clone(),
            logit_alpha: Some(self.logit_alpha.unwrap_or(default_alpha)),
            actnorm: self.actnorm,
            factor_out: self.factor_out,
            potential: self.potential()?,
            fc_end: self.fc_end_potential(),
            trainable_w0: self.trainable_w0,
            float: self.float,
            init_seed: self.init_seed,
        };
        let mut cfg = ImageFlowConfig::multiscale(&ms)?;
        if self.baseline {
            cfg.layers
                .retain(|l| !matches!(l, ImageLayerConfig::Cpf(_)));
            cfg.layer_shapes()?;
        }
        Ok(cfg)
    }
}

/// The image datasets `cpflow train` knows.
///
/// ```
/// use cpflow::image::ImageDataset;
/// use cpflow::icnn::ImageShape;
/// let d = ImageDataset::Cifar10;
/// assert_eq!((d.name(), d.image_shape()), ("cifar10", ImageShape::new(3, 32, 32)));
/// assert_eq!(d.logit_alpha(), 0.05);
/// assert_eq!(serde_json::to_string(&ImageDataset::Mnist).unwrap(), r#""mnist""#);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageDataset {
    /// MNIST, 1 × 28 × 28 (`root/mnist/`).
    Mnist,
    /// CIFAR-10, 3 × 32 × 32 (`root/cifar10/cifar-10-batches-bin/`).
    Cifar10,
}

impl ImageDataset {
    /// The image shape.
    pub fn image_shape(self) -> ImageShape {
        match self {
            ImageDataset::Mnist => ImageShape::new(1, 28, 28),
            ImageDataset::Cifar10 => ImageShape::new(3, 32, 32),
        }
    }

    /// The reference's logit offset.
    pub fn logit_alpha(self) -> f64 {
        match self {
            ImageDataset::Mnist => MNIST_LOGIT_ALPHA,
            ImageDataset::Cifar10 => CIFAR10_LOGIT_ALPHA,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ImageDataset::Mnist => "mnist",
            ImageDataset::Cifar10 => "cifar10",
        }
    }
}

/// Which images, from where, and the validation split (taken from the training images).
///
/// ```
/// use cpflow::image::{ImageDataConfig, ImageDataset};
/// let cfg: ImageDataConfig = toml::from_str(r#"
/// dataset = "cifar10"
/// root = "../shared/data"
/// n_train = 1000
/// "#).unwrap();
/// assert_eq!(cfg.dataset, ImageDataset::Cifar10);
/// assert_eq!((cfg.n_val, cfg.n_train, cfg.seed), (5_000, Some(1000), 0));
/// assert!(toml::from_str::<ImageDataConfig>(r#"dataset = "mnist""#).is_err()); // no root
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDataConfig {
    /// The dataset.
    pub dataset: ImageDataset,
    /// Data root (`../shared/data` in this workspace; `cargo xtask download` fills one).
    pub root: PathBuf,
    /// Validation images held out of the training set (MNIST: the last `n_val` of the
    /// training file; CIFAR-10: a seeded random subset).
    #[serde(default = "default_n_val")]
    pub n_val: usize,
    /// Use only the first `n_train` remaining training images (`None`: all).
    #[serde(default)]
    pub n_train: Option<usize>,
    /// Seed of the CIFAR-10 validation subset.
    #[serde(default)]
    pub seed: u64,
}

fn default_n_val() -> usize {
    5_000
}

/// The TOML file of an image run (`cpflow train --config configs/mnist.toml`): `[data]` with a
/// `dataset` key marks an image run.
///
/// ```
/// let cfg: cpflow::image::ImageExperimentConfig = toml::from_str(r#"
/// [data]
/// dataset = "mnist"
/// root = "../shared/data"
/// [model]
/// nblocks = [1, 1]
/// [train]
/// max_iterations = 10
/// "#).unwrap();
/// let flow = cfg.flow_config().unwrap();
/// assert_eq!(flow.num_blocks(), 2);
/// assert_eq!(cfg.train.batch_size, 64);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageExperimentConfig {
    /// Data.
    pub data: ImageDataConfig,
    /// Model.
    #[serde(default)]
    pub model: ImageModelConfig,
    /// Training, validation and the test score.
    #[serde(default)]
    pub train: ImageTrainConfig,
}

impl ImageExperimentConfig {
    /// The flow for the dataset's image shape and logit offset.
    pub fn flow_config(&self) -> Result<ImageFlowConfig> {
        let d = self.data.dataset;
        self.model.flow_config(d.image_shape(), d.logit_alpha())
    }

    /// Check the training values and build the flow configuration once.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        self.flow_config().map(|_| ())
    }
}
