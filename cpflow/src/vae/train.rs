//! The VAE training loop (`optimization/training.py:train`, `images-vae.md` §3.6): β warm-up,
//! Adamax, validation −ELBO after every epoch, early stopping, checkpoints and resume; then
//! the test split scored once with the best weights.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device};
use rand::seq::SliceRandom;

use super::adamax::Adamax;
use super::best_weights::{
    best_weights_for_scoring, restore_best_weights, save_best_weights, weights_with_prefix,
};
use super::cg_warning::context as cg_context;
use super::checkpoint::{
    EpochSums, PartialEpoch, VAE_LAYOUT, VaeCheckpointMeta, VaeTrainState, check_resumable,
    read_vae_file, save_vae_checkpoint,
};
use super::config::VaeConfig;
use super::data::{VaeData, VaeSplit, load_vae_data};
use super::evaluate::{make_batch, split_neg_elbo};
use super::model::Vae;
use super::report::{VaeEpochRecord, VaeReport, VaeStopReason};
use super::test_scores::{VaeTestParams, VaeTestProgress, score_vae_test};
use crate::checkpoint::{check_against_model, naming_file};
use crate::error::{CpflowError, Result};
use crate::progress::Progress;
use crate::rng::FlowRng;
use crate::train::TrainStepStats;
use crate::train::cg_tally::{CgTally, Unconverged};
use crate::train::last_checkpoint::LastCheckpoint;

/// Options of a run that are not part of the experiment.
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
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
/// let out = std::env::temp_dir().join(format!("cpflow-doc-vae-options-{}", std::process::id()));
/// // Two batches per epoch; a set interrupt pauses the run after the first one, checkpointed.
/// let stop = Arc::new(AtomicBool::new(true));
/// let mut opts = VaeRunOptions { interrupt: Some(stop.clone()), ..Default::default() };
/// let paused = run_vae_on(&cfg, &data, &out, &opts);
/// assert!(matches!(paused, Err(cpflow::CpflowError::Interrupted { iteration: 1, .. })));
/// // `resume` finishes the epoch and evaluates.
/// stop.store(false, Ordering::Relaxed);
/// opts.resume = true;
/// let report = run_vae_on(&cfg, &data, &out, &opts)?;
/// assert_eq!(report.epochs, 1);
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct VaeRunOptions {
    /// Continue from `out/checkpoint.safetensors` when it exists (a fresh run otherwise; the
    /// CLI refuses `--resume` without a checkpoint before calling the library). The
    /// checkpoint must be of the same model, dataset and data seed (the data root may differ).
    pub resume: bool,
    /// Draw progress bars on stderr.
    pub progress_bar: bool,
    /// A flag that, once set (by a signal handler, another thread), pauses the run after the
    /// training step in progress (after the epoch's validation when that step was the epoch's
    /// last), its checkpoint written: [`run_vae`] then returns [`CpflowError::Interrupted`],
    /// and `resume` continues the run on the same trajectory (same batches, same draws).
    /// Once training has ended it stops the test evaluation before its next phase or image
    /// ([`CpflowError::EvaluationInterrupted`], no report written); `resume` on the finished
    /// run evaluates it again.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Set by the run once training has ended (the test evaluation follows): whoever watches
    /// `interrupt` can say what an interrupt stops now.
    pub training_ended: Option<Arc<AtomicBool>>,
}

/// File names inside the output directory.
const CHECKPOINT: &str = "checkpoint.safetensors";
pub(super) const BEST: &str = "best.safetensors";
const METRICS: &str = "metrics.jsonl";
const REPORT: &str = "report.json";

/// Train and evaluate the VAE described by `config`, writing `checkpoint.safetensors`,
/// `best.safetensors`, `metrics.jsonl` and `report.json` under `out`. Any of them that cannot
/// be written (a full disk) stops the run with [`CpflowError::EpochCheckpointWrite`], which
/// names the file, the epoch and the intact last checkpoint (`resume` continues from it).
///
/// ```
/// use cpflow::datasets::DatasetError;
/// use cpflow::vae::{PosteriorKind, VaeConfig, VaeDatasetName, VaeRunOptions, run_vae};
/// // A data root without Frey Faces: the data are read before anything is written.
/// let root = std::env::temp_dir().join("cpflow-doc-no-such-vae-root");
/// let cfg = VaeConfig::reference(VaeDatasetName::FreyFaces, &root, PosteriorKind::Gaussian);
/// let out = std::env::temp_dir().join("cpflow-doc-vae-never-written");
/// let err = run_vae(&cfg, &out, &VaeRunOptions::default()).unwrap_err();
/// assert!(matches!(err, cpflow::CpflowError::Dataset(DatasetError::Unsupported { .. })), "{err}");
/// assert!(!out.exists());
/// ```
pub fn run_vae(config: &VaeConfig, out: &Path, options: &VaeRunOptions) -> Result<VaeReport> {
    config.validate()?;
    let data = load_vae_data(config.data.dataset, &config.data.root, config.data.seed)?;
    run_vae_on(config, &data, out, options)
}

/// [`run_vae`] on data already in memory (`config.data` is recorded and not read, except
/// `n_train`, which cuts the training split of `data` to its first images).
///
/// ```
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
/// let out = std::env::temp_dir().join(format!("cpflow-doc-vae-run-{}", std::process::id()));
/// let report = run_vae_on(&cfg, &data, &out, &VaeRunOptions::default())?;
/// assert_eq!(report.val_curve.len(), 1);
/// assert!(report.best_val_neg_elbo.is_finite());
/// for f in ["checkpoint.safetensors", "best.safetensors", "metrics.jsonl", "report.json"] {
///     assert!(out.join(f).exists(), "{f}");
/// }
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
pub fn run_vae_on(
    config: &VaeConfig,
    data: &VaeData,
    out: &Path,
    options: &VaeRunOptions,
) -> Result<VaeReport> {
    config.validate()?;
    super::run_data::check_run_data(config, data)?;
    let data: &VaeData = &super::run_data::training_subset(config, data);
    let device = Device::Cpu;
    let vae = Vae::new(
        &config.model,
        data.likelihood,
        (data.height, data.width),
        &device,
    )?;
    std::fs::create_dir_all(out).map_err(|e| CpflowError::io(out, e))?;
    let ckpt_path = out.join(CHECKPOINT);
    let mut opt = Adamax::new(vae.trainable_named_vars(), config.train.optimizer.clone())?;
    let resumed = options.resume && ckpt_path.exists();
    let mut state = if resumed {
        let (meta, tensors, header) = read_vae_file(&ckpt_path, &device)?;
        // The data root is where the data are read, not what they are: it may move.
        let (was, now) = (&meta.config.data, &config.data);
        if meta.config.model != config.model
            || (was.dataset, was.seed, was.n_train) != (now.dataset, now.seed, now.n_train)
        {
            return Err(CpflowError::Checkpoint(format!(
                "{} was written for another model or data (dataset, data seed or data.n_train); \
                 use a new output directory",
                ckpt_path.display()
            )));
        }
        // Names, shapes and dtypes exactly the model's (extra tensors refused), then the
        // values; errors name the file.
        check_against_model(&ckpt_path, &header, VAE_LAYOUT, &vae.named_vars())?;
        // Every number of the trainer and optimiser state the resume uses, read from the
        // file: refused naming it and the field.
        check_resumable(&ckpt_path, &meta, config.train.optimizer.lr, &tensors)?;
        vae.set_weights(&tensors, "model.")
            .map_err(|e| naming_file(&ckpt_path, e))?;
        if let Some(o) = &meta.optimizer {
            opt.load_state(o, &tensors)
                .map_err(|e| naming_file(&ckpt_path, e))?;
        }
        meta.state.ok_or_else(|| {
            CpflowError::Checkpoint(format!(
                "{} holds no trainer state: it is a weights-only file (as `{BEST}`), not a \
                 resumable checkpoint",
                ckpt_path.display()
            ))
        })?
    } else {
        // A fresh run must not score a previous run's weights.
        let stale = out.join(BEST);
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(|e| CpflowError::io(&stale, e))?;
        }
        let mut rng = FlowRng::seed_from_u64(config.train.seed);
        // The data-dependent initialisation needs two images at least (the statistics of
        // one are all 0): batches of one image initialise from the first two.
        let init_rows = config.train.batch_size.max(2).min(data.train.n);
        let idx: Vec<usize> = (0..init_rows).collect();
        let first = make_batch(&vae, data, VaeSplit::Train, &idx, &mut rng)?;
        vae.initialize(&first, &mut rng)?;
        VaeTrainState {
            epoch: 0,
            steps: 0,
            best_val: None,
            bad_epochs: 0,
            val_curve: Vec::new(),
            train_seconds: 0.0,
            rng: rng.state(),
            partial_epoch: None,
            step_stats: TrainStepStats::default(),
        }
    };
    // The checkpoint that holds the run now: a failed write names it (the checkpoint and
    // best weights are replaced atomically, so a failed write leaves it intact, and a failed
    // `metrics.jsonl` or `report.json` does not touch it).
    let saved = if resumed {
        LastCheckpoint::at(ckpt_path.clone(), state.epoch)
    } else {
        LastCheckpoint::default()
    };
    if resumed {
        // The checkpoint's weights are the run's best when it was stopped after writing the
        // checkpoint and before the best weights (or an older cpflow wrote those of the
        // epoch after): rewritten from them before training moves them on.
        let write = restore_best_weights(&out.join(BEST), config, &state, &vae);
        saved.written_at_epoch("the best weights", state.epoch, write)?;
    }
    let metrics_path = out.join(METRICS);
    let metrics = if resumed {
        // Epoch lines past the checkpoint (written before a kill) come again: cut them off.
        crate::metrics::truncate_metrics(&metrics_path, "epoch", state.epoch as u64)
            .and_then(|_| crate::metrics::MetricsWriter::append(&metrics_path))
    } else {
        crate::metrics::MetricsWriter::create(&metrics_path)
    };
    // The epoch it is opened for: the next one, or the last when none is left.
    let next_epoch = (state.epoch + 1).min(config.train.epochs.max(state.epoch));
    let mut metrics = saved.written_at_epoch(METRICS, next_epoch, metrics)?;
    let stop_reason = train_epochs(
        &vae,
        data,
        config,
        out,
        &mut opt,
        &mut state,
        &mut metrics,
        options,
        saved,
    )?;

    // Score the test split once, with the best weights; an interrupt from now on stops the
    // scoring before its next phase or image.
    if let Some(f) = &options.training_ended {
        f.store(true, Ordering::Relaxed);
    }
    let stop_if_interrupted = |skipped: &str| -> Result<()> {
        if !interrupted(options) {
            return Ok(());
        }
        let saved = [BEST, CHECKPOINT].iter().map(|f| out.join(f));
        Err(CpflowError::EvaluationInterrupted {
            skipped: skipped.into(),
            saved: saved.filter(|p| p.exists()).collect(),
        })
    };
    stop_if_interrupted("the test −ELBO and importance-sampled NLL")?;
    let (best_val, best_epoch) = state.best_val.unwrap_or((f64::NAN, 0));
    // The best epoch's weights, refused when `best.safetensors` records another epoch.
    if let Some(best) = best_weights_for_scoring(&out.join(BEST), &state, &device)? {
        vae.set_weights(&best, "model.")?;
    }
    let mut bar: Option<Progress> = None;
    let scores = score_vae_test(&vae, data, &VaeTestParams::of_run(config), |p| {
        match p {
            VaeTestProgress::NegElbo { .. } => {
                return stop_if_interrupted(
                    "the rest of the test −ELBO and the importance-sampled NLL",
                );
            }
            VaeTestProgress::ImportanceSamplingStarts { images, samples } => {
                let b = Progress::new(images as u64, options.progress_bar);
                b.set_message(format!("importance sampling, K = {samples}"));
                bar = Some(b);
            }
            VaeTestProgress::ImportanceSampled { done } => {
                if let Some(b) = &bar {
                    b.set_position(done as u64)
                }
            }
            VaeTestProgress::ImportanceChunk { .. } => {}
        }
        stop_if_interrupted("the importance-sampled test NLL")
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let scores = scores?;
    let report = VaeReport {
        config: config.clone(),
        num_parameters: vae.num_parameters(),
        split_sizes: [data.train.n, data.val.n, data.test.n],
        epochs: state.epoch,
        steps: state.steps,
        stop_reason,
        best_epoch,
        best_val_neg_elbo: best_val,
        seconds_per_epoch: state.train_seconds / state.epoch.max(1) as f64,
        test_neg_elbo: scores.neg_elbo,
        test_is_nll: scores.is_nll,
        test_is_mc_std_err: scores.is_mc_std_err,
        is_samples: scores.is_samples,
        test_neg_elbo_bpd: scores.neg_elbo_bpd,
        test_is_nll_bpd: scores.is_nll_bpd,
        val_curve: state.val_curve.clone(),
        mean_cg_iterations: state.step_stats.mean_cg_iterations(),
        cg_converged: state.step_stats.converged_fraction(),
        cg_unconverged_steps: state.step_stats.cg_unconverged_steps,
        cg_stats_since_step: Some(state.step_stats.counted_from(state.steps)).filter(|&s| s > 0),
    };
    // The run is saved in its checkpoint of the last epoch: a resume scores it again.
    let write = crate::checkpoint::write_atomic(
        &out.join(REPORT),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    );
    LastCheckpoint::at(ckpt_path, state.epoch).written_at_epoch(REPORT, state.epoch, write)?;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn train_epochs(
    vae: &Vae,
    data: &VaeData,
    config: &VaeConfig,
    out: &Path,
    opt: &mut Adamax,
    state: &mut VaeTrainState,
    metrics: &mut crate::metrics::MetricsWriter,
    options: &VaeRunOptions,
    mut saved: LastCheckpoint,
) -> Result<VaeStopReason> {
    let t = &config.train;
    let mut rng = FlowRng::from_state(&state.rng)?;
    let n = data.train.n;
    let bs = t.batch_size;
    let budget_s = t.max_minutes.map(|m| m * 60.0);
    let ckpt_path: PathBuf = out.join(CHECKPOINT);
    let bar = Progress::new(t.epochs as u64, options.progress_bar);
    bar.set_position(state.epoch as u64);
    if state.bad_epochs > t.early_stopping_epochs {
        return Ok(VaeStopReason::EarlyStopping);
    }
    let mut cg_warnings = CgTally::default();
    let warn = |u: Option<Unconverged>| {
        if let Some(u) = u {
            u.warn(
                &t.cg,
                &cg_context(
                    config.model.latent_dim,
                    config.model.posterior_float.dtype(),
                ),
            );
        }
    };
    while state.epoch < t.epochs {
        if let Some(b) = budget_s
            && state.train_seconds >= b
        {
            bar.finish_and_clear();
            return Ok(VaeStopReason::TimeBudget);
        }
        let epoch = state.epoch + 1;
        let beta = t.beta(epoch);
        // The epoch's batch order: drawn now, or drawn again from the RNG state it came from
        // when the run was paused within the epoch (the RNG itself then continues from the
        // pause).
        let paused_within = state.partial_epoch.take();
        let mut order: Vec<usize> = (0..n).collect();
        let (shuffle_rng, mut sums) = match paused_within {
            Some(p) => {
                order.shuffle(&mut FlowRng::from_state(&p.shuffle_rng)?);
                (p.shuffle_rng, p.sums)
            }
            None => {
                let before = rng.state();
                order.shuffle(&mut rng);
                (before, EpochSums::default())
            }
        };
        let batches: Vec<&[usize]> = order.chunks(bs).collect();
        if sums.batches > 0 && sums.batches >= batches.len() {
            return Err(CpflowError::Checkpoint(format!(
                "{} was paused after {} batches of an epoch that has {}",
                ckpt_path.display(),
                sums.batches,
                batches.len()
            )));
        }
        let start = Instant::now();
        for (i, idx) in batches.iter().enumerate().skip(sums.batches) {
            let batch = make_batch(vae, data, VaeSplit::Train, idx, &mut rng)?;
            let terms = vae
                .train_terms(&batch, beta, &t.cg, &mut rng)
                .map_err(|e| {
                    let checkpoint = ckpt_path.exists().then(|| ckpt_path.clone());
                    diverged(e, state.steps + 1, checkpoint)
                })?;
            let loss = terms.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss.is_finite() {
                return Err(CpflowError::NonFinite {
                    what: "VAE training loss".into(),
                    step: state.steps + 1,
                    checkpoint: ckpt_path.exists().then(|| ckpt_path.clone()),
                });
            }
            let grads = icnn::detached_backward(&terms.loss)?;
            opt.step(&grads)?;
            state.steps += 1;
            state.step_stats.record(loss, &terms.cg);
            warn(cg_warnings.record(state.steps, &terms.cg));
            sums.batches += 1;
            sums.loss += loss;
            sums.reconstruction += terms.reconstruction;
            sums.cg_iterations += terms.cg.iterations.iter().sum::<usize>();
            sums.cg_systems += terms.cg.iterations.len();
            sums.cg_converged += terms.cg.converged;
            bar.set_message(format!(
                "epoch {epoch} β {beta:.2} loss {:.2}",
                sums.loss / sums.batches as f64
            ));
            // Paused between two steps of the epoch; after its last step the run goes on to
            // the epoch's validation and checkpoint, and pauses below.
            if i + 1 < batches.len() && interrupted(options) {
                bar.finish_and_clear();
                warn(cg_warnings.flush());
                sums.seconds += start.elapsed().as_secs_f64();
                state.rng = rng.state();
                state.partial_epoch = Some(PartialEpoch { shuffle_rng, sums });
                let write = save_checkpoint(&ckpt_path, config, state, vae, opt);
                saved.written_at_epoch("the checkpoint", epoch, write)?;
                return Err(CpflowError::Interrupted {
                    iteration: state.steps,
                    checkpoint: Some(ckpt_path),
                });
            }
        }
        sums.seconds += start.elapsed().as_secs_f64();
        let train_seconds = sums.seconds;
        state.train_seconds += train_seconds;
        let vstart = Instant::now();
        let val = split_neg_elbo(vae, data, VaeSplit::Val, usize::MAX, bs, &mut rng)?;
        let val = val.iter().sum::<f64>() / val.len().max(1) as f64;
        if !val.is_finite() {
            return Err(CpflowError::NonFinite {
                what: "validation −ELBO".into(),
                step: state.steps,
                checkpoint: ckpt_path.exists().then(|| ckpt_path.clone()),
            });
        }
        let val_seconds = vstart.elapsed().as_secs_f64();
        state.epoch = epoch;
        state.val_curve.push((epoch, val));
        let improved = state.best_val.is_none_or(|(b, _)| val < b);
        if improved {
            state.best_val = Some((val, epoch));
            state.bad_epochs = 0;
        } else if epoch >= t.warmup_epochs {
            state.bad_epochs += 1;
        }
        let rec = VaeEpochRecord {
            epoch,
            beta,
            train_loss: sums.loss / sums.batches.max(1) as f64,
            train_reconstruction: sums.reconstruction / sums.batches.max(1) as f64,
            val_neg_elbo: val,
            cg_iterations: sums.cg_iterations as f64 / sums.cg_systems.max(1) as f64,
            cg_converged: if sums.cg_systems == 0 {
                1.0
            } else {
                sums.cg_converged as f64 / sums.cg_systems as f64
            },
            train_seconds,
            val_seconds,
        };
        // The epoch's line before its checkpoint: a kill between the two leaves a line past
        // the checkpoint, which a resume cuts off and writes again (the other order would
        // lose it).
        saved.written_at_epoch(METRICS, epoch, metrics.write(&rec))?;
        state.rng = rng.state();
        let write = save_checkpoint(&ckpt_path, config, state, vae, opt);
        saved.written_at_epoch("the checkpoint", epoch, write)?;
        saved = LastCheckpoint::at(ckpt_path.clone(), epoch);
        // The best weights after the checkpoint, tagged with their epoch: a kill between the
        // two leaves them behind the checkpoint, whose weights a resume writes there
        // (written first, they were left one epoch ahead of it, and scored as its best).
        if improved {
            let write = save_best_weights(&out.join(BEST), config, epoch, vae);
            saved.written_at_epoch("the best weights", epoch, write)?;
        }
        // The epoch's unconverged steps before its line.
        warn(cg_warnings.flush());
        tracing::info!(
            "epoch {epoch}: β {beta:.2}, train loss {:.3}, val −ELBO {val:.3}, CG {:.1} its, {train_seconds:.1} s",
            rec.train_loss,
            rec.cg_iterations
        );
        bar.set_position(epoch as u64);
        if state.bad_epochs > t.early_stopping_epochs {
            bar.finish_and_clear();
            return Ok(VaeStopReason::EarlyStopping);
        }
        if interrupted(options) && state.epoch < t.epochs {
            bar.finish_and_clear();
            return Err(CpflowError::Interrupted {
                iteration: state.steps,
                checkpoint: Some(ckpt_path),
            });
        }
    }
    bar.finish_and_clear();
    Ok(VaeStopReason::MaxEpochs)
}

/// An error of training step `step`: the batch is finite (checked when loaded), so
/// non-finite values that the posterior's input check meets come from weights that diverged
/// at the step before; that is [`CpflowError::NonFinite`], like a non-finite loss. Other
/// errors are returned as they are.
pub(super) fn diverged(e: CpflowError, step: usize, checkpoint: Option<PathBuf>) -> CpflowError {
    match e {
        CpflowError::InvalidInput(m) if m.contains("NaN or infinite") => CpflowError::NonFinite {
            what: format!("VAE encoder output ({m})"),
            step,
            checkpoint,
        },
        e => e,
    }
}

/// Whether `options`' interrupt flag is set.
fn interrupted(options: &VaeRunOptions) -> bool {
    options
        .interrupt
        .as_ref()
        .is_some_and(|f| f.load(Ordering::Relaxed))
}

/// Writes the resumable checkpoint: weights, optimiser moments, trainer state.
fn save_checkpoint(
    path: &Path,
    config: &VaeConfig,
    state: &VaeTrainState,
    vae: &Vae,
    opt: &Adamax,
) -> Result<()> {
    let meta = VaeCheckpointMeta {
        config: config.clone(),
        state: Some(state.clone()),
        optimizer: Some(opt.state()),
    };
    let mut tensors = weights_with_prefix(vae);
    tensors.extend(opt.state_tensors());
    save_vae_checkpoint(path, &meta, tensors)
}
