//! Continuing a `cargo xtask reproduce` (`--resume`), and not overwriting one by accident.
//!
//! A full reproduction takes hours: every part writes what it finished as it goes, so that an
//! interrupted or killed reproduction loses at most the run in progress's last checkpoint
//! period. `<out>/`[`RUN_FILE`] records what the reproduction is (preset, budget, device); each
//! finished toy, OT run, image flow and VAE run leaves its result beside its figures (the
//! tabular part its `result.json`, [`crate::bench_resume::RESULT_FILE`]). With `--resume` the
//! finished ones are kept as they are and the unfinished runs continue from their checkpoints
//! for what is left of their budgets (the budget counts the training time of every sitting),
//! so that the report is the one an uninterrupted reproduction would have written. Without
//! `--resume` a reproduction refuses an `--out` that holds one ([`begin_reproduction`]);
//! `--overwrite` removes it first ([`remove_reproduction`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bench_resume::setting_changes;
use crate::budget_train::is_interrupt;
use crate::json_file::{REMOVE_TO_RUN_AGAIN, read_json_file, write_json_file};

/// What a reproduction is, in its output directory.
pub const RUN_FILE: &str = "reproduce-run.json";

/// The result of a finished image flow or VAE run, in the run's folder.
pub const ROW_FILE: &str = "reproduce-row.json";

/// Everything a reproduction writes directly under its output directory (folders and files):
/// what a new reproduction refuses to overwrite and `--overwrite` removes.
pub const REPRODUCTION_ENTRIES: [&str; 8] = [
    "toys",
    "ot",
    "tabular",
    "images",
    "vae",
    crate::reproduce::REPORT_MD,
    crate::reproduce::REPORT_JSON,
    RUN_FILE,
];

/// The settings that make a reproduction what it is: a resumed one must have the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReproduceRun {
    /// `full`, `quick` or `tiny`.
    pub preset: String,
    /// Training budget per run in minutes (`--minutes`; `None` for the presets without one).
    pub minutes: Option<f64>,
    /// `cpu` or `cuda`.
    pub device: String,
}

impl ReproduceRun {
    /// "name: saved → requested" for each setting in which `requested` differs.
    ///
    /// ```
    /// use xtask::reproduce_resume::ReproduceRun;
    /// let saved = ReproduceRun { preset: "full".into(), minutes: Some(10.0), device: "cpu".into() };
    /// let requested = ReproduceRun { minutes: Some(30.0), ..saved.clone() };
    /// assert_eq!(saved.mismatches(&requested), ["--minutes: 10 → 30"]);
    /// assert!(saved.mismatches(&saved).is_empty());
    /// ```
    pub fn mismatches(&self, requested: &ReproduceRun) -> Vec<String> {
        setting_changes(self.settings(), requested.settings())
    }

    /// `(name, value)` of each setting, in the command line's words.
    fn settings(&self) -> Vec<(&'static str, String)> {
        let minutes = self
            .minutes
            .map_or_else(|| "none".to_string(), |m| format!("{m}"));
        vec![
            ("preset", self.preset.clone()),
            ("--minutes", minutes),
            ("--device", self.device.clone()),
        ]
    }
}

/// The entries of [`REPRODUCTION_ENTRIES`] that exist under `out`.
pub fn existing_reproduction(out: &Path) -> Vec<PathBuf> {
    REPRODUCTION_ENTRIES
        .iter()
        .map(|e| out.join(e))
        .filter(|p| p.exists())
        .collect()
}

/// Removes a reproduction from `out` (`--overwrite`): the entries of
/// [`REPRODUCTION_ENTRIES`], nothing else.
pub fn remove_reproduction(out: &Path) -> Result<()> {
    for path in existing_reproduction(out) {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("--overwrite: removing {}", path.display()))?;
    }
    Ok(())
}

/// Starts a reproduction described by `run` in `out`, or, with `resume`, continues the one
/// there. A new one refuses an `out` that holds a reproduction; a resumed one refuses one made
/// with other settings, and one without [`RUN_FILE`] (it cannot tell what that one was). An
/// `out` without a reproduction starts one either way. Writes [`RUN_FILE`].
///
/// ```
/// use xtask::reproduce_resume::{ReproduceRun, begin_reproduction};
/// let out = tempfile::tempdir().unwrap();
/// let run = ReproduceRun { preset: "quick".into(), minutes: None, device: "cpu".into() };
/// begin_reproduction(out.path(), &run, false).unwrap();
/// // Once started, only --resume with the same settings goes on.
/// let again = begin_reproduction(out.path(), &run, false).unwrap_err();
/// assert!(again.to_string().contains("--resume"));
/// begin_reproduction(out.path(), &run, true).unwrap();
/// let full = ReproduceRun { preset: "full".into(), ..run };
/// let other = begin_reproduction(out.path(), &full, true).unwrap_err();
/// assert!(other.to_string().contains("preset: quick → full"));
/// ```
pub fn begin_reproduction(out: &Path, run: &ReproduceRun, resume: bool) -> Result<()> {
    let existing = existing_reproduction(out);
    let run_file = out.join(RUN_FILE);
    if !resume && !existing.is_empty() {
        let names: Vec<String> = existing.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "{} holds a reproduction ({}): pass --resume to continue it, --overwrite to start \
             over, or choose another --out",
            out.display(),
            names.join(", ")
        );
    }
    // What `--resume` needs to know of the reproduction, in words that can restore the file:
    // it records nothing but the settings this command was given.
    let recreate = || {
        format!(
            "if this command has the settings the reproduction started with, write {} to {} \
             and run this command again",
            serde_json::to_string(run).unwrap_or_default(),
            run_file.display()
        )
    };
    if resume {
        let advice = format!(
            "it records only the preset, --minutes and --device the reproduction started \
             with; {}",
            recreate()
        );
        match read_json_file::<ReproduceRun>(&run_file, &advice)? {
            Some(saved) => {
                let diff = saved.mismatches(run);
                if !diff.is_empty() {
                    bail!(
                        "--resume: the reproduction in {} was started with other settings \
                         ({}); pass its settings to continue it, or choose another --out",
                        out.display(),
                        diff.join("; ")
                    );
                }
                tracing::info!(
                    "continuing the reproduction in {}: finished runs are kept",
                    out.display()
                );
            }
            None if !existing.is_empty() => bail!(
                "--resume: {} holds reproduction files but no {RUN_FILE} (the preset, \
                 --minutes and --device they were made with): {}; or pass --overwrite (in \
                 place of --resume) to start over, or choose another --out",
                out.display(),
                recreate()
            ),
            None => tracing::info!("--resume: no reproduction in {}: starting", out.display()),
        }
    }
    write_json_file(&run_file, run)
}

/// With `resume`, the result an earlier sitting saved at `path`; otherwise (or when there is
/// none) `run()`'s, saved there.
pub fn kept_or_run<T: Serialize + DeserializeOwned>(
    resume: bool,
    path: &Path,
    what: &str,
    run: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if resume && let Some(done) = kept_result(path, what, |_: &T| true)? {
        return Ok(done);
    }
    let value = run()?;
    write_json_file(path, &value)?;
    Ok(value)
}

/// The result an earlier sitting saved at `path` for `what`, `None` when there is none; an
/// error when `same_run(&saved)` says that it was made with other settings than the run this
/// reproduction would make.
pub fn kept_result<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    same_run: impl FnOnce(&T) -> bool,
) -> Result<Option<T>> {
    let Some(saved) = read_json_file::<T>(path, REMOVE_TO_RUN_AGAIN)? else {
        return Ok(None);
    };
    if !same_run(&saved) {
        bail!(
            "--resume: {} was made with another configuration than this reproduction's; \
             choose another --out, or --overwrite to start over",
            path.display()
        );
    }
    tracing::info!(
        "{what}: done in an earlier sitting ({}): kept",
        path.display()
    );
    Ok(Some(saved))
}

/// The interrupt (Ctrl-C) of a reproduction: checked between runs, and added to the error of a
/// run that it stopped.
#[derive(Clone, Debug)]
pub struct ReproduceInterrupt<'a> {
    /// The flag the signal handler sets (`None`: no handler).
    pub flag: Option<Arc<AtomicBool>>,
    /// The reproduction's output directory.
    pub out: &'a Path,
}

impl ReproduceInterrupt<'_> {
    /// Whether an interrupt came.
    pub fn is_set(&self) -> bool {
        self.flag
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// An error once an interrupt came: call it before every run.
    pub fn check(&self) -> Result<()> {
        if self.is_set() {
            bail!("{}", self.message(""));
        }
        Ok(())
    }

    /// `e` (the error of a run that was in progress), with what the interrupt left and how to
    /// continue when one came. Only an error that the interrupt itself caused
    /// ([`is_interrupt`]) says that the run in progress is checkpointed: another failure after
    /// Ctrl-C left the run as that failure did.
    pub fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        if !self.is_set() {
            e
        } else if is_interrupt(&e) {
            e.context(self.message(" and the run in progress is checkpointed"))
        } else {
            e.context(self.message(""))
        }
    }

    fn message(&self, in_progress: &str) -> String {
        format!(
            "interrupted: the finished runs are kept in {}{in_progress}; to continue the \
             reproduction, run the same command again with --resume (in place of \
             --overwrite, if it had that)",
            self.out.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproduction is refused over another, resumed only with its settings and its
    /// [`RUN_FILE`], and `--overwrite` removes its entries and nothing else.
    #[test]
    fn begin_refuses_resumes_and_overwrites() {
        let out = tempfile::tempdir().unwrap();
        let run = ReproduceRun {
            preset: "tiny".into(),
            minutes: Some(2.5),
            device: "cpu".into(),
        };
        // Files of another program stay where they are and do not count.
        std::fs::write(out.path().join("notes.txt"), "mine").unwrap();
        begin_reproduction(out.path(), &run, false).unwrap();
        std::fs::create_dir_all(out.path().join("toys")).unwrap();
        let e = begin_reproduction(out.path(), &run, false).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("--resume") && msg.contains("--overwrite") && msg.contains("toys"),
            "{msg}"
        );
        let other = ReproduceRun {
            minutes: Some(5.0),
            device: "cuda".into(),
            ..run.clone()
        };
        let msg = format!(
            "{:#}",
            begin_reproduction(out.path(), &other, true).unwrap_err()
        );
        assert!(
            msg.contains("--minutes: 2.5 → 5") && msg.contains("--device: cpu → cuda"),
            "{msg}"
        );
        begin_reproduction(out.path(), &run, true).unwrap();

        // Without its run file, what the reproduction was is unknown.
        std::fs::remove_file(out.path().join(RUN_FILE)).unwrap();
        let msg = format!(
            "{:#}",
            begin_reproduction(out.path(), &run, true).unwrap_err()
        );
        assert!(
            msg.contains(RUN_FILE) && msg.contains("--overwrite"),
            "{msg}"
        );
        // A damaged one is named, and the advice is what restores it (not "remove it",
        // which leads to the missing file above): the file with this command's settings.
        let damaged = "{ \"preset\": ";
        std::fs::write(out.path().join(RUN_FILE), damaged).unwrap();
        let msg = format!(
            "{:#}",
            begin_reproduction(out.path(), &run, true).unwrap_err()
        );
        assert!(
            msg.contains(RUN_FILE) && !msg.contains("remove it"),
            "{msg}"
        );
        let line = serde_json::to_string(&run).unwrap();
        assert!(msg.contains(&line), "{msg}");
        // Following the advice continues the reproduction.
        std::fs::write(out.path().join(RUN_FILE), &line).unwrap();
        begin_reproduction(out.path(), &run, true).unwrap();
        // So does it for the missing file.
        std::fs::remove_file(out.path().join(RUN_FILE)).unwrap();
        let msg = format!(
            "{:#}",
            begin_reproduction(out.path(), &run, true).unwrap_err()
        );
        assert!(msg.contains(&line), "{msg}");
        std::fs::write(out.path().join(RUN_FILE), &line).unwrap();
        begin_reproduction(out.path(), &run, true).unwrap();

        remove_reproduction(out.path()).unwrap();
        assert!(existing_reproduction(out.path()).is_empty());
        assert!(out.path().join("notes.txt").is_file());
        begin_reproduction(out.path(), &other, false).unwrap();
    }

    /// `kept_or_run` runs and saves without `resume` or a saved value, and keeps the saved
    /// value (without running) with `resume`.
    #[test]
    fn kept_or_run_keeps_what_was_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part").join("x.json");
        let first = kept_or_run(true, &path, "x", || Ok(vec![1.5f64, 2.0])).unwrap();
        assert_eq!(first, [1.5, 2.0]);
        let kept: Vec<f64> =
            kept_or_run(true, &path, "x", || panic!("a kept result runs again")).unwrap();
        assert_eq!(kept, first);
        let rerun = kept_or_run(false, &path, "x", || Ok(vec![3.0f64])).unwrap();
        assert_eq!(rerun, [3.0]);
        assert_eq!(
            read_json_file::<Vec<f64>>(&path, REMOVE_TO_RUN_AGAIN).unwrap(),
            Some(vec![3.0])
        );
        // A damaged saved result: removing it runs that part again.
        std::fs::write(&path, "[3.").unwrap();
        let e = format!(
            "{:#}",
            kept_result(&path, "x", |_: &Vec<f64>| true).unwrap_err()
        );
        assert!(e.contains(REMOVE_TO_RUN_AGAIN), "{e}");
        std::fs::write(&path, "[3.0]").unwrap();
        // A saved result of another run is an error, not a result.
        let same = kept_result(&path, "x", |v: &Vec<f64>| v == &[3.0]).unwrap();
        assert_eq!(same, Some(vec![3.0]));
        let e = kept_result(&path, "x", |v: &Vec<f64>| v.is_empty()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("another configuration") && msg.contains("--overwrite"),
            "{msg}"
        );
        let none = kept_result(&dir.path().join("none.json"), "x", |_: &Vec<f64>| false);
        assert_eq!(none.unwrap(), None);
    }

    /// The interrupt check passes until the flag is set, then fails with the `--resume` hint;
    /// a run's error gets the hint only once the flag is set.
    #[test]
    fn interrupt_check_and_explain() {
        let flag = Arc::new(AtomicBool::new(false));
        let stop = ReproduceInterrupt {
            flag: Some(flag.clone()),
            out: Path::new("target/r"),
        };
        stop.check().unwrap();
        let plain = format!("{:#}", stop.explain(anyhow::anyhow!("bad data")));
        assert_eq!(plain, "bad data");
        flag.store(true, Ordering::Relaxed);
        let msg = format!("{:#}", stop.check().unwrap_err());
        assert!(
            msg.contains("--resume") && msg.contains("target/r"),
            "{msg}"
        );
        // `--resume` and `--overwrite` exclude each other: the advice says to swap them.
        assert!(msg.contains("in place of --overwrite"), "{msg}");
        assert!(!msg.contains("in progress"), "{msg}");
        let paused = anyhow::Error::new(cpflow::CpflowError::Interrupted {
            iteration: 3,
            checkpoint: None,
        });
        let explained = format!("{:#}", stop.explain(paused));
        assert!(
            explained.starts_with("interrupted")
                && explained.contains("run in progress is checkpointed"),
            "{explained}"
        );
        // A failure of its own after Ctrl-C keeps the resume hint but claims no checkpoint.
        let failed = format!("{:#}", stop.explain(anyhow::anyhow!("disk full")));
        assert!(
            failed.starts_with("interrupted")
                && !failed.contains("in progress")
                && failed.ends_with("disk full"),
            "{failed}"
        );
    }
}
