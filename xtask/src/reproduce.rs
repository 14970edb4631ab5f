//! `cargo xtask reproduce`: the paper's 2-D toys (Fig. 3), the optimal-transport experiment
//! (Fig. 4), the tabular benchmarks on disk (Table 1), the image flows on MNIST / CIFAR-10 on
//! disk (Table 2, [`crate::reproduce_image`]) and the VAE posteriors on the image datasets on
//! disk (Table 3, [`crate::reproduce_vae`]), summarised in `<out>/report.md`.
//!
//! Layout of `<out>`: `toys/<toy>_{data,density,samples}.png`, `ot/ot_d<d>_*.png` (and the
//! curves as CSV), `tabular/bench-tabular.{md,json}` (plus one folder per dataset with the
//! model), `images/<dataset>/` (`report.json`, `metrics.jsonl`, `model.safetensors`,
//! `samples.png`), `vae/<dataset>/<gaussian|cp-flow>/` (`report.json`, `metrics.jsonl`, weights),
//! `report.md` (relative links to every figure, the tables against the paper) and
//! `reproduce.json`; what each finished run produced is saved as it finishes, so that an
//! interrupted reproduction can be continued ([`crate::reproduce_resume`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::Device;
use cpflow::checkpoint::write_atomic;
use cpflow::datasets::TabularDataset;
use cpflow::ot::{OtConfig, OtReport, ot_table_markdown, run_ot_experiment, write_ot_figures};
use cpflow::toy::Toy;
use cpflow::vae::{PosteriorKind, VaeConfig, VaeDatasetName};
use cpflow::{LrSchedule, PotentialConfig, RunOptions, ToyExperimentConfig};
use icnn::Icnn3Config;
use serde::Serialize;

use crate::bench_report::{BENCH_MD, bench_table_markdown, push_dataset_lists};
use crate::bench_resume::TabularResume;
use crate::bench_tabular::{
    BenchReport, BenchTabularOptions, SkippedDataset, default_fallback_roots, device_name,
    run_bench_tabular,
};
use crate::json_file::write_json_file;
use crate::reproduce_image::{
    ImagePartOptions, ImagePartReport, ImageRow, ImageSubset, image_quick_config,
    image_reference_config, image_table_markdown, image_tiny_config, run_image_part,
};
use crate::reproduce_resume::{ReproduceInterrupt, ReproduceRun, begin_reproduction, kept_or_run};
use crate::reproduce_vae::{
    VaePartOptions, VaePartReport, VaeRow, VaeSubset, default_vae_roots, run_vae_part,
    vae_quick_config, vae_reference_config, vae_table_markdown, vae_tiny_config,
};
use crate::tabular_config::{ModelOverrides, TabularBenchConfig};
use crate::toy_figures::{
    FIG3_TOYS, ToyFigureResult, ToyPlotSettings, run_toy_figure, toy_quick_config,
    toy_reference_config, toy_tiny_config,
};

/// File name of the report.
pub const REPORT_MD: &str = "report.md";

/// File name of the report's data ([`ReproduceReport`]).
pub const REPORT_JSON: &str = "reproduce.json";

/// What to reproduce and how big.
#[derive(Clone, Debug)]
pub struct ReproduceOptions {
    /// Name of the preset (`full`, `quick`, `tiny`), written into the report.
    pub preset: String,
    /// Toys of Fig. 3.
    pub toys: Vec<Toy>,
    /// Configuration of each toy run.
    pub toy_config: fn(Toy) -> ToyExperimentConfig,
    /// Figure settings.
    pub plot: ToyPlotSettings,
    /// Dimensions of the OT experiment.
    pub ot_dims: Vec<usize>,
    /// Configuration of each OT run.
    pub ot_config: fn(usize) -> OtConfig,
    /// The tabular part (its `out` is replaced by `<out>/tabular`).
    pub tabular: BenchTabularOptions,
    /// The image part (Table 2): datasets (empty to skip), data roots, configuration.
    pub images: ImagePartOptions,
    /// The VAE part (Table 3): datasets (empty to skip), data roots, configuration.
    pub vae: VaePartOptions,
    /// Output directory.
    pub out: PathBuf,
    /// Compute device (toys and OT; the tabular part has its own).
    pub device: Device,
    /// Draw progress bars.
    pub progress: bool,
    /// Continue the reproduction in `out` (`--resume`; [`crate::reproduce_resume`]): keep its
    /// finished runs, finish the others. Without it a reproduction refuses an `out` that
    /// holds one.
    pub resume: bool,
    /// Once set (the command line's Ctrl-C handler), the tabular, image or VAE run in progress
    /// pauses after its step, checkpointed (a toy or OT run finishes first), and the
    /// reproduction stops with an error that says how to continue it.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl ReproduceOptions {
    /// The paper-sized run: reference toy runs, OT for d ∈ {2, 4, 8, 16} with the reference
    /// settings, the tabular benchmarks with `minutes` of training per dataset, the image flows
    /// of `configs/{mnist,cifar10}.toml` (100 epochs on a CUDA device, `minutes` of steps on
    /// the CPU), and the VAE
    /// reference configuration ([`vae_reference_config`]) with `minutes` of training per
    /// dataset and posterior. VAE data: [`default_vae_roots`], then `data_dir`.
    pub fn full(out: PathBuf, data_dir: PathBuf, device: Device, minutes: f64) -> Self {
        ReproduceOptions {
            preset: "full".into(),
            toys: FIG3_TOYS.to_vec(),
            toy_config: toy_reference_config,
            plot: ToyPlotSettings {
                grid: 200,
                samples: 5_000,
                size: 400,
            },
            ot_dims: vec![2, 4, 8, 16],
            ot_config: OtConfig::reference,
            tabular: tabular_options(data_dir.clone(), device.clone(), TabularBenchConfig::paper)
                .with_budget(Some(Duration::from_secs_f64(minutes * 60.0))),
            images: ImagePartOptions {
                max_minutes: if device.is_cuda() {
                    None
                } else {
                    Some(minutes)
                },
                ..ImagePartOptions::new(image_roots(&data_dir), image_reference_config)
            },
            vae: VaePartOptions {
                max_minutes: Some(minutes),
                ..vae_part(&data_dir, vae_reference_config)
            },
            out,
            device,
            progress: true,
            resume: false,
            interrupt: None,
        }
    }

    /// `--quick`: the same pipeline in a few minutes on 2 CPU cores (small toy ICNNs and 1,000
    /// iterations, OT for d ∈ {2, 4} with 300 iterations, tabular `quick` preset); about
    /// 1 minute in release when only BSDS300 is on disk. The VAE part runs 3 epochs of
    /// [`vae_quick_config`] per dataset and posterior (far longer than the rest on MNIST and
    /// Omniglot: choose datasets with `vae.datasets`).
    pub fn quick(out: PathBuf, data_dir: PathBuf, device: Device) -> Self {
        ReproduceOptions {
            preset: "quick".into(),
            toy_config: toy_quick_config,
            plot: ToyPlotSettings {
                grid: 100,
                samples: 1_000,
                size: 300,
            },
            ot_dims: vec![2, 4],
            ot_config: ot_quick_config,
            tabular: tabular_options(data_dir.clone(), device.clone(), TabularBenchConfig::quick),
            images: ImagePartOptions::new(image_roots(&data_dir), image_quick_config),
            vae: vae_part(&data_dir, vae_quick_config),
            ..Self::full(out, data_dir, device, 0.0)
        }
    }

    /// For tests in the debug profile: one toy, OT in d = 2, tiny models and a few
    /// iterations; the VAE part with [`vae_tiny_config`] on the first 100 training and 50
    /// validation / test images.
    pub fn tiny(out: PathBuf, data_dir: PathBuf, device: Device) -> Self {
        ReproduceOptions {
            preset: "tiny".into(),
            toys: vec![Toy::EightGaussians],
            toy_config: toy_tiny_config,
            plot: ToyPlotSettings {
                grid: 16,
                samples: 50,
                size: 64,
            },
            ot_dims: vec![2],
            ot_config: ot_tiny_config,
            tabular: tabular_options(data_dir.clone(), device.clone(), TabularBenchConfig::tiny),
            images: ImagePartOptions {
                subset: Some(ImageSubset { train: 64, eval: 8 }),
                grid: (2, 2),
                ..ImagePartOptions::new(image_roots(&data_dir), image_tiny_config)
            },
            vae: VaePartOptions {
                subset: Some(VaeSubset {
                    train: 100,
                    eval: 50,
                }),
                ..vae_part(&data_dir, vae_tiny_config)
            },
            progress: false,
            ..Self::quick(out, data_dir, device)
        }
    }
}

impl BenchTabularOptions {
    /// Sets the per-dataset wall-clock budget.
    pub fn with_budget(mut self, budget: Option<Duration>) -> Self {
        self.budget = budget;
        self
    }
}

/// Where the image part looks for MNIST / CIFAR-10: the project's shared data folder (MNIST
/// is shipped there) found from the repository, as the tabular part finds it, and
/// `../shared/data` from the working directory ([`default_fallback_roots`], each folder
/// once), then the run's `--data-dir` (where `cargo xtask download mnist|cifar10` puts its
/// files). Run from another folder, the working-directory path alone missed the shared MNIST.
fn image_roots(data_dir: &Path) -> Vec<PathBuf> {
    let mut roots = default_fallback_roots();
    roots.push(data_dir.to_path_buf());
    roots
}

/// The VAE part with `config`: data under the first of [`default_vae_roots`], then the
/// others, then the run's `data_dir` (`cargo xtask download mnist|omniglot`).
fn vae_part(
    data_dir: &Path,
    config: fn(VaeDatasetName, PosteriorKind, &Path) -> VaeConfig,
) -> VaePartOptions {
    let mut roots = default_vae_roots();
    let first = roots.remove(0);
    roots.push(data_dir.to_path_buf());
    VaePartOptions {
        fallback_roots: roots,
        ..VaePartOptions::new(first, data_dir.to_path_buf(), config)
    }
}

fn tabular_options(
    data_dir: PathBuf,
    device: Device,
    preset: fn(TabularDataset) -> TabularBenchConfig,
) -> BenchTabularOptions {
    BenchTabularOptions {
        datasets: TabularDataset::ALL.to_vec(),
        data_dir,
        fallback_roots: default_fallback_roots(),
        device,
        budget: None,
        preset,
        val_every: None,
        cg_preconditioner: None,
        test_rows: None,
        model: ModelOverrides::default(),
        out: PathBuf::new(),
        progress: true,
        resume: TabularResume::Start,
        interrupt: None,
    }
}

/// The OT run for `--quick`: the reference model, 5,000 / 2,000 points, 300 iterations.
pub fn ot_quick_config(dim: usize) -> OtConfig {
    let mut cfg = OtConfig::reference(dim);
    cfg.n_train = 5_000;
    cfg.n_test = 2_000;
    cfg.train.max_iterations = 300;
    cfg.train.lr_schedule = LrSchedule::Cosine { t_max: 300 };
    cfg.eval_every = 25;
    cfg.n_eval_curve = 500;
    cfg
}

/// The OT run for tests: `Icnn3(d, 8, 2)`, 256 / 128 points, 8 iterations.
pub fn ot_tiny_config(dim: usize) -> OtConfig {
    let mut cfg = ot_quick_config(dim);
    if let PotentialConfig::Icnn3(c) = &cfg.potential {
        cfg.potential = PotentialConfig::Icnn3(Icnn3Config {
            width: 8,
            depth: 2,
            ..c.clone()
        });
    }
    cfg.n_train = 256;
    cfg.n_test = 128;
    cfg.train.batch_size = 64;
    cfg.train.max_iterations = 8;
    cfg.train.lr_schedule = LrSchedule::Cosine { t_max: 8 };
    cfg.eval_every = 4;
    cfg.n_eval_curve = 64;
    cfg
}

/// Everything a reproduction produced (also written as [`REPORT_JSON`]).
#[derive(Clone, Debug, Serialize)]
pub struct ReproduceReport {
    /// Preset name.
    pub preset: String,
    /// Toy results.
    pub toys: Vec<ToyFigureResult>,
    /// OT results.
    pub ot: Vec<OtReport>,
    /// Tabular results.
    pub tabular: BenchReport,
    /// Image results (Table 2), one row per dataset.
    pub images: Vec<ImageRow>,
    /// Image datasets not found on disk.
    pub images_skipped: Vec<SkippedDataset>,
    /// Temperature of the image sample grids.
    pub image_temperature: f64,
    /// VAE results (Table 3), one row per dataset and posterior.
    pub vae: Vec<VaeRow>,
    /// VAE datasets not found on disk.
    pub vae_skipped: Vec<SkippedDataset>,
    /// Wall-clock seconds (of this sitting when `resumed`).
    pub wall_time_s: f64,
    /// Whether this sitting continued an earlier one (`--resume`): the runs that one finished
    /// are in the report with their own times.
    pub resumed: bool,
}

/// Runs every part and writes `<out>/report.md` and `<out>/reproduce.json`.
pub fn run_reproduce(opts: &ReproduceOptions) -> Result<ReproduceReport> {
    let t0 = Instant::now();
    let out = &opts.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let run = ReproduceRun {
        preset: opts.preset.clone(),
        minutes: opts.tabular.budget.map(|b| b.as_secs_f64() / 60.0),
        device: if opts.device.is_cuda() { "cuda" } else { "cpu" }.into(),
    };
    begin_reproduction(out, &run, opts.resume)?;
    let stop = ReproduceInterrupt {
        flag: opts.interrupt.clone(),
        out,
    };

    let mut toys = Vec::new();
    for &toy in &opts.toys {
        stop.check()?;
        let cfg = (opts.toy_config)(toy);
        let saved = out.join("toys").join(format!("{}.json", toy.name()));
        toys.push(kept_or_run(opts.resume, &saved, toy.name(), || {
            run_toy_figure(
                &cfg,
                &opts.plot,
                &out.join("toys"),
                &opts.device,
                opts.progress,
            )
        })?);
    }

    let mut ot = Vec::new();
    for &d in &opts.ot_dims {
        stop.check()?;
        let cfg = (opts.ot_config)(d);
        let saved = out.join("ot").join(format!("ot_d{d}.json"));
        ot.push(kept_or_run(
            opts.resume,
            &saved,
            &format!("OT d = {d}"),
            || {
                tracing::info!(
                    "OT d = {d}: training {} iterations",
                    cfg.train.max_iterations
                );
                let options = RunOptions {
                    progress_bar: opts.progress,
                    ..RunOptions::default()
                };
                let (_, rep) = run_ot_experiment(&cfg, &opts.device, options)?;
                write_ot_figures(&out.join("ot"), &rep)?;
                Ok(rep)
            },
        )?);
    }

    stop.check()?;
    let mut tab = opts.tabular.clone();
    tab.out = out.join("tabular");
    tab.progress = opts.progress;
    tab.resume = if opts.resume {
        TabularResume::Finish
    } else {
        TabularResume::Start
    };
    tab.interrupt = opts.interrupt.clone();
    let tabular = run_bench_tabular(&tab).map_err(|e| stop.explain(e))?;

    stop.check()?;
    let mut image_opts = opts.images.clone();
    image_opts.resume = opts.resume;
    image_opts.interrupt = opts.interrupt.clone();
    let images = run_image_part(&image_opts, out, &opts.device, opts.progress)
        .map_err(|e| stop.explain(e))?;

    stop.check()?;
    let mut vae_opts = opts.vae.clone();
    vae_opts.resume = opts.resume;
    vae_opts.interrupt = opts.interrupt.clone();
    let vae = run_vae_part(&vae_opts, out, opts.progress).map_err(|e| stop.explain(e))?;
    stop.check()?;

    let report = ReproduceReport {
        preset: opts.preset.clone(),
        toys,
        ot,
        tabular,
        images: images.rows,
        images_skipped: images.skipped,
        image_temperature: opts.images.temperature,
        vae: vae.rows,
        vae_skipped: vae.skipped,
        wall_time_s: t0.elapsed().as_secs_f64(),
        resumed: opts.resume,
    };
    let md = out.join(REPORT_MD);
    write_atomic(&md, report_markdown(&report, &opts.device).as_bytes())
        .with_context(|| format!("writing {}", md.display()))?;
    write_json_file(&out.join(REPORT_JSON), &report)?;
    Ok(report)
}

fn link(rel: &Path) -> String {
    rel.display().to_string().replace('\\', "/")
}

/// The Markdown report with relative links to the figures.
pub fn report_markdown(r: &ReproduceReport, device: &Device) -> String {
    let mut s = String::from("# CP-Flow reproduction report\n\n");
    let sitting = if r.resumed {
        " (of the last sitting: `--resume` kept the runs that earlier ones finished)"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "Preset `{}` on {}; wall time {:.0} s{sitting}. Generated by `cargo xtask \
         reproduce`.\n",
        r.preset,
        device_name(device),
        r.wall_time_s
    );

    s.push_str("## Fig. 3: 2-D toy densities\n\n");
    s.push_str(
        "One CP-Flow block per toy. Paper: a single block fits multi-modal densities (mixture \
         of Gaussians, rings, checkerboard). Columns: data histogram, model density (exact), \
         model samples.\n\n",
    );
    s.push_str(
        "| toy | iterations | held-out NLL | data entropy | failed inversions | train time (s) |\n\
         |---|---|---|---|---|---|\n",
    );
    for t in &r.toys {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {} | {} | {:.0} |",
            t.toy,
            t.iterations,
            t.test_nll,
            t.data_entropy
                .map_or_else(|| "-".to_string(), |e| format!("{e:.3}")),
            t.failed_inversions,
            t.train_time_s
        );
    }
    s.push('\n');
    for t in &r.toys {
        let _ = write!(s, "**{}**: ", t.toy);
        for (f, what) in t.figures.iter().zip(["data", "density", "samples"]) {
            let _ = write!(
                s,
                "![{} {what}]({}) ",
                t.toy,
                link(&Path::new("toys").join(f))
            );
        }
        s.push_str("\n\n");
    }

    s.push_str("## Fig. 4: optimal transport\n\n");
    s.push_str(
        "One CP-Flow block trained by maximum likelihood on N(m, C) data. Paper: as the KL goes \
         to 0, the transport cost E|x - f(x)|^2 approaches the closed-form W2^2 (the learned \
         map is the Brenier map).\n\n",
    );
    s.push_str(&ot_table_markdown(&r.ot));
    s.push('\n');
    for o in &r.ot {
        let d = o.dim;
        let _ = writeln!(
            s,
            "d = {d}: ![cost vs KL, d = {d}]({}) ![cost vs iteration, d = {d}]({})\n",
            link(&Path::new("ot").join(format!("ot_d{d}_cost_vs_kl.png"))),
            link(&Path::new("ot").join(format!("ot_d{d}_cost_vs_iter.png")))
        );
    }
    s.push_str("(Blue: transport cost; red dashed: W2^2. The numbers are in the CSV files beside the PNGs.)\n\n");

    s.push_str("## Table 1: tabular density estimation (test NLL, nats)\n\n");
    let _ = writeln!(
        s,
        "Details and configurations: [{}]({}).\n",
        BENCH_MD,
        link(&Path::new("tabular").join(BENCH_MD))
    );
    if r.tabular.results.is_empty() && r.tabular.earlier.is_empty() && r.tabular.failed.is_empty() {
        s.push_str("No tabular dataset was found on disk.\n");
    } else {
        s.push_str(&bench_table_markdown(&r.tabular));
    }
    push_dataset_lists(&mut s, &r.tabular, |title| format!("\n{title}:\n\n"));
    if !(r.images.is_empty() && r.images_skipped.is_empty()) {
        s.push('\n');
        s.push_str(&image_table_markdown(
            &ImagePartReport {
                rows: r.images.clone(),
                skipped: r.images_skipped.clone(),
            },
            r.image_temperature,
        ));
    }
    if !(r.vae.is_empty() && r.vae_skipped.is_empty()) {
        s.push('\n');
        s.push_str(&vae_table_markdown(&VaePartReport {
            rows: r.vae.clone(),
            skipped: r.vae_skipped.clone(),
        }));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{ReproduceOptions, image_roots};
    use candle_core::Device;
    use std::path::{Path, PathBuf};

    /// The project's shared data folder, as an absolute path without `..`.
    fn shared() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data")
            .canonicalize()
            .expect("the project's shared data folder")
    }

    /// The shared MNIST is found from the repository, whatever the working directory (the
    /// image part looked only at `../shared/data` from where it was started).
    #[test]
    fn image_roots_find_the_shared_data_from_the_repository() {
        let roots = image_roots(Path::new("elsewhere"));
        assert!(roots.contains(&shared()), "{roots:?}");
        assert_eq!(
            roots.last().map(|p| p.as_path()),
            Some(Path::new("elsewhere"))
        );
        // Each folder once (run from the repository's root, `../shared/data` is the same).
        let mut unique = roots.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), roots.len(), "{roots:?}");
    }

    /// The VAE data (Frey Faces, Caltech 101 Silhouettes: shipped in the shared folder) are
    /// found from the repository too, like the tabular and image data: the default was
    /// `../shared/data` from the working directory, so run from elsewhere Table 3 was skipped
    /// while BSDS300 was found. The run's `--data-dir` is searched last.
    #[test]
    fn vae_data_are_found_from_the_repository() {
        for opts in [
            ReproduceOptions::quick("o".into(), "d".into(), Device::Cpu),
            ReproduceOptions::full("o".into(), "d".into(), Device::Cpu, 1.0),
        ] {
            assert_eq!(opts.vae.data_dir, shared());
            assert_eq!(
                opts.vae.fallback_roots.last().map(|p| p.as_path()),
                Some(Path::new("d"))
            );
        }
    }
}
