//! Side by side with the authors' PyTorch code, same data, same session, same thread count:
//! for each `d`, at initialisation and after `--pretrain` steps, runs the reference (through
//! `benchmarks/scripts/ref_peak_memory.py` around `ref_tabular.py`) and then ours with the
//! same protocol, and writes a Markdown table of ratios and the raw JSON.
//!
//! ```text
//! cargo build --release -p benchmarks --bin side_by_side
//! target/release/side_by_side --threads 2 --dims 6,43,63 --out docs/results/side-by-side-cpu
//! ```
//! Needs a Python with PyTorch (`--python`, default `~/torch-venv/bin/python`) and the
//! authors' code exported to `--ref` (default `~/cpflow-ref`); see
//! `docs/reference/bench/README.md` (the timing script itself is `ref_tabular.py` in the
//! project's shared reference folder, `--ref-script`). `--ours-only` skips the reference.
//! Without `--out` the results go under `target/`:
//! the results page (kept by hand, a section a run) is written only when `--out` names it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use benchmarks::ours::{Protocol, measure};
use benchmarks::side_by_side::{Measurement, Pair, Targets, markdown_table, parse_reference_rows};
use candle_core::{Device, Tensor};
use clap::Parser;
use serde_json::json;

#[global_allocator]
static ALLOC: benchmarks::memory::CountingAlloc = benchmarks::memory::CountingAlloc;

#[derive(Parser, Debug)]
#[command(about = "CP-Flow side by side with the authors' PyTorch code (CPU)")]
struct Args {
    /// Data dimensions.
    #[arg(long, value_delimiter = ',', default_value = "6,43,63")]
    dims: Vec<usize>,
    /// Threads for both sides (ours: RAYON_NUM_THREADS; theirs: OMP/MKL_NUM_THREADS).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Untimed training steps of the "trained" measurement.
    #[arg(long, default_value_t = 200)]
    pretrain: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 10)]
    warm: usize,
    /// Timed train steps.
    #[arg(long, default_value_t = 40)]
    steps: usize,
    /// Python with PyTorch.
    #[arg(long, default_value = "~/torch-venv/bin/python")]
    python: String,
    /// The exported authors' repository.
    #[arg(long, default_value = "~/cpflow-ref")]
    r#ref: String,
    /// The reference timing script.
    #[arg(long, default_value = "../shared/reference/bench/ref_tabular.py")]
    ref_script: String,
    /// Our wrapper that adds peak memory to the reference's rows.
    #[arg(long, default_value = "benchmarks/scripts/ref_peak_memory.py")]
    wrapper: String,
    /// Scratch directory (data, raw reference output).
    #[arg(long, default_value = "target/side-by-side")]
    work_dir: PathBuf,
    /// Output path without extension: writes `.md` and `.json`.
    ///
    /// Default: `target/side-by-side-cpu` (`target/side-by-side-cpu-ours-only` with `--ours-only`); the
    /// results page `docs/results/side-by-side-cpu` (or a machine's copy under `docs/results/<machine>/`)
    /// is written only when named here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the reference (ours only, data from `ref_tabular.py --dump-data` must exist).
    #[arg(long)]
    ours_only: bool,
    /// Where both sides run: `cpu`, or `cuda` (GPU 0; ours needs a build with `--features
    /// cuda`; the targets checked are then issue 14's, [`Targets::gpu`]).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    device: String,
}

/// The reference's `OMP_WAIT_POLICY` as inherited from our environment ("default" when
/// unset: GNU OpenMP spins). Neither choice is free on a shared 2-core machine, measured in
/// this session: with spinning threads PyTorch collapses under load ≈ 4 (d = 43 train step
/// 0.2 → 2.8 s, exact evaluation 0.66 → 9.1 s per 1,000 points), as candle's spinning pool
/// did for us; with PASSIVE it pays a wake-up per parallel region (d = 6 train step 0.17 →
/// 0.33 s at load ≈ 2.5). Run on a quiet machine with the default.
fn omp_wait_policy() -> String {
    std::env::var("OMP_WAIT_POLICY").unwrap_or_else(|_| "default".to_string())
}

fn python(args: &Args) -> Command {
    benchmarks::python_command(&args.python, args.threads)
}

fn run(mut c: Command, what: &str) -> Result<()> {
    let st = c.status().with_context(|| format!("starting {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

fn dump_data(args: &Args) -> Result<PathBuf> {
    let dir = args.work_dir.join("data");
    let dims: Vec<String> = args.dims.iter().map(ToString::to_string).collect();
    let mut c = python(args);
    c.arg(benchmarks::expand_home(&args.ref_script))
        .args([
            "--ref",
            &benchmarks::expand_home(&args.r#ref).to_string_lossy(),
        ])
        .args(["--dims", &dims.join(",")])
        .args(["--steps", &args.steps.to_string()])
        .args(["--warm", &args.warm.to_string()])
        .args(["--pretrain", &args.pretrain.to_string()])
        .arg("--dump-data")
        .arg(&dir);
    run(c, "ref_tabular.py --dump-data")?;
    Ok(dir)
}

fn reference(args: &Args, d: usize, pretrain: usize) -> Result<Measurement> {
    let out = args.work_dir.join(format!("ref_d{d}_p{pretrain}.json"));
    let mut c = python(args);
    c.arg(&args.wrapper)
        .arg(benchmarks::expand_home(&args.ref_script))
        .args([
            "--ref",
            &benchmarks::expand_home(&args.r#ref).to_string_lossy(),
        ])
        .args(["--device", &args.device, "--dims", &d.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .args(["--warm", &args.warm.to_string()])
        .args(["--pretrain", &pretrain.to_string()])
        .arg("--out")
        .arg(&out);
    run(c, &format!("reference d = {d}, pretrain {pretrain}"))?;
    let text = std::fs::read_to_string(&out)?;
    parse_reference_rows(&text)?
        .into_iter()
        .next()
        .context("the reference wrote no row")
}

fn load_data(dir: &Path, d: usize) -> Result<Tensor> {
    let path = dir.join(format!("gmm_d{d}.npy"));
    let m = cpflow::datasets::read_npy_file(&path)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Tensor::from_vec(
        m.data().to_vec(),
        (m.rows(), m.cols()),
        &Device::Cpu,
    )?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if std::env::var("RAYON_NUM_THREADS").is_err() {
        // SAFETY: start of main, single-threaded.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string()) };
    }
    // SAFETY: as above, no thread has been spawned yet: nothing else reads or writes
    // the environment.
    let candle_threads = unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    // The measured work runs on rayon's pool, as in the `cpflow` binary.
    cpflow::cpu_threads::run_on_pool(move || -> Result<()> {
        std::fs::create_dir_all(&args.work_dir)?;
        let data_dir = if args.ours_only {
            args.work_dir.join("data")
        } else {
            dump_data(&args)?
        };
        let dev = benchmarks::open_device(&args.device)?;
        let gpu = dev.is_cuda();
        // The first CUDA use of each kernel module JIT-compiles its PTX (~17 s in all, once
        // a process): one untimed pass of the whole protocol first, its time reported apart.
        let warmup_s = match (gpu, args.dims.first()) {
            (true, Some(&d)) => {
                let sw = benchmarks::Stopwatch::start();
                let proto = Protocol {
                    pretrain: 0,
                    warm: 1,
                    steps: 1,
                    seed: 0,
                };
                measure(&load_data(&data_dir, d)?, &proto, &dev)?;
                Some(sw.seconds())
            }
            _ => None,
        };
        let started = benchmarks::load_average();
        let mut pairs = Vec::new();
        for &d in &args.dims {
            let x = load_data(&data_dir, d)?;
            for pretrain in [0, args.pretrain] {
                let l0 = benchmarks::load_average();
                let theirs = if args.ours_only {
                    Measurement::default()
                } else {
                    reference(&args, d, pretrain)?
                };
                let proto = Protocol {
                    pretrain,
                    warm: args.warm,
                    steps: args.steps,
                    seed: 0,
                };
                let ours = measure(&x, &proto, &dev)?;
                let pair = Pair {
                    theirs,
                    ours,
                    load: [l0, benchmarks::load_average()],
                };
                eprintln!("{}", serde_json::to_string(&pair)?);
                pairs.push(pair);
            }
        }
        let targets = if gpu {
            Targets::gpu()
        } else {
            Targets::default()
        };
        // Without a reference there is nothing to check (`null` in the JSON).
        let missed: Option<Vec<String>> = (!args.ours_only).then(|| {
            pairs
                .iter()
                .flat_map(|p| {
                    targets.missed(p).into_iter().map(move |m| {
                        format!("d = {} pretrain {}: {m}", p.ours.d, p.ours.pretrain_steps)
                    })
                })
                .collect()
        });
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let doc = json!({
            "command": command,
            "threads": args.threads,
            "device": args.device,
            "device_warmup_s": warmup_s,
            "reference_omp_wait_policy": omp_wait_policy(),
            "candle_elementwise_threads": candle_threads,
            "protocol": {"pretrain": args.pretrain, "warm": args.warm, "steps": args.steps},
            "load_at_start": started,
            "load_at_end": benchmarks::load_average(),
            "pairs": pairs,
            "ratios": pairs.iter().map(Pair::ratios).collect::<Vec<_>>(),
            "targets_missed": missed,
        });
        let out = benchmarks::output_prefix::output_prefix(
            args.out.clone(),
            args.ours_only,
            std::path::Path::new(if gpu {
                "docs/results/gpu/side-by-side-gpu"
            } else {
                "docs/results/side-by-side-cpu"
            }),
        );
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(
            out.with_extension("json"),
            serde_json::to_string_pretty(&doc)?,
        )?;
        let mut md = format!(
            "# Side by side with the authors' code ({}, {} CPU threads each)\n\nCommand: `{}`  \n\
         Reference `OMP_WAIT_POLICY={}`. Load average (1 min) at start {:.2}, at end {:.2}.\n\n",
            args.device,
            args.threads,
            command,
            omp_wait_policy(),
            started,
            benchmarks::load_average()
        );
        md.push_str(&markdown_table(&pairs));
        md.push_str(&match targets.min_dim {
            0 => "\nTargets missed (every d): ".to_string(),
            m => format!("\nTargets missed (d ≥ {m}): "),
        });
        md.push_str(&match &missed {
            None => "not checked (`--ours-only`: no reference measurements)".to_string(),
            Some(m) if m.is_empty() => "none".to_string(),
            Some(m) => m.join("; "),
        });
        md.push('\n');
        std::fs::write(out.with_extension("md"), &md)?;
        println!("{md}");
        Ok(())
    })
}
