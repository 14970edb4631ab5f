//! The VAE resumed after a kill (its epoch log cut back to the checkpoint, also one paused
//! within an epoch) and interrupted once training has ended (the test evaluation stops, a
//! resume of the finished run evaluates it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::tests::{epoch_records, fake_data, tiny_run_config};
use super::*;

fn options(resume: bool, interrupt: bool) -> VaeRunOptions {
    VaeRunOptions {
        resume,
        interrupt: interrupt.then(|| Arc::new(AtomicBool::new(true))),
        ..Default::default()
    }
}

/// Kills simulated by putting back an older checkpoint after the run finished its 4 epochs:
/// one of the end of epoch 1, and one paused within epoch 2 (after its first step). Each
/// resume cuts the log back to the epochs that checkpoint holds before it appends: the log
/// equals the uninterrupted run's, not 1–4 followed by 2–4 again.
#[test]
fn a_resume_after_a_kill_cuts_the_epoch_log_back_to_the_checkpoint() {
    let dir = std::env::temp_dir().join(format!("cpflow-vae-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (data, cfg) = (fake_data(), tiny_run_config(PosteriorKind::Gaussian, 4, 0));
    let (full, run) = (dir.join("full"), dir.join("killed"));
    run_vae_on(&cfg, &data, &full, &options(false, false)).unwrap();
    let ck = run.join("checkpoint.safetensors");
    // An epoch is 3 steps (24 images, batches of 8): paused after steps 1, 2, 3 (the end of
    // epoch 1) and 4 (within epoch 2).
    let mut kept = Vec::new();
    for k in 0..4 {
        let err = run_vae_on(&cfg, &data, &run, &options(k > 0, true)).unwrap_err();
        assert!(
            matches!(err, crate::CpflowError::Interrupted { .. }),
            "{err}"
        );
        if k >= 2 {
            let copy = run.join(format!("ck-{k}.safetensors"));
            std::fs::copy(&ck, &copy).unwrap();
            kept.push(copy);
        }
    }
    let (meta, _) = load_vae_checkpoint(&kept[1], &candle_core::Device::Cpu).unwrap();
    let state = meta.state.unwrap();
    assert_eq!(
        (state.epoch, state.partial_epoch.map(|p| p.sums.batches)),
        (1, Some(1))
    );
    for older in &kept {
        run_vae_on(&cfg, &data, &run, &options(true, false)).unwrap();
        assert_eq!(epoch_records(&run).len(), 4);
        std::fs::copy(older, &ck).unwrap();
        run_vae_on(&cfg, &data, &run, &options(true, false)).unwrap();
        assert_eq!(epoch_records(&run), epoch_records(&full));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An interrupt once training has ended (a resume of the finished run with the flag set)
/// stops before the test evaluation: the error names the saved files, no report is written,
/// and the run says training ended. A resume without it evaluates the run again: the same
/// numbers as the first evaluation, the log unchanged.
#[test]
fn an_interrupt_after_training_stops_the_evaluation_and_a_resume_redoes_it() {
    let dir = std::env::temp_dir().join(format!("cpflow-vae-eval-int-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (data, cfg) = (fake_data(), tiny_run_config(PosteriorKind::Gaussian, 2, 10));
    let first = run_vae_on(&cfg, &data, &dir, &options(false, false)).unwrap();
    let report = dir.join("report.json");
    std::fs::remove_file(&report).unwrap();
    let ended = Arc::new(AtomicBool::new(false));
    let interrupted = VaeRunOptions {
        training_ended: Some(ended.clone()),
        ..options(true, true)
    };
    match run_vae_on(&cfg, &data, &dir, &interrupted) {
        Err(crate::CpflowError::EvaluationInterrupted { skipped, saved }) => {
            assert!(skipped.contains("test −ELBO"), "{skipped}");
            let files = ["best.safetensors", "checkpoint.safetensors"];
            assert_eq!(saved, files.map(|f| dir.join(f)).to_vec());
        }
        other => panic!("expected an interrupt of the evaluation, got {other:?}"),
    }
    assert!(ended.load(Ordering::Relaxed) && !report.exists());
    let again = run_vae_on(&cfg, &data, &dir, &options(true, false)).unwrap();
    assert!(report.exists());
    assert_eq!(again.test_neg_elbo, first.test_neg_elbo);
    assert_eq!(again.test_is_nll, first.test_is_nll);
    assert_eq!((again.epochs, epoch_records(&dir).len()), (2, 2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A resume refuses a checkpoint holding a tensor the model does not have (found by the s12
/// fuzz audit: the VAE trainer's resume set the weights it knew and ignored the rest), naming
/// the file and the tensor. The checkpoint is rewritten by the writer itself, so its digests
/// are valid and only the tensor table is wrong.
#[test]
fn a_resume_refuses_a_checkpoint_with_an_extra_tensor() {
    let dir = std::env::temp_dir().join(format!("cpflow-vae-extra-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (data, cfg) = (fake_data(), tiny_run_config(PosteriorKind::Gaussian, 1, 0));
    run_vae_on(&cfg, &data, &dir, &options(false, false)).unwrap();
    let ck = dir.join("checkpoint.safetensors");
    let (meta, tensors) = load_vae_checkpoint(&ck, &candle_core::Device::Cpu).unwrap();
    let mut tensors: Vec<(String, candle_core::Tensor)> = tensors.into_iter().collect();
    let one = candle_core::Tensor::new(&[1.0f64], &candle_core::Device::Cpu).unwrap();
    tensors.push(("model.decoder.bogus".into(), one));
    save_vae_checkpoint(&ck, &meta, tensors).unwrap();
    let err = run_vae_on(&cfg, &data, &dir, &options(true, false)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&ck.display().to_string()) && msg.contains("model.decoder.bogus"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
