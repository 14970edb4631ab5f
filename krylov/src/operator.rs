//! The batched linear-operator trait and the closure / diagonal adapters.

use crate::{BatchVectors, KrylovError};

/// A batch of `B` independent symmetric linear operators `H_1, …, H_B`, each of size `d × d`,
/// acting on a batch of vectors `V`.
///
/// `apply(x, active)` returns `y` with `y_i = H_i x_i` for every system `i` with `active[i]`.
/// Rows (columns) of inactive systems in the output may hold anything, NaN included: solvers
/// in this crate never read them. An implementation should skip inactive systems where it
/// can (the host dense operators do; a tensor operator may gather the active rows), because
/// this is how converged systems stop costing work.
///
/// The solvers require `H_i` symmetric positive definite (CG) or symmetric (Lanczos).
///
/// ```
/// use krylov::{cg, BatchOperator, CgParams, KrylovError};
/// use nalgebra::DMatrix;
/// /// `H_i = c_i·I`, one scale per system (column).
/// struct Scaled(Vec<f64>);
/// impl BatchOperator<DMatrix<f64>> for Scaled {
///     fn apply(&self, x: &DMatrix<f64>, active: &[bool]) -> Result<DMatrix<f64>, KrylovError> {
///         let mut y = x.clone();
///         for (j, mut col) in y.column_iter_mut().enumerate() {
///             if active[j] {
///                 col *= self.0[j];
///             }
///         }
///         Ok(y)
///     }
///     fn batch_shape(&self) -> Option<(usize, usize)> {
///         Some((self.0.len(), 2))
///     }
/// }
/// let op = Scaled(vec![2.0, 4.0]);
/// let b = DMatrix::<f64>::from_element(2, 2, 1.0);
/// let res = cg(&op, &b, &CgParams::default())?;
/// assert!((res.x[(0, 0)] - 0.5).abs() < 1e-12 && (res.x[(0, 1)] - 0.25).abs() < 1e-12);
/// // The declared shape is checked before any work.
/// let wrong = DMatrix::<f64>::zeros(3, 2);
/// assert!(matches!(cg(&op, &wrong, &CgParams::default()), Err(KrylovError::ShapeMismatch { .. })));
/// # Ok::<(), KrylovError>(())
/// ```
pub trait BatchOperator<V: BatchVectors> {
    /// `y_i = H_i x_i` for the active systems.
    fn apply(&self, x: &V, active: &[bool]) -> Result<V, KrylovError>;

    /// The diagonals of the `H_i`, as a batch (system `i`'s diagonal in slot `i`), if the
    /// operator knows them. Needed only by the Jacobi preconditioner. Default: `None`.
    fn diagonal(&self) -> Option<Result<V, KrylovError>> {
        None
    }

    /// `z_i = M_i⁻¹ r_i` for the active systems, with `M_i` symmetric positive definite (an
    /// approximation of `H_i` that is cheap to invert), if the operator has one. Needed only
    /// by [`crate::Preconditioner::Supplied`]; see [`WithPreconditioner`]. Default: `None`.
    fn precondition(&self, r: &V, active: &[bool]) -> Option<Result<V, KrylovError>> {
        let _ = (r, active);
        None
    }

    /// The batch shape `(B, d)` the operator acts on, if it knows it (the dense operators do;
    /// a closure does not). The solvers compare it with their input **before** any other work,
    /// so a mismatch is a [`KrylovError::ShapeMismatch`] even for an empty batch (an empty
    /// operator, `B = 0`, matches an empty batch of any `d`). Default: `None` (the shape is then
    /// checked on the operator's output).
    fn batch_shape(&self) -> Option<(usize, usize)> {
        None
    }
}

/// Checks `v` against the operator's [`BatchOperator::batch_shape`], if it has one:
/// [`KrylovError::ShapeMismatch`] naming `context` when they differ. Two empty batches match
/// whatever their `d`. For solvers built on the trait, as krylov's own check their inputs.
///
/// ```
/// use krylov::{DenseNalgebraOperator, KrylovError, check_operator_shape};
/// use nalgebra::DMatrix;
/// // One 2×2 system; vectors are (d, B) matrices.
/// let op = DenseNalgebraOperator::new(vec![DMatrix::<f64>::identity(2, 2)])?;
/// let ok = DMatrix::<f64>::zeros(2, 1);
/// assert!(check_operator_shape("demo", &op, &ok).is_ok());
/// let wrong = DMatrix::<f64>::zeros(3, 1);
/// assert!(matches!(
///     check_operator_shape("demo", &op, &wrong),
///     Err(KrylovError::ShapeMismatch { context: "demo", .. })
/// ));
/// # Ok::<(), KrylovError>(())
/// ```
pub fn check_operator_shape<V: BatchVectors, Op: BatchOperator<V> + ?Sized>(
    context: &'static str,
    op: &Op,
    v: &V,
) -> Result<(), KrylovError> {
    let found = (v.n_systems(), v.system_dim());
    match op.batch_shape() {
        Some(expected) if !batch_shapes_match(expected, found) => Err(KrylovError::ShapeMismatch {
            context,
            expected,
            found,
        }),
        _ => Ok(()),
    }
}

/// The crate's one rule for comparing an operator's batch shape `(B, d)` with a batch's:
/// equal, or both empty (`B = 0`) whatever their `d` (an operator built from no matrices
/// cannot know it; the result is then empty). Used by [`check_operator_shape`] and by the
/// Jacobi preconditioner's check of the operator's diagonal.
pub(crate) fn batch_shapes_match(operator: (usize, usize), batch: (usize, usize)) -> bool {
    operator == batch || (operator.0 == 0 && batch.0 == 0)
}

impl<V: BatchVectors, O: BatchOperator<V> + ?Sized> BatchOperator<V> for &O {
    fn apply(&self, x: &V, active: &[bool]) -> Result<V, KrylovError> {
        (**self).apply(x, active)
    }

    fn diagonal(&self) -> Option<Result<V, KrylovError>> {
        (**self).diagonal()
    }

    fn precondition(&self, r: &V, active: &[bool]) -> Option<Result<V, KrylovError>> {
        (**self).precondition(r, active)
    }

    fn batch_shape(&self) -> Option<(usize, usize)> {
        (**self).batch_shape()
    }
}

/// A closure `|x: &V, active: &[bool]| -> Result<V, KrylovError>` used as a [`BatchOperator`].
///
/// ```
/// use krylov::{BatchOperator, FnOperator, KrylovError};
/// use nalgebra::DMatrix;
/// // H_i = (i + 1)·I for a batch of 3 systems of size 2 (one system per column).
/// let op = FnOperator::new(|x: &DMatrix<f64>, _active: &[bool]| -> Result<DMatrix<f64>, KrylovError> {
///     let mut y = x.clone();
///     for (j, mut c) in y.column_iter_mut().enumerate() {
///         c *= (j + 1) as f64;
///     }
///     Ok(y)
/// });
/// let x = DMatrix::from_element(2, 3, 1.0);
/// let y = op.apply(&x, &[true; 3]).unwrap();
/// assert_eq!(y[(1, 2)], 3.0);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FnOperator<F> {
    f: F,
}

impl<F> FnOperator<F> {
    /// Wraps a closure.
    pub fn new(f: F) -> Self {
        Self { f }
    }

    /// Attaches the operator's diagonal (enables the Jacobi preconditioner).
    pub fn with_diagonal<V>(self, diagonal: V) -> WithDiagonal<Self, V> {
        WithDiagonal::new(self, diagonal)
    }

    /// Attaches a preconditioner `|r, active| M⁻¹ r` (enables
    /// [`crate::Preconditioner::Supplied`]).
    pub fn with_preconditioner<P>(self, inverse: P) -> WithPreconditioner<Self, P> {
        WithPreconditioner::new(self, inverse)
    }
}

impl<V, F> BatchOperator<V> for FnOperator<F>
where
    V: BatchVectors,
    F: Fn(&V, &[bool]) -> Result<V, KrylovError>,
{
    fn apply(&self, x: &V, active: &[bool]) -> Result<V, KrylovError> {
        (self.f)(x, active)
    }
}

/// Any operator together with a known diagonal (for the Jacobi preconditioner).
///
/// The dense operators already supply their diagonal; this is for matrix-free operators
/// ([`FnOperator`], a network's Hessian) whose diagonal is known some other way. Without one,
/// Jacobi preconditioning fails with [`KrylovError::MissingDiagonal`].
///
/// ```
/// use krylov::{cg, BatchOperator, CgParams, DenseNalgebraOperator, Preconditioner, WithDiagonal};
/// use nalgebra::{DMatrix, dmatrix};
/// let h = dmatrix![4.0, 1.0; 1.0, 9.0];
/// let diag = DMatrix::<f64>::from_column_slice(2, 1, &[4.0, 9.0]);
/// let op = WithDiagonal::new(DenseNalgebraOperator::new(vec![h])?, diag.clone());
/// assert_eq!(op.diagonal().unwrap()?, diag);
/// assert_eq!(op.batch_shape(), Some((1, 2))); // forwarded from the dense operator
/// let b = DMatrix::<f64>::from_column_slice(2, 1, &[5.0, 10.0]);
/// let params = CgParams::default().with_preconditioner(Preconditioner::Jacobi).with_rtol(1e-12);
/// let res = cg(&op, &b, &params)?;
/// assert!((res.x[(0, 0)] - 1.0).abs() < 1e-10 && (res.x[(1, 0)] - 1.0).abs() < 1e-10);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
#[derive(Clone, Debug)]
pub struct WithDiagonal<O, V> {
    op: O,
    diagonal: V,
}

impl<O, V> WithDiagonal<O, V> {
    /// Attaches `diagonal` (a batch: system `i`'s diagonal in slot `i`) to `op`.
    pub fn new(op: O, diagonal: V) -> Self {
        Self { op, diagonal }
    }
}

impl<V: BatchVectors, O: BatchOperator<V>> BatchOperator<V> for WithDiagonal<O, V> {
    fn apply(&self, x: &V, active: &[bool]) -> Result<V, KrylovError> {
        self.op.apply(x, active)
    }

    fn diagonal(&self) -> Option<Result<V, KrylovError>> {
        Some(Ok(self.diagonal.clone()))
    }

    fn precondition(&self, r: &V, active: &[bool]) -> Option<Result<V, KrylovError>> {
        self.op.precondition(r, active)
    }

    fn batch_shape(&self) -> Option<(usize, usize)> {
        self.op.batch_shape()
    }
}

/// Any operator together with a preconditioner: a closure `|r: &V, active: &[bool]|` that
/// returns `M⁻¹ r` for the active systems, `M` symmetric positive definite, for
/// [`crate::Preconditioner::Supplied`]. A good `M` is close to `H` up to a scalar and cheap
/// to invert: e.g. one dense matrix shared by the systems of a batch whose operators are
/// alike (the Hessians of one network at many points), factorised once.
///
/// ```
/// use krylov::{cg, CgParams, DenseNalgebraOperator, KrylovError, Preconditioner, WithPreconditioner};
/// use nalgebra::{DMatrix, dmatrix};
/// // Two systems with the same badly scaled structure, and M = their mean, inverted once.
/// let h = [dmatrix![100.0, 1.0; 1.0, 1.0], dmatrix![120.0, 2.0; 2.0, 1.5]];
/// let m_inv = ((&h[0] + &h[1]) * 0.5).try_inverse().unwrap();
/// let op = WithPreconditioner::new(
///     DenseNalgebraOperator::new(h.to_vec())?,
///     |r: &DMatrix<f64>, _active: &[bool]| -> Result<DMatrix<f64>, KrylovError> { Ok(&m_inv * r) },
/// );
/// let b = DMatrix::<f64>::from_element(2, 2, 1.0);
/// let params = CgParams::default().with_rtol(1e-12);
/// let plain = cg(&op, &b, &params)?;
/// let pcg = cg(&op, &b, &params.clone().with_preconditioner(Preconditioner::Supplied))?;
/// // The same solutions to the same tolerance on the residual.
/// for (j, hj) in h.iter().enumerate() {
///     let r = b.column(j) - hj * pcg.x.column(j);
///     assert!(r.amax() <= 1e-12 && (pcg.x.column(j) - plain.x.column(j)).amax() < 1e-10);
/// }
/// // Without one, asking for it is an error.
/// let bare = DenseNalgebraOperator::new(h.to_vec())?;
/// let err = cg(&bare, &b, &params.with_preconditioner(Preconditioner::Supplied));
/// assert!(matches!(err, Err(KrylovError::MissingPreconditioner)));
/// # Ok::<(), KrylovError>(())
/// ```
#[derive(Clone, Debug)]
pub struct WithPreconditioner<O, P> {
    op: O,
    inverse: P,
}

impl<O, P> WithPreconditioner<O, P> {
    /// Attaches `inverse` (`|r, active| M⁻¹ r`) to `op`.
    pub fn new(op: O, inverse: P) -> Self {
        Self { op, inverse }
    }
}

impl<V, O, P> BatchOperator<V> for WithPreconditioner<O, P>
where
    V: BatchVectors,
    O: BatchOperator<V>,
    P: Fn(&V, &[bool]) -> Result<V, KrylovError>,
{
    fn apply(&self, x: &V, active: &[bool]) -> Result<V, KrylovError> {
        self.op.apply(x, active)
    }

    fn diagonal(&self) -> Option<Result<V, KrylovError>> {
        self.op.diagonal()
    }

    fn precondition(&self, r: &V, active: &[bool]) -> Option<Result<V, KrylovError>> {
        Some((self.inverse)(r, active))
    }

    fn batch_shape(&self) -> Option<(usize, usize)> {
        self.op.batch_shape()
    }
}

/// An operator that counts how often each system was applied (diagnostics and tests).
///
/// Wraps any operator; `counts()` returns, per system, the number of `apply` calls in which the
/// system was active, and `calls()` the number of `apply` calls.
///
/// ```
/// use krylov::{cg, CgParams, CountingOperator, DenseNalgebraOperator};
/// use nalgebra::{DMatrix, dmatrix};
/// let dense = DenseNalgebraOperator::new(vec![
///     dmatrix![2.0, 0.0; 0.0, 2.0], // one CG step
///     dmatrix![1.0, 0.0; 0.0, 5.0], // two CG steps
/// ])?;
/// let op = CountingOperator::new(dense, 2);
/// let b = DMatrix::<f64>::from_element(2, 2, 1.0);
/// let res = cg(&op, &b, &CgParams::default().with_rtol(1e-12))?;
/// // The converged system costs nothing more until the batch stops; then one call checks
/// // both true residuals (`CgParams::confirm_with_true_residual`).
/// assert_eq!(op.counts(), vec![1 + 1, 2 + 1]);
/// assert_eq!(op.calls(), 2 + 1);
/// assert_eq!(op.counts(), res.applications);
/// assert_eq!(op.inner().matrices().len(), 2);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
#[derive(Debug)]
pub struct CountingOperator<O> {
    op: O,
    counts: std::cell::RefCell<Vec<usize>>,
    calls: std::cell::Cell<usize>,
}

impl<O> CountingOperator<O> {
    /// Wraps `op` for a batch of `n_systems` systems.
    pub fn new(op: O, n_systems: usize) -> Self {
        Self {
            op,
            counts: std::cell::RefCell::new(vec![0; n_systems]),
            calls: std::cell::Cell::new(0),
        }
    }

    /// Per-system application counts so far.
    pub fn counts(&self) -> Vec<usize> {
        self.counts.borrow().clone()
    }

    /// Number of `apply` calls so far.
    pub fn calls(&self) -> usize {
        self.calls.get()
    }

    /// The wrapped operator.
    pub fn inner(&self) -> &O {
        &self.op
    }
}

impl<V: BatchVectors, O: BatchOperator<V>> BatchOperator<V> for CountingOperator<O> {
    fn apply(&self, x: &V, active: &[bool]) -> Result<V, KrylovError> {
        {
            let mut c = self.counts.borrow_mut();
            crate::vectors::check_len("CountingOperator (active)", c.len(), active.len())?;
            for (ci, a) in c.iter_mut().zip(active) {
                *ci += usize::from(*a);
            }
        }
        self.calls.set(self.calls.get() + 1);
        self.op.apply(x, active)
    }

    fn diagonal(&self) -> Option<Result<V, KrylovError>> {
        self.op.diagonal()
    }

    fn precondition(&self, r: &V, active: &[bool]) -> Option<Result<V, KrylovError>> {
        self.op.precondition(r, active)
    }

    fn batch_shape(&self) -> Option<(usize, usize)> {
        self.op.batch_shape()
    }
}
