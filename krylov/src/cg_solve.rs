//! The iteration behind [`crate::cg()`] and its variants: per-system step sizes, freezing,
//! breakdown detection (curvature `pᵀHp` and `rᵀM⁻¹r`), internal rescaling of extreme
//! right-hand sides and initial residuals, and the check of convergence on the true residual.

use crate::cg_floor::{ReductionFloor, overcomplete_growth, stop_on_unusable_rz};
use crate::cg_overflow::{
    SolveScales, curvature_overflow_scales, rescale_systems, starting_rz_overflow_scales,
};
use crate::cg_reorth::ResidualBasis;
use crate::cg_resolution::{certifies, meets_unresolvable};
use crate::operator::check_operator_shape;
use crate::preconditioner::Prepared;
use crate::vectors::{check_finite, initial_residual_scale, power_of_two_scale, reduction_scale};
use crate::{
    BatchOperator, BatchVectors, CgParams, CgResult, CgStep, CgStopping, CgTermination,
    KrylovError, default_max_iters,
};

/// What [`cg_impl`] calls after each solution update.
pub(crate) type StepObserver<'o> = dyn FnMut(&CgStep<'_>) -> Result<(), KrylovError> + 'o;

/// Adds one application to every system in `mask`.
fn count(applications: &mut [usize], mask: &[bool]) {
    for (a, m) in applications.iter_mut().zip(mask) {
        *a += usize::from(*m);
    }
}

/// `b − H x` on the systems in `mask` (one operator call; the other systems hold `b`).
fn true_residual<V, Op>(op: &Op, b: &V, x: &V, mask: &[bool]) -> Result<V, KrylovError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    let n = b.n_systems();
    let hx = op.apply(x, mask)?;
    b.check_compatible("operator output", &hx)?;
    let mut r = b.clone();
    r.axpby_masked(&vec![1.0; n], &vec![-1.0; n], &hx, mask)?;
    Ok(r)
}

/// The solver behind [`crate::cg`] and its variants. The operator comes behind its vtable
/// (one indirect call per product), so the solver is compiled once per vector type, not once
/// per operator type as well.
pub(crate) fn cg_impl<V: BatchVectors>(
    op: &dyn BatchOperator<V>,
    b: &V,
    x0: Option<&V>,
    params: &CgParams,
    mut observer: Option<&mut StepObserver<'_>>,
) -> Result<CgResult<V>, KrylovError> {
    params.validate()?;
    b.validate()?;
    check_operator_shape("cg: right-hand side vs operator", op, b)?;
    if let Some(x0) = x0 {
        b.check_compatible("cg initial guess", x0)?;
    }
    let n = b.n_systems();
    let max_iters = params
        .max_iters
        .unwrap_or_else(|| default_max_iters(b.system_dim()));
    let global = params.stopping == CgStopping::BatchGlobal;
    let pre = Prepared::new(params.preconditioner, op, b)?;
    let floor = ReductionFloor::new(b, params.preconditioner);
    let precondition = |r: &V, active: &[bool]| pre.apply(op, r, active);

    let b = b.detached();
    // NaN-propagating norms: a non-finite `b_i` would make the tolerance NaN or Inf (and
    // `inf ≤ inf` would report convergence), so it is refused up front.
    let b_norms = b.norms_inf()?;
    check_finite("cg right-hand side", &b, &b_norms)?;
    // Systems whose ‖b_i‖∞ is far from 1 are solved for `s_i·b_i`, with `s_i` a power of two
    // that brings the norm near 1: CG is linear in `b` and multiplying by a power of two is
    // exact, so the iterates, step sizes and convergence decisions are those of the unscaled
    // system, but the dot products `rᵀz` and `pᵀHp` no longer overflow (‖b‖ ≈ 1e200 in f64)
    // or underflow. Systems with a moderate norm are left alone (`s_i = 1`, no extra pass),
    // except in f16, whose range is so narrow that every `b_i` is normalised (`power_of_two_scale`).
    let mut scales: Vec<f64> = b_norms
        .iter()
        .map(|&nb| power_of_two_scale(nb, b.unit_roundoff()))
        .collect();
    let mut rescaled = scales.iter().any(|s| *s != 1.0);
    let mut b = if rescaled {
        let mut scaled = b;
        scaled.scale_per_system(&scales)?;
        scaled
    } else {
        b
    };
    let mut tol: Vec<f64> = b_norms
        .iter()
        .zip(&scales)
        .map(|(nb, s)| s * (params.atol + params.rtol * nb))
        .collect();
    let mut applications = vec![0usize; n];
    let mut operator_calls = 0usize;
    let all = vec![true; n];
    let ones = vec![1.0; n];
    let zeros = vec![0.0; n];
    // `b_i = 0` is solved by `x_i = 0`, whatever `x0_i` (with `atol = 0` its tolerance is 0,
    // which iterating from `x0_i ≠ 0` never meets): no work for it.
    let nonzero_b: Vec<bool> = b_norms.iter().map(|nb| *nb != 0.0).collect();

    let mut r = b.clone();
    // `‖r_i‖∞` of the starting residual, without a reduction where it is known: from `x0 = 0`
    // the residual is `s_i·b_i`, whose max-norm is `s_i·‖b_i‖∞` exactly (scaling by a power
    // of two is exact for the largest entry, and monotone for the others). The further
    // scaling of a far initial guess below is exact in the same way.
    let mut rnorm: Vec<f64> = b_norms.iter().zip(&scales).map(|(nb, s)| s * nb).collect();
    let mut x = match x0 {
        Some(x0) => {
            let mut x = x0.detached();
            check_finite("cg initial guess", &x, &x.norms_inf()?)?;
            if nonzero_b.iter().any(|nz| !nz) {
                let zero_b: Vec<bool> = nonzero_b.iter().map(|nz| !nz).collect();
                let empty = x.zeros_like()?;
                x.axpby_masked(&zeros, &ones, &empty, &zero_b)?;
            }
            if rescaled {
                x.scale_per_system(&scales)?;
            }
            if nonzero_b.iter().any(|nz| *nz) {
                r = true_residual(op, &b, &x, &nonzero_b)?;
                operator_calls += 1;
                count(&mut applications, &nonzero_b);
                // CG's iterates depend on `r0 = b − H x0`, not on `b`: a guess far from the
                // solution (‖r0‖ ≫ ‖b‖) makes `rᵀr` overflow although `b` is moderate. Such a
                // system is scaled down by a further power of two (exact, like the first)
                // that centres the range its residual crosses, from ‖r0‖ down to the
                // tolerance, on 1 (`initial_residual_scale`). No extra operator call.
                rnorm = r.norms_inf()?;
                let extra: Vec<f64> = (0..n)
                    .map(|i| {
                        initial_residual_scale(
                            rnorm[i],
                            tol[i],
                            // ‖s_i·b_i‖∞, exactly (`s_i` is a power of two).
                            scales[i] * b_norms[i],
                            scales[i],
                            b.unit_roundoff(),
                        )
                    })
                    .collect();
                let vectors = &mut [&mut b, &mut x, &mut r];
                rescaled |= rescale_systems(&extra, vectors, &mut scales, &mut tol, &mut rnorm)?;
            }
            x
        }
        None => b.zeros_like()?,
    };

    // `z = M⁻¹ r` and `rᵀz` of the starting residual, before the first push of
    // re-orthogonalisation (which leaves `r` as it is, the basis being empty).
    let mut z = precondition(&r, &all)?;
    let mut rz = r.dots(&z)?;
    // A starting `rᵀM⁻¹r` that overflowed although `r` and `M⁻¹r` are finite (f32 tensors,
    // Jacobi on a diagonal of 1e-21 with `‖b‖ ≈ 1e9`) cannot size `reduction_scale` below:
    // such a system is first scaled down from a bound on it (`cg_overflow.rs`), and `M⁻¹r`
    // and `rᵀM⁻¹r` formed again. Only on this path.
    let at = SolveScales::new(&tol, &scales, &b_norms, b.unit_roundoff());
    if let Some(extra) = starting_rz_overflow_scales(&rz, &rnorm, &z, &at)?
        && rescale_systems(
            &extra,
            &mut [&mut b, &mut x, &mut r],
            &mut scales,
            &mut tol,
            &mut rnorm,
        )?
    {
        z = precondition(&r, &all)?;
        rz = r.dots(&z)?;
        rescaled = true;
    }
    // The scalings above bring `‖b‖` (and a far `‖r0‖`) near 1, but CG's reductions are
    // `rᵀM⁻¹r` and `pᵀHp`: a preconditioner of extreme scale (Jacobi on a diagonal of 1e14
    // with `‖b‖ ≈ 1e-9`: `rᵀM⁻¹r ≈ 1e-32`) or a long `b` puts them near the ends of the
    // reductions' range (f32 tensors: 1e-38 to 3e38), where re-orthogonalisation's floor stops
    // the system early or `rᵀM⁻¹r` underflows or overflows. Such a system is scaled by a
    // further power of two that centres the range its `rᵀM⁻¹r` crosses on 1
    // (`reduction_scale`; exact, like the others; `M⁻¹r` and `rᵀz` are then formed again, one
    // more reduction and, for a supplied `M⁻¹`, one more call, only on this path).
    let extra: Vec<f64> = (0..n)
        .map(|i| {
            reduction_scale(
                rz[i],
                rnorm[i],
                // The tolerance and ‖s_i·b_i‖∞, exactly (`s_i` is a power of two).
                (tol[i], scales[i] * b_norms[i]),
                scales[i],
                b.unit_roundoff(),
            )
        })
        .collect();
    if rescale_systems(
        &extra,
        &mut [&mut b, &mut x, &mut r],
        &mut scales,
        &mut tol,
        &mut rnorm,
    )? {
        // Formed again rather than scaled: `M⁻¹r` of the unscaled `r` may have lost digits in
        // the element type's subnormals.
        z = precondition(&r, &all)?;
        rz = r.dots(&z)?;
        rescaled = true;
    }

    // Systems whose residual fell so far below the working precision that the reductions of
    // its size underflow (`cg_floor.rs`): a re-orthogonalised residual that collapsed or
    // cannot be normalised (`ResidualBasis::orthogonalize_and_push`; a residual of exactly 0
    // is not one), one whose `rᵀM⁻¹r` is subnormal or came out 0 for that reason
    // (`ReductionFloor::rz_at_floor`), or a re-orthogonalised one growing out of an
    // over-complete basis (`overcomplete_growth`). They step no more and end converged or
    // stagnated on their true residual (computed for them even without
    // `confirm_with_true_residual`), instead of breaking down.
    let mut at_floor = vec![false; n];
    let mut reorth = if params.reorthogonalize {
        let mut basis = ResidualBasis::new(pre.inverse_diagonal())?;
        let collapsed = basis.orthogonalize_and_push(&mut r, &all)?;
        at_floor = (0..n).map(|i| collapsed[i] && rnorm[i] > 0.0).collect();
        Some(basis)
    } else {
        None
    };
    // Re-orthogonalisation always needs the check (its updated residual collapses to zero once
    // the basis spans the space, whatever `x` is).
    let confirm = params.confirm_with_true_residual || reorth.is_some();

    // (The first push leaves `r` as it is, the basis being empty: `rnorm` is still its norm.)
    // The starting residual is a true one (`b`, or `b − H x0` as computed): it converges only
    // where it certifies the tolerance (`cg_resolution.rs`). One that meets a tolerance below
    // its resolution (from `x0`) stagnates at once: iterating on rounding noise cannot help.
    let u = b.unit_roundoff();
    // `‖b_i‖∞` in the solve's units (`s_i` is a power of two: exact).
    let scaled_b = |i: usize, scales: &[f64]| scales[i] * b_norms[i];
    let mut converged: Vec<bool> = (0..n)
        .map(|i| certifies(tol[i], rnorm[i], scaled_b(i, &scales), u))
        .collect();
    let unresolvable_start: Vec<bool> = (0..n)
        .map(|i| meets_unresolvable(tol[i], rnorm[i], scaled_b(i, &scales), u))
        .collect();
    let mut breakdown: Vec<bool> = rnorm.iter().map(|rn| !rn.is_finite()).collect();
    // Of the systems that broke down, those stopped by a NaN/±Inf rather than by a finite
    // curvature `pᵀHp ≤ 0` (reported only with the breakdown, `CgResult::non_finite`).
    let mut non_finite = breakdown.clone();
    // Converged systems that batch-global stopping kept stepping until their updated residual
    // came out non-finite (see the update below): they step no more and stay converged.
    let mut frozen = vec![false; n];
    let mut iterations = vec![0usize; n];
    // The iteration count at which `r_i` was last computed as `b_i − H_i x_i` (the initial
    // residual is), and the norm of the last true residual that failed the tolerance.
    let mut checked_at = vec![0usize; n];
    let mut failed_norm = vec![f64::INFINITY; n];
    // The smallest updated residual norm of each system so far (re-orthogonalisation's
    // over-complete basis, below).
    let mut least_norm = rnorm.clone();
    let d = b.system_dim();

    // A starting residual that met an unresolvable tolerance is settled like a converged one
    // (its `rᵀz` may be 0: `r = 0` as computed).
    let settled: Vec<bool> = (0..n)
        .map(|i| converged[i] || unresolvable_start[i])
        .collect();
    let underflowed =
        stop_on_unusable_rz(&rz, &all, &settled, &mut breakdown, &mut non_finite, |i| {
            floor.rz_at_floor(rz[i], rnorm[i], None)
        });
    for i in (0..n).filter(|&i| underflowed[i]) {
        at_floor[i] = true;
    }
    // An initial residual at the floor is a true one: nothing to confirm.
    let mut stagnated: Vec<bool> = (0..n)
        .map(|i| (at_floor[i] && !converged[i] && max_iters > 0) || unresolvable_start[i])
        .collect();
    let mut p = z.clone();
    let mut pass = 0usize;

    loop {
        let can_step: Vec<bool> = (0..n)
            .map(|i| {
                !breakdown[i]
                    && !stagnated[i]
                    && !frozen[i]
                    && !at_floor[i]
                    && iterations[i] < max_iters
            })
            .collect();
        // Continue while an unconverged system can step; batch-global stopping also steps the
        // converged ones meanwhile.
        if !(0..n).any(|i| can_step[i] && !converged[i]) {
            // The systems whose residual is not already a true one: those stopped at the floor
            // and, when `confirm`, those that met the tolerance and, with the confirmation
            // asked for, also those whose iterations ran out (so that every reported residual
            // is a true one).
            let check: Vec<bool> = (0..n)
                .map(|i| {
                    iterations[i] > checked_at[i]
                        && !breakdown[i]
                        && (at_floor[i]
                            || (confirm && (converged[i] || params.confirm_with_true_residual)))
                })
                .collect();
            if !check.iter().any(|c| *c) {
                break;
            }
            let true_r = true_residual(op, &b, &x, &check)?;
            operator_calls += 1;
            count(&mut applications, &check);
            let true_norm = true_r.norms_inf()?;
            let mut restart = vec![false; n];
            for i in (0..n).filter(|&i| check[i]) {
                checked_at[i] = iterations[i];
                rnorm[i] = true_norm[i];
                if certifies(tol[i], true_norm[i], scaled_b(i, &scales), u) {
                    converged[i] = true;
                    continue;
                }
                if meets_unresolvable(tol[i], true_norm[i], scaled_b(i, &scales), u) {
                    // Met, but below what the computed residual resolves (`cg_resolution.rs`):
                    // not certified, and no restart can certify it.
                    converged[i] = false;
                    stagnated[i] = true;
                    continue;
                }
                let claimed = std::mem::replace(&mut converged[i], false);
                if !true_norm[i].is_finite() {
                    breakdown[i] = true;
                    non_finite[i] = true;
                } else if (claimed || at_floor[i]) && iterations[i] < max_iters {
                    // A system at the floor has gone past what the working precision can
                    // resolve: no restart.
                    if reorth.is_none() && !at_floor[i] && true_norm[i] <= 0.5 * failed_norm[i] {
                        restart[i] = true;
                    } else {
                        stagnated[i] = true;
                    }
                }
                failed_norm[i] = true_norm[i];
            }
            if !restart.iter().any(|s| *s) {
                break;
            }
            // Restart from the true residual: `r_i ← b_i − H_i x_i`, `p_i ← M⁻¹ r_i`.
            r.axpby_masked(&zeros, &ones, &true_r, &restart)?;
            z = precondition(&r, &restart)?;
            let rz_restart = r.dots(&z)?;
            p.axpby_masked(&zeros, &ones, &z, &restart)?;
            for i in (0..n).filter(|&i| restart[i]) {
                rz[i] = rz_restart[i];
                // The true residual replaced the non-finite updated one: it may step again.
                frozen[i] = false;
            }
            let underflowed = stop_on_unusable_rz(
                &rz,
                &restart,
                &converged,
                &mut breakdown,
                &mut non_finite,
                |i| floor.rz_at_floor(rz[i], rnorm[i], None),
            );
            // The restarted residual is a true one: nothing to confirm.
            for i in (0..n).filter(|&i| underflowed[i]) {
                at_floor[i] = true;
                stagnated[i] = true;
            }
            continue;
        }
        let running: Vec<bool> = (0..n)
            .map(|i| can_step[i] && (global || !converged[i]))
            .collect();
        let mut hp = op.apply(&p, &running)?;
        b.check_compatible("operator output", &hp)?;
        let call = operator_calls;
        operator_calls += 1;
        count(&mut applications, &running);
        let mut php = p.dots(&hp)?;
        // A `pᵀHp` that overflowed although `p` and `Hp` are finite (f32 tensors, `H` of 1e14
        // with `‖b‖ ≈ 1e9`): the system is scaled down (`cg_overflow.rs`), `Hp` with it (`H` is
        // linear: no new call), and the step taken from the reductions formed again.
        let unconverged: Vec<bool> = (0..n).map(|i| running[i] && !converged[i]).collect();
        let at = SolveScales::new(&tol, &scales, &b_norms, b.unit_roundoff());
        if let Some(extra) =
            curvature_overflow_scales(&php, &unconverged, (&p, &hp), (&rz, &rnorm), &at)?
            && rescale_systems(
                &extra,
                &mut [&mut b, &mut x, &mut r, &mut z, &mut p, &mut hp],
                &mut scales,
                &mut tol,
                &mut rnorm,
            )?
        {
            let (rz_scaled, php_scaled) = (r.dots(&z)?, p.dots(&hp)?);
            for i in (0..n).filter(|&i| extra[i] != 1.0) {
                rz[i] = rz_scaled[i];
                php[i] = php_scaled[i];
                least_norm[i] *= extra[i];
                failed_norm[i] *= extra[i];
            }
            rescaled = true;
        }
        let mut step = running.clone();
        let mut alpha = vec![0.0; n];
        let mut neg_alpha = vec![0.0; n];
        for i in (0..n).filter(|&i| running[i]) {
            let a = rz[i] / php[i];
            // `pᵀHp = +Inf` (an operator output holding Inf) gives a finite `α = 0`: a
            // breakdown too, not a step of size 0.
            if php[i] > 0.0 && php[i].is_finite() && a.is_finite() {
                alpha[i] = a;
                neg_alpha[i] = -a;
            } else {
                // Cannot continue. Under batch-global stopping an already converged system
                // (typically r_i = 0 exactly) is simply frozen; otherwise it is a breakdown.
                step[i] = false;
                if converged[i] {
                    continue;
                }
                breakdown[i] = true;
                // A finite `pᵀHp ≤ 0` is curvature; NaN, ±Inf, or a finite positive `pᵀHp`
                // whose step size overflowed, is not.
                non_finite[i] = !(php[i].is_finite() && php[i] <= 0.0);
            }
        }
        x.axpby_masked(&ones, &alpha, &p, &step)?;
        if let Some(observe) = observer.as_mut() {
            // The operator saw `s_i·p` for a rescaled system: report `α_i / s_i` (exact), the
            // step along the operator's argument of the unscaled solution.
            let unscaled: Vec<f64>;
            let step_sizes = if rescaled {
                unscaled = alpha.iter().zip(&scales).map(|(a, s)| a / s).collect();
                &unscaled
            } else {
                &alpha
            };
            observe(&CgStep {
                iteration: pass,
                operator_call: call,
                step_sizes,
            })?;
        }
        r.axpby_masked(&ones, &neg_alpha, &hp, &step)?;
        let collapsed = match reorth.as_mut() {
            Some(basis) => basis.orthogonalize_and_push(&mut r, &step)?,
            None => vec![false; n],
        };
        let new_norm = r.norms_inf()?;
        // `rᵀz` and `‖r‖∞` before this step, for `ReductionFloor::rz_at_floor`.
        let previous: Vec<(f64, f64)> = rz.iter().copied().zip(rnorm.iter().copied()).collect();
        for i in 0..n {
            if !step[i] {
                continue;
            }
            iterations[i] += 1;
            rnorm[i] = new_norm[i];
            // A system that had met the tolerance and that batch-global stopping kept stepping
            // can get a non-finite updated residual although its iterate is fine: in f32 its
            // residual keeps shrinking into the subnormals, where re-orthogonalisation's
            // normalisation factor `1/‖r‖` overflows the element type and the stored basis
            // vector, then the next residual, turn NaN. Its step itself was finite (checked
            // above), so `x_i` holds a valid CG iterate. It is frozen, still converged, instead
            // of breaking down; the true-residual check at the end (always done when `confirm`)
            // replaces `rnorm[i]` and decides convergence. Without that check it is a
            // breakdown as before (its residual norm would not be known).
            if converged[i] && confirm && !new_norm[i].is_finite() {
                frozen[i] = true;
                step[i] = false;
                continue;
            }
            converged[i] = new_norm[i].is_finite() && new_norm[i] <= tol[i];
            if !new_norm[i].is_finite() {
                breakdown[i] = true;
                non_finite[i] = true;
            } else if collapsed[i] && new_norm[i] > 0.0 {
                // The residual fell so far below the working precision (a tolerance of 0 lets
                // it shrink on once the basis spans the space) that the squares in CG's
                // reductions underflow: `rᵀM⁻¹r` and `pᵀHp` lose precision and then come out
                // 0, which would stop the system as a breakdown (f64 below ‖r‖ ≈ 1e-154, f32
                // tensors below ≈ 1e-19), or, in f32 with f64 reductions, it reaches the
                // subnormals, where `1/‖r‖` overflows and it would turn NaN. No direction is
                // left to step in. `x_i` is a valid iterate; the true-residual check at the
                // end reports its residual and ends it converged or stagnated. (A residual of
                // exactly 0 has converged: it is not stopped here.)
                at_floor[i] = true;
                step[i] = false;
            } else if reorth.is_some()
                && overcomplete_growth(iterations[i], d, new_norm[i], least_norm[i])
            {
                // The basis holds more than `d` residuals, so this one was orthogonalised
                // against an over-complete set: once the basis spans the space the updated
                // residual is rounding noise, which then grows (`overcomplete_growth`) until
                // `p` overflows, a NaN breakdown, though `x` is fine. Stopped like a
                // residual at the floor.
                at_floor[i] = true;
                step[i] = false;
            }
            least_norm[i] = least_norm[i].min(new_norm[i]);
        }
        z = precondition(&r, &step)?;
        let rz_new = r.dots(&z)?;
        let beta: Vec<f64> = (0..n)
            .map(|i| {
                if step[i] && rz[i] != 0.0 {
                    rz_new[i] / rz[i]
                } else {
                    0.0
                }
            })
            .collect();
        p.axpby_masked(&beta, &ones, &z, &step)?;
        for i in (0..n).filter(|&i| step[i]) {
            rz[i] = rz_new[i];
        }
        let underflowed = stop_on_unusable_rz(
            &rz,
            &step,
            &converged,
            &mut breakdown,
            &mut non_finite,
            |i| floor.rz_at_floor(rz[i], rnorm[i], Some(previous[i])),
        );
        for i in (0..n).filter(|&i| underflowed[i]) {
            at_floor[i] = true;
        }
        pass += 1;
    }

    if rescaled {
        let inverse: Vec<f64> = scales.iter().map(|s| 1.0 / s).collect();
        x.scale_per_system(&inverse)?;
        for (rn, s) in rnorm.iter_mut().zip(&scales) {
            *rn /= s;
        }
        // A rescaled system that never stepped ends at its start, `x0_i` as given: scaling
        // and unscaling it is exact unless `s_i·x0_i` overflowed (a guess far outside the
        // range of a tiny `b_i`, which then breaks down on its non-finite residual: `x_i`
        // came back as ±Inf) or underflowed. Copied on the host (a masked update would
        // compute `0·Inf`); only on this failure path.
        if let Some(x0) = x0 {
            let unmoved: Vec<bool> = (0..n)
                .map(|i| iterations[i] == 0 && !converged[i] && scales[i] != 1.0)
                .collect();
            if unmoved.iter().any(|u| *u) {
                let d = x.system_dim();
                let mut host = x.to_host()?;
                let start = x0.to_host()?;
                for i in (0..n).filter(|&i| unmoved[i]) {
                    host[i * d..(i + 1) * d].copy_from_slice(&start[i * d..(i + 1) * d]);
                }
                x = V::from_host_like(&x, &host)?;
            }
        }
    }
    // The reported flags all derive from `termination`, so that they cannot disagree.
    let termination: Vec<CgTermination> = (0..n)
        .map(|i| {
            if converged[i] {
                CgTermination::Converged
            } else if breakdown[i] {
                CgTermination::Breakdown
            } else if stagnated[i] {
                CgTermination::Stagnated
            } else {
                CgTermination::MaxIterations
            }
        })
        .collect();
    let is = |t: CgTermination| -> Vec<bool> { termination.iter().map(|s| *s == t).collect() };
    let (converged, breakdown) = (is(CgTermination::Converged), is(CgTermination::Breakdown));
    let non_finite = (0..n).map(|i| breakdown[i] && non_finite[i]).collect();

    Ok(CgResult {
        x,
        iterations,
        residual_norms: rnorm,
        converged,
        breakdown,
        non_finite,
        termination,
        applications,
        operator_calls,
    })
}
