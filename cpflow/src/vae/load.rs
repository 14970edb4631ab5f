//! Loading a trained VAE: a run's best weights, or any VAE weights file, into a fresh model
//! with the configuration saved beside them.

use std::path::Path;

use candle_core::Device;

use super::checkpoint::{VAE_LAYOUT, read_vae_file};
use super::config::VaeConfig;
use super::model::Vae;
use super::train::BEST;
use crate::checkpoint::{check_against_model, check_counted_parameters, naming_file};
use crate::error::Result;

/// Load the best weights of a finished run into a fresh model (for sampling or
/// re-evaluation).
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::vae::load_vae;
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
/// let out = std::env::temp_dir().join(format!("cpflow-doc-vae-load-{}", std::process::id()));
/// let report = run_vae_on(&cfg, &data, &out, &VaeRunOptions::default())?;
/// let (vae, loaded_cfg) = load_vae(&out, &Device::Cpu)?;
/// assert_eq!(loaded_cfg, cfg);
/// assert_eq!(vae.num_parameters(), report.num_parameters);
/// assert_eq!(vae.image_hw(), (28, 28));
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
pub fn load_vae(dir: &Path, device: &Device) -> Result<(Vae, VaeConfig)> {
    load_vae_file(&dir.join(BEST), device)
}

/// Load the model weights of a VAE weights file (a run's `best.safetensors`, or its
/// resumable `checkpoint.safetensors`) into a fresh model, with the configuration saved in it.
/// The file is checked as a flow's is ([`crate::checkpoint::load_checkpoint`]): finite
/// values, checksums, the parameters the configuration counts against the tensor table
/// before the model is built, then every variable present under `model.` with its shape and
/// dtype and no other tensor than those and Adamax's moments of them. Every refusal names
/// the file.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::vae::{PosteriorKind, VaeCheckpointMeta, VaeConfig, VaeDatasetName};
/// use cpflow::vae::{Vae, VaeArchitecture, load_vae_file, save_vae_checkpoint};
/// # fn main() -> cpflow::Result<()> {
/// let mut cfg = VaeConfig::reference(VaeDatasetName::FreyFaces, "data", PosteriorKind::Gaussian);
/// cfg.model.latent_dim = 2;
/// cfg.model.architecture = VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 };
/// let ds = cfg.data.dataset;
/// let vae = Vae::new(&cfg.model, ds.likelihood(), ds.image_size(), &Device::Cpu)?;
/// let weights = vae.weight_tensors().into_iter().map(|(k, t)| (format!("model.{k}"), t));
/// let meta = VaeCheckpointMeta { config: cfg.clone(), state: None, optimizer: None };
/// let path = std::env::temp_dir().join(format!("cpflow-doc-vae-file-{}.safetensors", std::process::id()));
/// save_vae_checkpoint(&path, &meta, weights.collect())?;
/// let (back, back_cfg) = load_vae_file(&path, &Device::Cpu)?;
/// assert_eq!((back.num_parameters(), back_cfg), (vae.num_parameters(), cfg));
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn load_vae_file(path: &Path, device: &Device) -> Result<(Vae, VaeConfig)> {
    let (meta, tensors, header) = read_vae_file(path, device)?;
    let cfg = meta.config;
    let ds = cfg.data.dataset;
    let (likelihood, image_hw) = (ds.likelihood(), ds.image_size());
    let counted = cfg
        .model
        .parameter_count(likelihood, image_hw)
        .map_err(|e| naming_file(path, e))?;
    check_counted_parameters(path, &header, VAE_LAYOUT, counted)?;
    let vae =
        Vae::new(&cfg.model, likelihood, image_hw, device).map_err(|e| naming_file(path, e))?;
    check_against_model(path, &header, VAE_LAYOUT, &vae.named_vars())?;
    vae.set_weights(&tensors, "model.")
        .map_err(|e| naming_file(path, e))?;
    Ok((vae, cfg))
}
