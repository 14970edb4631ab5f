//! `data.n_train`: a run on the first `n` training images is the run on data holding only
//! those (the same epochs, the same best weights), and a resume under another cap is
//! refused.

use super::tests::{epoch_records, fake_data, tiny_run_config};
use super::tests_best_weights::weights;
use super::tests_checkpoint_write::scratch;
use super::*;

#[test]
fn a_capped_run_equals_the_run_on_the_first_images() {
    let dir = scratch("n-train");
    let data = fake_data();
    let mut capped = tiny_run_config(PosteriorKind::Gaussian, 2, 0);
    capped.data.n_train = Some(10);
    let opts = VaeRunOptions::default();
    let report = run_vae_on(&capped, &data, &dir.join("capped"), &opts).unwrap();
    // 10 of the 24 training images: 2 steps an epoch (batches of 8 and 2), 2 epochs.
    assert_eq!((report.split_sizes, report.steps), ([10, 6, 6], 4));
    let mut first = data.clone();
    first.train = data.train.head(10);
    assert_eq!(first.train.pixels, data.train.pixels[..10 * 560]);
    let plain = tiny_run_config(PosteriorKind::Gaussian, 2, 0);
    let cut = run_vae_on(&plain, &first, &dir.join("cut"), &opts).unwrap();
    assert_eq!(
        epoch_records(&dir.join("capped")),
        epoch_records(&dir.join("cut"))
    );
    assert_eq!(report.test_neg_elbo, cut.test_neg_elbo);
    // The same best weights (the files' headers differ: they record the configuration).
    let best = |run: &str| weights(&dir.join(run).join("best.safetensors"));
    let (a, b) = (best("capped"), best("cut"));
    assert!(!a.is_empty());
    assert_eq!(a, b);
    // A cap at or above the split's size trains on all of it.
    let mut above = plain.clone();
    above.data.n_train = Some(100);
    let all = run_vae_on(&above, &data, &dir.join("above"), &opts).unwrap();
    assert_eq!((all.split_sizes, all.steps), ([24, 6, 6], 6));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_resume_under_another_cap_and_a_zero_cap_are_refused() {
    let dir = scratch("n-train-resume");
    let data = fake_data();
    let mut cfg = tiny_run_config(PosteriorKind::Gaussian, 1, 0);
    cfg.data.n_train = Some(10);
    run_vae_on(&cfg, &data, &dir, &VaeRunOptions::default()).unwrap();
    let resume = VaeRunOptions {
        resume: true,
        ..Default::default()
    };
    for other in [None, Some(12)] {
        let mut more = cfg.clone();
        (more.train.epochs, more.data.n_train) = (2, other);
        let err = run_vae_on(&more, &data, &dir, &resume)
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.n_train"), "{err}");
    }
    // The same cap resumes.
    cfg.train.epochs = 2;
    assert_eq!(run_vae_on(&cfg, &data, &dir, &resume).unwrap().epochs, 2);
    cfg.data.n_train = Some(0);
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("data.n_train must be ≥ 1"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
