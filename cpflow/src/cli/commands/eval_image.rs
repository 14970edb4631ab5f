//! `cpflow eval` on an image flow: bits per dimension of the test split of its dataset (MNIST
//! or CIFAR-10, read under the run's `data.root`).
//!
//! The scores come from the functions of the run's own test score
//! (`crate::image::train::{score_test_set, exact_bpd_per_image}`) with its dequantisation
//! and probe streams (`train.seed ^ TEST_SEED_SALT`), and the run's test settings are the
//! defaults: `eval --estimator slq` repeats report.json's `test.slq` number and the exact
//! default its `test.exact.exact` number (same images, same noise, same batches).

use crate::image::train::{
    EMA_PREFIX, EvalProgress, IMAGE_TRAIN_METADATA_KEY, TEST_SEED_SALT,
    exact_bpd_per_image_with_monitor, load_image_checkpoint, score_test_set_with_monitor,
};
use crate::image::{
    ImageDataset, ImageExperimentConfig, ImageFlow, ImageTestConfig, ImageTrainConfig,
    load_image_test_set, mean_and_std_err,
};
use crate::slq::SlqBiasCounts;
use crate::{FloatType, SlqConfig};
use anyhow::{Context, Result, bail};
use candle_core::Device;
use icnn::ImageShape;
use serde::Serialize;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use super::ModelLocation;
use crate::cli::interrupt::Interrupt;
use crate::cli::model_file::has_metadata_key;
use crate::cli::run_config::{Overrides, is_image_config, resolve_image};
use crate::cli::{Estimator, EvalArgs};

/// What the first Ctrl-C / SIGTERM logs.
const INTERRUPT_MESSAGE: &str = "interrupted: stopping after the chunk of images in progress (no score is printed); \
     interrupt again to quit now";

/// The JSON line of `eval` on an image flow.
#[derive(Serialize)]
struct ImageEvalSummary {
    model: String,
    /// The dataset whose test split is scored.
    data: String,
    split: &'static str,
    /// Test images scored: the first `images` of the split.
    images: usize,
    /// Test images in the split.
    test_images: usize,
    /// Dimensions of an image (`C·H·W`).
    dim: usize,
    estimator: String,
    /// The SLQ estimator (`--estimator slq` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    slq: Option<SlqConfig>,
    /// Mean bits per dimension of the dequantised test images.
    bpd: f64,
    /// Standard error of `bpd` (the images' spread over √n, which includes the dequantisation
    /// noise and, with SLQ, the probes'; `null` for one image).
    bpd_std_err: Option<f64>,
    /// SLQ with several probes: root mean square of the images' standard errors from the
    /// spread over their probes, bits/dim.
    #[serde(skip_serializing_if = "Option::is_none")]
    probe_std_err: Option<f64>,
    /// SLQ's hidden-bias counts (`--estimator slq`), each only when non-zero: the images
    /// whose value is biased beyond its standard error, their floored Ritz values and early
    /// Lanczos stops (the flows' `eval` fields, the same type).
    #[serde(flatten)]
    slq_bias: super::eval::SlqBiasFields,
    /// Mean negative log-likelihood of an image in nats on the 8-bit scale
    /// (`−log p(x) + D ln 256 = bpd·D·ln 2`, `p` the density on `[0, 1)^D`).
    nll: f64,
    /// Standard error of `nll`.
    nll_std_err: Option<f64>,
    /// Which weights were scored: `model` (a model file: a run's EMA weights, or an import's),
    /// `ema` (a training checkpoint's average) or `current` (a checkpoint without one yet).
    weights: &'static str,
    float: FloatType,
    /// The `--seed` (default the run's `train.seed`); the noise and probes are drawn from
    /// `seed ^ TEST_SEED_SALT`, as the run's test score.
    seed: u64,
    batch_size: usize,
    /// Seconds of the scoring alone (`seconds`: the whole command, data loading included).
    score_seconds: f64,
    seconds: f64,
}

/// Scores the image flow of `loc` on its dataset's test split and prints the JSON line.
pub fn eval_image(a: &EvalArgs, loc: &ModelLocation, device: &Device, t0: Instant) -> Result<()> {
    let run = run_config(loc)?;
    refuse_slq_without_images(a, loc, run.as_ref())?;
    let (flow, weights) = load_image_flow(&loc.file, device, a.dev.dtype)?;
    let dataset = dataset_to_score(a.data.as_deref(), run.as_ref(), flow.image())?;
    // --data-root, else the run's data.root, else the default.
    let root = a.data_root.clone().unwrap_or_else(|| {
        run.as_ref().map_or_else(
            || crate::datasets::layout::DEFAULT_ROOT.into(),
            |r| r.data.root.clone(),
        )
    });
    // The test split alone (the training files need not be there), with the errors of
    // training's loader (a missing file names `cargo xtask download`).
    let test = &load_image_test_set(dataset, &root)?;
    if test.is_empty() {
        bail!(
            "the {} test split under {} has no image",
            dataset.name(),
            root.display()
        );
    }
    // The run's test settings are the defaults (the library's without a config.toml).
    let train = run.map_or_else(ImageTrainConfig::default, |r| r.train);
    let seed = a.dev.seed.unwrap_or(train.seed);
    let batch = a.batch_size.unwrap_or(train.eval_batch_size);
    let slq = SlqConfig {
        probes: a.probes.unwrap_or(train.test.slq.probes),
        steps: a.steps.unwrap_or(train.test.slq.steps),
    };
    let default_n = match a.estimator {
        Estimator::Exact if train.test.exact_images > 0 => train.test.exact_images,
        Estimator::Exact => ImageTestConfig::default().exact_images,
        Estimator::Slq => train.test.images.unwrap_or(test.len()),
    };
    let n = a.n.unwrap_or(default_n).min(test.len());
    if let Some(asked) = a.n.filter(|&k| k > test.len()) {
        tracing::warn!(
            asked,
            scored = test.len(),
            "-n is larger than the test split: every test image is scored"
        );
    }
    tracing::info!(
        dataset = dataset.name(),
        images = n,
        estimator = a.estimator.name(),
        batch,
        seed,
        "scoring the test split"
    );
    let ts = Instant::now();
    let noise_seed = seed ^ TEST_SEED_SALT;
    // A bar over the images (hidden for one chunk, and when stderr is not a terminal); the
    // first Ctrl-C stops the score before its next chunk.
    let interrupt = Interrupt::install_with_message(INTERRUPT_MESSAGE)?;
    let bar = super::chunk_progress_bar(a.no_progress, n, batch, "scoring", " images");
    let mut last = None;
    let mut monitor = |p: EvalProgress| {
        bar.set_position(p.done as u64);
        last = Some(p);
        if interrupt.is_set() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let scored =
        match a.estimator {
            Estimator::Exact => {
                exact_bpd_per_image_with_monitor(&flow, test, n, batch, noise_seed, &mut monitor)?
                    .map(|v| {
                        let (m, se) = mean_and_std_err(&v);
                        (m, se, None, None, SlqBiasCounts::default())
                    })
            }
            Estimator::Slq => {
                // The run's SLQ pass alone (no exact subset).
                let cfg = ImageTestConfig {
                    slq: slq.clone(),
                    images: Some(n),
                    exact_images: 0,
                };
                score_test_set_with_monitor(&flow, test, &cfg, batch, noise_seed, &mut monitor)?
                    .map(|r| {
                        let bias = r.slq_bias_counts();
                        (r.slq.bpd, r.slq.std_err, r.probe_std_err, Some(slq), bias)
                    })
            }
        };
    bar.finish_and_clear();
    let Some((bpd, bpd_std_err, probe_std_err, slq_used, slq_bias)) = scored else {
        let done = last.map_or(0, |p| p.done);
        bail!(
            "interrupted after {done} of {n} test images: no score (scoring fewer images: -n; \
             the same seed scores the same images with the same noise)"
        );
    };
    let score_seconds = ts.elapsed().as_secs_f64();
    let d = flow.dim();
    let nats_per_bpd = d as f64 * std::f64::consts::LN_2;
    let finite = |v: f64| v.is_finite().then_some(v);
    let summary = ImageEvalSummary {
        model: loc.file.display().to_string(),
        data: dataset.name().to_string(),
        split: "test",
        images: n,
        test_images: test.len(),
        dim: d,
        estimator: a.estimator.name().to_string(),
        slq: slq_used,
        bpd,
        bpd_std_err: finite(bpd_std_err),
        probe_std_err,
        slq_bias: slq_bias.into(),
        nll: bpd * nats_per_bpd,
        nll_std_err: finite(bpd_std_err * nats_per_bpd),
        weights,
        float: flow.float(),
        seed,
        batch_size: batch,
        score_seconds,
        seconds: t0.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// `--estimator slq` without `-n` scores the run's `train.test.images` first test images; a
/// run with `train.test.images = 0` (which skips its test score) has no count to repeat, and
/// scoring none printed a `null` bpd with exit status 0. Refused before anything is loaded,
/// naming the key and `-n`.
fn refuse_slq_without_images(
    a: &EvalArgs,
    loc: &ModelLocation,
    run: Option<&ImageExperimentConfig>,
) -> Result<()> {
    let Some(r) = run else { return Ok(()) };
    if a.estimator == Estimator::Slq && a.n.is_none() && r.train.test.images == Some(0) {
        let config = loc
            .run_dir
            .as_deref()
            .map_or_else(|| "config.toml".into(), |d| d.join("config.toml"));
        bail!(
            "train.test.images = 0 in {} (the run skipped its test score): there is no number \
             of test images to score by default; pass -n N to score the first N test images \
             of {} (all of them: -n 10000)",
            config.display(),
            r.data.dataset.name()
        );
    }
    Ok(())
}

/// The image-run configuration beside the model (`config.toml` of `cpflow train` or
/// `cpflow import-reference`), if any.
fn run_config(loc: &ModelLocation) -> Result<Option<ImageExperimentConfig>> {
    let Some(path) = loc.run_dir.as_ref().map(|d| d.join("config.toml")) else {
        return Ok(None);
    };
    if !path.is_file() {
        return Ok(None);
    }
    if !is_image_config(Some(&path))? {
        bail!(
            "{} holds an image flow, but {} is not an image run's configuration (it has no \
             [data] dataset): score the model from its own run directory",
            loc.file.display(),
            path.display()
        );
    }
    resolve_image(&path, &Overrides::default())
        .with_context(|| format!("reading the run configuration {}", path.display()))
        .map(Some)
}

/// The dataset whose test split is scored: `--data` (which must name the model's own
/// dataset), else the run's `data.dataset`, else the one of the model's image shape.
fn dataset_to_score(
    data: Option<&str>,
    run: Option<&ImageExperimentConfig>,
    shape: ImageShape,
) -> Result<ImageDataset> {
    let of_shape = [ImageDataset::Mnist, ImageDataset::Cifar10]
        .into_iter()
        .find(|d| d.image_shape() == shape);
    let shape_name = format!("{}×{}×{}", shape.channels, shape.height, shape.width);
    let own = |d: Option<ImageDataset>| {
        d.map_or_else(
            || "neither MNIST's nor CIFAR-10's".to_string(),
            |d| {
                format!(
                    "score it on {0} with `--data {0}` or without --data",
                    d.name()
                )
            },
        )
    };
    let dataset = match (data, run) {
        (Some(name), _) => {
            let named = match name.to_ascii_lowercase().as_str() {
                "mnist" => Some(ImageDataset::Mnist),
                "cifar10" | "cifar-10" => Some(ImageDataset::Cifar10),
                _ => None,
            };
            match named {
                Some(d) if Some(d) == of_shape => d,
                Some(d) => {
                    let s = d.image_shape();
                    bail!(
                        "--data {name}: its images are {}×{}×{}, but this image flow takes \
                         {shape_name} images: {}",
                        s.channels,
                        s.height,
                        s.width,
                        own(of_shape)
                    )
                }
                None => bail!(
                    "--data {name}: an image flow is scored on the test split of its image \
                     dataset, `mnist` or `cifar10` (this one takes {shape_name} images: {}); \
                     files, toys and tabular benchmarks are scored by flows on vectors",
                    own(of_shape)
                ),
            }
        }
        (None, Some(r)) => r.data.dataset,
        (None, None) => of_shape.with_context(|| {
            format!(
                "no config.toml beside the model, and its {shape_name} images are neither \
                 MNIST's nor CIFAR-10's: `eval` scores image flows on those datasets only"
            )
        })?,
    };
    let s = dataset.image_shape();
    if s != shape {
        bail!(
            "the run's data.dataset = \"{}\" has {}×{}×{} images, the model takes \
             {shape_name} images",
            dataset.name(),
            s.channels,
            s.height,
            s.width
        );
    }
    Ok(dataset)
}

/// The image flow in `file` (converted to `float` when given) and which weights it holds: a
/// model file's, or a training checkpoint's average (`ema.*`, the weights the run validates
/// and tests) — its current weights while it has no average yet.
fn load_image_flow(
    file: &Path,
    device: &Device,
    float: Option<FloatType>,
) -> Result<(ImageFlow, &'static str)> {
    let loading = || format!("loading {}", file.display());
    let (mut config, tensors, prefix, weights): (_, HashMap<_, _>, _, _) =
        if has_metadata_key(file, IMAGE_TRAIN_METADATA_KEY)? {
            let ck = load_image_checkpoint(file, device).with_context(loading)?;
            let (prefix, weights) = if ck.meta.ema {
                (EMA_PREFIX, "ema")
            } else {
                ("", "current")
            };
            (ck.meta.flow, ck.tensors, prefix, weights)
        } else {
            let flow = ImageFlow::load(file, device).with_context(loading)?;
            if float.is_none_or(|f| f == flow.float()) {
                return Ok((flow, "model"));
            }
            let tensors = flow.weight_tensors().into_iter().collect();
            (flow.config().clone(), tensors, "", "model")
        };
    if let Some(f) = float {
        config.float = f;
    }
    let flow = ImageFlow::new(config, device)?;
    flow.set_weights(&tensors, prefix).with_context(loading)?;
    Ok((flow, weights))
}
