//! Continuing a `bench-tabular` run (`--resume`).
//!
//! Every dataset's run directory (`<out>/<dataset>/`) holds the trainer's resumable
//! checkpoint ([`CHECKPOINT_FILE`], written at every validation and when the run ends, so a
//! killed run loses at most one validation period), its metrics (`metrics.jsonl`) and the
//! benchmark configuration it was started with ([`RUN_CONFIG_FILE`]). A resumed run continues
//! the same trajectory (weights, Adam state, RNG, schedule, early-stopping counter) under a new
//! wall-clock budget, so a long run can be done in several sittings. What defines the run
//! (its data subsets, model and seed) must be the same as when it started; the training
//! settings (budget, validation period, learning rate, preconditioner, iteration cap) may
//! change, as with `cpflow train --resume`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::bench_tabular::DatasetResult;
use crate::json_file::{REMOVE_TO_RUN_AGAIN, read_json_file, write_json_file};
use crate::tabular_config::{TabularBenchConfig, float_name};

/// What a benchmark run does with the runs already in its output directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TabularResume {
    /// Every dataset starts afresh (the command line refuses to start over a checkpoint
    /// unless given `--overwrite`).
    #[default]
    Start,
    /// `bench-tabular --resume`: each dataset's run continues from its checkpoint for a new
    /// budget, a finished one too (a run can be extended over several sittings).
    Extend,
    /// `reproduce --resume`: a dataset whose result ([`RESULT_FILE`]) an earlier sitting
    /// wrote is kept as it is; an unfinished run continues for what is left of its budget
    /// (the budget counts the training time of every sitting), so that the result is the one
    /// an uninterrupted run would have had.
    Finish,
}

/// The trainer's resumable checkpoint in a dataset's run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// The benchmark configuration a run was started with, in its run directory.
pub const RUN_CONFIG_FILE: &str = "bench-config.json";

/// A finished dataset's [`DatasetResult`], in its run directory (written once the test NLL is
/// known; removed when a run starts or continues).
pub const RESULT_FILE: &str = "result.json";

/// The settings that define a run's data, model and seed: `(name, value)` pairs in the
/// report's words. Training settings are not among them (a resume may change those), nor is
/// the number of test rows: the test split never reaches training (BSDS300 draws every split
/// from its own seeded stream, the other datasets subsample their test split on its own), so
/// a resumed run may be scored on more or fewer of them (`--test-rows`).
fn defining_settings(cfg: &TabularBenchConfig) -> Vec<(&'static str, String)> {
    let at_most = |n: Option<usize>| n.map_or_else(|| "all".to_string(), |n| n.to_string());
    vec![
        ("training rows", at_most(cfg.max_train)),
        ("validation rows", at_most(cfg.max_val)),
        ("BSDS300 images", at_most(cfg.bsds300_max_images)),
        ("seed", cfg.seed.to_string()),
        ("float type", float_name(cfg.float).to_string()),
        ("architecture (--arch)", cfg.arch.name().to_string()),
        ("blocks (--blocks)", cfg.blocks.to_string()),
        ("width (--width)", cfg.width.to_string()),
        ("depth (--depth)", cfg.depth.to_string()),
    ]
}

/// The settings that would make `requested` another run than the one `saved` started:
/// "name: saved → requested" for each, empty when `requested` continues it.
///
/// ```
/// use cpflow::datasets::TabularDataset;
/// use xtask::bench_resume::resume_mismatches;
/// use xtask::tabular_config::TabularBenchConfig;
///
/// let saved = TabularBenchConfig::paper(TabularDataset::Bsds300);
/// // A new validation period and preconditioner continue the run...
/// let mut requested = saved.clone();
/// requested.val_every = 500;
/// requested.cg_preconditioner = cpflow::CgPreconditioner::MeanHessian;
/// assert!(resume_mismatches(&saved, &requested).is_empty());
/// // ...two blocks instead of one do not.
/// requested.blocks = 2;
/// assert_eq!(resume_mismatches(&saved, &requested), ["blocks (--blocks): 1 → 2"]);
/// ```
pub fn resume_mismatches(
    saved: &TabularBenchConfig,
    requested: &TabularBenchConfig,
) -> Vec<String> {
    setting_changes(defining_settings(saved), defining_settings(requested))
}

/// "name: saved → requested" for each of the `(name, value)` settings (the same names, in
/// the same order on both sides) whose value differs.
///
/// ```
/// use xtask::bench_resume::setting_changes;
/// let saved = vec![("seed", "0".to_string()), ("width", "8".to_string())];
/// let requested = vec![("seed", "0".to_string()), ("width", "9".to_string())];
/// assert_eq!(setting_changes(saved, requested), ["width: 8 → 9"]);
/// ```
pub fn setting_changes(
    saved: Vec<(&'static str, String)>,
    requested: Vec<(&'static str, String)>,
) -> Vec<String> {
    saved
        .into_iter()
        .zip(requested)
        .filter(|((_, a), (_, b))| a != b)
        .map(|((name, a), (_, b))| format!("{name}: {a} → {b}"))
        .collect()
}

/// Writes `cfg` as the run configuration of `run_dir` (atomically).
pub fn write_run_config(run_dir: &Path, cfg: &TabularBenchConfig) -> Result<()> {
    write_json_file(&run_dir.join(RUN_CONFIG_FILE), cfg)
}

/// Checks that `cfg` continues the run of `run_dir` (see [`resume_mismatches`]); the error
/// names every setting that differs.
pub fn check_resume(run_dir: &Path, cfg: &TabularBenchConfig) -> Result<()> {
    let path = run_dir.join(RUN_CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "--resume: reading {} (the configuration the run in {} started with)",
            path.display(),
            run_dir.display()
        )
    })?;
    let saved: TabularBenchConfig = serde_json::from_str(&text).with_context(|| {
        format!(
            "--resume: {} is not a benchmark configuration",
            path.display()
        )
    })?;
    let diff = resume_mismatches(&saved, cfg);
    if !diff.is_empty() {
        bail!(
            "--resume: the run in {} was started with other settings ({}); pass the run's \
             settings to continue it, or choose another --out",
            run_dir.display(),
            diff.join("; ")
        );
    }
    Ok(())
}

/// Writes `result` as the result of `run_dir` (atomically).
pub fn write_result(run_dir: &Path, result: &DatasetResult) -> Result<()> {
    write_json_file(&run_dir.join(RESULT_FILE), result)
}

/// The result an earlier sitting wrote in `run_dir`, `None` when there is none; an error when
/// it is unreadable or was made with other settings than `cfg` (its data, model or seed:
/// [`resume_mismatches`]).
pub fn read_result(run_dir: &Path, cfg: &TabularBenchConfig) -> Result<Option<DatasetResult>> {
    let path = run_dir.join(RESULT_FILE);
    let Some(done) = read_json_file::<DatasetResult>(&path, REMOVE_TO_RUN_AGAIN)? else {
        return Ok(None);
    };
    let diff = resume_mismatches(&done.config, cfg);
    if !diff.is_empty() {
        bail!(
            "--resume: the result in {} was made with other settings ({}); choose another \
             --out, or --overwrite to start over",
            path.display(),
            diff.join("; ")
        );
    }
    Ok(Some(done))
}

/// The checkpoints that a run of `datasets` into `out` would start over: what the command
/// line refuses to overwrite without `--resume` or `--overwrite`.
pub fn existing_checkpoints(
    out: &Path,
    datasets: &[cpflow::datasets::TabularDataset],
) -> Vec<PathBuf> {
    datasets
        .iter()
        .map(|ds| out.join(ds.name()).join(CHECKPOINT_FILE))
        .filter(|p| p.is_file())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpflow::datasets::TabularDataset;

    /// A setting's name and a change of it.
    type Change = (&'static str, fn(&mut TabularBenchConfig));

    /// Every setting that defines the run is compared, and only those: each change of one is
    /// named, with its two values; the training settings never are.
    #[test]
    fn data_model_and_seed_define_a_run() {
        let saved = TabularBenchConfig::quick(TabularDataset::Miniboone);
        let changes: [Change; 9] = [
            ("training rows", |c| c.max_train = None),
            ("validation rows", |c| c.max_val = Some(7)),
            ("BSDS300 images", |c| c.bsds300_max_images = Some(3)),
            ("seed", |c| c.seed = 9),
            ("float type", |c| c.float = cpflow::FloatType::F64),
            ("architecture", |c| {
                c.arch = crate::tabular_config::TabularArch::Icnn3
            }),
            ("blocks", |c| c.blocks = 3),
            ("width", |c| c.width = 16),
            ("depth", |c| c.depth = 5),
        ];
        for (name, change) in changes {
            let mut requested = saved.clone();
            change(&mut requested);
            let diff = resume_mismatches(&saved, &requested);
            assert_eq!(diff.len(), 1, "{name}: {diff:?}");
            assert!(diff[0].starts_with(name), "{name}: {diff:?}");
            // Values in words, not Rust's `Some(..)` / `None` / `F32`.
            assert!(
                !diff[0].contains("Some") && !diff[0].contains("None") && !diff[0].contains('F'),
                "{diff:?}"
            );
        }
        let mut all_rows = saved.clone();
        all_rows.max_train = None;
        assert_eq!(
            resume_mismatches(&saved, &all_rows),
            ["training rows: 4000 → all"]
        );
        let mut training = saved.clone();
        training.max_iterations = 1;
        training.lr = 0.5;
        training.val_every = 1;
        training.batch_size = 3;
        training.early_stopping = None;
        training.preset = "paper".into();
        training.max_test = Some(7);
        assert!(resume_mismatches(&saved, &training).is_empty());
    }

    /// `check_resume` reads the saved configuration: equal settings pass, other ones fail with
    /// their names, a missing or corrupt file fails with its path.
    #[test]
    fn check_resume_reads_the_saved_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TabularBenchConfig::tiny(TabularDataset::Miniboone);
        let missing = check_resume(dir.path(), &cfg).unwrap_err();
        assert!(
            format!("{missing:#}").contains(RUN_CONFIG_FILE),
            "{missing:#}"
        );
        write_run_config(dir.path(), &cfg).unwrap();
        check_resume(dir.path(), &cfg).unwrap();
        let mut other = cfg.clone();
        other.width = 9;
        let e = format!("{:#}", check_resume(dir.path(), &other).unwrap_err());
        assert!(
            e.contains("width (--width): 8 → 9") && e.contains("--out"),
            "{e}"
        );
        std::fs::write(dir.path().join(RUN_CONFIG_FILE), "{ truncated").unwrap();
        let e = format!("{:#}", check_resume(dir.path(), &cfg).unwrap_err());
        assert!(e.contains("not a benchmark configuration"), "{e}");
    }
}
