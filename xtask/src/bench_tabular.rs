//! `cargo xtask bench-tabular`: train CP-Flow on the MAF tabular benchmarks found on disk and
//! report the exact test NLL next to the paper's Table 1.
//!
//! For each requested dataset: find its files under the data directory (then under the
//! fallback roots, e.g. the shared read-only data that holds the BSDS300 images), load it with
//! MAF's preprocessing ([`cpflow::datasets`]), take the seeded subsets of the configuration
//! ([`TabularBenchConfig`]), train with early stopping on the validation NLL and a wall-clock
//! budget ([`fit_with_budget`]), and evaluate the exact test NLL (mean ± 2 standard errors).
//! Missing datasets are skipped with a message naming `cargo xtask download <name>`; when
//! none of the requested datasets ran, the command fails (after writing its report).
//! Results go to `<out>/bench-tabular.md` and `<out>/bench-tabular.json`
//! ([`crate::bench_report`]), which also list the results that earlier runs left in `<out>`
//! for the other datasets (a run never drops a finished row from the report); each
//! dataset's folder `<out>/<dataset>/` holds the kept model,
//! the metrics, the validation curve ([`crate::bench_curve`]) and a resumable checkpoint
//! written at every validation, which
//! [`BenchTabularOptions::resume`] continues ([`crate::bench_resume`]), and, once the dataset
//! is done, its result ([`RESULT_FILE`]).

mod dataset_files;
mod scoring;
mod skipped;

pub use dataset_files::{
    dataset_present, default_fallback_roots, load_split, locate_dataset, parse_datasets,
    subsample_rows,
};
pub use scoring::{exact_test_nll, gaussian_test_nll};
pub use skipped::{SkipReason, SkippedDataset};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::Device;
use cpflow::datasets::TabularDataset;
use cpflow::{CgPreconditioner, Dataset, Flow, RunOptions, Trainer};
use serde::{Deserialize, Serialize};

use crate::bench_curve::{CURVE_PNG, write_validation_curve};
use crate::bench_report::write_bench_report;
use crate::bench_resume::{
    CHECKPOINT_FILE, RESULT_FILE, TabularResume, check_resume, read_result, write_result,
    write_run_config,
};
use crate::budget_train::{BudgetedFit, fit_with_budget, is_interrupt};
use crate::json_file::read_json_file;
use crate::tabular_config::{ModelOverrides, TabularBenchConfig, paper_cpflow_nll};

/// Options of a benchmark run.
#[derive(Clone, Debug)]
pub struct BenchTabularOptions {
    /// Datasets to run, in order.
    pub datasets: Vec<TabularDataset>,
    /// The data directory (`cargo xtask download --dir`).
    pub data_dir: PathBuf,
    /// Further roots searched when a dataset is not under `data_dir`
    /// (default: [`default_fallback_roots`]).
    pub fallback_roots: Vec<PathBuf>,
    /// Compute device.
    pub device: Device,
    /// Wall-clock training budget per dataset (`None`: iteration cap / early stopping only).
    pub budget: Option<Duration>,
    /// The configuration of each dataset ([`TabularBenchConfig::paper`], `quick`, `tiny`).
    pub preset: fn(TabularDataset) -> TabularBenchConfig,
    /// Iterations between validations, instead of the preset's (`--val-every`). Early
    /// stopping and the plateau learning-rate rule count validations, so this also sets
    /// their patience in iterations.
    pub val_every: Option<usize>,
    /// Preconditioner of the surrogate's CG solves, instead of the preset's (none).
    pub cg_preconditioner: Option<CgPreconditioner>,
    /// Score the test NLL on a seeded subset of at most this many test rows instead of the
    /// preset's (`--test-rows`; the paper preset scores the whole test split).
    pub test_rows: Option<usize>,
    /// Changes to the preset's model (`--arch`, `--blocks`, `--width`, `--depth`).
    pub model: ModelOverrides,
    /// Output directory.
    pub out: PathBuf,
    /// Draw progress bars.
    pub progress: bool,
    /// What becomes of the runs already in `out` ([`TabularResume`]): started over, continued
    /// for a new budget (`bench-tabular --resume`) or finished (`reproduce --resume`).
    pub resume: TabularResume,
    /// Once set (the command line's Ctrl-C handler, [`cpflow::cli::Interrupt`]), the run in
    /// progress pauses after its training step, its checkpoint written, and the datasets
    /// after it are not started; `resume` continues.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// The result on one dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetResult {
    /// Dataset name.
    pub dataset: String,
    /// Data dimension.
    pub dim: usize,
    /// Data root the files were read from.
    pub data_root: String,
    /// Rows used for training.
    pub n_train: usize,
    /// Rows used for validation.
    pub n_val: usize,
    /// Rows used for the test NLL.
    pub n_test: usize,
    /// Exact test NLL (nats), mean over the test rows.
    pub test_nll: f64,
    /// Two standard errors of that mean.
    pub test_nll_2se: f64,
    /// The paper's CP-Flow number (Table 1).
    pub paper_nll: f64,
    /// Test NLL (mean, 2 standard errors) of the full-covariance Gaussian fitted to the same
    /// training rows ([`GaussianBaseline`](cpflow::datasets::GaussianBaseline)); `None` when it
    /// could not be fitted (a singular covariance) and in reports written before it existed.
    #[serde(default)]
    pub gaussian_test_nll: Option<(f64, f64)>,
    /// The same model on MAF's file (MAF's Table 1, with its 2 standard errors): next to
    /// [`DatasetResult::gaussian_test_nll`], how close the data are to MAF's.
    #[serde(default)]
    pub maf_gaussian_nll: Option<(f64, f64)>,
    /// Trainable parameters.
    pub parameters: usize,
    /// The training run.
    pub fit: BudgetedFit,
    /// Seconds per training iteration (validations included).
    pub seconds_per_iteration: f64,
    /// Seconds of the exact test evaluation.
    pub eval_time_s: f64,
    /// Seconds spent loading the data.
    pub load_time_s: f64,
    /// The configuration used.
    pub config: TabularBenchConfig,
    /// The run's validation curve ([`crate::bench_curve`]), relative to the output
    /// directory; `None` when there was too little to draw (and in older reports).
    #[serde(default)]
    pub validation_curve: Option<String>,
}

/// Everything a benchmark run produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Datasets that ran (or, resumed by `reproduce --resume`, that an earlier sitting of
    /// this run finished).
    pub results: Vec<DatasetResult>,
    /// Datasets not among `results` whose result an earlier run left in the output directory
    /// (each with its own configuration; its budget and device were that run's): listed so
    /// that the report keeps them.
    #[serde(default)]
    pub earlier: Vec<DatasetResult>,
    /// Datasets that were skipped (not on disk, or not started after an interrupt).
    pub skipped: Vec<SkippedDataset>,
    /// Datasets whose run an interrupt (Ctrl-C) paused, checkpointed: `--resume` continues
    /// them.
    #[serde(default)]
    pub interrupted: Vec<SkippedDataset>,
    /// Datasets that were found but failed (unreadable data, training error); the others
    /// still ran.
    #[serde(default)]
    pub failed: Vec<SkippedDataset>,
    /// The device in words (`cpu`, `cuda:0`).
    pub device: String,
    /// The per-dataset budget in minutes, if any.
    pub budget_minutes: Option<f64>,
    /// Wall-clock seconds of the whole run.
    pub wall_time_s: f64,
}

/// Loads, trains and evaluates one dataset found at `root`.
pub fn run_dataset(
    ds: TabularDataset,
    root: &Path,
    opts: &BenchTabularOptions,
) -> Result<DatasetResult> {
    let mut cfg = (opts.preset)(ds);
    if let Some(every) = opts.val_every {
        anyhow::ensure!(every >= 1, "--val-every must be at least 1");
        cfg.val_every = every;
    }
    if let Some(pre) = opts.cg_preconditioner {
        cfg.cg_preconditioner = pre;
    }
    if let Some(rows) = opts.test_rows {
        anyhow::ensure!(rows >= 1, "--test-rows must be at least 1");
        cfg.max_test = Some(rows);
    }
    opts.model.apply(&mut cfg);
    // Checked before any data are read, so that a model the networks refuse (an odd Icnn3
    // width) fails at once, not after BSDS300's 1,000,000 rows are loaded.
    cfg.flow_config(ds.dim())
        .validate()
        .with_context(|| format!("{ds}: the model ({})", cfg.summary()))?;
    let run_dir = opts.out.join(ds.name());
    let checkpoint = run_dir.join(CHECKPOINT_FILE);
    let resuming = opts.resume != TabularResume::Start && checkpoint.is_file();
    if resuming {
        // Before the data are read, like the model.
        check_resume(&run_dir, &cfg)?;
    }
    if opts.resume == TabularResume::Finish
        && let Some(done) = read_result(&run_dir, &cfg)?
    {
        tracing::info!(
            "{ds}: done in an earlier sitting (test NLL {:.3} ± {:.3}): kept",
            done.test_nll,
            done.test_nll_2se
        );
        return Ok(done);
    }
    // From here on the run's result is not that of an earlier run.
    let stale = run_dir.join(RESULT_FILE);
    if stale.is_file() {
        std::fs::remove_file(&stale).with_context(|| format!("removing {}", stale.display()))?;
    }
    let t_load = Instant::now();
    tracing::info!("{ds}: loading from {}", root.display());
    let split = load_split(ds, root, &cfg).with_context(|| format!("loading {ds}"))?;
    let dtype = cfg.float.dtype();
    let t = split.to_tensors(dtype, &opts.device)?;
    let load_time_s = t_load.elapsed().as_secs_f64();
    let (n_train, n_val, n_test) = split.sizes();
    let dim = split.dim();
    tracing::info!(
        "{ds}: d = {dim}, {n_train} / {n_val} / {n_test} rows (loaded in {load_time_s:.1} s); {}",
        cfg.summary()
    );
    let gaussian_test_nll = gaussian_test_nll(&split);
    if let Some((g, g2se)) = gaussian_test_nll {
        let (maf, maf_2se) = ds.maf_gaussian_test_nll();
        tracing::info!(
            "{ds}: full-covariance Gaussian test NLL {g:.3} ± {g2se:.3} (on MAF's file {maf:.2} \
             ± {maf_2se:.2})"
        );
    }
    // MAF's preprocessing fixes the dimension; data that come out wider or narrower get a
    // flow of their own width.
    let flow_config = cfg.flow_config(dim);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let trainer = if resuming {
        let trainer = Trainer::resume(&checkpoint, &opts.device, Some(cfg.train_config()))
            .with_context(|| format!("--resume: reading {}", checkpoint.display()))?;
        anyhow::ensure!(
            trainer.flow().config() == &flow_config,
            "--resume: the model in {} is not the one its run's settings describe",
            checkpoint.display()
        );
        tracing::info!(
            "{ds}: resuming at iteration {} from {}",
            trainer.state().iteration,
            checkpoint.display()
        );
        trainer
    } else {
        if opts.resume != TabularResume::Start {
            tracing::info!("{ds}: no checkpoint in {}: starting", run_dir.display());
        }
        write_run_config(&run_dir, &cfg)?;
        Trainer::new(Flow::new(flow_config, &opts.device)?, cfg.train_config())?
    };
    let parameters = trainer.flow().num_parameters();
    // The trainer writes its checkpoint (at every validation and at the end), metrics and
    // model into the run directory.
    let trainer = trainer.with_options(RunOptions {
        out_dir: Some(run_dir.clone()),
        interrupt: opts.interrupt.clone(),
        ..RunOptions::default()
    });
    // `reproduce --resume` finishes a run within its budget: the training time of the
    // earlier sittings counts against it.
    let spent = match opts.resume {
        TabularResume::Finish => Duration::from_secs_f64(trainer.state().train_time_s.max(0.0)),
        TabularResume::Start | TabularResume::Extend => Duration::ZERO,
    };
    let (flow, fit) = fit_with_budget(
        trainer,
        &Dataset::new(t.train),
        &Dataset::new(t.val),
        opts.budget,
        spent,
        opts.progress,
    )?;
    let validation_curve = match write_validation_curve(&run_dir, ds.name()) {
        Ok(p) => p.map(|_| format!("{}/{CURVE_PNG}", ds.name())),
        Err(e) => {
            // A figure that cannot be drawn must not cost the run's numbers.
            tracing::warn!("{ds}: no validation curve: {e:#}");
            None
        }
    };
    let t_eval = Instant::now();
    let (test_nll, test_nll_2se) =
        exact_test_nll(&flow, &t.test, cfg.eval_batch_size, opts.progress)?;
    let eval_time_s = t_eval.elapsed().as_secs_f64();
    tracing::info!(
        "{ds}: test NLL {test_nll:.3} ± {test_nll_2se:.3} after {} iterations in {:.0} s \
         (paper {:.2})",
        fit.iterations,
        fit.train_time_s,
        paper_cpflow_nll(ds)
    );
    let result = DatasetResult {
        dataset: ds.name().into(),
        dim,
        data_root: root.display().to_string(),
        n_train,
        n_val,
        n_test,
        test_nll,
        test_nll_2se,
        paper_nll: paper_cpflow_nll(ds),
        gaussian_test_nll,
        maf_gaussian_nll: Some(ds.maf_gaussian_test_nll()),
        parameters,
        seconds_per_iteration: fit.train_time_s / fit.iterations.max(1) as f64,
        fit,
        eval_time_s,
        load_time_s,
        config: cfg,
        validation_curve,
    };
    write_result(&run_dir, &result)?;
    Ok(result)
}

/// Runs the benchmark on every requested dataset that is on disk and writes
/// `<out>/bench-tabular.md` and `<out>/bench-tabular.json`. A dataset that fails is listed in
/// [`BenchReport::failed`] and the run goes on with the next one; one that an interrupt
/// paused is listed in [`BenchReport::interrupted`], and the ones after it do not start. The
/// report also lists, as [`BenchReport::earlier`], every other dataset whose result an
/// earlier run left in `out` (`<out>/<dataset>/result.json`): a run of some datasets, or one
/// that finished nothing, does not drop the rows of the others from the report.
pub fn run_bench_tabular(opts: &BenchTabularOptions) -> Result<BenchReport> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    let mut interrupted_runs = Vec::new();
    let mut failed = Vec::new();
    let interrupted = || {
        opts.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    };
    for (k, &ds) in opts.datasets.iter().enumerate() {
        let skip = |k: SkippedDataset| {
            tracing::warn!("{}", k.message);
            k
        };
        let root = match locate_dataset(ds, &opts.data_dir, &opts.fallback_roots) {
            Ok(root) => root,
            Err(message) => {
                skipped.push(skip(SkippedDataset::not_on_disk(ds.name(), message)));
                continue;
            }
        };
        // The dataset in progress pauses on an interrupt; the ones after it do not start.
        if k > 0 && interrupted() {
            skipped.push(skip(SkippedDataset::not_started(ds.name())));
            continue;
        }
        match run_dataset(ds, &root, opts) {
            Ok(r) => results.push(r),
            // Only the interrupt's own error is filed as interrupted: the interrupt reaches the
            // run (in this process, no child) only through the flag that training checks
            // after each step, so the error it causes is `TrainingPaused`. Any other error,
            // even one raised after Ctrl-C was pressed (data that cannot be read, a model the
            // networks refuse, a checkpoint that cannot be written), is a failure.
            Err(e) if is_interrupt(&e) => {
                // Paused, checkpointed: not a failure.
                interrupted_runs.push(skip(SkippedDataset::interrupted(ds.name(), &e)));
            }
            Err(e) => {
                // One bad dataset must not cost the results of the others.
                let k = SkippedDataset::failed(ds.name(), &e);
                tracing::error!("{}", k.message);
                failed.push(k);
            }
        }
    }
    let earlier = earlier_results(&opts.out, &results);
    let report = BenchReport {
        results,
        earlier,
        skipped,
        interrupted: interrupted_runs,
        failed,
        device: device_name(&opts.device),
        budget_minutes: opts.budget.map(|b| b.as_secs_f64() / 60.0),
        wall_time_s: t0.elapsed().as_secs_f64(),
    };
    write_bench_report(&opts.out, &report)?;
    Ok(report)
}

/// The results that earlier runs left in `out` ([`RESULT_FILE`] of each dataset's folder) for
/// the datasets not among `current`, in the order of [`TabularDataset::ALL`]. One that cannot
/// be read is left where it is, with a warning.
pub fn earlier_results(out: &Path, current: &[DatasetResult]) -> Vec<DatasetResult> {
    let mut earlier = Vec::new();
    for ds in TabularDataset::ALL {
        if current.iter().any(|r| r.dataset == ds.name()) {
            continue;
        }
        let path = out.join(ds.name()).join(RESULT_FILE);
        match read_json_file::<DatasetResult>(&path, "it is left as it is") {
            Ok(Some(r)) => earlier.push(r),
            Ok(None) => {}
            Err(e) => tracing::warn!("{ds}: an earlier result is not in the report: {e:#}"),
        }
    }
    earlier
}

/// A device in words: `cpu`, `cuda:0`, `metal:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
