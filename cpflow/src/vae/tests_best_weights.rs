//! `best.safetensors` against the checkpoint after kills: the states a kill between the two
//! writes leaves (built by copying the files of finished runs), resumed, score the run's
//! best epoch bit for bit as the uninterrupted run does; best weights of another epoch than
//! the run's best are refused instead of scored.

use std::path::{Path, PathBuf};

use super::tests::{fake_data, tiny_run_config};
use super::*;
use crate::CpflowError;

/// A fresh scratch directory for `name`.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-vae-best-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn resume() -> VaeRunOptions {
    VaeRunOptions {
        resume: true,
        ..Default::default()
    }
}

/// `report` as JSON, its one wall-clock number zeroed.
fn timeless(report: &VaeReport) -> serde_json::Value {
    let mut v = serde_json::to_value(report).unwrap();
    v["seconds_per_epoch"] = 0.0.into();
    v
}

/// `dir` made of `files`, each copied from the run directory given with it.
fn assemble(dir: &Path, files: &[(&Path, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (from, name) in files {
        std::fs::copy(from.join(name), dir.join(name)).unwrap();
    }
}

/// The model tensors of a VAE weights file, as f64 values by name.
pub(super) fn weights(path: &Path) -> Vec<(String, Vec<f64>)> {
    let (_, t) = load_vae_checkpoint(path, &candle_core::Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f64>)> = t
        .iter()
        .map(|(k, t)| {
            let t = t.to_dtype(candle_core::DType::F64).unwrap();
            (
                k.clone(),
                t.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

const CKPT: &str = "checkpoint.safetensors";
const BEST_FILE: &str = "best.safetensors";
const LOG: &str = "metrics.jsonl";

/// Runs of 1 and 2 epochs (the second epoch improves): the states a kill leaves between the
/// checkpoint and the best weights, in either order of the two writes, resume to the
/// uninterrupted run's numbers, bit for bit.
#[test]
fn a_resume_scores_the_best_epoch_whatever_the_kill_left() {
    let dir = scratch("kills");
    let data = fake_data();
    let (one_cfg, cfg) = (
        tiny_run_config(PosteriorKind::Gaussian, 1, 4),
        tiny_run_config(PosteriorKind::Gaussian, 2, 4),
    );
    let (one, full) = (dir.join("one"), dir.join("full"));
    let r1 = run_vae_on(&one_cfg, &data, &one, &VaeRunOptions::default()).unwrap();
    let r2 = run_vae_on(&cfg, &data, &full, &VaeRunOptions::default()).unwrap();
    assert_eq!((r1.best_epoch, r2.best_epoch), (1, 2), "{:?}", r2.val_curve);
    assert_ne!(r1.test_neg_elbo, r2.test_neg_elbo);

    // (a) Best weights written before the checkpoint (older cpflow), killed while writing
    // the checkpoint of epoch 2: epoch 2's best weights and log beside epoch 1's checkpoint.
    // Resumed with no epoch to train, the report names epoch 1 as the best and scores it
    // (the old code scored epoch 2's weights: the test −ELBO of `r2`).
    let ahead = dir.join("ahead");
    assemble(&ahead, &[(&one, CKPT), (&full, BEST_FILE), (&full, LOG)]);
    let r = run_vae_on(&one_cfg, &data, &ahead, &resume()).unwrap();
    assert_eq!(r.best_epoch, 1);
    assert_eq!(r.test_neg_elbo, r1.test_neg_elbo, "epoch 1's test −ELBO");
    assert_eq!(r.test_is_nll, r1.test_is_nll);
    assert_eq!(timeless(&r), timeless(&r1));
    // Given its second epoch, it ends as the uninterrupted run.
    let r = run_vae_on(&cfg, &data, &ahead, &resume()).unwrap();
    assert_eq!(timeless(&r), timeless(&r2));
    assert_eq!(
        weights(&ahead.join(BEST_FILE)),
        weights(&full.join(BEST_FILE))
    );

    // (b) Killed after epoch 2's checkpoint, before its best weights (this order): epoch 1's
    // best weights beside epoch 2's checkpoint, or none at all. The finished run's resume
    // scores epoch 2 (the old code scored epoch 1's weights, or the checkpoint's untagged).
    for (name, best_from) in [("behind", Some(&one)), ("none", None)] {
        let behind = dir.join(name);
        assemble(&behind, &[(&full, CKPT), (&full, LOG)]);
        if let Some(from) = best_from {
            assemble(&behind, &[(from, BEST_FILE)]);
        }
        let r = run_vae_on(&cfg, &data, &behind, &resume()).unwrap();
        assert_eq!(timeless(&r), timeless(&r2), "{name}");
        assert_eq!(
            weights(&behind.join(BEST_FILE)),
            weights(&full.join(BEST_FILE)),
            "{name}"
        );
        assert_eq!(
            best_weights_epoch(&behind.join(BEST_FILE)).unwrap(),
            Some(2)
        );
    }
    // The best weights carry their epoch.
    assert_eq!(best_weights_epoch(&one.join(BEST_FILE)).unwrap(), Some(1));
    assert_eq!(best_weights_epoch(&full.join(BEST_FILE)).unwrap(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A checkpoint whose best epoch is not its own (epoch 2's checkpoint, its state edited so
/// that epoch 1 was the best): best weights tagged with epoch 2 cannot be the run's best and
/// are refused before anything is scored, and so is a missing file; untagged best weights
/// (an older cpflow's) are scored as they were.
#[test]
fn best_weights_of_another_epoch_are_refused() {
    let dir = scratch("refused");
    let data = fake_data();
    let cfg = tiny_run_config(PosteriorKind::Gaussian, 2, 0);
    let full = dir.join("full");
    run_vae_on(&cfg, &data, &full, &VaeRunOptions::default()).unwrap();
    let dev = candle_core::Device::Cpu;
    let (mut meta, tensors) = load_vae_checkpoint(&full.join(CKPT), &dev).unwrap();
    let state = meta.state.as_mut().unwrap();
    assert_eq!(state.best_val.map(|b| b.1), Some(2));
    state.best_val = Some((state.val_curve[0].1, 1));
    save_vae_checkpoint(&full.join(CKPT), &meta, tensors.into_iter().collect()).unwrap();
    std::fs::remove_file(full.join("report.json")).unwrap();

    let err = run_vae_on(&cfg, &data, &full, &resume()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CpflowError::Checkpoint(_)), "{err:?}");
    assert!(
        msg.contains(
            "holds the weights of epoch 2, but the run's best validation −ELBO is epoch 1's"
        ) && msg.contains("not computed"),
        "{msg}"
    );
    assert!(!full.join("report.json").exists());

    // Untagged (the same weights as an older cpflow wrote them): scored, as before.
    let best = full.join(BEST_FILE);
    let (best_meta, best_tensors) = load_vae_checkpoint(&best, &dev).unwrap();
    save_vae_checkpoint(&best, &best_meta, best_tensors.into_iter().collect()).unwrap();
    assert_eq!(best_weights_epoch(&best).unwrap(), None);
    let r = run_vae_on(&cfg, &data, &full, &resume()).unwrap();
    assert_eq!(r.best_epoch, 1);

    std::fs::remove_file(&best).unwrap();
    let msg = run_vae_on(&cfg, &data, &full, &resume())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("best.safetensors is missing: the run's best weights (epoch 1"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What `cpflow eval` and `sample` check before reading a run's best weights: epoch 1's best
/// weights beside epoch 2's checkpoint (a kill after the checkpoint, before the best weights;
/// not resumed) are refused with the resume command, while the finished run's, an untagged
/// file and best weights without a checkpoint beside them pass.
#[test]
fn eval_and_sample_refuse_best_weights_behind_the_checkpoint() {
    let dir = scratch("check");
    let data = fake_data();
    let (one_cfg, cfg) = (
        tiny_run_config(PosteriorKind::Gaussian, 1, 4),
        tiny_run_config(PosteriorKind::Gaussian, 2, 4),
    );
    let (one, full) = (dir.join("one"), dir.join("full"));
    run_vae_on(&one_cfg, &data, &one, &VaeRunOptions::default()).unwrap();
    let r2 = run_vae_on(&cfg, &data, &full, &VaeRunOptions::default()).unwrap();
    assert_eq!(r2.best_epoch, 2, "{:?}", r2.val_curve);
    check_best_weights_against_checkpoint(&full.join(BEST_FILE)).unwrap();
    check_best_weights_against_checkpoint(&one.join(BEST_FILE)).unwrap();

    let behind = dir.join("behind");
    assemble(&behind, &[(&full, CKPT), (&full, LOG), (&one, BEST_FILE)]);
    let err = check_best_weights_against_checkpoint(&behind.join(BEST_FILE)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CpflowError::Checkpoint(_)), "{err:?}");
    assert!(
        msg.contains(
            "holds the weights of epoch 1, but the run's best validation −ELBO is epoch 2's"
        ) && msg.contains("--resume"),
        "{msg}"
    );
    // Untagged (an older cpflow's file): passes, as before.
    let best = behind.join(BEST_FILE);
    let (m, t) = load_vae_checkpoint(&best, &candle_core::Device::Cpu).unwrap();
    save_vae_checkpoint(&best, &m, t.into_iter().collect()).unwrap();
    check_best_weights_against_checkpoint(&best).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
