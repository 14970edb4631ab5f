//! CG preconditioners: none, Jacobi (the operator's diagonal) and one the operator supplies
//! (`M⁻¹ r` from [`BatchOperator::precondition`]).

use crate::operator::batch_shapes_match;
use crate::{BatchOperator, BatchVectors, KrylovError};

/// Preconditioner used by [`crate::cg()`].
///
/// ```
/// use krylov::{cg, CgParams, FnOperator, KrylovError, Preconditioner};
/// use nalgebra::DMatrix;
/// // H = diag(1, 10, 100) as a closure, which does not know its diagonal.
/// let h = [1.0, 10.0, 100.0];
/// let op = FnOperator::new(|x: &DMatrix<f64>, _: &[bool]| -> Result<_, KrylovError> {
///     Ok(DMatrix::from_fn(3, x.ncols(), |i, j| h[i] * x[(i, j)]))
/// });
/// let b = DMatrix::<f64>::from_column_slice(3, 1, &[1.0, 10.0, 100.0]);
/// let jacobi = CgParams::default().with_preconditioner(Preconditioner::Jacobi);
/// assert!(matches!(cg(&op, &b, &jacobi), Err(KrylovError::MissingDiagonal)));
/// // With the diagonal attached, Jacobi solves a diagonal system in one step.
/// let op = op.with_diagonal(DMatrix::from_column_slice(3, 1, &h));
/// let res = cg(&op, &b, &jacobi)?;
/// assert_eq!(res.iterations, vec![1]);
/// assert!((res.x[(2, 0)] - 1.0).abs() < 1e-12);
/// # Ok::<(), KrylovError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Preconditioner {
    /// Plain CG. The default.
    #[default]
    None,
    /// Jacobi: `M = diag(H_i)`. Needs [`BatchOperator::diagonal`] (see
    /// [`crate::WithDiagonal`]); every diagonal entry must be `> 0`, and large enough that its
    /// inverse is finite in the element type ([`KrylovError::NonPositiveDiagonal`] otherwise). An empty batch (`B = 0`)
    /// accepts the empty diagonal of an empty operator whatever its `d`, and gives an empty
    /// result, as without a preconditioner.
    Jacobi,
    /// `M⁻¹ r` computed by the operator ([`BatchOperator::precondition`], e.g. attached with
    /// [`crate::FnOperator::with_preconditioner`]); `M` must be symmetric positive definite.
    /// CG checks `rᵀM⁻¹r > 0` (finite) on every residual `r ≠ 0` it preconditions: a system
    /// whose `M` is indefinite or negative definite on its Krylov space stops there as a
    /// breakdown ([`crate::CgResult::breakdown`], without [`crate::CgResult::non_finite`]),
    /// one whose `M⁻¹r` holds NaN/±Inf with `non_finite`, before the next operator product
    /// (an unchecked iteration would run on in an indefinite inner product, often to the
    /// iteration cap). A converged system (`r = 0`, so `rᵀM⁻¹r = 0`) is not flagged.
    /// Not combined with [`crate::CgParams::reorthogonalize`] (which needs `M^{-1/2}`).
    /// The stopping test stays on the residual `b − H x`, so the solution meets the same
    /// tolerance as without a preconditioner.
    Supplied,
}

/// A preconditioner made ready for one solve.
pub(crate) enum Prepared<V> {
    Identity,
    /// `1 / diag(H_i)`.
    InverseDiagonal(V),
    Supplied,
}

impl<V: BatchVectors> Prepared<V> {
    /// Jacobi's inverse diagonal, checked before any work; a supplied `M⁻¹` is asked for at
    /// its first use ([`KrylovError::MissingPreconditioner`] if the operator has none).
    pub(crate) fn new<Op>(kind: Preconditioner, op: &Op, b: &V) -> Result<Self, KrylovError>
    where
        Op: BatchOperator<V> + ?Sized,
    {
        Ok(match kind {
            Preconditioner::None => Self::Identity,
            Preconditioner::Jacobi => Self::InverseDiagonal(jacobi_inverse(op, b)?),
            Preconditioner::Supplied => Self::Supplied,
        })
    }

    /// `1 / diag(H_i)` for Jacobi (what re-orthogonalisation scales by), else `None`.
    pub(crate) fn inverse_diagonal(&self) -> Option<&V> {
        match self {
            Self::InverseDiagonal(m) => Some(m),
            _ => None,
        }
    }

    /// `z = M⁻¹ r` on the `active` systems (the others may hold anything).
    pub(crate) fn apply<Op>(&self, op: &Op, r: &V, active: &[bool]) -> Result<V, KrylovError>
    where
        Op: BatchOperator<V> + ?Sized,
    {
        match self {
            Self::Identity => Ok(r.clone()),
            Self::InverseDiagonal(m) => r.mul_elementwise(m),
            Self::Supplied => {
                let z = op
                    .precondition(r, active)
                    .ok_or(KrylovError::MissingPreconditioner)??;
                r.check_compatible("preconditioner output", &z)?;
                Ok(z)
            }
        }
    }
}

/// `1 / diag(H_i)` as a batch, after checking every entry is `> 0`.
fn jacobi_inverse<V, Op>(op: &Op, b: &V) -> Result<V, KrylovError>
where
    V: BatchVectors,
    Op: BatchOperator<V> + ?Sized,
{
    let diag = op.diagonal().ok_or(KrylovError::MissingDiagonal)??;
    if b.n_systems() == 0
        && batch_shapes_match(
            (diag.n_systems(), diag.system_dim()),
            (b.n_systems(), b.system_dim()),
        )
    {
        // An empty operator cannot know `d` (the dense ones report a `0 × 0` diagonal): an
        // empty batch of any `d` matches it, by the rule of `check_operator_shape`.
        return b.zeros_like();
    }
    b.check_compatible("Jacobi diagonal", &diag)?;
    let d = b.system_dim().max(1);
    let host = diag.to_host()?;
    let refuse = |k: usize| KrylovError::NonPositiveDiagonal {
        system: k / d,
        index: k % d,
        value: host[k],
    };
    let mut inv = Vec::with_capacity(host.len());
    for (k, v) in host.iter().enumerate() {
        if !(*v > 0.0 && v.is_finite()) {
            return Err(refuse(k));
        }
        inv.push(1.0 / v);
    }
    let m = V::from_host_like(b, &inv)?;
    // A positive entry so small that its inverse overflows the element type (f64 below
    // `1/f64::MAX`, f32 below `1/f32::MAX`) would make `z = M⁻¹r` infinite and the system
    // break down on a NaN at its first step: refused like a non-positive one. The inverse is
    // checked in the element type (`B` norms; the host copy only when one is not finite).
    if m.norms_inf()?.iter().any(|n| !n.is_finite()) {
        let back = m.to_host()?;
        if let Some(k) = back.iter().position(|v| !v.is_finite()) {
            return Err(refuse(k));
        }
    }
    Ok(m)
}
