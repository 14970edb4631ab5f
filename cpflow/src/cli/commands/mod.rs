//! The subcommands.

mod checkpoint_hint;
mod eval;
mod eval_image;
mod eval_vae;
mod import_reference;
mod ot;
mod plot;
mod run_files;
mod sample;
mod score_format;
mod train;
mod train_image;
mod vae;

pub use eval::eval;
pub use import_reference::{ImportReferenceArgs, import_reference};
pub use ot::ot;
pub use plot::plot;
pub use sample::sample;
pub use train::train;
#[cfg(fuzzing)]
pub(crate) use vae::read_vae_config;
pub use vae::vae;

use score_format::{cg_unconverged_clause, plus_minus, score, signed_score};

use crate::{FloatType, Flow};
use anyhow::{Context, Result, bail};
use candle_core::Device;
use std::path::{Path, PathBuf};

use crate::cli::run_config::{Overrides, RunConfig, resolve};

/// A progress bar on stderr over `n` items done `chunk` at a time, drawn as
/// `{label} [bar] pos/len{unit} [elapsed, eta]` (hidden with `--no-progress`, for a single
/// chunk, and by indicatif when stderr is not a terminal).
fn chunk_progress_bar(
    no_progress: bool,
    n: usize,
    chunk: usize,
    label: &str,
    unit: &str,
) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressStyle};
    if no_progress || n <= chunk {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n as u64);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{label} {{bar:30}} {{pos}}/{{len}}{unit} [{{elapsed_precise}}, eta {{eta_precise}}]"
    )) {
        bar.set_style(style);
    }
    bar
}

/// A trained model located by `--model`: the weights file and, for a run directory, the
/// directory itself (for its `config.toml`).
pub struct ModelLocation {
    pub file: PathBuf,
    pub run_dir: Option<PathBuf>,
}

/// `--model DIR` → `DIR/model.safetensors` of a flow, or the best weights
/// `DIR/best.safetensors` of a VAE (what its report scores), or else `DIR/checkpoint.safetensors`
/// (a run that has not finished, or a VAE run no epoch of which has ended); `--model FILE` →
/// that file.
pub fn locate_model(path: &Path) -> Result<ModelLocation> {
    if path.is_dir() {
        for name in [
            "model.safetensors",
            "best.safetensors",
            "checkpoint.safetensors",
        ] {
            let f = path.join(name);
            if f.exists() {
                return Ok(ModelLocation {
                    file: f,
                    run_dir: Some(path.to_path_buf()),
                });
            }
        }
        bail!(
            "{} has no model.safetensors, checkpoint.safetensors or best.safetensors",
            path.display()
        );
    }
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    Ok(ModelLocation {
        file: path.to_path_buf(),
        run_dir: path.parent().map(Path::to_path_buf),
    })
}

/// Loads the model, optionally in another float type (then rebuilt in it, the weights
/// converted).
pub fn load_flow(file: &Path, device: &Device, float: Option<FloatType>) -> Result<Flow> {
    let flow = Flow::load(file, device).with_context(|| format!("loading {}", file.display()))?;
    match float {
        Some(f) if f != flow.float() => {
            let mut cfg = flow.config().clone();
            cfg.float = f;
            let converted = Flow::new(cfg, device)?;
            converted.set_weights(&flow.weight_tensors().into_iter().collect(), "")?;
            Ok(converted)
        }
        _ => Ok(flow),
    }
}

/// The run configuration saved in a run directory, if any.
pub fn saved_run_config(run_dir: Option<&Path>) -> Result<Option<RunConfig>> {
    let Some(dir) = run_dir else { return Ok(None) };
    let path = dir.join("config.toml");
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(resolve(Some(&path), &Overrides::default())?))
}

/// Where a tabular benchmark named by `--data` is read: the saved run's `data.root`, else the
/// default data root.
pub fn data_root(saved: Option<&RunConfig>) -> PathBuf {
    saved.map_or_else(
        || crate::cli::run_config::DataSection::default().root,
        |c| c.data.root.clone(),
    )
}
