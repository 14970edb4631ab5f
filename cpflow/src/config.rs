//! Serialisable configuration structs: floating-point type, estimator parameters, training.

use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::adam::AdamParams;
use crate::error::{CpflowError, Result};

/// Floating-point type of a model (candle's `DType` is not serialisable).
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SurrogateParams {
    /// Rademacher probes per sample (reference: 1); the surrogate is averaged over them.
    pub probes: usize,
    /// Absolute CG tolerance on each residual entry (reference: 1e-3).
    pub cg_atol: f64,
    /// Relative CG tolerance (reference: 0).
    pub cg_rtol: f64,
    /// CG iteration cap; `None` means `d` (reference).
    pub cg_max_iters: Option<usize>,
}

impl Default for SurrogateParams {
    fn default() -> Self {
        SurrogateParams {
            probes: 1,
            cg_atol: 1e-3,
            cg_rtol: 0.0,
            cg_max_iters: None,
        }
    }
}

/// Parameters of the SLQ log-det estimate (`docs/reference/cpflow-reference.md` §2.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlqParams {
    /// Unit Rademacher probes per sample (reference: 1); the estimates are averaged.
    pub probes: usize,
    /// Lanczos steps (reference: 10); `min(steps, d)` are used.
    pub steps: usize,
}

impl Default for SlqParams {
    fn default() -> Self {
        SlqParams {
            probes: 1,
            steps: 10,
        }
    }
}

/// How the validation NLL (early stopping, monitoring) is estimated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NllEstimator {
    /// Exact dense-Hessian log-det (reference `--brute-val`, and the test NLL).
    Exact,
    /// Stochastic Lanczos quadrature (reference default for validation).
    Slq(SlqParams),
}

impl Default for NllEstimator {
    fn default() -> Self {
        NllEstimator::Slq(SlqParams::default())
    }
}

/// The objective minimised by the trainer.
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// Constant learning rate.
    #[default]
    Constant,
    /// PyTorch `StepLR`: multiply by `gamma` every `step_size` iterations (reference toy:
    /// 2000, 0.5).
    Step {
        /// Iterations between decays.
        step_size: usize,
        /// Multiplicative factor.
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

/// Training configuration (defaults: the reference `train_tabular.py`).
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
    /// Validate every this many iterations (and at iteration 0); 0 disables validation.
    pub val_every: usize,
    /// Validation NLL estimator.
    pub val_estimator: NllEstimator,
    /// Batch size for validation/evaluation passes.
    pub eval_batch_size: usize,
    /// Early stopping: stop after more than this many validations without improvement, and
    /// restore the best weights. `None` disables it (then the best weights are still tracked).
    pub early_stopping: Option<usize>,
    /// SLQ estimate of the training NLL on the current batch every this many iterations
    /// (0: never).
    pub train_slq_every: usize,
    /// SLQ parameters of that monitor.
    pub train_slq: SlqParams,
    /// Write a checkpoint every this many iterations (0: only at validations and the end).
    pub checkpoint_every: usize,
    /// Write a metrics record (and a log line) every this many iterations.
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
            train_slq: SlqParams::default(),
            checkpoint_every: 0,
            log_every: 100,
            restore_best: true,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Check the values (positive sizes and counts, finite rates).
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
            return bad("batch sizes must be positive".into());
        }
        if self.max_iterations == 0 {
            // The first step initialises ActNorm from data: no step, no usable flow.
            return bad("max_iterations must be at least 1".into());
        }
        if !(self.adam.lr.is_finite() && self.adam.lr >= 0.0) {
            return bad(format!(
                "learning rate {} is not a finite non-negative number",
                self.adam.lr
            ));
        }
        if self.surrogate.probes == 0 || self.train_slq.probes == 0 {
            return bad("probe counts must be positive".into());
        }
        if let Some(c) = self.clip_grad_norm
            && (c.is_nan() || c <= 0.0)
        {
            return bad(format!("clip_grad_norm must be positive, got {c}"));
        }
        if let LrSchedule::Step { step_size: 0, .. } = self.lr_schedule {
            return bad("StepLR step_size must be positive".into());
        }
        if let LrSchedule::Cosine { t_max: 0 } = self.lr_schedule {
            return bad("cosine t_max must be positive".into());
        }
        Ok(())
    }
}
