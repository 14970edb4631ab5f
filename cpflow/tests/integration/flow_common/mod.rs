//! Shared helpers for the integration tests (small models, f64, fixed seeds).
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use cpflow::{FloatType, Flow, FlowConfig, GaussianPrior, PotentialConfig};
use icnn::{ActivationKind, Icnn3Config};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

pub fn icnn3(dim: usize, width: usize, depth: usize) -> PotentialConfig {
    PotentialConfig::Icnn3(Icnn3Config {
        dim,
        width,
        depth,
        activation: ActivationKind::GaussianSoftplus,
        zero_shift: true,
        symm_act_first: true,
    })
}

/// `[ActNorm, CPF, ActNorm, CPF, ActNorm]` in f64 with a standard prior.
pub fn two_block_flow(dim: usize, seed: u64) -> Flow {
    let cfg = FlowConfig::tabular(dim, 2, icnn3(dim, 8, 3))
        .with_float(FloatType::F64)
        .with_init_seed(seed);
    Flow::new(cfg, &Device::Cpu).unwrap()
}

/// Correlated Gaussian-ish data with a nonlinearity, `(n, d)` f64.
pub fn data(n: usize, d: usize, seed: u64) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(n * d);
    for _ in 0..n {
        let z: Vec<f64> = (0..d)
            .map(|_| rng.sample::<f64, _>(StandardNormal))
            .collect();
        for j in 0..d {
            let prev = if j > 0 { z[j - 1] } else { 0.0 };
            v.push(1.5 * z[j] + 0.8 * prev + 0.3 * prev * prev + 0.5);
        }
    }
    Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

pub fn standard_prior() -> GaussianPrior {
    GaussianPrior::standard()
}

/// The gradient of `loss` w.r.t. every variable of `flow` that has one, by name.
pub fn grads_of(flow: &Flow, loss: &Tensor) -> Vec<(String, Vec<f64>)> {
    let g = loss.backward().unwrap();
    flow.named_vars()
        .into_iter()
        .filter_map(|(k, v)| {
            g.get(v.as_tensor())
                .map(|t| (k, t.flatten_all().unwrap().to_vec1::<f64>().unwrap()))
        })
        .collect()
}

/// Euclidean norm of a named gradient list.
pub fn norm(v: &[(String, Vec<f64>)]) -> f64 {
    v.iter()
        .flat_map(|(_, g)| g.iter())
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
}

/// Euclidean norm of the difference of two named gradient lists (same names, same order).
pub fn diff_norm(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)]) -> f64 {
    let mut s = 0.0;
    for ((ka, ga), (kb, gb)) in a.iter().zip(b) {
        assert_eq!(ka, kb);
        s += ga.iter().zip(gb).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    }
    s.sqrt()
}

/// Parameter gradients of the exact NLL and of the CG surrogate (4,000 Rademacher probes per
/// row, CG to 1e-12 in ≤ 10 iterations) at `x`, after initialising `flow` on it.
pub struct GradientPair {
    pub exact: Vec<(String, Vec<f64>)>,
    pub surrogate: Vec<(String, Vec<f64>)>,
    /// CG systems that converged (blocks × rows × probes when all did).
    pub cg_converged: usize,
}

impl GradientPair {
    /// `‖surrogate − exact‖ / ‖exact‖`.
    pub fn relative_error(&self) -> f64 {
        diff_norm(&self.surrogate, &self.exact) / norm(&self.exact)
    }
}

pub fn surrogate_and_exact_gradients(flow: &Flow, x: &Tensor, seed: u64) -> GradientPair {
    flow.initialize(x).unwrap();
    let exact = grads_of(flow, &flow.exact_nll_loss(x).unwrap());
    let params = cpflow::SurrogateParams {
        probes: 4000,
        cg_atol: 1e-12,
        cg_rtol: 0.0,
        cg_max_iters: Some(10),

        ..Default::default()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sur = flow.surrogate_loss(x, &params, &mut rng).unwrap();
    GradientPair {
        surrogate: grads_of(flow, &sur.loss),
        exact,
        cg_converged: sur.cg.converged,
    }
}
