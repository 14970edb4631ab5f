//! The OT experiment's errors, target and configuration.

use icnn::{ActivationKind, Icnn3Config};
use serde::{Deserialize, Serialize};

use crate::adam::AdamParams;
use crate::config::{FloatType, LrSchedule, Objective, TrainConfig};
use crate::error::CpflowError;
use crate::plot::PlotError;
use crate::potential::PotentialConfig;
use crate::rng::FlowRng;
use crate::toy::{GaussianTarget, ToyError};

/// Errors of the OT experiment.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::ot::{OtConfig, OtError, OtTarget, run_ot_experiment};
/// use cpflow::toy::ToyError;
/// // The paper's fixed target is 2-D: asking for it in 3-D fails before any training.
/// let cfg = OtConfig { target: OtTarget::Paper2d, ..OtConfig::reference(3) };
/// let err = run_ot_experiment(&cfg, &Device::Cpu, Default::default()).unwrap_err();
/// assert!(matches!(err, OtError::Toy(ToyError::InvalidArgument(_))), "{err}");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtError {
    /// Model or training error.
    #[error(transparent)]
    Cpflow(#[from] CpflowError),
    /// Target construction error.
    #[error(transparent)]
    Toy(#[from] ToyError),
    /// Plotting error.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// Tensor error.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Writing the table or curve.
    /// The OS's reason is part of the message (no `source()`, so a chain prints it once;
    /// the convention of `crate::CpflowError::Io`).
    #[error("I/O error on {path}: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        cause: std::io::Error,
    },
    /// `RunOptions::interrupt` was set: the run of dimension `dim` paused after `iteration`
    /// steps, unfinished (no report).
    #[error("interrupted during the run of d = {dim} after {iteration} training steps")]
    Interrupted {
        /// The dimension whose run was interrupted.
        dim: usize,
        /// Steps done.
        iteration: usize,
    },
}

/// Which Gaussian the data come from.
///
/// ```
/// use cpflow::ot::{OtConfig, OtTarget};
/// use cpflow::rng::FlowRng;
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// let cfg = OtConfig { target: OtTarget::Paper2d, ..OtConfig::reference(2) };
/// let fixed = cfg.build_target(&mut FlowRng::seed_from_u64(0))?;
/// assert_eq!(fixed.mean().as_slice(), &[1.5, 1.0]);
/// // A random target depends on the seed.
/// let random = OtConfig::reference(2);
/// let a = random.build_target(&mut FlowRng::seed_from_u64(0))?;
/// let b = random.build_target(&mut FlowRng::seed_from_u64(1))?;
/// assert_ne!(a.mean(), b.mean());
/// assert_eq!(serde_json::to_string(&OtTarget::Paper2d).unwrap(), r#""paper2d""#);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtTarget {
    /// `m ~ N(0, I)`, `C ~ Wishart(d + 1, I)`, drawn from the data seed.
    Random,
    /// The reference's fixed 2-D target `m = (1.5, 1)`, `C = [[0.9, −0.75], [−0.75, 0.9]]`.
    Paper2d,
}

/// Configuration of one OT run. Every key is required when deserialised (the CLI overlays a
/// file on [`OtConfig::reference`]); unknown keys are errors.
///
/// ```
/// use cpflow::ot::OtConfig;
/// let cfg = OtConfig::reference(8);
/// assert_eq!((cfg.n_train, cfg.n_test, cfg.train.max_iterations), (50_000, 10_000, 782));
/// assert_eq!(cfg.potential.dim(), 8);
/// // Every key is required and unknown keys are refused.
/// let mut v = serde_json::to_value(&cfg).unwrap();
/// assert_eq!(serde_json::from_value::<OtConfig>(v.clone()).unwrap(), cfg);
/// v.as_object_mut().unwrap().remove("n_test");
/// assert!(serde_json::from_value::<OtConfig>(v).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtConfig {
    /// Data dimension `d`.
    pub dim: usize,
    /// The data Gaussian.
    pub target: OtTarget,
    /// Training-set size (reference 50,000).
    pub n_train: usize,
    /// Test-set size (reference 10,000).
    pub n_test: usize,
    /// Seed of the data RNG (target, then training set, then test set).
    pub data_seed: u64,
    /// The potential of the single block.
    pub potential: PotentialConfig,
    /// Float type of the model.
    pub float: FloatType,
    /// Seed of the weight initialisation.
    pub init_seed: u64,
    /// Training settings (objective: exact NLL).
    pub train: TrainConfig,
    /// Record transport cost and KL every this many iterations (and at the start and the end).
    pub eval_every: usize,
    /// Fresh validation points (drawn after the test set) used for the curve; the final
    /// numbers use the whole test set, scored once.
    pub n_eval_curve: usize,
}

impl OtConfig {
    /// The reference settings for dimension `d`: one block of `Icnn3(d, 64, 5, gaussian
    /// softplus, zero-shifted, no symmetric first activation)`, no ActNorm, prior `N(0, I)`,
    /// f64; Adam lr 0.05 (PyTorch default betas, no weight decay), cosine annealing to 0 over
    /// 2 epochs × 391 iterations, gradient clipping at norm 10, batch 128, exact-log-det
    /// NLL; 50,000 training and 10,000 test points; random seeded target.
    pub fn reference(dim: usize) -> Self {
        let iterations = 2 * 391;
        let train = TrainConfig {
            batch_size: 128,
            max_iterations: iterations,
            adam: AdamParams {
                lr: 0.05,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            lr_schedule: LrSchedule::Cosine { t_max: iterations },
            objective: Objective::ExactNll,
            clip_grad_norm: Some(10.0),
            val_every: 0,
            early_stopping: None,
            train_slq_every: 0,
            eval_batch_size: 1024,
            seed: 0,
            ..TrainConfig::default()
        };
        OtConfig {
            dim,
            target: OtTarget::Random,
            n_train: 50_000,
            n_test: 10_000,
            data_seed: 0,
            potential: PotentialConfig::Icnn3(Icnn3Config {
                dim,
                width: 64,
                depth: 5,
                activation: ActivationKind::GaussianSoftplus,
                zero_shift: true,
                symm_act_first: false,
            }),
            float: FloatType::F64,
            init_seed: 0,
            train,
            eval_every: 50,
            n_eval_curve: 2000,
        }
    }

    /// Builds the data Gaussian from the data seed.
    pub fn build_target(&self, rng: &mut FlowRng) -> Result<GaussianTarget, OtError> {
        Ok(match self.target {
            OtTarget::Random => GaussianTarget::random(self.dim, rng)?,
            OtTarget::Paper2d if self.dim == 2 => GaussianTarget::paper_2d(),
            OtTarget::Paper2d => {
                return Err(ToyError::InvalidArgument(format!(
                    "the paper's fixed target is 2-D, not {}-D",
                    self.dim
                ))
                .into());
            }
        })
    }
}
