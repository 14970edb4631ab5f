//! The CP-Flow posterior's CG convergence in the report: whole-run totals kept across a
//! pause and resume, and counted from the resume for a checkpoint written before they were
//! kept.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::tests::{fake_data, tiny_run_config};
use super::*;

/// The tiny CP-Flow run with CG capped at one iteration and a tolerance it cannot meet: every
/// step leaves its systems unconverged (3 steps an epoch).
fn capped_config(epochs: usize) -> VaeConfig {
    let mut cfg = tiny_run_config(PosteriorKind::CpFlow, epochs, 0);
    cfg.train.cg.cg_max_iters = Some(1);
    (cfg.train.cg.cg_atol, cfg.train.cg.cg_rtol) = (1e-12, 1e-12);
    cfg
}

fn options(resume: bool, interrupt: bool) -> VaeRunOptions {
    VaeRunOptions {
        resume,
        interrupt: interrupt.then(|| Arc::new(AtomicBool::new(true))),
        ..Default::default()
    }
}

/// The CG fields of a report, the mean by its bits (a resumed run sums the same steps' means
/// in the same order).
fn cg_fields(r: &VaeReport) -> (usize, u64, Option<f64>, usize, Option<usize>) {
    (
        r.steps,
        r.mean_cg_iterations.to_bits(),
        r.cg_converged,
        r.cg_unconverged_steps,
        r.cg_stats_since_step,
    )
}

/// Every step of the capped run is counted unconverged, in the report of an uninterrupted
/// run and, equally, of one paused after its first step and resumed; a checkpoint without
/// the totals (an older one, its `step_stats` key removed) resumes counting from its step.
#[test]
fn cg_totals_cover_the_run_across_resumes() {
    let dir = std::env::temp_dir().join(format!("cpflow-vae-cg-stats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (data, cfg) = (fake_data(), capped_config(2));
    let whole = run_vae_on(&cfg, &data, &dir.join("whole"), &options(false, false)).unwrap();
    assert_eq!(
        (
            whole.steps,
            whole.cg_unconverged_steps,
            whole.cg_stats_since_step
        ),
        (6, 6, None)
    );
    assert_eq!(whole.cg_converged, Some(0.0));
    // One iteration per system at the cap.
    assert_eq!(whole.mean_cg_iterations, 1.0);

    let paused = dir.join("paused");
    assert!(run_vae_on(&cfg, &data, &paused, &options(false, true)).is_err());
    let resumed = run_vae_on(&cfg, &data, &paused, &options(true, false)).unwrap();
    assert_eq!(cg_fields(&resumed), cg_fields(&whole));

    // A run of one epoch whose checkpoint is rewritten as an older version wrote it.
    let old = dir.join("old");
    run_vae_on(&capped_config(1), &data, &old, &options(false, false)).unwrap();
    let ck = old.join("checkpoint.safetensors");
    let (meta, tensors) = load_vae_checkpoint(&ck, &candle_core::Device::Cpu).unwrap();
    let mut json = serde_json::to_value(&meta).unwrap();
    let state = json["state"].as_object_mut().unwrap();
    assert!(state.remove("step_stats").is_some());
    let meta: VaeCheckpointMeta = serde_json::from_value(json).unwrap();
    save_vae_checkpoint(&ck, &meta, tensors.into_iter().collect()).unwrap();
    let r = run_vae_on(&cfg, &data, &old, &options(true, false)).unwrap();
    assert_eq!(
        (r.steps, r.cg_unconverged_steps, r.cg_stats_since_step),
        (6, 3, Some(3))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
