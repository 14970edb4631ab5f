//! What `cpflow vae` prints when the run ends: the training summary and the test scores.

use std::path::Path;

use crate::cli::commands::cg_unconverged_clause;
use crate::vae::{PosteriorKind, VaeConfig, VaeReport};

/// Prints the run's summary line (with [`unconverged_clause`]), its test scores (nats, and
/// bits per dimension for the 256-way likelihood) and where its report is.
pub(super) fn print_summary(cfg: &VaeConfig, r: &VaeReport, out: &Path) {
    let unit = if r.test_neg_elbo_bpd.is_some() {
        " (bits/dim below)"
    } else {
        ""
    };
    println!(
        "{} posterior, {} parameters: {} epoch{} ({}), best validation −ELBO {} nats at epoch {}, {:.1} s/epoch{}",
        match cfg.model.posterior {
            PosteriorKind::Gaussian => "Gaussian",
            PosteriorKind::CpFlow => "CP-Flow",
        },
        r.num_parameters,
        r.epochs,
        if r.epochs == 1 { "" } else { "s" },
        r.stop_reason,
        super::super::score(r.best_val_neg_elbo, 3),
        r.best_epoch,
        r.seconds_per_epoch,
        unconverged_clause(r)
    );
    println!(
        "test −ELBO (exact log-det, 1 sample): {}{} nats{unit}",
        super::super::score(r.test_neg_elbo.mean, 3),
        super::super::plus_minus(r.test_neg_elbo.std_err, 3)
    );
    // `eval.is_images = 0` asks for no importance-sampling score: say so, not "NaN".
    let scored = |m: &Option<crate::vae::MeanWithError>| m.filter(|m| m.n > 0);
    if r.test_is_nll.is_some_and(|m| m.n == 0) {
        println!("test NLL by importance sampling: not computed (eval.is_images = 0)");
    }
    if let Some(m) = scored(&r.test_is_nll) {
        println!(
            "test NLL (importance sampling, K = {}, {} images): {}{} nats",
            r.is_samples,
            m.n,
            super::super::score(m.mean, 3),
            super::super::plus_minus(m.std_err, 3)
        );
    }
    if let (Some(e), is) = (r.test_neg_elbo_bpd, scored(&r.test_is_nll_bpd)) {
        print!(
            "in bits/dim: −ELBO {}{}",
            super::super::score(e.mean, 4),
            super::super::plus_minus(e.std_err, 4)
        );
        if let Some(m) = is {
            print!(
                ", IS-NLL {}{}",
                super::super::score(m.mean, 4),
                super::super::plus_minus(m.std_err, 4)
            );
        }
        println!();
    }
    println!("report: {}", out.join("report.json").display());
}

/// [`cg_unconverged_clause`] of the run's training steps, as `cpflow train` says it.
fn unconverged_clause(r: &VaeReport) -> String {
    cg_unconverged_clause(
        r.cg_unconverged_steps,
        r.steps,
        r.cg_stats_since_step,
        "step",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary's CG clause: nothing when every step converged; the unconverged steps of
    /// those counted (since the resume of an older checkpoint, when it says so).
    #[test]
    fn the_summary_says_when_cg_left_steps_unconverged() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/vae-frey-cpu.toml"),
        )
        .unwrap();
        let mut r: VaeReport = serde_json::from_value(serde_json::json!({
            "config": toml::from_str::<VaeConfig>(&text).unwrap(),
            "num_parameters": 1, "split_sizes": [1, 1, 1], "epochs": 2, "steps": 32,
            "stop_reason": "max-epochs", "best_epoch": 2, "best_val_neg_elbo": 1.0,
            "seconds_per_epoch": 1.0, "test_neg_elbo": {"mean": 1.0, "std_err": 0.0, "n": 1},
            "test_is_nll": null, "test_is_mc_std_err": null, "is_samples": 0,
            "test_neg_elbo_bpd": null, "test_is_nll_bpd": null, "val_curve": [],
        }))
        .unwrap();
        assert_eq!(unconverged_clause(&r), "");
        r.cg_unconverged_steps = 32;
        assert_eq!(unconverged_clause(&r), "; CG unconverged in 32 of 32 steps");
        (r.cg_unconverged_steps, r.cg_stats_since_step) = (12, Some(16));
        assert_eq!(
            unconverged_clause(&r),
            "; CG unconverged in 12 of 16 steps since step 16"
        );
    }
}
