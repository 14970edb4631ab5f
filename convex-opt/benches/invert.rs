//! Inverting the gradient map of a random `Icnn2` potential (d = 43, width 64, depth 10,
//! `Φ = softplus(0)·ICNN + ½‖x‖²` as a freshly initialised CP-Flow block) for 1,024 points on
//! CPU, in f32 and f64: argmin L-BFGS on the flattened batch (the reference's method) against
//! the batched L-BFGS and Newton–CG.
//!
//! Run: `cargo bench -p convex-opt --bench invert`. Besides criterion's timings it prints, per
//! dtype, one timed run of each solver with its max residual, failures, iterations, work and
//! the speed-up over the flattened path (Hager–Zhang line search; the reference's strong-Wolfe
//! variant is timed once too). `CONVEX_OPT_BENCH_N` overrides the batch size,
//! `CONVEX_OPT_BENCH_SCALE` / `CONVEX_OPT_BENCH_ALPHA` the potential.

#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use candle_core::DType;
use common::{icnn2_potential, normal_batch};
use convex_opt::{
    BatchedLbfgsParams, FlatLbfgsParams, InversionOptions, InversionResult, LineSearch,
    NewtonCgParams, invert_lbfgs_batched, invert_lbfgs_flat, invert_newton_cg,
};
use criterion::{Criterion, criterion_group, criterion_main};

const D: usize = 43;

fn batch_size() -> usize {
    std::env::var("CONVEX_OPT_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024)
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

type Run<'a> = Box<dyn Fn() -> InversionResult + 'a>;

fn time_it(label: &str, run: &Run<'_>, flat_secs: Option<f64>) -> (f64, InversionResult) {
    let t0 = Instant::now();
    let res = run();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{:<28} {:>9.3} {:>10.2e} {:>6} {:>9} {:>9} {:>9} {:>7.1}x",
        label,
        secs,
        res.max_residual(),
        res.num_failed(),
        res.iterations.iter().max().copied().unwrap_or(0),
        res.stats.gradient_rows,
        res.stats.hvp_rows,
        flat_secs.map_or(1.0, |f| f / secs)
    );
    (secs, res)
}

fn bench_dtype(c: &mut Criterion, dtype: DType, name: &str) {
    let n = batch_size();
    // Default: a CP-Flow block at initialisation, softplus(0) = ln 2 times the ICNN and
    // α = softplus(ln(e − 1)) = 1. CONVEX_OPT_BENCH_SCALE / _ALPHA make the map more nonlinear.
    let scale = env_f64("CONVEX_OPT_BENCH_SCALE", std::f64::consts::LN_2);
    let alpha = env_f64("CONVEX_OPT_BENCH_ALPHA", 1.0);
    let pot = icnn2_potential(D, 64, 10, dtype, 7, scale, alpha);
    let y = normal_batch(n, D, dtype, 8);
    // The flattened path stops when the largest residual reaches the (uniform) tolerance, and
    // usually overshoots it; the batched solvers then get the flattened path's achieved max
    // residual as their tolerance, so they are timed at equal or smaller max error.
    let tol = if dtype == DType::F64 { 1e-9 } else { 5e-5 };
    let flat_opts = InversionOptions::default()
        .with_abs_tolerance(tol)
        .with_rel_tolerance(0.0);
    let flat_params = FlatLbfgsParams::default();
    let flat_run: Run<'_> =
        Box::new(|| invert_lbfgs_flat(&pot, &y, &flat_opts, &flat_params).unwrap());
    // The reference's strong-Wolfe search stalls at the rounding level of the summed loss and
    // then spends ~25 evaluations per iteration; capped at 200 iterations (250 evaluations).
    let strong_wolfe = FlatLbfgsParams::default().with_line_search(LineSearch::MoreThuente);
    let sw_opts = flat_opts.clone().with_max_iterations(200);
    let flat_sw_run: Run<'_> =
        Box::new(|| invert_lbfgs_flat(&pot, &y, &sw_opts, &strong_wolfe).unwrap());

    eprintln!(
        "\n== {name}: invert {n} points, d = {D}, Icnn2 width 64 depth 10, scale {scale}, alpha {alpha} =="
    );
    eprintln!(
        "{:<28} {:>9} {:>10} {:>6} {:>9} {:>9} {:>9} {:>8}",
        "solver",
        "time [s]",
        "max resid",
        "failed",
        "max iters",
        "grad rows",
        "hvp rows",
        "speed-up"
    );
    let (flat_secs, flat_res) = time_it("argmin_flat (Hager-Zhang)", &flat_run, None);
    time_it("argmin_flat (strong Wolfe)*", &flat_sw_run, Some(flat_secs));
    let batched_tol = flat_res.max_residual().min(tol);
    let opts = InversionOptions::default()
        .with_abs_tolerance(batched_tol)
        .with_rel_tolerance(0.0);
    eprintln!("batched solvers at tolerance {batched_tol:.2e}");
    let lbfgs = BatchedLbfgsParams::default();
    let lbfgs_nc = BatchedLbfgsParams::default().with_compaction_threshold(0.0);
    let newton = NewtonCgParams::default();
    let newton_nc = NewtonCgParams::default().with_compaction_threshold(0.0);
    let runs: Vec<(&str, Run<'_>)> = vec![
        (
            "batched_lbfgs",
            Box::new(|| invert_lbfgs_batched(&pot, &y, &opts, &lbfgs).unwrap()),
        ),
        (
            "newton_cg",
            Box::new(|| invert_newton_cg(&pot, &y, &opts, &newton).unwrap()),
        ),
        (
            "batched_lbfgs_no_compaction",
            Box::new(|| invert_lbfgs_batched(&pot, &y, &opts, &lbfgs_nc).unwrap()),
        ),
        (
            "newton_cg_no_compaction",
            Box::new(|| invert_newton_cg(&pot, &y, &opts, &newton_nc).unwrap()),
        ),
    ];
    for (label, run) in &runs {
        time_it(label, run, Some(flat_secs));
    }

    let mut group = c.benchmark_group(format!("invert_icnn2_d43_{name}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("argmin_flat", |b| b.iter(&flat_run));
    for (label, run) in &runs {
        group.bench_function(*label, |b| b.iter(run));
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    bench_dtype(c, DType::F32, "f32");
    bench_dtype(c, DType::F64, "f64");
}

criterion_group!(benches, bench);
criterion_main!(benches);
