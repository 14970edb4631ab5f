//! A run directory whose run was stopped (a `kill -9`, a crash) before it wrote its first
//! checkpoint: its `config.toml` (written by cpflow once every check passed), perhaps its
//! `metrics.jsonl` and, from an older cpflow that wrote a VAE's best weights before its
//! checkpoint, its `best.safetensors`, but no `checkpoint.safetensors`. Nothing in it can be
//! resumed; the run starts again from its own configuration. `--resume`, and a new run
//! refused over the leftover best weights, say so with the command that restarts it (they
//! pointed at each other: `--resume` said to start one without it, which said to use
//! `--overwrite`); a `cpflow train` without `--config`, which trains the defaults and flags
//! there (as `--resume` advised), warns that it replaces the stopped run, with that command.

use std::path::Path;

use super::{CONFIG_HEADER, checkpoint_path};
use crate::cli::shell_words::shell_word;

/// What a run stopped before its first checkpoint left in `out`: its files (`config.toml`
/// first) and the command that made it (`train`, `vae`); `None` when `out` holds no such
/// run: a checkpoint, a final model or a report is there, `config.toml` is missing or not
/// cpflow's own, or the only other file is a model without a training log (what `cpflow
/// import-reference` writes).
pub fn stopped_before_first_checkpoint(out: &Path) -> Option<(Vec<&'static str>, &'static str)> {
    let config = out.join("config.toml");
    let text = std::fs::read_to_string(&config).ok()?;
    if !text.starts_with(CONFIG_HEADER) || checkpoint_path(out).exists() {
        return None;
    }
    if ["model.safetensors", "report.json"]
        .iter()
        .any(|f| out.join(f).exists())
    {
        return None;
    }
    let files: Vec<&'static str> = ["config.toml", "metrics.jsonl", "best.safetensors"]
        .into_iter()
        .filter(|f| out.join(f).exists())
        .collect();
    // Best weights without a log: an imported model, not a stopped run.
    if files.contains(&"best.safetensors") && !files.contains(&"metrics.jsonl") {
        return None;
    }
    // A VAE's configuration names its posterior; a flow's (vectors or images) does not.
    let table: toml::Table = toml::from_str(&text).ok()?;
    let is_vae = crate::cli::run_config::table_has_key(&table, "model", "posterior");
    Some((files, if is_vae { "vae" } else { "train" }))
}

/// The command that starts the run in `out` again from its own configuration
/// (`--overwrite` removes what it left).
pub fn restart_command(command: &str, out: &Path) -> String {
    format!(
        "cpflow {command} --config {} --out {} --overwrite",
        shell_word(&out.join("config.toml")),
        shell_word(out)
    )
}

/// What the stopped run in `out` (`files`, made by `command`) is and how to start it again.
fn stopped_run(out: &Path, files: &[&str], command: &str) -> String {
    format!(
        "the run in {} was stopped before it wrote its first checkpoint ({} is there, no \
         checkpoint.safetensors): nothing was saved that --resume could continue. Start it \
         again from its own configuration with `{}`",
        out.display(),
        files.join(", "),
        restart_command(command, out)
    )
}

/// `--resume` of `command` on `out` without a checkpoint: when the run there was stopped
/// before its first checkpoint, the message that says so and how to restart it.
pub fn resume_of_stopped_run(out: &Path) -> Option<String> {
    let (files, made_by) = stopped_before_first_checkpoint(out)?;
    Some(format!("--resume: {}", stopped_run(out, &files, made_by)))
}

/// A new run into `out` refused over the leftover best weights of the run stopped there
/// (an older `vae`'s): the message that says what is there and how to restart it, or to
/// replace it with `--overwrite`.
pub fn new_run_over_stopped_run(out: &Path) -> Option<String> {
    let (files, made_by) = stopped_before_first_checkpoint(out)?;
    Some(format!(
        "{}; or replace it with this run with `--overwrite`, or give another --out",
        stopped_run(out, &files, made_by)
    ))
}

/// A new run without `--config` (the defaults and the flags) into `out`, where a run was
/// stopped before its first checkpoint: the warning that it replaces that run's configuration,
/// with the command that would start that run again instead.
pub fn stopped_run_replaced(out: &Path) -> Option<String> {
    let (files, made_by) = stopped_before_first_checkpoint(out)?;
    Some(format!(
        "{} holds a run stopped before its first checkpoint ({}); this new run, configured \
         without --config (the defaults and the flags given), replaces it. To start that run \
         again instead, stop this one and run `{}`",
        out.display(),
        files.join(", "),
        restart_command(made_by, out)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The states a kill before the first checkpoint leaves are told from a finished run, an
    /// imported model and a user's own config.toml; the command is the run's.
    #[test]
    fn a_run_stopped_before_its_first_checkpoint_is_recognised() {
        let d = std::env::temp_dir().join(format!("cpflow-stopped-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        assert!(stopped_before_first_checkpoint(&d).is_none());
        let vae = format!(
            "{CONFIG_HEADER}[data]\ndataset = \"frey-faces\"\n[model]\nposterior = \"gaussian\"\n"
        );
        std::fs::write(d.join("config.toml"), &vae).unwrap();
        assert_eq!(
            stopped_before_first_checkpoint(&d),
            Some((vec!["config.toml"], "vae"))
        );
        std::fs::write(d.join("best.safetensors"), "").unwrap();
        // config.toml and best weights alone: `import-reference --vae`'s model directory.
        assert!(stopped_before_first_checkpoint(&d).is_none());
        std::fs::write(d.join("metrics.jsonl"), "").unwrap();
        let (files, cmd) = stopped_before_first_checkpoint(&d).unwrap();
        assert_eq!(
            (files, cmd),
            (
                vec!["config.toml", "metrics.jsonl", "best.safetensors"],
                "vae"
            )
        );
        let msg = resume_of_stopped_run(&d).unwrap();
        assert!(
            msg.contains(&format!(
                "`cpflow vae --config {}/config.toml --out {} --overwrite`",
                d.display(),
                d.display()
            )),
            "{msg}"
        );
        std::fs::write(d.join("checkpoint.safetensors"), "").unwrap();
        assert!(stopped_before_first_checkpoint(&d).is_none());
        for f in ["checkpoint.safetensors", "best.safetensors"] {
            std::fs::remove_file(d.join(f)).unwrap();
        }
        let flow = format!("{CONFIG_HEADER}[data]\nsource = \"moons\"\n[run]\nout = \"x\"\n");
        std::fs::write(d.join("config.toml"), flow).unwrap();
        assert_eq!(stopped_before_first_checkpoint(&d).unwrap().1, "train");
        std::fs::write(d.join("report.json"), "{}").unwrap();
        assert!(stopped_before_first_checkpoint(&d).is_none());
        std::fs::remove_file(d.join("report.json")).unwrap();
        // A config.toml of the user's (no header) is not a run's.
        std::fs::write(d.join("config.toml"), "[data]\nsource = \"moons\"\n").unwrap();
        assert!(stopped_before_first_checkpoint(&d).is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
