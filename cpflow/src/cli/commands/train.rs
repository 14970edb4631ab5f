//! `cpflow train`.

use crate::{Dataset, Flow, FlowRng, NllCurve, NllEstimator, RunOptions, StopReason, Trainer};
use anyhow::{Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

use super::checkpoint_hint::with_checkpoint_hint;
use crate::cli::TrainArgs;
use crate::cli::data::{Rows, load, warn_inert_data_keys};
use crate::cli::data_record::{
    DataRecord, check_data_record, require_run_data_file, write_data_record,
};
use crate::cli::interrupt::Interrupt;
use crate::cli::model_plots::{
    PlotOptions, default_plot_window, rows_to_points, write_model_plots,
};
use crate::cli::resume_check::check_train_resume;
use crate::cli::run_config::{
    Overrides, RunConfig, check_training_start, is_image_config, resolve,
};
use crate::cli::run_dir::{
    TRAIN_RUN, absolute_run_config, check_config_dir_is_out, check_new_run_of, take_run_dir,
    write_config,
};
use crate::cli::run_kind::RunKind;
use crate::cli::shell_words::resume_command;
use crate::train::last_checkpoint::LastCheckpoint;

use super::score_format::validation_numbers::ValidationNumbers;

mod after_training;
mod data_checks;
use after_training::{AfterTraining, Stage};
use data_checks::{check_new_flow_memory, validation_label, why_no_test_rows};

/// `report.json` of a run. Every NLL names its split (`splits`): `val_*` numbers come from
/// the validation part (never the test part: fresh draws for toys, MAF's validation rows for
/// the benchmarks, held-out rows of a file; it drives early stopping and learning-rate
/// decay), `test_nll` from the test part, scored once after training.
#[derive(Serialize)]
struct TrainSummary {
    /// The data source: a toy's or benchmark's name, or the file's absolute path (the form
    /// `config.toml` keeps, so that a resume, which reads that file, reports the same).
    data: String,
    dim: usize,
    n_train: usize,
    n_val: usize,
    n_test: usize,
    parameters: usize,
    /// Optimiser steps actually run (early stopping, a resume or a stop end runs early).
    iterations: usize,
    /// The configured maximum.
    max_iterations: usize,
    /// The iteration this invocation resumed from (`--resume`); `train_time_s` and
    /// `wall_time_s` still cover the whole run (`invocation_*` fields: this invocation).
    resumed_at: Option<usize>,
    stop_reason: StopReason,
    /// `(iteration, validation exact NLL)` every `run.eval_every` iterations, over the whole
    /// run (a resumed run's earlier points come from its checkpoint).
    val_nll_curve: Vec<(usize, f64)>,
    /// Best validation NLL of the trainer's estimator (`val_nll_estimator`) and its
    /// iteration: the weights kept when `train.restore_best` (the default), see
    /// `model_iteration`.
    val_nll: Option<f64>,
    val_iteration: Option<usize>,
    /// `model_iteration`, the estimators of `val_nll` and `val_nll_curve`, and
    /// `val_nll_exact` (the exact validation NLL of the model's weights: the final line's).
    #[serde(flatten)]
    validation: ValidationNumbers,
    /// Exact NLL (nats) of the test part, scored once at the end; `null` without test rows.
    test_nll: Option<f64>,
    /// Standard error of `test_nll` (the test rows' spread over √n).
    test_nll_std_err: Option<f64>,
    /// Monte-Carlo entropy of the test points, when the density is known in closed form.
    data_entropy: Option<f64>,
    /// Mean NLL of the test part under the full-covariance Gaussian fitted to the training
    /// part, and its standard error: the floor the flow has to beat (`null` without test
    /// rows or when no Gaussian fits, e.g. a constant column).
    gaussian_test_nll: Option<f64>,
    gaussian_test_nll_std_err: Option<f64>,
    /// `test_nll − data_entropy`: a KL estimate.
    kl_estimate: Option<f64>,
    /// Without test rows: why, in terms of the key that sets them (for the final line).
    #[serde(skip)]
    no_test_rows: Option<String>,
    /// Which split each number comes from.
    splits: BTreeMap<&'static str, &'static str>,
    /// The loss of the run's last step (`null` when no step was counted).
    final_loss: f64,
    /// Mean CG iterations per system, the fraction of CG systems that met the tolerance
    /// (`null` without CG, e.g. the exact objective) and the steps where some did not: over
    /// the run's steps, every invocation included (the checkpoint keeps them).
    mean_cg_iterations: f64,
    cg_converged: Option<f64>,
    cg_unconverged_steps: usize,
    /// Present when `final_loss` and the CG numbers cover only the steps after this
    /// iteration: the run was resumed there from a checkpoint written before they were kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    step_stats_since_iteration: Option<usize>,
    train_time_s: f64,
    wall_time_s: f64,
    /// Why the plots of a 2-D run were not drawn (absent when they were, or were not asked
    /// for): the run is kept and scored; `cpflow plot` draws them over another window.
    #[serde(skip_serializing_if = "Option::is_none")]
    plot_error: Option<String>,
}

/// A training error, with what to do when it is a non-finite loss or gradient (it said only
/// where it happened): the vector flow's settings of [`crate::cli::divergence`].
fn with_non_finite_hint(e: crate::CpflowError) -> anyhow::Error {
    crate::cli::divergence::with_divergence_hint(e, crate::cli::divergence::VECTOR_REMEDIES)
}

pub fn train(mut a: TrainArgs) -> Result<()> {
    // `--resume` without `--config` continues the run as it was configured.
    if a.resume && a.config.is_none() {
        let out = a
            .out
            .clone()
            .unwrap_or_else(|| RunConfig::default().run.out);
        crate::cli::run_kind::check_run_command(&out, "train")?;
        let saved = out.join("config.toml");
        if !saved.is_file() && out.join("checkpoint.safetensors").is_file() {
            bail!(
                "--resume without --config reads the run's {}, which is missing: pass the \
                 configuration the run was made with as `--config <file>`",
                saved.display()
            );
        }
        a.config = saved.is_file().then_some(saved);
    }
    if is_image_config(a.config.as_deref())? {
        return super::train_image::train_image(a);
    }
    let t0 = Instant::now();
    let ov = overrides(&a);
    let cfg = resolve(a.config.as_deref(), &ov)?;
    let out = cfg.run.out.clone();
    // A run's own config.toml without --out: its `run.out` must be that run's directory (a
    // moved or copied run's names the original).
    check_config_dir_is_out(
        a.config.as_deref(),
        a.out.is_some(),
        &out,
        "the file's run.out",
        a.resume,
    )?;
    // What config.toml keeps: paths resolved against the current directory.
    let saved = absolute_run_config(&cfg)?;
    // The run directory before anything is read: a new run does not replace another without
    // --overwrite; a resume continues the run as it was made.
    let resume = if a.resume {
        Some(check_train_resume(&saved, &out)?)
    } else {
        check_new_run_of(&out, RunKind::Vectors, a.overwrite)?;
        None
    };
    // Then everything that can be checked without training, before anything in the run
    // directory is removed or written (a setting or a data file the new run refuses must not
    // cost the run that --overwrite would replace): the device, the data and their split,
    // what identifies them (a resume needs the run's), the tensors, the model and the trainer.
    let device = crate::cli::device(Some(&cfg.run.device))?;
    if a.resume {
        require_run_data_file(
            &out,
            &cfg.data.source,
            "restore it to continue the run (a resume trains on the run's rows and scores its \
             test split), or start a new run on other data with `--overwrite` (or another \
             --out)",
        )?;
    }
    let data = load(&cfg.data)?;
    warn_inert_data_keys(&cfg.data, &data.source);
    let val_label = validation_label(&data.source);
    if let Some(r) = &resume
        && r.dim != data.dim
    {
        bail!(
            "--resume: the data `{}` have {} columns, the run's model in {} takes {}",
            cfg.data.source,
            data.dim,
            out.display(),
            r.dim
        );
    }
    if cfg.train.val_every > 0 && data.val.is_empty() {
        bail!(
            "train.val_every = {} needs validation rows: set data.val_fraction (files) or \
             data.n_val (toys) above 0, or train.val_every = 0",
            cfg.train.val_every
        );
    }
    check_training_start(&cfg.train, data.n_train(), resume.is_none())?;
    let record = DataRecord::of(&saved.data.source, &data)?;
    // A resume of a run made without the record records the data now (with a warning).
    let write_record = match &resume {
        Some(_) => !check_data_record(&out, &record)?,
        None => true,
    };
    let dtype = cfg.model.float.dtype();
    tracing::info!(
        data = %cfg.data.source,
        dim = data.dim,
        n_train = data.n_train(),
        n_val = data.n_val(),
        n_test = data.n_test(),
        out = %out.display(),
        "loaded data"
    );
    // A new run's flow, computed once: its memory is checked here, it is built below.
    let new_flow = match resume {
        None => {
            let flow_config = cfg.model.flow_config(data.dim)?;
            check_new_flow_memory(&flow_config, &cfg, &data, dtype, &device)?;
            Some(flow_config)
        }
        Some(_) => None,
    };
    let part = |rows: &Rows| -> Result<Option<Dataset>> {
        Ok(if rows.is_empty() {
            None
        } else {
            Some(Dataset::new(data.tensor(rows, dtype, &device)?))
        })
    };
    let train_set = Dataset::new(data.tensor(&data.train, dtype, &device)?);
    let val_set = part(&data.val)?;
    let test_set = part(&data.test)?;
    // What the end of the run needs from the host rows; then they go (BSDS300: 330 MB).
    let entropy = data.test_entropy();
    let gaussian = data.test_gaussian_nll();
    let plot_points =
        (cfg.run.plots && data.dim == 2).then(|| rows_to_points(&data.train.to_f64(), 100_000));
    let plot_window = plot_points
        .as_deref()
        .map(|pts| default_plot_window(&data.source, pts));
    let (dim, n_train, n_val, n_test) = (data.dim, data.n_train(), data.n_val(), data.n_test());
    let no_test_rows = (n_test == 0).then(|| why_no_test_rows(&cfg.data, &data));
    drop(data);
    let options = RunOptions {
        out_dir: Some(out.clone()),
        progress_bar: cfg.run.progress && !a.no_progress,
        // The interrupt pauses the run through `interrupt.observer()` below.
        interrupt: None,
    };
    // The trainer validates its configuration and the optimiser's; a resumed one reads the
    // checkpoint. Neither writes anything before training.
    let mut trainer = match (&resume, new_flow) {
        (Some(r), _) => {
            tracing::info!(checkpoint = %r.checkpoint.display(), "resuming");
            Trainer::resume(&r.checkpoint, &device, Some(cfg.train.clone()))?
        }
        (None, Some(flow_config)) => {
            let flow = Flow::new(flow_config, &device)?;
            tracing::info!(parameters = flow.num_parameters(), "built the flow");
            Trainer::new(flow, cfg.train.clone())?
        }
        (None, None) => unreachable!("a new run's flow configuration is computed above"),
    }
    .with_options(options);
    let interrupt = Interrupt::install()?;
    // Only now is the run directory changed: the old run goes (--overwrite), the new one's
    // configuration and data record are written. What only training shows (a non-finite
    // loss at some step) fails after this.
    let _lock = take_run_dir(&out, &TRAIN_RUN, a.overwrite)?;
    write_config(&out, &saved, a.resume)?;
    if write_record {
        write_data_record(&out, &record)?;
    }
    let val = if cfg.train.val_every > 0 {
        val_set.as_ref()
    } else {
        None
    };
    let mut curve = val_set.as_ref().map(|v| {
        NllCurve::new(v.clone(), NllEstimator::Exact, cfg.run.eval_every)
            .with_seed(cfg.train.seed ^ 0xE7A1)
    });
    let resumed_at = a.resume.then(|| trainer.state().iteration);
    // Training seconds of the invocations before this one (0 for a new run).
    let trained_before = trainer.state().train_time_s;
    let mut pause = interrupt.observer();
    let fitted = match curve.as_mut() {
        Some(c) => trainer.fit_observed(&train_set, val, &mut [c, pause.as_mut()]),
        None => trainer.fit_observed(&train_set, val, &mut [pause.as_mut()]),
    };
    let rep = fitted.map_err(|e| with_training_hint(e, &out))?;
    if rep.stop_reason == StopReason::Paused {
        bail!(
            "interrupted after iteration {}: the run is saved in {}; continue it with `{}`",
            rep.iterations,
            out.join("checkpoint.safetensors").display(),
            resume_command("train", &out)
        );
    }
    // From here on an interrupt stops the evaluation (the trained run is saved).
    interrupt.end_training();
    let train_time = trainer.state().train_time_s;
    let counted_from = trainer
        .state()
        .step_stats
        .counted_from(trainer.state().iteration);
    let flow = trainer.into_flow();
    let after = AfterTraining {
        interrupt: &interrupt,
        out: &out,
        iteration: rep.iterations,
        n_test,
        plots: plot_points.is_some(),
    };
    let validation = ValidationNumbers::new(
        &cfg.train,
        &rep,
        curve.as_ref().map_or(&[][..], |c| c.points()),
    );
    // The exact validation NLL of the model's weights, when the curve has no point at their
    // iteration (weights kept from a validation between its points).
    // (An exact trainer's validation of them is that number already: `ValidationNumbers::new`.)
    let validation = match &val_set {
        Some(v) if validation.lacks_model_exact() => {
            after.check(Stage::Validation)?;
            let iteration = validation.model_iteration;
            tracing::info!(
                iteration,
                rows = v.len(),
                "scoring the kept weights on validation"
            );
            let nll = after
                .score_exact(Stage::Validation, &flow, v, cfg.train.seed ^ 0xE7A1)?
                .mean;
            tracing::info!(
                iteration,
                nll,
                "validation exact NLL of the model's weights"
            );
            validation.with_model_exact(nll)
        }
        _ => validation,
    };
    // The test part is scored once, here.
    let test_nll = match &test_set {
        Some(test) => {
            after.check(Stage::Test)?;
            tracing::info!(rows = test.len(), "scoring the test split");
            let nll = after.score_exact(Stage::Test, &flow, test, cfg.train.seed ^ 0x7E57)?;
            tracing::info!(
                iteration = validation.model_iteration,
                test_nll = nll.mean,
                "test exact NLL of the model's weights"
            );
            Some(nll)
        }
        None => None,
    };
    let (test_nll, test_nll_std_err) = match test_nll {
        Some(e) => (Some(e.mean), e.std_err),
        None => (None, None),
    };
    // A figure that cannot be drawn costs the figures, not the report: the run is trained
    // and scored, and `cpflow plot` draws them over another window.
    let mut plot_error = None;
    if let (Some(pts), Some(window)) = (plot_points, plot_window) {
        after.check(Stage::Plots)?;
        let mut rng = FlowRng::seed_from_u64(cfg.train.seed ^ 0x5A3);
        let opts = PlotOptions {
            window,
            ..PlotOptions::default()
        };
        match write_model_plots(&flow, Some(&pts), &out.join("plots"), &opts, &mut rng) {
            Ok(figs) => {
                tracing::info!(count = figs.len(), dir = %out.join("plots").display(), "wrote plots")
            }
            Err(e) => {
                tracing::warn!(
                    "the plots were not drawn: {e:#}. The run is saved and scored; `cpflow plot \
                     --model {}` draws them (`--center X,Y --half-width H`: another window)",
                    out.display()
                );
                plot_error = Some(format!("{e:#}"));
            }
        }
    }
    let splits = BTreeMap::from([
        ("val_nll_curve", val_label),
        ("val_nll", val_label),
        ("val_nll_exact", val_label),
        ("test_nll", "test (scored once, after training)"),
        ("data_entropy", "test"),
        ("gaussian_test_nll", "fitted to train, scored on test"),
    ]);
    let kl_estimate = match (test_nll, entropy) {
        (Some(t), Some(h)) => Some(t - h),
        _ => None,
    };
    let summary = TrainSummary {
        data: saved.data.source.clone(),
        dim,
        n_train,
        n_val,
        n_test,
        parameters: flow.num_parameters(),
        iterations: rep.iterations,
        max_iterations: cfg.train.max_iterations,
        resumed_at,
        stop_reason: rep.stop_reason,
        validation,
        val_nll_curve: curve.map(|c| c.into_points()).unwrap_or_default(),
        val_nll: rep.best_val_nll,
        val_iteration: rep.best_iteration,
        test_nll,
        test_nll_std_err,
        data_entropy: entropy,
        gaussian_test_nll: gaussian.map(|g| g.mean),
        gaussian_test_nll_std_err: gaussian.and_then(|g| g.std_err),
        kl_estimate,
        no_test_rows,
        splits,
        final_loss: rep.final_loss,
        mean_cg_iterations: rep.mean_cg_iterations,
        cg_converged: rep.cg_converged,
        cg_unconverged_steps: rep.cg_unconverged_steps,
        step_stats_since_iteration: (counted_from > 0).then_some(counted_from),
        train_time_s: train_time,
        wall_time_s: trained_before + t0.elapsed().as_secs_f64(),
        plot_error,
    };
    let file = ReportFile {
        summary: &summary,
        invocation_train_time_s: train_time - trained_before,
        invocation_wall_time_s: t0.elapsed().as_secs_f64(),
    };
    // A report that cannot be written names itself and the final checkpoint, whose resume
    // scores the run again and writes it.
    let json = serde_json::to_string_pretty(&file)?;
    let written = crate::checkpoint::write_atomic(&out.join("report.json"), json.as_bytes());
    LastCheckpoint::at(out.join("checkpoint.safetensors"), rep.iterations)
        .written("report.json", rep.iterations, written)
        .map_err(|e| with_checkpoint_hint(e, "train", &out))?;
    println!("{}", summary_line(&summary, &out));
    Ok(())
}

/// `report.json`: the summary, whose `train_time_s` covers the training of the whole run (every
/// invocation: resumes add to the time kept in the checkpoint) and whose `wall_time_s` is
/// this invocation's wall-clock time plus the earlier invocations' training time, and this
/// invocation's own times.
#[derive(Serialize)]
struct ReportFile<'a> {
    #[serde(flatten)]
    summary: &'a TrainSummary,
    /// Training seconds of this invocation alone (0 for a resume of a finished run).
    invocation_train_time_s: f64,
    /// Wall-clock seconds of this invocation alone.
    invocation_wall_time_s: f64,
}

/// The final line of `cpflow train`.
fn summary_line(s: &TrainSummary, out: &std::path::Path) -> String {
    let stop = match s.stop_reason {
        StopReason::EarlyStopping => " (early stopping)",
        _ => "",
    };
    let val = s
        .validation
        .console_text(s.val_nll, s.val_iteration, s.iterations);
    let pm = s
        .test_nll_std_err
        .map_or_else(String::new, |e| format!(" ± {}", super::score(e, 4)));
    let test = match (s.test_nll, s.data_entropy) {
        (Some(t), Some(h)) => format!(
            "; test exact NLL {}{pm} nats (data entropy {}, KL ≈ {})",
            super::score(t, 4),
            super::score(h, 4),
            super::score(t - h, 4)
        ),
        (Some(t), None) => match s.gaussian_test_nll {
            Some(g) => format!(
                "; test exact NLL {}{pm} nats (full-covariance Gaussian {}, flow − Gaussian {})",
                super::score(t, 4),
                super::score(g, 4),
                super::signed_score(t - g, 4)
            ),
            None => format!("; test exact NLL {}{pm} nats", super::score(t, 4)),
        },
        (None, _) => format!(
            "; no test score (no test rows: {})",
            s.no_test_rows.as_deref().unwrap_or("none were drawn")
        ),
    };
    let resumed = match s.resumed_at {
        Some(r) => format!(
            " ({} after resuming at {r})",
            s.iterations.saturating_sub(r)
        ),
        None => String::new(),
    };
    format!(
        "trained {} iteration{}{resumed}{stop} in {:.1} s{}{val}{test}; outputs in {}",
        s.iterations,
        if s.iterations == 1 { "" } else { "s" },
        s.train_time_s,
        super::cg_unconverged_clause(
            s.cg_unconverged_steps,
            s.iterations,
            s.step_stats_since_iteration,
            "iteration"
        ),
        out.display()
    )
}

/// A training error with what to do: a non-finite loss or gradient gets the settings that
/// tame it ([`with_non_finite_hint`]); the rest go through [`with_checkpoint_hint`].
fn with_training_hint(e: crate::CpflowError, out: &std::path::Path) -> anyhow::Error {
    match e {
        e @ crate::CpflowError::NonFinite { .. } => with_non_finite_hint(e),
        e => with_checkpoint_hint(e, "train", out),
    }
}

/// The config overrides that `train`'s flags and `--set` give.
pub(super) fn overrides(a: &TrainArgs) -> Overrides {
    Overrides {
        set: a.set.clone(),
        data: a.data.clone(),
        iters: a.iters,
        batch_size: a.batch_size,
        lr: a.lr,
        device: a.dev.device.clone(),
        dtype: a.dev.dtype,
        seed: a.dev.seed,
        out: a.out.clone(),
    }
}
