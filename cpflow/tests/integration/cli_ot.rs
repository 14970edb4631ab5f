//! `cpflow ot`: the configuration file (unknown keys, enum tables of another variant), the
//! log, the output files, and the verdict on a map that has not converged.

use crate::cli_common::{cpflow, cpflow_fails, cpflow_log, non_empty, temp_dir};

/// Settings that keep a run to a fraction of a second.
const QUICK: &str = "n_train = 512\nn_test = 128\nn_eval_curve = 64\neval_every = 2\n\
                     [potential]\nwidth = 4\ndepth = 2\n";

/// Unknown keys, at the top level, in `[potential]` (whose ICNN configurations accept any
/// key), in a table of their own or in a train config, are errors naming key and table;
/// nothing runs.
#[test]
fn ot_config_rejects_unknown_keys_naming_key_and_table() {
    let dir = temp_dir("ot-keys");
    let out = dir.join("out");
    let train_config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/toy-8gaussians-fast.toml"
    );
    let train_text = std::fs::read_to_string(train_config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("lr_schedule"))
        .collect::<Vec<_>>()
        .join("\n");
    for (text, key, table) in [
        ("n_trian = 5\n".to_string(), "n_trian", "top level"),
        ("[potential]\nwidht = 5\n".into(), "widht", "[potential]"),
        ("[bogus]\nx = 1\n".into(), "bogus", "top level"),
        ("[train.adam]\nlrr = 0.1\n".into(), "lrr", "[train.adam]"),
        (train_text, "data", "top level"),
    ] {
        let cfg = dir.join("ot.toml");
        std::fs::write(&cfg, &text).unwrap();
        let args = ["ot", "--config", cfg.to_str().unwrap(), "--dims", "2"];
        let err = cpflow_fails(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
        assert!(err.contains(key) && err.contains(table), "{text}: {err}");
        assert!(err.contains("ot.toml"), "{err}");
        assert!(!out.exists(), "{text}: something ran");
    }
}

/// A step schedule in the file replaces the reference's cosine one (they were merged into
/// an invalid two-variant table); the final iteration is logged once (it was logged by the
/// periodic evaluation and again at the end).
#[test]
fn ot_config_schedule_replaces_the_reference_and_the_end_is_logged_once() {
    let dir = temp_dir("ot-step");
    let cfg = dir.join("ot.toml");
    let text = format!("{QUICK}[train.lr_schedule.step]\nstep_size = 600\ngamma = 0.5\n");
    std::fs::write(&cfg, text).unwrap();
    let out = dir.join("out");
    let log = cpflow_log(&[
        "ot",
        "--config",
        cfg.to_str().unwrap(),
        "--dims",
        "2",
        "--iters",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    let ot_lines: Vec<&str> = log.lines().filter(|l| l.contains(" OT dim=")).collect();
    let last = ot_lines
        .iter()
        .filter(|l| l.contains("iteration=4 "))
        .count();
    assert_eq!(last, 1, "{log}");
    assert_eq!(ot_lines.len(), 3, "iterations 0, 2, 4: {log}");
    non_empty(&out.join("ot_table.md"));
    non_empty(&out.join("ot_reports.json"));
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains(".tmp")),
        "temporary files left: {names:?}"
    );
}

/// An `--out` that is a file, and a result file that cannot be written, are errors naming
/// the path and what was being done (they were a bare `File exists (os error 17)`).
#[test]
fn ot_output_errors_name_the_path() {
    let dir = temp_dir("ot-out");
    let afile = dir.join("afile");
    std::fs::write(&afile, b"x").unwrap();
    let err = cpflow_fails(&["ot", "--dims", "2", "--out", afile.to_str().unwrap()]);
    assert!(
        err.contains("afile") && err.contains("not a directory"),
        "{err}"
    );
    let cfg = dir.join("ot.toml");
    std::fs::write(&cfg, QUICK).unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(out.join("ot_table.md")).unwrap();
    let err = cpflow_fails(&[
        "ot",
        "--config",
        cfg.to_str().unwrap(),
        "--dims",
        "2",
        "--iters",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("ot_table.md") && err.contains("writing the OT table"),
        "{err}"
    );
}

/// A second run into the same `--out` is refused (it replaced the table but left the first
/// run's `ot_d3_…` files beside it) unless `--overwrite`, which removes them; a dimension
/// listed twice is refused before anything runs.
#[test]
fn ot_reruns_need_overwrite_and_dimensions_are_distinct() {
    let dir = temp_dir("ot-rerun");
    let cfg = dir.join("ot.toml");
    std::fs::write(&cfg, QUICK).unwrap();
    let out = dir.join("out");
    let run = |dims: &str, extra: &[&str]| {
        let mut args = vec![
            "ot",
            "--config",
            cfg.to_str().unwrap(),
            "--dims",
            dims,
            "--iters",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    fn as_refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let err = cpflow_fails(&as_refs(&run("2,3,2", &[])));
    assert!(err.contains("d = 2 twice"), "{err}");
    assert!(!out.exists());
    cpflow_log(&as_refs(&run("3", &[])));
    non_empty(&out.join("ot_d3_curve.csv"));
    let table = std::fs::read(out.join("ot_table.md")).unwrap();
    let err = cpflow_fails(&as_refs(&run("2", &[])));
    assert!(err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(out.join("ot_table.md")).unwrap(), table);
    cpflow_log(&as_refs(&run("2", &["--overwrite"])));
    non_empty(&out.join("ot_d2_curve.csv"));
    assert!(!out.join("ot_d3_curve.csv").exists());
    assert!(!out.join("ot_d3_cost_vs_kl.png").exists());
}

/// Ctrl-C during a run stops it after the training step in progress with a message naming
/// the interrupted dimension (it used to end silently).
#[cfg(unix)]
#[test]
fn an_interrupted_ot_run_says_what_it_stopped() {
    use std::process::{Command, Stdio};
    let dir = temp_dir("ot-interrupt");
    let cfg = dir.join("ot.toml");
    std::fs::write(&cfg, QUICK).unwrap();
    let out = dir.join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(["ot", "--config", cfg.to_str().unwrap(), "--dims", "2"])
        .args(["--iters", "100000000", "--out", out.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The handler is installed before the first run starts (milliseconds after launch).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (ok, err) = crate::cli_common::interrupt_and_wait(child);
    assert!(!ok, "{err}");
    assert!(
        err.contains("interrupted during the run of d = 2") && err.contains("no dimension"),
        "{err}"
    );
}

/// Four steps at d = 2: the KL bounds W₂² only loosely (Talagrand), and the printed line,
/// the table and `ot_reports.json` all say the map has not converged; the bounds hold the
/// closed-form W₂².
#[test]
fn a_short_run_is_reported_as_not_converged() {
    let dir = temp_dir("ot-convergence");
    let cfg = dir.join("ot.toml");
    std::fs::write(&cfg, QUICK).unwrap();
    let out = dir.join("out");
    let args = [
        "ot",
        "--config",
        cfg.to_str().unwrap(),
        "--dims",
        "2",
        "--iters",
        "4",
        "--out",
        out.to_str().unwrap(),
    ];
    let stdout = cpflow(&args);
    assert!(
        stdout.contains("NOT CONVERGED") && stdout.contains("not yet an estimate of W2²"),
        "{stdout}"
    );
    let table = std::fs::read_to_string(out.join("ot_table.md")).unwrap();
    assert!(
        table.contains("W2^2 bounds from the KL") && table.contains("| **no** |"),
        "{table}"
    );
    let reports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ot_reports.json")).unwrap())
            .unwrap();
    let r = &reports[0];
    let b = &r["w2_squared_bounds"];
    assert_eq!(b["converged"], false, "{r}");
    let (lower, upper, w2) = (
        b["lower"].as_f64().unwrap(),
        b["upper"].as_f64().unwrap(),
        r["w2_squared"].as_f64().unwrap(),
    );
    // The bracket is a theorem for expectations; here both ends come from 128 test points,
    // and a 4-step map's bracket is wide (its lower end is 0), so it holds W₂² by far.
    assert!(lower <= w2 && w2 <= upper, "{r}");
    // The cost of this short run is far below W₂²: what the verdict is for.
    assert!(r["transport_cost"].as_f64().unwrap() < 0.8 * w2, "{r}");
}
