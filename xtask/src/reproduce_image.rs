//! The Table 2 part of `cargo xtask reproduce`: multi-scale convolutional CP-Flows on MNIST and
//! CIFAR-10 ([`cpflow::image`]), scored in bits per dimension on the test split (SLQ with its
//! standard error, the exact log-det on a subset), next to the paper's numbers, with a grid of
//! samples per dataset in the report.
//!
//! Each dataset found on disk trains into `<out>/images/<dataset>/` (`report.json`,
//! `metrics.jsonl`, `model.safetensors` with the EMA weights, checkpoints) and gets
//! `<out>/images/<dataset>/samples.png`. The `full` preset uses the shipped
//! `configs/mnist.toml` / `configs/cifar10.toml` (the paper's parameter counts) for their full
//! 100 epochs with `--device cuda`, or under a time budget on the CPU. Datasets whose files
//! are missing are skipped with the loader's message (which names
//! `cargo xtask download <name>`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use cpflow::FlowRng;
use cpflow::datasets::DatasetError;
use cpflow::image::{
    ImageData, ImageDataset, ImageExperimentConfig, ImageFlow, ImageRunOptions, ImageTrainReport,
    load_image_data, quantize_pixels, run_image_training, write_sample_grid,
};
use serde::{Deserialize, Serialize};

use crate::bench_resume::CHECKPOINT_FILE;
use crate::bench_tabular::SkippedDataset;
use crate::json_file::write_json_file;
use crate::reproduce_resume::{ROW_FILE, kept_result};

/// `configs/mnist.toml`, the paper-sized MNIST model (2.8 M parameters).
pub const MNIST_CONFIG: &str = include_str!("../../configs/mnist.toml");
/// `configs/cifar10.toml`, the paper-sized CIFAR-10 model (1.9 M parameters).
pub const CIFAR10_CONFIG: &str = include_str!("../../configs/cifar10.toml");
/// `configs/mnist-cpu.toml`, the reduced MNIST model that trains on 2 CPU cores.
pub const MNIST_CPU_CONFIG: &str = include_str!("../../configs/mnist-cpu.toml");

/// Both datasets of Table 2, in the table's order.
pub const IMAGE_DATASETS: [ImageDataset; 2] = [ImageDataset::Mnist, ImageDataset::Cifar10];

/// Keep only the first images of each split (for tests in the debug profile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSubset {
    /// Training images kept.
    pub train: usize,
    /// Validation and test images kept (each).
    pub eval: usize,
}

/// What the image part runs.
#[derive(Clone, Debug)]
pub struct ImagePartOptions {
    /// Datasets to try, in order (empty: the part is skipped, `--no-images`).
    pub datasets: Vec<ImageDataset>,
    /// Data roots searched in order (the first holding the dataset is used).
    pub data_roots: Vec<PathBuf>,
    /// The configuration of a run (its `data.root` is replaced by the root found).
    pub config: fn(ImageDataset) -> ImageExperimentConfig,
    /// Training budget in minutes of every run (`train.max_minutes`), applied after
    /// `config`; `None` leaves the configuration's own.
    pub max_minutes: Option<f64>,
    /// Train and evaluate on the first images of each split only.
    pub subset: Option<ImageSubset>,
    /// Sample grid (rows, columns) written per dataset.
    pub grid: (usize, usize),
    /// Sampling temperature of the grid.
    pub temperature: f64,
    /// Keep the runs an earlier sitting finished ([`ROW_FILE`]) and continue the others from
    /// their checkpoints (`reproduce --resume`; the time budget counts every sitting's
    /// training).
    pub resume: bool,
    /// Pauses the run in progress after its step (checkpointed), or stops its test score.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl ImagePartOptions {
    /// Both datasets, searched under `roots`, with configuration `config`, an 8 × 8 grid at
    /// temperature 0.8 (Glow's and the reference's usual choice for samples).
    pub fn new(roots: Vec<PathBuf>, config: fn(ImageDataset) -> ImageExperimentConfig) -> Self {
        ImagePartOptions {
            datasets: IMAGE_DATASETS.to_vec(),
            data_roots: roots,
            config,
            max_minutes: None,
            subset: None,
            grid: (8, 8),
            temperature: 0.8,
            resume: false,
            interrupt: None,
        }
    }
}

impl ImagePartOptions {
    /// The configuration of `dataset`'s run on data under `root`: [`ImagePartOptions::config`],
    /// then [`ImagePartOptions::max_minutes`].
    fn run_config(&self, dataset: ImageDataset, root: &Path) -> ImageExperimentConfig {
        let mut cfg = (self.config)(dataset);
        cfg.data.root = root.to_path_buf();
        if self.max_minutes.is_some() {
            cfg.train.max_minutes = self.max_minutes;
        }
        cfg
    }
}

fn parse_config(text: &str, name: &str) -> ImageExperimentConfig {
    // The shipped files are checked by `presets_parse_and_validate`; a failure here is a bug
    // of the repository, not of the user's input.
    toml::from_str(text).unwrap_or_else(|e| panic!("the shipped {name} does not parse: {e}"))
}

/// The paper-sized run: `configs/mnist.toml` or `configs/cifar10.toml` (100 epochs).
pub fn image_reference_config(dataset: ImageDataset) -> ImageExperimentConfig {
    match dataset {
        ImageDataset::Mnist => parse_config(MNIST_CONFIG, "configs/mnist.toml"),
        ImageDataset::Cifar10 => parse_config(CIFAR10_CONFIG, "configs/cifar10.toml"),
    }
}

/// `--quick`: `configs/mnist-cpu.toml`'s reduced model (on CIFAR-10 too) for 3 minutes of
/// steps, validation on 500 images, the test score on the first 1,000 test images (exact
/// log-det on 4).
pub fn image_quick_config(dataset: ImageDataset) -> ImageExperimentConfig {
    let mut c = parse_config(MNIST_CPU_CONFIG, "configs/mnist-cpu.toml");
    c.data.dataset = dataset;
    c.data.n_val = 500;
    c.train.max_minutes = Some(3.0);
    c.train.ema.start_iteration = 100;
    c.train.test.images = Some(1_000);
    c.train.test.exact_images = 4;
    c
}

/// For tests: a width-4, depth-2 ConvICNN, one block per scale, 3 steps of batch 8, the test
/// score on 4 images (exact on 1).
pub fn image_tiny_config(dataset: ImageDataset) -> ImageExperimentConfig {
    let mut c = image_quick_config(dataset);
    c.model.width = 4;
    c.model.depth = 2;
    c.train.max_minutes = None;
    c.train.max_iterations = Some(3);
    c.train.batch_size = 8;
    c.train.eval_batch_size = 8;
    c.train.val_every = 0;
    c.train.train_slq_every = 0;
    c.train.checkpoint_every = 0;
    c.train.ema.start_iteration = 0;
    c.train.test.images = Some(4);
    c.train.test.exact_images = 1;
    c
}

/// The paper's Table 2 CP-Flow test bits/dim and parameter count.
pub fn paper_image_bpd(dataset: ImageDataset) -> (f64, &'static str) {
    match dataset {
        ImageDataset::Mnist => (1.02, "2.9M"),
        ImageDataset::Cifar10 => (3.40, "1.9M"),
    }
}

/// Parses `--image-datasets`: comma-separated `mnist`, `cifar10` or `all`.
pub fn parse_image_datasets(list: &str) -> Result<Vec<ImageDataset>> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let found = match name.to_ascii_lowercase().as_str() {
            "all" => IMAGE_DATASETS.to_vec(),
            "mnist" => vec![ImageDataset::Mnist],
            "cifar10" | "cifar-10" => vec![ImageDataset::Cifar10],
            _ => bail!("unknown image dataset {name:?}: use mnist, cifar10 or all"),
        };
        for d in found {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    if out.is_empty() {
        bail!("--image-datasets is empty (use --no-images to skip the image part)");
    }
    Ok(out)
}

/// One row of the Table 2 section.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRow {
    /// `mnist` or `cifar10`.
    pub dataset: String,
    /// The run's report (the test score is `report.test`).
    pub report: ImageTrainReport,
    /// The paper's CP-Flow test bits/dim.
    pub paper_bpd: f64,
    /// The paper's parameter count.
    pub paper_parameters: String,
    /// The run's folder, relative to the reproduction's output.
    pub dir: String,
    /// The sample grid, relative to the reproduction's output.
    pub samples: String,
    /// Samples in the grid.
    pub grid_samples: usize,
    /// Samples whose inversion did not converge.
    pub samples_not_converged: usize,
    /// The configuration of the run.
    pub config: ImageExperimentConfig,
}

/// What the image part produced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImagePartReport {
    /// One row per dataset.
    pub rows: Vec<ImageRow>,
    /// Datasets not found on disk.
    pub skipped: Vec<SkippedDataset>,
}

fn is_missing(e: &cpflow::CpflowError) -> bool {
    matches!(
        e,
        cpflow::CpflowError::Dataset(
            DatasetError::MissingFile { .. } | DatasetError::Unsupported { .. }
        )
    )
}

/// Loads `dataset` from the first root that has it: `Ok(Err(message))` when none has.
fn load_first(
    opts: &ImagePartOptions,
    dataset: ImageDataset,
) -> Result<std::result::Result<(ImageData, ImageExperimentConfig), String>> {
    let mut last = None;
    for root in &opts.data_roots {
        let cfg = opts.run_config(dataset, root);
        match load_image_data(&cfg.data) {
            Ok(d) => return Ok(Ok((d, cfg))),
            Err(e) if is_missing(&e) => last = Some(e.to_string()),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("loading {} from {}", dataset.name(), root.display())
                });
            }
        }
    }
    Ok(Err(last.unwrap_or_else(|| {
        format!("{}: no data root", dataset.name())
    })))
}

/// Trains on every dataset of `opts` found on disk, into `<out>/images/<dataset>/`, and
/// writes a sample grid per dataset.
pub fn run_image_part(
    opts: &ImagePartOptions,
    out: &Path,
    device: &Device,
    progress: bool,
) -> Result<ImagePartReport> {
    let mut report = ImagePartReport::default();
    for &dataset in &opts.datasets {
        let rel = Path::new("images").join(dataset.name());
        let dir = out.join(&rel);
        if opts.resume
            && let Some(row) = kept_row(opts, dataset, &dir)?
        {
            report.rows.push(row);
            continue;
        }
        let (mut data, cfg) = match load_first(opts, dataset)? {
            Ok(found) => found,
            Err(message) => {
                tracing::warn!("images: skipping {message}");
                report
                    .skipped
                    .push(SkippedDataset::not_on_disk(dataset.name(), message));
                continue;
            }
        };
        if let Some(s) = opts.subset {
            data = ImageData::new(
                data.train.head(s.train),
                data.val.head(s.eval),
                data.test.head(s.eval),
            )?;
        }
        let limit = |v: Option<String>| v.unwrap_or_else(|| "none".to_string());
        tracing::info!(
            "images {}: training on {} images (limits: epochs {}, minutes {})",
            dataset.name(),
            data.train.len(),
            limit(cfg.train.epochs.map(|e| e.to_string())),
            limit(cfg.train.max_minutes.map(|m| m.to_string())),
        );
        let flow_cfg = cfg.flow_config()?;
        let run = ImageRunOptions {
            out_dir: Some(dir.clone()),
            // A run an earlier sitting started continues (a finished one is scored again).
            resume: opts.resume && dir.join(CHECKPOINT_FILE).is_file(),
            progress_bar: progress,
            interrupt: opts.interrupt.clone(),
            training_ended: None,
        };
        let rep = run_image_training(&flow_cfg, &cfg.train, &data, device, &run)
            .with_context(|| format!("training the image flow on {}", dataset.name()))?;
        let flow = ImageFlow::load(&dir.join("model.safetensors"), device)?;
        let (r, c) = opts.grid;
        let mut rng = FlowRng::seed_from_u64(cfg.train.seed);
        let inv = flow.sample(r * c, opts.temperature, &mut rng)?;
        let grid = dir.join("samples.png");
        write_sample_grid(&flow.to_images(&quantize_pixels(&inv.x)?)?, r, c, &grid)?;
        let (paper_bpd, paper_parameters) = paper_image_bpd(dataset);
        let rel_s = |p: &Path| p.display().to_string().replace('\\', "/");
        let row = ImageRow {
            dataset: dataset.name().to_string(),
            report: rep,
            paper_bpd,
            paper_parameters: paper_parameters.to_string(),
            dir: rel_s(&rel),
            samples: rel_s(&rel.join("samples.png")),
            grid_samples: r * c,
            samples_not_converged: inv.report.num_failed(),
            config: cfg,
        };
        write_json_file(&dir.join(ROW_FILE), &row)?;
        report.rows.push(row);
    }
    Ok(report)
}

/// The row an earlier sitting saved in `dir` when `opts` would make the same run (the data
/// root aside), `None` when there is none; an error for a run with other settings.
fn kept_row(
    opts: &ImagePartOptions,
    dataset: ImageDataset,
    dir: &Path,
) -> Result<Option<ImageRow>> {
    let what = format!("images {}", dataset.name());
    kept_result(&dir.join(ROW_FILE), &what, |row: &ImageRow| {
        row.config == opts.run_config(dataset, &row.config.data.root)
    })
}

/// The "Table 2" section of `report.md`.
pub fn image_table_markdown(part: &ImagePartReport, temperature: f64) -> String {
    let mut s = String::from("## Table 2: images (test bits/dim)\n\n");
    s.push_str(
        "Multi-scale CP-Flows with convolutional ICNNs (logit, ActNorm, squeezes), trained \
         with the CG surrogate; the test split is scored once, at the end, with the EMA \
         weights by SLQ (± its standard error over images) and, on the first images, with the \
         exact log-det (the SLQ error measured there). Lower is better.\n\n",
    );
    if part.rows.is_empty() {
        s.push_str("No image dataset was run.\n");
    } else {
        s.push_str(
            "| dataset | parameters (paper) | steps (epochs) | train min | test bpd, SLQ ± SE \
             (images) | SLQ − exact on a subset | paper bpd |\n|---|---|---|---|---|---|---|\n",
        );
        for r in &part.rows {
            let rep = &r.report;
            let (slq, exact) = rep.test.as_ref().map_or_else(
                || ("-".to_string(), "-".to_string()),
                |t| {
                    let slq = format!("{:.3} ± {:.3} ({})", t.slq.bpd, t.slq.std_err, t.slq.images);
                    let exact = t.exact.as_ref().map_or_else(
                        || "-".to_string(),
                        |e| {
                            format!(
                                "{:+.4} ({} images, exact {:.3})",
                                e.slq_minus_exact, e.exact.images, e.exact.bpd
                            )
                        },
                    );
                    (slq, exact)
                },
            );
            let _ = writeln!(
                s,
                "| [{}]({}/report.json) | {} ({}) | {} ({:.2}) | {:.1} | {slq} | {exact} | {:.2} |",
                r.dataset,
                r.dir,
                rep.parameters,
                r.paper_parameters,
                rep.iterations,
                rep.epochs,
                rep.train_time_s / 60.0,
                r.paper_bpd
            );
        }
        s.push('\n');
        for r in &part.rows {
            let _ = writeln!(
                s,
                "**{}** samples (temperature {temperature}; {} of {} inversions not converged): \
                 ![{} samples]({})\n",
                r.dataset, r.samples_not_converged, r.grid_samples, r.dataset, r.samples
            );
        }
        let budgeted: Vec<String> = part
            .rows
            .iter()
            .filter(|r| r.config.train.max_minutes.is_some())
            .map(|r| {
                format!(
                    "{} stopped by a {:.1}-minute budget",
                    r.dataset,
                    r.config.train.max_minutes.unwrap_or(0.0)
                )
            })
            .collect();
        if !budgeted.is_empty() {
            let _ = writeln!(
                s,
                "Budgeted runs ({}): the paper trains 100 epochs on GPUs; run `cargo xtask \
                 reproduce --device cuda` for the full length.\n",
                budgeted.join("; ")
            );
        }
    }
    if !part.skipped.is_empty() {
        s.push_str("Skipped:\n\n");
        for k in &part.skipped {
            let _ = writeln!(s, "- {}", k.message);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_validate() {
        for d in IMAGE_DATASETS {
            for f in [
                image_reference_config,
                image_quick_config,
                image_tiny_config,
            ] {
                let c = f(d);
                c.validate().unwrap();
                assert_eq!(c.data.dataset, d);
            }
        }
        let m = image_reference_config(ImageDataset::Mnist);
        assert_eq!(
            (m.model.width, m.model.nblocks.clone()),
            (64, vec![6, 6, 6])
        );
        let q = image_quick_config(ImageDataset::Mnist);
        assert_eq!(q.train.max_minutes, Some(3.0));
    }

    #[test]
    fn parses_dataset_lists() {
        assert_eq!(
            parse_image_datasets("cifar10, mnist,cifar-10").unwrap(),
            vec![ImageDataset::Cifar10, ImageDataset::Mnist]
        );
        assert_eq!(parse_image_datasets("all").unwrap().len(), 2);
        assert!(parse_image_datasets("svhn").is_err());
        assert!(parse_image_datasets(",").is_err());
    }

    #[test]
    fn missing_data_is_skipped_with_the_download_command() {
        let empty = std::env::temp_dir().join("xtask-images-no-such-root");
        let opts = ImagePartOptions {
            datasets: vec![ImageDataset::Cifar10],
            ..ImagePartOptions::new(vec![empty.join("a")], image_tiny_config)
        };
        let part = run_image_part(&opts, &empty.join("out"), &Device::Cpu, false).unwrap();
        assert!(part.rows.is_empty());
        assert!(
            part.skipped[0]
                .message
                .contains("cargo xtask download cifar10"),
            "{:?}",
            part.skipped
        );
        let md = image_table_markdown(&part, 0.8);
        assert!(md.contains("## Table 2") && md.contains("No image dataset was run."));
    }
}
