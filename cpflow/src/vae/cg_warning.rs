//! The VAE trainer's warning when the CP-Flow posterior's CG stopped above its tolerance: given
//! the first time a step of the call leaves systems unconverged, then at most once per epoch
//! (at its end) with what happened since. The whole run's totals are kept in the checkpointed
//! [`super::VaeTrainState::step_stats`]; this tally is the call's, for the log only.

use crate::block::CgReport;
use crate::config::SurrogateParams;

/// Unconverged steps of a training call not warned about yet.
#[derive(Clone, Debug, Default)]
pub(super) struct CgWarnings {
    /// Whether the call's first warning was given.
    warned: bool,
    /// Unconverged steps since the last warning.
    pending: Option<Unconverged>,
}

/// Steps (1-based, as the run counts them) that left CG systems unconverged.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Unconverged {
    /// Number of such steps, the first and last of them.
    pub steps: usize,
    pub first_step: usize,
    pub last_step: usize,
    /// Unconverged systems, all systems of those steps, and the unconverged systems whose CG
    /// broke down (non-positive or non-finite curvature) rather than stopped at the cap.
    pub unconverged: usize,
    pub systems: usize,
    pub broken: usize,
    /// Whether this is the call's first warning.
    pub first: bool,
}

impl CgWarnings {
    /// Adds the CG report of step `step`; returns the warning to give now (the call's first
    /// step with unconverged systems); later ones wait for [`CgWarnings::flush`].
    pub fn record(&mut self, step: usize, cg: &CgReport) -> Option<Unconverged> {
        let systems = cg.iterations.len();
        let converged = cg.converged.min(systems);
        if converged == systems {
            return None;
        }
        let unconverged = systems - converged;
        let p = self.pending.get_or_insert(Unconverged {
            steps: 0,
            first_step: step,
            last_step: step,
            unconverged: 0,
            systems: 0,
            broken: 0,
            first: !self.warned,
        });
        p.steps += 1;
        p.last_step = step;
        p.unconverged += unconverged;
        p.systems += systems;
        p.broken += cg.breakdown.min(unconverged);
        if self.warned {
            None
        } else {
            self.warned = true;
            self.pending.take()
        }
    }

    /// At an epoch's end (or a pause): the unconverged steps since the last warning, if any.
    pub fn flush(&mut self) -> Option<Unconverged> {
        self.pending.take()
    }
}

/// `v` as a configuration writes it: plain for 0 and moderate magnitudes, else `1e-12`.
fn number(v: f64) -> String {
    if v == 0.0 || (1e-3..1e4).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

impl Unconverged {
    /// The warning's text: what happened, with the VAE's settings (`train.cg`), and what to
    /// raise. `latent_dim` is the cap when `cg_max_iters` is unset.
    pub fn message(&self, params: &SurrogateParams, latent_dim: usize) -> String {
        let what = if self.steps == 1 {
            format!("at step {}", self.first_step)
        } else {
            format!(
                "in {} steps ({} to {})",
                self.steps, self.first_step, self.last_step
            )
        };
        let later = if self.first {
            ". Later such steps are reported at most once per epoch"
        } else {
            ""
        };
        if self.broken > 0 {
            return format!(
                "CG of the CP-Flow posterior's surrogate gradient broke down on {} of {} \
                 systems {what} (non-positive or non-finite curvature pᵀHp): the posterior's \
                 Jacobian is not positive definite there, or its Hessian-vector products are \
                 not finite; NaN weights stop training at the next non-finite loss{later}",
                self.broken, self.systems
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
            self.unconverged,
            self.systems,
            number(params.cg_atol),
            number(params.cg_rtol)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut w = CgWarnings::default();
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
            first.message(&params, 64),
            "CG of the CP-Flow posterior's surrogate gradient left 3 of 4 systems unconverged \
             at step 2: it stopped after train.cg.cg_max_iters = 1 iterations above the \
             tolerance (train.cg.cg_atol = 1e-12, cg_rtol = 1e-12). Their gradient is \
             approximate; training goes on. Raise train.cg.cg_max_iters or the tolerances. \
             Later such steps are reported at most once per epoch"
        );
        let text = later.message(&SurrogateParams::default(), 64);
        assert!(
            text.contains("in 2 steps (3 to 5)")
                && text.contains("64 iterations (train.cg.cg_max_iters unset")
                && text.ends_with("or the tolerances"),
            "{text}"
        );
    }
}
