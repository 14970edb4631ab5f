//! Batched (preconditioned) conjugate gradient with per-system step sizes and convergence:
//! the entry points and their result types (the iteration is in `cg_solve.rs`, the
//! parameters in `cg_params.rs`).

use crate::cg_solve::cg_impl;
use crate::{BatchOperator, BatchVectors, CgParams, KrylovError};

/// Why system `i` of a [`cg`] solve stopped ([`CgResult::termination`]).
///
/// ```
/// use krylov::{cg, CgParams, CgTermination, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// // SPD, negative definite, and an SPD system given one iteration for two eigenvalues.
/// let op = DenseNalgebraOperator::new(vec![
///     dmatrix![4.0, 0.0; 0.0, 4.0],
///     dmatrix![-1.0, 0.0; 0.0, -1.0],
///     dmatrix![1.0, 0.0; 0.0, 3.0],
/// ])?;
/// let b = DMatrix::<f64>::from_element(2, 3, 1.0);
/// let res = cg(&op, &b, &CgParams::default().with_max_iters(1))?;
/// use CgTermination::*;
/// assert_eq!(res.termination, vec![Converged, Breakdown, MaxIterations]);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CgTermination {
    /// The system met the tolerance ([`CgResult::converged`]).
    Converged,
    /// The iteration could not continue ([`CgResult::breakdown`]).
    Breakdown,
    /// The system used its [`CgParams::max_iters`] iterations without meeting the tolerance
    /// (or, under [`crate::CgStopping::BatchGlobal`], the batch stopped with it unconverged).
    /// A system whose updated residual met the tolerance on its last iteration but whose true
    /// residual did not, with no iteration left to continue, ends here too.
    MaxIterations,
    /// The system stopped with iterations left because iterating could not bring its **true**
    /// residual `b_i − H_i x_i` within the tolerance, although its updated residual met it
    /// (or, in the second case below, collapsed past what the working precision can handle):
    /// * with [`CgParams::reorthogonalize`], the stored residuals span the space, so the
    ///   updated residual is zero and there is no direction left to continue in;
    /// * with a tolerance at or near 0 (`atol = rtol = 0` is met only by an exactly zero true
    ///   residual), the updated residual shrank so far below the working precision that the
    ///   squares in CG's reductions underflow (`‖S r‖₂² = rᵀM⁻¹r` below the smallest normal
    ///   number of the type the backend reduces in,
    ///   [`crate::BatchVectors::reduction_min_positive`]: in f64 a residual below
    ///   ≈ 1e-154, in f32 tensors ≈ 1e-19; or `rᵀM⁻¹r` came out 0 for that reason; `rᵀM⁻¹r`
    ///   or `pᵀHp` would soon come out 0, which read as a breakdown) or that `‖S r‖₂` is in
    ///   the element type's subnormals (f32 storage with f64 reductions; with
    ///   [`CgParams::reorthogonalize`] `1/‖r‖₂` overflows there and the stored residual would
    ///   turn NaN). This holds for plain and re-orthogonalised CG alike, with or without
    ///   [`CgParams::confirm_with_true_residual`], and is decided without an extra reduction;
    /// * with [`CgParams::reorthogonalize`] and a tolerance at or near 0, the updated residual,
    ///   orthogonalised against more than `d` stored residuals, grew past twice its least (the
    ///   rounding noise left once the basis spans the space bottoms out above the floor for
    ///   larger `d`, f64 `d ≳ 50`, then grows until `p` overflows);
    /// * with [`CgParams::confirm_with_true_residual`], a restart from the true residual did
    ///   not at least halve it (the attainable accuracy of the working precision is reached,
    ///   e.g. a condition number near `1/(rtol·u)`);
    /// * a computed true residual (the check's, or the starting `b − H x0`) met a tolerance
    ///   below its own resolution, `u·(‖b_i‖∞ + ‖H_i x_i‖∞)` (`u` the element type's unit
    ///   roundoff, [`crate::BatchVectors::unit_roundoff`]; `cg_resolution.rs`): at that level
    ///   a computed residual, even exactly 0, cannot certify the tolerance (f32, `‖b‖∞ = 1`,
    ///   `atol = 1e-8`: computed residuals of 0 had true ones of 5e-8 to 1.5e-7). Such a
    ///   system ends here whether or not iterations are left, with its `x` as accurate as
    ///   the working precision allows. Only tolerances below `2u·‖b_i‖∞` (f32: `rtol < 2.4e-7`
    ///   with `atol = 0`, or a small `atol` for a large `b_i`) and `atol = rtol = 0` (for
    ///   `b_i ≠ 0`) can get here; the recursively updated residual of a solve without the
    ///   check is not a computed `b − H x` and still decides alone.
    ///
    /// [`CgResult::residual_norms`] then holds the true residual's norm (as computed: it can
    /// be below the tolerance, even 0, in the last case).
    Stagnated,
}

/// Outcome of [`cg`]. Non-convergence is reported here, never as an error.
///
/// ```
/// use krylov::{cg, CgParams, CgTermination, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// // System 0 is SPD; system 1 is negative definite, which CG cannot handle; system 2's
/// // operator produces NaN.
/// let op = DenseNalgebraOperator::new(vec![
///     dmatrix![4.0, 0.0; 0.0, 4.0],
///     dmatrix![-1.0, 0.0; 0.0, -1.0],
///     dmatrix![f64::NAN, 0.0; 0.0, 1.0],
/// ])?;
/// let b = DMatrix::<f64>::from_element(2, 3, 1.0);
/// let res = cg(&op, &b, &CgParams::default())?;
/// assert_eq!(res.converged, vec![true, false, false]);
/// assert_eq!(res.breakdown, vec![false, true, true]);
/// use CgTermination::*;
/// assert_eq!(res.termination, vec![Converged, Breakdown, Breakdown]);
/// // Why each breakdown happened: finite `pᵀHp ≤ 0` (system 1) or a NaN (system 2).
/// assert_eq!(res.non_finite, vec![false, false, true]);
/// assert!(!res.all_converged());
/// assert!((res.x[(0, 0)] - 0.25).abs() < 1e-12 && res.residual_norms[0] < 1e-12);
/// assert_eq!(res.x[(0, 1)], 0.0); // systems 1 and 2 never stepped
/// // One product each, plus the confirmation of system 0 on its true residual.
/// assert_eq!(res.applications, vec![2, 1, 1]);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CgResult<V> {
    /// The approximate solutions (a batch like `b`). For a system that did not converge this
    /// is the **last** iterate, not the best one: CG does not know the true residual of its
    /// iterates (only of the one it confirms), and in plain f32 CG on ill-conditioned systems
    /// (condition 1e4–1e7, d = 43, no re-orthogonalisation) the updated residual loses touch
    /// with the true one, so the last iterate at [`CgTermination::MaxIterations`] had true
    /// residuals up to 70 where `x = 0` has about 1 (measured, f32 precision audit).
    /// With [`CgParams::confirm_with_true_residual`] (the default) [`CgResult::residual_norms`]
    /// holds that true residual: compare it with `‖b_i − H_i x0_i‖∞` (`‖b_i‖∞` from zero) and
    /// keep the start where it is larger, or use [`CgParams::reorthogonalize`] (≈ d
    /// iterations at such conditions; the audit's f32 runs then reached 3e-4 at condition
    /// 1e4), or f64.
    pub x: V,
    /// Iterations (solution updates) performed per system.
    pub iterations: Vec<usize>,
    /// Final `‖r_i‖∞` per system. With [`CgParams::confirm_with_true_residual`] (the default)
    /// the true residual `‖b_i − H_i x_i‖∞` (as the operator computes `H_i x_i`) of every
    /// system that did not break down. Without it, the true residual only for a system that
    /// never stepped, or that met the tolerance under [`CgParams::reorthogonalize`];
    /// otherwise the recursively updated residual, which on ill-conditioned systems can be far
    /// below the true one.
    pub residual_norms: Vec<f64>,
    /// Whether system `i` met `‖r_i‖∞ ≤ atol + rtol·‖b_i‖∞` (never with a non-finite
    /// residual). With [`CgParams::confirm_with_true_residual`] (the default) or
    /// [`CgParams::reorthogonalize`], `r_i` is the true residual `b_i − H_i x_i` computed once
    /// the iteration stopped, and a tolerance below that computation's resolution
    /// (`u·(‖b_i‖∞ + ‖H_i x_i‖∞)`, see [`CgTermination::Stagnated`]) is never reported met;
    /// without either, it is the recursively updated residual, and the true residual can be
    /// above the tolerance (ill-conditioned systems, or a tolerance below the resolution).
    pub converged: Vec<bool>,
    /// Whether system `i` stopped because the iteration could not continue: non-positive or
    /// non-finite curvature `pᵀH_i p` (NaN, or ±Inf from an operator output holding Inf), a
    /// non-positive or non-finite `rᵀz = rᵀM⁻¹r` (`z` the preconditioned residual; `rᵀr`
    /// without a preconditioner), or a non-finite residual, before convergence. Causes: the
    /// operator is not positive definite on the Krylov space; the preconditioner `M` is not
    /// (a [`crate::Preconditioner::Supplied`] one that is indefinite or negative definite:
    /// checked on every `rᵀz` CG computes, before the next product, so such a system stops at
    /// once instead of iterating in an indefinite inner product; `rᵀz = 0` from `r = 0` is
    /// convergence, not this); the operator or preconditioner produced NaN/Inf (in any call,
    /// the initial residual's `b − H x0` included, in every entry point alike); or the
    /// per-system products overflowed because the entries of `H_i` are huge (`H_i p` itself
    /// is not finite; a huge or tiny `b_i`, an initial guess far from the solution, or a
    /// starting `rᵀM⁻¹r` or a `pᵀH_i p` that overflows while `M⁻¹r`, `p` and `H_i p` are
    /// finite is not a cause: the system is rescaled by a power of two internally, unless
    /// `b_i − H_i x0_i` overflows even so, see [`cg_with_initial_guess`]). `x_i` then holds
    /// the iterate reached when the system stopped (its start if it never stepped).
    /// [`CgResult::non_finite`] tells the causes apart.
    pub breakdown: Vec<bool>,
    /// Whether system `i` broke down on a NaN or ±Inf rather than on curvature: its `pᵀH_i p`
    /// came out NaN or ±Inf (the operator produced NaN/±Inf for it, or the dot product
    /// overflowed), its step size `rᵀz / pᵀH_i p` overflowed, its `rᵀz` came out NaN or ±Inf
    /// (e.g. a preconditioner output holding NaN), or its residual (updated, initial
    /// `b − H x0`, or true) came out non-finite. Only set together with
    /// [`CgResult::breakdown`]; a breakdown without it means CG met a finite curvature
    /// `pᵀH_i p ≤ 0` (`H_i` is not positive definite on the Krylov space) or a finite
    /// `rᵀM⁻¹r ≤ 0` with `r ≠ 0` (the preconditioner is not). Taken from the quantities the
    /// iteration computes anyway (no extra operator call or reduction); the counterpart of
    /// [`crate::LanczosResult::non_finite`].
    pub non_finite: Vec<bool>,
    /// Why system `i` stopped: [`CgTermination::Converged`] exactly when `converged[i]`,
    /// [`CgTermination::Breakdown`] exactly when `breakdown[i]`, otherwise
    /// [`CgTermination::MaxIterations`] or [`CgTermination::Stagnated`] (`converged` and
    /// `breakdown` are derived from it).
    pub termination: Vec<CgTermination>,
    /// Operator applications per system (an initial residual `b − H x0` counts as one, and so
    /// does each true-residual check).
    pub applications: Vec<usize>,
    /// Number of calls to [`BatchOperator::apply`].
    pub operator_calls: usize,
}

impl<V> CgResult<V> {
    /// `true` when every system converged.
    pub fn all_converged(&self) -> bool {
        self.converged.iter().all(|c| *c)
    }

    /// Total operator applications over all systems.
    pub fn total_applications(&self) -> usize {
        self.applications.iter().sum()
    }
}

/// Solves `H_i x_i = b_i` for every system `i` by conjugate gradient, **starting at zero**.
///
/// Step sizes `α_i`, `β_i` are per system; with [`crate::CgStopping::PerSystem`] (default)
/// system `i` stops when `‖r_i‖∞ ≤ atol + rtol·‖b_i‖∞` and is frozen (no more operator
/// applications, no more updates). The test is also checked before the first iteration (so
/// `b_i = 0` costs nothing). With [`CgParams::confirm_with_true_residual`] (the default) a
/// system that met the test on its updated residual is then checked on its true residual
/// (one more application), so that [`CgResult::converged`] holds for `b_i − H_i x_i`. Each
/// `H_i` (and a preconditioner's `M_i`) must be symmetric positive definite; a system whose
/// curvature `pᵀHp` or `rᵀM⁻¹r` is not positive and finite stops and is flagged in
/// [`CgResult::breakdown`] (and in [`CgResult::non_finite`] when a NaN or ±Inf, not a value
/// `≤ 0`, stopped it). A system whose `‖b_i‖∞` lies outside `[2⁻³², 2³²]` is solved for `b_i`
/// multiplied by a power of two that brings it near 1 (exact in floating point; CG is linear
/// in `b`), so that its dot products neither overflow nor underflow: `‖b_i‖ ≈ 1e200` in f64
/// or `1e30` in f32 converges like `b_i/‖b_i‖`. Likewise a system whose starting
/// `rᵀM⁻¹r` is extreme for its tolerance (a Jacobi preconditioner on a diagonal of 1e14 with
/// `‖b_i‖ ≈ 1e-9`, whose `rᵀM⁻¹r ≈ 1e-32` would fall below f32's normal range as it
/// converges) is scaled so that the range it crosses is centred on 1, and so is one whose
/// starting `rᵀM⁻¹r` or a `pᵀHp` overflows the reductions' type although `M⁻¹r`, `p` and
/// `Hp` are finite (f32 tensors reduce in f32: Jacobi on a diagonal of 1e-21 with
/// `‖b_i‖ ≈ 1e9`, or `H_i` of 1e14 with `‖b_i‖ ≈ 1e9`), sized from a bound on that
/// reduction (one or two more reductions, only then); other systems are
/// untouched, and the results of both are those of the unscaled system, bit for bit, as long
/// as nothing under- or overflows.
///
/// f16 tensors (normal numbers from 6.1e-5 to 65504) have no room for the window
/// `[2⁻³², 2³²]`: every `b_i` is brought to a max-norm in `[1, 2)` (and a far initial
/// residual likewise), so a power-of-two scale of `b` gives the unit-scale results bit for
/// bit, and `b ≈ 1e2` with `H ≈ 1e3`, or `b ≈ 1e-4`, solve like `b ≈ 1` (they used to break
/// down: `H b` overflowed f16, or the residuals fell into its subnormals). `H`'s own scale
/// is not changed: an f16 system needs `‖H_i‖∞ ≲ 2¹⁴` (so that `H_i p` stays below 65504
/// for `‖p‖∞ < 2`; an operator output of ±Inf is a [`CgResult::non_finite`] breakdown, so is
/// an initial guess whose `H_i x0_i` overflows, e.g. `x0 = b` with `‖H_i‖ ≈ 1e3`) and a
/// solution representable in f16; tolerances below ≈ 1e-3 are beyond its precision.
///
/// Errors (before any operator work): a right-hand side with a NaN or ±Inf entry
/// ([`KrylovError::NonFiniteInput`], naming the system and the entry), a batch that does not
/// match the operator's [`BatchOperator::batch_shape`] ([`KrylovError::ShapeMismatch`]), a
/// tensor of another dtype than the operator's (`KrylovError::DTypeMismatch`, also raised
/// when an operator returns the wrong dtype). An empty batch (`B = 0`) gives an empty result.
///
/// `CgResult::applications[i]` counts the calls in which system `i` was marked active, i.e. the
/// work the operator was asked to do for it. In floating point, plain CG can need many more
/// than `d` iterations on ill-conditioned matrices with spread spectra (measured, f64,
/// log-uniform spectrum: ≈ 6d at cond 1e6, d = 43; ≈ 8d at cond 1e6, d = 200, rtol 1e-4);
/// [`CgParams::reorthogonalize`] restores convergence in at most ≈ `d` iterations.
///
/// ```
/// use krylov::{cg, CgParams, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// // Two systems (columns): H_0 = diag(1, 4), H_1 = [[2, 1], [1, 2]].
/// let op = DenseNalgebraOperator::new(vec![
///     dmatrix![1.0, 0.0; 0.0, 4.0],
///     dmatrix![2.0, 1.0; 1.0, 2.0],
/// ]).unwrap();
/// let b = DMatrix::<f64>::from_column_slice(2, 2, &[1.0, 4.0, 3.0, 3.0]);
/// let res = cg(&op, &b, &CgParams::default().with_rtol(1e-12)).unwrap();
/// assert!(res.all_converged());
/// assert!((res.x[(0, 0)] - 1.0).abs() < 1e-12 && (res.x[(1, 0)] - 1.0).abs() < 1e-12);
/// assert!((res.x[(0, 1)] - 1.0).abs() < 1e-12 && (res.x[(1, 1)] - 1.0).abs() < 1e-12);
/// ```
pub fn cg<V, Op>(op: &Op, b: &V, params: &CgParams) -> Result<CgResult<V>, KrylovError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    cg_impl(&op, b, None, params, None)
}

/// [`cg`] starting from the initial guess `x0` (the CP-Flow reference starts at `x0 = b`).
/// The initial residual `b − H x0` costs one operator application per system. Like `b`, `x0`
/// must be finite ([`KrylovError::NonFiniteInput`]). CG's iterates depend on `r0 = b − H x0`,
/// so a system whose `‖r0‖∞` exceeds 2³² after the rescaling of `b` (a guess far from the
/// solution) is scaled down by a further power of two that centres the range its residuals
/// cross (from `‖r0‖` to the tolerance) on 1: `‖r0‖ ≈ 1e160` in f64 or `1e30` in f32 tensors
/// converges instead of overflowing `r0ᵀr0`. From so far away, rounding `x0 + αp` costs
/// ≈ `u·‖x0‖` per pass, which the true-residual restarts of
/// [`CgParams::confirm_with_true_residual`] refine away (measured: 533 iterations for
/// `‖r0‖/‖b‖ ≈ 1e160` at d = 8, cond 10, rtol 1e-12), so such a solve needs a raised
/// [`CgParams::max_iters`]. The guess is rescaled with `b`: one whose `b − H x0` overflows
/// the element type even so (`‖x0‖∞ ≈ 1e150` with `‖b‖∞ ≈ 1e-200` in f64, a guess
/// `1e350` times farther than `b` is large) cannot be iterated from; its system ends as a
/// non-finite breakdown ([`CgResult::non_finite`]) after 0 iterations, with `x_i = x0_i`
/// and a non-finite residual norm. A system with `b_i = 0` is solved by
/// `x_i = 0` whatever `x0_i` (converged after 0 iterations and 0 applications, as SciPy's `cg`
/// returns): with the default `atol = 0` its tolerance is 0, which iterating from `x0_i ≠ 0`
/// would never meet.
///
/// ```
/// use krylov::{cg_with_initial_guess, CgParams, DenseFaerOperator};
/// use faer::Mat;
/// let op = DenseFaerOperator::new(vec![Mat::<f64>::identity(3, 3) * 2.0]).unwrap();
/// let b = Mat::<f64>::from_fn(3, 1, |i, _| i as f64);
/// let res = cg_with_initial_guess(&op, &b, &b, &CgParams::default()).unwrap();
/// assert_eq!(res.iterations, vec![1]);
/// assert!((res.x[(2, 0)] - 1.0).abs() < 1e-12);
/// // b = 0: x = 0 at once, whatever the initial guess.
/// let zero = Mat::<f64>::zeros(3, 1);
/// let res = cg_with_initial_guess(&op, &zero, &b, &CgParams::default()).unwrap();
/// assert!(res.converged[0] && res.iterations[0] == 0 && res.applications[0] == 0);
/// assert_eq!(res.x[(2, 0)], 0.0);
/// ```
pub fn cg_with_initial_guess<V, Op>(
    op: &Op,
    b: &V,
    x0: &V,
    params: &CgParams,
) -> Result<CgResult<V>, KrylovError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    cg_impl(&op, b, Some(x0), params, None)
}

/// One iteration of CG as [`cg_with_initial_guess_observed`] reports it, after the solution
/// update `x_i ← x_i + α_i p_i`.
///
/// ```
/// use krylov::{cg_with_initial_guess_observed, CgParams, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// // System 0 (2·I) converges in one step, system 1 in two; then system 0 is frozen.
/// let op = DenseNalgebraOperator::new(vec![
///     dmatrix![2.0, 0.0; 0.0, 2.0],
///     dmatrix![1.0, 0.0; 0.0, 5.0],
/// ])?;
/// let b = DMatrix::<f64>::from_element(2, 2, 1.0);
/// let x0 = DMatrix::<f64>::zeros(2, 2);
/// let mut steps = Vec::new();
/// cg_with_initial_guess_observed(&op, &b, &x0, &CgParams::default(), |step| {
///     steps.push((step.iteration, step.operator_call, step.step_sizes.to_vec()));
///     Ok(())
/// })?;
/// assert_eq!(steps.len(), 2);
/// assert_eq!((steps[0].0, steps[0].1), (0, 1)); // call 0 formed b − H x0
/// assert!((steps[0].2[0] - 0.5).abs() < 1e-15); // α = rᵀr / rᵀHr = 1/2 for 2·I
/// assert_eq!(steps[1].2[0], 0.0); // frozen: no step
/// assert!(steps[1].2[1] > 0.0);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct CgStep<'a> {
    /// The iteration (pass over the batch), from 0.
    pub iteration: usize,
    /// The operator call, from 0, whose argument `p` this iteration stepped along. Call 0
    /// formed the initial residual `b − H x0` (made unless every `b_i` is zero). Without
    /// true-residual checks it is `iteration + 1`; each check of
    /// [`CgParams::confirm_with_true_residual`] (made when the iteration stops, and followed
    /// by more iterations only when a system restarts) is a call whose argument is the
    /// iterate `x`, followed by no step.
    pub operator_call: usize,
    /// `α_i` per system, such that the solution is `x0 + Σ_k α_k ⊙ p_k` with `p_k` the
    /// operator's argument (see [`cg_with_initial_guess_observed`]); `0` for a system that did
    /// not step (frozen or broken down). For a system rescaled internally (`‖b_i‖∞` outside
    /// `[2⁻³², 2³²]`, or not in `[1, 2)` for f16 tensors, or an initial residual far above
    /// `b_i`, solved for `s_i·b_i` with `s_i` a power of two), the operator's arguments are `s_i` times those of the unscaled
    /// system, and this is CG's step size divided by `s_i` (exact), so the identity holds for
    /// every `b` and `x0`.
    pub step_sizes: &'a [f64],
}

/// [`cg_with_initial_guess`], reporting every iteration's step sizes to `observer`, so that a
/// caller can follow any linear function of the solution through the operator's own calls:
/// the returned solution is `x0 + Σ_k α_k ⊙ p_k` (up to rounding), with `α_k` the step sizes
/// of iteration `k` (per system) and `p_k` the vector passed to the operator's call
/// [`CgStep::operator_call`] (`k + 1` when no true-residual check intervened). This holds for
/// any scale of `b` (see [`CgStep::step_sizes`]) and across restarts of
/// [`CgParams::confirm_with_true_residual`] (a restart changes the direction, not `x`); for
/// `b_i = 0` the solution is `x_i = 0` and no step is reported. The CP-Flow surrogate uses it
/// to accumulate the network's forward tangents of `u` from those of the directions its
/// Hessian-vector products already computed. An error returned by `observer` stops the solve
/// and is returned.
///
/// ```
/// use krylov::{cg_with_initial_guess_observed, CgParams, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// let op = DenseNalgebraOperator::new(vec![dmatrix![2.0, 1.0; 1.0, 3.0]]).unwrap();
/// let b = DMatrix::<f64>::from_column_slice(2, 1, &[1.0, 2.0]);
/// let mut alphas = Vec::new();
/// let res = cg_with_initial_guess_observed(&op, &b, &b, &CgParams::default(), |step| {
///     alphas.push(step.step_sizes[0]);
///     Ok(())
/// })
/// .unwrap();
/// assert_eq!(alphas.len(), res.iterations[0]);
/// ```
pub fn cg_with_initial_guess_observed<V, Op, F>(
    op: &Op,
    b: &V,
    x0: &V,
    params: &CgParams,
    mut observer: F,
) -> Result<CgResult<V>, KrylovError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
    F: FnMut(&CgStep<'_>) -> Result<(), KrylovError>,
{
    cg_impl(&op, b, Some(x0), params, Some(&mut observer))
}
