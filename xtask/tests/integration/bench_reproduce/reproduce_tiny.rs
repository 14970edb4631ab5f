//! `reproduce` end to end with the `tiny` presets: the toys, OT, the synthetic MINIBOONE
//! (POWER missing), MNIST's image flow and the VAE posteriors on the Frey Faces shipped in
//! ../shared/data (required); Omniglot and CIFAR-10 are skipped with their download commands.

use cpflow::datasets::TabularDataset;
use cpflow::vae::{FREY_FACES_FILE, VaeDatasetName};
use xtask::reproduce::{REPORT_MD, run_reproduce};

use crate::common::shared_data;
use crate::tabular_fixtures::tiny_reproduction;

#[test]
fn reproduce_tiny_writes_report_with_figures_and_tables() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut opts = tiny_reproduction(data.path(), out.path());
    opts.tabular.datasets = vec![TabularDataset::Miniboone, TabularDataset::Power];
    // The project's shared data (as in the download tests); Omniglot is in neither root.
    let shared = shared_data();
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
