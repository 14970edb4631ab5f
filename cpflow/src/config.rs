//! Serialisable configuration structs: floating-point type, estimator parameters, training.

use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::adam::AdamParams;
use crate::error::{CpflowError, Result};
use crate::surrogate_preconditioner::{CgPreconditioner, DEFAULT_PRECONDITIONER_ROWS};

/// Floating-point type of a model (candle's `DType` is not serialisable).
///
/// ```
/// use cpflow::candle::DType;
/// use cpflow::FloatType;
/// assert_eq!(FloatType::F32.dtype(), DType::F32);
/// assert_eq!(FloatType::from_dtype(DType::F64).unwrap(), FloatType::F64);
/// assert!(FloatType::from_dtype(DType::F16).is_err()); // only f32 and f64
/// assert_eq!(FloatType::default(), FloatType::F64);
/// assert_eq!(serde_json::to_string(&FloatType::F32).unwrap(), r#""f32""#);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FloatType {
    /// 32-bit floats (the reference's tabular default).
    F32,
    /// 64-bit floats (the reference's toy experiments).
    #[default]
    F64,
}

impl FloatType {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            FloatType::F32 => DType::F32,
            FloatType::F64 => DType::F64,
        }
    }

    /// The float type of a candle dtype (only f32 and f64 are supported).
    pub fn from_dtype(dtype: DType) -> Result<Self> {
        match dtype {
            DType::F32 => Ok(FloatType::F32),
            DType::F64 => Ok(FloatType::F64),
            other => Err(CpflowError::InvalidConfig(format!(
                "unsupported dtype {other:?}: use f32 or f64"
            ))),
        }
    }
}

/// Parameters of the CG log-det gradient surrogate (`docs/reference/cpflow-reference.md` §2.3).
///
/// ```
/// use cpflow::SurrogateParams;
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, FlowRng, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 3, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.1f64, 0.2, 0.0], [0.3, -0.4, 1.0]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let mut rng = FlowRng::seed_from_u64(0);
/// // One CG iteration per system at most: a cheap, approximate gradient.
/// let capped = SurrogateParams { probes: 4, cg_max_iters: Some(1), ..Default::default() };
/// let out = flow.surrogate_loss(&x, &capped, &mut rng)?;
/// assert_eq!(out.cg.iterations.len(), 2 * 4); // samples × probes
/// assert!(out.cg.iterations.iter().all(|&k| k <= 1));
/// // The reference's cap, d = 3 iterations: CG solves the 3×3 systems.
/// let full = SurrogateParams { cg_atol: 1e-10, ..Default::default() };
/// assert_eq!(flow.surrogate_loss(&x, &full, &mut rng)?.cg.converged, 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SurrogateParams {
    /// Rademacher probes per sample (reference: 1); the surrogate is averaged over them.
    pub probes: usize,
    /// Absolute CG tolerance on each residual entry (reference: 1e-3). A system counts as
    /// converged when `‖r‖∞ ≤ cg_atol + cg_rtol` (the probe has `‖v‖∞ = 1`). Below 1e3 unit
    /// roundoffs of the float type (f32: 1.2e-4, f64: 2.2e-13) the convergence is confirmed on
    /// the true residual `v − A u` (one more product per converged system): a tolerance the
    /// float type cannot resolve (f32: below ≈ 1e-7) is then reported met only where that
    /// residual, formed in the float type, meets it (rounds to 0), not on CG's updated one.
    pub cg_atol: f64,
    /// Relative CG tolerance (reference: 0).
    pub cg_rtol: f64,
    /// CG iteration cap; `None` means `d` (reference).
    pub cg_max_iters: Option<usize>,
    /// Preconditioner of the CG solves (default none: the reference's plain CG). The
    /// stopping test stays on the residual, so the solutions meet the same tolerance;
    /// [`CgPreconditioner::MeanHessian`] reaches it in fewer iterations.
    pub preconditioner: CgPreconditioner,
    /// Rows of each solve's batch whose dense Jacobians are averaged into the
    /// [`CgPreconditioner::MeanHessian`] (the first rows: the batch is shuffled). Default 8.
    pub preconditioner_rows: usize,
}

impl Default for SurrogateParams {
    fn default() -> Self {
        SurrogateParams {
            probes: 1,
            cg_atol: 1e-3,
            cg_rtol: 0.0,
            cg_max_iters: None,
            preconditioner: CgPreconditioner::None,
            preconditioner_rows: DEFAULT_PRECONDITIONER_ROWS,
        }
    }
}

impl SurrogateParams {
    /// Check the values: at least one probe, finite non-negative tolerances and at least one
    /// CG iteration (`Some(0)` would stop every solve at its initial guess `u₀ = v`: a
    /// gradient that ignores the Hessian). `key` is where the parameters sit in the
    /// configuration (`train.surrogate` for `cpflow train`): the messages name `key.field`.
    ///
    /// ```
    /// let mut p = cpflow::SurrogateParams::default();
    /// p.validate("train.surrogate").unwrap();
    /// p.cg_max_iters = Some(0);
    /// let e = p.validate("train.surrogate").unwrap_err().to_string();
    /// assert!(e.contains("train.surrogate.cg_max_iters"), "{e}");
    /// ```
    pub fn validate(&self, key: &str) -> Result<()> {
        let bad = |m: String| Err(CpflowError::InvalidConfig(m));
        if self.probes == 0 {
            return bad(format!("{key}.probes must be at least 1"));
        }
        for (name, tol) in [("cg_atol", self.cg_atol), ("cg_rtol", self.cg_rtol)] {
            if !(tol.is_finite() && tol >= 0.0) {
                return bad(format!("{key}.{name} must be finite and ≥ 0, got {tol:?}"));
            }
        }
        if self.preconditioner == CgPreconditioner::MeanHessian && self.preconditioner_rows == 0 {
            return bad(format!(
                "{key}.preconditioner_rows must be at least 1 with preconditioner = \"mean-hessian\""
            ));
        }
        if self.cg_max_iters == Some(0) {
            return bad(format!(
                "{key}.cg_max_iters must be at least 1 (leave it unset for the reference's \
                 cap, the data dimension): with 0 every CG solve stops at its initial guess"
            ));
        }
        Ok(())
    }
}

/// Settings of the SLQ log-det estimate in a flow's configuration (`docs/reference/cpflow-reference.md`
/// §2.4): probes and Lanczos steps. The algorithm's own parameters are [`logdet::SlqParams`];
/// [`SlqConfig::to_logdet_params`] gives them.
///
/// ```
/// use cpflow::SlqConfig;
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, FlowRng, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 3, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.1f64, 0.2, 0.0], [0.3, -0.4, 1.0]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let mut rng = FlowRng::seed_from_u64(0);
/// assert_eq!(SlqConfig::default(), SlqConfig { probes: 1, steps: 10 });
/// // min(steps, d) Lanczos steps are used: 10 steps in d = 3 are 3 steps.
/// let ten = flow.log_prob_slq(&x, &SlqConfig { probes: 2, steps: 10 }, &mut FlowRng::seed_from_u64(1))?;
/// let three = flow.log_prob_slq(&x, &SlqConfig { probes: 2, steps: 3 }, &mut FlowRng::seed_from_u64(1))?;
/// assert_eq!(ten.log_prob.to_vec1::<f64>()?, three.log_prob.to_vec1::<f64>()?);
/// # let _ = &mut rng;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlqConfig {
    /// Unit Rademacher probes per sample (reference: 1); the estimates are averaged.
    pub probes: usize,
    /// Lanczos steps (reference: 10); `min(steps, d)` are used.
    pub steps: usize,
}

impl Default for SlqConfig {
    fn default() -> Self {
        SlqConfig {
            probes: 1,
            steps: 10,
        }
    }
}

impl SlqConfig {
    /// The parameters of `logdet`'s SLQ estimate with these probes and Lanczos steps (and
    /// its defaults otherwise: full re-orthogonalisation, Rademacher probes, as the reference).
    ///
    /// ```
    /// let p = cpflow::SlqConfig { probes: 3, steps: 7 }.to_logdet_params();
    /// assert_eq!((p.probes, p.lanczos_steps, p.reorthogonalize), (3, 7, true));
    /// ```
    pub fn to_logdet_params(&self) -> logdet::SlqParams {
        logdet::SlqParams::default()
            .with_probes(self.probes)
            .with_lanczos_steps(self.steps)
    }
}

/// The former name of [`SlqConfig`], kept so that code written against it still builds; it
/// was renamed because `logdet::SlqParams` (the algorithm's parameters) has the same name.
#[deprecated(
    since = "0.1.0",
    note = "renamed `SlqConfig` (distinct from `logdet::SlqParams`)"
)]
pub type SlqParams = SlqConfig;

/// How the validation NLL (early stopping, monitoring) is estimated.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::{Dataset, Flow, FlowConfig, FlowRng, NllEstimator, PotentialConfig, SlqConfig, mean_nll};
/// # fn main() -> cpflow::Result<()> {
/// assert_eq!(NllEstimator::default(), NllEstimator::Slq(SlqConfig::default()));
/// assert_eq!(serde_json::to_string(&NllEstimator::Exact)?, r#""exact""#);
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 1, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.1f64], [0.5], [-0.7], [1.2]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let data = Dataset::new(x);
/// let mut rng = FlowRng::seed_from_u64(0);
/// let exact = mean_nll(&flow, &data, &NllEstimator::Exact, 4, &mut rng)?;
/// let slq = mean_nll(&flow, &data, &NllEstimator::Slq(SlqConfig::default()), 4, &mut rng)?;
/// // In one dimension a ±1 probe gives vᵀ log(H) v = log H: both estimators are exact.
/// assert!((exact - slq).abs() < 1e-10, "{exact} vs {slq}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NllEstimator {
    /// Exact dense-Hessian log-det (reference `--brute-val`, and the test NLL).
    Exact,
    /// Stochastic Lanczos quadrature (reference default for validation).
    Slq(SlqConfig),
}

/// The estimator's name in reports and messages (`cpflow train`'s report.json and final
/// line, `xtask`'s benchmark reports): `exact`, `slq(1 probe, 10 steps)`,
/// `slq(3 probes, 7 steps)`. The SLQ estimate uses `min(steps, dim)` Lanczos steps; the
/// configured count is named.
///
/// ```
/// use cpflow::{NllEstimator, SlqConfig};
/// assert_eq!(NllEstimator::Exact.to_string(), "exact");
/// assert_eq!(NllEstimator::default().to_string(), "slq(1 probe, 10 steps)");
/// let three = NllEstimator::Slq(SlqConfig { probes: 3, steps: 7 });
/// assert_eq!(three.to_string(), "slq(3 probes, 7 steps)");
/// ```
impl std::fmt::Display for NllEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NllEstimator::Exact => f.write_str("exact"),
            NllEstimator::Slq(p) => write!(
                f,
                "slq({} probe{}, {} steps)",
                p.probes,
                if p.probes == 1 { "" } else { "s" },
                p.steps
            ),
        }
    }
}

impl Default for NllEstimator {
    fn default() -> Self {
        NllEstimator::Slq(SlqConfig::default())
    }
}

/// The objective minimised by the trainer.
///
/// ```
/// use cpflow::{FlowRng, LrSchedule, NllEstimator, Objective, mean_nll};
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Dataset, Flow, FlowConfig, PotentialConfig, TrainConfig, Trainer};
/// # fn main() -> cpflow::Result<()> {
/// # let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// # let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// # let data: Vec<f64> = (0..64).map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0).collect();
/// # let x = Tensor::from_vec(data, (32, 2), &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let train = Dataset::new(x);
/// let before = mean_nll(&flow, &train, &NllEstimator::Exact, 32, &mut FlowRng::seed_from_u64(0))?;
/// let config = TrainConfig {
///     objective: Objective::ExactNll, batch_size: 32, max_iterations: 1, val_every: 0,
///     train_slq_every: 0, lr_schedule: LrSchedule::Constant, ..Default::default()
/// };
/// let report = Trainer::new(flow, config)?.fit(&train, None)?;
/// // The exact objective's loss is the NLL (here of the whole set, before the step), no CG.
/// assert!((report.final_loss - before).abs() < 1e-9);
/// assert_eq!((report.cg_converged, report.mean_cg_iterations), (None, 0.0));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// The CG surrogate (reference training; the loss value is not an NLL).
    #[default]
    CgSurrogate,
    /// The exact NLL with a differentiable dense log-det (reference `train_ot.py`; small d).
    ExactNll,
}

/// Learning-rate schedule.
///
/// ```
/// use cpflow::LrSchedule;
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Dataset, Flow, FlowConfig, PotentialConfig, TrainConfig, Trainer};
/// # fn main() -> cpflow::Result<()> {
/// # let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// # let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// # let data: Vec<f64> = (0..64).map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0).collect();
/// # let x = Tensor::from_vec(data, (32, 2), &Device::Cpu)?;
/// let schedule = LrSchedule::Step { step_size: 2, gamma: 0.5 };
/// // The TOML / JSON spelling.
/// let json: LrSchedule = serde_json::from_str(r#"{"step": {"step_size": 2, "gamma": 0.5}}"#)?;
/// assert_eq!(json, schedule);
/// let config = TrainConfig {
///     lr_schedule: schedule, batch_size: 8, max_iterations: 4, log_every: 1, val_every: 0,
///     train_slq_every: 0, ..Default::default()
/// };
/// let report = Trainer::new(flow, config)?.fit(&Dataset::new(x), None)?;
/// let lrs: Vec<f64> = report.history.iter().map(|r| r.lr).collect();
/// assert_eq!(lrs, [1e-3, 1e-3, 5e-4, 5e-4]); // halved every 2 steps
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// Constant learning rate.
    #[default]
    Constant,
    /// PyTorch `StepLR`: multiply by `gamma` every `step_size` iterations (reference toy:
    /// 2000, 0.5).
    Step {
        /// Iterations between decays (at least 1).
        step_size: usize,
        /// Decay factor, in `(0, 1]` (1 keeps the rate constant). PyTorch takes any number;
        /// cpflow refuses the others: `gamma ≤ 0` gives a zero or negative rate (gradient
        /// ascent), `gamma > 1` a rate that grows without bound (`lr·γ^(t/step_size)`), which
        /// no reference run uses and is most likely a typo.
        gamma: f64,
    },
    /// The reference tabular rule (`train_tabular.py:update_lr`): after more than
    /// `patience/3` validations without improvement the LR becomes `lr/10`, after more than
    /// `2·(patience/3)` it becomes `lr/100`; it never goes back up. `patience` is
    /// [`TrainConfig::early_stopping`] (20 if that is `None`).
    Plateau,
    /// PyTorch `CosineAnnealingLR` with `eta_min = 0` over `t_max` iterations (reference OT).
    Cosine {
        /// Period (iterations).
        t_max: usize,
    },
}

impl LrSchedule {
    /// Check the schedule's parameters: `step_size ≥ 1` and `gamma` in `(0, 1]` (see
    /// [`LrSchedule::Step`]), `t_max ≥ 1`. `key` is where the schedule sits in the
    /// configuration (`train.lr_schedule` for `cpflow train`); the messages name
    /// `key.<variant>.<field>`, as the TOML spells it (`lr_schedule = { step = { gamma = .. } }`).
    ///
    /// ```
    /// use cpflow::LrSchedule;
    /// LrSchedule::Step { step_size: 10, gamma: 0.5 }.validate("train.lr_schedule").unwrap();
    /// let e = LrSchedule::Step { step_size: 10, gamma: -1.0 }
    ///     .validate("train.lr_schedule")
    ///     .unwrap_err();
    /// assert!(e.to_string().contains("train.lr_schedule.step.gamma"), "{e}");
    /// ```
    pub fn validate(&self, key: &str) -> Result<()> {
        let bad = |m: String| Err(CpflowError::InvalidConfig(m));
        match *self {
            LrSchedule::Step { step_size: 0, .. } => {
                bad(format!("{key}.step.step_size must be at least 1"))
            }
            LrSchedule::Step { gamma, .. } if !(gamma > 0.0 && gamma <= 1.0) => bad(format!(
                "{key}.step.gamma must be in (0, 1], got {gamma:?}: it multiplies the learning \
                 rate every step_size iterations (≤ 0 would make it zero or negative, > 1 \
                 grow it without bound; 1 keeps it constant)"
            )),
            LrSchedule::Cosine { t_max: 0 } => {
                bad(format!("{key}.cosine.t_max must be at least 1"))
            }
            _ => Ok(()),
        }
    }
}

/// Training configuration (defaults: the reference `train_tabular.py`).
///
/// ```
/// use cpflow::{LrSchedule, TrainConfig};
/// let d = TrainConfig::default();
/// assert_eq!((d.batch_size, d.lr_schedule.clone(), d.early_stopping), (1024, LrSchedule::Plateau, Some(20)));
/// // A configuration file names what differs from the defaults; a misspelt key is refused.
/// let cfg: TrainConfig = serde_json::from_str(r#"{"batch_size": 128, "max_iterations": 3910}"#).unwrap();
/// assert_eq!(cfg, TrainConfig { batch_size: 128, max_iterations: 3910, ..d });
/// assert!(serde_json::from_str::<TrainConfig>(r#"{"batchsize": 128}"#).is_err());
/// cfg.validate().unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Mini-batch size (reference tabular 1024, toy 128).
    pub batch_size: usize,
    /// Total number of optimiser steps (the reference: `nepochs · ⌈N/B⌉`).
    pub max_iterations: usize,
    /// Adam hyper-parameters (lr, betas (0.9, 0.99), weight decay 1e-6).
    pub adam: AdamParams,
    /// Learning-rate schedule.
    pub lr_schedule: LrSchedule,
    /// Training objective.
    pub objective: Objective,
    /// CG surrogate parameters.
    pub surrogate: SurrogateParams,
    /// Gradient-norm clipping (`None`: no clipping; the norm is still logged).
    pub clip_grad_norm: Option<f64>,
    /// Validate after the steps whose 0-based index is a multiple of this: the first step,
    /// then every this many (records at iterations 1, k + 1, 2k + 1, …, as the reference's
    /// `itr % val_freq == 0` before its counter moves); 0 disables validation.
    pub val_every: usize,
    /// Validation NLL estimator.
    pub val_estimator: NllEstimator,
    /// Batch size for validation/evaluation passes.
    pub eval_batch_size: usize,
    /// Early stopping: stop after more than this many validations without improvement, and
    /// restore the best weights. `None` disables it (then the best weights are still tracked).
    pub early_stopping: Option<usize>,
    /// SLQ estimate of the training NLL on the current batch, on the same schedule as
    /// `val_every` (steps with 0-based index 0, k, 2k, …); 0: never.
    pub train_slq_every: usize,
    /// SLQ parameters of that monitor.
    pub train_slq: SlqConfig,
    /// Write a checkpoint every this many iterations (0: only at validations and the end).
    pub checkpoint_every: usize,
    /// Write a metrics record (and a log line) after the steps whose 0-based index is a
    /// multiple of this (iterations 1, k + 1, 2k + 1, …), after every validation or training-SLQ
    /// step, and after the last step; 0: only those.
    pub log_every: usize,
    /// At the end of training (or early stopping) restore the weights of the best validation.
    pub restore_best: bool,
    /// Seed of the trainer RNG (shuffling, probes).
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 1024,
            max_iterations: 10_000,
            adam: AdamParams::default(),
            lr_schedule: LrSchedule::Plateau,
            objective: Objective::CgSurrogate,
            surrogate: SurrogateParams::default(),
            clip_grad_norm: None,
            val_every: 500,
            val_estimator: NllEstimator::default(),
            eval_batch_size: 1024,
            early_stopping: Some(20),
            train_slq_every: 100,
            train_slq: SlqConfig::default(),
            checkpoint_every: 0,
            log_every: 100,
            restore_best: true,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Check the values (positive sizes and counts, finite rates, the optimiser's and the
    /// schedule's parameters, the CG surrogate's). The messages name the keys as `cpflow
    /// train`'s configuration spells them (`train.adam.eps`, `train.surrogate.cg_max_iters`).
    ///
    /// ```
    /// let mut cfg = cpflow::TrainConfig::default();
    /// cfg.validate().unwrap();
    /// cfg.max_iterations = 0;
    /// assert!(cfg.validate().unwrap_err().to_string().contains("max_iterations"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(CpflowError::InvalidConfig(m));
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad(
                "batch sizes must be positive (train.batch_size, train.eval_batch_size)".into(),
            );
        }
        if self.max_iterations == 0 {
            // The first step initialises ActNorm from data: no step, no usable flow.
            return bad("train.max_iterations must be at least 1".into());
        }
        self.adam.validate("train.adam")?;
        self.lr_schedule.validate("train.lr_schedule")?;
        self.surrogate.validate("train.surrogate")?;
        let mut slqs = vec![("train.train_slq", &self.train_slq)];
        if let NllEstimator::Slq(p) = &self.val_estimator {
            slqs.push(("train.val_estimator.slq", p));
        }
        for (key, p) in slqs {
            if p.probes == 0 {
                return bad(format!("{key}.probes must be at least 1"));
            }
            if p.steps == 0 {
                return bad(format!("{key}.steps must be at least 1"));
            }
        }
        if let Some(c) = self.clip_grad_norm
            && (c.is_nan() || c <= 0.0)
        {
            return bad(format!("train.clip_grad_norm must be positive, got {c:?}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
