//! The VAE trainer's warning when the CP-Flow posterior's CG stopped above its tolerance: given
//! the first time a step of the call leaves systems unconverged, then at most once per epoch
//! (at its end) with what happened since. The whole run's totals are kept in the checkpointed
//! [`super::VaeTrainState::step_stats`]; the call's tally, for the log only, is the flow
//! trainer's [`CgTally`](crate::train::cg_tally::CgTally), with the VAE's own message.

use crate::config::SurrogateParams;
use crate::train::cg_tally::{Unconverged, number};

/// The warning's text: what happened, with the VAE's settings (`train.cg`), and what to
/// raise. `latent_dim` is the cap when `cg_max_iters` is unset.
pub(super) fn message(u: &Unconverged, params: &SurrogateParams, latent_dim: usize) -> String {
    let what = if u.steps == 1 {
        format!("at step {}", u.first_step)
    } else {
        format!("in {} steps ({} to {})", u.steps, u.first_step, u.last_step)
    };
    let later = if u.first {
        ". Later such steps are reported at most once per epoch"
    } else {
        ""
    };
    if u.broken > 0 {
        return format!(
            "CG of the CP-Flow posterior's surrogate gradient broke down on {} of {} \
             systems {what} (non-positive or non-finite curvature pᵀHp): the posterior's \
             Jacobian is not positive definite there, or its Hessian-vector products are \
             not finite; NaN weights stop training at the next non-finite loss{later}",
            u.broken, u.systems
        );
    }
    let cap = match params.cg_max_iters {
        Some(m) => format!("train.cg.cg_max_iters = {m} iterations"),
        None => {
            format!("{latent_dim} iterations (train.cg.cg_max_iters unset: model.latent_dim)")
        }
    };
    format!(
        "CG of the CP-Flow posterior's surrogate gradient left {} of {} systems \
         unconverged {what}: it stopped after {cap} above the tolerance (train.cg.cg_atol \
         = {}, cg_rtol = {}). Their gradient is approximate; training goes on. Raise \
         train.cg.cg_max_iters or the tolerances{later}",
        u.unconverged,
        u.systems,
        number(params.cg_atol),
        number(params.cg_rtol)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::CgReport;
    use crate::train::cg_tally::CgTally;

    fn report(systems: usize, converged: usize) -> CgReport {
        CgReport {
            iterations: vec![1; systems],
            converged,
            breakdown: 0,
        }
    }

    /// The first unconverged step warns at once; later ones wait for the epoch's end and are
    /// told together; converged steps never warn.
    #[test]
    fn the_first_unconverged_step_warns_then_once_per_epoch() {
        let mut w = CgTally::default();
        assert_eq!(w.record(1, &report(4, 4)), None);
        let first = w.record(2, &report(4, 1)).unwrap();
        assert_eq!((first.steps, first.unconverged, first.first), (1, 3, true));
        assert_eq!(w.record(3, &report(4, 2)), None);
        assert_eq!(w.record(4, &report(4, 4)), None);
        assert_eq!(w.record(5, &report(4, 3)), None);
        let later = w.flush().unwrap();
        assert_eq!((later.steps, later.first_step, later.last_step), (2, 3, 5));
        assert_eq!(
            (later.unconverged, later.systems, later.first),
            (3, 8, false)
        );
        assert_eq!(w.flush(), None);
        let params = SurrogateParams {
            cg_max_iters: Some(1),
            cg_atol: 1e-12,
            cg_rtol: 1e-12,
            ..Default::default()
        };
        assert_eq!(
            message(&first, &params, 64),
            "CG of the CP-Flow posterior's surrogate gradient left 3 of 4 systems unconverged \
             at step 2: it stopped after train.cg.cg_max_iters = 1 iterations above the \
             tolerance (train.cg.cg_atol = 1e-12, cg_rtol = 1e-12). Their gradient is \
             approximate; training goes on. Raise train.cg.cg_max_iters or the tolerances. \
             Later such steps are reported at most once per epoch"
        );
        let text = message(&later, &SurrogateParams::default(), 64);
        assert!(
            text.contains("in 2 steps (3 to 5)")
                && text.contains("64 iterations (train.cg.cg_max_iters unset")
                && text.ends_with("or the tolerances"),
            "{text}"
        );
    }
}
