//! Batched Lanczos tridiagonalisation with optional full re-orthogonalisation.

use crate::operator::check_operator_shape;
use crate::{BatchOperator, BatchVectors, KrylovError};

/// Parameters of [`lanczos`]. Build with `LanczosParams::default()` and the `with_*` setters.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LanczosParams {
    /// Number of Lanczos steps `m` (the size of `T`). Capped at `d`. Default `10` (CP-Flow's `m1`).
    pub steps: usize,
    /// Full re-orthogonalisation of each new vector against all previous ones (two passes of
    /// classical Gram–Schmidt, "twice is enough"). Default `true` (the reference does it).
    pub reorthogonalize: bool,
    /// Return the Lanczos vectors in [`LanczosResult::basis`]. Default `false`.
    pub store_basis: bool,
    /// Relative breakdown threshold: system `i` stops when
    /// `β_{j+1} ≤ max(breakdown_tol, 100·u)·s_i`, where `u` is the unit roundoff of the vectors'
    /// element type and `s_i` the largest `|α|`, `β` seen so far for that system (an estimate of
    /// `‖H_i‖`). Default `1e-10`.
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
    /// Sets the relative breakdown threshold.
    pub fn with_breakdown_tol(mut self, breakdown_tol: f64) -> Self {
        self.breakdown_tol = breakdown_tol;
        self
    }
}

/// Outcome of [`lanczos`]: per system `i` a symmetric tridiagonal `T_i` of size `sizes[i]`
/// with diagonal `alphas[i]` and off-diagonal `betas[i]` (length `sizes[i] − 1`), such that
/// `Q_iᵀ H_i Q_i = T_i` with `Q_i e_1 = v0_i / ‖v0_i‖`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LanczosResult<V> {
    /// Diagonals `α` of `T_i` (length `sizes[i]`).
    pub alphas: Vec<Vec<f64>>,
    /// Off-diagonals `β` of `T_i` (length `sizes[i] − 1`, or 0 when `sizes[i] = 0`).
    pub betas: Vec<Vec<f64>>,
    /// Size reached per system: `min(m, d)`, or less after a breakdown.
    pub sizes: Vec<usize>,
    /// Whether system `i` stopped early because `β` fell below the breakdown threshold (the
    /// Krylov space is invariant: the Ritz values of `T_i` are exact eigenvalues of `H_i`), or
    /// because its start vector was zero or non-finite (then `sizes[i] = 0`).
    pub breakdown: Vec<bool>,
    /// `‖v0_i‖₂` (SLQ multiplies the quadrature by its square).
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

/// Runs `m = min(steps, d)` Lanczos steps on every system from the start vectors `v0`
/// (normalised internally, so they need not be unit vectors).
///
/// **Breakdown** (`β_{j+1}` below the threshold of [`LanczosParams::breakdown_tol`]) stops that
/// system early with the size it reached; it is frozen (no further operator work) and flagged
/// in [`LanczosResult::breakdown`]. At a breakdown the Krylov space is invariant, so Gauss
/// quadrature with the reached `T_i` is exact for `v0_iᵀ f(H_i) v0_i`; no restart with a new
/// random vector (as the reference does) is needed for quadrature.
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
pub fn lanczos<V, Op>(
    op: &Op,
    v0: &V,
    params: &LanczosParams,
) -> Result<LanczosResult<V>, KrylovError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    v0.validate()?;
    check_operator_shape("lanczos: start vectors vs operator", op, v0)?;
    if !(params.breakdown_tol >= 0.0 && params.breakdown_tol.is_finite()) {
        return Err(KrylovError::InvalidParameter(format!(
            "breakdown_tol must be finite and ≥ 0, got {}",
            params.breakdown_tol
        )));
    }
    let n = v0.n_systems();
    let m = params.steps.min(v0.system_dim());
    let rel_tol = params.breakdown_tol.max(100.0 * v0.unit_roundoff());
    let keep_basis = params.reorthogonalize || params.store_basis;
    let ones = vec![1.0; n];

    let initial_norms = v0.norms2()?;
    let mut active: Vec<bool> = initial_norms
        .iter()
        .map(|v| *v > 0.0 && v.is_finite())
        .collect();
    let mut breakdown: Vec<bool> = active.iter().map(|a| !a).collect();
    let mut q = v0.detached();
    let inv: Vec<f64> = initial_norms
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
        let beta = w.norms2()?;
        let mut inv_beta = vec![1.0; n];
        for i in 0..n {
            if !active[i] {
                continue;
            }
            scale[i] = scale[i].max(beta[i]);
            if beta[i] > rel_tol * scale[i] && beta[i].is_finite() {
                betas[i].push(beta[i]);
                inv_beta[i] = 1.0 / beta[i];
            } else {
                active[i] = false;
                breakdown[i] = true;
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
        initial_norms,
        basis,
        applications,
        operator_calls,
        unit_roundoff: v0.unit_roundoff(),
    })
}
