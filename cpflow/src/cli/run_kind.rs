//! Which kind of run a run directory holds, read from its checkpoint's metadata keys, so that
//! `--resume` (or a new run) into a directory of another kind says so instead of failing on
//! the first key the other kind's configuration does not know.

use crate::cli::run_dir::{RunFiles, TRAIN_RUN, VAE_RUN};
use crate::cli::shell_words::resume_command;
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The kinds of run a `cpflow train` / `cpflow vae` directory can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// A flow on vectors (tabular data, toys): `cpflow train`.
    Vectors,
    /// An image flow: `cpflow train` with an image configuration.
    Image,
    /// The VAE experiment: `cpflow vae`.
    Vae,
}

impl RunKind {
    /// For messages: "a VAE run (`cpflow vae`)".
    pub fn describe(self) -> &'static str {
        match self {
            RunKind::Vectors => "a flow on vectors (a tabular or toy `cpflow train` run)",
            RunKind::Image => "an image-flow run (`cpflow train` with an image config)",
            RunKind::Vae => "a VAE run (`cpflow vae`)",
        }
    }

    /// The subcommand that trains and continues a run of this kind.
    pub fn command(self) -> &'static str {
        match self {
            RunKind::Vectors | RunKind::Image => "train",
            RunKind::Vae => "vae",
        }
    }

    /// The files a run of this kind keeps in its directory.
    pub fn files(self) -> &'static RunFiles {
        match self {
            RunKind::Vectors | RunKind::Image => &TRAIN_RUN,
            RunKind::Vae => &VAE_RUN,
        }
    }

    /// The kind of the training checkpoint at `path`, from the keys of its safetensors
    /// metadata (only the header is read); `None` when it cannot be told.
    pub fn of_checkpoint(path: &Path) -> Option<RunKind> {
        let mut file = std::fs::File::open(path).ok()?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len).ok()?;
        let len = u64::from_le_bytes(len);
        if len > 100 << 20 {
            return None;
        }
        let mut header = vec![0u8; usize::try_from(len).ok()?];
        file.read_exact(&mut header).ok()?;
        let json: serde_json::Value = serde_json::from_slice(&header).ok()?;
        let meta = json.get("__metadata__")?.as_object()?;
        if meta.contains_key(crate::image::train::IMAGE_TRAIN_METADATA_KEY) {
            Some(RunKind::Image)
        } else if meta.contains_key(crate::vae::VAE_METADATA_KEY) {
            Some(RunKind::Vae)
        } else if meta.contains_key(crate::checkpoint::METADATA_KEY) {
            Some(RunKind::Vectors)
        } else {
            None
        }
    }
}

/// Refuses a run directory whose checkpoint belongs to another kind of run than `expected`
/// (`command` the subcommand at hand, given a configuration of that kind), naming both and
/// what continues it; a checkpoint whose kind cannot be told is left to the checks that read
/// it. When the same command makes both kinds (`train`: image and vector flows), what
/// differs is the configuration: `cpflow train --out R --resume` without `--config`, which
/// reads the run's own `config.toml`, continues it.
pub fn check_run_kind(
    out: &Path,
    checkpoint: &Path,
    expected: RunKind,
    command: &str,
) -> Result<()> {
    let Some(found) = RunKind::of_checkpoint(checkpoint).filter(|&f| f != expected) else {
        return Ok(());
    };
    let resume = resume_command(found.command(), out);
    if found.command() == command {
        bail!(
            "{} holds {}, not {} as the given configuration makes: `{resume}` without \
             --config continues it (with the run's own config.toml); for a new run give \
             another --out (or replace that run with --overwrite, without --resume)",
            out.display(),
            found.describe(),
            expected.describe(),
        )
    }
    bail!(
        "{} holds {}, not {}: `cpflow {command}` cannot continue it (`{resume}` does); give \
         another --out (or replace that run with --overwrite)",
        out.display(),
        found.describe(),
        expected.describe(),
    )
}

/// A new run into `out`, which holds a run (its marker files `found`): refused as a run of
/// another kind when its checkpoint's kind is not `expected` (when `None`: not a kind that
/// `files`' command makes), naming both, since continuing it is no way to make the new run;
/// a run of the same kind, or one whose kind cannot be told, is left to the caller (which
/// points to `--resume`): its kind is returned (`None`: it cannot be told).
pub fn refuse_new_run_over_other_kind(
    out: &Path,
    found: &[&str],
    files: &RunFiles,
    expected: Option<RunKind>,
) -> Result<Option<RunKind>> {
    let Some(kind) = RunKind::of_checkpoint(&crate::cli::run_dir::checkpoint_path(out)) else {
        return Ok(None);
    };
    let other = match expected {
        Some(e) => kind != e,
        None => kind.command() != files.command,
    };
    if !other {
        return Ok(Some(kind));
    }
    let not = expected.map_or(String::new(), |e| format!(", not {}", e.describe()));
    bail!(
        "{} already holds {} ({}){not}: replace it with `--overwrite`, or give another `--out`",
        out.display(),
        kind.describe(),
        found.join(", ")
    )
}

/// `--resume` of `cpflow {command}` without `--config` into `out`, before the run's own
/// `config.toml` is read as this command's configuration: refuses a run directory whose
/// checkpoint is another command's run (a `cpflow train` run given to `cpflow vae --resume`
/// failed as an unknown key of the VAE's configuration, a VAE run given to `cpflow train
/// --resume` named a command without `--out`), naming the command that continues it. A
/// directory without a checkpoint, or one whose kind cannot be told, is left to the checks
/// that follow.
pub fn check_run_command(out: &Path, command: &str) -> Result<()> {
    let checkpoint = crate::cli::run_dir::checkpoint_path(out);
    match RunKind::of_checkpoint(&checkpoint) {
        Some(found) if found.command() != command => bail!(
            "{} holds {}: `cpflow {command} --resume` cannot continue it; `{}` does (or give \
             `cpflow {command}` another --out)",
            out.display(),
            found.describe(),
            resume_command(found.command(), out)
        ),
        _ => Ok(()),
    }
}

/// The table a `cpflow ot` run writes into its `--out` (rewritten after each dimension).
pub const OT_TABLE_FILE: &str = "ot_table.md";
/// The reports (JSON) a `cpflow ot` run writes beside [`OT_TABLE_FILE`].
pub const OT_REPORTS_FILE: &str = "ot_reports.json";

/// Whether `name` is a file that `cpflow ot` writes into its `--out`: its table
/// ([`OT_TABLE_FILE`]), its reports ([`OT_REPORTS_FILE`]) or a per-dimension figure or curve
/// (`ot_d{d}_cost_vs_kl.png`, `ot_d{d}_curve.csv`: `ot_d` and a digit). A user's
/// `ot_data.csv` is not one (`--overwrite` removed it with the experiment's files).
pub(crate) fn is_ot_output(name: &str) -> bool {
    name == OT_TABLE_FILE
        || name == OT_REPORTS_FILE
        || name
            .strip_prefix("ot_d")
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// The files of a `cpflow ot` run in `dir` ([`is_ot_output`]): its table, its reports and
/// the per-dimension figures and curves (`ot_d{d}_…`), sorted; none when `dir` is not a
/// directory.
pub fn ot_output_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let ours = name.is_some_and(|n| is_ot_output(&n));
        if ours && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A `cpflow {command}` run (train, vae, import-reference) into `out`, which holds the
/// outputs of a `cpflow ot` run: refused unless `overwrite` (which removes them with the
/// old run, [`crate::cli::run_dir::remove_old_run`]), naming them; the two runs' files
/// mixed in one directory.
pub fn check_no_ot_outputs(out: &Path, command: &str, overwrite: bool) -> Result<()> {
    let ot = ot_output_files(out)?;
    if ot.is_empty() || overwrite {
        return Ok(());
    }
    bail!(
        "{} holds the results of an OT experiment (`cpflow ot`: {} files, e.g. {}), not a \
         `cpflow {command}` run: give another --out, or replace them with `--overwrite`",
        out.display(),
        ot.len(),
        ot[0].display()
    )
}

/// `cpflow ot --out out` where `out` holds a `train` or `vae` run (or a model that
/// `import-reference` wrote): refused unless `overwrite`, naming the kind of run and its
/// files (the experiment's table and figures mixed with the run's files). Returns whether
/// there is such a run, to be replaced ([`crate::cli::run_dir::take_run_dir`]).
pub fn check_ot_out(out: &Path, overwrite: bool) -> Result<bool> {
    use crate::cli::run_dir::{checkpoint_path, markers_present};
    let mut found = markers_present(out, &[&TRAIN_RUN, &VAE_RUN]);
    found.sort_unstable();
    if found.is_empty() {
        return Ok(false);
    }
    if overwrite {
        return Ok(true);
    }
    let what = RunKind::of_checkpoint(&checkpoint_path(out))
        .map_or("a `cpflow train` or `cpflow vae` run", RunKind::describe);
    bail!(
        "{} holds {what}, not the results of an OT experiment (its {} are there): `cpflow \
         ot` would mix its table and figures with that run's files; give another --out, or \
         replace that run with `--overwrite`",
        out.display(),
        found.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::run_dir::{check_new_run, check_new_run_of, checkpoint_path};

    /// A run directory whose checkpoint is a bare safetensors header with `key` in its
    /// metadata (all that [`RunKind::of_checkpoint`] reads), and a `report.json`.
    fn fake_run(dir: &Path, key: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let header = format!(r#"{{"__metadata__":{{"{key}":"x"}}}}"#);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        std::fs::write(checkpoint_path(dir), bytes).unwrap();
        std::fs::write(dir.join("report.json"), "{}").unwrap();
    }

    /// A new run over a run of another kind is refused naming both kinds (an image run over
    /// a toy was told to continue the toy with `--resume`); over one of its own kind it is
    /// pointed to `--resume` without `--config`, the kind named.
    #[test]
    fn a_new_run_names_the_kind_it_would_replace() {
        let root = std::env::temp_dir().join(format!("cpflow-runkind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let keys = [
            (RunKind::Vectors, crate::checkpoint::METADATA_KEY),
            (
                RunKind::Image,
                crate::image::train::IMAGE_TRAIN_METADATA_KEY,
            ),
            (RunKind::Vae, crate::vae::VAE_METADATA_KEY),
        ];
        for (held, key) in keys {
            let dir = root.join(key);
            fake_run(&dir, key);
            assert_eq!(RunKind::of_checkpoint(&checkpoint_path(&dir)), Some(held));
            for (new, _) in keys {
                let e = check_new_run_of(&dir, new, false).unwrap_err().to_string();
                assert!(e.contains(held.describe()), "{new:?} over {held:?}: {e}");
                if new == held {
                    let resume = resume_command(held.command(), &dir);
                    assert!(
                        e.contains("already holds a run")
                            && e.contains(&format!("`{resume}` (without --config")),
                        "{new:?} over {held:?}: {e}"
                    );
                } else {
                    assert!(
                        e.contains(&format!("not {}", new.describe()))
                            && e.contains("--overwrite")
                            && !e.contains("--resume"),
                        "{new:?} over {held:?}: {e}"
                    );
                }
                check_new_run_of(&dir, new, true).unwrap();
            }
            // Without the new run's kind (`train` makes both flows): another command's run
            // is refused as such, the same command's named and pointed to `--resume`.
            for files in [held.files(), RunKind::Vae.files()] {
                let e = check_new_run(&dir, files, false).unwrap_err().to_string();
                assert!(e.contains(held.describe()), "{}: {e}", files.command);
                let same = files.command == held.command();
                assert_eq!(e.contains("--resume"), same, "{}: {e}", files.command);
            }
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// `--resume` with a configuration of another kind: when the same command makes both
    /// kinds, the message says that `--resume` without `--config` continues the run (it said
    /// "`cpflow train` cannot continue it (`cpflow train --out R --resume` does)"); across
    /// commands, which command does.
    #[test]
    fn a_resume_of_another_kind_says_what_differs() {
        let root = std::env::temp_dir().join(format!("cpflow-runkind-r-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let toy = root.join("toy");
        fake_run(&toy, crate::checkpoint::METADATA_KEY);
        let ckpt = checkpoint_path(&toy);
        let resume = resume_command("train", &toy);
        let e = check_run_kind(&toy, &ckpt, RunKind::Image, "train")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "not an image-flow run (`cpflow train` with an image config) as the \
                        given configuration makes"
            ) && e.contains(&format!("`{resume}` without --config continues it"))
                && !e.contains("cannot continue"),
            "{e}"
        );
        let e = check_run_kind(&toy, &ckpt, RunKind::Vae, "vae")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`cpflow vae` cannot continue it") && e.contains(&resume),
            "{e}"
        );
        check_run_kind(&toy, &ckpt, RunKind::Vectors, "train").unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Only what `cpflow ot` writes is its output (`ot_d` and a digit: `ot_d{d}_…`): a
    /// user's `ot_data.csv` or `ot_draft.md` in the directory does not refuse a run there,
    /// and `--overwrite` leaves it. The old test (any name starting `ot_d`) refused a
    /// `train` into a directory holding `ot_data.csv` and removed the file on `--overwrite`.
    #[test]
    fn a_users_ot_d_file_is_not_an_ot_output() {
        for name in [
            "ot_d2_curve.csv",
            "ot_d16_cost_vs_kl.png",
            "ot_d3_cost_vs_iter.png",
            OT_TABLE_FILE,
            OT_REPORTS_FILE,
        ] {
            assert!(is_ot_output(name), "{name}");
        }
        for name in [
            "ot_data.csv",
            "ot_draft.md",
            "ot_d",
            "ot_d_2.csv",
            "ot_table.md.bak",
        ] {
            assert!(!is_ot_output(name), "{name}");
        }
        let dir = std::env::temp_dir().join(format!("cpflow-ot-users-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["ot_data.csv", "ot_draft.md"] {
            std::fs::write(dir.join(f), "user's").unwrap();
        }
        assert!(ot_output_files(&dir).unwrap().is_empty());
        check_no_ot_outputs(&dir, "train", false).unwrap();
        std::fs::write(dir.join("ot_d2_curve.csv"), "x").unwrap();
        let e = check_no_ot_outputs(&dir, "train", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("(`cpflow ot`: 1 files, e.g."), "{e}");
        crate::cli::run_dir::remove_old_run(&dir, &TRAIN_RUN).unwrap();
        assert!(!dir.join("ot_d2_curve.csv").exists());
        for f in ["ot_data.csv", "ot_draft.md"] {
            assert!(dir.join(f).exists(), "--overwrite removed {f}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
