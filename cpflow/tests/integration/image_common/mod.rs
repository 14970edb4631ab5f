//! Helpers shared by the image-flow tests: dense Jacobians by central differences, and the
//! small two-scale flow configuration they share.

#![allow(dead_code)]

use candle_core::{Device, Tensor};
use cpflow::image::{ImageFlowConfig, MultiscaleConfig};
use cpflow::{FloatType, PotentialConfig};
use icnn::{Icnn2Config, ImageShape};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Central-difference step for f64 Jacobians: truncation error O(h²·|f'''|) ≈ 1e-10 and
/// rounding error O(ε/h) ≈ 1e-11 for the O(1)-curvature maps tested here.
pub const FD_STEP: f64 = 1e-5;

/// Host values of a (1, D) or (B, D) tensor, row-major (the device tests' helper).
pub(crate) use crate::device_common::host;

/// The Jacobian `∂f/∂x` (rows = outputs) of `f: ℝ^D → ℝ^M` at `x` by central differences of
/// step [`FD_STEP`], all `2·D` displaced points evaluated as one `(2D, D)` f64 batch of `f`:
/// the maps tested (initialised layers and flows) treat rows independently, so one pass
/// gives what `2·D` passes of one row gave (each a candle graph; the image tests spent most
/// of their time there).
pub fn fd_jacobian(f: &dyn Fn(&Tensor) -> Tensor, x: &[f64]) -> DMatrix<f64> {
    let d = x.len();
    let mut points = Vec::with_capacity(2 * d * d);
    for j in 0..d {
        for step in [FD_STEP, -FD_STEP] {
            let mut p = x.to_vec();
            p[j] += step;
            points.extend(p);
        }
    }
    let out = host(&f(
        &Tensor::from_vec(points, (2 * d, d), &Device::Cpu).unwrap()
    ));
    assert_eq!(out.len() % (2 * d), 0, "f must map rows to rows");
    let m = out.len() / (2 * d);
    DMatrix::from_fn(m, d, |i, j| {
        (out[2 * j * m + i] - out[(2 * j + 1) * m + i]) / (2.0 * FD_STEP)
    })
}

/// `log |det J|` by LU.
pub fn log_abs_det(j: &DMatrix<f64>) -> f64 {
    j.clone().lu().determinant().abs().ln()
}

/// `n × d` uniform values in `[lo, hi)` (seeded).
pub fn uniform_rows(n: usize, d: usize, lo: f64, hi: f64, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f64> = (0..n * d)
        .map(|_| lo + (hi - lo) * rng.random::<f64>())
        .collect();
    Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
}

/// Largest absolute entry of `a − b`.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    host(a)
        .iter()
        .zip(host(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// The convolutional ICNN of the reference, small.
pub fn conv() -> PotentialConfig {
    PotentialConfig::ConvIcnn(icnn::ConvIcnnConfig {
        width: 4,
        depth: 2,
        ..Default::default()
    })
}

/// A small dense ICNN potential.
pub fn dense() -> PotentialConfig {
    PotentialConfig::Icnn2(Icnn2Config {
        width: 8,
        depth: 2,
        ..Default::default()
    })
}

/// Two scales on 2×4×4 (D = 32): logit, ActNorms, blocks, squeeze, optional factor-out.
pub fn small_config(
    potential: PotentialConfig,
    factor_out: bool,
    float: FloatType,
) -> ImageFlowConfig {
    let ms = MultiscaleConfig {
        image: ImageShape::new(2, 4, 4),
        nblocks: vec![1, 2],
        logit_alpha: Some(0.05),
        factor_out,
        potential,
        float,
        init_seed: 3,
        ..MultiscaleConfig::mnist()
    };
    ImageFlowConfig::multiscale(&ms).unwrap()
}
