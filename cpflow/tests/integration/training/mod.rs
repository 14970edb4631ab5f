//! Training-level checks (`cpflow::Trainer`), one concept per submodule: the estimates
//! training relies on are right (`estimates`), resume is exact (`resume`), non-finite values
//! and data that do not fit stop or refuse a run with a clear error (`refusals`), early
//! stopping restores the best weights (`early_stopping`), and unconverged CG is counted and
//! warned about (`cg_warnings`). This file holds the small training configuration they share.

use cpflow::{LrSchedule, NllEstimator, TrainConfig};

mod cg_warnings;
mod early_stopping;
mod estimates;
mod refusals;
mod resume;

fn small_train_config(iters: usize) -> TrainConfig {
    TrainConfig {
        batch_size: 16,
        max_iterations: iters,
        lr_schedule: LrSchedule::Step {
            step_size: 5,
            gamma: 0.7,
        },
        val_every: 4,
        val_estimator: NllEstimator::Exact,
        early_stopping: None,
        train_slq_every: 3,
        log_every: 2,
        clip_grad_norm: Some(50.0),
        seed: 5,
        ..TrainConfig::default()
    }
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}
