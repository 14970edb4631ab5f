//! `cpflow eval` on a VAE of `cpflow vae` (or of `cpflow import-reference --vae`): the test
//! split's single-sample negative ELBO and importance-sampled NLL, by the function that scores
//! the run's own test split ([`crate::vae::score_vae_test`]) with the run's settings as the
//! defaults, so that `eval` without options repeats report.json's test numbers.

use crate::vae::{
    VaeConfig, VaeTestParams, VaeTestProgress, load_vae_data, load_vae_file, score_vae_test,
};
use anyhow::{Context, Result, bail};
use candle_core::Device;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

use super::ModelLocation;
use crate::cli::interrupt::Interrupt;
use crate::cli::resume_check::vae_fixed_differences;
use crate::cli::{Estimator, EvalArgs};

/// The settings of the VAE whose weights `loc` locates, `saved` the configuration saved in
/// them: its run directory's `config.toml` (a resume may change `[eval]`, `data.root`, the
/// epochs and the time budget, and report.json is scored with the new settings, which the
/// weights of an earlier epoch do not hold), else `saved` (weights without a run
/// directory). A `config.toml` beside them that is not theirs (another model, dataset or
/// training setting) is refused.
pub(super) fn vae_run_config(loc: &ModelLocation, saved: VaeConfig) -> Result<VaeConfig> {
    let Some(path) = loc.run_dir.as_ref().map(|d| d.join("config.toml")) else {
        return Ok(saved);
    };
    if !path.is_file() {
        return Ok(saved);
    }
    let elsewhere = format!(
        "to use the settings saved in {} instead, copy it out of that directory",
        loc.file.display()
    );
    let run = super::vae::read_vae_config(&path, |_| Ok(())).with_context(|| {
        format!(
            "reading the run configuration {} ({elsewhere})",
            path.display()
        )
    })?;
    let keys: Vec<String> = vae_fixed_differences(&run, &saved)?
        .into_iter()
        .map(|d| {
            format!(
                "{} = {} there, {} in the weights",
                d.key, d.requested, d.run
            )
        })
        .collect();
    if !keys.is_empty() {
        bail!(
            "{} is not the configuration of {}: {} ({elsewhere})",
            path.display(),
            loc.file.display(),
            keys.join(", ")
        );
    }
    Ok(run)
}

/// What the first Ctrl-C / SIGTERM logs.
const INTERRUPT_MESSAGE: &str = "interrupted: stopping after the test batch or image in progress (no score is printed); \
     interrupt again to quit now";

/// The JSON line of `eval` on a VAE.
#[derive(Serialize)]
struct VaeEvalSummary {
    model: String,
    /// Which weights: `best` (the run's best validation −ELBO, what its report scores) or the
    /// file given (`checkpoint.safetensors`: the last epoch's).
    weights: &'static str,
    /// The dataset whose test split is scored.
    data: String,
    split: &'static str,
    /// Test images in the split.
    test_images: usize,
    /// Pixels of an image.
    dim: usize,
    /// Images scored by the −ELBO (the first of the split).
    images: usize,
    /// Mean single-sample negative ELBO (exact `log q`), nats per image.
    neg_elbo: f64,
    /// Its standard error (`null` for one image).
    neg_elbo_std_err: Option<f64>,
    /// The −ELBO in bits per dimension (256-way likelihood only).
    #[serde(skip_serializing_if = "Option::is_none")]
    neg_elbo_bpd: Option<f64>,
    /// Importance samples per image (`0`: no importance-sampled NLL).
    is_samples: usize,
    /// Images scored by importance sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    is_images: Option<usize>,
    /// Mean importance-sampled negative log-likelihood, nats per image.
    #[serde(skip_serializing_if = "Option::is_none")]
    is_nll: Option<f64>,
    /// Its standard error over images.
    #[serde(skip_serializing_if = "Option::is_none")]
    is_nll_std_err: Option<f64>,
    /// Mean over images of each estimate's own Monte-Carlo standard error: absent without
    /// importance sampling, `null` with one sample per image (`--is-samples 1`), where the
    /// samples cannot estimate it (it was printed as 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    is_mc_std_err: Option<Option<f64>>,
    /// The importance-sampled NLL in bits per dimension (256-way likelihood only).
    #[serde(skip_serializing_if = "Option::is_none")]
    is_nll_bpd: Option<f64>,
    /// The `--seed` (default the run's `train.seed`; the scoring draws from `seed ^ 0x7e57`).
    seed: u64,
    batch_size: usize,
    /// Seconds of the scoring alone (`seconds`: the whole command, data loading included).
    score_seconds: f64,
    seconds: f64,
}

/// What the VAE weights file `file` holds, for the summaries: `best` (a run's best
/// validation −ELBO, what its report scores; [`super::locate_model`] picks it in a run
/// directory), `checkpoint` (the last epoch's, in a run no epoch of which has ended) or `file`.
pub fn vae_weights_name(file: &Path) -> &'static str {
    match file.file_name().and_then(|n| n.to_str()) {
        Some("best.safetensors") => "best",
        Some("checkpoint.safetensors") => "checkpoint",
        _ => "file",
    }
}

/// Scores the VAE of `loc` on its dataset's test split and prints the JSON line.
pub fn eval_vae(a: &EvalArgs, loc: &ModelLocation, t0: Instant) -> Result<()> {
    refuse_flow_options(a)?;
    let (file, weights) = (loc.file.as_path(), vae_weights_name(&loc.file));
    if weights == "best" {
        crate::vae::check_best_weights_against_checkpoint(file)?;
    }
    let (vae, saved) =
        load_vae_file(file, &Device::Cpu).with_context(|| format!("loading {}", file.display()))?;
    let cfg = vae_run_config(loc, saved)?;
    let ds = cfg.data.dataset;
    if let Some(d) = a.data.as_deref().filter(|d| *d != ds.name()) {
        bail!(
            "{} is a VAE trained on {ds}: it is scored on that dataset's test split (`--data \
             {ds}` or no --data), not on `{d}`",
            file.display()
        );
    }
    let root = a.data_root.clone().unwrap_or_else(|| cfg.data.root.clone());
    let data = load_vae_data(ds, &root, cfg.data.seed)?;
    let params = test_params(a, &cfg);
    if let Some(asked) = a.n.filter(|&k| k > data.test.n) {
        tracing::warn!(
            asked,
            scored = data.test.n,
            "-n is larger than the test split: every test image is scored"
        );
    }
    let interrupt = Interrupt::install_with_message(INTERRUPT_MESSAGE)?;
    let (h, w) = vae.image_hw();
    // The weights, loaded (and counted) as the run built them.
    let (networks, posterior) = cfg.model.check_size(data.likelihood, (h, w))?;
    let bytes = |n: usize, f: crate::FloatType| n as f64 * f.dtype().size_in_bytes() as f64;
    let weight_bytes =
        bytes(networks, cfg.model.network_float) + bytes(posterior, cfg.model.posterior_float);
    let rows = super::vae::exact_pass_rows(
        params.batch_size.min(data.test.n),
        params.is_samples,
        params.is_chunk,
    );
    super::vae::check_exact_log_q_memory(
        &cfg.model,
        rows,
        weight_bytes,
        crate::cli::memory::memory_limit(),
        "the test −ELBO and importance sampling",
    )?;
    tracing::info!("{}", describe_scoring(ds.name(), data.test.n, &params));
    let ts = Instant::now();
    // One bar per phase: the −ELBO's batches, then the importance-sampled images.
    let mut bar: Option<indicatif::ProgressBar> = None;
    let hide = a.no_progress;
    let mut done = (0, "−ELBO");
    let scores = score_vae_test(&vae, &data, &params, |p| {
        match p {
            VaeTestProgress::NegElbo { done: d, of } => {
                done = (d, "−ELBO");
                bar.get_or_insert_with(|| {
                    super::chunk_progress_bar(hide, of, params.batch_size, "−ELBO", " images")
                })
                .set_position(d as u64);
            }
            VaeTestProgress::ImportanceSamplingStarts { images, samples } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                let label = format!("importance sampling (K = {samples})");
                bar = Some(super::chunk_progress_bar(
                    hide, images, 1, &label, " images",
                ));
            }
            VaeTestProgress::ImportanceSampled { done: d } => {
                done = (d, "importance-sampled");
                if let Some(b) = &bar {
                    b.set_position(d as u64);
                }
            }
            VaeTestProgress::ImportanceChunk { .. } => {}
        }
        if interrupt.is_set() {
            return Err(crate::CpflowError::EvaluationInterrupted {
                skipped: "the rest of the test score".into(),
                saved: Vec::new(),
            });
        }
        Ok(())
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if interrupt.is_set() {
        bail!(
            "interrupted after {} {} test images: no score (scoring fewer images: -n or \
             --is-samples; the same seed gives the same numbers)",
            done.0,
            done.1
        );
    }
    let scores = scores?;
    let finite = |v: f64| v.is_finite().then_some(v);
    let summary = VaeEvalSummary {
        model: file.display().to_string(),
        weights,
        data: ds.name().to_string(),
        split: "test",
        test_images: data.test.n,
        dim: h * w,
        images: scores.neg_elbo.n,
        neg_elbo: scores.neg_elbo.mean,
        neg_elbo_std_err: finite(scores.neg_elbo.std_err),
        neg_elbo_bpd: scores.neg_elbo_bpd.map(|m| m.mean),
        is_samples: scores.is_samples,
        is_images: scores.is_nll.map(|m| m.n),
        is_nll: scores.is_nll.map(|m| m.mean),
        is_nll_std_err: scores.is_nll.and_then(|m| finite(m.std_err)),
        is_mc_std_err: (scores.is_samples > 0).then_some(scores.is_mc_std_err),
        is_nll_bpd: scores.is_nll_bpd.map(|m| m.mean),
        seed: params.seed,
        batch_size: params.batch_size,
        score_seconds: ts.elapsed().as_secs_f64(),
        seconds: t0.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// What `eval` scores, in words, for its log line (it printed the settings' struct:
/// `params=VaeTestParams { seed: 1, images: Some(5), … }`, the dataset quoted).
fn describe_scoring(dataset: &str, test_images: usize, p: &VaeTestParams) -> String {
    let first = |n: Option<usize>| match n.filter(|&n| n < test_images) {
        Some(n) => format!("the first {n} of {test_images} test images"),
        None => format!("all {test_images} test images"),
    };
    let is = if p.is_samples == 0 {
        "no importance sampling".to_string()
    } else {
        let at_once = p.is_chunk.min(p.is_samples);
        format!(
            "the importance-sampled NLL of {} (K = {}, {at_once} at a time)",
            first(p.is_images),
            p.is_samples
        )
    };
    format!(
        "scoring the test split of {dataset}: the −ELBO of {} (batches of {}), {is}; seed {}",
        first(p.images),
        p.batch_size,
        p.seed
    )
}

/// The run's test settings with `-n`, `--batch-size`, `--seed` and `--is-samples` applied.
/// `-n` bounds both scores to the first `n` test images.
fn test_params(a: &EvalArgs, cfg: &VaeConfig) -> VaeTestParams {
    let mut p = VaeTestParams::of_run(cfg);
    if let Some(n) = a.n {
        p.images = Some(n);
        p.is_images = Some(n);
    }
    if let Some(b) = a.batch_size {
        p.batch_size = b;
    }
    if let Some(s) = a.dev.seed {
        p.seed = s;
    }
    if let Some(k) = a.is_samples {
        p.is_samples = k;
    }
    p
}

/// The options of flows that a VAE's scores do not take, refused by name.
fn refuse_flow_options(a: &EvalArgs) -> Result<()> {
    let mut given = Vec::new();
    if a.estimator == Estimator::Slq {
        given.push("--estimator slq (the VAE's scores use the exact log q)");
    }
    if a.probes.is_some() {
        given.push("--probes");
    }
    if a.steps.is_some() {
        given.push("--steps");
    }
    if a.dev.dtype.is_some() {
        given.push("--dtype (the VAE keeps the float types of its config)");
    }
    if a.dev.device.as_deref().is_some_and(|d| d != "cpu") {
        given.push("--device (the VAE runs on the CPU)");
    }
    if !given.is_empty() {
        bail!(
            "{} does not apply to a VAE: it takes -n, --batch-size, --seed, --is-samples, \
             --data-root",
            given.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings read as words: no `Some(…)`, struct names or quoted strings.
    #[test]
    fn scoring_settings_are_described_in_words() {
        let mut p = VaeTestParams {
            seed: 1,
            images: Some(5),
            batch_size: 400,
            is_samples: 4,
            is_chunk: 8,
            is_images: Some(5),
        };
        assert_eq!(
            describe_scoring("frey-faces", 200, &p),
            "scoring the test split of frey-faces: the −ELBO of the first 5 of 200 test images \
             (batches of 400), the importance-sampled NLL of the first 5 of 200 test images \
             (K = 4, 4 at a time); seed 1"
        );
        (p.images, p.is_images, p.is_samples) = (None, Some(500), 0);
        assert_eq!(
            describe_scoring("mnist", 10_000, &p),
            "scoring the test split of mnist: the −ELBO of all 10000 test images (batches of \
             400), no importance sampling; seed 1"
        );
    }
}
