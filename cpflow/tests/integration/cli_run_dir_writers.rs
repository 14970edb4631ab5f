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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cli_common::{cpflow, cpflow_fails, non_empty, temp_dir};

/// Every file under `dir` (relative path → bytes).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

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
    use std::process::{Command, Stdio};
    let dir = temp_dir("writers-resume");
    let run = dir.join("my runs/d'été");
    let child = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(["train", "--data", "8gaussians", "--iters", "1000000"])
        .args(["--batch-size", "16", "--set", "model.width=4"])
        .args(["--set", "model.depth=2", "--set", "data.n_train=256"])
        .args(["--set", "data.n_val=32", "--set", "data.n_test=32"])
        .args(["--set", "run.plots=false", "--set", "train.log_every=1"])
        .args(["--no-progress", "--out"])
        .arg(&run)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = run.join("metrics.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |s| s.lines().count()) < 3 {
        assert!(t0.elapsed().as_secs() < 120, "no training steps logged");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (ok, err) = crate::cli_common::interrupt_and_wait(child);
    assert!(!ok, "{err}");
    let command = err
        .split("continue it with `")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap_or_else(|| panic!("no command in {err}"));
    assert!(
        command.starts_with("cpflow train --out ") && command.ends_with(" --resume"),
        "{command}"
    );
    let done: usize = err
        .split("interrupted after iteration ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no iteration in {err}"));

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
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["iterations"], done + 2);
    assert_eq!(report["resumed_at"], done);
}
