//! The reference 8-Gaussians run (`docs/reference/cpflow-reference.md` §4.2;
//! `docs/reference/baseline-cpu.md`), measured:
//! prints our exact NLL curve on a fresh validation sample next to the reference's held-out
//! curve (the reference scored its test set along the way; both samples are 10,000 fresh
//! draws of the same density), the test NLL scored once at the end, the time per training step
//! and the mean CG iterations, as JSON on the last line.
//!
//! ```text
//! cargo build --release -p cpflow --example toy_reference
//! target/release/examples/toy_reference [iterations]
//! ```

use candle_core::Device;
use cpflow::{RunOptions, ToyExperimentConfig, run_toy_experiment};

/// The reference's held-out NLL curve (`docs/reference/baseline-cpu.md`).
const REFERENCE: [(usize, f64); 8] = [
    (500, 3.293),
    (1000, 3.147),
    (1500, 2.951),
    (2000, 2.886),
    (2500, 2.871),
    (3000, 2.879),
    (3500, 2.872),
    (3910, 2.866),
];

fn main() -> anyhow::Result<()> {
    let mut cfg = ToyExperimentConfig::reference_8gaussians();
    if let Some(n) = std::env::args().nth(1) {
        cfg.train.max_iterations = n.parse()?;
    }
    let (_flow, rep) = run_toy_experiment(&cfg, &Device::Cpu, RunOptions::default())?;
    let iters = rep.train.iterations.max(1) as f64;
    println!("| iteration | ours (validation) | reference (held-out) |");
    println!("|---|---|---|");
    for (it, nll) in &rep.val_nll_curve {
        let r = REFERENCE
            .iter()
            .find(|(i, _)| i == it)
            .map(|(_, v)| format!("{v:.3}"))
            .unwrap_or_else(|| "–".into());
        println!("| {it} | {nll:.4} | {r} |");
    }
    println!(
        "final test NLL {:.4}; data entropy (MC on the test set) {:?}; train {:.1} s ({:.4} s/step); wall {:.1} s; mean CG iterations {:.2}",
        rep.test_nll,
        rep.data_entropy,
        rep.train_time_s,
        rep.train_time_s / iters,
        rep.wall_time_s,
        rep.train.mean_cg_iterations
    );
    println!(
        "{}",
        serde_json::json!({
            "test_nll": rep.test_nll,
            "curve": rep.val_nll_curve,
            "data_entropy": rep.data_entropy,
            "train_time_s": rep.train_time_s,
            "s_per_step": rep.train_time_s / iters,
            "wall_time_s": rep.wall_time_s,
            "mean_cg_iterations": rep.train.mean_cg_iterations,
        })
    );
    Ok(())
}
