//! Quadratic potentials `Φ(x) = ½ xᵀA x + bᵀx` with a closed-form inverse gradient map.

use candle_core::{DType, Device, Tensor};
use nalgebra::{DMatrix, DVector};

use crate::{BatchedPotential, ConvexOptError};

/// `Φ(x) = ½ xᵀA x + bᵀx` with `A` symmetric positive definite, the same for every row.
///
/// `∇Φ(x) = A x + b`, `∇²Φ = A`, and the inverse of the gradient map has the closed form
/// `x = A⁻¹(y − b)` ([`QuadraticPotential::solve`]), which makes it the reference problem for
/// the solvers' tests.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use convex_opt::{BatchedPotential, QuadraticPotential};
/// use nalgebra::{DMatrix, DVector};
/// let a = DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 3.0]);
/// let b = DVector::from_vec(vec![1.0, -1.0]);
/// let pot = QuadraticPotential::new(&a, Some(&b), DType::F64, &Device::Cpu)?;
/// let y = Tensor::new(&[[3.0f64, 3.0]], &Device::Cpu)?;
/// let x = pot.solve(&y)?; // A x + b = y  ⇒  x = (1, 1)
/// let (_, g) = pot.value_and_gradient(&x)?;
/// assert!((g - &y)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
#[derive(Clone, Debug)]
pub struct QuadraticPotential {
    a: Tensor,
    b: Tensor,
    a_host: DMatrix<f64>,
    b_host: DVector<f64>,
}

impl QuadraticPotential {
    /// Builds the potential from a host matrix `A` (`d × d`, symmetric positive definite) and an
    /// optional linear term `b` (length `d`, default 0), stored as `dtype` (`f32` or `f64`, the
    /// dtypes the solvers support; anything else is [`ConvexOptError::UnsupportedDType`]) on
    /// `device`. Evaluating it on a batch of another dtype is
    /// [`ConvexOptError::DTypeMismatch`].
    pub fn new(
        a: &DMatrix<f64>,
        b: Option<&DVector<f64>>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, ConvexOptError> {
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(ConvexOptError::UnsupportedDType(dtype));
        }
        let d = a.nrows();
        if a.ncols() != d || d == 0 {
            return Err(ConvexOptError::Shape {
                context: "QuadraticPotential::new",
                message: format!("A must be square and non-empty, got {}×{}", d, a.ncols()),
            });
        }
        if !a.iter().all(|v| v.is_finite()) {
            return Err(ConvexOptError::NonFinite("QuadraticPotential matrix"));
        }
        let asym = (a - a.transpose()).amax();
        if asym > 1e-12 * a.amax().max(1.0) {
            return Err(ConvexOptError::InvalidParameter(format!(
                "QuadraticPotential: A is not symmetric (max |A − Aᵀ| = {asym:e})"
            )));
        }
        if a.clone().cholesky().is_none() {
            return Err(ConvexOptError::InvalidParameter(
                "QuadraticPotential: A is not positive definite".into(),
            ));
        }
        let b_host = match b {
            Some(b) if b.len() != d => {
                return Err(ConvexOptError::Shape {
                    context: "QuadraticPotential::new",
                    message: format!("b has length {}, expected {d}", b.len()),
                });
            }
            Some(b) => b.clone(),
            None => DVector::zeros(d),
        };
        if !b_host.iter().all(|v| v.is_finite()) {
            return Err(ConvexOptError::NonFinite("QuadraticPotential linear term"));
        }
        // Row-major copy of A (symmetric, so the layout does not matter, but be explicit).
        let a_rows: Vec<f64> = (0..d)
            .flat_map(|i| (0..d).map(move |j| (i, j)))
            .map(|(i, j)| a[(i, j)])
            .collect();
        let a_t = Tensor::from_vec(a_rows, (d, d), device)?.to_dtype(dtype)?;
        let b_t = Tensor::from_vec(b_host.as_slice().to_vec(), (1, d), device)?.to_dtype(dtype)?;
        Ok(Self {
            a: a_t,
            b: b_t,
            a_host: a.clone(),
            b_host,
        })
    }

    /// Dimension `d`.
    pub fn dim(&self) -> usize {
        self.a_host.nrows()
    }

    /// The exact inverse of the gradient map, `x_i = A⁻¹(y_i − b)`, computed on the host in
    /// `f64` (Cholesky) and returned with the dtype and device of `y` (a float dtype; an
    /// integer one is [`ConvexOptError::UnsupportedDType`]).
    pub fn solve(&self, y: &Tensor) -> Result<Tensor, ConvexOptError> {
        if !y.dtype().is_float() {
            // Integer targets used to get the solution truncated to integers (`U32` y = (1, 2, 3)
            // with A = 2·I gave x = (0, 0, 1)).
            return Err(ConvexOptError::UnsupportedDType(y.dtype()));
        }
        let (n, d) = y.dims2()?;
        if d != self.dim() {
            return Err(ConvexOptError::Shape {
                context: "QuadraticPotential::solve",
                message: format!(
                    "y has {d} columns, the potential has dimension {}",
                    self.dim()
                ),
            });
        }
        let chol =
            self.a_host.clone().cholesky().ok_or_else(|| {
                ConvexOptError::InvalidParameter("A is not positive definite".into())
            })?;
        let yh = y.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let rhs = DMatrix::from_column_slice(d, n, &yh)
            - &self.b_host * nalgebra::RowDVector::from_element(n, 1.0);
        let x = chol.solve(&rhs);
        Ok(Tensor::from_vec(x.as_slice().to_vec(), (n, d), y.device())?.to_dtype(y.dtype())?)
    }

    /// The dtype of `A` and `b`.
    pub fn dtype(&self) -> DType {
        self.a.dtype()
    }

    fn check(&self, x: &Tensor) -> Result<(), ConvexOptError> {
        if x.dtype() != self.dtype() {
            return Err(ConvexOptError::DTypeMismatch {
                context: "QuadraticPotential input",
                expected: self.dtype(),
                found: x.dtype(),
            });
        }
        let (_, d) = x.dims2()?;
        if d != self.dim() {
            return Err(ConvexOptError::Shape {
                context: "QuadraticPotential",
                message: format!(
                    "x has {d} columns, the potential has dimension {}",
                    self.dim()
                ),
            });
        }
        Ok(())
    }
}

impl BatchedPotential for QuadraticPotential {
    fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
        self.check(x)?;
        let ax = x.matmul(&self.a)?;
        let grad = ax.broadcast_add(&self.b)?;
        // ½ xᵀA x + bᵀx = xᵀ(½ A x + b)
        let value = (x * (ax * 0.5)?.broadcast_add(&self.b)?)?.sum(1)?;
        Ok((value, grad))
    }

    fn hvp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor, ConvexOptError> {
        self.check(x)?;
        self.check(v)?;
        Ok(v.matmul(&self.a)?)
    }

    fn expected_dtype(&self) -> Option<DType> {
        Some(self.dtype())
    }
}
