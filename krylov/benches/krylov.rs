//! Criterion benchmarks at B = 1024, d = 43 on CPU: CG and Lanczos for each backend
//! (nalgebra, faer, candle with feature `candle`), and per-system versus batch-global
//! (reference) CG stopping on a batch with spread condition numbers.
//!
//! Run: `cargo bench -p krylov --features candle -- --warm-up-time 1 --measurement-time 3`.
//! Before the criterion runs, the bench prints (once, to stderr) the operator applications and
//! wall times of per-system vs batch-global stopping, and their ratio, measured in one run.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use faer::Mat;
use krylov::{
    BatchOperator, BatchVectors, CgParams, CgStopping, DenseFaerOperator, DenseNalgebraOperator,
    LanczosParams, cg, lanczos,
};
use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

const B: usize = 1024;
const D: usize = 43;
/// Condition numbers log-uniform in [1, MAX_COND] across the batch.
const MAX_COND: f64 = 1e4;

/// `Q diag(λ) Qᵀ` with a random orthogonal Q and λ log-uniform in [1, cond] (both ends included).
fn random_spd(rng: &mut StdRng, d: usize, cond: f64) -> Mat<f64> {
    let g = Mat::<f64>::from_fn(d, d, |_, _| rng.sample(StandardNormal));
    let q = g.qr().compute_Q();
    let eigs: Vec<f64> = (0..d)
        .map(|k| match k {
            0 => 1.0,
            1 => cond,
            _ => cond.powf(rng.random::<f64>()),
        })
        .collect();
    let qd = Mat::<f64>::from_fn(d, d, |i, k| q[(i, k)] * eigs[k]);
    let h = &qd * q.transpose();
    Mat::from_fn(d, d, |i, j| 0.5 * (h[(i, j)] + h[(j, i)]))
}

struct Problem {
    mats: Vec<Mat<f64>>,
    rhs: Vec<f64>,
}

fn problem() -> Problem {
    let mut rng = StdRng::seed_from_u64(2024);
    let mats = (0..B).map(|_| {
        let c = MAX_COND.powf(rng.random::<f64>());
        random_spd(&mut rng, D, c)
    });
    let mats: Vec<_> = mats.collect();
    let rhs = (0..B * D).map(|_| rng.sample(StandardNormal)).collect();
    Problem { mats, rhs }
}

/// The reference's stopping test on the updated residual (no true-residual confirmation),
/// so that the per-system vs batch-global comparison measures the iteration alone.
fn cg_params(stopping: CgStopping) -> CgParams {
    CgParams::default()
        .with_rtol(1e-6)
        .with_max_iters(10 * D)
        .with_stopping(stopping)
        .with_confirm_with_true_residual(false)
}

fn lanczos_params() -> LanczosParams {
    LanczosParams::default()
        .with_steps(10)
        .with_reorthogonalize(true)
}

fn nalgebra_setup(p: &Problem) -> (DenseNalgebraOperator<f64>, DMatrix<f64>) {
    let op = DenseNalgebraOperator::new(
        p.mats
            .iter()
            .map(|m| DMatrix::from_fn(D, D, |i, j| m[(i, j)]))
            .collect(),
    )
    .expect("square matrices");
    (op, DMatrix::from_column_slice(D, B, &p.rhs))
}

fn faer_setup(p: &Problem) -> (DenseFaerOperator<f64>, Mat<f64>) {
    let op = DenseFaerOperator::new(p.mats.clone()).expect("square matrices");
    (op, Mat::from_fn(D, B, |i, j| p.rhs[j * D + i]))
}

#[cfg(feature = "candle")]
fn candle_setup(p: &Problem) -> (krylov::DenseTensorOperator, candle_core::Tensor) {
    use candle_core::{Device, Tensor};
    let data: Vec<f64> = p
        .mats
        .iter()
        .flat_map(|m| (0..D * D).map(move |k| m[(k / D, k % D)]))
        .collect();
    let h = Tensor::from_vec(data, (B, D, D), &Device::Cpu).expect("tensor");
    let b = Tensor::from_vec(p.rhs.clone(), (B, D), &Device::Cpu).expect("tensor");
    (krylov::DenseTensorOperator::new(h).expect("(B, d, d)"), b)
}

/// One timed run of each stopping rule on the same problem; prints applications and times.
fn report_stopping<V: BatchVectors, Op: BatchOperator<V>>(name: &str, op: &Op, b: &V) {
    let t0 = Instant::now();
    let per = cg(op, b, &cg_params(CgStopping::PerSystem)).expect("cg");
    let t_per = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let glob = cg(op, b, &cg_params(CgStopping::BatchGlobal)).expect("cg");
    let t_glob = t0.elapsed().as_secs_f64();
    let (a_per, a_glob) = (per.total_applications(), glob.total_applications());
    let max_it = per.iterations.iter().max().copied().unwrap_or(0);
    let min_it = per.iterations.iter().min().copied().unwrap_or(0);
    let conv_per = per.converged.iter().filter(|c| **c).count();
    let conv_glob = glob.converged.iter().filter(|c| **c).count();
    eprintln!(
        "[{name}] B={B} d={D} cond∈[1,{MAX_COND:e}] rtol=1e-6: per-system: {a_per} applications \
         ({} calls, iterations {min_it}..{max_it}, {conv_per}/{B} converged) in {:.1} ms; \
         batch-global: {a_glob} applications ({} calls, {conv_glob}/{B} converged) in {:.1} ms; \
         ratio global/per-system: applications {:.2}x, time {:.2}x",
        per.operator_calls,
        t_per * 1e3,
        glob.operator_calls,
        t_glob * 1e3,
        a_glob as f64 / a_per as f64,
        t_glob / t_per
    );
}

fn benches(c: &mut Criterion) {
    let p = problem();
    let (na_op, na_b) = nalgebra_setup(&p);
    let (fa_op, fa_b) = faer_setup(&p);
    report_stopping("nalgebra", &na_op, &na_b);
    report_stopping("faer", &fa_op, &fa_b);
    #[cfg(feature = "candle")]
    let (ca_op, ca_b) = candle_setup(&p);
    #[cfg(feature = "candle")]
    report_stopping("candle", &ca_op, &ca_b);

    let mut g = c.benchmark_group("cg_per_system");
    g.sample_size(10);
    g.bench_function("nalgebra", |bn| {
        bn.iter(|| black_box(cg(&na_op, &na_b, &cg_params(CgStopping::PerSystem))))
    });
    g.bench_function("faer", |bn| {
        bn.iter(|| black_box(cg(&fa_op, &fa_b, &cg_params(CgStopping::PerSystem))))
    });
    #[cfg(feature = "candle")]
    g.bench_function("candle", |bn| {
        bn.iter(|| black_box(cg(&ca_op, &ca_b, &cg_params(CgStopping::PerSystem))))
    });
    g.finish();

    let mut g = c.benchmark_group("cg_batch_global");
    g.sample_size(10);
    g.bench_function("nalgebra", |bn| {
        bn.iter(|| black_box(cg(&na_op, &na_b, &cg_params(CgStopping::BatchGlobal))))
    });
    g.bench_function("faer", |bn| {
        bn.iter(|| black_box(cg(&fa_op, &fa_b, &cg_params(CgStopping::BatchGlobal))))
    });
    #[cfg(feature = "candle")]
    g.bench_function("candle", |bn| {
        bn.iter(|| black_box(cg(&ca_op, &ca_b, &cg_params(CgStopping::BatchGlobal))))
    });
    g.finish();

    let mut g = c.benchmark_group("lanczos_m10_reorth");
    g.sample_size(10);
    g.bench_function("nalgebra", |bn| {
        bn.iter(|| black_box(lanczos(&na_op, &na_b, &lanczos_params())))
    });
    g.bench_function("faer", |bn| {
        bn.iter(|| black_box(lanczos(&fa_op, &fa_b, &lanczos_params())))
    });
    #[cfg(feature = "candle")]
    g.bench_function("candle", |bn| {
        bn.iter(|| black_box(lanczos(&ca_op, &ca_b, &lanczos_params())))
    });
    g.finish();
}

criterion_group!(krylov_benches, benches);
criterion_main!(krylov_benches);
