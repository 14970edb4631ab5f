//! The run directory of `cpflow train` and `cpflow vae`: a new run never silently replaces
//! one that is there (`--overwrite` does, and removes what the new run would otherwise leave
//! behind), `--resume` needs the run's checkpoint, and nothing is removed or written before
//! every check that can be made without training has passed (the configuration, the data,
//! the model, the trainer); the saved `config.toml` holds absolute paths, so that it works
//! from any directory.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::{Component, Path, PathBuf};

use crate::cli::data::SourceName;
use crate::cli::run_config::RunConfig;
use crate::cli::run_kind::RunKind;

mod before_first_checkpoint;
mod config_dir;
mod leftover_temps;
mod lock;

pub use before_first_checkpoint::{
    new_run_over_stopped_run, resume_of_stopped_run, stopped_run_replaced,
};
pub use config_dir::check_config_dir_is_out;
use lock::held_by_another_process;
pub use lock::{lock_run_dir, refuse_held_dir};

/// The files a kind of run keeps in its directory.
pub struct RunFiles {
    /// The subcommand, for messages (`train`, `vae`).
    pub command: &'static str,
    /// Files whose presence means that the directory holds a run.
    pub markers: &'static [&'static str],
    /// What `--overwrite` removes: the markers and what the run writes beside them (a
    /// directory is removed with its contents).
    pub removed: &'static [&'static str],
}

/// What identifies the data of a `cpflow train` run (tabular and toy runs; see
/// [`crate::cli::data_record::DataRecord`]): `--resume` refuses other data.
pub const DATA_RECORD: &str = "data_record.json";

/// `cpflow train` (tabular, toy and image runs). A 2-D run's figures in `plots/` are removed
/// as `plots/plots.json` lists them (see [`remove_old_run`]).
pub const TRAIN_RUN: RunFiles = RunFiles {
    command: "train",
    markers: &["checkpoint.safetensors", "model.safetensors", "report.json"],
    removed: &[
        "checkpoint.safetensors",
        "model.safetensors",
        "report.json",
        "metrics.jsonl",
        "config.toml",
        DATA_RECORD,
    ],
};

/// `cpflow vae`.
pub const VAE_RUN: RunFiles = RunFiles {
    command: "vae",
    markers: &["checkpoint.safetensors", "best.safetensors", "report.json"],
    removed: &[
        "checkpoint.safetensors",
        "best.safetensors",
        "report.json",
        "metrics.jsonl",
        "config.toml",
    ],
};

/// The marker files ([`RunFiles::markers`]) of the kinds of run `kinds` that `dir` holds, in
/// the order the kinds list them, each once: whether, and which, runs are there.
pub fn markers_present(dir: &Path, kinds: &[&RunFiles]) -> Vec<&'static str> {
    let mut found: Vec<&'static str> = Vec::new();
    for &marker in kinds.iter().flat_map(|k| k.markers) {
        if !found.contains(&marker) && dir.join(marker).exists() {
            found.push(marker);
        }
    }
    found
}

/// Takes `out` for a `train`/`vae` run once every check has passed: the lock of
/// [`lock_run_dir`] (held while the returned file lives), then, with `overwrite`, the old run
/// removed ([`remove_old_run`]).
pub fn take_run_dir(out: &Path, files: &RunFiles, overwrite: bool) -> Result<std::fs::File> {
    let lock = lock_run_dir(out)?;
    if overwrite {
        remove_old_run(out, files)?;
    }
    Ok(lock)
}

/// The checkpoint of the run in `out`.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.join("checkpoint.safetensors")
}

/// A new run (no `--resume`) into `out`: refused, before anything is read or written, when
/// `out` holds a run or a model of any kind (a flow's, a VAE's), unless `overwrite`, or when
/// another process holds it ([`refuse_held_dir`]), `overwrite` or not. A run that `files`'
/// command cannot continue (a VAE run for `train`) is refused as another kind's; one it can
/// is pointed to `--resume`, its kind named. [`check_new_run_of`] also tells an image run
/// from a flow on vectors.
pub fn check_new_run(out: &Path, files: &RunFiles, overwrite: bool) -> Result<()> {
    check_new_run_as(out, files, None, overwrite)
}

/// [`check_new_run`] for a new run of kind `kind`: a run of any other kind in `out` (a flow
/// on vectors for an image run, an image run for a toy) is refused as such, naming both,
/// instead of pointing to `--resume`, which would continue that other run.
pub fn check_new_run_of(out: &Path, kind: RunKind, overwrite: bool) -> Result<()> {
    check_new_run_as(out, kind.files(), Some(kind), overwrite)
}

fn check_new_run_as(
    out: &Path,
    files: &RunFiles,
    kind: Option<RunKind>,
    overwrite: bool,
) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!(
            "--out {} is a file, not a directory: give a directory for the run",
            out.display()
        );
    }
    refuse_held_dir(out)?;
    crate::cli::run_kind::check_no_ot_outputs(out, files.command, overwrite)?;
    // Any kind of run counts (`files`' markers listed first): a `vae` run into a directory
    // holding only a flow's `model.safetensors` would write its files beside that model.
    let found = markers_present(out, &[files, &TRAIN_RUN, &VAE_RUN]);
    if found.is_empty() || overwrite {
        return Ok(());
    }
    // Another kind of run (a VAE run for `train`, a flow for `vae`, a toy for an image run)
    // cannot be continued into the new one.
    let held = crate::cli::run_kind::refuse_new_run_over_other_kind(out, &found, files, kind)?;
    // A run stopped before its first checkpoint, which left best weights (an older `vae`):
    // started again from its own configuration, not `--resume`d.
    if let Some(msg) = new_run_over_stopped_run(out) {
        bail!("{msg}");
    }
    if !out.join("checkpoint.safetensors").exists() {
        // Nothing to resume: a model without a training checkpoint (`cpflow
        // import-reference` writes one).
        bail!(
            "{} already holds a model ({}) without a training checkpoint to continue: replace \
             it with `--overwrite`, or give another `--out`",
            out.display(),
            found.join(", ")
        );
    }
    let longer = match files.command {
        "vae" => "--epochs",
        _ => "--iters",
    };
    let held = held.map_or(String::new(), |k| format!(", {}", k.describe()));
    bail!(
        "{} already holds a run ({}){held}: continue it with `{}` (without --config: it reads \
         the run's config.toml; a finished run with a larger {longer}), replace it with \
         `--overwrite`, or give another `--out`",
        out.display(),
        found.join(", "),
        crate::cli::shell_words::resume_command(files.command, out)
    )
}

/// `--overwrite`: removes the old run's files, so that none of them is left to describe
/// another model. Call it only once everything the new run can check without training has
/// passed (configuration, data and split, model, trainer): a refused run must leave the old
/// one as it was.
/// A directory that holds no run (no marker file) is left as it is; in `plots/`, only the
/// figures that `plots/plots.json` lists and that file go (the directory too once empty):
/// files of the user's there stay.
/// The files of every kind of run go, not only `files`' (a `vae --overwrite` over a toy run
/// left the toy's `model.safetensors`, which `cpflow sample` then read as the new run's),
/// and the outputs of a `cpflow ot` run
/// ([`ot_output_files`](crate::cli::run_kind::ot_output_files)).
pub fn remove_old_run(out: &Path, files: &RunFiles) -> Result<()> {
    let remove = |p: &Path| -> Result<()> {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {} (--overwrite)", p.display()))
            }
            _ => Ok(()),
        }
    };
    // An OT experiment's table and figures go too: they would stay beside the new run.
    for f in crate::cli::run_kind::ot_output_files(out)? {
        remove(&f)?;
    }
    let kinds = [files, &TRAIN_RUN, &VAE_RUN];
    if markers_present(out, &kinds).is_empty() {
        return Ok(());
    }
    for name in kinds.iter().flat_map(|k| k.removed) {
        remove(&out.join(name))?;
    }
    let plots = out.join("plots");
    let list = plots.join("plots.json");
    if let Ok(text) = std::fs::read_to_string(&list) {
        #[derive(serde::Deserialize)]
        struct Listed {
            file: String,
        }
        // Only plain names: a list edited to point elsewhere removes nothing outside.
        let listed: Vec<Listed> = serde_json::from_str(&text).unwrap_or_default();
        for f in listed {
            if Path::new(&f.file).file_name() == Some(std::ffi::OsStr::new(&f.file)) {
                remove(&plots.join(&f.file))?;
            }
        }
        remove(&list)?;
        // Only when empty: anything else in it is not ours.
        let _ = std::fs::remove_dir(&plots);
    }
    Ok(())
}

/// `--resume`: the checkpoint to continue; refused, before anything is written, when there
/// is none.
pub fn resume_checkpoint(out: &Path, command: &str) -> Result<PathBuf> {
    let ck = checkpoint_path(out);
    if !ck.is_file() && held_by_another_process(out) {
        bail!(
            "{} is in use by another cpflow process that has not written its first checkpoint \
             yet: wait for it to end (Ctrl-C stops it and saves the run), or give another --out",
            out.display()
        );
    }
    if !ck.is_file()
        && let Some(msg) = resume_of_stopped_run(out)
    {
        bail!("{msg}");
    }
    if !ck.is_file() {
        bail!(
            "--resume: {} does not exist, so there is no run in {} to continue; start one with \
             `cpflow {command}` without --resume",
            ck.display(),
            out.display()
        );
    }
    Ok(ck)
}

/// The first line of every `config.toml` that cpflow writes: how [`write_config`] tells its
/// own files (left by a run that stopped before its first checkpoint) from the user's.
pub const CONFIG_HEADER: &str = "# Written by cpflow: the run's configuration as resolved \
     (overrides applied, paths absolute); `--resume` reads it.\n";

/// Writes `<out>/config.toml` atomically (creating `out`), after [`CONFIG_HEADER`]: call it
/// once every check has passed. For a new run (`resumed == false`) a `config.toml` that is
/// there is not the run's (`--overwrite` removed an old run's): a different one, such as the
/// commented file the run was started from, is kept as `config.orig.toml` (or
/// `config.orig.N.toml`), with a warning; one that cpflow wrote (left by a run that stopped
/// before its first checkpoint) is replaced.
pub fn write_config<T: Serialize>(out: &Path, config: &T, resumed: bool) -> Result<()> {
    crate::cli::output_files::ensure_dir(out, "the run directory (--out)")?;
    let path = out.join("config.toml");
    let body = toml::to_string_pretty(config)
        .with_context(|| format!("serialising the configuration for {}", path.display()))?;
    let text = format!("{CONFIG_HEADER}{body}");
    if !resumed {
        keep_other_config(out, &path, &text)?;
    }
    crate::cli::output_files::write_file_atomic(&path, text.as_bytes(), "the run configuration")
}

/// Renames a `config.toml` whose text is not `text` to the first free `config.orig.toml`,
/// `config.orig.2.toml`, … of `out`; one that cpflow wrote ([`CONFIG_HEADER`]) is left to
/// be replaced.
fn keep_other_config(out: &Path, path: &Path, text: &str) -> Result<()> {
    match std::fs::read(path) {
        Ok(old) if old.starts_with(CONFIG_HEADER.as_bytes()) && old != text.as_bytes() => {
            tracing::info!(
                "replacing {}, written by cpflow for a run that did not get to its first \
                 checkpoint",
                path.display()
            );
            return Ok(());
        }
        Ok(old) if old != text.as_bytes() => {}
        _ => return Ok(()),
    }
    let kept = (1..)
        .map(|i| match i {
            1 => out.join("config.orig.toml"),
            i => out.join(format!("config.orig.{i}.toml")),
        })
        .find(|p| !p.exists())
        .context("no free config.orig.N.toml name")?;
    std::fs::rename(path, &kept).with_context(|| {
        format!(
            "keeping {} as {} before writing the run's configuration",
            path.display(),
            kept.display()
        )
    })?;
    tracing::warn!(
        "{} was not this run's: kept as {}; config.toml now holds the resolved configuration \
         (overrides applied, absolute paths) that --resume reads",
        path.display(),
        kept.display()
    );
    Ok(())
}

/// `path` resolved against the current directory (not canonicalised: it need not exist).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .with_context(|| format!("resolving {} against the current directory", path.display()))
}

/// `path` made absolute, its longest existing ancestor canonicalised (symlinks and `..`
/// resolved) and the rest, which does not exist yet, with its `..` taken lexically: two
/// spellings of one file compare equal before either exists.
pub fn resolved(path: &Path) -> Result<PathBuf> {
    let abs = absolute(path)?;
    let Some((base, canon)) = abs
        .ancestors()
        .find_map(|b| b.canonicalize().ok().map(|c| (b, c)))
    else {
        return Ok(abs);
    };
    let mut out = canon;
    for part in abs.strip_prefix(base).unwrap_or(Path::new("")).components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

/// A `data.source` with its file made absolute: `image:PATH` and paths ending in `.npy`,
/// `.csv`, `.png`, `.jpg` or `.jpeg` (the files `data::DataSource::parse` reads, as
/// [`SourceName::file`] tells them); a toy or benchmark name is returned unchanged.
pub fn absolute_source(source: &str) -> Result<String> {
    let Some(file) = SourceName::of(source).file() else {
        return Ok(source.to_string());
    };
    let path = absolute(file)?.display().to_string();
    // The `image:` prefix (a picture of any extension) is kept.
    Ok(if source.starts_with("image:") {
        format!("image:{path}")
    } else {
        path
    })
}

/// The run configuration as `config.toml` keeps it: `data.root`, a data file's
/// `data.source` and `run.out` resolved against the current directory.
pub fn absolute_run_config(cfg: &RunConfig) -> Result<RunConfig> {
    let mut c = cfg.clone();
    c.data.root = absolute(&c.data.root)?;
    c.data.source = absolute_source(&c.data.source)?;
    c.run.out = absolute(&c.run.out)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sources_become_absolute_and_names_stay() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(absolute_source("moons").unwrap(), "moons");
        assert_eq!(absolute_source("miniboone").unwrap(), "miniboone");
        let csv = absolute_source("d/x.CSV").unwrap();
        assert_eq!(Path::new(&csv), cwd.join("d/x.CSV"));
        let img = absolute_source("image:a/b.bmp").unwrap();
        assert_eq!(img, format!("image:{}", cwd.join("a/b.bmp").display()));
        assert_eq!(absolute_source("/abs/x.npy").unwrap(), "/abs/x.npy");
    }

    /// The markers of every kind asked for that are there, in the kinds' order, a marker that
    /// two kinds share (`report.json`) once; none in an empty or missing directory.
    #[test]
    fn markers_present_lists_each_marker_once() {
        let dir = std::env::temp_dir().join(format!("cpflow-markers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(markers_present(&dir, &[&TRAIN_RUN, &VAE_RUN]).is_empty());
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "best.safetensors",
            "report.json",
            "model.safetensors",
            "metrics.jsonl",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        assert_eq!(
            markers_present(&dir, &[&TRAIN_RUN, &VAE_RUN]),
            ["model.safetensors", "report.json", "best.safetensors"]
        );
        assert_eq!(
            markers_present(&dir, &[&VAE_RUN]),
            ["best.safetensors", "report.json"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_is_refused_unless_overwritten_and_overwrite_removes_it() {
        let dir = std::env::temp_dir().join(format!("cpflow-rundir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("plots")).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), "").unwrap();
        // A file is not a run directory.
        let e = check_new_run(&dir.join("metrics.jsonl"), &TRAIN_RUN, false).unwrap_err();
        assert!(e.to_string().contains("is a file"), "{e}");
        // Metrics alone (a run that failed before its first checkpoint) are not a run.
        check_new_run(&dir, &TRAIN_RUN, false).unwrap();
        std::fs::write(dir.join("report.json"), "{}").unwrap();
        let e = check_new_run(&dir, &TRAIN_RUN, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("report.json") && e.contains("--overwrite"),
            "{e}"
        );
        assert!(e.contains(&dir.display().to_string()), "{e}");
        check_new_run(&dir, &TRAIN_RUN, true).unwrap();
        let listed = r#"[{"file": "density.png"}, {"file": "../notes.txt"}]"#;
        std::fs::write(dir.join("plots/plots.json"), listed).unwrap();
        std::fs::write(dir.join("plots/density.png"), "x").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        // The user's own figure in plots/ stays, and so does plots/.
        std::fs::write(dir.join("plots/thesis.png"), "mine").unwrap();
        remove_old_run(&dir, &TRAIN_RUN).unwrap();
        assert_eq!(names(&dir), vec!["notes.txt", "plots"]);
        assert_eq!(names(&dir.join("plots")), vec!["thesis.png"]);
        // A directory without a run is left alone by --overwrite.
        std::fs::write(dir.join("config.toml"), "# mine").unwrap();
        std::fs::write(dir.join("plots/plots.json"), r#"[{"file": "thesis.png"}]"#).unwrap();
        remove_old_run(&dir, &TRAIN_RUN).unwrap();
        assert_eq!(names(&dir), vec!["config.toml", "notes.txt", "plots"]);
        assert_eq!(names(&dir.join("plots")), vec!["plots.json", "thesis.png"]);
        // With a run and only our figures, plots/ goes.
        std::fs::write(dir.join("report.json"), "{}").unwrap();
        std::fs::remove_file(dir.join("plots/thesis.png")).unwrap();
        std::fs::write(dir.join("plots/plots.json"), r#"[{"file": "a.png"}]"#).unwrap();
        std::fs::write(dir.join("plots/a.png"), "x").unwrap();
        remove_old_run(&dir, &TRAIN_RUN).unwrap();
        assert_eq!(names(&dir), vec!["notes.txt"]);
        let e = resume_checkpoint(&dir, "vae").unwrap_err().to_string();
        assert!(
            e.contains("checkpoint.safetensors") && e.contains("cpflow vae"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A new run of one kind is refused into a directory that holds only another kind's model:
    /// `import-reference --vae` (or `vae`) into a directory with a flow's `model.safetensors`
    /// alone passed the check (only the VAE's markers were looked for) and wrote the VAE's
    /// files beside the flow's; the same for `train` over a VAE's `best.safetensors`.
    #[test]
    fn a_new_run_is_refused_over_another_kinds_model() {
        let dir = std::env::temp_dir().join(format!("cpflow-rundir-kinds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (model, kind) in [
            ("model.safetensors", &VAE_RUN),
            ("best.safetensors", &TRAIN_RUN),
        ] {
            std::fs::write(dir.join(model), "").unwrap();
            let e = check_new_run(&dir, kind, false).unwrap_err().to_string();
            assert!(
                e.contains("already holds a model") && e.contains(model),
                "{}: {e}",
                kind.command
            );
            check_new_run(&dir, kind, true).unwrap();
            std::fs::remove_file(dir.join(model)).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `--overwrite` of one kind of run over another removes the other kind's files too: a
    /// `vae` over a toy run used to leave the toy's `model.safetensors` and `data_record.json`
    /// (`cpflow sample` then sampled the old toy), an image `train` over a VAE run its
    /// `best.safetensors`.
    #[test]
    fn overwrite_removes_the_files_of_every_kind_of_run() {
        let dir = std::env::temp_dir().join(format!("cpflow-rundir-kinds-{}", std::process::id()));
        for (old, new) in [(&TRAIN_RUN, &VAE_RUN), (&VAE_RUN, &TRAIN_RUN)] {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for f in old.removed {
                std::fs::write(dir.join(f), "old").unwrap();
            }
            std::fs::write(dir.join("notes.txt"), "mine").unwrap();
            remove_old_run(&dir, new).unwrap();
            let left: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                left,
                vec!["notes.txt"],
                "{} over {}",
                new.command,
                old.command
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_run_keeps_a_config_toml_that_is_not_its_own() {
        let dir = std::env::temp_dir().join(format!("cpflow-config-keep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        #[derive(serde::Serialize)]
        struct Cfg {
            width: u32,
        }
        let cfg = Cfg { width: 64 };
        let ours = format!("{CONFIG_HEADER}width = 64\n");
        // The commented file the run was started from (`--config <out>/config.toml`) was
        // replaced by the resolved configuration, comments and all.
        std::fs::write(dir.join("config.toml"), "# my notes\nwidth = 64\n").unwrap();
        write_config(&dir, &cfg, false).unwrap();
        assert_eq!(read("config.orig.toml"), "# my notes\nwidth = 64\n");
        assert_eq!(read("config.toml"), ours);
        // The written file parses as the configuration (the header is a comment).
        let back: toml::Table = toml::from_str(&read("config.toml")).unwrap();
        assert_eq!(back["width"].as_integer(), Some(64));
        // The run's own text again: nothing to keep.
        write_config(&dir, &cfg, false).unwrap();
        assert!(!dir.join("config.orig.2.toml").exists());
        // Another file of the user's does not replace the first one kept.
        std::fs::write(dir.join("config.toml"), "# second\n").unwrap();
        write_config(&dir, &cfg, false).unwrap();
        assert_eq!(read("config.orig.toml"), "# my notes\nwidth = 64\n");
        assert_eq!(read("config.orig.2.toml"), "# second\n");
        // A resume rewrites the run's own file (its allowed changes) and keeps nothing.
        std::fs::write(dir.join("config.toml"), "width = 64\n# resumed\n").unwrap();
        write_config(&dir, &cfg, true).unwrap();
        assert!(!dir.join("config.orig.3.toml").exists());
        assert_eq!(read("config.toml"), ours);
        // Another run's file as cpflow writes it (that run stopped before its first
        // checkpoint): replaced, not kept, so that failed starts do not pile up copies.
        let other = format!("{CONFIG_HEADER}width = 32\n");
        std::fs::write(dir.join("config.toml"), other).unwrap();
        write_config(&dir, &cfg, false).unwrap();
        assert!(!dir.join("config.orig.3.toml").exists());
        assert_eq!(read("config.toml"), ours);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `--resume` on a directory whose run has not written its first checkpoint yet says
    /// that the run is going on (it said that there was no checkpoint); without a holder,
    /// the missing checkpoint is named.
    #[test]
    fn resume_names_a_run_in_progress_before_its_first_checkpoint() {
        let dir = std::env::temp_dir().join(format!("cpflow-resume-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let err = resume_checkpoint(&dir, "train").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        // Another open file description holding the lock is another run (flock locks).
        let held = lock_run_dir(&dir).unwrap();
        let err = resume_checkpoint(&dir, "train").unwrap_err().to_string();
        assert!(err.contains("in use by another cpflow process"), "{err}");
        // Unlocked explicitly: dropping the file alone lags when another test of this binary
        // forks a child just then (the child shares the open file description, and so the
        // lock, until its exec closes it); `unlock` releases the description's lock at once.
        held.unlock().unwrap();
        drop(held);
        let err = resume_checkpoint(&dir, "train").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
