//! The CLI's interrupt notice and its formatting of extreme scores.

use crate::cli_common::{temp_dir, tiny_trained_run as tiny_run};

/// Ctrl-C during `eval` logs what it does next before the error, every time: eval sees the
/// interrupt at its next chunk (one point per chunk here, microseconds) and exited before the
/// watcher thread, which polls every 100 ms, logged the notice. Repeated, so that a notice
/// that depends on timing fails here (before the fix it was missing in most runs).
#[cfg(unix)]
#[test]
fn an_interrupted_eval_always_logs_the_notice() {
    let dir = temp_dir("small-fixes-notice");
    let (run, _) = tiny_run(&dir, 1.0, &[]);
    for attempt in 0..3 {
        let (ok, stdout, log) = crate::cli_common::interrupt_after_log(
            &[
                "eval",
                "--model",
                run.to_str().unwrap(),
                "--data",
                "8gaussians",
                "-n",
                "1000000",
                "--batch-size",
                "1",
            ],
            "scoring 1000000 points",
            std::time::Duration::from_millis(200),
        );
        assert!(!ok && stdout.is_empty(), "attempt {attempt}: {log}");
        let notice = log
            .find("interrupted: stopping after the chunk of points in progress")
            .unwrap_or_else(|| panic!("attempt {attempt}: no interrupt notice in\n{log}"));
        let error = log
            .find("of 1000000 points: no score")
            .unwrap_or_else(|| panic!("attempt {attempt}: no error in\n{log}"));
        assert!(
            notice < error,
            "attempt {attempt}: notice after the error\n{log}"
        );
        assert_eq!(
            log.matches("interrupted: stopping after").count(),
            1,
            "attempt {attempt}: the notice is logged once\n{log}"
        );
    }
}

/// An f64 run on data spread 1e39 (ActNorm cannot scale them down: it warns) has NLLs near
/// 1e71: the summary prints them in scientific notation (they were 72-digit decimals), and
/// report.json keeps the full-precision numbers.
#[test]
fn a_huge_nll_is_printed_in_scientific_notation() {
    let dir = temp_dir("small-fixes-huge-nll");
    let (run, stdout) = tiny_run(
        &dir,
        1e39,
        &["--dtype", "f64", "--set", "data.test_fraction=0.2"],
    );
    let nll = stdout
        .split("test exact NLL ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("no test NLL in {stdout}"));
    assert!(
        nll.contains('e') && nll.len() < 12,
        "test NLL printed as `{nll}`: {stdout}"
    );
    let printed: f64 = nll.parse().unwrap();
    assert!(printed > 1e60, "{stdout}");
    assert!(
        !stdout.contains("00000000"),
        "a long run of digits: {stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let full = report["test_nll"].as_f64().expect("report.json's test_nll");
    // `{:.4e}` keeps 5 significant digits: the printed value is within 5e-5 of the report's.
    assert!((printed - full).abs() <= 5e-5 * full, "{printed} vs {full}");
}
