//! The run's best weights, `best.safetensors`, kept consistent with its checkpoint across
//! kills: written after the epoch's checkpoint (a kill between the two leaves the best weights
//! one epoch behind, never ahead), tagged with their epoch in the file's metadata
//! ([`BEST_EPOCH_KEY`]), rewritten on resume from the checkpoint's weights when those are the
//! best ones, and checked against the run's best epoch before the test split is scored.
//!
//! Before this, the best weights were written first: a kill while the checkpoint was being
//! written left `best.safetensors` of epoch `E + 1` beside the checkpoint of epoch `E`, and a
//! resume that trained no further scored the test split with epoch `E + 1`'s weights while
//! reporting epoch `E` as the best. Files written before the tag existed carry none and are
//! accepted as they are.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::checkpoint::{VaeCheckpointMeta, VaeTrainState, load_vae_checkpoint, save_vae_file};
use super::config::VaeConfig;
use super::model::Vae;
use crate::error::{CpflowError, Result};

/// Metadata key of `best.safetensors` holding the epoch (counted from 1) whose weights it
/// holds.
pub const BEST_EPOCH_KEY: &str = "cpflow-vae-best-epoch";

/// Writes `vae`'s weights to `path` as the best weights of `epoch` (atomically; the epoch in
/// the metadata under [`BEST_EPOCH_KEY`]).
pub(super) fn save_best_weights(
    path: &Path,
    config: &VaeConfig,
    epoch: usize,
    vae: &Vae,
) -> Result<()> {
    let meta = VaeCheckpointMeta {
        config: config.clone(),
        state: None,
        optimizer: None,
    };
    let tag = [(BEST_EPOCH_KEY, epoch.to_string())];
    save_vae_file(path, &meta, weights_with_prefix(vae), &tag)
}

/// The model's weights under the names a VAE file keeps them (`model.…`).
pub(super) fn weights_with_prefix(vae: &Vae) -> Vec<(String, Tensor)> {
    vae.weight_tensors()
        .into_iter()
        .map(|(k, t)| (format!("model.{k}"), t))
        .collect()
}

/// The epoch recorded in the VAE weights file `path` ([`BEST_EPOCH_KEY`]); `None` for a file
/// without it (written before the tag existed, or by `cpflow import-reference`).
///
/// ```
/// use cpflow::vae::{PosteriorKind, VaeCheckpointMeta, VaeConfig, VaeDatasetName};
/// use cpflow::vae::{best_weights_epoch, save_vae_checkpoint};
/// # fn main() -> cpflow::Result<()> {
/// let meta = VaeCheckpointMeta {
///     config: VaeConfig::reference(VaeDatasetName::FreyFaces, "data", PosteriorKind::Gaussian),
///     state: None,
///     optimizer: None,
/// };
/// let path = std::env::temp_dir()
///     .join(format!("cpflow-doc-vae-best-epoch-{}.safetensors", std::process::id()));
/// let w = cpflow::candle::Tensor::new(&[0.5f64], &cpflow::candle::Device::Cpu)?;
/// save_vae_checkpoint(&path, &meta, vec![("model.w".into(), w)])?;
/// assert_eq!(best_weights_epoch(&path)?, None); // untagged
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn best_weights_epoch(path: &Path) -> Result<Option<usize>> {
    let bytes = std::fs::read(path).map_err(|e| CpflowError::io(path, e))?;
    let (_, header) = crate::checkpoint_digest::read_header(path, &bytes)?;
    let Some(text) = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(BEST_EPOCH_KEY))
    else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(|_| {
        CpflowError::Checkpoint(format!(
            "{}: its `{BEST_EPOCH_KEY}` metadata is {text:?}, not an epoch",
            path.display()
        ))
    })
}

/// The run's best epoch when the weights of the checkpoint `state` came with are its best
/// ones: the best epoch is the checkpoint's own last epoch, and the checkpoint was not
/// paused within the next one (whose steps have moved the weights on).
fn checkpoint_holds_best(state: &VaeTrainState) -> Option<usize> {
    match state.best_val {
        Some((_, best)) if best == state.epoch && state.partial_epoch.is_none() => Some(best),
        _ => None,
    }
}

/// On resume, with `vae` holding the checkpoint's weights: when those are the run's best
/// ([`checkpoint_holds_best`]) and `best` is missing, untagged or of another epoch (the run
/// was killed after the checkpoint, before the best weights; or an older cpflow wrote the
/// best weights of the epoch after the checkpoint's), `best` is rewritten from them. When
/// they are not, a `best` of another epoch than the run's best, or none, is warned about: a
/// later epoch that improves replaces it, else the test scoring refuses it
/// ([`best_weights_for_scoring`]). Fails only when the write fails (the caller names it).
pub(super) fn restore_best_weights(
    best: &Path,
    config: &VaeConfig,
    state: &VaeTrainState,
    vae: &Vae,
) -> Result<()> {
    if let Some(epoch) = checkpoint_holds_best(state) {
        // A missing, untagged, unreadable or other epoch's file alike: rewritten.
        let held = best
            .exists()
            .then(|| best_weights_epoch(best).ok().flatten());
        if held != Some(Some(epoch)) {
            let was = match held {
                None => "missing".to_string(),
                Some(None) => "untagged or unreadable".to_string(),
                Some(Some(e)) => format!("epoch {e}'s"),
            };
            tracing::info!(
                "rewriting {} ({was}) from the checkpoint's weights, those of epoch {epoch}, \
                 the run's best",
                best.display()
            );
            return save_best_weights(best, config, epoch, vae);
        }
        return Ok(());
    }
    if let Some((_, epoch)) = state.best_val {
        let found = if !best.exists() {
            Some("there is none".to_string())
        } else {
            match best_weights_epoch(best) {
                Ok(Some(e)) if e != epoch => Some(format!("it holds epoch {e}'s")),
                Err(e) => Some(format!("it cannot be read ({e})")),
                Ok(_) => None,
            }
        };
        if let Some(found) = found {
            tracing::warn!(
                "{}: the run's best weights are epoch {epoch}'s, but {found}; unless a later \
                 epoch improves on it, the test split cannot be scored",
                best.display()
            );
        }
    }
    Ok(())
}

/// The weights the test split is scored with, from `best` (the run's `best.safetensors`):
/// `None` to score the weights `vae` holds (no epoch trained, and no best weights). A `best`
/// tagged with another epoch than `state`'s best, or a missing one once an epoch was
/// trained, is refused ([`CpflowError::Checkpoint`]): its scores would be another epoch's.
/// A `best` without a tag (older runs, `import-reference`) is taken as it is.
pub(super) fn best_weights_for_scoring(
    best: &Path,
    state: &VaeTrainState,
    device: &Device,
) -> Result<Option<HashMap<String, Tensor>>> {
    let best_epoch = state.best_val.map(|(_, e)| e);
    if !best.exists() {
        return match best_epoch {
            None => Ok(None),
            Some(e) => Err(CpflowError::Checkpoint(format!(
                "{} is missing: the run's best weights (epoch {e}, its best validation \
                 −ELBO) are not in its checkpoint (epoch {}), so its test split cannot be \
                 scored with them; start the run again (`--overwrite`) to get them back",
                best.display(),
                state.epoch
            ))),
        };
    }
    if let (Some(held), Some(want)) = (best_weights_epoch(best)?, best_epoch)
        && held != want
    {
        return Err(CpflowError::Checkpoint(format!(
            "{} holds the weights of epoch {held}, but the run's best validation −ELBO is \
             epoch {want}'s (its checkpoint is at epoch {}): the test scores would be \
             another epoch's, so they are not computed. Epoch {want}'s weights are not in \
             the checkpoint; start the run again (`--overwrite`) to get them back",
            best.display(),
            state.epoch
        )));
    }
    let (_, tensors) = load_vae_checkpoint(best, device)?;
    Ok(Some(tensors))
}

/// Checks that `best` (a run's `best.safetensors`, as `cpflow eval` and `sample` read it) holds
/// the weights of the run's best epoch as its checkpoint beside it records them: a run killed
/// after writing an epoch's checkpoint, before its best weights, holds the previous best
/// until a resume rewrites them (`restore_best_weights`). Such a `best` is refused
/// ([`CpflowError::Checkpoint`]) with the commands that help, rather than scored or sampled
/// as "the best". Passes when either side carries no epoch (an untagged or imported file, no
/// checkpoint beside it, a checkpoint before any epoch ended).
///
pub fn check_best_weights_against_checkpoint(best: &Path) -> Result<()> {
    let Some(held) = best_weights_epoch(best)? else {
        return Ok(());
    };
    let checkpoint = best.with_file_name("checkpoint.safetensors");
    if !checkpoint.is_file() {
        return Ok(());
    }
    let (meta, _) = load_vae_checkpoint(&checkpoint, &Device::Cpu)?;
    let Some(want) = meta.state.as_ref().and_then(|s| s.best_val).map(|(_, e)| e) else {
        return Ok(());
    };
    if held == want {
        return Ok(());
    }
    let dir = best
        .parent()
        .map_or_else(|| ".".to_string(), |d| d.display().to_string());
    Err(CpflowError::Checkpoint(format!(
        "{} holds the weights of epoch {held}, but the run's best validation −ELBO is epoch \
         {want}'s ({}): the run stopped after writing a checkpoint, before its best weights. \
         Continue it with `cpflow vae --out {dir} --resume` (which rewrites them when the \
         checkpoint holds them), or use the last epoch's weights with `--model {}`",
        best.display(),
        checkpoint.display(),
        checkpoint.display()
    )))
}
