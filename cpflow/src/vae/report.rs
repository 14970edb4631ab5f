//! What a VAE run reports: why it stopped, the per-epoch records and the final report.

use serde::{Deserialize, Serialize};

use super::config::VaeConfig;
use super::evaluate::MeanWithError;

/// Why training stopped.
///
/// ```
/// use cpflow::vae::VaeStopReason;
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
/// let out = std::env::temp_dir().join(format!("cpflow-doc-vae-stop-{}", std::process::id()));
/// let report = run_vae_on(&cfg, &data, &out, &VaeRunOptions::default())?;
/// assert_eq!(report.stop_reason, VaeStopReason::MaxEpochs);
/// assert_eq!(report.stop_reason.to_string(), "max-epochs");
/// assert_eq!(serde_json::to_string(&VaeStopReason::EarlyStopping)?, r#""early-stopping""#);
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VaeStopReason {
    /// All epochs ran.
    MaxEpochs,
    /// Early stopping on the validation −ELBO.
    EarlyStopping,
    /// `train.max_minutes` ran out.
    TimeBudget,
}

impl std::fmt::Display for VaeStopReason {
    /// The name `report.json` uses (`max-epochs`, `early-stopping`, `time-budget`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VaeStopReason::MaxEpochs => "max-epochs",
            VaeStopReason::EarlyStopping => "early-stopping",
            VaeStopReason::TimeBudget => "time-budget",
        })
    }
}

/// One epoch's record (`metrics.jsonl`).
///
/// ```
/// use cpflow::vae::VaeEpochRecord;
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
/// let out = std::env::temp_dir().join(format!("cpflow-doc-vae-epoch-{}", std::process::id()));
/// let report = run_vae_on(&cfg, &data, &out, &VaeRunOptions::default())?;
/// let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
/// let rec: VaeEpochRecord = serde_json::from_str(text.lines().next().unwrap())?;
/// assert_eq!(rec.epoch, 1);
/// assert_eq!(rec.beta, 1.0 / 100.0); // β warm-up over 100 epochs
/// assert_eq!(rec.val_neg_elbo, report.val_curve[0].1);
/// assert_eq!(rec.cg_converged, 1.0); // no CG system: nothing failed
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeEpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// β of the epoch.
    pub beta: f64,
    /// Mean training loss (β-weighted, surrogate log-det: not a −ELBO).
    pub train_loss: f64,
    /// Mean reconstruction term on the training batches (nats per image).
    pub train_reconstruction: f64,
    /// Validation −ELBO (exact log q, β = 1), nats per image.
    pub val_neg_elbo: f64,
    /// Mean CG iterations per system.
    pub cg_iterations: f64,
    /// Fraction of CG systems that met the tolerance.
    pub cg_converged: f64,
    /// Seconds of the epoch's training steps.
    pub train_seconds: f64,
    /// Seconds of the epoch's validation.
    pub val_seconds: f64,
}

/// What a run reports (`report.json`).
///
/// ```
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
/// let out = std::env::temp_dir().join(format!("cpflow-doc-vae-report-{}", std::process::id()));
/// let report = run_vae_on(&cfg, &data, &out, &VaeRunOptions::default())?;
/// assert_eq!((report.split_sizes, report.epochs, report.best_epoch), ([4, 2, 2], 1, 1));
/// assert_eq!(report.test_neg_elbo.n, 2);
/// assert_eq!(report.test_is_nll.map(|m| m.n), Some(2));
/// assert!(report.test_neg_elbo_bpd.is_none()); // bits per dimension for Frey Faces only
/// assert!(out.join("report.json").exists());
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VaeReport {
    /// The configuration.
    pub config: VaeConfig,
    /// Parameters (encoder + decoder + posterior).
    pub num_parameters: usize,
    /// Images per split (train / val / test).
    pub split_sizes: [usize; 3],
    /// Epochs completed.
    pub epochs: usize,
    /// Training (optimiser) steps completed.
    #[serde(default)]
    pub steps: usize,
    /// Why training stopped.
    pub stop_reason: VaeStopReason,
    /// Epoch of the kept (best validation) weights.
    pub best_epoch: usize,
    /// Best validation −ELBO (nats per image).
    pub best_val_neg_elbo: f64,
    /// Mean seconds per training epoch (steps only).
    pub seconds_per_epoch: f64,
    /// Test −ELBO, one posterior sample per image, exact `log q` (nats per image).
    pub test_neg_elbo: MeanWithError,
    /// Test importance-sampled NLL (nats per image; `None` when `eval.is_samples = 0`).
    pub test_is_nll: Option<MeanWithError>,
    /// Mean Monte-Carlo standard error of the per-image importance estimates (`None` without
    /// importance sampling, and with `eval.is_samples = 1`, where it cannot be estimated).
    pub test_is_mc_std_err: Option<f64>,
    /// Importance samples per image.
    pub is_samples: usize,
    /// The same in bits per dimension (Frey Faces, as Table 3 reports it).
    pub test_neg_elbo_bpd: Option<MeanWithError>,
    /// Importance-sampled NLL in bits per dimension (Frey Faces).
    pub test_is_nll_bpd: Option<MeanWithError>,
    /// Validation −ELBO per epoch.
    pub val_curve: Vec<(usize, f64)>,
    /// Mean CG iterations per system over the training steps of the run (every invocation;
    /// see `cg_stats_since_step`): the mean of the steps' means; 0 without CG systems (the
    /// Gaussian posterior).
    #[serde(default)]
    pub mean_cg_iterations: f64,
    /// Fraction of the run's CG systems that met the tolerance (`None`: no CG systems, the
    /// Gaussian posterior). Below 1, CG stopped at `train.cg.cg_max_iters` on some systems:
    /// their gradient was approximate (the trainer warned).
    #[serde(default)]
    pub cg_converged: Option<f64>,
    /// Training steps of the run that left at least one CG system unconverged.
    #[serde(default)]
    pub cg_unconverged_steps: usize,
    /// Present when the CG numbers cover only the steps after this one: the run was resumed
    /// there from a checkpoint written before they were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cg_stats_since_step: Option<usize>,
}
