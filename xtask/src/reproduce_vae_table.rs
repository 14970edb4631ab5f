//! The Table 3 section of `report.md`: the VAE rows of [`crate::reproduce_vae`] next to the
//! paper's −ELBO, with how each run's setup differs from the paper's.

use std::fmt::Write as _;

use cpflow::vae::{MeanWithError, VaeConfig};

use crate::reproduce_vae::{VAE_GRID, VaePartReport};

fn mean_se(m: &MeanWithError, digits: usize) -> String {
    if m.std_err.is_finite() {
        format!("{:.digits$} ± {:.digits$}", m.mean, m.std_err)
    } else {
        format!("{:.digits$}", m.mean)
    }
}

/// How a run's setup differs from the paper's (`train_vae.py`: base width 32, z = 64,
/// 4 × PICNN(64, 5), up to 2,000 epochs with early stopping).
fn setup_sentence(c: &VaeConfig) -> String {
    let m = &c.model;
    let a = &m.architecture;
    let budget = c
        .train
        .max_minutes
        .map_or_else(String::new, |b| format!(" and {b} min"));
    format!(
        "base width {} (paper 32), encoder feature {} (paper 256), z = {} (paper 64), CP-Flow \
         {} × PICNN({}, {}) (paper 4 × PICNN(64, 5)), encoder/decoder in {} (paper f64); at \
         most {} epochs{budget} per run (paper: up to 2,000, early stopping after 100); \
         importance sampling with K = {}",
        a.channels,
        a.feature_dim,
        m.latent_dim,
        m.blocks,
        m.width,
        m.depth,
        crate::tabular_config::float_name(m.network_float),
        c.train.epochs,
        c.eval.is_samples,
    )
}

/// The "Table 3" section of `report.md`.
pub fn vae_table_markdown(part: &VaePartReport) -> String {
    let mut s = String::from("## Table 3: VAE posteriors (negative ELBO)\n\n");
    s.push_str(
        "The Sylvester-flows VAE with a diagonal Gaussian posterior and with an amortised \
         CP-Flow posterior (PICNN conditioned on the encoder feature). Paper: the CP-Flow \
         posterior lowers the test −ELBO (single sample, exact log-det). Frey Faces in \
         bits/dim, the others in nats per image; lower is better. The paper's CP-Flow number \
         is its input-augmented row; MNIST is not in Table 3 (here it is dynamically \
         binarised). Samples: the decoder's pixel means for 64 latents from the prior, by \
         each run's best weights.\n\n",
    );
    if part.rows.is_empty() {
        s.push_str("No VAE dataset was run.\n");
    } else {
        s.push_str(
            "| dataset | posterior | train / val / test | −ELBO ± SE | IS NLL ± SE (K, images) | \
             epochs | s / epoch | paper −ELBO | samples |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &part.rows {
            let digits = if r.unit == "bits/dim" { 3 } else { 2 };
            let is = r.is_nll.map_or_else(
                || "-".to_string(),
                |m| {
                    format!(
                        "{} (K = {}, {} images)",
                        mean_se(&m, digits),
                        r.is_samples,
                        m.n
                    )
                },
            );
            let stop = serde_json::to_value(r.stop_reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "| [{}]({}/report.json) | {} | {} / {} / {} | {} {} | {is} | {} ({stop}) | {:.1} | {} | [{VAE_GRID}×{VAE_GRID}]({}/samples.png) |",
                r.dataset,
                r.dir,
                r.posterior,
                r.split_sizes[0],
                r.split_sizes[1],
                r.split_sizes[2],
                mean_se(&r.neg_elbo, digits),
                r.unit,
                r.epochs,
                r.seconds_per_epoch,
                r.paper_neg_elbo
                    .map_or_else(|| "-".to_string(), |p| format!("{p:.2}")),
                r.dir,
            );
        }
        let mut setups: Vec<(&str, String)> = Vec::new();
        for r in &part.rows {
            let t = setup_sentence(&r.config);
            if !setups.iter().any(|(_, x)| *x == t) {
                setups.push((&r.dataset, t));
            }
        }
        s.push_str("\nDifferences from the paper's setup: ");
        if let [(_, only)] = setups.as_slice() {
            let _ = writeln!(s, "{only}.");
        } else {
            s.push_str("\n\n");
            for (dataset, t) in setups {
                let _ = writeln!(s, "- {dataset}: {t}.");
            }
        }
    }
    if !part.skipped.is_empty() {
        s.push_str("\nSkipped:\n\n");
        for k in &part.skipped {
            let _ = writeln!(s, "- {}", k.message);
        }
    }
    s
}
