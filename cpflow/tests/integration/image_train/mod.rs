//! Image-flow training (`cpflow::image::train`), one concept per submodule: a run's files,
//! its non-finite stop and its bit-exact resume (`run`), the model configurations and their
//! parameter counts (`model_configs`), the sample grid (`sample_grid`) and the CLI path
//! (`cli`); the EMA rule is in `image_ema`. This file holds the tiny data, flow and training
//! configuration they share (also used by `image_resume`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use cpflow::FloatType;
use cpflow::SlqConfig;
use cpflow::image::{
    EmaConfig, ImageData, ImageFlowConfig, ImageMetricsRecord, ImageModelConfig, ImageSet,
    ImageTestConfig, ImageTrainConfig,
};
use icnn::ImageShape;

#[cfg(feature = "cli")]
mod cli;
mod model_configs;
mod run;
#[cfg(any(feature = "datasets", feature = "toy-images"))]
mod sample_grid;

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-imgtrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` fabricated 1×4×4 images with structure (a bright diagonal on a dark background, the
/// diagonal's brightness varying with the image index).
fn images(n: usize, offset: usize) -> ImageSet {
    let shape = ImageShape::new(1, 4, 4);
    let mut v = Vec::with_capacity(n * 16);
    for i in 0..n {
        for y in 0..4 {
            for x in 0..4 {
                let k = if x == y {
                    150 + (7 * (i + offset)) % 100
                } else {
                    (13 * (i + offset) + 3 * x) % 40
                };
                v.push(k as u8);
            }
        }
    }
    ImageSet::new(shape, v).unwrap()
}

pub(crate) fn tiny_data(n_val: usize, n_test: usize) -> ImageData {
    ImageData::new(images(12, 0), images(n_val, 100), images(n_test, 200)).unwrap()
}

/// A tiny two-scale conv flow on 1×4×4 images (ConvICNN width 4, depth 2, blocks 1-1).
pub(crate) fn tiny_flow(float: FloatType) -> ImageFlowConfig {
    ImageModelConfig {
        width: 4,
        depth: 2,
        nblocks: vec![1, 1],
        float,
        ..Default::default()
    }
    .flow_config(ImageShape::new(1, 4, 4), 0.05)
    .unwrap()
}

pub(crate) fn tiny_train(iters: usize) -> ImageTrainConfig {
    ImageTrainConfig {
        max_iterations: Some(iters),
        batch_size: 4,
        ema: EmaConfig {
            decay: 0.5,
            start_iteration: 1,
        },
        eval_batch_size: 3,
        log_every: 1,
        test: ImageTestConfig {
            slq: SlqConfig::default(),
            images: None,
            exact_images: 2,
        },
        seed: 3,
        ..Default::default()
    }
}

pub(crate) fn read_metrics(p: &Path) -> Vec<ImageMetricsRecord> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn checkpoint_tensors(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("checkpoint.safetensors"), &Device::Cpu).unwrap()
}
