//! Scoring a VAE on its test split: the single-sample negative ELBO (Table 3's number) and the
//! importance-sampled negative log-likelihood, with the settings of a run ([`VaeTestParams::of_run`])
//! or others. [`crate::vae::run_vae_on`] scores its best weights with it once training ends,
//! and `cpflow eval` on a VAE run repeats that score.

use serde::{Deserialize, Serialize};

use super::config::VaeConfig;
use super::data::{VaeData, VaeLikelihood, VaeSplit};
use super::evaluate::{MeanWithError, split_importance_nll_monitored, split_neg_elbo_monitored};
use super::model::Vae;
use crate::FlowRng;
use crate::error::{CpflowError, Result};

/// What the test split is scored with.
///
/// ```
/// use cpflow::vae::{PosteriorKind, VaeConfig, VaeDatasetName, VaeTestParams};
/// let cfg = VaeConfig::reference(VaeDatasetName::FreyFaces, "data", PosteriorKind::CpFlow);
/// let p = VaeTestParams::of_run(&cfg);
/// assert_eq!((p.seed, p.batch_size), (cfg.train.seed, cfg.train.batch_size));
/// assert_eq!((p.is_samples, p.is_images), (cfg.eval.is_samples, cfg.eval.is_images));
/// assert_eq!(p.images, None); // the −ELBO of every test image
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaeTestParams {
    /// Seed of the scoring (its RNG is seeded with `seed ^ 0x7e57`, so a run's own seed does
    /// not replay its training draws).
    pub seed: u64,
    /// Images scored by the −ELBO: the first `images` of the split (`None`: all).
    pub images: Option<usize>,
    /// Images per −ELBO batch.
    pub batch_size: usize,
    /// Importance samples per image (`0`: no importance-sampled NLL).
    pub is_samples: usize,
    /// Importance samples evaluated at once.
    pub is_chunk: usize,
    /// Images scored by importance sampling: the first `is_images` (`None`: all).
    pub is_images: Option<usize>,
}

impl VaeTestParams {
    /// The settings a run of `config` scores its test split with (`train.seed`,
    /// `train.batch_size`, `[eval]`).
    pub fn of_run(config: &VaeConfig) -> Self {
        VaeTestParams {
            seed: config.train.seed,
            images: None,
            batch_size: config.train.batch_size,
            is_samples: config.eval.is_samples,
            is_chunk: config.eval.is_chunk,
            is_images: config.eval.is_images,
        }
    }
}

/// The test scores, nats per image (and bits per dimension for the 256-way likelihood).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeTestScores {
    /// Single-sample negative ELBO with the exact `log q`.
    pub neg_elbo: MeanWithError,
    /// The same in bits per dimension (256-way likelihood only).
    pub neg_elbo_bpd: Option<MeanWithError>,
    /// Importance-sampled negative log-likelihood (absent with `is_samples = 0`).
    pub is_nll: Option<MeanWithError>,
    /// Mean over images of each importance estimate's own Monte-Carlo standard error (its
    /// delta-method estimate from the spread of the image's `K` weights). `None` without
    /// importance sampling, and with one sample per image (`K = 1`), where it cannot be
    /// estimated from the samples (it was reported as 0).
    pub is_mc_std_err: Option<f64>,
    /// The importance-sampled NLL in bits per dimension (256-way likelihood only).
    pub is_nll_bpd: Option<MeanWithError>,
    /// Importance samples per image.
    pub is_samples: usize,
    /// The −ELBO of each scored image, in split order (for paired comparisons of two models
    /// on the same images; not serialised).
    #[serde(skip)]
    pub neg_elbo_per_image: Vec<f64>,
    /// The importance-sampled NLL of each scored image (empty without importance sampling;
    /// not serialised).
    #[serde(skip)]
    pub is_nll_per_image: Vec<f64>,
}

/// How far [`score_vae_test`] has got, for a progress bar or an interrupt check (an error
/// returned from the monitor stops the scoring and is returned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaeTestProgress {
    /// The −ELBO of `done` of the `of` images is computed (after each batch).
    NegElbo {
        /// Images done.
        done: usize,
        /// Images to score.
        of: usize,
    },
    /// The −ELBO is done; importance sampling of `images` images with `samples` each starts.
    ImportanceSamplingStarts {
        /// Images to score.
        images: usize,
        /// Samples per image.
        samples: usize,
    },
    /// A chunk of importance samples of image `image` (counting from 0) is about to be
    /// drawn: with many samples per image, the point where a long estimate can be stopped.
    ImportanceChunk {
        /// The image being sampled.
        image: usize,
    },
    /// `done` images have been importance-sampled.
    ImportanceSampled {
        /// Images done.
        done: usize,
    },
}

/// Scores `vae` on the test split of `data`: the −ELBO of the first `images`, then (with
/// `is_samples > 0`) the importance-sampled NLL of the first `is_images`, from one RNG seeded
/// with `params.seed ^ 0x7e57` (the numbers depend only on the weights, the data and the
/// parameters).
///
/// ```
/// use cpflow::vae::{VaeTestParams, VaeTestProgress, load_vae, score_vae_test};
/// # use cpflow::candle::Device;
/// # use cpflow::vae::{PosteriorKind, VaeArchitecture, VaeConfig, VaeData, VaeDatasetName};
/// # use cpflow::vae::{VaeImages, VaeLikelihood, VaeRunOptions, run_vae_on};
/// # fn main() -> cpflow::Result<()> {
/// // One epoch of a tiny VAE on made-up static binary 28×28 images.
/// let images = |ks: &[usize]| VaeImages {
///     n: ks.len(),
///     pixels: ks
///         .iter()
///         .flat_map(|k| (0..784).map(move |i| u8::from((i / 28 + i % 28 + k) % 3 == 0)))
///         .collect(),
/// };
/// let data = VaeData {
///     name: VaeDatasetName::Caltech101,
///     likelihood: VaeLikelihood::Bernoulli,
///     height: 28,
///     width: 28,
///     train: images(&[0, 1, 2, 3]),
///     val: images(&[1, 2]),
///     test: images(&[0, 2]),
///     dynamic_binarization: false,
/// };
/// let mut cfg =
///     VaeConfig::reference(VaeDatasetName::Caltech101, "unused", PosteriorKind::Gaussian);
/// cfg.model.latent_dim = 2;
/// cfg.model.architecture = VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 };
/// (cfg.train.epochs, cfg.train.batch_size) = (1, 2);
/// (cfg.eval.is_samples, cfg.eval.is_chunk) = (4, 4);
/// let out = std::env::temp_dir().join(format!("cpflow-doc-vae-score-{}", std::process::id()));
/// let report = run_vae_on(&cfg, &data, &out, &VaeRunOptions::default())?;
/// // The run's own settings on its best weights give the report's numbers again.
/// let (vae, cfg) = load_vae(&out, &Device::Cpu)?;
/// let mut seen = Vec::new();
/// let scores = score_vae_test(&vae, &data, &VaeTestParams::of_run(&cfg), |p| {
///     seen.push(p);
///     Ok(())
/// })?;
/// assert_eq!(scores.neg_elbo, report.test_neg_elbo);
/// assert_eq!(scores.is_nll, report.test_is_nll);
/// // One −ELBO batch of the 2 test images, the start of importance sampling, then per image
/// // its one chunk of 4 samples and its end.
/// assert_eq!(seen.len(), 6);
/// assert_eq!(seen[0], VaeTestProgress::NegElbo { done: 2, of: 2 });
/// assert_eq!(seen[4], VaeTestProgress::ImportanceChunk { image: 1 });
/// assert_eq!(seen[5], VaeTestProgress::ImportanceSampled { done: 2 });
/// assert_eq!((scores.neg_elbo_per_image.len(), scores.is_nll_per_image.len()), (2, 2));
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
pub fn score_vae_test(
    vae: &Vae,
    data: &VaeData,
    params: &VaeTestParams,
    mut monitor: impl FnMut(VaeTestProgress) -> Result<()>,
) -> Result<VaeTestScores> {
    if params.batch_size == 0 || (params.is_samples > 0 && params.is_chunk == 0) {
        return Err(CpflowError::InvalidConfig(
            "the test batch size and importance-sampling chunk must be at least 1".into(),
        ));
    }
    if params.images == Some(0) || params.is_images == Some(0) {
        // Means over 0 images: NaN scores.
        return Err(CpflowError::InvalidConfig(
            "the test scores need at least 1 image (`images` and `is_images`: None scores \
             every test image)"
                .into(),
        ));
    }
    data.check()?;
    if data.test.n == 0 {
        return Err(CpflowError::InvalidInput(
            "the data have no test images to score".into(),
        ));
    }
    let mut rng = FlowRng::seed_from_u64(params.seed ^ 0x7e57);
    let n = params.images.unwrap_or(usize::MAX).min(data.test.n);
    let neg_elbo_per_image = split_neg_elbo_monitored(
        vae,
        data,
        VaeSplit::Test,
        n,
        params.batch_size,
        &mut rng,
        |done| monitor(VaeTestProgress::NegElbo { done, of: n }),
    )?;
    let neg_elbo = MeanWithError::of(&neg_elbo_per_image);
    let (is_nll_per_image, is_mc_std_err) = if params.is_samples > 0 {
        let n = params.is_images.unwrap_or(usize::MAX).min(data.test.n);
        monitor(VaeTestProgress::ImportanceSamplingStarts {
            images: n,
            samples: params.is_samples,
        })?;
        let monitor = std::cell::RefCell::new(&mut monitor);
        let (v, mc) = split_importance_nll_monitored(
            vae,
            data,
            VaeSplit::Test,
            n,
            params.is_samples,
            params.is_chunk,
            &mut rng,
            |image| (monitor.borrow_mut())(VaeTestProgress::ImportanceChunk { image }),
            |done| (monitor.borrow_mut())(VaeTestProgress::ImportanceSampled { done }),
        )?;
        (Some(v), mc.is_finite().then_some(mc))
    } else {
        (None, None)
    };
    let is_nll = is_nll_per_image.as_deref().map(MeanWithError::of);
    let dims = data.height * data.width;
    let bpd = |m: MeanWithError| {
        (data.likelihood == VaeLikelihood::Categorical256).then(|| m.to_bits_per_dim(dims))
    };
    Ok(VaeTestScores {
        neg_elbo,
        neg_elbo_bpd: bpd(neg_elbo),
        is_nll,
        is_mc_std_err,
        is_nll_bpd: is_nll.and_then(bpd),
        is_samples: params.is_samples,
        neg_elbo_per_image,
        is_nll_per_image: is_nll_per_image.unwrap_or_default(),
    })
}
