//! The Table 3 part of `cargo xtask reproduce`: a VAE with a Gaussian and with a CP-Flow
//! posterior ([`cpflow::vae`]) on each of Frey Faces, Caltech 101 Silhouettes, MNIST and
//! Omniglot found on disk, scored by the single-sample negative ELBO (exact log-det) and an
//! importance-sampled NLL, next to the paper's −ELBO.
//!
//! Each dataset is loaded once and both posteriors train on it with the same configuration
//! (only `model.posterior` differs), into `<out>/vae/<dataset>/<gaussian|cp-flow>/`
//! (`report.json`, `metrics.jsonl`, checkpoints, and `samples.png`: an 8×8 grid of the
//! decoder's pixel means for prior latents). Datasets whose files are missing are
//! skipped with the loader's message (which names `cargo xtask download <name>` where a
//! download exists).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use cpflow::datasets::DatasetError;
use cpflow::vae::{
    MeanWithError, PosteriorKind, VaeArchitecture, VaeConfig, VaeData, VaeDatasetName,
    VaeEvalConfig, VaeImages, VaeReport, VaeRunOptions, VaeStopReason, load_vae, load_vae_data,
    run_vae_on,
};
use serde::{Deserialize, Serialize};

use crate::bench_tabular::SkippedDataset;
use crate::json_file::write_json_file;
use crate::reproduce_resume::{ROW_FILE, kept_result};
pub use crate::reproduce_vae_table::vae_table_markdown;

/// The project's shared data folder (Frey Faces and Caltech 101 Silhouettes are shipped
/// there, not downloadable) relative to the working directory: the VAE data root when
/// neither [`default_vae_roots`] finds.
pub const DEFAULT_VAE_DATA_DIR: &str = "../shared/data";

/// The VAE data roots searched when `--vae-data-dir` is not given: the project's shared data
/// folder found from the repository (as the tabular part finds it, whatever the working
/// directory) and `../shared/data` from the working directory, each that exists once
/// ([`crate::bench_tabular::default_fallback_roots`]); [`DEFAULT_VAE_DATA_DIR`] when neither
/// exists (the skip message then names it). Never empty.
pub fn default_vae_roots() -> Vec<PathBuf> {
    let roots = crate::bench_tabular::default_fallback_roots();
    if roots.is_empty() {
        vec![PathBuf::from(DEFAULT_VAE_DATA_DIR)]
    } else {
        roots
    }
}

/// Both posteriors of Table 3, in the table's order.
pub const VAE_POSTERIORS: [PosteriorKind; 2] = [PosteriorKind::Gaussian, PosteriorKind::CpFlow];

/// Keep only the first images of each split (for tests in the debug profile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaeSubset {
    /// Training images kept.
    pub train: usize,
    /// Validation and test images kept (each).
    pub eval: usize,
}

/// What the VAE part runs.
#[derive(Clone, Debug)]
pub struct VaePartOptions {
    /// Datasets to try, in order (empty: the part is skipped, `--no-vae`).
    pub datasets: Vec<VaeDatasetName>,
    /// The data root searched first (`--vae-data-dir`, default the first of
    /// [`default_vae_roots`]).
    pub data_dir: PathBuf,
    /// Roots searched next (the other default roots, then the run's `--data-dir`, where
    /// `cargo xtask download omniglot` and `mnist` put their files).
    pub fallback_roots: Vec<PathBuf>,
    /// The configuration of a run on a dataset found under a root; `model.posterior` is set
    /// to the posterior afterwards in any case.
    pub config: fn(VaeDatasetName, PosteriorKind, &Path) -> VaeConfig,
    /// Training budget of every run in minutes (`train.max_minutes`), applied after
    /// `config`; `None` leaves the configuration's own.
    pub max_minutes: Option<f64>,
    /// Train and evaluate on the first images of each split only.
    pub subset: Option<VaeSubset>,
    /// Keep the runs an earlier sitting finished ([`ROW_FILE`]) and continue the others from
    /// their checkpoints (`reproduce --resume`; the time budget counts every sitting's
    /// training).
    pub resume: bool,
    /// Pauses the run in progress after its step (checkpointed), or stops its test score.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl VaePartOptions {
    /// The four datasets under `data_dir` (then `fallback`) with configuration `config`.
    pub fn new(
        data_dir: PathBuf,
        fallback: PathBuf,
        config: fn(VaeDatasetName, PosteriorKind, &Path) -> VaeConfig,
    ) -> Self {
        VaePartOptions {
            datasets: VaeDatasetName::ALL.to_vec(),
            data_dir,
            fallback_roots: vec![fallback],
            config,
            max_minutes: None,
            subset: None,
            resume: false,
            interrupt: None,
        }
    }
}

impl VaePartOptions {
    /// The configuration of the run of `dataset` with `posterior` on data under `root`:
    /// [`VaePartOptions::config`], the posterior, then [`VaePartOptions::max_minutes`].
    fn run_config(
        &self,
        dataset: VaeDatasetName,
        posterior: PosteriorKind,
        root: &Path,
    ) -> VaeConfig {
        let mut cfg = (self.config)(dataset, posterior, root);
        cfg.model.posterior = posterior;
        if self.max_minutes.is_some() {
            cfg.train.max_minutes = self.max_minutes;
        }
        cfg
    }
}

/// The paper-sized run ([`VaeConfig::reference`]: reference widths, up to 2,000 epochs with
/// early stopping, importance sampling with K = 1000 on the whole test split).
pub fn vae_reference_config(
    dataset: VaeDatasetName,
    posterior: PosteriorKind,
    root: &Path,
) -> VaeConfig {
    VaeConfig::reference(dataset, root, posterior)
}

/// `--quick`: [`VaeConfig::cpu`] (half-width encoder/decoder in f32, the reference
/// posterior) for 3 epochs; importance sampling with K = 50 on the first 20 test images.
pub fn vae_quick_config(
    dataset: VaeDatasetName,
    posterior: PosteriorKind,
    root: &Path,
) -> VaeConfig {
    let mut c = VaeConfig::cpu(dataset, root, posterior);
    c.train.epochs = 3;
    c.eval = VaeEvalConfig {
        is_samples: 50,
        is_chunk: 50,
        is_images: Some(20),
    };
    c
}

/// For tests: channels 2, an 8-d feature, z = 4, one CP-Flow block of PICNN(8, 2); one
/// epoch with batches of 50; importance sampling with K = 5 on 2 test images.
pub fn vae_tiny_config(
    dataset: VaeDatasetName,
    posterior: PosteriorKind,
    root: &Path,
) -> VaeConfig {
    let mut c = VaeConfig::cpu(dataset, root, posterior);
    c.model.architecture = VaeArchitecture {
        channels: 2,
        feature_dim: 8,
        head_channels: 4,
    };
    c.model.latent_dim = 4;
    c.model.blocks = 1;
    c.model.width = 8;
    c.model.depth = 2;
    c.train.epochs = 1;
    c.train.batch_size = 50;
    c.eval = VaeEvalConfig {
        is_samples: 5,
        is_chunk: 5,
        is_images: Some(2),
    };
    c
}

/// Parses `--vae-datasets`: comma-separated `frey-faces`, `caltech101`, `mnist`,
/// `omniglot` or `all`.
pub fn parse_vae_datasets(list: &str) -> Result<Vec<VaeDatasetName>> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let lower = name.to_ascii_lowercase();
        let found = if lower == "all" {
            VaeDatasetName::ALL.to_vec()
        } else if let Some(d) = VaeDatasetName::from_name(&lower) {
            vec![d]
        } else {
            bail!(
                "unknown VAE dataset {name:?}: use frey-faces, caltech101, mnist, omniglot or all"
            );
        };
        for d in found {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    if out.is_empty() {
        bail!("--vae-datasets is empty (use --no-vae to skip the VAE part)");
    }
    Ok(out)
}

/// The posterior's folder and report name: `gaussian` or `cp-flow`.
pub fn posterior_name(p: PosteriorKind) -> &'static str {
    match p {
        PosteriorKind::Gaussian => "gaussian",
        PosteriorKind::CpFlow => "cp-flow",
    }
}

/// The paper's Table 3 −ELBO (Frey Faces in bits/dim, the others in nats; the CP-Flow row is
/// the input-augmented PICNN). MNIST is not in Table 3.
pub fn paper_vae_neg_elbo(dataset: VaeDatasetName, posterior: PosteriorKind) -> Option<f64> {
    match (dataset, posterior) {
        (VaeDatasetName::FreyFaces, PosteriorKind::Gaussian) => Some(4.53),
        (VaeDatasetName::FreyFaces, PosteriorKind::CpFlow) => Some(4.45),
        (VaeDatasetName::Omniglot, PosteriorKind::Gaussian) => Some(104.28),
        (VaeDatasetName::Omniglot, PosteriorKind::CpFlow) => Some(100.82),
        (VaeDatasetName::Caltech101, PosteriorKind::Gaussian) => Some(110.80),
        (VaeDatasetName::Caltech101, PosteriorKind::CpFlow) => Some(105.17),
        (VaeDatasetName::Mnist, _) => None,
    }
}

/// One row of the Table 3 section: one dataset, one posterior.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VaeRow {
    /// Dataset name (`frey-faces`, ...).
    pub dataset: String,
    /// `gaussian` or `cp-flow`.
    pub posterior: String,
    /// Unit of `neg_elbo`, `is_nll` and `paper_neg_elbo`: `bits/dim` (Frey Faces) or `nats`.
    pub unit: String,
    /// Test −ELBO, one posterior sample per image, exact log-det, in `unit`.
    pub neg_elbo: MeanWithError,
    /// Test importance-sampled NLL in `unit` (`None` when not computed).
    pub is_nll: Option<MeanWithError>,
    /// Importance samples per image.
    pub is_samples: usize,
    /// Epochs run.
    pub epochs: usize,
    /// Why training stopped.
    pub stop_reason: VaeStopReason,
    /// Mean seconds per training epoch.
    pub seconds_per_epoch: f64,
    /// Parameters of encoder, decoder and posterior.
    pub num_parameters: usize,
    /// Images per split (train / val / test) actually used.
    pub split_sizes: [usize; 3],
    /// The paper's −ELBO for this row, in `unit`.
    pub paper_neg_elbo: Option<f64>,
    /// The run's folder, relative to the reproduction's output.
    pub dir: String,
    /// The configuration of the run.
    pub config: VaeConfig,
}

impl VaeRow {
    fn new(report: &VaeReport, dir: String) -> Self {
        let cfg = &report.config;
        let bits = report.test_neg_elbo_bpd.is_some();
        VaeRow {
            dataset: cfg.data.dataset.name().to_string(),
            posterior: posterior_name(cfg.model.posterior).to_string(),
            unit: if bits { "bits/dim" } else { "nats" }.to_string(),
            neg_elbo: report.test_neg_elbo_bpd.unwrap_or(report.test_neg_elbo),
            is_nll: if bits {
                report.test_is_nll_bpd
            } else {
                report.test_is_nll
            },
            is_samples: report.is_samples,
            epochs: report.epochs,
            stop_reason: report.stop_reason,
            seconds_per_epoch: report.seconds_per_epoch,
            num_parameters: report.num_parameters,
            split_sizes: report.split_sizes,
            paper_neg_elbo: paper_vae_neg_elbo(cfg.data.dataset, cfg.model.posterior),
            dir,
            config: cfg.clone(),
        }
    }
}

/// What the VAE part produced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VaePartReport {
    /// One row per dataset and posterior.
    pub rows: Vec<VaeRow>,
    /// Datasets not found on disk.
    pub skipped: Vec<SkippedDataset>,
}

fn is_missing(e: &DatasetError) -> bool {
    matches!(
        e,
        DatasetError::MissingFile { .. } | DatasetError::Unsupported { .. }
    )
}

fn truncate(images: &mut VaeImages, keep: usize) {
    if images.n > keep {
        let d = images.pixels.len() / images.n;
        images.n = keep;
        images.pixels.truncate(keep * d);
    }
}

/// Loads `dataset` from the first root that has it: `Ok(Err(message))` when none has.
fn load_first(
    opts: &VaePartOptions,
    dataset: VaeDatasetName,
) -> Result<std::result::Result<(VaeData, PathBuf), String>> {
    let mut roots = vec![opts.data_dir.clone()];
    for r in &opts.fallback_roots {
        if !roots.contains(r) {
            roots.push(r.clone());
        }
    }
    let mut last_error = None;
    for root in &roots {
        let seed = (opts.config)(dataset, PosteriorKind::Gaussian, root)
            .data
            .seed;
        match load_vae_data(dataset, root, seed) {
            Ok(data) => return Ok(Ok((data, root.clone()))),
            Err(e) if is_missing(&e) => {
                last_error = Some(e.to_string());
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("loading {dataset} from {}", root.display()));
            }
        }
    }
    // The last root is the run's data directory, where `cargo xtask download` puts files:
    // its message names the right place.
    let others: Vec<String> = roots[..roots.len() - 1]
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    let mut msg = last_error.unwrap_or_else(|| format!("{dataset}: no data root"));
    if !others.is_empty() {
        let _ = write!(msg, " (also looked under {})", others.join(", "));
    }
    Ok(Err(msg))
}

/// Runs both posteriors on every dataset of `opts` found on disk, into
/// `<out>/vae/<dataset>/<posterior>/`.
pub fn run_vae_part(opts: &VaePartOptions, out: &Path, progress: bool) -> Result<VaePartReport> {
    let mut report = VaePartReport::default();
    for &dataset in &opts.datasets {
        let rel_dir = |posterior| {
            Path::new("vae")
                .join(dataset.name())
                .join(posterior_name(posterior))
        };
        // Rows an earlier sitting finished; the data are loaded only for the others.
        let mut kept = Vec::new();
        for posterior in VAE_POSTERIORS {
            kept.push(if opts.resume {
                kept_row(opts, dataset, posterior, &out.join(rel_dir(posterior)))?
            } else {
                None
            });
        }
        if kept.iter().all(Option::is_some) {
            report.rows.extend(kept.into_iter().flatten());
            continue;
        }
        let (mut data, root) = match load_first(opts, dataset)? {
            Ok(found) => found,
            Err(message) => {
                tracing::warn!("VAE: skipping {message}");
                report
                    .skipped
                    .push(SkippedDataset::not_on_disk(dataset.name(), message));
                continue;
            }
        };
        if let Some(s) = opts.subset {
            truncate(&mut data.train, s.train);
            truncate(&mut data.val, s.eval);
            truncate(&mut data.test, s.eval);
        }
        for (posterior, kept) in VAE_POSTERIORS.into_iter().zip(kept) {
            if let Some(row) = kept {
                report.rows.push(row);
                continue;
            }
            let cfg = opts.run_config(dataset, posterior, &root);
            let rel = rel_dir(posterior);
            tracing::info!(
                "VAE {dataset} / {}: up to {} epochs on {} images",
                posterior_name(posterior),
                cfg.train.epochs,
                data.train.n
            );
            let run = VaeRunOptions {
                // A run an earlier sitting started continues (a finished one is scored again).
                resume: opts.resume,
                progress_bar: progress,
                interrupt: opts.interrupt.clone(),
                training_ended: None,
            };
            let rep = run_vae_on(&cfg, &data, &out.join(&rel), &run).with_context(|| {
                format!(
                    "VAE on {dataset} with the {} posterior",
                    posterior_name(posterior)
                )
            })?;
            write_samples(&out.join(&rel))?;
            let row = VaeRow::new(&rep, rel.display().to_string().replace('\\', "/"));
            write_json_file(&out.join(&rel).join(ROW_FILE), &row)?;
            report.rows.push(row);
        }
    }
    if report.rows.is_empty() && !report.skipped.is_empty() {
        tracing::warn!(
            "VAE part (Table 3) skipped: none of its datasets was found (see above). Frey Faces \
             and Caltech 101 Silhouettes are read from --vae-data-dir (default: the project's \
             shared data folder), MNIST and Omniglot also from --data-dir after `cargo xtask \
             download mnist|omniglot`"
        );
    }
    Ok(report)
}

/// The row an earlier sitting saved in `dir` when `opts` would make the same run (the data
/// root aside), `None` when there is none; an error for a run with other settings.
fn kept_row(
    opts: &VaePartOptions,
    dataset: VaeDatasetName,
    posterior: PosteriorKind,
    dir: &Path,
) -> Result<Option<VaeRow>> {
    let what = format!("VAE {dataset} / {}", posterior_name(posterior));
    kept_result(&dir.join(ROW_FILE), &what, |row: &VaeRow| {
        row.config == opts.run_config(dataset, posterior, &row.config.data.root)
    })
}

/// Side of the square grid of decoded prior samples each run writes.
pub const VAE_GRID: usize = 8;

/// `dir/samples.png`: the pixel means of `p(x | z)` for `VAE_GRID²` latents from the prior
/// (seed 0), decoded by the run's best weights.
fn write_samples(dir: &Path) -> Result<()> {
    let (vae, _) = load_vae(dir, &candle_core::Device::Cpu)?;
    let mut rng = cpflow::FlowRng::seed_from_u64(0);
    let z = vae.prior_latents(VAE_GRID * VAE_GRID, 1.0, &mut rng)?;
    let path = dir.join("samples.png");
    cpflow::image::write_sample_grid(&vae.decoded_means(&z)?, VAE_GRID, VAE_GRID, &path)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dataset_lists() {
        assert_eq!(
            parse_vae_datasets("frey-faces, caltech101,frey-faces").unwrap(),
            vec![VaeDatasetName::FreyFaces, VaeDatasetName::Caltech101]
        );
        assert_eq!(parse_vae_datasets("all").unwrap().len(), 4);
        assert!(parse_vae_datasets("cifar10").is_err());
        assert!(parse_vae_datasets(" , ").is_err());
    }

    #[test]
    fn presets_differ_only_in_the_posterior() {
        let root = Path::new("/data");
        for f in [vae_reference_config, vae_quick_config, vae_tiny_config] {
            for d in VaeDatasetName::ALL {
                let mut g = f(d, PosteriorKind::Gaussian, root);
                let c = f(d, PosteriorKind::CpFlow, root);
                g.validate().unwrap();
                c.validate().unwrap();
                assert_eq!(c.model.posterior, PosteriorKind::CpFlow);
                g.model.posterior = PosteriorKind::CpFlow;
                assert_eq!(g, c);
            }
        }
        let q = vae_quick_config(VaeDatasetName::Mnist, PosteriorKind::CpFlow, root);
        assert_eq!((q.train.epochs, q.eval.is_samples), (3, 50));
        assert_eq!(q.eval.is_images, Some(20));
    }

    #[test]
    fn paper_numbers_follow_table_3() {
        assert_eq!(
            paper_vae_neg_elbo(VaeDatasetName::FreyFaces, PosteriorKind::CpFlow),
            Some(4.45)
        );
        assert_eq!(
            paper_vae_neg_elbo(VaeDatasetName::Caltech101, PosteriorKind::Gaussian),
            Some(110.80)
        );
        assert_eq!(
            paper_vae_neg_elbo(VaeDatasetName::Mnist, PosteriorKind::Gaussian),
            None
        );
    }

    #[test]
    fn missing_data_is_skipped_with_the_download_command() {
        let empty = std::env::temp_dir().join("xtask-vae-no-such-root");
        let opts = VaePartOptions {
            datasets: vec![VaeDatasetName::Omniglot, VaeDatasetName::FreyFaces],
            ..VaePartOptions::new(empty.join("a"), empty.join("b"), vae_tiny_config)
        };
        let part = run_vae_part(&opts, &empty.join("out"), false).unwrap();
        assert!(part.rows.is_empty());
        assert_eq!(part.skipped.len(), 2);
        assert!(
            part.skipped[0]
                .message
                .contains("cargo xtask download omniglot"),
            "{:?}",
            part.skipped[0]
        );
        assert!(
            part.skipped[1].message.contains("frey"),
            "{:?}",
            part.skipped
        );
        let md = vae_table_markdown(&part);
        assert!(md.contains("## Table 3") && md.contains("No VAE dataset was run."));
    }
}
