//! An image run's metrics line counts CG convergence over every step since the previous
//! line, as the flow trainer's `cg_converged` does (it was the fraction of the line's own
//! step only).

use candle_core::Device;

use super::super::{ImageMetricsRecord, ImageRunOptions, ImageTrainConfig, run_image_training};
use super::tests_stats::{config, setup, temp_dir};
use crate::config::SurrogateParams;

/// The converged fractions of the lines of a 4-step run logging every `log_every` steps,
/// with CG capped at `cg_max_iters` iterations of tolerance `cg_atol`.
fn fractions(name: &str, log_every: usize, cg_max_iters: usize, cg_atol: f64) -> Vec<f64> {
    let dir = temp_dir(name);
    let (flow, data) = setup();
    let cfg = ImageTrainConfig {
        log_every,
        surrogate: SurrogateParams {
            cg_atol,
            cg_rtol: 0.0,
            cg_max_iters: Some(cg_max_iters),
            ..Default::default()
        },
        ..config(4)
    };
    let opts = ImageRunOptions {
        out_dir: Some(dir.clone()),
        ..Default::default()
    };
    run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts).unwrap();
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<ImageMetricsRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    std::fs::remove_dir_all(&dir).ok();
    lines.iter().map(|r| r.cg_converged_fraction).collect()
}

/// CG capped at one iteration with `cg_atol` near 5e-3: some steps meet it, others not (on
/// this machine at 5e-3, per step, one line each: 1, 0, 1, 1/2 of the 2 systems of a step).
/// The tolerance is the first of a few around 5e-3 at which the steps of a window differ
/// (else old and new agree), so that another CPU's rounding moves the setting, not the
/// test's power. Logged every 2 steps, each line has the fraction of the 4 systems of its 2
/// steps, the mean of their per-step fractions (every step solves as many systems: 2 images
/// of 8, one block): at 5e-3 here 1/2 and 3/4. The old code wrote the last step's alone: 0
/// and 1/2.
#[test]
fn the_converged_fraction_covers_the_steps_since_the_previous_line() {
    let mixed = [5e-3, 4.5e-3, 5.5e-3, 4e-3, 6e-3]
        .into_iter()
        .find_map(|atol| {
            let per_step = fractions("cg-window-1", 1, 1, atol);
            assert_eq!(per_step.len(), 4);
            (per_step[0] != per_step[1] || per_step[2] != per_step[3]).then_some((atol, per_step))
        });
    let Some((atol, per_step)) = mixed else {
        panic!("no tolerance near 5e-3 gives a window of steps that differ");
    };
    let windows = fractions("cg-window-2", 2, 1, atol);
    let want = [
        (per_step[0] + per_step[1]) / 2.0,
        (per_step[2] + per_step[3]) / 2.0,
    ];
    // Counts of 4 systems over 4: exact in binary, as are the halves of per-step fractions.
    assert_eq!(windows, want, "cg_atol {atol}, per step {per_step:?}");
}
