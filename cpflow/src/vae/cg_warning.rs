//! The VAE trainer's warning when the CP-Flow posterior's CG stopped above its tolerance: given
//! the first time a step of the call leaves systems unconverged, then at most once per epoch
//! (at its end) with what happened since. The whole run's totals are kept in the checkpointed
//! [`super::VaeTrainState::step_stats`]; the call's tally, for the log only, is the flow
//! trainer's [`CgTally`](crate::train::cg_tally::CgTally), and its text the flow trainer's
//! [`Unconverged::text`](crate::train::cg_tally::Unconverged::text) in this context.

use candle_core::DType;

use crate::train::cg_tally::CgWarningContext;

/// The VAE's settings (`train.cg`), the posterior of `latent_dim` dimensions (the cap when
/// `cg_max_iters` is unset) in `dtype` (`model.posterior_float`, where CG runs), later
/// warnings at the end of each epoch.
pub(super) fn context(latent_dim: usize, dtype: DType) -> CgWarningContext<'static> {
    CgWarningContext {
        subject: "the CP-Flow posterior's surrogate gradient",
        jacobian_of: "the posterior's",
        // The posterior's potentials are the built-in ICNNs, convex by construction.
        breakdown_advice: None,
        table: "train.cg",
        default_cap: (latent_dim, "model.latent_dim"),
        period: "epoch",
        dtype,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::CgReport;
    use crate::config::SurrogateParams;
    use crate::train::cg_tally::CgTally;

    fn report(systems: usize, converged: usize) -> CgReport {
        CgReport {
            iterations: vec![1; systems],
            converged,
            breakdown: 0,
        }
    }

    /// The first unconverged step warns at once; later ones wait for the epoch's end and are
    /// told together; converged steps never warn. The texts name the VAE's settings.
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
            first.text(&params, &context(64, DType::F64)),
            "CG of the CP-Flow posterior's surrogate gradient left 3 of 4 systems unconverged \
             at step 2: it stopped after train.cg.cg_max_iters = 1 iterations above the \
             tolerance (train.cg.cg_atol = 1e-12, cg_rtol = 1e-12). Their gradient is \
             approximate; training goes on. Raise train.cg.cg_max_iters or the tolerances. \
             Later such steps are reported at most once per epoch"
        );
        let text = later.text(&SurrogateParams::default(), &context(64, DType::F64));
        assert_eq!(
            text,
            "CG of the CP-Flow posterior's surrogate gradient left 3 of 8 systems unconverged \
             in 2 steps (3 to 5): it stopped after 64 iterations (train.cg.cg_max_iters unset: \
             model.latent_dim) above the tolerance (train.cg.cg_atol = 0.001, cg_rtol = 0). \
             Their gradient is approximate; training goes on. Raise train.cg.cg_max_iters or \
             the tolerances"
        );
        let broken = crate::train::cg_tally::Unconverged { broken: 1, ..first };
        assert_eq!(
            broken.text(&params, &context(64, DType::F64)),
            "CG of the CP-Flow posterior's surrogate gradient broke down on 1 of 4 systems at \
             step 2 (non-positive or non-finite curvature pᵀHp): the posterior's Jacobian is \
             not positive definite there, or its Hessian-vector products are not finite; NaN \
             weights stop training at the next non-finite loss. Later such steps are reported \
             at most once per epoch"
        );
    }
}
