//! The image trainer's warning when CG of the surrogate gradient stopped above its tolerance
//! (or broke down): the flow trainer's [`CgTally`] and [`Unconverged::text`] in the image
//! run's [`CgWarningContext`]; the tally's window gives the metrics lines' converged
//! fraction. Given the first time a step of the call leaves systems
//! unconverged, then at most once per logging point (`train.log_every`, SLQ and validation
//! steps, the end, an interrupt) with what happened since. The run's totals (the report's
//! `cg_unconverged_steps`) are kept in the checkpointed state, not here.

use candle_core::DType;

use crate::block::CgReport;
use crate::config::SurrogateParams;
use crate::image::flow::ImageFlow;
use crate::train::cg_tally::{CgTally, CgWarningContext, Unconverged};

/// The call's tally and what its warnings name: the CG settings (`train.surrogate`) and the
/// cap that applies without `cg_max_iters` (each block's input dimension).
pub(super) struct CgWarnings<'a> {
    tally: CgTally,
    params: &'a SurrogateParams,
    /// The cap without `cg_max_iters` and where it comes from ([`default_cap`]).
    default_cap: (usize, String),
    /// The flow's float type, in which CG runs.
    dtype: DType,
}

impl<'a> CgWarnings<'a> {
    /// Warnings of a call training `flow` with the CG settings `params`.
    pub fn new(params: &'a SurrogateParams, flow: &ImageFlow) -> Self {
        let dims: Vec<usize> = flow.blocks().map(|b| b.dim()).collect();
        CgWarnings {
            tally: CgTally::default(),
            params,
            default_cap: default_cap(&dims, flow.dim()),
            dtype: flow.dtype(),
        }
    }

    /// Records the CG report of (1-based) iteration `step`; warns if it is the call's first
    /// with unconverged systems.
    pub fn record(&mut self, step: usize, cg: &CgReport) {
        if let Some(u) = self.tally.record(step, cg) {
            self.warn(&u);
        }
    }

    /// At a logging point: warns of the unconverged steps since the last warning, if any.
    pub fn flush(&mut self) {
        if let Some(u) = self.tally.flush() {
            self.warn(&u);
        }
    }

    /// At a metrics line: the fraction of the CG systems that converged in the steps since
    /// the previous line (`None` without systems), as the flow's `cg_converged`.
    pub fn take_window(&mut self) -> Option<f64> {
        self.tally.take_window()
    }

    fn warn(&self, u: &Unconverged) {
        u.warn(
            self.params,
            &context((self.default_cap.0, &self.default_cap.1), self.dtype),
        );
    }
}

/// The image trainer's context: settings under `train.surrogate`, the cap `default_cap`
/// without `cg_max_iters`, the flow's float type `dtype`, later warnings at logging points.
/// The image flow's potentials are the built-in convolutional ICNNs, convex by
/// construction: no advice on custom ones.
fn context(default_cap: (usize, &str), dtype: DType) -> CgWarningContext<'_> {
    CgWarningContext {
        subject: "the surrogate gradient",
        jacobian_of: "the block's",
        breakdown_advice: None,
        table: "train.surrogate",
        default_cap,
        period: "log period (train.log_every)",
        dtype,
    }
}

/// Without `cg_max_iters`, each block's CG stops at the dimension of its input (`dims`, in
/// the flow's order; `image_dim` when there are none): the image's `C·H·W`, less after a
/// factor-out. The largest is the cap named; the source says when others are smaller.
fn default_cap(dims: &[usize], image_dim: usize) -> (usize, String) {
    let max = dims.iter().copied().max().unwrap_or(image_dim);
    let min = dims.iter().copied().min().unwrap_or(image_dim);
    if min == max {
        (max, "a block's input dimension".into())
    } else {
        (
            max,
            format!("a block's input dimension, from {min} after a factor-out to {max}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unconverged(first: bool) -> Unconverged {
        Unconverged {
            steps: 1,
            first_step: 3,
            last_step: 3,
            unconverged: 2,
            systems: 8,
            broken: 0,
            first,
        }
    }

    /// The image warnings to the byte: at the cap `cg_max_iters` sets (the call's first), at
    /// the blocks' dimensions (a later one, with and without factor-outs), and a breakdown.
    #[test]
    fn the_image_messages_are_pinned() {
        let capped = SurrogateParams {
            cg_max_iters: Some(1),
            cg_atol: 1e-12,
            cg_rtol: 0.0,
            ..crate::image::train::reference_image_surrogate()
        };
        let (d, src) = default_cap(&[784, 784], 784);
        assert_eq!(
            unconverged(true).text(&capped, &context((d, &src), DType::F64)),
            "CG of the surrogate gradient left 2 of 8 systems unconverged at step 3: it \
             stopped after train.surrogate.cg_max_iters = 1 iterations above the tolerance \
             (train.surrogate.cg_atol = 1e-12, cg_rtol = 0). Their gradient is approximate; \
             training goes on. Raise train.surrogate.cg_max_iters or the tolerances. Later \
             such steps are reported at most once per log period (train.log_every)"
        );
        let reference = crate::image::train::reference_image_surrogate();
        assert_eq!(
            unconverged(false).text(&reference, &context((d, &src), DType::F64)),
            "CG of the surrogate gradient left 2 of 8 systems unconverged at step 3: it \
             stopped after 784 iterations (train.surrogate.cg_max_iters unset: a block's \
             input dimension) above the tolerance (train.surrogate.cg_atol = 0.001, cg_rtol \
             = 0.001). Their gradient is approximate; training goes on. Raise \
             train.surrogate.cg_max_iters or the tolerances"
        );
        let (d, src) = default_cap(&[3072, 3072, 1536, 768], 3072);
        assert!(
            unconverged(false)
                .text(&reference, &context((d, &src), DType::F64))
                .contains(
                    "3072 iterations (train.surrogate.cg_max_iters unset: a block's input \
                     dimension, from 768 after a factor-out to 3072)"
                )
        );
        let broken = Unconverged {
            broken: 2,
            ..unconverged(true)
        };
        assert_eq!(
            broken.text(
                &capped,
                &context((784, "a block's input dimension"), DType::F64)
            ),
            "CG of the surrogate gradient broke down on 2 of 8 systems at step 3 \
             (non-positive or non-finite curvature pᵀHp): the block's Jacobian is not \
             positive definite there, or its Hessian-vector products are not finite; NaN \
             weights stop training at the next non-finite loss. Later such steps are \
             reported at most once per log period (train.log_every)"
        );
    }

    /// A flow without CP-Flow blocks (a baseline) solves no systems: the image's dimension
    /// stands in, never shown.
    #[test]
    fn without_blocks_the_cap_is_the_image_dimension() {
        assert_eq!(default_cap(&[], 12).0, 12);
    }
}
