//! The files of the model's run that a command writing a file the user names (`sample -o`,
//! `sample --log-prob`, `plot --out`'s figures) must not replace: the run's training data (its `config.toml`'s
//! `data.source`), the weights file read, and the files `train` and `vae` keep in the run
//! directory. Replacing one of them loses the run (a replaced data file makes `eval` and
//! `--resume` refuse the run; a replaced model or checkpoint loses the weights).

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

use crate::cli::run_dir::{DATA_RECORD, resolved};

/// The files `train` and `vae` keep in a run directory, and what each is, for the message.
const RUN_FILES: [(&str, &str); 7] = [
    ("model.safetensors", "the run's trained model"),
    ("checkpoint.safetensors", "the run's checkpoint"),
    ("best.safetensors", "the run's best weights"),
    ("config.toml", "the run's configuration"),
    ("report.json", "the run's report"),
    ("metrics.jsonl", "the run's training metrics"),
    (DATA_RECORD, "the run's record of its training data"),
];

/// A file of the run, and what it is.
struct Protected {
    path: PathBuf,
    what: String,
}

/// The existing files of the run of `model` (the weights file `--model` located, which the
/// command `done` to: "sampled", "plotted") in `run_dir` that an output must not be.
fn protected_files(model: &Path, done: &str, run_dir: Option<&Path>) -> Vec<Protected> {
    let mut files = vec![Protected {
        path: model.to_path_buf(),
        what: format!("the model being {done}"),
    }];
    let Some(dir) = run_dir else { return files };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    for (name, what) in RUN_FILES {
        files.push(Protected {
            path: dir.join(name),
            what: what.into(),
        });
    }
    if let Some(source) = data_file(&dir.join("config.toml")) {
        files.push(Protected {
            path: source,
            what: format!(
                "the run's training data (`data.source` of {})",
                dir.join("config.toml").display()
            ),
        });
    }
    files.retain(|f| f.path.is_file());
    files
}

/// The `[data] source` of the run configuration `config`, when it is a file's path (a toy's
/// or benchmark's name names no file; an unreadable configuration protects nothing more).
fn data_file(config: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    let source = table.get("data")?.get("source")?.as_str()?;
    Some(PathBuf::from(source))
}

/// Whether `a` and `b` are one file: the same path once resolved (symlinks, `..`), or the
/// same inode (hard links).
fn same_file(a: &Path, b: &Path) -> Result<bool> {
    if resolved(a)? == resolved(b)? {
        return Ok(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return Ok(x.dev() == y.dev() && x.ino() == y.ino());
        }
    }
    Ok(false)
}

/// Refuses the output `path` of the flag `flag` when it is a file of the run of `model`
/// (see the module; `done`: what the command does to the model, "sampled", "plotted"),
/// saying which.
pub(super) fn refuse_run_file(
    flag: &str,
    path: &Path,
    model: &Path,
    done: &str,
    run_dir: Option<&Path>,
) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    for f in protected_files(model, done, run_dir) {
        if same_file(path, &f.path)? {
            bail!(
                "{flag} {} is {}: writing there would replace it and lose the run; name \
                 another file",
                path.display(),
                f.what
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::refuse_run_file;

    /// Each file of a run is refused, however it is spelt (a symlink, a hard link), naming
    /// what it is; another file in the run directory and a file elsewhere are taken.
    #[test]
    fn outputs_that_are_run_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("cpflow-run-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        let data = dir.join("data.csv");
        std::fs::write(&data, "1,2\n").unwrap();
        std::fs::write(
            run.join("config.toml"),
            format!("[data]\nsource = {:?}\n", data.to_str().unwrap()),
        )
        .unwrap();
        let model = run.join("model.safetensors");
        std::fs::write(&model, b"w").unwrap();
        std::fs::write(run.join("metrics.jsonl"), b"{}\n").unwrap();
        let check = |p: &std::path::Path| refuse_run_file("-o", p, &model, "sampled", Some(&run));
        for (p, what) in [
            (data.clone(), "training data"),
            (model.clone(), "the model being sampled"),
            (run.join("metrics.jsonl"), "training metrics"),
            (run.join("config.toml"), "configuration"),
            (run.join("../run/./metrics.jsonl"), "training metrics"),
        ] {
            let e = check(&p).unwrap_err().to_string();
            assert!(e.contains(what) && e.contains("-o"), "{}: {e}", p.display());
        }
        #[cfg(unix)]
        {
            let link = dir.join("link.csv");
            std::os::unix::fs::symlink(&data, &link).unwrap();
            let hard = dir.join("hard.csv");
            std::fs::hard_link(&data, &hard).unwrap();
            for p in [link, hard] {
                let e = check(&p).unwrap_err().to_string();
                assert!(e.contains("training data"), "{e}");
            }
        }
        std::fs::write(run.join("samples.csv"), b"").unwrap();
        assert!(check(&run.join("samples.csv")).is_ok());
        assert!(check(&run.join("new.npy")).is_ok());
        std::fs::write(dir.join("other.csv"), b"").unwrap();
        assert!(check(&dir.join("other.csv")).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }
}
