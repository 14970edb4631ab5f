//! Continuing an interrupted `reproduce` (`--resume`) and finishing tabular runs within their
//! budgets ([`TabularResume::Finish`]), with the `tiny` presets on the synthetic MINIBOONE
//! file and the Frey Faces shipped in ../shared/data.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use candle_core::Device;
use cpflow::datasets::TabularDataset;
use cpflow::image::ImageDataset;
use cpflow::vae::VaeDatasetName;
use xtask::bench_resume::{RESULT_FILE, TabularResume};
use xtask::bench_tabular::run_bench_tabular;
use xtask::reproduce::{REPORT_MD, ReproduceOptions, run_reproduce};
use xtask::reproduce_resume::{ROW_FILE, RUN_FILE};

use crate::tabular_fixtures::{tiny_options, tiny_reproduction, write_synthetic_miniboone};

/// A reproduction killed part-way (the saved results of its OT run, its tabular dataset and
/// its CP-Flow-posterior VAE run missing, as if the kill came during them) is refused as a new
/// one and, with `resume`, kept where it was finished and finished where it was not: the toy,
/// the MNIST flow and the Gaussian-posterior VAE are taken as saved (the very seconds of the
/// first sitting),
/// the OT run trains again, and the finished tabular and VAE runs, resumed from their final
/// checkpoints, take no further step and score the same weights to the same numbers.
#[test]
fn a_resumed_reproduction_keeps_finished_runs_and_finishes_the_others() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut opts = tiny_reproduction(data.path(), out.path());
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    opts.images.datasets = vec![ImageDataset::Mnist];
    opts.images.data_roots = vec![shared.clone()];
    opts.vae.data_dir = shared;
    opts.vae.datasets = vec![VaeDatasetName::FreyFaces];
    let first = run_reproduce(&opts).unwrap();
    assert!(out.path().join(RUN_FILE).is_file());

    // A new reproduction does not overwrite it.
    let refused = format!("{:#}", run_reproduce(&opts).unwrap_err());
    assert!(
        refused.contains("holds a reproduction") && refused.contains("--resume"),
        "{refused}"
    );

    let killed = [
        out.path().join("ot").join("ot_d2.json"),
        out.path().join("tabular/miniboone").join(RESULT_FILE),
        out.path().join("vae/frey-faces/cp-flow").join(ROW_FILE),
    ];
    for f in &killed {
        std::fs::remove_file(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    std::fs::remove_file(out.path().join(REPORT_MD)).unwrap();
    opts.resume = true;
    let second = run_reproduce(&opts).unwrap();
    for f in &killed {
        assert!(f.is_file(), "{} not written again", f.display());
    }
    // The report says that its wall time is the last sitting's.
    let md = std::fs::read_to_string(out.path().join(REPORT_MD)).unwrap();
    assert!(second.resumed && !first.resumed);
    assert!(md.contains("of the last sitting: `--resume` kept"), "{md}");

    // Kept: a run measured again would not take the same seconds to the bit.
    assert_eq!(second.toys, first.toys);
    assert_eq!(second.images.len(), 1);
    // (As JSON: the report's one-image standard errors are NaN, which equals nothing.)
    let json = |r: &cpflow::image::ImageTrainReport| serde_json::to_string(r).unwrap();
    assert_eq!(
        json(&second.images[0].report),
        json(&first.images[0].report)
    );
    assert_eq!(
        second.images[0].report.wall_time_s.to_bits(),
        first.images[0].report.wall_time_s.to_bits()
    );
    let (g1, g2) = (&first.vae[0], &second.vae[0]);
    assert_eq!(g2.posterior, "gaussian");
    assert_eq!(
        g2.seconds_per_epoch.to_bits(),
        g1.seconds_per_epoch.to_bits()
    );
    // Run again: the OT experiment, trained from its seed.
    assert_eq!(second.ot.len(), 1);
    assert_ne!(
        second.ot[0].wall_time_s.to_bits(),
        first.ot[0].wall_time_s.to_bits()
    );
    assert!(second.ot[0].transport_cost.is_finite());
    // Finished from the checkpoint: no step more, the same weights, the same test NLL.
    let (t1, t2) = (&first.tabular.results[0], &second.tabular.results[0]);
    assert_eq!(
        (t2.fit.iterations, t2.fit.resumed_at),
        (t1.fit.iterations, Some(t1.fit.iterations))
    );
    assert_eq!(t2.test_nll.to_bits(), t1.test_nll.to_bits());
    let (c1, c2) = (&first.vae[1], &second.vae[1]);
    assert_eq!((c2.posterior.as_str(), c2.epochs), ("cp-flow", c1.epochs));
    assert_eq!(c2.neg_elbo, c1.neg_elbo);
    assert_eq!(c2.is_nll, c1.is_nll);

    // A resume with other settings is refused, naming them.
    opts.preset = "quick".into();
    let other = format!("{:#}", run_reproduce(&opts).unwrap_err());
    assert!(other.contains("preset: tiny → quick"), "{other}");
}

/// An interrupt before a run stops the reproduction with the `--resume` hint.
#[test]
fn an_interrupted_reproduction_says_how_to_continue() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut opts = ReproduceOptions::tiny(
        out.path().to_path_buf(),
        data.path().to_path_buf(),
        Device::Cpu,
    );
    opts.interrupt = Some(Arc::new(AtomicBool::new(true)));
    let msg = format!("{:#}", run_reproduce(&opts).unwrap_err());
    assert!(
        msg.starts_with("interrupted") && msg.contains("--resume"),
        "{msg}"
    );
    assert!(!out.path().join("toys").exists());
}

/// [`TabularResume::Finish`] keeps a dataset's saved result, finishes a run whose budget an
/// earlier sitting spent without a step more (scored as it was), and continues a paused run
/// to where the uninterrupted one ends.
#[test]
fn finish_keeps_results_and_counts_the_budget_over_sittings() {
    let data = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let sets = vec![TabularDataset::Miniboone];

    // A 1 ns budget: one step, then the budget ends the run.
    let out = tempfile::tempdir().unwrap();
    let mut opts = tiny_options(data.path(), out.path(), sets.clone());
    opts.budget = Some(Duration::from_nanos(1));
    let spent = run_bench_tabular(&opts).unwrap().results.remove(0);
    assert!(spent.fit.budget_exhausted && spent.fit.iterations == 1);
    opts.resume = TabularResume::Finish;
    let kept = run_bench_tabular(&opts).unwrap().results.remove(0);
    assert_eq!(kept, spent);
    std::fs::remove_file(out.path().join("miniboone").join(RESULT_FILE)).unwrap();
    let finished = run_bench_tabular(&opts).unwrap().results.remove(0);
    assert_eq!(
        (finished.fit.iterations, finished.fit.resumed_at),
        (1, Some(1))
    );
    assert!(finished.fit.budget_exhausted);
    assert_eq!(finished.test_nll.to_bits(), spent.test_nll.to_bits());
    // `Extend` (bench-tabular --resume) gives the same run a new budget: it steps on.
    opts.resume = TabularResume::Extend;
    let extended = run_bench_tabular(&opts).unwrap().results.remove(0);
    assert_eq!(extended.fit.iterations, 2);

    // Paused after its first step, then finished within an hour's budget: the iteration
    // cap ends it where the uninterrupted run ends.
    let whole = run_bench_tabular(&tiny_options(
        data.path(),
        tempfile::tempdir().unwrap().path(),
        sets.clone(),
    ))
    .unwrap()
    .results
    .remove(0);
    let out = tempfile::tempdir().unwrap();
    let flag = Arc::new(AtomicBool::new(true));
    let mut opts = tiny_options(data.path(), out.path(), sets);
    opts.budget = Some(Duration::from_secs(3600));
    opts.interrupt = Some(flag.clone());
    let paused = run_bench_tabular(&opts).unwrap();
    assert!(paused.results.is_empty());
    assert!(!out.path().join("miniboone").join(RESULT_FILE).exists());
    flag.store(false, Ordering::Relaxed);
    opts.resume = TabularResume::Finish;
    let resumed = run_bench_tabular(&opts).unwrap().results.remove(0);
    assert_eq!(
        (resumed.fit.iterations, resumed.fit.resumed_at),
        (whole.fit.iterations, Some(1))
    );
    assert!(!resumed.fit.budget_exhausted);
    assert_eq!(resumed.test_nll.to_bits(), whole.test_nll.to_bits());
}

/// `test_rows` scores a seeded subset of the test split, and, since the test rows never reach
/// training, a finished run continued with another number of them is scored on those: the
/// whole split gives the very number of a run that scored it from the start.
#[test]
fn test_rows_subsample_the_score_and_may_change_on_resume() {
    let data = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let sets = vec![TabularDataset::Miniboone];
    let whole_out = tempfile::tempdir().unwrap();
    let whole = run_bench_tabular(&tiny_options(data.path(), whole_out.path(), sets.clone()))
        .unwrap()
        .results
        .remove(0);
    // MAF's split of the 1,000 synthetic rows leaves 100 test rows (under the tiny cap).
    assert_eq!(whole.n_test, 100);

    let out = tempfile::tempdir().unwrap();
    let mut opts = tiny_options(data.path(), out.path(), sets);
    opts.test_rows = Some(37);
    let some = run_bench_tabular(&opts).unwrap().results.remove(0);
    assert_eq!((some.n_test, some.config.max_test), (37, Some(37)));
    assert_eq!(some.fit.best_iteration, whole.fit.best_iteration);
    assert_ne!(some.test_nll.to_bits(), whole.test_nll.to_bits());

    std::fs::remove_file(out.path().join("miniboone").join(RESULT_FILE)).unwrap();
    opts.test_rows = None;
    opts.resume = TabularResume::Finish;
    let rescored = run_bench_tabular(&opts).unwrap().results.remove(0);
    assert_eq!(rescored.n_test, 100);
    assert_eq!(rescored.fit.iterations, whole.fit.iterations);
    assert_eq!(rescored.test_nll.to_bits(), whole.test_nll.to_bits());

    opts.test_rows = Some(0);
    let report = run_bench_tabular(&opts).unwrap();
    assert!(
        report.failed[0]
            .message
            .contains("--test-rows must be at least 1"),
        "{:?}",
        report.failed
    );
}
