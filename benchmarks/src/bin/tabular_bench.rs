//! Side-by-side harness: the reference's tabular configuration (`Icnn2` width 64 depth 10, one
//! block between ActNorms, batch 1,024, f32, Adam 1e-3, CG atol 1e-3) on synthetic
//! Gaussian-mixture data. Prints one JSON document: per d, the warm-up, then at initialisation
//! and after `--train-steps` training steps (same weights for every solver): median train-step
//! time and mean CG iterations, exact and SLQ evaluation time per 1,000 points, inversion time
//! and max `|f(x) − y|` for 1,024 points, and the process's peak resident memory.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p benchmarks --bin tabular_bench -- --dims 6,43
//! ```

use anyhow::Result;
use benchmarks::{Stopwatch, gaussian_mixture, median};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use cpflow::{
    CgPreconditioner, Dataset, Flow, FlowConfig, InverseParams, LrSchedule, PotentialConfig,
    RunOptions, SlqConfig, SurrogateParams, TrainConfig, Trainer,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

/// The `cpflow` binary's allocator (`cpflow::allocator`), so both measure the same code.
#[global_allocator]
static GLOBAL: cpflow::allocator::MiMalloc = cpflow::allocator::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "CP-Flow tabular benchmark (prints JSON)")]
struct Args {
    /// Data dimensions.
    #[arg(long, value_delimiter = ',', default_value = "6,43,63")]
    dims: Vec<usize>,
    /// cpu, cuda or cuda-plain (`benchmarks::open_device`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Timed train steps per measurement.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Training steps between the "init" and the "trained" measurements.
    #[arg(long, default_value_t = 200)]
    train_steps: usize,
    /// Points for the exact/SLQ evaluation timings.
    #[arg(long, default_value_t = 1000)]
    eval_points: usize,
    /// Points to invert.
    #[arg(long, default_value_t = 1024)]
    invert_points: usize,
    /// ICNN width and depth.
    #[arg(long, default_value_t = 64)]
    width: usize,
    #[arg(long, default_value_t = 10)]
    depth: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Preconditioner of the training surrogate's CG solves: none (the reference) or
    /// mean-hessian.
    #[arg(long, default_value = "none", value_parser = str::parse::<CgPreconditioner>)]
    cg_preconditioner: CgPreconditioner,
}

fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn sync(dev: &Device) -> Result<()> {
    dev.synchronize()?;
    Ok(())
}

/// Time `steps` single training steps; returns (median seconds, mean CG iterations).
fn time_steps(
    trainer: &mut Trainer,
    data: &Dataset,
    steps: usize,
    dev: &Device,
) -> Result<(f64, f64)> {
    // One trainer call for all steps (a call per step would also time the trainer's
    // validation of the whole data set).
    let (times, cg) = benchmarks::ours::timed_train_steps(trainer, data, steps, dev)?;
    Ok((median(&times), cg))
}

fn measure(
    trainer: &mut Trainer,
    data: &Dataset,
    x_eval: &Tensor,
    x_inv: &Tensor,
    args: &Args,
    dev: &Device,
) -> Result<Value> {
    let (step_s, cg_iters) = time_steps(trainer, data, args.steps, dev)?;
    let flow: &Flow = trainer.flow();
    let per_1000 = 1000.0 / args.eval_points as f64;

    let sw = Stopwatch::start();
    let lp_exact = flow.log_prob_exact(x_eval)?;
    sync(dev)?;
    let exact_s = sw.seconds() * per_1000;

    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x51);
    let sw = Stopwatch::start();
    let lp_slq = flow
        .log_prob_slq(
            x_eval,
            &SlqConfig {
                probes: 1,
                steps: 10,
            },
            &mut rng,
        )?
        .log_prob;
    sync(dev)?;
    let slq_s = sw.seconds() * per_1000;
    let nll_exact = -lp_exact
        .to_dtype(DType::F64)?
        .mean_all()?
        .to_scalar::<f64>()?;
    let nll_slq = -lp_slq
        .to_dtype(DType::F64)?
        .mean_all()?
        .to_scalar::<f64>()?;

    let (z, _) = flow.transform(x_inv)?;
    let z = z.detach();
    let sw = Stopwatch::start();
    let inv = flow.inverse_with(&z, &InverseParams::default())?;
    sync(dev)?;
    let inv_s = sw.seconds();
    let (z_back, _) = flow.transform(&inv.x)?;
    let max_err = (z_back - &z)?
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    let max_x_err = (&inv.x - x_inv)?
        .abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;

    Ok(json!({
        "train_step_median_s": step_s,
        "cg_iterations_mean": cg_iters,
        "exact_eval_s_per_1000": exact_s,
        "slq_eval_s_per_1000": slq_s,
        "nll_exact": nll_exact,
        "nll_slq": nll_slq,
        "invert_s": inv_s,
        "invert_points": args.invert_points,
        "invert_max_abs_f_err": max_err,
        "invert_max_abs_x_err": max_x_err,
        "invert_all_converged": inv.report.all_converged(),
        "invert_failed": inv.report.num_failed(),
        "invert_max_iterations": inv.report.max_iterations(),
    }))
}

fn bench_dim(d: usize, args: &Args, dev: &Device) -> Result<Value> {
    let mut rng = StdRng::seed_from_u64(args.seed + d as u64);
    let n_train = 20_000;
    let xs = gaussian_mixture(
        n_train + args.eval_points + args.invert_points,
        d,
        8,
        &mut rng,
    );
    let all = Tensor::from_vec(
        xs,
        (n_train + args.eval_points + args.invert_points, d),
        dev,
    )?
    .to_dtype(DType::F32)?;
    let train = all.narrow(0, 0, n_train)?;
    let x_eval = all.narrow(0, n_train, args.eval_points)?;
    let x_inv = all.narrow(0, n_train + args.eval_points, args.invert_points)?;
    let data = Dataset::new(train);

    let pot = PotentialConfig::Icnn2(icnn::Icnn2Config {
        dim: d,
        width: args.width,
        depth: args.depth,
        ..Default::default()
    });
    let cfg = FlowConfig::tabular(d, 1, pot).with_init_seed(args.seed);
    let flow = Flow::new(cfg, dev)?;
    let params = flow.num_parameters();
    let tc = TrainConfig {
        batch_size: 1024,
        max_iterations: usize::MAX,
        val_every: 0,
        train_slq_every: 0,
        log_every: 0,
        early_stopping: None,
        lr_schedule: LrSchedule::Constant,
        seed: args.seed,
        surrogate: SurrogateParams {
            preconditioner: args.cg_preconditioner,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut trainer = Trainer::new(flow, tc)?.with_options(RunOptions::default());

    // Warm-up: ActNorm init, first kernels (CUDA JIT), allocator.
    let sw = Stopwatch::start();
    trainer.fit_steps(&data, None, 2)?;
    sync(dev)?;
    let warmup_s = sw.seconds();

    let init = measure(&mut trainer, &data, &x_eval, &x_inv, args, dev)?;
    let sw = Stopwatch::start();
    trainer.fit_steps(&data, None, args.train_steps)?;
    sync(dev)?;
    let train_s = sw.seconds();
    let trained = measure(&mut trainer, &data, &x_eval, &x_inv, args, dev)?;
    Ok(json!({
        "d": d,
        "parameters": params,
        "warmup_s": warmup_s,
        "init": init,
        "train_steps": args.train_steps,
        "train_steps_wall_s": train_s,
        "trained": trained,
    }))
}

fn main() -> Result<()> {
    // SAFETY: first thing in `main`, before any thread is spawned: nothing else reads or
    // writes the environment.
    let candle_threads = unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    // The measured work runs on rayon's pool, as in the `cpflow` binary.
    cpflow::cpu_threads::run_on_pool(move || -> Result<()> {
        let args = Args::parse();
        let dev = benchmarks::open_device(&args.device)?;
        let mut results = Vec::new();
        for &d in &args.dims {
            results.push(bench_dim(d, &args, &dev)?);
        }
        let out = json!({
            "benchmark": "cpflow tabular (Icnn2, 1 block, batch 1024, f32, CG atol 1e-3)",
            "device": args.device,
            "cg_preconditioner": args.cg_preconditioner,
            "rayon_threads": std::env::var("RAYON_NUM_THREADS").ok(),
            "candle_elementwise_threads": candle_threads,
            "peak_rss_bytes": peak_rss_bytes(),
            "results": results,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(())
    })
}
