//! The detached CG solves of the surrogate training step (`CpFlowBlock::forward_with_surrogate`):
//! `(a₁ H + a₀ I) u = v` from `u₀ = v` (the reference's start), on any Hessian-vector product
//! or on the host kernels with the forward tangents of `u` followed through CG.

use candle_core::{DType, Tensor};
use krylov::{
    CgParams, CgResult, FnOperator, KrylovError, Preconditioner, WithPreconditioner,
    cg_with_initial_guess, cg_with_initial_guess_observed,
};
use std::cell::RefCell;

use crate::block::CgReport;
use crate::config::SurrogateParams;
use crate::error::{CpflowError, Result};

/// How many unit roundoffs of the solves' element type a tolerance must exceed for CG's
/// convergence to be judged on its recursively updated residual alone
/// ([`confirms_on_true_residual`]).
const UNCONFIRMED_TOLERANCE_ROUNDOFFS: f64 = 1e3;

/// The smallest tolerance `cg_atol + cg_rtol` that solves in `dtype` resolve:
/// [`UNCONFIRMED_TOLERANCE_ROUNDOFFS`] unit roundoffs of it (f32 1.19e-4, f64 2.2e-13).
/// Below it the solves confirm convergence on the true residual
/// ([`confirms_on_true_residual`]), and the trainers' warning of unconverged CG says that more
/// iterations may not meet the tolerance (`train::cg_tally::Unconverged::text`). The unit
/// roundoff is krylov's ([`krylov::unit_roundoff_of`], what the solves use).
pub(crate) fn resolvable_tolerance(dtype: DType) -> f64 {
    UNCONFIRMED_TOLERANCE_ROUNDOFFS * krylov::unit_roundoff_of(dtype)
}

/// Whether the surrogate's solves confirm convergence on the true residual `v − A u`
/// (krylov's `CgParams::confirm_with_true_residual`): when the tolerance a system must meet,
/// `atol + rtol·‖v‖∞ = atol + rtol` (`v` is a Rademacher probe), is below
/// [`resolvable_tolerance`] of the element type `dtype`: [`UNCONFIRMED_TOLERANCE_ROUNDOFFS`]
/// unit roundoffs (f32 1.2e-7, f64 2.2e-16), i.e. below 1.2e-4 in f32 and 2.2e-13 in f64.
///
/// The updated residual drifts from the true one by about `unit_roundoff·‖A‖‖u‖` per
/// iteration and keeps shrinking below what `u` attains: without the check an f32 solve
/// reports `cg_atol = 1e-30` met. Above the bound the drift is a small fraction of the
/// tolerance and the check (one more operator application per converged system: +6–8% of
/// the time of a default tabular step on the MINIBOONE fragment, 2.5 CG iterations per
/// solve) would buy nothing: there, at the default `cg_atol = 1e-3`, in 200 steps of 1024
/// systems the check failed on a handful of f32 systems (mean iterations +1.8e-5) and on
/// none in f64. Below the bound a system whose true residual misses the tolerance restarts
/// from it; it ends converged only where its true residual, formed in the element type,
/// meets the tolerance and lies above the resolution of its own computation (krylov's
/// `cg_resolution.rs`: a true residual that rounds to 0 where every `(A u)_j` rounds to `v_j`
/// certifies nothing; 15% of the f32 systems at `cg_atol = 1e-30` on the MINIBOONE fragment
/// ended converged that way before krylov's rule, none now: they end stagnated).
fn confirms_on_true_residual(params: &SurrogateParams, dtype: DType) -> bool {
    params.cg_atol + params.cg_rtol < resolvable_tolerance(dtype)
}

/// krylov's parameters of the surrogate's solves, after [`SurrogateParams::validate`] (the
/// configurations check them first and name their keys; this catches the direct API uses,
/// e.g. `Flow::surrogate_loss`, which would otherwise run CG with `cg_max_iters = Some(0)`).
/// `precond`: whether the solve has an `M⁻¹` ([`preconditioned`]); `v`: the right-hand
/// sides, whose element type decides [`confirms_on_true_residual`].
fn cg_params(params: &SurrogateParams, d: usize, precond: bool, v: &Tensor) -> Result<CgParams> {
    params.validate("surrogate")?;
    Ok(CgParams::default()
        .with_atol(params.cg_atol)
        .with_rtol(params.cg_rtol)
        .with_max_iters(params.cg_max_iters.unwrap_or(d))
        .with_confirm_with_true_residual(confirms_on_true_residual(params, v.dtype()))
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
    let res = cg_with_initial_guess(&op, v, v, &cg_params(params, d, m_inv.is_some(), v)?)?;
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
    let params = cg_params(params, d, m_inv.is_some(), v)?;
    let res = cg_with_initial_guess_observed(&op, v, v, &params, observe)?;
    let tr = tracked.into_inner();
    match (tr.u, tr.v) {
        (Some(u), Some(tv)) => Ok((res.x.detach(), u, tv, cg_report(&res))),
        _ => Err(CpflowError::Internal(
            "CG made no product at its initial guess".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use krylov::BatchVectors;
    use rand::{Rng, SeedableRng};

    /// `(a₁ H + a₀ I)` with `H = Q diag(λ) Qᵀ`, `λ` from 0.1 to 10 (`Q` a random rotation from
    /// Gram–Schmidt), `(d, d)` in `dtype`, and `n` Rademacher right-hand sides.
    fn system(d: usize, n: usize, dtype: DType) -> (Tensor, Tensor) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut q: Vec<Vec<f64>> = Vec::new();
        while q.len() < d {
            let mut c: Vec<f64> = (0..d).map(|_| rng.random::<f64>() - 0.5).collect();
            for _ in 0..2 {
                for e in &q {
                    let p: f64 = c.iter().zip(e).map(|(a, b)| a * b).sum();
                    c.iter_mut().zip(e).for_each(|(a, b)| *a -= p * b);
                }
            }
            let n = c.iter().map(|a| a * a).sum::<f64>().sqrt();
            q.push(c.iter().map(|a| a / n).collect());
        }
        let lambda = |k: usize| 10f64.powf(-1.0 + 2.0 * k as f64 / (d - 1) as f64);
        let h: Vec<f64> = (0..d * d)
            .map(|ij| {
                (0..d)
                    .map(|k| q[k][ij / d] * lambda(k) * q[k][ij % d])
                    .sum()
            })
            .collect();
        let v: Vec<f64> = (0..n * d)
            .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
            .collect();
        let cpu = &Device::Cpu;
        let h = Tensor::from_vec(h, (d, d), cpu).unwrap();
        let v = Tensor::from_vec(v, (n, d), cpu).unwrap();
        (h.to_dtype(dtype).unwrap(), v.to_dtype(dtype).unwrap())
    }

    /// `surrogate_cg` on [`system`]'s: the number of systems it reports converged, and the
    /// number whose true residual `v − (a₁ H + a₀ I) u`, formed as CG's check forms it (same
    /// products, same element type), meets the tolerance `atol`.
    fn reported_and_true(dtype: DType, atol: f64) -> (usize, usize) {
        let (d, n, a1, a0) = (20, 64, 1.0, 0.1);
        let (h, v) = system(d, n, dtype);
        let params = SurrogateParams {
            cg_atol: atol,
            cg_rtol: 0.0,
            cg_max_iters: Some(3 * d),
            ..Default::default()
        };
        let hvp = |w: &Tensor, _: &[bool]| -> icnn::Result<Tensor> { Ok(w.matmul(&h)?) };
        let (u, report) = surrogate_cg(hvp, &v, a1, a0, &params, d, None).unwrap();
        let au = ((u.matmul(&h).unwrap() * a1).unwrap() + (&u * a0).unwrap()).unwrap();
        let r = (&v - au).unwrap().abs().unwrap().max(1).unwrap();
        let r = r.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!((report.iterations.len(), report.breakdown), (n, 0));
        (report.converged, r.iter().filter(|x| **x <= atol).count())
    }

    /// Below the float type's resolution (f32, `atol` 1e-9 and 1e-30: the true residual's
    /// entries are 0 or ≥ 2⁻²⁴ ≈ 6e-8, as `(A u)_j ≈ ±1` is rounded) the systems reported
    /// converged are exactly those whose true residual met the tolerance (those whose `A u`
    /// rounds to `v`); the updated residual alone claimed all 64. At 1e-4 (confirmed, below
    /// 1e3·f32::EPSILON; the f32 true residuals are ≲ ε·‖A‖‖u‖ ≈ 1e-5 at condition number
    /// 50) and in f64 (1e-10: not confirmed, the drift is ≈ 1e-14) all converge.
    #[test]
    fn converged_systems_are_those_whose_true_residual_meets_the_tolerance() {
        for (dtype, atol) in [(DType::F32, 1e-9), (DType::F32, 1e-30)] {
            let (reported, met) = reported_and_true(dtype, atol);
            assert_eq!(reported, met, "{dtype:?}, atol {atol:e}");
            assert!(met < 64, "{dtype:?}, atol {atol:e}: {met}");
        }
        for (dtype, atol) in [(DType::F32, 1e-4), (DType::F64, 1e-10)] {
            assert_eq!(
                reported_and_true(dtype, atol),
                (64, 64),
                "{dtype:?}, {atol:e}"
            );
        }
    }

    /// The confirmation applies below 1e3 unit roundoffs: f32's 1.19e-4, f64's 2.2e-13.
    #[test]
    fn confirmation_threshold_scales_with_the_float_type() {
        let p = |cg_atol, cg_rtol| SurrogateParams {
            cg_atol,
            cg_rtol,
            ..Default::default()
        };
        let (f32_u, f64_u) = (DType::F32, DType::F64);
        assert!(!confirms_on_true_residual(
            &SurrogateParams::default(),
            f32_u
        ));
        assert!(!confirms_on_true_residual(&p(1.2e-4, 0.0), f32_u));
        assert!(confirms_on_true_residual(&p(1e-4, 0.0), f32_u));
        assert!(confirms_on_true_residual(&p(0.0, 1e-9), f32_u));
        assert!(!confirms_on_true_residual(&p(1e-9, 0.0), f64_u));
        assert!(confirms_on_true_residual(&p(1e-13, 1e-13), f64_u));
        assert!(confirms_on_true_residual(&p(0.0, 0.0), f64_u));
    }

    /// The threshold is 1e3 of krylov's unit roundoffs of a tensor of the type (what the
    /// solves use), for every float type: f32's 1.19e-4, f64's 2.2e-13.
    #[test]
    fn resolvable_tolerance_is_1e3_unit_roundoffs_of_the_solves() {
        for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
            let v = Tensor::zeros((1, 1), dtype, &candle_core::Device::Cpu).unwrap();
            assert_eq!(
                resolvable_tolerance(dtype),
                1e3 * v.unit_roundoff(),
                "{dtype:?}"
            );
        }
        assert_eq!(
            format!("{:.2e}", resolvable_tolerance(DType::F32)),
            "1.19e-4"
        );
        assert_eq!(
            format!("{:.2e}", resolvable_tolerance(DType::F64)),
            "2.22e-13"
        );
    }
}
