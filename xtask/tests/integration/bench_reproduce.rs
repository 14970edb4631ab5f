//! `bench-tabular` and `reproduce` end to end through the library entry points, with the
//! `tiny` presets (seconds in the debug profile), on a synthetic MINIBOONE file written to a
//! temporary data directory and, when present, the real BSDS300 images in ../shared/data;
//! the VAE part of `reproduce` on the Frey Faces shipped in ../shared/data (required).
//! Nothing touches the network.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cpflow::datasets::{Matrix, TabularDataset, find_images_archive, layout, write_npy_f64};
use cpflow::vae::{FREY_FACES_FILE, VaeDatasetName};
use xtask::bench_report::{BENCH_JSON, BENCH_MD};
use xtask::bench_resume::{RESULT_FILE, TabularResume};
use xtask::bench_tabular::{default_fallback_roots, locate_dataset, run_bench_tabular};
use xtask::cli::bench_outcome;
use xtask::reproduce::{REPORT_MD, run_reproduce};

use crate::tabular_fixtures::{tiny_options, tiny_reproduction, write_synthetic_miniboone};
use xtask::tabular_config::{ModelOverrides, TabularArch, TabularBenchConfig};

#[test]
fn bench_tabular_tiny_writes_finite_nll_and_skips_missing() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let opts = tiny_options(
        data.path(),
        out.path(),
        vec![TabularDataset::Power, TabularDataset::Miniboone],
    );
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

    let md = std::fs::read_to_string(out.path().join(BENCH_MD)).unwrap();
    for needle in [
        "| miniboone | 43 |",
        "10.58",
        "## Configurations",
        "## Skipped",
        "cargo xtask download power",
    ] {
        assert!(md.contains(needle), "{needle:?} missing from\n{md}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join(BENCH_JSON)).unwrap())
            .unwrap();
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
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let mut opts = tiny_options(data.path(), out.path(), vec![TabularDataset::Miniboone]);
    assert_eq!(
        TabularBenchConfig::tiny(TabularDataset::Miniboone).val_every,
        4
    );
    opts.val_every = Some(5);
    let report = run_bench_tabular(&opts).unwrap();
    assert_eq!(report.results[0].config.val_every, 5);
    let md = std::fs::read_to_string(out.path().join(BENCH_MD)).unwrap();
    assert!(md.contains("val every 5"), "{md}");
    opts.val_every = Some(0);
    let report = run_bench_tabular(&opts).unwrap();
    assert!(report.results.is_empty());
    assert!(
        report.failed[0]
            .message
            .contains("--val-every must be at least 1"),
        "{}",
        report.failed[0].message
    );
}

/// A failure of its own in a run that starts after Ctrl-C was pressed (the first dataset
/// starts anyway) is filed as failed, not as interrupted: `--resume` would not continue it
/// (it used to be listed as paused and checkpointed because the flag was set).
#[test]
fn a_failure_after_an_interrupt_is_a_failure() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let mut opts = tiny_options(data.path(), out.path(), vec![TabularDataset::Miniboone]);
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

/// `--cg-preconditioner mean-hessian` reaches the trainer (the report's configuration and
/// summary say so) and the run scores a finite test NLL.
#[test]
fn cg_preconditioner_overrides_the_preset() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let mut opts = tiny_options(data.path(), out.path(), vec![TabularDataset::Miniboone]);
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
    let md = std::fs::read_to_string(out.path().join(BENCH_MD)).unwrap();
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
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let power = data.path().join(layout::POWER);
    std::fs::create_dir_all(power.parent().unwrap()).unwrap();
    let nan = Matrix::new(40, 8, vec![f64::NAN; 40 * 8]).unwrap();
    std::fs::write(&power, write_npy_f64(&nan)).unwrap();
    let opts = tiny_options(
        data.path(),
        out.path(),
        vec![TabularDataset::Power, TabularDataset::Miniboone],
    );
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
    let md = std::fs::read_to_string(out.path().join(BENCH_MD)).unwrap();
    assert!(
        md.contains("| miniboone | 43 |") && md.contains("## Failed"),
        "{md}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join(BENCH_JSON)).unwrap())
            .unwrap();
    assert_eq!(json["failed"][0]["dataset"], "power");
}

/// `bench-tabular.{md,json}` never drops a finished dataset: a later run into the same
/// folder of a dataset that is not on disk, a resume refused for its settings, or an
/// interrupted run rewrites the report with the earlier results still listed (marked as
/// such, from their `<dataset>/result.json`); they were replaced by an empty table. An
/// interrupt pauses the dataset in training (not a failure), and a dataset after it that is
/// not on disk is reported as not found.
#[test]
fn the_report_keeps_the_rows_of_earlier_runs() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let mut opts = tiny_options(data.path(), out.path(), vec![TabularDataset::Miniboone]);
    let first = run_bench_tabular(&opts).unwrap().results.remove(0);
    let row = "| miniboone (earlier run) | 43 |";
    let md = || std::fs::read_to_string(out.path().join(BENCH_MD)).unwrap();
    let json = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.path().join(BENCH_JSON)).unwrap())
            .unwrap()
    };

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
    assert!(refused.results.is_empty());
    assert!(
        refused.failed[0]
            .message
            .contains("blocks (--blocks): 1 → 2"),
        "{:?}",
        refused.failed
    );
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

/// The report says what its validation NLL is: an SLQ estimate on the validation rows, the
/// lowest of the run's validations (it read like a score next to the exact test NLL).
#[test]
fn the_validation_nll_is_labelled_as_an_estimate() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let opts = tiny_options(data.path(), out.path(), vec![TabularDataset::Miniboone]);
    let report = run_bench_tabular(&opts).unwrap();
    let r = &report.results[0];
    let md = std::fs::read_to_string(out.path().join(BENCH_MD)).unwrap();
    let v = format!(
        "lowest validation NLL {:.3}, an estimate: stochastic Lanczos quadrature (1 probe(s), \
         10 steps) of the log-det on the {} validation rows",
        r.fit.best_val_nll.unwrap(),
        r.n_val
    );
    assert!(md.contains(&v), "{v} not in\n{md}");
    assert!(md.contains("Device: cpu."), "{md}");
    assert!(!md.contains("Some(") && !md.contains("Cpu"), "{md}");
}

#[test]
fn budget_stops_training_after_one_step() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let opts = tiny_options(data.path(), out.path(), vec![TabularDataset::Miniboone])
        .with_budget(Some(Duration::from_nanos(1)));
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
    let md = std::fs::read_to_string(out.path().join(BENCH_MD)).unwrap();
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
    let md = std::fs::read_to_string(out.path().join("bench-tabular.md")).unwrap();
    let cells = format!(
        "| {g:.3} ± {g2se:.3} / -96.67 ± 0.25 | {:.2} / {:.2} |",
        g - r.test_nll,
        -96.67 - r.paper_nll
    );
    assert!(md.contains(&cells), "{cells} not in\n{md}");
}

#[test]
fn reproduce_tiny_writes_report_with_figures_and_tables() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut opts = tiny_reproduction(data.path(), out.path());
    opts.tabular.datasets = vec![TabularDataset::Miniboone, TabularDataset::Power];
    // The project's shared data (as in tests/cli.rs); Omniglot is in neither root.
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    assert!(
        shared.join(FREY_FACES_FILE).is_file(),
        "Frey Faces missing from {}",
        shared.display()
    );
    opts.vae.data_dir = shared.clone();
    opts.vae.datasets = vec![VaeDatasetName::FreyFaces, VaeDatasetName::Omniglot];
    // Table 2: MNIST from the shared data (tiny model, 64 training images); CIFAR-10 is in
    // neither root and is skipped with its download command.
    opts.images.data_roots = vec![shared, data.path().to_path_buf()];
    let report = run_reproduce(&opts).unwrap();
    assert_eq!(report.toys.len(), 1);
    assert!(report.toys[0].test_nll.is_finite());
    assert_eq!(report.ot.len(), 1);
    assert!(report.ot[0].transport_cost.is_finite() && report.ot[0].kl.is_finite());
    assert!(report.tabular.results[0].test_nll.is_finite());

    // Both posteriors on the first 100 / 50 / 50 Frey Faces, in bits/dim with the paper's row.
    assert_eq!(report.vae.len(), 2);
    for (row, (posterior, paper)) in report
        .vae
        .iter()
        .zip([("gaussian", 4.53), ("cp-flow", 4.45)])
    {
        assert_eq!(
            (
                row.dataset.as_str(),
                row.posterior.as_str(),
                row.unit.as_str()
            ),
            ("frey-faces", posterior, "bits/dim")
        );
        assert_eq!(row.split_sizes, [100, 50, 50]);
        assert_eq!((row.epochs, row.is_samples), (1, 5));
        assert_eq!(row.paper_neg_elbo, Some(paper));
        // A 256-way categorical costs at most 8 bits/dim at random initialisation (plus the
        // KL); one epoch of a tiny model must stay finite and positive, well below 16.
        let e = row.neg_elbo;
        assert!(
            e.mean > 0.0 && e.mean < 16.0 && e.std_err.is_finite(),
            "{row:?}"
        );
        assert_eq!(e.n, 50);
        let is = row.is_nll.unwrap();
        assert!(
            is.mean.is_finite() && is.std_err.is_finite() && is.n == 2,
            "{row:?}"
        );
        assert!(row.seconds_per_epoch > 0.0 && row.num_parameters > 0);
        let p = out.path().join(&row.dir).join("report.json");
        assert!(p.is_file(), "{} missing", p.display());
        // An 8×8 grid of 28×20 Frey Faces images (2-pixel padding): the PNG's IHDR chunk
        // holds its width and height (big-endian, bytes 16..24).
        let png = std::fs::read(out.path().join(&row.dir).join("samples.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
        assert_eq!((be(16), be(20)), (8 * 20 + 9 * 2, 8 * 28 + 9 * 2));
    }
    assert_eq!(report.vae[0].dir, "vae/frey-faces/gaussian");
    assert_eq!(report.vae[1].dir, "vae/frey-faces/cp-flow");
    assert!(report.vae[1].num_parameters > report.vae[0].num_parameters);
    assert_eq!(report.vae_skipped.len(), 1);
    // The message names the download command and the data directory it writes to.
    let msg = &report.vae_skipped[0].message;
    assert!(msg.contains("cargo xtask download omniglot"), "{msg}");
    assert!(msg.contains(&data.path().display().to_string()), "{msg}");

    assert_eq!(report.images.len(), 1);
    let img = &report.images[0];
    assert_eq!(
        (img.dataset.as_str(), img.dir.as_str()),
        ("mnist", "images/mnist")
    );
    assert_eq!((img.report.n_train, img.report.n_val), (64, 8));
    assert_eq!(img.report.iterations, 3);
    let test = img.report.test.as_ref().unwrap();
    // Three steps of a tiny flow from the logit/ActNorm initialisation: a finite bpd between
    // 0 and the 8 bits of a uniform 256-level pixel plus the logit's slack.
    assert!(test.slq.bpd > 0.0 && test.slq.bpd < 16.0, "{test:?}");
    assert_eq!(test.slq.images, 4);
    assert_eq!((img.grid_samples, img.paper_bpd), (4, 1.02));
    assert_eq!(report.images_skipped.len(), 1);
    assert!(
        report.images_skipped[0]
            .message
            .contains("cargo xtask download cifar10"),
        "{:?}",
        report.images_skipped
    );
    let png = out.path().join("images/mnist/samples.png");
    assert!(png.is_file() && png.metadata().unwrap().len() > 0);

    let md = std::fs::read_to_string(out.path().join(REPORT_MD)).unwrap();
    for needle in [
        "## Fig. 3",
        "## Fig. 4",
        "## Table 1",
        "(toys/8gaussians_density.png)",
        "(ot/ot_d2_cost_vs_kl.png)",
        "(tabular/bench-tabular.md)",
        "| miniboone | 43 |",
        "cargo xtask download power",
        "## Table 2: images (test bits/dim)",
        "| [mnist](images/mnist/report.json) |",
        "(images/mnist/samples.png)",
        "cargo xtask download cifar10",
        "## Table 3: VAE posteriors (negative ELBO)",
        "| [frey-faces](vae/frey-faces/gaussian/report.json) | gaussian | 100 / 50 / 50 |",
        "| [frey-faces](vae/frey-faces/cp-flow/report.json) | cp-flow | 100 / 50 / 50 |",
        "[8×8](vae/frey-faces/cp-flow/samples.png) |",
        "bits/dim | ",
        "(K = 5, 2 images)",
        "| 4.53 |",
        "| 4.45 |",
        "Differences from the paper's setup: base width 2 (paper 32)",
        "cargo xtask download omniglot",
    ] {
        assert!(md.contains(needle), "{needle:?} missing from\n{md}");
    }
    // The OT figures have titles and axis labels: the report must not say otherwise.
    assert!(!md.contains("carry no text"), "{md}");
    for f in [
        "toys/8gaussians_data.png",
        "toys/8gaussians_density.png",
        "toys/8gaussians_samples.png",
        "ot/ot_d2_cost_vs_kl.png",
        "ot/ot_d2_cost_vs_iter.png",
        "tabular/bench-tabular.json",
        "reproduce.json",
    ] {
        let p = out.path().join(f);
        assert!(
            p.is_file() && p.metadata().unwrap().len() > 0,
            "{f} missing"
        );
    }
}

/// `--arch`, `--blocks`, `--width` and `--depth` change the trained model (a point of the
/// paper's grid search); a model the networks refuse fails the dataset with their message.
#[test]
fn model_overrides_reach_the_trained_flow() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let mut opts = tiny_options(data.path(), out.path(), vec![TabularDataset::Miniboone]);
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
    let md = std::fs::read_to_string(out.path().join(BENCH_MD)).unwrap();
    assert!(md.contains("2 block(s) Icnn3 width 6 depth 2"), "{md}");

    opts.model.width = Some(7);
    let report = run_bench_tabular(&opts).unwrap();
    assert!(report.results.is_empty());
    let msg = &report.failed[0].message;
    assert!(
        msg.contains("even width") && msg.contains("Icnn3 width 7"),
        "{msg}"
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
    let data = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let whole_out = tempfile::tempdir().unwrap();
    let opts = tiny_options(
        data.path(),
        whole_out.path(),
        vec![TabularDataset::Miniboone],
    );
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
    let md = std::fs::read_to_string(out.path().join(BENCH_MD)).unwrap();
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
