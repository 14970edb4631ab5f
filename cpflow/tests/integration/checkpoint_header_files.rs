//! The small weights files the `checkpoint_header_*` tests damage, written by the library
//! itself: a flow model file and a training checkpoint of it, an image-flow model file and
//! training checkpoint, a VAE weights file. Tiny models (a few hundred parameters), f64.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use cpflow::image::train::{
    IMAGE_TRAIN_FORMAT_VERSION, ImageTrainCheckpointMeta, save_image_checkpoint,
};
use cpflow::image::{ImageFlow, ImageTrainConfig, ImageTrainState};
use cpflow::{FloatType, Flow, FlowConfig, RunOptions, TrainConfig, Trainer};

use crate::flow_common::{data, icnn3};
use crate::image_common::{conv, small_config, uniform_rows};

/// `[ActNorm, CPF(Icnn3 width 4, depth 2), ActNorm]` on 2-D data, f64, initialised.
pub fn tiny_flow() -> Flow {
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 4, 2)).with_float(FloatType::F64);
    let flow = Flow::new(cfg, &Device::Cpu).unwrap();
    flow.initialize(&data(16, 2, 7)).unwrap();
    flow
}

/// The tiny flow saved as `dir/model.safetensors`.
pub fn flow_model_file(dir: &Path) -> PathBuf {
    let path = dir.join("model.safetensors");
    tiny_flow().save(&path).unwrap();
    path
}

/// The checkpoint of 3 training steps of the tiny flow, `dir/run/checkpoint.safetensors`.
pub fn flow_checkpoint(dir: &Path) -> PathBuf {
    let out = dir.join("run");
    let cfg = TrainConfig {
        batch_size: 8,
        max_iterations: 3,
        log_every: 1,
        seed: 5,
        ..TrainConfig::default()
    };
    let opts = RunOptions {
        out_dir: Some(out.clone()),
        progress_bar: false,
        ..RunOptions::default()
    };
    let mut trainer = Trainer::new(tiny_flow(), cfg).unwrap().with_options(opts);
    let train = cpflow::Dataset::new(data(24, 2, 8));
    trainer.fit(&train, None).unwrap();
    out.join("checkpoint.safetensors")
}

/// A two-scale image flow on 2×4×4 images (convolutional ICNN width 4), f64, initialised.
pub fn tiny_image_flow() -> ImageFlow {
    let flow = ImageFlow::new(small_config(conv(), false, FloatType::F64), &Device::Cpu).unwrap();
    flow.initialize(&uniform_rows(4, 32, 0.1, 0.9, 3)).unwrap();
    flow
}

/// The tiny image flow saved as `dir/image.safetensors`.
pub fn image_model_file(dir: &Path) -> PathBuf {
    let path = dir.join("image.safetensors");
    tiny_image_flow().save(&path).unwrap();
    path
}

/// An image training checkpoint of the tiny image flow with the tensors `tensors` (its
/// weights when `None`), `dir/name`.
pub fn image_checkpoint(
    dir: &Path,
    name: &str,
    tensors: impl FnOnce(Vec<(String, Tensor)>) -> Vec<(String, Tensor)>,
) -> PathBuf {
    let flow = tiny_image_flow();
    let meta = ImageTrainCheckpointMeta {
        format_version: IMAGE_TRAIN_FORMAT_VERSION,
        flow: flow.config().clone(),
        train: ImageTrainConfig {
            max_iterations: Some(1),
            ..Default::default()
        },
        state: ImageTrainState {
            iteration: 1,
            ..Default::default()
        },
        adam: cpflow::AdamState {
            params: Default::default(),
            steps: Default::default(),
        },
        rng: cpflow::FlowRng::seed_from_u64(3).state(),
        ema: false,
    };
    let path = dir.join(name);
    save_image_checkpoint(&path, &meta, tensors(flow.weight_tensors())).unwrap();
    path
}

/// A VAE (Frey faces, latent size 2, 2 channels, the `posterior`: one PICNN block of width
/// 4 and depth 2 for the CP-Flow one) saved with `save_vae_checkpoint` as
/// `dir/vae.safetensors`, as `load_vae_file` reads it, with the tensors `tensors` (its
/// weights under `model.` when identity).
#[cfg(feature = "vae")]
pub fn vae_file(
    dir: &Path,
    posterior: cpflow::vae::PosteriorKind,
    tensors: impl FnOnce(Vec<(String, Tensor)>) -> Vec<(String, Tensor)>,
) -> PathBuf {
    let path = dir.join("vae.safetensors");
    save_tiny_vae(&path, "data".into(), posterior, tensors);
    path
}

/// The tiny untrained VAE of [`vae_file`], its data root `root`, saved at `path` (as
/// `cpflow vae` saves its best weights) with the tensors `tensors`.
#[cfg(feature = "vae")]
pub fn save_tiny_vae(
    path: &Path,
    root: PathBuf,
    posterior: cpflow::vae::PosteriorKind,
    tensors: impl FnOnce(Vec<(String, Tensor)>) -> Vec<(String, Tensor)>,
) {
    use cpflow::vae::{Vae, VaeArchitecture, VaeCheckpointMeta, VaeConfig};
    use cpflow::vae::{VaeDatasetName, save_vae_checkpoint};
    let mut cfg = VaeConfig::reference(VaeDatasetName::FreyFaces, root, posterior);
    (cfg.model.blocks, cfg.model.width, cfg.model.depth) = (1, 4, 2);
    cfg.model.latent_dim = 2;
    cfg.model.architecture = VaeArchitecture {
        channels: 2,
        feature_dim: 4,
        head_channels: 2,
    };
    let ds = cfg.data.dataset;
    let vae = Vae::new(&cfg.model, ds.likelihood(), ds.image_size(), &Device::Cpu).unwrap();
    let weights = vae
        .weight_tensors()
        .into_iter()
        .map(|(k, t)| (format!("model.{k}"), t))
        .collect();
    let meta = VaeCheckpointMeta {
        config: cfg,
        state: None,
        optimizer: None,
    };
    save_vae_checkpoint(path, &meta, tensors(weights)).unwrap();
}
