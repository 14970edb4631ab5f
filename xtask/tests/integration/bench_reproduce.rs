//! `bench-tabular` end to end through the library entry points, with the `tiny` presets
//! (seconds in the debug profile), on a synthetic MINIBOONE file written to a temporary data
//! directory and, when present, the real BSDS300 images in ../shared/data; reruns into the
//! same folder (resume, interrupts, earlier results) in [`reruns`], and `reproduce` (whose VAE
//! part needs the Frey Faces shipped in ../shared/data) in [`reproduce_tiny`]. Nothing
//! touches the network.

mod reproduce_tiny;
mod reruns;

use std::time::Duration;

use cpflow::datasets::{Matrix, TabularDataset, find_images_archive, layout, write_npy_f64};
use xtask::bench_tabular::{default_fallback_roots, locate_dataset, run_bench_tabular};
use xtask::tabular_config::{ModelOverrides, TabularArch, TabularBenchConfig};

use crate::tabular_fixtures::{
    assert_nothing_ran_and_failure_says, bench_json, bench_markdown, tiny_bench, tiny_options,
};

#[test]
fn bench_tabular_tiny_writes_finite_nll_and_skips_missing() {
    let (_data, out, opts) = tiny_bench(vec![TabularDataset::Power, TabularDataset::Miniboone]);
    let report = run_bench_tabular(&opts).unwrap();
    assert_eq!(report.results.len(), 1);
    let r = &report.results[0];
    assert_eq!((r.dataset.as_str(), r.dim), ("miniboone", 43));
    // MAF split of 1,000 rows: 810 / 90 / 100; the tiny caps (400 / 100 / 200) subsample.
    assert_eq!((r.n_train, r.n_val, r.n_test), (400, 90, 100));
    assert_eq!(r.fit.iterations, 12);
    assert!(r.test_nll.is_finite() && r.test_nll_2se.is_finite() && r.test_nll_2se > 0.0);
    assert_eq!(r.paper_nll, 10.58);

    assert_eq!(report.skipped.len(), 1);
    assert!(
        report.skipped[0]
            .message
            .contains("cargo xtask download power")
    );

    let md = bench_markdown(out.path());
    for needle in [
        "| miniboone | 43 |",
        "10.58",
        "## Configurations",
        "## Skipped",
        "cargo xtask download power",
    ] {
        assert!(md.contains(needle), "{needle:?} missing from\n{md}");
    }
    let json: serde_json::Value = bench_json(out.path());
    let nll = json["results"][0]["test_nll"].as_f64().unwrap();
    assert!((nll - r.test_nll).abs() < 1e-12);
    assert!(out.path().join("miniboone/model.safetensors").is_file());
    // Validations at iterations 1, 5 and 9: the last two are drawn.
    assert_eq!(
        r.validation_curve.as_deref(),
        Some("miniboone/validation-curve.png")
    );
    assert!(out.path().join("miniboone/validation-curve.png").is_file());
    assert!(md.contains("[miniboone/validation-curve.png]"), "{md}");
}

/// `--val-every` replaces the preset's validation period (written into the report's
/// configuration); a period of 0 fails the dataset with a message naming the flag.
#[test]
fn val_every_overrides_the_preset() {
    let (_data, out, mut opts) = tiny_bench(vec![TabularDataset::Miniboone]);
    assert_eq!(
        TabularBenchConfig::tiny(TabularDataset::Miniboone).val_every,
        4
    );
    opts.val_every = Some(5);
    let report = run_bench_tabular(&opts).unwrap();
    assert_eq!(report.results[0].config.val_every, 5);
    let md = bench_markdown(out.path());
    assert!(md.contains("val every 5"), "{md}");
    opts.val_every = Some(0);
    let report = run_bench_tabular(&opts).unwrap();
    assert_nothing_ran_and_failure_says(&report, &["--val-every must be at least 1"]);
}

/// `--cg-preconditioner mean-hessian` reaches the trainer (the report's configuration and
/// summary say so) and the run scores a finite test NLL.
#[test]
fn cg_preconditioner_overrides_the_preset() {
    let (_data, out, mut opts) = tiny_bench(vec![TabularDataset::Miniboone]);
    opts.cg_preconditioner = Some(cpflow::CgPreconditioner::MeanHessian);
    let report = run_bench_tabular(&opts).unwrap();
    let r = &report.results[0];
    assert_eq!(
        r.config.cg_preconditioner,
        cpflow::CgPreconditioner::MeanHessian
    );
    assert_eq!(
        r.config.train_config().surrogate.preconditioner,
        cpflow::CgPreconditioner::MeanHessian
    );
    assert!(r.test_nll.is_finite());
    let md = bench_markdown(out.path());
    assert!(
        md.contains("CG atol 0.001 (mean-Hessian preconditioner)"),
        "{md}"
    );
}

/// A dataset that fails (here a POWER file full of NaN) is reported as failed and the run
/// goes on: the datasets after it still run, and the report of those that finished is
/// written (a failure used to abort the run and lose every finished result).
#[test]
fn a_failing_dataset_does_not_lose_the_others() {
    let (data, out, opts) = tiny_bench(vec![TabularDataset::Power, TabularDataset::Miniboone]);
    let power = data.path().join(layout::POWER);
    std::fs::create_dir_all(power.parent().unwrap()).unwrap();
    let nan = Matrix::new(40, 8, vec![f64::NAN; 40 * 8]).unwrap();
    std::fs::write(&power, write_npy_f64(&nan)).unwrap();
    let report = run_bench_tabular(&opts).unwrap();
    assert_eq!(report.results.len(), 1);
    assert_eq!(report.results[0].dataset, "miniboone");
    assert!(report.skipped.is_empty());
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].dataset, "power");
    assert!(
        report.failed[0].message.contains("power"),
        "{:?}",
        report.failed
    );
    let md = bench_markdown(out.path());
    assert!(
        md.contains("| miniboone | 43 |") && md.contains("## Failed"),
        "{md}"
    );
    let json: serde_json::Value = bench_json(out.path());
    assert_eq!(json["failed"][0]["dataset"], "power");
}

/// The report says what its validation NLL is: an SLQ estimate on the validation rows, the
/// lowest of the run's validations (it read like a score next to the exact test NLL).
#[test]
fn the_validation_nll_is_labelled_as_an_estimate() {
    let (_data, out, opts) = tiny_bench(vec![TabularDataset::Miniboone]);
    let report = run_bench_tabular(&opts).unwrap();
    let r = &report.results[0];
    let md = bench_markdown(out.path());
    let v = format!(
        "lowest validation NLL {:.3}, an estimate: slq(1 probe, 10 steps), stochastic Lanczos \
         quadrature of the log-det on the {} validation rows",
        r.fit.best_val_nll.unwrap(),
        r.n_val
    );
    assert!(md.contains(&v), "{v} not in\n{md}");
    assert!(md.contains("Device: cpu."), "{md}");
    assert!(!md.contains("Some(") && !md.contains("Cpu"), "{md}");
}

#[test]
fn budget_stops_training_after_one_step() {
    let (_data, _out, opts) = tiny_bench(vec![TabularDataset::Miniboone]);
    let opts = opts.with_budget(Some(Duration::from_nanos(1)));
    let report = run_bench_tabular(&opts).unwrap();
    let r = &report.results[0];
    // The budget is checked after every step: a spent budget stops the run after its first.
    assert_eq!(r.fit.iterations, 1);
    assert!(r.fit.budget_exhausted && !r.fit.stopped_early);
    assert!(r.fit.best_val_nll.is_some_and(f64::is_finite));
    assert!(r.test_nll.is_finite());
}

#[test]
fn missing_dataset_message_names_the_download_command() {
    let empty = tempfile::tempdir().unwrap();
    let msg = locate_dataset(TabularDataset::Hepmass, empty.path(), &[]).unwrap_err();
    assert!(msg.contains("cargo xtask download hepmass"), "{msg}");
    assert!(msg.contains(&empty.path().display().to_string()), "{msg}");

    let out = tempfile::tempdir().unwrap();
    let opts = tiny_options(empty.path(), out.path(), vec![TabularDataset::Gas]);
    let report = run_bench_tabular(&opts).unwrap();
    assert!(report.results.is_empty());
    let md = bench_markdown(out.path());
    assert!(md.contains("cargo xtask download gas"), "{md}");
}

#[test]
fn bsds300_tiny_from_the_shared_images() {
    let empty = tempfile::tempdir().unwrap();
    let roots = default_fallback_roots();
    if !roots.iter().any(|r| find_images_archive(r).is_some()) {
        eprintln!("skipped: no BSDS300 images in ../shared/data");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let mut opts = tiny_options(empty.path(), out.path(), vec![TabularDataset::Bsds300]);
    opts.fallback_roots = roots;
    let report = run_bench_tabular(&opts).unwrap();
    let r = &report.results[0];
    assert_eq!(r.dim, 63);
    assert_eq!((r.n_train, r.n_val, r.n_test), (400, 100, 200));
    assert!(r.test_nll.is_finite(), "{r:?}");
    // The Gaussian baseline on the same rows, beside MAF's on its file, with the gains.
    let (g, g2se) = r
        .gaussian_test_nll
        .expect("a Gaussian fits 400 patches of 63 dims");
    assert!(g.is_finite() && g2se > 0.0, "{g} ± {g2se}");
    assert_eq!(r.maf_gaussian_nll, Some((-96.67, 0.25)));
    let md = bench_markdown(out.path());
    let cells = format!(
        "| {g:.3} ± {g2se:.3} / -96.67 ± 0.25 | {:.2} / {:.2} |",
        g - r.test_nll,
        -96.67 - r.paper_nll
    );
    assert!(md.contains(&cells), "{cells} not in\n{md}");
}

/// `--arch`, `--blocks`, `--width` and `--depth` change the trained model (a point of the
/// paper's grid search); a model the networks refuse fails the dataset with their message.
#[test]
fn model_overrides_reach_the_trained_flow() {
    let (_data, out, mut opts) = tiny_bench(vec![TabularDataset::Miniboone]);
    opts.model = ModelOverrides {
        arch: Some(TabularArch::Icnn3),
        blocks: Some(2),
        width: Some(6),
        depth: None,
    };
    let report = run_bench_tabular(&opts).unwrap();
    let r = &report.results[0];
    let cfg = &r.config;
    assert_eq!(
        (cfg.arch, cfg.blocks, cfg.width, cfg.depth),
        (TabularArch::Icnn3, 2, 6, 2)
    );
    assert_eq!(Some(r.parameters), cfg.flow_config(43).parameter_count());
    let tiny = TabularBenchConfig::tiny(TabularDataset::Miniboone);
    assert_ne!(Some(r.parameters), tiny.flow_config(43).parameter_count());
    assert!(r.test_nll.is_finite());
    let md = bench_markdown(out.path());
    assert!(md.contains("2 block(s) Icnn3 width 6 depth 2"), "{md}");

    opts.model.width = Some(7);
    let report = run_bench_tabular(&opts).unwrap();
    assert_nothing_ran_and_failure_says(&report, &["even width", "Icnn3 width 7"]);
}
