//! Batched Lanczos tridiagonalisation with optional full re-orthogonalisation.

use crate::operator::check_operator_shape;
use crate::vectors::{check_finite, has_f64_range, power_of_two_scale};
use crate::{BatchOperator, BatchVectors, KrylovError};

/// Parameters of [`lanczos`]. Build with `LanczosParams::default()` and the `with_*` setters.
///
/// ```
/// use krylov::{lanczos, DenseNalgebraOperator, LanczosParams};
/// use nalgebra::{DMatrix, dmatrix};
/// let op = DenseNalgebraOperator::new(vec![dmatrix![2.0, 1.0, 0.0; 1.0, 3.0, 1.0; 0.0, 1.0, 4.0]])?;
/// let v0 = DMatrix::<f64>::from_element(3, 1, 1.0);
/// // 50 steps are capped at d = 3; the basis is returned on request.
/// let params = LanczosParams::default().with_steps(50).with_store_basis(true);
/// let res = lanczos(&op, &v0, &params)?;
/// assert_eq!(res.sizes, vec![3]);
/// let q = res.basis.expect("store_basis was set");
/// assert_eq!(q.len(), 3);
/// // The Lanczos vectors are orthonormal.
/// assert!((q[0].dot(&q[0]) - 1.0).abs() < 1e-12 && q[0].dot(&q[2]).abs() < 1e-12);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LanczosParams {
    /// Number of Lanczos steps `m` (the size of `T`). Capped at `d`. Default `10` (CP-Flow's `m1`).
    /// Must be at least 1: zero steps would give every system an empty tridiagonal, which
    /// reads as a zero start vector (quadrature `vᵀ f(H) v = 0`) whatever the start vector.
    pub steps: usize,
    /// Full re-orthogonalisation of each new vector against all previous ones (two passes of
    /// classical Gram–Schmidt, "twice is enough"). Default `true` (the reference does it).
    pub reorthogonalize: bool,
    /// Return the Lanczos vectors in [`LanczosResult::basis`]. Default `false`.
    pub store_basis: bool,
    /// Relative breakdown threshold: system `i` stops when
    /// `β_{j+1} ≤ max(breakdown_tol, 100·u)·s_i`, where `u` is the unit roundoff of the vectors'
    /// element type and `s_i` the largest `|α|`, `β` seen so far for that system (an estimate of
    /// `‖H_i‖`). Default `1e-10`; must lie in `[0, 1)` (a threshold of 1 or more would stop
    /// every system after one step).
    ///
    /// The `100·u` floor stays when `breakdown_tol` is 0 (or below it: in f32 it is 6e-6, so
    /// the default 1e-10 does not change an f32 run at all). Below it `β` is within a small
    /// factor of the rounding error of the computed `H q` (`≈ √d·u·‖H‖` to `d·u·‖H‖`), so the
    /// next Lanczos vector would be mostly noise: a restart from an arbitrary direction, and for
    /// an exact zero (`H = c·I`: `w = c·q − c·q = 0`) a division by zero, a NaN. Nor would
    /// continuing recover what the floor drops: the eigenvalues it leaves out are those below
    /// about `100·u·‖H‖`, and `logdet`'s quadrature raises Ritz values
    /// below that same level (`RITZ_ROUNDOFF_FACTOR·u·max|θ|`) to it anyway. An operator whose
    /// condition number nears `1/(100·u)` (8.4e4 in f32) therefore stops early **without** an
    /// invariant subspace (f32, `H = diag(1 … 1e6)`, `d = 30`: at step 26, `β ≈ 6`): see
    /// [`LanczosResult::breakdown_betas`], which tells such a stop from an exact one.
    pub breakdown_tol: f64,
}

impl Default for LanczosParams {
    fn default() -> Self {
        Self {
            steps: 10,
            reorthogonalize: true,
            store_basis: false,
            breakdown_tol: 1e-10,
        }
    }
}

impl LanczosParams {
    /// Sets the number of steps `m`.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }
    /// Enables or disables full re-orthogonalisation.
    pub fn with_reorthogonalize(mut self, reorthogonalize: bool) -> Self {
        self.reorthogonalize = reorthogonalize;
        self
    }
    /// Enables or disables returning the Lanczos basis.
    pub fn with_store_basis(mut self, store_basis: bool) -> Self {
        self.store_basis = store_basis;
        self
    }
    /// Sets the relative breakdown threshold (the `100·u` floor of
    /// [`LanczosParams::breakdown_tol`] stays: 0 means "the floor only").
    pub fn with_breakdown_tol(mut self, breakdown_tol: f64) -> Self {
        self.breakdown_tol = breakdown_tol;
        self
    }
}

/// Outcome of [`lanczos`]: per system `i` a symmetric tridiagonal `T_i` of size `sizes[i]`
/// with diagonal `alphas[i]` and off-diagonal `betas[i]` (length `sizes[i] − 1`), such that
/// `Q_iᵀ H_i Q_i = T_i` with `Q_i e_1 = v0_i / ‖v0_i‖`.
///
/// ```
/// use krylov::{lanczos, DenseNalgebraOperator, LanczosParams};
/// use nalgebra::{DMatrix, dmatrix};
/// // System 0: 3·I, an invariant Krylov space after one step (breakdown, exact).
/// // System 1: diag(1, 2, 3), two steps requested.
/// let op = DenseNalgebraOperator::new(vec![
///     DMatrix::<f64>::identity(3, 3) * 3.0,
///     dmatrix![1.0, 0.0, 0.0; 0.0, 2.0, 0.0; 0.0, 0.0, 3.0],
/// ])?;
/// let v0 = DMatrix::<f64>::from_element(3, 2, 2.0);
/// let res = lanczos(&op, &v0, &LanczosParams::default().with_steps(2))?;
/// assert_eq!(res.sizes, vec![1, 2]);
/// assert_eq!(res.breakdown, vec![true, false]);
/// assert_eq!(res.non_finite, vec![false, false]);
/// assert!((res.alphas[0][0] - 3.0).abs() < 1e-12 && res.betas[0].is_empty());
/// // α_1 = v̂ᵀHv̂ with v̂ = (1,1,1)/√3: the mean of the eigenvalues.
/// assert!((res.alphas[1][0] - 2.0).abs() < 1e-12 && res.betas[1].len() == 1);
/// assert!((res.initial_norms[0] - 2.0 * 3f64.sqrt()).abs() < 1e-12);
/// assert_eq!(res.applications, vec![1, 2]);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LanczosResult<V> {
    /// Diagonals `α` of `T_i` (length `sizes[i]`).
    pub alphas: Vec<Vec<f64>>,
    /// Off-diagonals `β` of `T_i` (length `sizes[i] − 1`, or 0 when `sizes[i] = 0`).
    pub betas: Vec<Vec<f64>>,
    /// Size reached per system: `min(m, d)`, or less after a breakdown.
    pub sizes: Vec<usize>,
    /// Whether system `i` stopped early because `β` fell below the breakdown threshold, or
    /// because its start vector was zero (then `sizes[i] = 0`, no operator work, and `T_i` is
    /// empty: `v0_iᵀ f(H_i) v0_i = 0` for any `f`). Never set together with
    /// [`LanczosResult::non_finite`].
    ///
    /// The threshold is relative to `‖H_i‖` ([`LanczosParams::breakdown_tol`], at least
    /// `100·u`), so a breakdown means an invariant Krylov space (the Ritz values of `T_i` are
    /// eigenvalues of `H_i`) only up to a coupling of that size: compare
    /// [`LanczosResult::breakdown_betas`] with the smallest Ritz value. For a well-conditioned
    /// operator (`H = c·I`, few distinct eigenvalues) the dropped `β` is at round-off and the
    /// stop is exact; for one whose condition number nears `1/(100·u)` it is not.
    pub breakdown: Vec<bool>,
    /// The `β_{k+1} = ‖w‖` that stopped system `i` at its breakdown (`k = sizes[i]`): the
    /// coupling of the Krylov space to the rest of `H_i` that the stop takes for zero, so
    /// `T_i` is exact for an operator within `β_{k+1}` of `H_i` (in the 2-norm). It perturbs
    /// the Ritz values by up to about that much: next to the smallest one, `θ_min`, a large
    /// ratio `β_{k+1}/θ_min` means the small end of the spectrum is not resolved (the
    /// breakdown was below the float's resolution relative to `‖H_i‖`, not an invariant
    /// subspace; `logdet` counts a stop with a ratio above 1e-2 as premature). `0` for a
    /// system that did not break down and for a zero start vector.
    pub breakdown_betas: Vec<f64>,
    /// Whether system `i` stopped because a coefficient came out NaN or ±Inf: the operator
    /// produced NaN or ±Inf for it (or its products overflowed). The non-finite coefficient is
    /// **not** stored: `alphas[i]` and `betas[i]` hold the finite coefficients of the steps
    /// before (possibly none), a truncated run that is **not** an invariant subspace, so its
    /// Ritz values are not exact and quadrature with it is not meaningful
    /// (`logdet::slq_logdet_from_lanczos` refuses it). Distinct from
    /// [`LanczosResult::breakdown`], which is never set with it.
    pub non_finite: Vec<bool>,
    /// `‖v0_i‖₂` (SLQ multiplies the quadrature by its square), computed without over- or
    /// underflow in the dot product: finite for any finite `v0_i` whose 2-norm is below
    /// `f64::MAX` (e.g. `1e160·√3` for entries `1e160`), `+∞` only when the norm itself
    /// exceeds the f64 range (entries near `f64::MAX`; the run is still that of
    /// `v0_i/‖v0_i‖`), `0` for a zero start vector.
    pub initial_norms: Vec<f64>,
    /// The Lanczos vectors `q_0, …, q_{k−1}` (`k = max sizes`) when
    /// [`LanczosParams::store_basis`] is set; system `i` uses the first `sizes[i]` of them.
    pub basis: Option<Vec<V>>,
    /// Operator applications per system.
    pub applications: Vec<usize>,
    /// Number of calls to [`BatchOperator::apply`].
    pub operator_calls: usize,
    /// Unit roundoff of the vectors' element type ([`BatchVectors::unit_roundoff`]): the
    /// precision of the coefficients, for callers that judge round-off in the Ritz values.
    pub unit_roundoff: f64,
}

impl<V> LanczosResult<V> {
    /// The Ritz values of system `i`: the eigenvalues of its tridiagonal `T_i` (size
    /// `sizes[i]`), ascending. They estimate extreme eigenvalues of `H_i` (all of them once
    /// `sizes[i] = d` or after a breakdown); SLQ uses them as its quadrature nodes. Computed
    /// by [`gauss_quadrature_nodes`](crate::gauss_quadrature_nodes), the same computation as
    /// `logdet`'s quadrature. Empty for an empty tridiagonal (a zero start vector, or a
    /// non-finite first product); `None` when `i` is not a system of the batch, or should the
    /// small eigenproblem fail (it does not for finite coefficients, which are all a result
    /// stores).
    ///
    /// ```
    /// use krylov::{lanczos, DenseNalgebraOperator, LanczosParams};
    /// use nalgebra::{DMatrix, dmatrix};
    /// // System 0: diag(1, 2, 4), all three steps: the Ritz values are its eigenvalues.
    /// // System 1: 3·I, a breakdown after one step: its one eigenvalue, exactly.
    /// let op = DenseNalgebraOperator::new(vec![
    ///     dmatrix![1.0, 0.0, 0.0; 0.0, 2.0, 0.0; 0.0, 0.0, 4.0],
    ///     DMatrix::<f64>::identity(3, 3) * 3.0,
    /// ])?;
    /// let v0 = DMatrix::<f64>::from_element(3, 2, 1.0);
    /// let res = lanczos(&op, &v0, &LanczosParams::default().with_steps(3))?;
    /// let ritz = res.ritz_values(0).expect("system 0");
    /// for (got, want) in ritz.iter().zip([1.0, 2.0, 4.0]) {
    ///     assert!((got - want).abs() < 1e-12, "{ritz:?}");
    /// }
    /// let one = res.ritz_values(1).expect("system 1");
    /// assert!(one.len() == 1 && (one[0] - 3.0).abs() < 1e-12, "{one:?}");
    /// assert_eq!(res.ritz_values(2), None); // two systems only
    /// # Ok::<(), krylov::KrylovError>(())
    /// ```
    pub fn ritz_values(&self, i: usize) -> Option<Vec<f64>> {
        let k = *self.sizes.get(i)?;
        let alphas = self.alphas.get(i)?.get(..k)?;
        let betas = self.betas.get(i)?;
        let (mut nodes, _weights) = crate::gauss_quadrature_nodes(alphas, betas)?;
        nodes.sort_by(f64::total_cmp);
        Some(nodes)
    }
}

/// Runs `m = min(steps, d)` Lanczos steps on every system from the start vectors `v0`
/// (normalised internally, so they need not be unit vectors: a start vector of any finite
/// scale, `1e-320` to `1e300` entries included, gives the run of its unit vector, after a
/// rescaling by a power of two, and its norm in [`LanczosResult::initial_norms`]). A zero
/// start vector gives that system an empty tridiagonal (`sizes[i] = 0`). The norms `β` of the
/// new Lanczos vectors are rescaled the same way when their squares would leave the range of
/// the element type, so an operator of huge or tiny scale (`‖H‖ ≈ 1e±200` in f64, `1e±25` in
/// f32 tensors) gives the coefficients of the unscaled one times the scale.
///
/// Errors (before any operator work): a start vector with a NaN or ±Inf entry
/// ([`KrylovError::NonFiniteInput`], naming the system and the entry), a batch that does not
/// match the operator's [`BatchOperator::batch_shape`] ([`KrylovError::ShapeMismatch`]), an
/// invalid [`LanczosParams::breakdown_tol`] (outside `[0, 1)`) or [`LanczosParams::steps`] = 0
/// ([`KrylovError::InvalidParameter`]). An operator
/// output holding NaN or ±Inf is not an error: the system stops and is flagged in
/// [`LanczosResult::non_finite`] (not in `breakdown`), keeping only its finite coefficients;
/// the other systems run on.
///
/// **Breakdown** (`β_{j+1}` below the threshold of [`LanczosParams::breakdown_tol`]) stops that
/// system early with the size it reached; it is frozen (no further operator work) and flagged
/// in [`LanczosResult::breakdown`], with the dropped `β_{j+1}` in
/// [`LanczosResult::breakdown_betas`]. When that `β` is at round-off the Krylov space is
/// invariant, so Gauss quadrature with the reached `T_i` is exact for `v0_iᵀ f(H_i) v0_i`; no
/// restart with a new random vector (as the reference does) is needed for quadrature. The
/// threshold is relative to `‖H_i‖`, though: an operator with eigenvalues below it (condition
/// number near `1/(100·u)`) stops without resolving them, and the quadrature then misses them
/// (`logdet::StochasticEstimate::premature_breakdowns` counts such stops).
///
/// ```
/// use krylov::{lanczos, LanczosParams, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// let h = dmatrix![2.0, 1.0, 0.0; 1.0, 3.0, 1.0; 0.0, 1.0, 4.0];
/// let op = DenseNalgebraOperator::new(vec![h.clone()]).unwrap();
/// let v0 = DMatrix::from_element(3, 1, 1.0);
/// let res = lanczos(&op, &v0, &LanczosParams::default().with_steps(3)).unwrap();
/// // With m = d the eigenvalues of T are those of H; the trace is preserved.
/// let trace: f64 = res.alphas[0].iter().sum();
/// assert!((trace - 9.0).abs() < 1e-12);
/// assert_eq!(res.sizes, vec![3]);
/// ```
///
/// An operator that outputs NaN for one system stops that system, flagged in `non_finite`:
///
/// ```
/// use krylov::{lanczos, FnOperator, KrylovError, LanczosParams};
/// use nalgebra::DMatrix;
/// // System 0: NaN from the second product on; system 1: diag(1, 2, 3).
/// let calls = std::cell::Cell::new(0);
/// let op = FnOperator::new(|x: &DMatrix<f64>, _: &[bool]| -> Result<_, KrylovError> {
///     calls.set(calls.get() + 1);
///     let mut y = DMatrix::from_fn(3, 2, |i, j| (i + 1) as f64 * x[(i, j)]);
///     if calls.get() > 1 {
///         y[(0, 0)] = f64::NAN;
///     }
///     Ok(y)
/// });
/// let v0 = DMatrix::<f64>::from_element(3, 2, 1.0);
/// let res = lanczos(&op, &v0, &LanczosParams::default().with_steps(3))?;
/// assert_eq!(res.non_finite, vec![true, false]);
/// assert_eq!(res.breakdown, vec![false, false]);
/// // Only the finite coefficient of the first step is kept for system 0.
/// assert_eq!((res.sizes[0], res.alphas[0].len(), res.betas[0].len()), (1, 1, 0));
/// assert!(res.alphas[0][0].is_finite() && res.sizes[1] == 3);
/// # Ok::<(), KrylovError>(())
/// ```
pub fn lanczos<V, Op>(
    op: &Op,
    v0: &V,
    params: &LanczosParams,
) -> Result<LanczosResult<V>, KrylovError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    // Compiled once per vector type, for `dyn BatchOperator<V>` (as CG is).
    lanczos_dyn(&op, v0, params)
}

fn lanczos_dyn<V: BatchVectors>(
    op: &dyn BatchOperator<V>,
    v0: &V,
    params: &LanczosParams,
) -> Result<LanczosResult<V>, KrylovError> {
    v0.validate()?;
    check_operator_shape("lanczos: start vectors vs operator", op, v0)?;
    // A threshold of 1 or more is met by every β (β ≤ tol·max(|α|, β)): every system would
    // stop after one step, reported as an invariant subspace.
    if !(params.breakdown_tol >= 0.0 && params.breakdown_tol < 1.0) {
        return Err(KrylovError::InvalidParameter(format!(
            "breakdown_tol must lie in [0, 1), got {:e}",
            params.breakdown_tol
        )));
    }
    // Zero steps give an empty tridiagonal for every system, the result of a zero start
    // vector: `logdet::slq_logdet_from_lanczos` would read it as `vᵀ log(H) v = 0`.
    if params.steps == 0 {
        return Err(KrylovError::InvalidParameter(
            "lanczos needs steps ≥ 1 (zero steps give an empty tridiagonal, as a zero start \
             vector would)"
                .into(),
        ));
    }
    let n = v0.n_systems();
    let m = params.steps.min(v0.system_dim());
    let rel_tol = params.breakdown_tol.max(100.0 * v0.unit_roundoff());
    let keep_basis = params.reorthogonalize || params.store_basis;
    let ones = vec![1.0; n];

    // A non-finite start vector has no direction: refused, as `cg` refuses such a right-hand
    // side (it used to give an empty tridiagonal, which SLQ turned into a log-det of 0).
    let max_norms = v0.norms_inf()?;
    check_finite("lanczos start vector", v0, &max_norms)?;
    // The 2-norm of a huge (‖v0‖∞ ≈ 1e160) or tiny (1e-320) start vector over- or underflows
    // in its dot product, so the vector is first multiplied by a power of two that brings its
    // max-norm near 1 (exact: the direction, hence the run, is that of v0/‖v0‖), normalised,
    // and its true norm recovered by dividing by that power of two.
    let scales: Vec<f64> = max_norms
        .iter()
        .map(|&nm| power_of_two_scale(nm, v0.unit_roundoff()))
        .collect();
    let mut q = v0.detached();
    if scales.iter().any(|s| *s != 1.0) {
        q.scale_per_system(&scales)?;
    }
    let scaled_norms = q.norms2()?;
    let initial_norms: Vec<f64> = scaled_norms
        .iter()
        .zip(&scales)
        .map(|(nrm, s)| nrm / s)
        .collect();
    // Only a zero start vector is inactive here (`scaled_norms` is finite: entries ≤ 2³²).
    let mut active: Vec<bool> = scaled_norms.iter().map(|v| *v > 0.0).collect();
    let mut breakdown: Vec<bool> = active.iter().map(|a| !a).collect();
    let mut breakdown_betas = vec![0.0f64; n];
    let mut non_finite = vec![false; n];
    let inv: Vec<f64> = scaled_norms
        .iter()
        .zip(&active)
        .map(|(v, a)| if *a { 1.0 / v } else { 1.0 })
        .collect();
    q.scale_per_system(&inv)?;

    let mut alphas: Vec<Vec<f64>> = vec![Vec::with_capacity(m); n];
    let mut betas: Vec<Vec<f64>> = vec![Vec::with_capacity(m.saturating_sub(1)); n];
    let mut sizes = vec![0usize; n];
    let mut scale = vec![0.0f64; n];
    let mut applications = vec![0usize; n];
    let mut operator_calls = 0usize;
    let mut basis: Vec<V> = if keep_basis {
        vec![q.clone()]
    } else {
        Vec::new()
    };
    let mut q_prev: Option<V> = None;
    let mut beta_prev = vec![0.0f64; n];

    for j in 0..m {
        if !active.iter().any(|a| *a) {
            break;
        }
        let mut w = op.apply(&q, &active)?;
        v0.check_compatible("operator output", &w)?;
        operator_calls += 1;
        for (a, act) in applications.iter_mut().zip(&active) {
            *a += usize::from(*act);
        }
        let alpha = q.dots(&w)?;
        // A NaN or ±Inf in `w_i` makes `α_i` non-finite (the dot product propagates it): the
        // system stops here, without storing `α_i`, flagged apart from an exact breakdown.
        for i in 0..n {
            if active[i] && !alpha[i].is_finite() {
                active[i] = false;
                non_finite[i] = true;
                // The β that led here belongs to a step that is not stored.
                betas[i].truncate(sizes[i].saturating_sub(1));
            }
        }
        let neg_alpha: Vec<f64> = alpha.iter().map(|a| -a).collect();
        w.axpby_masked(&ones, &neg_alpha, &q, &active)?;
        if let Some(qp) = &q_prev {
            let neg_beta: Vec<f64> = beta_prev.iter().map(|b| -b).collect();
            w.axpby_masked(&ones, &neg_beta, qp, &active)?;
        }
        if params.reorthogonalize {
            w.orthogonalize_against(&basis, &active)?;
            w.orthogonalize_against(&basis, &active)?;
        }
        for i in (0..n).filter(|&i| active[i]) {
            alphas[i].push(alpha[i]);
            sizes[i] = j + 1;
            scale[i] = scale[i].max(alpha[i].abs());
        }
        if j + 1 == m {
            break;
        }
        // `w_i` may come back multiplied by a power of two, of norm `scaled_beta[i]`.
        let (beta, scaled_beta) = safe_norms2(&mut w, &active)?;
        let mut inv_beta = vec![1.0; n];
        for i in 0..n {
            if !active[i] {
                continue;
            }
            if !beta[i].is_finite() {
                active[i] = false;
                non_finite[i] = true;
                continue;
            }
            scale[i] = scale[i].max(beta[i]);
            if beta[i] > rel_tol * scale[i] {
                betas[i].push(beta[i]);
                inv_beta[i] = 1.0 / scaled_beta[i];
            } else {
                active[i] = false;
                breakdown[i] = true;
                breakdown_betas[i] = beta[i];
            }
        }
        w.scale_per_system(&inv_beta)?;
        beta_prev = beta;
        q_prev = Some(std::mem::replace(&mut q, w));
        if keep_basis && active.iter().any(|a| *a) {
            basis.push(q.clone());
        }
    }

    let basis = if params.store_basis {
        let k = sizes.iter().copied().max().unwrap_or(0);
        basis.truncate(k);
        Some(basis)
    } else {
        None
    };
    Ok(LanczosResult {
        alphas,
        betas,
        sizes,
        breakdown,
        breakdown_betas,
        non_finite,
        initial_norms,
        basis,
        applications,
        operator_calls,
        unit_roundoff: v0.unit_roundoff(),
    })
}

/// Per-system 2-norms of `w` without overflow or underflow of the squares in the dot
/// products, for operators of huge or tiny scale (`‖H‖ ≈ 1e-200` made every `β² ≈ 1e-400`
/// underflow, and Lanczos stopped with a spurious breakdown). Returns `(norms, scaled)`:
/// the norms of the active systems whose plain 2-norm lies outside a band where the squares are
/// safe (`[2⁻⁴⁰⁰, 2⁴⁰⁰]` for f64; `[2⁻⁵⁰, 2⁵⁰]` for lower precisions, which the tensor
/// backend reduces in f32) are recomputed after multiplying `w_i` in place by a power of
/// two (exact) that brings its max-norm near 1; `scaled[i]` is the norm of the `w_i`
/// returned (divide by it to normalise), `norms[i]` the norm of the original `w_i`. Inside the
/// band (the usual case) this costs nothing beyond the plain norms.
fn safe_norms2<V: BatchVectors>(
    w: &mut V,
    active: &[bool],
) -> Result<(Vec<f64>, Vec<f64>), KrylovError> {
    let norms = w.norms2()?;
    let u = w.unit_roundoff();
    let band = if has_f64_range(u) {
        2f64.powi(-400)..=2f64.powi(400)
    } else {
        2f64.powi(-50)..=2f64.powi(50)
    };
    let suspect: Vec<bool> = norms
        .iter()
        .zip(active)
        .map(|(nm, a)| *a && !band.contains(nm))
        .collect();
    if !suspect.iter().any(|s| *s) {
        return Ok((norms.clone(), norms));
    }
    let max_norms = w.norms_inf()?;
    let scales: Vec<f64> = max_norms
        .iter()
        .zip(&suspect)
        .map(|(m, s)| {
            if *s && m.is_finite() {
                power_of_two_scale(*m, u)
            } else {
                1.0
            }
        })
        .collect();
    if scales.iter().all(|s| *s == 1.0) {
        return Ok((norms.clone(), norms));
    }
    w.scale_per_system(&scales)?;
    let rescaled = w.norms2()?;
    let mut true_norms = norms;
    let mut scaled = true_norms.clone();
    for (i, s) in scales.iter().enumerate() {
        if *s != 1.0 {
            scaled[i] = rescaled[i];
            true_norms[i] = rescaled[i] / s;
        }
    }
    Ok((true_norms, scaled))
}

#[cfg(test)]
mod ritz_tests {
    use nalgebra::{DMatrix, DVector};

    use crate::{DenseNalgebraOperator, LanczosParams, lanczos};

    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_by(f64::total_cmp);
        v
    }

    /// Against nalgebra's dense symmetric eigensolver: of `H` itself with `d` steps, of the
    /// tridiagonal `T` built from the coefficients with fewer; within `1e-12·‖H‖` (both are
    /// backward stable, with errors of a few `u·‖H‖`; Lanczos with full
    /// re-orthogonalisation adds `O(d·u·‖H‖)`).
    #[test]
    fn ritz_values_are_the_eigenvalues_of_the_tridiagonal() {
        let d = 8;
        // Eigenvalues 0.5, 1, …, 4 rotated off the diagonal.
        let q = DMatrix::<f64>::from_fn(d, d, |i, j| ((3 * i + j * j + 1) as f64).sin())
            .qr()
            .q();
        let eig = DVector::from_fn(d, |i, _| 0.5 * (i + 1) as f64);
        let h = &q * DMatrix::from_diagonal(&eig) * q.transpose();
        let op = DenseNalgebraOperator::new(vec![h.clone()]).unwrap();
        let v0 = DMatrix::<f64>::from_fn(d, 1, |i, _| 1.0 + 0.1 * i as f64);
        let full = lanczos(&op, &v0, &LanczosParams::default().with_steps(d)).unwrap();
        let got = full.ritz_values(0).unwrap();
        let want = sorted(eig.iter().copied().collect());
        assert_eq!(got.len(), d);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12 * 4.0, "{got:?} vs {want:?}");
        }
        let part = lanczos(&op, &v0, &LanczosParams::default().with_steps(3)).unwrap();
        let (a, b) = (&part.alphas[0], &part.betas[0]);
        let t = DMatrix::<f64>::from_fn(3, 3, |i, j| match i.abs_diff(j) {
            0 => a[i],
            1 => b[i.min(j)],
            _ => 0.0,
        });
        let want = sorted(t.symmetric_eigenvalues().iter().copied().collect());
        let got = part.ritz_values(0).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12 * 4.0, "{got:?} vs {want:?}");
        }
        // Interlacing: inside the spectrum of H.
        assert!(got[0] >= 0.5 - 1e-12 && got[2] <= 4.0 + 1e-12);
    }

    /// A zero start vector gives an empty tridiagonal, so no Ritz values (not an error).
    #[test]
    fn an_empty_tridiagonal_has_no_ritz_values() {
        let op = DenseNalgebraOperator::new(vec![DMatrix::<f64>::identity(2, 2)]).unwrap();
        let res = lanczos(&op, &DMatrix::zeros(2, 1), &LanczosParams::default()).unwrap();
        assert_eq!(res.sizes, vec![0]);
        assert_eq!(res.ritz_values(0), Some(Vec::new()));
        assert_eq!(res.ritz_values(1), None);
    }
}
