//! The detached CG solves of the surrogate training step (`CpFlowBlock::forward_with_surrogate`):
//! `(a₁ H + a₀ I) u = v` from `u₀ = v` (the reference's start), on any Hessian-vector product
//! or on the host kernels with the forward tangents of `u` followed through CG.

use candle_core::Tensor;
use krylov::{
    CgParams, CgResult, FnOperator, KrylovError, Preconditioner, WithPreconditioner,
    cg_with_initial_guess, cg_with_initial_guess_observed,
};
use std::cell::RefCell;

use crate::block::CgReport;
use crate::config::SurrogateParams;
use crate::error::{CpflowError, Result};

/// krylov's parameters of the surrogate's solves, after [`SurrogateParams::validate`] (the
/// configurations check them first and name their keys; this catches the direct API uses,
/// e.g. `Flow::surrogate_loss`, which would otherwise run CG with `cg_max_iters = Some(0)`).
/// `precond`: whether the solve has an `M⁻¹` ([`preconditioned`]).
fn cg_params(params: &SurrogateParams, d: usize, precond: bool) -> Result<CgParams> {
    params.validate("surrogate")?;
    Ok(CgParams::default()
        .with_atol(params.cg_atol)
        .with_rtol(params.cg_rtol)
        .with_max_iters(params.cg_max_iters.unwrap_or(d))
        .with_confirm_with_true_residual(false)
        .with_preconditioner(if precond {
            Preconditioner::Supplied
        } else {
            Preconditioner::None
        }))
}

/// `op` with `r ↦ r·M⁻¹` as its preconditioner (`M` symmetric, `(d, d)`; rows are systems);
/// without `m_inv` the closure is never called ([`cg_params`] asks for none).
#[allow(clippy::type_complexity)]
fn preconditioned<O>(
    op: O,
    m_inv: Option<&Tensor>,
) -> WithPreconditioner<O, impl Fn(&Tensor, &[bool]) -> std::result::Result<Tensor, KrylovError> + '_>
{
    WithPreconditioner::new(op, move |r: &Tensor, _active: &[bool]| match m_inv {
        Some(m) => Ok(r.matmul(m)?),
        None => Ok(r.clone()),
    })
}

fn cg_report(res: &CgResult<Tensor>) -> CgReport {
    CgReport {
        converged: res.converged.iter().filter(|c| **c).count(),
        iterations: res.iterations.clone(),
        breakdown: res.breakdown.iter().filter(|b| **b).count(),
    }
}

/// The detached CG solve of the surrogate, `(a₁ H + a₀ I) u = v` from `u₀ = v`, with
/// `hvp(w, active)` the Hessian-vector product of the potential on (at least) the rows CG
/// still iterates, preconditioned by `m_inv` (`M⁻¹`, `(d, d)`) if given: `(u, report)`.
pub(crate) fn surrogate_cg(
    hvp: impl Fn(&Tensor, &[bool]) -> icnn::Result<Tensor>,
    v: &Tensor,
    a1: f64,
    a0: f64,
    params: &SurrogateParams,
    d: usize,
    m_inv: Option<&Tensor>,
) -> Result<(Tensor, CgReport)> {
    let op = FnOperator::new(
        |w: &Tensor, active: &[bool]| -> std::result::Result<Tensor, KrylovError> {
            let hv = hvp(w, active).map_err(KrylovError::operator)?;
            Ok(((hv * a1)? + (w * a0)?)?)
        },
    );
    let op = preconditioned(op, m_inv);
    let res = cg_with_initial_guess(&op, v, v, &cg_params(params, d, m_inv.is_some())?)?;
    Ok((res.x.detach(), cg_report(&res)))
}

/// The network's forward tangents of the CG solution `u` and of `v`, followed through CG.
struct TrackedTangents {
    /// Of `v` (= `u₀`): the first product's.
    v: Option<icnn::DirectionTangents>,
    /// Of the current iterate.
    u: Option<icnn::DirectionTangents>,
    /// Of the direction of the last product, until its step size is known.
    pending: Option<icnn::DirectionTangents>,
}

/// [`surrogate_cg`] on the host kernels, following the forward tangents of the iterate: `u =
/// v + Σ_k α_k p_k` and the tangents are linear, so the tangents of `u` and `v` come from
/// those the products computed (`krylov::cg_with_initial_guess_observed`), and the bilinear
/// form needs no pass of its own. `(u, ȧ(u), ȧ(v), report)`.
pub(crate) fn host_surrogate_cg(
    host: &icnn::HostLinearization,
    v: &Tensor,
    a1: f64,
    a0: f64,
    params: &SurrogateParams,
    d: usize,
    m_inv: Option<&Tensor>,
) -> Result<(
    Tensor,
    icnn::DirectionTangents,
    icnn::DirectionTangents,
    CgReport,
)> {
    let tracked = RefCell::new(TrackedTangents {
        v: None,
        u: None,
        pending: None,
    });
    let op = FnOperator::new(
        |w: &Tensor, active: &[bool]| -> std::result::Result<Tensor, KrylovError> {
            let (hv, t) = host
                .hvp_and_tangents_active(w, active)
                .map_err(KrylovError::operator)?;
            let mut tr = tracked.borrow_mut();
            if tr.v.is_none() {
                tr.u = Some(t.clone());
                tr.v = Some(t);
            } else {
                tr.pending = Some(t);
            }
            Ok(((hv * a1)? + (w * a0)?)?)
        },
    );
    let observe = |step: &krylov::CgStep<'_>| -> std::result::Result<(), KrylovError> {
        let mut tr = tracked.borrow_mut();
        let tr = &mut *tr;
        match (tr.u.as_mut(), tr.pending.take()) {
            (Some(u), Some(p)) => u
                .add_scaled_rows(step.step_sizes, &p)
                .map_err(KrylovError::operator),
            _ => Err(KrylovError::operator(CpflowError::Internal(
                "a CG step without its product".into(),
            ))),
        }
    };
    let op = preconditioned(op, m_inv);
    let params = cg_params(params, d, m_inv.is_some())?;
    let res = cg_with_initial_guess_observed(&op, v, v, &params, observe)?;
    let tr = tracked.into_inner();
    match (tr.u, tr.v) {
        (Some(u), Some(tv)) => Ok((res.x.detach(), u, tv, cg_report(&res))),
        _ => Err(CpflowError::Internal(
            "CG made no product at its initial guess".into(),
        )),
    }
}
