//! What a run whose loss or gradient became non-finite says to do. A resume repeats the same
//! steps with the same settings, so the run is started again (`--overwrite`) with steps that
//! are smaller or bounded; which settings do that, and the flag or key that sets each,
//! depend on the kind of run (a flow on vectors, an image flow, the VAE).

use crate::CpflowError;

/// The advice for a flow on vectors (`cpflow train` on tabular data, a toy or a file).
pub const VECTOR_REMEDIES: &str = "a lower learning rate (`--lr`, train.adam.lr), with gradient \
     clipping (`--set train.clip_grad_norm=1`), or on standardised data";

/// The advice for an image flow (`cpflow train` with an image configuration): its learning
/// rate `lr` (`--lr`, `train.adam.lr`), its warm-up of `warmup` steps and its gradient clip
/// (`None`: none), as configured.
pub fn image_remedies(lr: f64, warmup: usize, clip: Option<f64>) -> String {
    let clip = match clip {
        Some(c) => {
            format!("a tighter gradient clip (`--set train.clip_grad_norm=<smaller>`, now {c})")
        }
        None => "gradient clipping (`--set train.clip_grad_norm=1`)".into(),
    };
    format!(
        "a lower learning rate (`--lr`, train.adam.lr, now {lr:e}), a longer learning-rate \
         warm-up (`--set train.warmup_iterations=<steps>`, now {warmup}) or {clip}"
    )
}

/// The advice for the VAE (`cpflow vae`), whose Adamax has the learning rate `lr`
/// (`train.optimizer.lr`; the command has no `--lr` flag) and no gradient clipping.
pub fn vae_remedies(lr: f64) -> String {
    format!(
        "a lower learning rate (`--set train.optimizer.lr=<smaller>`, now {lr:e}; the VAE's \
         Adamax does not clip its gradients)"
    )
}

/// `e` as an error for the command line: a non-finite loss or gradient
/// ([`CpflowError::NonFinite`]) with what to do (`remedies`, in words: one of
/// [`VECTOR_REMEDIES`], [`image_remedies`], [`vae_remedies`]); any other error as it is.
pub fn with_divergence_hint(e: CpflowError, remedies: &str) -> anyhow::Error {
    match e {
        e @ CpflowError::NonFinite { .. } => anyhow::anyhow!(
            "{e}. The steps diverged: start the run again (`--overwrite`) with {remedies}"
        ),
        e => e.into(),
    }
}

/// [`with_divergence_hint`] on the error of `result`, leaving every other error a
/// [`CpflowError`] (for [`crate::cli::interrupt::Interrupt::with_resume_hint`], which adds
/// the command that continues an interrupted run): `Err(Ok(e))` is such an error,
/// `Err(Err(e))` the divergence with its advice.
pub fn split_divergence<T>(
    result: crate::Result<T>,
    remedies: impl FnOnce() -> String,
) -> Result<crate::Result<T>, anyhow::Error> {
    match result {
        Err(e @ CpflowError::NonFinite { .. }) => Err(with_divergence_hint(e, &remedies())),
        r => Ok(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn non_finite() -> CpflowError {
        CpflowError::NonFinite {
            what: "loss (NaN)".into(),
            step: 2,
            checkpoint: None,
        }
    }

    /// Each kind names its own keys and the current values; other errors pass unchanged.
    #[test]
    fn each_kind_of_run_names_its_own_settings() {
        let image = with_divergence_hint(non_finite(), &image_remedies(1e-3, 0, Some(1.0)));
        let image = image.to_string();
        assert!(
            image.starts_with("non-finite loss (NaN) at training step 2")
                && image.contains("--overwrite")
                && image.contains("`--lr`, train.adam.lr, now 1e-3")
                && image.contains("train.warmup_iterations")
                && image.contains("train.clip_grad_norm=<smaller>`, now 1)"),
            "{image}"
        );
        let unclipped = image_remedies(1e-3, 0, None);
        assert!(
            unclipped.contains("`--set train.clip_grad_norm=1`"),
            "{unclipped}"
        );
        let vae = with_divergence_hint(non_finite(), &vae_remedies(5e-4)).to_string();
        assert!(
            vae.contains("train.optimizer.lr=<smaller>`, now 5e-4") && !vae.contains("--lr"),
            "{vae}"
        );
        let other = with_divergence_hint(CpflowError::InvalidInput("x".into()), VECTOR_REMEDIES);
        assert!(!other.to_string().contains("diverged"), "{other}");
        let kept = split_divergence::<()>(Err(CpflowError::InvalidInput("x".into())), || {
            unreachable!("only a divergence asks for the advice")
        });
        assert!(matches!(kept, Ok(Err(CpflowError::InvalidInput(_)))));
    }
}
