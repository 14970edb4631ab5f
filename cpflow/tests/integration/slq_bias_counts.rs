//! SLQ's hidden-bias counts reach the caller: `SlqLogProb::floored_ritz_values` and
//! `premature_breakdowns` (per sample, summed over blocks and probes) and their totals in
//! `nll_estimate_and_slq_bias_with`. Before, `slq_logdet_block` dropped logdet's counts and
//! only logged a warning once per process, so a caller (a service scoring many batches)
//! could not tell which results were biased.
//!
//! The flow is one block `Φ = sp(w₁)·F + sp(w₀)·‖x‖²/2` of a custom quadratic potential
//! `F = ½ Σ λ_k x_k²`, `λ` log-spaced over `[1, 10⁶]` (`d = 30`): its Jacobian is
//! `diag(log 2 · λ_k + 1)`, condition number 4.1e5, beyond f32's `1/(100·u)` = 8.4e4
//! (krylov's breakdown floor; logdet's `slq_bias_counts` test has the same spectrum shape),
//! and far below f64's 4.5e13.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use cpflow::evaluate::nll_estimate_and_slq_bias_with;
use cpflow::{
    CustomPotentialConfig, Dataset, FloatType, Flow, FlowConfig, FlowRng, NllEstimator,
    PotentialConfig, SlqConfig,
};
use icnn::{ConvexPotential, HessianVectorProducts, Linearization};

use crate::flow_common::data;

const D: usize = 30;
const ROWS: usize = 6;

/// `F(x) = ½ Σ_k λ_k x_k²` (no parameters): gradient `λ ⊙ x`, Hessian `diag(λ)`.
struct DiagonalQuadratic {
    /// `(1, d)` in the flow's dtype.
    lambda: Tensor,
}

#[derive(Debug)]
struct DiagonalHvp {
    lambda: Tensor,
}

impl HessianVectorProducts for DiagonalHvp {
    fn hvp(&self, v: &Tensor) -> icnn::Result<Tensor> {
        Ok(v.broadcast_mul(&self.lambda)?)
    }
    fn detach(&self) -> Arc<dyn HessianVectorProducts> {
        Arc::new(DiagonalHvp {
            lambda: self.lambda.detach(),
        })
    }
}

impl ConvexPotential for DiagonalQuadratic {
    fn potential(&self, x: &Tensor) -> icnn::Result<Tensor> {
        Ok(self.linearize(x)?.potential())
    }
    fn linearize(&self, x: &Tensor) -> icnn::Result<Linearization> {
        let gradient = x.broadcast_mul(&self.lambda)?;
        let potential = ((&gradient * x)?.sum(1)? * 0.5)?;
        let hvp = Arc::new(DiagonalHvp {
            lambda: self.lambda.clone(),
        });
        Linearization::from_parts(potential, gradient, hvp)
    }
    fn dim(&self) -> usize {
        D
    }
}

/// A one-block flow of [`DiagonalQuadratic`] in `float`.
fn ill_conditioned_flow(float: FloatType) -> Flow {
    let name = "slq-bias-diagonal-quadratic";
    cpflow::register_potential(name, |vb, cfg, _rng| {
        let lambda: Vec<f64> = (0..cfg.dim)
            .map(|k| 10f64.powf(6.0 * k as f64 / (cfg.dim - 1) as f64))
            .collect();
        let lambda = Tensor::from_vec(lambda, (1, cfg.dim), vb.device())?.to_dtype(vb.dtype())?;
        Ok(Box::new(DiagonalQuadratic { lambda }))
    });
    let pot = PotentialConfig::Custom(CustomPotentialConfig {
        name: name.into(),
        dim: D,
        settings: BTreeMap::new(),
    });
    let cfg = FlowConfig::single_block(pot).with_float(float);
    Flow::new(cfg, &Device::Cpu).unwrap()
}

/// Points of magnitude 1e-6, so that `z = (log 2 · λ + 1) ⊙ x` is at most of order 1: the
/// prior's term then stays small enough (tens of nats) for f32 to show the log-det's bias.
fn points(dtype: DType) -> Tensor {
    (data(ROWS, D, 5) * 1e-6).unwrap().to_dtype(dtype).unwrap()
}

/// SLQ with `m = d` steps (no truncation bias) and 4 probes.
const SLQ: SlqConfig = SlqConfig {
    probes: 4,
    steps: D,
};

/// In f32 every sample's estimate has floored Ritz values and premature breakdowns, and is
/// biased upwards beyond its standard error (against the exact dense log-det): the counts
/// say which results not to trust. In f64 the same flow counts nothing.
#[test]
fn slq_log_prob_carries_the_bias_counts_per_sample() {
    let flow = ill_conditioned_flow(FloatType::F32);
    let x = points(DType::F32);
    let slq = flow
        .log_prob_slq(&x, &SLQ, &mut FlowRng::seed_from_u64(1))
        .unwrap();
    assert_eq!(slq.floored_ritz_values.len(), ROWS);
    assert_eq!(slq.premature_breakdowns.len(), ROWS);
    assert!(
        slq.floored_ritz_values.iter().all(|c| *c > 0)
            && slq.premature_breakdowns.iter().all(|c| *c > 0),
        "floored {:?}, premature {:?}",
        slq.floored_ritz_values,
        slq.premature_breakdowns
    );
    // Each probe's run stops early at most once, per block (one block here).
    assert!(slq.premature_breakdowns.iter().all(|c| *c <= SLQ.probes));
    let counts = slq.bias_counts();
    assert_eq!(counts.samples, ROWS);
    assert_eq!(
        counts.floored_ritz_values,
        slq.floored_ritz_values.iter().sum::<usize>()
    );
    assert_eq!(
        counts.premature_breakdowns,
        slq.premature_breakdowns.iter().sum::<usize>()
    );
    // What the counts flag: the SLQ value is above the exact one by more than its standard
    // error shows (measured: 5.24 nats on every row, standard error 0, as every probe of a
    // diagonal H runs alike; counts 8 floored Ritz values and 4 early stops per row). 1 nat
    // plus 4 standard errors asserted.
    let exact = flow.log_prob_exact(&x).unwrap().to_vec1::<f32>().unwrap();
    let estimate = slq.log_prob.to_vec1::<f32>().unwrap();
    for i in 0..ROWS {
        let bias = f64::from(estimate[i] - exact[i]);
        assert!(
            bias > 1.0 + 4.0 * slq.std_err[i],
            "row {i}: SLQ {} vs exact {} ± {}",
            estimate[i],
            exact[i],
            slq.std_err[i]
        );
    }

    let flow = ill_conditioned_flow(FloatType::F64);
    let slq = flow
        .log_prob_slq(&points(DType::F64), &SLQ, &mut FlowRng::seed_from_u64(1))
        .unwrap();
    assert!(slq.bias_counts().is_zero(), "{:?}", slq.bias_counts());
    assert_eq!(slq.floored_ritz_values, [0; ROWS]);
}

/// The data-set estimate totals the counts over its chunks (3 chunks of 2 rows here); the
/// exact estimator counts nothing.
#[test]
fn nll_estimate_totals_the_bias_counts_over_chunks() {
    let flow = ill_conditioned_flow(FloatType::F32);
    let data = Dataset::new(points(DType::F32));
    let mut rng = FlowRng::seed_from_u64(2);
    let estimator = NllEstimator::Slq(SLQ);
    let (est, bias) =
        nll_estimate_and_slq_bias_with(&flow, &data, &estimator, 2, &mut rng, |_| Ok(())).unwrap();
    assert_eq!(est.n, ROWS);
    assert_eq!(bias.samples, ROWS);
    assert!(bias.floored_ritz_values >= ROWS && bias.premature_breakdowns >= ROWS);
    let (_, none) =
        nll_estimate_and_slq_bias_with(&flow, &data, &NllEstimator::Exact, 2, &mut rng, |_| Ok(()))
            .unwrap();
    assert!(none.is_zero());
}
