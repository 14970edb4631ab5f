//! VAE checkpoints: weights, optimiser moments and best weights in one safetensors file, the
//! configuration and trainer state as JSON in its metadata; written atomically.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use safetensors::tensor::Metadata;
use serde::{Deserialize, Serialize};

use super::adamax::AdamaxState;
use super::config::VaeConfig;
use crate::checkpoint::{TensorLayout, write_atomic};
use crate::error::{CpflowError, Result};
use crate::rng::RngState;
use crate::train::TrainStepStats;

mod state_check;
#[cfg(test)]
mod tests_state_check;

pub(super) use state_check::check_resumable;

/// Metadata key of a VAE checkpoint.
pub const VAE_METADATA_KEY: &str = "cpflow-vae";

/// Trainer progress saved with the weights.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::vae::load_vae_checkpoint;
/// # use cpflow::vae::{PosteriorKind, VaeArchitecture, VaeConfig, VaeData, VaeDatasetName};
/// # use cpflow::vae::{VaeImages, VaeLikelihood, VaeRunOptions, run_vae_on};
/// # fn main() -> cpflow::Result<()> {
/// // One epoch of a tiny VAE on made-up static binary 28×28 images.
/// let images = |ks: &[usize]| VaeImages {
///     n: ks.len(),
///     pixels: ks
///         .iter()
///         .flat_map(|k| (0..784).map(move |i| u8::from((i / 28 + i % 28 + k) % 3 == 0)))
///         .collect(),
/// };
/// let data = VaeData {
///     name: VaeDatasetName::Caltech101,
///     likelihood: VaeLikelihood::Bernoulli,
///     height: 28,
///     width: 28,
///     train: images(&[0, 1, 2, 3]),
///     val: images(&[1, 2]),
///     test: images(&[0, 2]),
///     dynamic_binarization: false,
/// };
/// let mut cfg =
///     VaeConfig::reference(VaeDatasetName::Caltech101, "unused", PosteriorKind::Gaussian);
/// cfg.model.latent_dim = 2;
/// cfg.model.architecture = VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 };
/// (cfg.train.epochs, cfg.train.batch_size) = (1, 2);
/// (cfg.eval.is_samples, cfg.eval.is_chunk) = (4, 4);
/// let out = std::env::temp_dir().join(format!("cpflow-doc-vae-state-{}", std::process::id()));
/// let report = run_vae_on(&cfg, &data, &out, &VaeRunOptions::default())?;
/// let (meta, _) = load_vae_checkpoint(&out.join("checkpoint.safetensors"), &Device::Cpu)?;
/// let state = meta.state.unwrap();
/// assert_eq!((state.epoch, state.steps, state.bad_epochs), (1, 2, 0));
/// assert_eq!(state.best_val, Some((report.best_val_neg_elbo, 1)));
/// assert_eq!(state.val_curve, report.val_curve);
/// assert!(state.partial_epoch.is_none()); // written at the end of the epoch
/// // Both steps counted; the Gaussian posterior solves no CG system.
/// assert_eq!((state.step_stats.steps, state.step_stats.cg_systems), (2, 0));
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeTrainState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimiser steps completed.
    pub steps: usize,
    /// Best validation −ELBO so far (nats per image) and its epoch.
    pub best_val: Option<(f64, usize)>,
    /// Epochs without improvement (counted once `epoch ≥ warmup`).
    pub bad_epochs: usize,
    /// Validation −ELBO per epoch.
    pub val_curve: Vec<(usize, f64)>,
    /// Seconds of training so far (all sessions).
    pub train_seconds: f64,
    /// The trainer's RNG.
    pub rng: RngState,
    /// The epoch in progress, when the run was paused within it (absent at epoch ends, and in
    /// checkpoints written before runs could pause mid-epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_epoch: Option<PartialEpoch>,
    /// Totals of the run's training steps (the last loss, CG iterations and convergence),
    /// every invocation included, as `report.json` gives them. A checkpoint written before
    /// they were kept resumes with none: they then count the steps after the resume, from
    /// step [`TrainStepStats::counted_from`]`(steps)`.
    #[serde(default)]
    pub step_stats: TrainStepStats,
}

/// An epoch paused between two steps: what [`VaeTrainState`] needs to finish it as the
/// uninterrupted run would have (same batches, same random draws, same epoch record).
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::vae::load_vae_checkpoint;
/// # use cpflow::vae::{PosteriorKind, VaeArchitecture, VaeConfig, VaeData, VaeDatasetName};
/// # use cpflow::vae::{VaeImages, VaeLikelihood, VaeRunOptions, run_vae_on};
/// # fn main() -> cpflow::Result<()> {
/// // One epoch of a tiny VAE on made-up static binary 28×28 images.
/// let images = |ks: &[usize]| VaeImages {
///     n: ks.len(),
///     pixels: ks
///         .iter()
///         .flat_map(|k| (0..784).map(move |i| u8::from((i / 28 + i % 28 + k) % 3 == 0)))
///         .collect(),
/// };
/// let data = VaeData {
///     name: VaeDatasetName::Caltech101,
///     likelihood: VaeLikelihood::Bernoulli,
///     height: 28,
///     width: 28,
///     train: images(&[0, 1, 2, 3]),
///     val: images(&[1, 2]),
///     test: images(&[0, 2]),
///     dynamic_binarization: false,
/// };
/// let mut cfg =
///     VaeConfig::reference(VaeDatasetName::Caltech101, "unused", PosteriorKind::Gaussian);
/// cfg.model.latent_dim = 2;
/// cfg.model.architecture = VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 };
/// (cfg.train.epochs, cfg.train.batch_size) = (1, 2);
/// (cfg.eval.is_samples, cfg.eval.is_chunk) = (4, 4);
/// let out = std::env::temp_dir().join(format!("cpflow-doc-vae-partial-{}", std::process::id()));
/// // Interrupted after the first of the epoch's two steps.
/// let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
/// let opts = VaeRunOptions { interrupt: Some(stop), ..Default::default() };
/// assert!(run_vae_on(&cfg, &data, &out, &opts).is_err());
/// let (meta, _) = load_vae_checkpoint(&out.join("checkpoint.safetensors"), &Device::Cpu)?;
/// let state = meta.state.unwrap();
/// assert_eq!((state.epoch, state.steps), (0, 1));
/// let partial = state.partial_epoch.unwrap();
/// // The batch order is drawn again from the RNG state before the epoch's shuffle.
/// assert_ne!(partial.shuffle_rng, state.rng);
/// assert_eq!(partial.sums.batches, 1);
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// The trainer's RNG before the epoch's shuffle: the batch order is drawn again from it
    /// (the RNG after the last step done is [`VaeTrainState::rng`]).
    pub shuffle_rng: RngState,
    /// The batches of the epoch already trained.
    pub sums: EpochSums,
}

/// Running sums of an epoch's training steps (its [`super::VaeEpochRecord`] is made from
/// them).
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::vae::load_vae_checkpoint;
/// # use cpflow::vae::{PosteriorKind, VaeArchitecture, VaeConfig, VaeData, VaeDatasetName};
/// # use cpflow::vae::{VaeImages, VaeLikelihood, VaeRunOptions, run_vae_on};
/// # fn main() -> cpflow::Result<()> {
/// // One epoch of a tiny VAE on made-up static binary 28×28 images.
/// let images = |ks: &[usize]| VaeImages {
///     n: ks.len(),
///     pixels: ks
///         .iter()
///         .flat_map(|k| (0..784).map(move |i| u8::from((i / 28 + i % 28 + k) % 3 == 0)))
///         .collect(),
/// };
/// let data = VaeData {
///     name: VaeDatasetName::Caltech101,
///     likelihood: VaeLikelihood::Bernoulli,
///     height: 28,
///     width: 28,
///     train: images(&[0, 1, 2, 3]),
///     val: images(&[1, 2]),
///     test: images(&[0, 2]),
///     dynamic_binarization: false,
/// };
/// let mut cfg =
///     VaeConfig::reference(VaeDatasetName::Caltech101, "unused", PosteriorKind::Gaussian);
/// cfg.model.latent_dim = 2;
/// cfg.model.architecture = VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 };
/// (cfg.train.epochs, cfg.train.batch_size) = (1, 2);
/// (cfg.eval.is_samples, cfg.eval.is_chunk) = (4, 4);
/// let out = std::env::temp_dir().join(format!("cpflow-doc-vae-sums-{}", std::process::id()));
/// // Interrupted after the first of the epoch's two steps.
/// let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
/// let opts = VaeRunOptions { interrupt: Some(stop), ..Default::default() };
/// assert!(run_vae_on(&cfg, &data, &out, &opts).is_err());
/// let (meta, _) = load_vae_checkpoint(&out.join("checkpoint.safetensors"), &Device::Cpu)?;
/// let state = meta.state.unwrap();
/// assert_eq!((state.epoch, state.steps), (0, 1));
/// let partial = state.partial_epoch.unwrap();
/// let sums = partial.sums;
/// assert_eq!((sums.batches, sums.cg_systems), (1, 0)); // the Gaussian posterior solves no CG
/// assert!(sums.loss.is_finite() && sums.reconstruction > 0.0 && sums.seconds > 0.0);
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    /// Steps (batches) done.
    pub batches: usize,
    /// Sum of the steps' training losses.
    pub loss: f64,
    /// Sum of the steps' reconstruction terms.
    pub reconstruction: f64,
    /// CG iterations, over all systems.
    pub cg_iterations: usize,
    /// CG systems solved.
    pub cg_systems: usize,
    /// CG systems that met the tolerance.
    pub cg_converged: usize,
    /// Seconds of the steps.
    pub seconds: f64,
}

/// The JSON part of a VAE checkpoint.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::vae::load_vae_checkpoint;
/// # use cpflow::vae::{PosteriorKind, VaeArchitecture, VaeConfig, VaeData, VaeDatasetName};
/// # use cpflow::vae::{VaeImages, VaeLikelihood, VaeRunOptions, run_vae_on};
/// # fn main() -> cpflow::Result<()> {
/// // One epoch of a tiny VAE on made-up static binary 28×28 images.
/// let images = |ks: &[usize]| VaeImages {
///     n: ks.len(),
///     pixels: ks
///         .iter()
///         .flat_map(|k| (0..784).map(move |i| u8::from((i / 28 + i % 28 + k) % 3 == 0)))
///         .collect(),
/// };
/// let data = VaeData {
///     name: VaeDatasetName::Caltech101,
///     likelihood: VaeLikelihood::Bernoulli,
///     height: 28,
///     width: 28,
///     train: images(&[0, 1, 2, 3]),
///     val: images(&[1, 2]),
///     test: images(&[0, 2]),
///     dynamic_binarization: false,
/// };
/// let mut cfg =
///     VaeConfig::reference(VaeDatasetName::Caltech101, "unused", PosteriorKind::Gaussian);
/// cfg.model.latent_dim = 2;
/// cfg.model.architecture = VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 };
/// (cfg.train.epochs, cfg.train.batch_size) = (1, 2);
/// (cfg.eval.is_samples, cfg.eval.is_chunk) = (4, 4);
/// let out = std::env::temp_dir().join(format!("cpflow-doc-vae-meta-{}", std::process::id()));
/// let report = run_vae_on(&cfg, &data, &out, &VaeRunOptions::default())?;
/// // The resumable checkpoint has the trainer and optimiser state, the best weights do not.
/// let (ckpt, _) = load_vae_checkpoint(&out.join("checkpoint.safetensors"), &Device::Cpu)?;
/// let (best, _) = load_vae_checkpoint(&out.join("best.safetensors"), &Device::Cpu)?;
/// assert!(ckpt.state.is_some() && ckpt.optimizer.is_some());
/// assert!(best.state.is_none() && best.optimizer.is_none());
/// assert_eq!((ckpt.config, best.config), (cfg.clone(), cfg));
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeCheckpointMeta {
    /// The experiment's configuration.
    pub config: VaeConfig,
    /// Trainer state (absent in a weights-only file).
    pub state: Option<VaeTrainState>,
    /// Optimiser scalars.
    pub optimizer: Option<AdamaxState>,
}

/// Write a checkpoint atomically.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::vae::{PosteriorKind, VaeCheckpointMeta, VaeConfig, VaeDatasetName};
/// use cpflow::vae::{load_vae_checkpoint, save_vae_checkpoint};
/// # fn main() -> cpflow::Result<()> {
/// let meta = VaeCheckpointMeta {
///     config: VaeConfig::reference(VaeDatasetName::FreyFaces, "data", PosteriorKind::CpFlow),
///     state: None,
///     optimizer: None,
/// };
/// let name = format!("cpflow-doc-vae-ckpt-{}.safetensors", std::process::id());
/// let path = std::env::temp_dir().join(name);
/// let w = Tensor::new(&[0.25f64, -1.5], &Device::Cpu)?;
/// save_vae_checkpoint(&path, &meta, vec![("model.w".into(), w)])?;
/// let (back, tensors) = load_vae_checkpoint(&path, &Device::Cpu)?;
/// assert_eq!(back, meta);
/// assert_eq!(tensors["model.w"].to_vec1::<f64>()?, vec![0.25, -1.5]);
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn save_vae_checkpoint(
    path: &Path,
    meta: &VaeCheckpointMeta,
    tensors: Vec<(String, Tensor)>,
) -> Result<()> {
    save_vae_file(path, meta, tensors, &[])
}

/// [`save_vae_checkpoint`] with more metadata entries `extra` (the best weights' epoch).
pub(super) fn save_vae_file(
    path: &Path,
    meta: &VaeCheckpointMeta,
    tensors: Vec<(String, Tensor)>,
    extra: &[(&str, String)],
) -> Result<()> {
    let mut info: HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    info.insert(VAE_METADATA_KEY.to_string(), serde_json::to_string(meta)?);
    write_atomic(path, &crate::named_vars::serialize_finite(tensors, info)?)
}

/// Read a VAE checkpoint.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::vae::{PosteriorKind, VaeCheckpointMeta, VaeConfig, VaeDatasetName};
/// use cpflow::vae::{load_vae_checkpoint, save_vae_checkpoint};
/// # fn main() -> cpflow::Result<()> {
/// let meta = VaeCheckpointMeta {
///     config: VaeConfig::reference(VaeDatasetName::FreyFaces, "data", PosteriorKind::CpFlow),
///     state: None,
///     optimizer: None,
/// };
/// let name = format!("cpflow-doc-vae-load-ckpt-{}.safetensors", std::process::id());
/// let path = std::env::temp_dir().join(name);
/// let w = Tensor::new(&[0.25f64, -1.5], &Device::Cpu)?;
/// save_vae_checkpoint(&path, &meta, vec![("model.w".into(), w)])?;
/// let (back, tensors) = load_vae_checkpoint(&path, &Device::Cpu)?;
/// assert_eq!(back, meta);
/// assert_eq!(tensors["model.w"].to_vec1::<f64>()?, vec![0.25, -1.5]);
/// // A safetensors file without the VAE metadata is refused.
/// let other = path.with_extension("other.safetensors");
/// let plain = std::collections::HashMap::from([("w".to_string(), tensors["model.w"].clone())]);
/// cpflow::candle::safetensors::save(&plain, &other)?;
/// let refused = load_vae_checkpoint(&other, &Device::Cpu);
/// assert!(matches!(refused, Err(cpflow::CpflowError::Checkpoint(_))));
/// # std::fs::remove_file(&other).ok();
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn load_vae_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(VaeCheckpointMeta, HashMap<String, Tensor>)> {
    read_vae_file(path, device).map(|(meta, tensors, _)| (meta, tensors))
}

/// [`load_vae_checkpoint`], also returning the file's safetensors header (its tensor table,
/// for the checks against a model: [`crate::checkpoint::check_against_model`]).
pub(super) fn read_vae_file(
    path: &Path,
    device: &Device,
) -> Result<(VaeCheckpointMeta, HashMap<String, Tensor>, Metadata)> {
    let bytes = std::fs::read(path).map_err(|e| CpflowError::io(path, e))?;
    let (_, md) = crate::checkpoint_digest::read_header(path, &bytes)?;
    let entry = crate::checkpoint::MetadataEntry {
        key: VAE_METADATA_KEY,
        kind_of_file: Some("a VAE file"),
        cpflow_file: "a cpflow VAE checkpoint",
    };
    let (meta, json): (VaeCheckpointMeta, _) = entry.read(path, &md)?;
    crate::checkpoint::check_known_keys_of(path, VAE_METADATA_KEY, json, "config", &meta.config)?;
    let tensors = crate::checkpoint::load_verified_tensors(path, &bytes, device)?;
    Ok((meta, tensors, md))
}

/// The tensors of a VAE file: the model's variables under `model.`, and in a checkpoint
/// Adamax's moments of the trained ones.
pub(super) const VAE_LAYOUT: TensorLayout<'static> = TensorLayout {
    model: "model.",
    copies: &["adamax.m.", "adamax.u."],
    complete: &[],
};

#[cfg(test)]
mod tests {
    /// `checkpoint::file_kind` names VAE files by this key without the `vae` feature.
    #[test]
    fn the_checkpoint_module_knows_the_vae_key() {
        let m =
            std::collections::HashMap::from([(super::VAE_METADATA_KEY.to_string(), "{}".into())]);
        let kind = crate::checkpoint::file_kind(Some(&m)).expect("a kind");
        assert!(kind.starts_with("a VAE"), "{kind}");
    }

    /// The metadata's JSON must give back the same bits: resuming compares validation
    /// curves exactly. 3111.4429321571242 (a −ELBO this workspace's VAE test produced) is
    /// parsed one ulp low by serde_json's default parser; the workspace enables its
    /// `float_roundtrip` feature.
    #[test]
    fn f64_metadata_round_trips_bit_for_bit() {
        let mut values = vec![3111.4429321571242f64, 0.1, 1.0 / 3.0, 6.02214076e23, 5e-324];
        values.extend((1..200).map(|i| (i as f64 * 0.7311).exp() * 1.234567));
        for x in values {
            let json = serde_json::to_string(&x).expect("serialise");
            let back: f64 = serde_json::from_str(&json).expect("parse");
            assert_eq!(
                back.to_bits(),
                x.to_bits(),
                "{x:e} came back as {back:e} ({json})"
            );
        }
    }
}
