//! The reference 8-Gaussians run (minutes): `cargo test -p cpflow --release --test
//! integration -- --ignored --nocapture toy_reference`.
//!
//! Acceptance: held-out exact NLL within 0.05 nats of the reference's 2.866 at 3,910
//! iterations (`docs/reference/baseline-cpu.md`) and within 0.1 nats of the data entropy 2.825.

use candle_core::Device;
use cpflow::{RunOptions, ToyExperimentConfig, run_toy_experiment};

#[test]
#[ignore = "takes minutes: the full reference toy run"]
fn eight_gaussians_reference_run_matches_the_reference_nll() {
    let cfg = ToyExperimentConfig::reference_8gaussians();
    let (_flow, rep) = run_toy_experiment(&cfg, &Device::Cpu, RunOptions::default()).unwrap();
    println!("validation NLL curve: {:?}", rep.val_nll_curve);
    println!(
        "final test NLL {:.4}, data entropy (MC) {:?}, train {:.1} s, total {:.1} s, mean CG iterations {:.2}",
        rep.test_nll,
        rep.data_entropy,
        rep.train_time_s,
        rep.wall_time_s,
        rep.train.mean_cg_iterations
    );
    assert!(
        (rep.test_nll - 2.866).abs() < 0.05,
        "test NLL {} vs reference 2.866",
        rep.test_nll
    );
    assert!(
        (rep.test_nll - 2.825).abs() < 0.1,
        "test NLL {} vs entropy 2.825",
        rep.test_nll
    );
}
