//! The reference 2-D toy experiment (`docs/reference/cpflow-reference.md` §4.2,
//! `docs/reference/baseline-cpu.md`): train a CP-Flow on a toy density, follow the exact NLL
//! of a fresh validation sample along the way and score the test sample once, at the end.

use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::adam::AdamParams;
use crate::config::NllEstimator;
use crate::config::{LrSchedule, TrainConfig};
use crate::error::{CpflowError, Result};
use crate::flow::Flow;
use crate::flow_config::FlowConfig;
use crate::observer::NllCurve;
use crate::rng::FlowRng;
use crate::toy::{Toy, points_to_tensor};
use crate::train::{Dataset, RunOptions, TrainReport, Trainer, mean_nll};

/// Configuration of a toy experiment.
///
/// ```
/// use cpflow::{LrSchedule, ToyExperimentConfig};
/// let cfg = ToyExperimentConfig::reference_8gaussians();
/// assert_eq!((cfg.toy.as_str(), cfg.n_train, cfg.train.batch_size), ("8gaussians", 50_000, 128));
/// assert_eq!(cfg.train.lr_schedule, LrSchedule::Step { step_size: 2000, gamma: 0.5 });
/// // Saved with a run as JSON; `n_val` may be left out (10,000).
/// let mut json = serde_json::to_value(&cfg).unwrap();
/// json.as_object_mut().unwrap().remove("n_val");
/// assert_eq!(serde_json::from_value::<ToyExperimentConfig>(json).unwrap(), cfg);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToyExperimentConfig {
    /// Toy name (`8gaussians`, `swissroll`, …; see [`crate::toy::Toy`]).
    pub toy: String,
    /// The model.
    pub flow: FlowConfig,
    /// Training settings.
    pub train: TrainConfig,
    /// Size of the fixed training set (reference: 50,000).
    pub n_train: usize,
    /// Size of the held-out test set (10,000 fresh points), scored once after training.
    pub n_test: usize,
    /// Size of the validation set (fresh points, drawn after the test set) that the NLL
    /// curve is computed on.
    #[serde(default = "default_n_val")]
    pub n_val: usize,
    /// Seed of the data RNG (training set, then test set, then validation set).
    pub data_seed: u64,
    /// Evaluate the validation exact NLL every this many iterations (0: only at the end).
    pub eval_every: usize,
}

impl ToyExperimentConfig {
    /// The reference toy run: 8 Gaussians, `[ActNorm(2), CPF(Icnn3(2, 32, 20, symmetric first
    /// activation, gaussian softplus, zero-shifted))]`, f64, batch 128, 50,000 training points,
    /// Adam lr 5e-3 (PyTorch default betas (0.9, 0.999), no weight decay) with StepLR(2000,
    /// 0.5), prior `N(0, e²I)`, 3,910 iterations (10 epochs), CG atol 1e-3; test NLL on 10,000
    /// fresh points every 500 iterations.
    pub fn reference_8gaussians() -> Self {
        let train = TrainConfig {
            batch_size: 128,
            max_iterations: 3910,
            adam: AdamParams {
                lr: 5e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            lr_schedule: LrSchedule::Step {
                step_size: 2000,
                gamma: 0.5,
            },
            val_every: 0,
            early_stopping: None,
            train_slq_every: 0,
            log_every: 100,
            seed: 0,
            ..TrainConfig::default()
        };
        ToyExperimentConfig {
            toy: "8gaussians".into(),
            flow: FlowConfig::toy_reference(1),
            train,
            n_train: 50_000,
            n_test: 10_000,
            n_val: default_n_val(),
            data_seed: 0,
            eval_every: 500,
        }
    }
}

fn default_n_val() -> usize {
    10_000
}

/// Results of [`run_toy_experiment`].
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::{FlowConfig, LrSchedule, PotentialConfig, RunOptions, ToyExperimentConfig, TrainConfig};
/// # fn main() -> cpflow::Result<()> {
/// // A tiny run: a 4-wide ICNN, 64 training points, 4 steps.
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let cfg = ToyExperimentConfig {
///     flow: FlowConfig::single_block(pot),
///     train: TrainConfig {
///         batch_size: 16, max_iterations: 4, val_every: 0, train_slq_every: 0,
///         lr_schedule: LrSchedule::Constant, ..Default::default()
///     },
///     n_train: 64, n_test: 32, n_val: 32, eval_every: 2,
///     ..ToyExperimentConfig::reference_8gaussians()
/// };
/// let (flow, report) = cpflow::run_toy_experiment(&cfg, &Device::Cpu, RunOptions::default())?;
/// // The validation curve every `eval_every` iterations, the test set scored once.
/// let its: Vec<usize> = report.val_nll_curve.iter().map(|p| p.0).collect();
/// assert_eq!(its, [2, 4]);
/// assert!(report.test_nll.is_finite() && report.data_entropy.is_some());
/// assert!(report.train_time_s <= report.wall_time_s);
/// # let _ = flow;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ToyExperimentReport {
    /// Exact NLL (nats) of the test set, scored once after training.
    pub test_nll: f64,
    /// `(iteration, exact NLL of the validation set)` along the run.
    pub val_nll_curve: Vec<(usize, f64)>,
    /// Monte-Carlo estimate of the data entropy on the test set (`−mean log p_true`) when the
    /// toy has a closed-form density.
    pub data_entropy: Option<f64>,
    /// The trainer's summary. Its `best_val_nll` is of `cfg.train.val_estimator` (by default
    /// a 1-probe SLQ estimate, not the exact NLL of `val_nll_curve`), and only with
    /// `cfg.train.val_every > 0`.
    pub train: TrainReport,
    /// Wall-clock seconds spent training (the validation curve's evaluations excluded).
    pub train_time_s: f64,
    /// Wall-clock seconds of the whole experiment.
    pub wall_time_s: f64,
}

/// Train `cfg.flow` on `cfg.toy`, evaluate the exact NLL of a fresh validation sample every
/// `cfg.eval_every` iterations and the test sample once at the end. Returns the trained flow
/// and the report. Takes minutes for the reference configuration.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::{FlowConfig, LrSchedule, PotentialConfig, RunOptions, ToyExperimentConfig, TrainConfig};
/// # fn main() -> cpflow::Result<()> {
/// // A tiny run: a 4-wide ICNN, 64 training points, 4 steps.
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let cfg = ToyExperimentConfig {
///     flow: FlowConfig::single_block(pot),
///     train: TrainConfig {
///         batch_size: 16, max_iterations: 4, val_every: 0, train_slq_every: 0,
///         lr_schedule: LrSchedule::Constant, ..Default::default()
///     },
///     n_train: 64, n_test: 32, n_val: 32, eval_every: 2,
///     ..ToyExperimentConfig::reference_8gaussians()
/// };
/// let (flow, report) = cpflow::run_toy_experiment(&cfg, &Device::Cpu, RunOptions::default())?;
/// assert_eq!(report.train.iterations, 4);
/// assert!(flow.is_initialized()?); // the trained model, ready to evaluate or sample
/// // An unknown toy name is refused before anything is trained.
/// let bad = ToyExperimentConfig { toy: "nine-gaussians".into(), ..cfg };
/// assert!(cpflow::run_toy_experiment(&bad, &Device::Cpu, RunOptions::default()).is_err());
/// # Ok(())
/// # }
/// ```
pub fn run_toy_experiment(
    cfg: &ToyExperimentConfig,
    device: &Device,
    options: RunOptions,
) -> Result<(Flow, ToyExperimentReport)> {
    let t0 = Instant::now();
    let toy: Toy = cfg.toy.parse().map_err(CpflowError::from)?;
    if cfg.train.max_iterations == 0 {
        return Err(CpflowError::InvalidConfig(
            "max_iterations must be positive".into(),
        ));
    }
    let mut data_rng = FlowRng::seed_from_u64(cfg.data_seed);
    let dtype = cfg.flow.float.dtype();
    let train_pts = toy.sample(cfg.n_train, &mut data_rng);
    let test_pts = toy.sample(cfg.n_test, &mut data_rng);
    let val_pts = toy.sample(cfg.n_val.max(1), &mut data_rng);
    let data_entropy = {
        let lp: Option<Vec<f64>> = test_pts.iter().map(|p| toy.log_density(*p)).collect();
        lp.map(|v| -v.iter().sum::<f64>() / v.len().max(1) as f64)
    };
    let train = Dataset::new(points_to_tensor(&train_pts, dtype, device)?);
    let test = Dataset::new(points_to_tensor(&test_pts, dtype, device)?);
    let val = Dataset::new(points_to_tensor(&val_pts, dtype, device)?);
    let flow = Flow::new(cfg.flow.clone(), device)?;
    let mut trainer = Trainer::new(flow, cfg.train.clone())?.with_options(options);
    let mut curve = NllCurve::new(val.clone(), NllEstimator::Exact, cfg.eval_every)
        .with_batch_size(1000)
        .with_seed(0);
    let ts = Instant::now();
    let val_for_trainer = (cfg.train.val_every > 0).then_some(&val);
    let train_report = trainer.fit_observed(&train, val_for_trainer, &mut [&mut curve])?;
    let train_time = (ts.elapsed().saturating_sub(curve.eval_time())).as_secs_f64();
    let mut eval_rng = FlowRng::seed_from_u64(0);
    let test_nll = mean_nll(
        trainer.flow(),
        &test,
        &NllEstimator::Exact,
        1000,
        &mut eval_rng,
    )?;
    tracing::info!(
        iteration = train_report.iterations,
        test_nll,
        "toy experiment: test exact NLL (scored once)"
    );
    Ok((
        trainer.into_flow(),
        ToyExperimentReport {
            test_nll,
            val_nll_curve: curve.into_points(),
            data_entropy,
            train: train_report,
            train_time_s: train_time,
            wall_time_s: t0.elapsed().as_secs_f64(),
        },
    ))
}
