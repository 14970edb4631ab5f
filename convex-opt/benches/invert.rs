//! Inverting the gradient map of a random `Icnn2` potential (d = 43, width 64, depth 10,
//! `Φ = softplus(0)·ICNN + ½‖x‖²` as a freshly initialised CP-Flow block) for 1,024 points on
//! CPU, in f32 and f64: argmin L-BFGS on the flattened batch (the reference's method) against
//! the batched L-BFGS and Newton–CG.
//!
//! Run: `cargo bench -p convex-opt --bench invert`. Besides criterion's timings it prints, per
//! dtype, one timed run of each solver with its max residual, failures, iterations and the
//! speed-up over the flattened path. `CONVEX_OPT_BENCH_N` overrides the batch size.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};
use common::{icnn2_potential, normal_batch};
use convex_opt::{
    BatchedLbfgsParams, BatchedPotential, FlatLbfgsParams, InversionOptions, InversionResult, NewtonCgParams,
    invert_lbfgs_batched, invert_lbfgs_flat, invert_newton_cg,
};
use criterion::{Criterion, criterion_group, criterion_main};

const D: usize = 43;

fn batch_size() -> usize {
    std::env::var("CONVEX_OPT_BENCH_N").ok().and_then(|s| s.parse().ok()).unwrap_or(1024)
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

type Run<'a> = Box<dyn Fn() -> InversionResult + 'a>;

fn solvers<'a, P: BatchedPotential>(pot: &'a P, y: &'a Tensor, opts: &'a InversionOptions) -> Vec<(&'static str, Run<'a>)> {
    vec![
        ("argmin_flat", Box::new(move || invert_lbfgs_flat(pot, y, opts, &FlatLbfgsParams::default()).unwrap())),
        ("batched_lbfgs", Box::new(move || invert_lbfgs_batched(pot, y, opts, &BatchedLbfgsParams::default()).unwrap())),
        ("newton_cg", Box::new(move || invert_newton_cg(pot, y, opts, &NewtonCgParams::default()).unwrap())),
        (
            "batched_lbfgs_no_compaction",
            Box::new(move || {
                invert_lbfgs_batched(pot, y, opts, &BatchedLbfgsParams::default().with_compaction_threshold(0.0)).unwrap()
            }),
        ),
        (
            "newton_cg_no_compaction",
            Box::new(move || invert_newton_cg(pot, y, opts, &NewtonCgParams::default().with_compaction_threshold(0.0)).unwrap()),
        ),
    ]
}

fn bench_dtype(c: &mut Criterion, dtype: DType, name: &str) {
    let n = batch_size();
    // A CP-Flow block at initialisation: softplus(0) = ln 2 times the ICNN, α = softplus(ln(e−1)) = 1.
    let scale = env_f64("CONVEX_OPT_BENCH_SCALE", std::f64::consts::LN_2);
    let alpha = env_f64("CONVEX_OPT_BENCH_ALPHA", 1.0);
    let pot = icnn2_potential(D, 64, 10, dtype, 7, scale, alpha);
    let y = normal_batch(n, D, dtype, 8);
    // f64: the acceptance tolerance scale (1e-9 absolute); f32: the documented f32 default.
    let opts = InversionOptions::default();

    let runs = solvers(&pot, &y, &opts);
    let mut flat_time = None;
    eprintln!("\n== {name}: invert {n} points, d = {D}, Icnn2 width 64 depth 10 ==");
    eprintln!("scale {scale}, alpha {alpha}");
    eprintln!(
        "{:<28} {:>9} {:>10} {:>6} {:>9} {:>9} {:>9} {:>8}",
        "solver", "time [s]", "max resid", "failed", "max iters", "grad rows", "hvp rows", "speed-up"
    );
    for (label, run) in &runs {
        let t0 = Instant::now();
        let res = run();
        let secs = t0.elapsed().as_secs_f64();
        let speedup = match flat_time {
            None => {
                flat_time = Some(secs);
                1.0
            }
            Some(f) => f / secs,
        };
        eprintln!(
            "{:<28} {:>9.3} {:>10.2e} {:>6} {:>9} {:>9} {:>9} {:>7.1}x",
            label,
            secs,
            res.max_residual(),
            res.num_failed(),
            res.iterations.iter().max().copied().unwrap_or(0),
            res.stats.gradient_rows,
            res.stats.hvp_rows,
            speedup
        );
    }

    let mut group = c.benchmark_group(format!("invert_icnn2_d43_{name}"));
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for (label, run) in runs.iter().take(3) {
        group.bench_function(*label, |b| b.iter(|| run()));
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    bench_dtype(c, DType::F32, "f32");
    bench_dtype(c, DType::F64, "f64");
}

criterion_group!(benches, bench);
criterion_main!(benches);
