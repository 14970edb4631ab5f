//! Every command that writes into a run directory respects the run going on there, and the
//! commands that messages suggest for continuing a run continue that run:
//! - `ot --out DIR` and `import-reference --out DIR [--overwrite]` refuse a directory whose
//!   lock (`DIR/.cpflow.lock`) a running `train` or `vae` holds, and write nothing (an `ot`
//!   wrote its table and figures beside a live run; `import-reference --overwrite` replaced
//!   its `config.toml` and weights);
//! - the interrupt message of `train` names `--out DIR` (shell-quoted), and that command,
//!   pasted into a shell, continues the run; `train --config RUN/config.toml` without `--out`
//!   on a moved or copied run (whose `run.out` names the original directory) is refused,
//!   naming both directories (it failed on a moved run and silently continued the ORIGINAL
//!   of a copied one).

use std::path::{Path, PathBuf};

use crate::cli_common::{
    cpflow, cpflow_fails, interrupt_tiny_toy_training, interrupted_iteration, non_empty, read_json,
    snapshot, temp_dir,
};

/// The lock a running `train` holds on `dir` (created as the run creates it), held by this
/// test until the file is dropped or unlocked.
fn hold_lock(dir: &Path) -> std::fs::File {
    std::fs::create_dir_all(dir).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".cpflow.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    lock
}

/// The committed reference fixture (`reference_parity`) and the `[model]` that describes it
/// (as in `cli_import_reference`).
fn fixture_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference/tabular_icnn2.safetensors")
}

const IMPORT_CONFIG: &str = "[data]\nsource = \"power\"\n[model]\narch = \"icnn2\"\n\
    layout = \"tabular\"\nblocks = 2\nwidth = 16\ndepth = 3\nactivation = \"softplus\"\n\
    zero_shift = false\nsymm_act_first = false\nfloat = \"f64\"\n";

/// `ot` and `import-reference`, with and without `--overwrite`, refuse a directory whose
/// lock another process holds, before and after that run's first checkpoint, and change
/// nothing there; once the lock is released the same commands go ahead (so the refusals
/// come from the lock, not from the arguments).
#[test]
fn ot_and_import_reference_refuse_a_directory_in_use() {
    let dir = temp_dir("writers-locked");
    let cfg = dir.join("model.toml");
    std::fs::write(&cfg, IMPORT_CONFIG).unwrap();
    let (w, cfg) = (fixture_file(), cfg.to_str().unwrap().to_string());
    // A run before its first checkpoint (what `train` has written in its first seconds), and
    // one with its model and report.
    let early = dir.join("early run");
    let finished = dir.join("finished");
    for (run, files) in [
        (&early, &["config.toml", "metrics.jsonl"][..]),
        (
            &finished,
            &[
                "config.toml",
                "checkpoint.safetensors",
                "model.safetensors",
                "report.json",
            ][..],
        ),
    ] {
        let lock = hold_lock(run);
        for f in files {
            std::fs::write(run.join(f), format!("the live run's {f}")).unwrap();
        }
        let before = snapshot(run);
        let out = run.to_str().unwrap();
        let ot = ["ot", "--out", out, "--dims", "2", "--iters", "2"];
        let import = [
            "import-reference",
            "--state-dict",
            w.to_str().unwrap(),
            "--prefix",
            "model.",
            "--config",
            &cfg,
            "--out",
            out,
        ];
        for args in [&ot[..], &import[..]] {
            for extra in [&[][..], &["--overwrite"][..]] {
                let args = [args, extra].concat();
                let err = cpflow_fails(&args);
                assert!(
                    err.contains("in use by another cpflow process") && err.contains(out),
                    "{args:?}: {err}"
                );
                assert!(snapshot(run) == before, "{args:?} changed {out}");
            }
        }
        lock.unlock().unwrap();
        drop(lock);
        if run == &early {
            // No run's files there (no checkpoint, model or report): the experiment goes
            // ahead beside them.
            cpflow(&ot);
            non_empty(&run.join("ot_table.md"));
        } else {
            cpflow(&[&import[..], &["--overwrite"]].concat());
            non_empty(&run.join("model.safetensors"));
            assert!(!run.join("checkpoint.safetensors").exists());
        }
    }
}

/// A training run stopped by Ctrl-C in a directory whose name needs quoting (a space, a
/// quote, a non-ASCII letter): the message's command names `--out`, and, pasted into `sh`,
/// continues the run. A copy of the stopped run, and the run once moved, are refused by
/// `train --config COPY/config.toml --resume` (its `run.out` names the original), the
/// message naming both directories and `--out`; `--out` continues them.
#[cfg(unix)]
#[test]
fn an_interrupted_run_names_its_out_and_a_copied_or_moved_config_is_refused() {
    use std::process::Command;
    let dir = temp_dir("writers-resume");
    let run = dir.join("my runs/d'été");
    let err = interrupt_tiny_toy_training(&run);
    let command = err
        .split("continue it with `")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap_or_else(|| panic!("no command in {err}"));
    assert!(
        command.starts_with("cpflow train --out ") && command.ends_with(" --resume"),
        "{command}"
    );
    let done = interrupted_iteration(&err);

    // A copy of the stopped run: its config.toml's run.out is the original directory.
    let copy = dir.join("copy");
    let cp = Command::new("cp").arg("-R").arg(&run).arg(&copy).status();
    assert!(cp.unwrap().success());
    let original = snapshot(&run);
    let copied = copy.join("config.toml");
    let more = (done + 2).to_string();
    let resume = |config: &Path| {
        let config = config.to_str().unwrap().to_string();
        let args = ["train", "--config", &config, "--resume", "--iters", &more];
        cpflow_fails(&[&args[..], &["--no-progress"]].concat())
    };
    let e = resume(&copied);
    let run_s = run.display().to_string();
    assert!(
        e.contains(&format!("--out {}", copy.display())) && e.contains(&run_s),
        "{e}"
    );
    assert!(snapshot(&run) == original, "the original run changed");
    assert!(!copy.join("report.json").exists());

    // The run moved: the command of the message, with the new directory, pasted into sh.
    let moved = dir.join("moved é");
    std::fs::rename(&run, &moved).unwrap();
    let e = resume(&moved.join("config.toml"));
    assert!(e.contains(&format!("--out '{}'", moved.display())), "{e}");
    let quoted = command
        .strip_prefix("cpflow train --out ")
        .and_then(|c| c.strip_suffix(" --resume"))
        .unwrap();
    std::fs::rename(&moved, &run).unwrap();
    let script = format!(
        "cpflow() {{ \"$CPFLOW\" \"$@\"; }}; {command} --iters {more} --no-progress && \
         test {quoted} = \"$RUN\""
    );
    let sh = Command::new("sh")
        .args(["-c", &script])
        .env("CPFLOW", env!("CARGO_BIN_EXE_cpflow"))
        .env("RUN", &run)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        sh.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&sh.stderr)
    );
    let report = read_json(&run.join("report.json"));
    assert_eq!(report["iterations"], done + 2);
    assert_eq!(report["resumed_at"], done);
}
