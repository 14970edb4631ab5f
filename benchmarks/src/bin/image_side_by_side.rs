//! The image flow's training step (`configs/mnist.toml`: ConvICNN(64, 3), blocks 6-6-6, batch
//! 64, f32, 2.8 M parameters) beside the authors' `train_img.py` model of the same layout, same
//! CPU, same session, same thread count: writes a Markdown table of step times, CG iterations
//! and the ratio, and the raw JSON (issue 11's train-step comparison).
//!
//! ```text
//! cargo build --release -p benchmarks --bin image_side_by_side
//! target/release/image_side_by_side --threads 2 --warm 2 --steps 8 --out docs/results/image-step-time
//! ```
//! Ours runs [`cpflow::image::run_image_training`] itself (the trainer a user runs) for
//! `warm + steps` iterations with a metrics line per step, then reads the step times and CG
//! counts back from `metrics.jsonl`; the first step (data-dependent initialisation) is in the
//! warm-up. Our cores used over the timed steps (process CPU seconds per wall second) come
//! from a [`benchmarks::CpuTrace`] of the run, between the metrics lines' times of the last
//! warm-up step and the last timed step. The reference side runs `benchmarks/scripts/ref_img_step.py` (imports the authors'
//! code from `--ref`, default `~/cpflow-ref`; needs a Python with PyTorch, `--python`).
//! `--ours-only` skips it. Without `--out` the results go under `target/`:
//! the results page (kept by hand, a section a run) is written only when `--out` names it.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Parser;
use cpflow::image::{
    ImageExperimentConfig, ImageMetricsRecord, ImageRunOptions, load_image_data, run_image_training,
};
use serde_json::json;

/// The `cpflow` binary's allocator (`cpflow::allocator`), so both measure the same code.
#[global_allocator]
static GLOBAL: cpflow::allocator::MiMalloc = cpflow::allocator::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Image-flow training step beside the authors' train_img.py (CPU)")]
struct Args {
    /// Threads for both sides.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Untimed steps (ours: the first one initialises the flow).
    #[arg(long, default_value_t = 2)]
    warm: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Our model and training settings (batch size, CG tolerances).
    #[arg(long, default_value = "configs/mnist.toml")]
    config: PathBuf,
    /// Python with PyTorch.
    #[arg(long, default_value = "~/torch-venv/bin/python")]
    python: String,
    /// The exported authors' repository.
    #[arg(long, default_value = "~/cpflow-ref")]
    r#ref: String,
    /// Scratch directory (our run's metrics).
    #[arg(long, default_value = "target/image-side-by-side")]
    work_dir: PathBuf,
    /// Output prefix (`.md` and `.json` are added).
    ///
    /// Default: `target/image-step-time` (`target/image-step-time-ours-only` with `--ours-only`); the
    /// results page `docs/results/image-step-time` (or a machine's copy under `docs/results/<machine>/`)
    /// is written only when named here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the reference.
    #[arg(long)]
    ours_only: bool,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn ours(a: &Args) -> Result<(serde_json::Value, ImageExperimentConfig)> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let mut cfg: ImageExperimentConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", a.config.display()))?;
    // Only the steps are measured: a tiny validation and test score at the end.
    cfg.data.n_val = 8;
    let t = &mut cfg.train;
    t.epochs = None;
    t.max_minutes = None;
    t.max_iterations = Some(a.warm + a.steps);
    t.log_every = 1;
    t.val_every = 0;
    t.train_slq_every = 0;
    t.checkpoint_every = 0;
    t.test.images = Some(2);
    t.test.exact_images = 0;
    cfg.validate()?;
    let data = load_image_data(&cfg.data)?;
    let flow = cfg.flow_config()?;
    let dir = a.work_dir.join("ours");
    // The run's clock (`elapsed_s`) starts within microseconds of the trace's.
    let trace = benchmarks::CpuTrace::start(std::time::Duration::from_millis(10));
    let report = run_image_training(
        &flow,
        &cfg.train,
        &data,
        &Device::Cpu,
        &ImageRunOptions {
            out_dir: Some(dir.clone()),
            resume: false,
            progress_bar: false,
            interrupt: None,
            training_ended: None,
        },
    )?;
    let cpu = trace.finish();
    let lines = std::fs::read_to_string(dir.join("metrics.jsonl"))?;
    let recs: Vec<ImageMetricsRecord> = lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()
        .context("parsing our metrics.jsonl")?;
    let timed: Vec<&ImageMetricsRecord> = recs.iter().filter(|r| r.iteration > a.warm).collect();
    if timed.len() != a.steps {
        bail!(
            "expected {} timed metrics lines, found {}",
            a.steps,
            timed.len()
        );
    }
    let times: Vec<f64> = timed.iter().map(|r| r.step_s).collect();
    let warm_end = recs
        .iter()
        .find(|r| r.iteration == a.warm)
        .map_or(0.0, |r| r.elapsed_s);
    let cores_used = timed
        .last()
        .and_then(|last| cpu.cores_used(warm_end, last.elapsed_s));
    let cg_mean: Vec<f64> = timed.iter().map(|r| r.cg_iterations).collect();
    let cg_max: Vec<f64> = timed.iter().map(|r| r.cg_max_iterations as f64).collect();
    Ok((
        json!({
            "parameters": report.parameters,
            "cp_flow_blocks": report.cp_flow_blocks,
            "step_s_median": benchmarks::median(&times),
            "step_s_mean": mean(&times),
            "step_s": times,
            "cores_used_steps": cores_used,
            "cg_iterations_mean_per_system": mean(&cg_mean),
            "cg_iterations_max_per_step_mean": mean(&cg_max),
            "loss": timed.iter().map(|r| r.loss).collect::<Vec<_>>(),
        }),
        cfg,
    ))
}

fn reference(a: &Args, batch: usize, nblocks: &[usize]) -> Result<serde_json::Value> {
    let blocks = nblocks
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("-");
    let mut c = benchmarks::python_command(&a.python, a.threads);
    c.arg("benchmarks/scripts/ref_img_step.py")
        .arg("--ref")
        .arg(benchmarks::expand_home(&a.r#ref))
        .args(["--steps", &a.steps.to_string()])
        .args(["--warmup", &a.warm.to_string()])
        .args(["--threads", &a.threads.to_string()])
        .args(["--batch", &batch.to_string()])
        .args(["--nblocks", &blocks]);
    benchmarks::stdout_json(c)
}

fn main() -> Result<()> {
    let a = Args::parse();
    // SAFETY: set before any thread is spawned.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", a.threads.to_string()) };
    // SAFETY: as above, no thread has been spawned yet: nothing else reads or writes
    // the environment.
    unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    // The measured work runs on rayon's pool, as in the `cpflow` binary.
    cpflow::cpu_threads::run_on_pool(move || -> Result<()> {
        let load_start = benchmarks::load_average();
        let (o, cfg) = ours(&a)?;
        let theirs = if a.ours_only {
            None
        } else {
            Some(reference(&a, cfg.train.batch_size, &cfg.model.nblocks)?)
        };
        let load_end = benchmarks::load_average();
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let our_step = f(&o, "step_s_median");
        let row = format!(
            "| {} / {} | {:.3} | {} | {} | {:.2} mean, {:.1} max | {} | {} |",
            o["parameters"],
            theirs
                .as_ref()
                .map_or("-".into(), |t| t["parameters"].to_string()),
            our_step,
            theirs
                .as_ref()
                .map_or("-".into(), |t| format!("{:.3}", f(t, "step_s_median"))),
            theirs.as_ref().map_or("-".into(), |t| format!(
                "{:.2}×",
                f(t, "step_s_median") / our_step
            )),
            f(&o, "cg_iterations_mean_per_system"),
            f(&o, "cg_iterations_max_per_step_mean"),
            theirs.as_ref().map_or("-".into(), |t| format!(
                "{:.2} (batch-wide)",
                f(t, "cg_iterations_per_block_call")
            )),
            o["cores_used_steps"]
                .as_f64()
                .map_or("-".into(), |c| format!("{c:.2}")),
        );
        let md = format!(
            "# Image-flow training step: ours vs the authors' train_img.py (MNIST, CPU)\n\n\
         Same CPU, same session, {} threads each, load average {load_start:.2} → {load_end:.2}. \
         Model: `{}` (ConvICNN width {}, depth {}, blocks {:?}, batch {}, f32, CG atol = rtol \
         = 1e-3) and theirs built by `train_img.cpflow_block_fn` + `MultiscaleFlow` with the \
         same layout. A step: loss, backward, gradient clipping, Adam, EMA. {} untimed then {} \
         timed steps from initialisation; median step. CG iterations: ours per system (image × \
         block; mean, and the per-step largest), theirs per block call (their CG iterates the \
         whole batch until every system meets the tolerance, so it is comparable to our \
         largest). Speed-up = their step / ours. Our cores used: process CPU seconds per wall \
         second over the timed steps.\n\n\
         | parameters ours / theirs | our step (s) | their step (s) | speed-up | our CG its | their CG its | our cores used |\n\
         |---|---|---|---|---|---|---|\n{row}\n\n\
         Command: `cargo build --release -p benchmarks --bin image_side_by_side && \
         target/release/image_side_by_side --threads {} --warm {} --steps {}`.\n",
            a.threads,
            a.config.display(),
            cfg.model.width,
            cfg.model.depth,
            cfg.model.nblocks,
            cfg.train.batch_size,
            a.warm,
            a.steps,
            a.threads,
            a.warm,
            a.steps,
        );
        let out = benchmarks::output_prefix::output_prefix(
            a.out.clone(),
            a.ours_only,
            std::path::Path::new("docs/results/image-step-time"),
        );
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out.with_extension("md"), &md)?;
        std::fs::write(
            out.with_extension("json"),
            serde_json::to_string_pretty(&json!({ "ours": o, "reference": theirs }))?,
        )?;
        print!("{md}");
        Ok(())
    })
}
