//! The optimal-transport experiment (paper Fig. 4, reference `train_ot.py`,
//! `docs/reference/cpflow-reference.md` §4.3).
//!
//! Data `x ~ N(m, C)` in `d` dimensions (random mean `m ~ N(0, I)`, `C ~ Wishart(d + 1, I)`,
//! seeded; or the paper's fixed 2-D target). One CP-Flow block `f = ∇Φ` (no ActNorm, prior
//! `N(0, I)`) is trained by maximum likelihood with the **exact** log-determinant. Brenier's
//! theorem makes the gradient of a convex potential pushing `N(m, C)` onto `N(0, I)` the
//! optimal map, so as the KL goes to 0 the transport cost `E‖x − f(x)‖²` must approach the
//! closed form `W₂² = ‖m‖² + tr(C + I − 2 C^{½})`.
//!
//! The KL is estimated on held-out data as `mean(log p(x) − log q(x))` with the true Gaussian
//! log-density `p` and the model's exact `q`: unbiased for `KL(p‖q)` and, unlike
//! `NLL − H(p)`, with a variance that vanishes as `q → p`.
//!
//! The paper's run is `run_ot_experiment(&OtConfig::reference(d), …)` (minutes per
//! dimension); a shrunk one:
//!
//! ```
//! use candle_core::Device;
//! use cpflow::ot::{OtConfig, run_ot_experiment};
//! # fn main() -> Result<(), cpflow::ot::OtError> {
//! // The reference settings, shrunk: a width-8 ICNN, 256 training points, 10 steps.
//! let mut cfg = OtConfig::reference(2);
//! (cfg.n_train, cfg.n_test, cfg.n_eval_curve, cfg.eval_every) = (256, 128, 64, 5);
//! cfg.train.max_iterations = 10;
//! cfg.train.batch_size = 64;
//! cfg.train.lr_schedule = cpflow::LrSchedule::Cosine { t_max: 10 };
//! if let cpflow::PotentialConfig::Icnn3(c) = &mut cfg.potential {
//!     (c.width, c.depth) = (8, 2);
//! }
//! let (_flow, report) = run_ot_experiment(&cfg, &Device::Cpu, Default::default())?;
//! assert_eq!(report.dim, 2);
//! assert!(report.w2_squared > 0.0 && report.transport_cost.is_finite() && report.kl.is_finite());
//! # Ok(())
//! # }
//! ```

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use icnn::{ActivationKind, Icnn3Config};
use serde::{Deserialize, Serialize};

use crate::adam::AdamParams;
use crate::config::{FloatType, LrSchedule, Objective, TrainConfig};
use crate::error::CpflowError;
use crate::flow::{EVAL_CHUNK, Flow, Layer};
use crate::flow_config::FlowConfig;
use crate::observer::{Control, FnObserver};
use crate::plot::{Bounds, Figure, LineSeries, PlotError, line_chart_png};
use crate::potential::PotentialConfig;
use crate::rng::FlowRng;
use crate::toy::{GaussianTarget, ToyError};
use crate::train::{Dataset, RunOptions, StopReason, Trainer};

/// Errors of the OT experiment.
///
/// ```
/// use candle_core::Device;
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
    #[error("I/O error on {path}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
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

/// One point of the training curve.
///
/// ```
/// use candle_core::Device;
/// use cpflow::ot::{OtConfig, run_ot_experiment};
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// // The reference settings, shrunk: a width-8 ICNN, 256 training points, 10 steps.
/// let mut cfg = OtConfig::reference(2);
/// (cfg.n_train, cfg.n_test, cfg.n_eval_curve, cfg.eval_every) = (256, 128, 64, 5);
/// cfg.train.max_iterations = 10;
/// cfg.train.batch_size = 64;
/// cfg.train.lr_schedule = cpflow::LrSchedule::Cosine { t_max: 10 };
/// if let cpflow::PotentialConfig::Icnn3(c) = &mut cfg.potential {
///     (c.width, c.depth) = (8, 2);
/// }
/// let (_flow, report) = run_ot_experiment(&cfg, &Device::Cpu, Default::default())?;
/// // Recorded at the start, every 5 steps and at the end.
/// let steps: Vec<usize> = report.curve.iter().map(|r| r.iteration).collect();
/// assert_eq!(steps, vec![0, 5, 10]);
/// assert!(report.curve.iter().all(|r| r.transport_cost > 0.0 && r.kl.is_finite()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OtRecord {
    /// Optimiser steps done.
    pub iteration: usize,
    /// `E‖x − f(x)‖²` on the curve's test points.
    pub transport_cost: f64,
    /// `mean(log p − log q)` on the curve's test points.
    pub kl: f64,
}

/// Results of one OT run.
///
/// ```
/// use candle_core::Device;
/// use cpflow::ot::{OtConfig, run_ot_experiment};
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// // The reference settings, shrunk: a width-8 ICNN, 256 training points, 10 steps.
/// let mut cfg = OtConfig::reference(2);
/// (cfg.n_train, cfg.n_test, cfg.n_eval_curve, cfg.eval_every) = (256, 128, 64, 5);
/// cfg.train.max_iterations = 10;
/// cfg.train.batch_size = 64;
/// cfg.train.lr_schedule = cpflow::LrSchedule::Cosine { t_max: 10 };
/// if let cpflow::PotentialConfig::Icnn3(c) = &mut cfg.potential {
///     (c.width, c.depth) = (8, 2);
/// }
/// let (_flow, report) = run_ot_experiment(&cfg, &Device::Cpu, Default::default())?;
/// let r = &report;
/// assert!((r.relative_error - (r.transport_cost - r.w2_squared) / r.w2_squared).abs() < 1e-12);
/// // The closed form is the target's.
/// let target = cfg.build_target(&mut cpflow::rng::FlowRng::seed_from_u64(cfg.data_seed))?;
/// assert_eq!(r.w2_squared, target.w2_squared_to_standard_normal());
/// assert_eq!(r.entropy, target.entropy());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OtReport {
    /// Dimension.
    pub dim: usize,
    /// Closed-form `W₂²(N(m, C), N(0, I))`.
    pub w2_squared: f64,
    /// Final `E‖x − f(x)‖²` on the whole test set.
    pub transport_cost: f64,
    /// `(cost − W₂²)/W₂²`.
    pub relative_error: f64,
    /// `E‖x − T*(x)‖²` of the exact optimal map `T*(x) = C^{-½}(x − m)` on the same test
    /// points: the Monte-Carlo value the model's cost should match (the sampling error of the
    /// test set cancels in the comparison).
    pub optimal_cost_on_test: f64,
    /// `(cost − optimal_cost_on_test)/optimal_cost_on_test`: the model's own error.
    pub paired_relative_error: f64,
    /// Final KL estimate on the whole test set.
    pub kl: f64,
    /// Final test NLL (nats).
    pub test_nll: f64,
    /// Entropy of the data Gaussian (nats).
    pub entropy: f64,
    /// The curve over training.
    pub curve: Vec<OtRecord>,
    /// Wall-clock seconds of training (evaluations excluded).
    pub train_time_s: f64,
    /// Wall-clock seconds of the whole run.
    pub wall_time_s: f64,
}

/// `f(x)`: the flow's forward map without log-determinants (detached), chunked.
///
/// ```
/// use cpflow::ot::forward_map;
/// use candle_core::{Device, Tensor};
/// use cpflow::{Flow, FlowConfig, PotentialConfig};
/// use icnn::Icnn3Config;
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// // One CP-Flow block on 2-D points (f64), initialised on the data.
/// let icnn = Icnn3Config { dim: 2, width: 8, depth: 2, ..Default::default() };
/// let potential = PotentialConfig::Icnn3(icnn);
/// let cfg = FlowConfig::single_block(potential).with_float(cpflow::FloatType::F64);
/// let flow = Flow::new(cfg, &Device::Cpu)?;
/// let x = Tensor::new(&[[0.0f64, 0.0], [1.0, -1.0], [2.0, 0.5], [-0.5, 1.5]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let z = forward_map(&flow, &x)?;
/// // The same map as the flow's transform, without the log-determinants.
/// let (z_ref, _) = flow.transform(&x)?;
/// assert!((z - z_ref)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
/// assert!(forward_map(&flow, &x.narrow(0, 0, 0)?).is_err()); // no rows
/// # Ok(())
/// # }
/// ```
pub fn forward_map(flow: &Flow, x: &Tensor) -> Result<Tensor, OtError> {
    let mut out = flow.chunked(x, None, EVAL_CHUNK, |_, xc, _| {
        let mut h = xc.clone();
        for layer in flow.layers() {
            h = match layer {
                Layer::ActNorm(a) => a.forward(&h)?.0,
                Layer::Cpf(b) => b.forward(&h, None)?,
            }
            .detach();
        }
        Ok(vec![h])
    })?;
    // One output per row chunk, concatenated; none when `x` has no rows.
    out.pop().ok_or_else(|| {
        CpflowError::InvalidInput("forward_map needs at least one row".into()).into()
    })
}

/// `E‖x − f(x)‖²` over the rows of `x`.
///
/// ```
/// use cpflow::ot::{forward_map, transport_cost};
/// use candle_core::{Device, Tensor};
/// use cpflow::{Flow, FlowConfig, PotentialConfig};
/// use icnn::Icnn3Config;
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// // One CP-Flow block on 2-D points (f64), initialised on the data.
/// let icnn = Icnn3Config { dim: 2, width: 8, depth: 2, ..Default::default() };
/// let potential = PotentialConfig::Icnn3(icnn);
/// let cfg = FlowConfig::single_block(potential).with_float(cpflow::FloatType::F64);
/// let flow = Flow::new(cfg, &Device::Cpu)?;
/// let x = Tensor::new(&[[0.0f64, 0.0], [1.0, -1.0], [2.0, 0.5], [-0.5, 1.5]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let z = forward_map(&flow, &x)?;
/// let want = (&x - z)?.sqr()?.sum(1)?.mean_all()?.to_scalar::<f64>()?;
/// assert!((transport_cost(&flow, &x)? - want).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
pub fn transport_cost(flow: &Flow, x: &Tensor) -> Result<f64, OtError> {
    let z = forward_map(flow, x)?;
    let d2 = (x - z)?.sqr()?.sum(1)?.to_dtype(DType::F64)?;
    Ok(d2.mean_all()?.to_scalar::<f64>()?)
}

/// `(mean(log p − log q), mean(−log q))` over the rows of `x` (host `f64` rows `x_rows`).
fn kl_and_nll(
    flow: &Flow,
    target: &GaussianTarget,
    x: &Tensor,
    x_rows: &[f64],
) -> Result<(f64, f64), OtError> {
    let log_q = flow
        .log_prob_exact(x)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    let d = target.dim();
    let mut kl = 0.0;
    let mut nll = 0.0;
    for (row, lq) in x_rows.chunks(d).zip(&log_q) {
        kl += target.log_density(row)? - lq;
        nll -= lq;
    }
    let n = log_q.len().max(1) as f64;
    Ok((kl / n, nll / n))
}

/// Trains one block on `N(m, C)` data and records transport cost and KL along the way.
///
/// ```
/// use candle_core::Device;
/// use cpflow::ot::{OtConfig, run_ot_experiment};
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// // The reference settings, shrunk: a width-8 ICNN, 256 training points, 10 steps.
/// let mut cfg = OtConfig::reference(2);
/// (cfg.n_train, cfg.n_test, cfg.n_eval_curve, cfg.eval_every) = (256, 128, 64, 5);
/// cfg.train.max_iterations = 10;
/// cfg.train.batch_size = 64;
/// cfg.train.lr_schedule = cpflow::LrSchedule::Cosine { t_max: 10 };
/// if let cpflow::PotentialConfig::Icnn3(c) = &mut cfg.potential {
///     (c.width, c.depth) = (8, 2);
/// }
/// let (flow, report) = run_ot_experiment(&cfg, &Device::Cpu, Default::default())?;
/// assert_eq!((report.dim, report.curve.last().unwrap().iteration), (2, 10));
/// assert!(report.train_time_s > 0.0 && report.wall_time_s >= report.train_time_s);
/// // The trained flow is returned: its cost on the test set is the report's.
/// assert!(report.transport_cost.is_finite() && flow.dim() == 2);
/// # Ok(())
/// # }
/// ```
pub fn run_ot_experiment(
    cfg: &OtConfig,
    device: &Device,
    options: RunOptions,
) -> Result<(Flow, OtReport), OtError> {
    let t0 = Instant::now();
    let mut rng = FlowRng::seed_from_u64(cfg.data_seed);
    let target = cfg.build_target(&mut rng)?;
    let dtype = cfg.float.dtype();
    let to_tensor = |rows: &[f64], n: usize| -> Result<Tensor, OtError> {
        Ok(Tensor::from_slice(rows, (n, cfg.dim), device)?.to_dtype(dtype)?)
    };
    let train_rows = target.sample(cfg.n_train, &mut rng);
    let test_rows = target.sample(cfg.n_test, &mut rng);
    let train = Dataset::new(to_tensor(&train_rows, cfg.n_train)?);
    let test = to_tensor(&test_rows, cfg.n_test)?;
    let n_curve = cfg.n_eval_curve.max(1);
    // The curve follows a fresh validation sample (drawn after the test set, which is
    // scored once, at the end).
    let curve_rows = target.sample(n_curve, &mut rng);
    let curve_x = to_tensor(&curve_rows, n_curve)?;

    let flow_cfg = FlowConfig::single_block(cfg.potential.clone())
        .with_float(cfg.float)
        .with_init_seed(cfg.init_seed);
    let flow = Flow::new(flow_cfg, device)?;
    flow.initialize(
        &train
            .x
            .narrow(0, 0, cfg.train.batch_size.min(cfg.n_train))?,
    )?;
    let mut trainer = Trainer::new(flow, cfg.train.clone())?.with_options(options);

    let w2 = target.w2_squared_to_standard_normal();
    let mut curve = Vec::new();
    let mut record = |trainer: &Trainer| -> Result<f64, OtError> {
        let iteration = trainer.state().iteration;
        // The end of a run whose length is a multiple of `eval_every` is seen twice (the
        // periodic evaluation and the end): evaluated and logged once.
        if curve
            .last()
            .is_some_and(|r: &OtRecord| r.iteration == iteration)
        {
            return Ok(0.0);
        }
        let t = Instant::now();
        let cost = transport_cost(trainer.flow(), &curve_x)?;
        let (kl, _) = kl_and_nll(trainer.flow(), &target, &curve_x, &curve_rows)?;
        tracing::info!(
            dim = cfg.dim,
            iteration,
            transport_cost = cost,
            w2_squared = w2,
            kl,
            "OT"
        );
        curve.push(OtRecord {
            iteration,
            transport_cost: cost,
            kl,
        });
        Ok(t.elapsed().as_secs_f64())
    };
    // The observer stops the run on the first evaluation error and keeps it for us.
    let mut failure: Option<OtError> = None;
    let mut eval_time = 0.0;
    let mut observer = FnObserver::new(cfg.eval_every, |trainer: &Trainer, _moment| {
        match record(trainer) {
            Ok(dt) => {
                eval_time += dt;
                Ok(Control::Continue)
            }
            Err(e) => {
                failure = Some(e);
                Ok(Control::Stop)
            }
        }
    });
    let ts = Instant::now();
    let fit = trainer.fit_observed(&train, None, &mut [&mut observer])?;
    if let Some(e) = failure {
        return Err(e);
    }
    if fit.stop_reason == StopReason::Paused {
        return Err(OtError::Interrupted {
            dim: cfg.dim,
            iteration: fit.iterations,
        });
    }
    let train_time = ts.elapsed().as_secs_f64() - eval_time;
    let flow = trainer.into_flow();
    let cost = transport_cost(&flow, &test)?;
    let optimal = target.optimal_map_to_standard_normal(&test_rows);
    let optimal_cost = test_rows
        .iter()
        .zip(&optimal)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        / cfg.n_test.max(1) as f64;
    let (kl, test_nll) = kl_and_nll(&flow, &target, &test, &test_rows)?;
    let report = OtReport {
        dim: cfg.dim,
        w2_squared: w2,
        transport_cost: cost,
        relative_error: (cost - w2) / w2,
        optimal_cost_on_test: optimal_cost,
        paired_relative_error: (cost - optimal_cost) / optimal_cost,
        kl,
        test_nll,
        entropy: target.entropy(),
        curve,
        train_time_s: train_time,
        wall_time_s: t0.elapsed().as_secs_f64(),
    };
    Ok((flow, report))
}

/// A Markdown table of OT results: `d | W₂² | transport cost | rel. error | KL | test NLL |
/// entropy | train time`.
///
/// ```
/// use cpflow::ot::{OtRecord, OtReport, ot_table_markdown};
/// let report = OtReport {
///     dim: 3,
///     w2_squared: 2.0,
///     transport_cost: 2.2,
///     relative_error: 0.1,
///     optimal_cost_on_test: 2.1,
///     paired_relative_error: 0.1 / 2.1,
///     kl: 0.01,
///     test_nll: 4.0,
///     entropy: 3.99,
///     curve: vec![
///         OtRecord { iteration: 0, transport_cost: 5.0, kl: 1.5 },
///         OtRecord { iteration: 50, transport_cost: 2.5, kl: 0.1 },
///         OtRecord { iteration: 100, transport_cost: 2.2, kl: 0.01 },
///     ],
///     train_time_s: 12.0,
///     wall_time_s: 13.0,
/// };
/// let table = ot_table_markdown(&[report]);
/// assert_eq!(table.lines().count(), 3); // header, separator, one row
/// assert!(table.lines().last().unwrap().starts_with("| 3 | 2.0000 | 2.2000 | +10.00% |"));
/// ```
pub fn ot_table_markdown(reports: &[OtReport]) -> String {
    let mut s = String::from(
        "| d | W2^2 (closed form) | transport cost E|x-f(x)|^2 | rel. error | optimal map's cost on the test set | paired rel. error | KL | test NLL | entropy | train time (s) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        s.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:+.2}% | {:.4} | {:+.2}% | {:.4} | {:.4} | {:.4} | {:.1} |\n",
            r.dim,
            r.w2_squared,
            r.transport_cost,
            100.0 * r.relative_error,
            r.optimal_cost_on_test,
            100.0 * r.paired_relative_error,
            r.kl,
            r.test_nll,
            r.entropy,
            r.train_time_s
        ));
    }
    s
}

/// Writes the two figures of one run into `dir`:
/// * `ot_d{d}_cost_vs_kl.png` (paper Fig. 4): x = `log₁₀ KL`, y = transport cost (blue), and
///   the closed-form `W₂²` as a red dashed line. Points with KL ≤ 0 and the untrained model
///   (iteration 0, whose KL is orders of magnitude larger and would squash the rest) are left
///   out;
/// * `ot_d{d}_cost_vs_iter.png`: x = iteration, y = transport cost (blue), `W₂²` (red dashed).
///
/// Each PNG has a title and axis labels; `ot_d{d}_curve.csv`, written beside them, has the
/// numbers.
///
/// ```
/// use cpflow::ot::{OtRecord, OtReport, write_ot_figures};
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// let report = OtReport {
///     dim: 3,
///     w2_squared: 2.0,
///     transport_cost: 2.2,
///     relative_error: 0.1,
///     optimal_cost_on_test: 2.1,
///     paired_relative_error: 0.1 / 2.1,
///     kl: 0.01,
///     test_nll: 4.0,
///     entropy: 3.99,
///     curve: vec![
///         OtRecord { iteration: 0, transport_cost: 5.0, kl: 1.5 },
///         OtRecord { iteration: 50, transport_cost: 2.5, kl: 0.1 },
///         OtRecord { iteration: 100, transport_cost: 2.2, kl: 0.01 },
///     ],
///     train_time_s: 12.0,
///     wall_time_s: 13.0,
/// };
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-ot-figures-{}", std::process::id()));
/// write_ot_figures(&dir, &report)?;
/// for f in ["ot_d3_cost_vs_kl.png", "ot_d3_cost_vs_iter.png"] {
///     assert_eq!(image::image_dimensions(dir.join(f)).unwrap(), (500, 500));
/// }
/// let csv = std::fs::read_to_string(dir.join("ot_d3_curve.csv")).unwrap();
/// assert_eq!(csv.lines().nth(2), Some("50,2.5,0.1,2"));
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
pub fn write_ot_figures(dir: &Path, report: &OtReport) -> Result<(), OtError> {
    let io = |path: &Path| {
        let p = path.display().to_string();
        move |source| OtError::Io { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let d = report.dim;
    let w2 = report.w2_squared;
    let blue = (31, 119, 180);
    let red = (214, 39, 40);
    let by_kl: Vec<[f64; 2]> = report
        .curve
        .iter()
        .filter(|r| r.iteration > 0 && r.kl > 0.0 && r.kl.is_finite())
        .map(|r| [r.kl.log10(), r.transport_cost])
        .collect();
    let (min_lkl, max_lkl) = by_kl
        .iter()
        .map(|p| p[0])
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (min_lkl, max_lkl) = if min_lkl <= max_lkl {
        (min_lkl, max_lkl)
    } else {
        (-3.0, 0.0)
    };
    let cost_hi = report
        .curve
        .iter()
        .map(|r| r.transport_cost)
        .chain([w2])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    // y: the trained model's costs and W₂², padded (a 0-based axis would squash them).
    let (y_lo, y_hi) = by_kl
        .iter()
        .map(|p| p[1])
        .chain([w2])
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let y_pad = 0.05 * (y_hi - y_lo).max(1e-3 * w2.abs().max(1e-9));
    let span = (max_lkl - min_lkl).max(0.1);
    let bounds = Bounds {
        x: (min_lkl - span / 20.0, max_lkl + span / 20.0),
        y: (y_lo - y_pad, y_hi + y_pad),
    };
    line_chart_png(
        dir.join(format!("ot_d{d}_cost_vs_kl.png")),
        &[
            LineSeries::solid(by_kl, blue),
            LineSeries::dashed(vec![[min_lkl, w2], [max_lkl, w2]], red),
        ],
        Some(bounds),
        Figure::new(500)
            .title(format!("transport cost vs KL, d = {d} (red: W₂²)"))
            .labels("log₁₀ KL", "transport cost"),
    )?;
    let by_iter: Vec<[f64; 2]> = report
        .curve
        .iter()
        .map(|r| [r.iteration as f64, r.transport_cost])
        .collect();
    let last = by_iter.last().map(|p| p[0]).unwrap_or(1.0).max(1.0);
    line_chart_png(
        dir.join(format!("ot_d{d}_cost_vs_iter.png")),
        &[
            LineSeries::solid(by_iter, blue),
            LineSeries::dashed(vec![[0.0, w2], [last, w2]], red),
        ],
        Some(Bounds {
            x: (0.0, last),
            y: (0.0, cost_hi * 1.1 + 1e-9),
        }),
        Figure::new(500)
            .title(format!(
                "transport cost during training, d = {d} (red: W₂²)"
            ))
            .labels("iteration", "transport cost"),
    )?;
    let mut csv = String::from("iteration,transport_cost,kl,w2_squared\n");
    for r in &report.curve {
        csv.push_str(&format!(
            "{},{},{},{}\n",
            r.iteration, r.transport_cost, r.kl, w2
        ));
    }
    let path = dir.join(format!("ot_d{d}_curve.csv"));
    crate::checkpoint::write_atomic(&path, csv.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(dim: usize, iterations: usize) -> OtConfig {
        let mut cfg = OtConfig::reference(dim);
        cfg.n_train = 4096;
        cfg.n_test = 1024;
        cfg.n_eval_curve = 256;
        cfg.eval_every = iterations;
        cfg.train.max_iterations = iterations;
        cfg.train.lr_schedule = LrSchedule::Cosine { t_max: iterations };
        cfg.potential = PotentialConfig::Icnn3(Icnn3Config {
            dim,
            width: 16,
            depth: 2,
            activation: ActivationKind::GaussianSoftplus,
            zero_shift: true,
            symm_act_first: false,
        });
        cfg
    }

    #[test]
    fn short_run_reports_consistent_numbers_and_figures() {
        let cfg = quick(2, 20);
        let (flow, r) = run_ot_experiment(&cfg, &Device::Cpu, RunOptions::default()).unwrap();
        assert_eq!(r.curve.len(), 2);
        assert_eq!(r.curve[1].iteration, 20);
        assert!(r.w2_squared > 0.0 && r.transport_cost.is_finite() && r.kl.is_finite());
        // KL and NLL − H estimate the same quantity: they agree to the Monte-Carlo error of
        // the latter (≈ √(d/2)/√n ≈ 0.03 for n = 1024) with a wide margin.
        assert!((r.kl - (r.test_nll - r.entropy)).abs() < 0.2, "{r:?}");
        // The forward map is the block's gradient map; the cost is a mean squared distance.
        let x = Tensor::new(&[[0.0f64, 0.0], [1.0, -1.0]], &Device::Cpu).unwrap();
        let z = forward_map(&flow, &x).unwrap();
        let (z_ref, _) = flow.transform(&x).unwrap();
        let diff = (z - z_ref)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(diff < 1e-12, "{diff}");
        let dir = std::env::temp_dir().join(format!("cpflow-ot-test-{}", std::process::id()));
        write_ot_figures(&dir, &r).unwrap();
        assert!(dir.join("ot_d2_cost_vs_kl.png").exists());
        assert!(dir.join("ot_d2_curve.csv").exists());
        let table = ot_table_markdown(&[r]);
        assert!(table.contains("| 2 |"));
        let mut bad = cfg.clone();
        bad.dim = 3;
        bad.target = OtTarget::Paper2d;
        assert!(bad.build_target(&mut FlowRng::seed_from_u64(0)).is_err());
    }

    /// Unknown keys are refused, naming the key (a misspelt `n_train` used to be ignored).
    #[test]
    fn unknown_keys_are_refused() {
        let mut v = serde_json::to_value(OtConfig::reference(2)).unwrap();
        assert!(serde_json::from_value::<OtConfig>(v.clone()).is_ok());
        v["n_trian"] = 5.into();
        let err = serde_json::from_value::<OtConfig>(v)
            .unwrap_err()
            .to_string();
        assert!(err.contains("n_trian"), "{err}");
    }

    /// The acceptance check (reference settings, d = 2): once the KL is below 0.01 the
    /// transport cost is within 2% of W₂². Several minutes in the dev profile:
    /// `cargo test -p cpflow --release -- --ignored ot_d2_reference`.
    #[test]
    #[ignore]
    fn ot_d2_reference_transport_cost_matches_w2() {
        let cfg = OtConfig::reference(2);
        let (_, r) = run_ot_experiment(&cfg, &Device::Cpu, RunOptions::default()).unwrap();
        eprintln!("{}", ot_table_markdown(std::slice::from_ref(&r)));
        assert!(r.kl < 0.01, "KL {}", r.kl);
        assert!(
            r.paired_relative_error.abs() < 0.02,
            "paired error {}",
            r.paired_relative_error
        );
        assert!(
            r.relative_error.abs() < 0.02,
            "relative error {}",
            r.relative_error
        );
    }

    /// A set interrupt flag pauses the run after its first step: an `Interrupted` error
    /// naming the dimension and the step, no report.
    #[test]
    fn an_interrupt_flag_stops_the_run_unfinished() {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let options = RunOptions {
            interrupt: Some(flag),
            ..RunOptions::default()
        };
        match run_ot_experiment(&quick(2, 50), &Device::Cpu, options) {
            Err(OtError::Interrupted {
                dim: 2,
                iteration: 1,
            }) => {}
            other => panic!("{:?}", other.map(|(_, r)| r.dim)),
        }
    }
}
