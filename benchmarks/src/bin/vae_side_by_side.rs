//! The VAE's training step on Frey Faces beside the authors' `train_vae.py`, same CPU, same
//! session, same thread count, both posteriors (Gaussian and CP-Flow), the reference
//! configuration (widths 32/256/256, z = 64, float64, batch 100, β of epoch 1): writes a
//! Markdown table of step times, projected epoch times (16 steps per epoch of 1,565 images)
//! and ratios, and the raw JSON.
//!
//! ```text
//! cargo build --release -p benchmarks --bin vae_side_by_side
//! target/release/vae_side_by_side --threads 2 --steps 10 --out docs/results/vae-epoch-time
//! ```
//! The reference side runs `benchmarks/scripts/ref_vae_epoch.py` (imports the authors' code
//! from `--ref`, default `~/cpflow-ref`; needs a Python with PyTorch, `--python`).
//! `--ours-only` skips it. Without `--out` the results go under `target/`:
//! the results page (kept by hand, a section a run) is written only when `--out` names it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use benchmarks::CpuWatch;
use candle_core::{DType, Device};
use clap::Parser;
use cpflow::config::FloatType;
use cpflow::vae::{
    Adamax, PosteriorKind, Vae, VaeConfig, VaeDatasetName, VaeSplit, load_vae_data, make_batch,
};
use rand::SeedableRng;
use serde_json::json;

/// The `cpflow` binary's allocator (`cpflow::allocator`), so both measure the same code.
#[global_allocator]
static GLOBAL: cpflow::allocator::MiMalloc = cpflow::allocator::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "VAE training step beside the authors' train_vae.py (CPU)")]
struct Args {
    /// Threads for both sides.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed steps per posterior (after 2 untimed ones).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Encoder/decoder float type of ours (`f64` as the reference, or `f32`).
    #[arg(long, default_value = "f64")]
    network_float: String,
    /// Data root with frey-faces/.
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Python with PyTorch.
    #[arg(long, default_value = "~/torch-venv/bin/python")]
    python: String,
    /// The exported authors' repository.
    #[arg(long, default_value = "~/cpflow-ref")]
    r#ref: String,
    /// Output prefix (`.md` and `.json` are added).
    ///
    /// Default: `target/vae-epoch-time` (`target/vae-epoch-time-ours-only` with `--ours-only`); the
    /// results page `docs/results/vae-epoch-time` (or a machine's copy under `docs/results/<machine>/`)
    /// is written only when named here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the reference.
    #[arg(long)]
    ours_only: bool,
}

/// Mean and standard deviation.
fn stats(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    (m, s)
}

fn ours(a: &Args, posterior: PosteriorKind) -> Result<serde_json::Value> {
    let mut cfg = VaeConfig::reference(VaeDatasetName::FreyFaces, &a.data, posterior);
    cfg.model.network_float = match a.network_float.as_str() {
        "f32" => FloatType::F32,
        "f64" => FloatType::F64,
        o => bail!("unknown float type {o}"),
    };
    let data = load_vae_data(cfg.data.dataset, &cfg.data.root, cfg.data.seed)?;
    let vae = Vae::new(
        &cfg.model,
        data.likelihood,
        (data.height, data.width),
        &Device::Cpu,
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let idx: Vec<usize> = (0..100).collect();
    let batch = make_batch(&vae, &data, VaeSplit::Train, &idx, &mut rng)?;
    vae.initialize(&batch, &mut rng)?;
    let mut opt = Adamax::new(vae.trainable_named_vars(), cfg.train.optimizer.clone())?;
    let beta = cfg.train.beta(1);
    let (mut times, mut cg) = (Vec::new(), Vec::new());
    let mut watch = None;
    for s in 0..a.steps + 2 {
        if s == 2 {
            watch = Some(CpuWatch::start());
        }
        let t0 = Instant::now();
        let terms = vae.train_terms(&batch, beta, &cfg.train.cg, &mut rng)?;
        let grads = terms.loss.backward()?;
        opt.step(&grads)?;
        let _ = terms.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if s >= 2 {
            times.push(t0.elapsed().as_secs_f64());
            cg.push(terms.cg.mean_iterations());
        }
    }
    let step_cores = watch.and_then(|w| w.cores_used());
    // Validation cost: the exact −ELBO of 100 images (the reference's validation uses SLQ).
    let t0 = CpuWatch::start();
    let _ = vae.neg_elbo_exact(&batch, &mut rng)?;
    let val = t0.seconds();
    let val_cores = t0.cores_used();
    let (m, sd) = stats(&times);
    Ok(json!({
        "step_s_mean": m, "step_s_std": sd, "steps": times,
        "epoch_s_projected": 16.0 * m, "cg_iterations_mean": stats(&cg).0,
        "val_s_per_100": val, "num_parameters": vae.num_parameters(),
        "cores_used_steps": step_cores, "cores_used_val": val_cores,
        "network_float": a.network_float,
    }))
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
        let mut rows = Vec::new();
        let mut raw = serde_json::Map::new();
        for (name, kind, flag) in [
            ("Gaussian", PosteriorKind::Gaussian, "gaussian"),
            ("CP-Flow", PosteriorKind::CpFlow, "cpflow"),
        ] {
            let reference = if a.ours_only {
                None
            } else {
                let mut c = benchmarks::python_command(&a.python, a.threads);
                c.args(["benchmarks/scripts/ref_vae_epoch.py", "--posterior", flag])
                    .args([
                        "--steps",
                        &a.steps.to_string(),
                        "--threads",
                        &a.threads.to_string(),
                    ])
                    .arg("--ref")
                    .arg(benchmarks::expand_home(&a.r#ref))
                    .args([
                        "--frey",
                        &a.data
                            .join("frey-faces/frey_faces_uint8.npy")
                            .display()
                            .to_string(),
                    ]);
                let v = benchmarks::stdout_json(c)?;
                Some(v)
            };
            let o = ours(&a, kind)?;
            let theirs = reference.as_ref().and_then(|r| find_posterior(r, flag));
            let their_epoch = theirs
                .as_ref()
                .and_then(|t| t["epoch_s_projected"].as_f64());
            let our_epoch = o["epoch_s_projected"].as_f64().unwrap_or(f64::NAN);
            rows.push(format!(
                "| {name} | {:.3} ± {:.3} | {} | {:.1} | {} | {} | {:.2} | {} |",
                o["step_s_mean"].as_f64().unwrap_or(f64::NAN),
                o["step_s_std"].as_f64().unwrap_or(f64::NAN),
                theirs.as_ref().map_or("-".into(), |t| format!(
                    "{:.3} ± {:.3}",
                    t["step_s_mean"].as_f64().unwrap_or(f64::NAN),
                    t["step_s_std"].as_f64().unwrap_or(f64::NAN)
                )),
                our_epoch,
                their_epoch.map_or("-".into(), |e| format!("{e:.1}")),
                their_epoch.map_or("-".into(), |e| format!("{:.2}×", e / our_epoch)),
                o["cg_iterations_mean"].as_f64().unwrap_or(0.0),
                o["cores_used_steps"]
                    .as_f64()
                    .map_or("-".into(), |c| format!("{c:.2}")),
            ));
            raw.insert(flag.into(), json!({ "ours": o, "reference": reference }));
        }
        let md = format!(
            "# VAE training step on Frey Faces: ours vs the authors' train_vae.py\n\n\
         Same CPU, same session, {} threads each; reference configuration (encoder/decoder \
         widths 32/256/256, z = 64, batch 100, β of epoch 1, Adamax), ours with the \
         encoder/decoder in {} and the posterior in f64, theirs all float64. {} timed steps \
         after 2 untimed ones, on one fixed batch. Projected epoch = 16 steps (1,565 images); \
         the reference adds its per-batch `gc.collect()`. Speed-up = their epoch / ours.\n\n\
         | posterior | our step (s) | their step (s) | our epoch (s) | their epoch (s) | speed-up | our CG its | our cores used |\n\
         |---|---|---|---|---|---|---|---|\n{}\n\n\
         Cores used: our process CPU seconds per wall second over the timed steps.\n\n\
         Command: `cargo build --release -p benchmarks --bin vae_side_by_side && \
         target/release/vae_side_by_side --threads {} --steps {} --network-float {}`.\n",
            a.threads,
            a.network_float,
            a.steps,
            rows.join("\n"),
            a.threads,
            a.steps,
            a.network_float
        );
        let out = benchmarks::output_prefix::output_prefix(
            a.out.clone(),
            a.ours_only,
            std::path::Path::new("docs/results/vae-epoch-time"),
        );
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out.with_extension("md"), &md)?;
        std::fs::write(
            out.with_extension("json"),
            serde_json::to_string_pretty(&raw)?,
        )?;
        print!("{md}");
        Ok(())
    })
}

/// The reference JSON's entry for one posterior (the script reports under its posterior
/// names; accept the common spellings).
fn find_posterior(v: &serde_json::Value, flag: &str) -> Option<serde_json::Value> {
    let keys: &[&str] = match flag {
        "gaussian" => &["gaussian", "no_flow"],
        _ => &["cpflow", "cp-flow"],
    };
    for k in keys {
        if let Some(x) = v
            .get(k)
            .or_else(|| v.get("posteriors").and_then(|p| p.get(k)))
        {
            return Some(x.clone());
        }
    }
    None
}
