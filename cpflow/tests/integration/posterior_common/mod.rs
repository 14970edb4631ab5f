//! Shared helpers for the posterior tests: tiny f64 posteriors with every context path
//! active, fixed seeds.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

#[cfg(feature = "vae")]
mod made_up_vae_data;
#[cfg(feature = "vae")]
pub use made_up_vae_data::made_up_caltech_data;

/// A `(n, m)` f64 tensor of N(0, scale²) draws.
pub fn normal(n: usize, m: usize, scale: f64, seed: u64) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let v: Vec<f64> = (0..n * m)
        .map(|_| scale * rng.sample::<f64, _>(StandardNormal))
        .collect();
    Tensor::from_vec(v, (n, m), &Device::Cpu).unwrap()
}

/// The row `r` repeated `n` times.
pub fn repeat_row(r: &[f64], n: usize) -> Tensor {
    Tensor::from_vec(r.to_vec(), (1, r.len()), &Device::Cpu)
        .unwrap()
        .broadcast_as((n, r.len()))
        .unwrap()
        .contiguous()
        .unwrap()
}

/// `[AN, CPF, AN, …, CPF, AN]` (scalar ActNorms), PICNN width 8 depth 3, f64. The PICNN
/// gate layers (zero at init in the reference) and `w₁` are randomised so that the context
/// reaches every gate and the blocks are clearly nonlinear.
pub fn tiny_posterior(
    d: usize,
    dc: usize,
    blocks: usize,
    seed: u64,
) -> (VarMap, AmortizedPosterior) {
    let vm = VarMap::new();
    let cfg = PosteriorConfig::reference_vae(d, dc)
        .with_blocks(blocks)
        .with_picnn(8, 3)
        .with_init_seed(seed);
    let q = AmortizedPosterior::new(&vm, "q", &cfg, &Device::Cpu).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 1000);
    for (name, var) in q.named_vars() {
        if name.contains("Wczs") || name.contains("Wcxs") {
            let n = var.elem_count();
            let v: Vec<f64> = (0..n)
                .map(|_| 0.4 * rng.sample::<f64, _>(StandardNormal))
                .collect();
            let t = Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap();
            var.set(&t).unwrap();
        } else if name.ends_with("w1") {
            var.set(&Tensor::new(&[1.0f64], &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    (vm, q)
}

pub fn zeros(n: usize, m: usize) -> Tensor {
    Tensor::zeros((n, m), DType::F64, &Device::Cpu).unwrap()
}

pub fn to_vec(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

pub fn standard_normal_log_prob(z: &Tensor) -> Tensor {
    cpflow::GaussianPrior::standard().log_prob(z).unwrap()
}
