//! `bench-tabular` run again into the same folder: continued (`--resume`), interrupted
//! (Ctrl-C) or failing, it keeps the rows of earlier runs and ends where an uninterrupted run
//! ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cpflow::datasets::{TabularDataset, find_images_archive};
use xtask::bench_resume::{RESULT_FILE, TabularResume};
use xtask::bench_tabular::{default_fallback_roots, run_bench_tabular};
use xtask::cli::bench_outcome;
use xtask::tabular_config::TabularBenchConfig;

use crate::tabular_fixtures::{
    assert_nothing_ran_and_failure_says, bench_json, bench_markdown, tiny_bench, tiny_options,
};

/// A failure of its own in a run that starts after Ctrl-C was pressed (the first dataset
/// starts anyway) is filed as failed, not as interrupted: `--resume` would not continue it
/// (it used to be listed as paused and checkpointed because the flag was set).
#[test]
fn a_failure_after_an_interrupt_is_a_failure() {
    let (_data, _out, mut opts) = tiny_bench(vec![TabularDataset::Miniboone]);
    opts.interrupt = Some(Arc::new(AtomicBool::new(true)));
    opts.val_every = Some(0);
    let report = run_bench_tabular(&opts).unwrap();
    assert!(report.interrupted.is_empty(), "{:?}", report.interrupted);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let msg = &report.failed[0].message;
    assert!(
        msg.contains("miniboone: failed") && msg.contains("--val-every must be at least 1"),
        "{msg}"
    );
}

/// `bench-tabular.{md,json}` never drops a finished dataset: a later run into the same
/// folder of a dataset that is not on disk, a resume refused for its settings, or an
/// interrupted run rewrites the report with the earlier results still listed (marked as
/// such, from their `<dataset>/result.json`); they were replaced by an empty table. An
/// interrupt pauses the dataset in training (not a failure), and a dataset after it that is
/// not on disk is reported as not found.
#[test]
fn the_report_keeps_the_rows_of_earlier_runs() {
    let (data, out, mut opts) = tiny_bench(vec![TabularDataset::Miniboone]);
    let first = run_bench_tabular(&opts).unwrap().results.remove(0);
    let row = "| miniboone (earlier run) | 43 |";
    let md = || bench_markdown(out.path());
    let json = || -> serde_json::Value { bench_json(out.path()) };

    // A dataset that is not on disk: nothing ran, the earlier row stays.
    opts.datasets = vec![TabularDataset::Power];
    let missing = run_bench_tabular(&opts).unwrap();
    assert!(missing.results.is_empty());
    assert_eq!(missing.earlier, std::slice::from_ref(&first));
    let text = md();
    assert!(
        text.contains(row) && text.contains("cargo xtask download power"),
        "{text}"
    );
    assert!(text.contains("miniboone** (earlier run)"), "{text}");
    assert_eq!(json()["earlier"][0]["dataset"], "miniboone");
    let e = format!("{:#}", bench_outcome(&missing, data.path()).unwrap_err());
    assert!(e.contains("no dataset ran"), "{e}");

    // A resume with another model is refused (a failure); the row stays.
    opts.datasets = vec![TabularDataset::Miniboone];
    opts.resume = TabularResume::Extend;
    opts.model.blocks = Some(2);
    let refused = run_bench_tabular(&opts).unwrap();
    assert_nothing_ran_and_failure_says(&refused, &["blocks (--blocks): 1 → 2"]);
    assert_eq!(refused.earlier, std::slice::from_ref(&first));
    assert!(md().contains(row), "{}", md());
    let e = format!("{:#}", bench_outcome(&refused, data.path()).unwrap_err());
    assert!(
        e.contains("miniboone failed") && e.contains("lists the finished ones (miniboone)"),
        "{e}"
    );

    // Interrupted: the dataset in training pauses, checkpointed, and is listed as such; POWER
    // (not on disk) is not found, not "not started"; another dataset's earlier result (here
    // MINIBOONE's, filed as GAS's) stays in the report. MINIBOONE itself started over, so
    // its old result no longer describes its run and is gone.
    let mut gas: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("miniboone").join(RESULT_FILE)).unwrap(),
    )
    .unwrap();
    gas["dataset"] = "gas".into();
    std::fs::create_dir_all(out.path().join("gas")).unwrap();
    std::fs::write(
        out.path().join("gas").join(RESULT_FILE),
        serde_json::to_string(&gas).unwrap(),
    )
    .unwrap();
    opts.model.blocks = None;
    opts.resume = TabularResume::Start;
    // BSDS300 (on disk in the shared data) is found but not started.
    opts.datasets = vec![
        TabularDataset::Miniboone,
        TabularDataset::Power,
        TabularDataset::Bsds300,
    ];
    opts.fallback_roots = default_fallback_roots();
    let bsds300_on_disk = opts
        .fallback_roots
        .iter()
        .any(|r| find_images_archive(r).is_some());
    opts.interrupt = Some(Arc::new(AtomicBool::new(true)));
    let paused = run_bench_tabular(&opts).unwrap();
    if bsds300_on_disk {
        assert_eq!(
            paused.skipped[1].message,
            "bsds300: not started (the run was interrupted before it)"
        );
    }
    assert!(
        paused.results.is_empty() && paused.failed.is_empty(),
        "{paused:?}"
    );
    assert_eq!(paused.interrupted.len(), 1);
    assert_eq!(paused.interrupted[0].dataset, "miniboone");
    assert!(
        paused.skipped[0]
            .message
            .contains("cargo xtask download power"),
        "{:?}",
        paused.skipped
    );
    assert_eq!(paused.earlier.len(), 1);
    assert_eq!(paused.earlier[0].dataset, "gas");
    let text = md();
    assert!(
        text.contains("| gas (earlier run) |")
            && text.contains("## Interrupted")
            && !text.contains("## Failed"),
        "{text}"
    );
    let e = format!("{:#}", bench_outcome(&paused, data.path()).unwrap_err());
    assert!(
        e.contains("miniboone interrupted")
            && e.contains("--resume (in place of --overwrite")
            && e.contains("lists the finished ones (gas)")
            && !e.contains("failed"),
        "{e}"
    );
}

/// The tiny preset stopped at 8 of its 12 iterations.
fn tiny_8_iterations(ds: TabularDataset) -> TabularBenchConfig {
    TabularBenchConfig {
        max_iterations: 8,
        ..TabularBenchConfig::tiny(ds)
    }
}

/// A run stopped at iteration 8 and resumed to 12 (`--resume`) ends where the uninterrupted
/// 12-iteration run ends: same best iteration, validation and test NLL to the bit. A resume
/// that changes the model or the data is refused, naming what changed.
#[test]
fn a_resumed_run_ends_where_the_uninterrupted_one_does() {
    let (data, _whole_out, opts) = tiny_bench(vec![TabularDataset::Miniboone]);
    let whole = run_bench_tabular(&opts).unwrap().results.remove(0);
    assert_eq!((whole.fit.iterations, whole.fit.resumed_at), (12, None));

    let out = tempfile::tempdir().unwrap();
    let mut opts = tiny_options(data.path(), out.path(), vec![TabularDataset::Miniboone]);
    opts.preset = tiny_8_iterations;
    let first = run_bench_tabular(&opts).unwrap().results.remove(0);
    assert_eq!(first.fit.iterations, 8);
    let run_dir = out.path().join("miniboone");
    for f in [
        "checkpoint.safetensors",
        "bench-config.json",
        "metrics.jsonl",
    ] {
        assert!(run_dir.join(f).is_file(), "{f} missing");
    }

    opts.preset = TabularBenchConfig::tiny;
    opts.resume = TabularResume::Extend;
    let resumed = run_bench_tabular(&opts).unwrap().results.remove(0);
    assert_eq!(
        (resumed.fit.iterations, resumed.fit.resumed_at),
        (12, Some(8))
    );
    assert_eq!(resumed.fit.best_iteration, whole.fit.best_iteration);
    assert_eq!(
        resumed.fit.best_val_nll.map(f64::to_bits),
        whole.fit.best_val_nll.map(f64::to_bits)
    );
    assert_eq!(resumed.test_nll.to_bits(), whole.test_nll.to_bits());
    // The training time is the whole run's: the first sitting's and the second's.
    assert!(resumed.fit.train_time_s > first.fit.train_time_s);
    let md = bench_markdown(out.path());
    assert!(md.contains("(resumed at 8)"), "{md}");

    opts.model.width = Some(9);
    let report = run_bench_tabular(&opts).unwrap();
    let msg = &report.failed[0].message;
    assert!(msg.contains("width (--width): 8 → 9"), "{msg}");

    // An interrupt (Ctrl-C) pauses the run after its first step, checkpointed (not a
    // failure), and the datasets after it do not start (one not on disk is not found); the
    // resumed run again ends where the whole one does.
    let out = tempfile::tempdir().unwrap();
    let flag = Arc::new(AtomicBool::new(true));
    let mut opts = tiny_options(
        data.path(),
        out.path(),
        vec![TabularDataset::Miniboone, TabularDataset::Power],
    );
    opts.interrupt = Some(flag.clone());
    let paused = run_bench_tabular(&opts).unwrap();
    assert!(paused.results.is_empty());
    assert!(paused.failed.is_empty(), "{:?}", paused.failed);
    let msg = &paused.interrupted[0].message;
    assert!(
        msg.contains("interrupted at iteration 1") && msg.contains("--resume"),
        "{msg}"
    );
    let power = &paused.skipped[0].message;
    assert!(
        power.contains("cargo xtask download power") && !power.contains("not started"),
        "{power}"
    );
    flag.store(false, Ordering::Relaxed);
    opts.resume = TabularResume::Extend;
    opts.datasets = vec![TabularDataset::Miniboone];
    let resumed = run_bench_tabular(&opts).unwrap().results.remove(0);
    assert_eq!(
        (resumed.fit.iterations, resumed.fit.resumed_at),
        (12, Some(1))
    );
    assert_eq!(resumed.test_nll.to_bits(), whole.test_nll.to_bits());
}
