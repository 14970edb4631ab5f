//! `cpflow train --config RUN/config.toml` without `--out`: the run directory then comes from
//! the file (`run.out`, absolute, written when the run was made) or, for an image run, from
//! the default `runs/<dataset>`, not from where the file is. On a run that was moved or
//! copied, that is another directory: a `--resume` failed (moved) or silently continued the
//! ORIGINAL run (copied), and a new run, `--overwrite` included, went there too. Refused,
//! naming both directories.

use anyhow::{Result, bail};
use std::path::Path;

use super::{TRAIN_RUN, markers_present, resolved};
use crate::checkpoint::dir_of;
use crate::cli::shell_words::shell_word;

/// A `cpflow train` given `--config config` and no `--out` (`out_given` false), whose run
/// directory is `out` (`out_from` says where that comes from, for the message): refused when
/// `config` is a run's own `config.toml` (its directory holds a run: a checkpoint, a model or
/// a report) and `out` is another directory. With `--out` nothing is checked: the user said
/// where the run is. Without `--config` (the defaults and the flags), a new run into the
/// directory of a run stopped before its first checkpoint replaces that run's configuration:
/// a warning says so, with the command that starts that run again instead
/// ([`super::stopped_run_replaced`]).
pub fn check_config_dir_is_out(
    config: Option<&Path>,
    out_given: bool,
    out: &Path,
    out_from: &str,
    resume: bool,
) -> Result<()> {
    let Some(config) = config else {
        // A new run configured by the defaults and flags alone replaces the configuration of
        // a run stopped before its first checkpoint there: said, with how to restart that one
        // instead (it was silent, and the run's own settings looked lost).
        if !resume && let Some(msg) = super::stopped_run_replaced(out) {
            tracing::warn!("{msg}");
        }
        return Ok(());
    };
    if out_given || config.file_name() != Some(std::ffi::OsStr::new("config.toml")) {
        return Ok(());
    }
    let dir = dir_of(config);
    if markers_present(dir, &[&TRAIN_RUN]).is_empty() || resolved(dir)? == resolved(out)? {
        return Ok(());
    }
    let (config_s, dir_s, out_s) = (config.display(), shell_word(dir), shell_word(out));
    if resume {
        bail!(
            "{config_s} is the configuration of the run in {}, but without --out it would \
             continue the run in {} ({out_from}), not that one (the run was moved or \
             copied?): pass `--out {dir_s}` to continue the run in {}, or `--out {out_s}` to \
             continue the one in {}",
            dir.display(),
            out.display(),
            dir.display(),
            out.display()
        );
    }
    bail!(
        "{config_s} is the configuration of the run in {}, but without --out the new run \
         would go to {} ({out_from}): say where it goes with `--out {dir_s}` (with \
         --overwrite to replace the run there, or --resume to continue it) or `--out {out_s}`",
        dir.display(),
        out.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's own config.toml whose `run.out` names another directory is refused, naming
    /// both; the same directory (however spelt), an explicit --out, a config that is not in
    /// a run directory, or another file name pass.
    #[test]
    fn a_run_config_pointing_elsewhere_is_refused_without_out() {
        let root = std::env::temp_dir().join(format!("cpflow-config-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (run, other) = (root.join("copy of run"), root.join("original"));
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let cfg = run.join("config.toml");
        std::fs::write(&cfg, "").unwrap();
        let check = |out: &Path, given: bool, resume: bool| {
            check_config_dir_is_out(Some(&cfg), given, out, "its run.out", resume)
        };
        // Not a run directory yet: a config file of the user's there is just a file.
        check(&other, false, true).unwrap();
        std::fs::write(run.join("checkpoint.safetensors"), "").unwrap();
        let e = check(&other, false, true).unwrap_err().to_string();
        assert!(
            e.contains("would continue the run in")
                && e.contains(&format!("--out '{}'", run.display()))
                && e.contains(&format!("--out {}", other.display())),
            "{e}"
        );
        let e = check(&other, false, false).unwrap_err().to_string();
        assert!(e.contains("the new run would go to"), "{e}");
        // A moved run: its run.out is gone.
        check(&root.join("gone"), false, true).unwrap_err();
        check(&other, true, true).unwrap();
        check(&run, false, true).unwrap();
        check(&run.join("../copy of run/."), false, true).unwrap();
        let mine = run.join("mine.toml");
        check_config_dir_is_out(Some(&mine), false, &other, "", true).unwrap();
        check_config_dir_is_out(None, false, &other, "", true).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }
}
