//! The problem trait: a batch of independent potentials `Φ(x_i)` evaluated row by row.

use candle_core::{DType, Tensor};

use crate::ConvexOptError;

/// A Hessian-vector product closure: `v ↦ (∇²Φ(x_i) v_i)_i` at a fixed batch `x`.
pub type HvpFn<'a> = Box<dyn Fn(&Tensor) -> Result<Tensor, ConvexOptError> + 'a>;

/// A potential `Φ: ℝᵈ → ℝ` evaluated on a batch of points, one point per row of a `(B, d)`
/// tensor. Row `i` of every output depends on row `i` of the input only (and, for a potential
/// with per-row data, on row `i` of that data: see [`select_rows`](Self::select_rows)).
///
/// The solvers of this crate invert the gradient map `x ↦ ∇Φ(x)`; they need `Φ` (strongly)
/// convex for the inverse to exist and be unique, and they evaluate the potential on subsets of
/// rows (`index_select`), so an implementation must not mix rows (e.g. no batch statistics).
///
/// Required: [`value_and_gradient`](Self::value_and_gradient). Optional:
/// [`value`](Self::value) (default: through `value_and_gradient`), [`hvp`](Self::hvp)
/// (default: [`ConvexOptError::Unsupported`]; needed by Newton–CG),
/// [`second_order`](Self::second_order) (default: `value_and_gradient` plus `hvp` at the same
/// point; override it when one forward pass can serve the gradient and many HVPs),
/// [`expected_dtype`](Self::expected_dtype) (default `None`; return the dtype of the
/// potential's parameters so that the solvers reject targets of another dtype up front with
/// [`ConvexOptError::DTypeMismatch`] instead of a backend error from inside the potential) and
/// [`select_rows`](Self::select_rows) (default `None`: the rows share everything but `x`).
///
/// # Per-row data
///
/// A family of potentials `Φ_i(x) = Φ(x; c_i)`, one per row, with per-row data `c` (a context,
/// a conditioning vector) holds `c` for the whole batch of the problem, while the per-sample
/// solvers ([`invert_newton_cg`](crate::invert_newton_cg),
/// [`invert_lbfgs_batched`](crate::invert_lbfgs_batched)) evaluate subsets of rows (the rows
/// still being solved, the rows still line-searching). Such a potential overrides
/// [`select_rows`](Self::select_rows) to return itself restricted to a set of rows — typically
/// `c.index_select(rows, 0)`, cheap next to the evaluation — and the solvers evaluate every
/// subset through it, always asking the potential they were given with indices into the
/// original batch (restrictions never nest). The whole batch is evaluated on the potential
/// itself.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use convex_opt::{
///     BatchedPotential, ConvexOptError, InversionOptions, NewtonCgParams, invert_newton_cg,
/// };
/// /// `Φ_i(x) = ½‖x‖² + c_iᵀx`: `∇Φ_i(x) = x + c_i`, inverse `x_i = y_i − c_i`.
/// struct Shifted {
///     c: Tensor,
/// }
/// impl BatchedPotential for Shifted {
///     fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
///         let value = ((x.sqr()?.sum(1)? * 0.5)? + (x * &self.c)?.sum(1)?)?;
///         Ok((value, (x + &self.c)?))
///     }
///     fn hvp(&self, _x: &Tensor, v: &Tensor) -> Result<Tensor, ConvexOptError> {
///         Ok(v.clone())
///     }
///     fn select_rows(
///         &self,
///         rows: &Tensor,
///     ) -> Result<Option<Box<dyn BatchedPotential + '_>>, ConvexOptError> {
///         Ok(Some(Box::new(Shifted { c: self.c.index_select(rows, 0)? })))
///     }
/// }
/// let dev = Device::Cpu;
/// let c = Tensor::new(&[[0.0f64, 0.0], [1.0, -2.0], [0.0, 0.0]], &dev)?;
/// let y = Tensor::new(&[[1.0f64, 2.0], [3.0, 4.0], [-1.0, 0.0]], &dev)?;
/// let pot = Shifted { c: c.clone() };
/// let res = invert_newton_cg(&pot, &y, &InversionOptions::default(), &NewtonCgParams::default())?;
/// assert!(res.all_converged());
/// // Rows 0 and 2 start at their solutions (c = 0, x₀ = y): row 1 is solved on its own, with
/// // its own row of `c` (the working set is compacted to it).
/// assert_eq!(res.stats.compactions, 1);
/// let err = (res.x - (y - c)?)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err <= 1e-9);
/// # Ok::<(), ConvexOptError>(())
/// ```
///
/// ```
/// use candle_core::{Device, Tensor};
/// use convex_opt::{BatchedPotential, FnPotential};
/// // Φ(x) = ½‖x‖², ∇Φ(x) = x.
/// let pot = FnPotential::new(|x: &Tensor| {
///     let v = (x.sqr()?.sum(1)? * 0.5)?;
///     Ok((v, x.clone()))
/// });
/// let x = Tensor::new(&[[1.0f64, 2.0], [3.0, 4.0]], &Device::Cpu)?;
/// let (v, g) = pot.value_and_gradient(&x)?;
/// assert_eq!(v.to_vec1::<f64>()?, vec![2.5, 12.5]);
/// assert_eq!(g.to_vec2::<f64>()?, x.to_vec2::<f64>()?);
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
pub trait BatchedPotential {
    /// `(Φ(x_i))_i` with shape `(B,)` and `(∇Φ(x_i))_i` with shape `(B, d)`, both of the dtype
    /// of `x`: the solvers refuse another shape ([`ConvexOptError::Shape`], context
    /// `potential output`) or dtype ([`ConvexOptError::DTypeMismatch`], context
    /// `potential value` / `potential gradient`), as they refuse a Hessian-vector product of
    /// another dtype.
    fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError>;

    /// `(Φ(x_i))_i` with shape `(B,)`. Default: the first output of `value_and_gradient`.
    fn value(&self, x: &Tensor) -> Result<Tensor, ConvexOptError> {
        Ok(self.value_and_gradient(x)?.0)
    }

    /// `(∇²Φ(x_i) v_i)_i` with shape `(B, d)`. Default: [`ConvexOptError::Unsupported`].
    fn hvp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor, ConvexOptError> {
        let _ = (x, v);
        Err(ConvexOptError::Unsupported("hvp"))
    }

    /// The dtype the potential computes in, if it accepts only one (`None`, the default: any
    /// dtype the closure or network handles). The solvers check the targets `y` against it before
    /// evaluating anything.
    fn expected_dtype(&self) -> Option<DType> {
        None
    }

    /// Value, gradient and a Hessian-vector-product operator at `x`. The default evaluates
    /// `value_and_gradient(x)` and forwards HVPs to [`hvp`](Self::hvp) at a copy of `x`;
    /// potentials that can cache a forward pass should override it.
    fn second_order(&self, x: &Tensor) -> Result<SecondOrderModel<'_>, ConvexOptError> {
        let (value, gradient) = self.value_and_gradient(x)?;
        let x = x.clone();
        Ok(SecondOrderModel::new(
            value,
            gradient,
            Box::new(move |v| self.hvp(&x, v)),
        ))
    }

    /// The potential restricted to the rows `rows` of its batch (a `u32` tensor of shape `(k,)`
    /// on the device of the targets, indices in `0..B`, in the order the restricted potential
    /// must see them): `Some(p)` with `p` evaluating row `j` of its input as row `rows[j]`, or
    /// `None` (the default) when the rows have no data of their own, so that `self` evaluates
    /// any subset of rows as it is. The solvers call it on the potential they were given, with
    /// indices into the original batch, whenever they evaluate a subset of rows; see
    /// [Per-row data](Self#per-row-data).
    fn select_rows(
        &self,
        rows: &Tensor,
    ) -> Result<Option<Box<dyn BatchedPotential + '_>>, ConvexOptError> {
        let _ = rows;
        Ok(None)
    }
}

impl<P: BatchedPotential + ?Sized> BatchedPotential for &P {
    fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
        (**self).value_and_gradient(x)
    }
    fn value(&self, x: &Tensor) -> Result<Tensor, ConvexOptError> {
        (**self).value(x)
    }
    fn hvp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor, ConvexOptError> {
        (**self).hvp(x, v)
    }
    fn second_order(&self, x: &Tensor) -> Result<SecondOrderModel<'_>, ConvexOptError> {
        (**self).second_order(x)
    }
    fn expected_dtype(&self) -> Option<DType> {
        (**self).expected_dtype()
    }
    fn select_rows(
        &self,
        rows: &Tensor,
    ) -> Result<Option<Box<dyn BatchedPotential + '_>>, ConvexOptError> {
        (**self).select_rows(rows)
    }
}

impl<P: BatchedPotential + ?Sized> BatchedPotential for Box<P> {
    fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
        (**self).value_and_gradient(x)
    }
    fn value(&self, x: &Tensor) -> Result<Tensor, ConvexOptError> {
        (**self).value(x)
    }
    fn hvp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor, ConvexOptError> {
        (**self).hvp(x, v)
    }
    fn second_order(&self, x: &Tensor) -> Result<SecondOrderModel<'_>, ConvexOptError> {
        (**self).second_order(x)
    }
    fn expected_dtype(&self) -> Option<DType> {
        (**self).expected_dtype()
    }
    fn select_rows(
        &self,
        rows: &Tensor,
    ) -> Result<Option<Box<dyn BatchedPotential + '_>>, ConvexOptError> {
        (**self).select_rows(rows)
    }
}

/// The local second-order model of a batched potential at a point `x`: values `(B,)`,
/// gradients `(B, d)` and a Hessian-vector-product operator.
///
/// ```
/// use convex_opt::BatchedPotential;
/// # use candle_core::{DType, Device, Tensor};
/// # use convex_opt::QuadraticPotential;
/// # use nalgebra::DMatrix;
/// // Φ(x) = ½ xᵀA x with A = [[2, 1], [1, 3]]: the inverse of ∇Φ is x = A⁻¹y.
/// let a = DMatrix::from_row_slice(2, 2, &[2.0, 1.0, 1.0, 3.0]);
/// let pot = QuadraticPotential::new(&a, None, DType::F64, &Device::Cpu)?;
/// let y = Tensor::new(&[[1.0f64, 2.0], [-3.0, 0.5]], &Device::Cpu)?;
/// let model = pot.second_order(&y)?;
/// assert_eq!(model.value().dims(), &[2]);
/// // ∇Φ(x) = A x (A is symmetric, so the rows of x·A are the A x_i).
/// assert_eq!(model.gradient().to_vec2::<f64>()?, vec![vec![4.0, 7.0], vec![-5.5, -1.5]]);
/// let e1 = Tensor::new(&[[1.0f64, 0.0], [1.0, 0.0]], &Device::Cpu)?;
/// assert_eq!(model.hvp(&e1)?.to_vec2::<f64>()?, vec![vec![2.0, 1.0], vec![2.0, 1.0]]);
/// // A model can also be assembled by hand.
/// let (v, g) = pot.value_and_gradient(&y)?;
/// let own = convex_opt::SecondOrderModel::new(v, g, Box::new(|v: &Tensor| Ok((v * 2.0)?)));
/// assert_eq!(own.hvp(&e1)?.to_vec2::<f64>()?, vec![vec![2.0, 0.0], vec![2.0, 0.0]]);
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
pub struct SecondOrderModel<'a> {
    value: Tensor,
    gradient: Tensor,
    hvp: HvpFn<'a>,
}

impl<'a> SecondOrderModel<'a> {
    /// Bundles values `(B,)`, gradients `(B, d)` and an HVP closure at the same point.
    pub fn new(value: Tensor, gradient: Tensor, hvp: HvpFn<'a>) -> Self {
        Self {
            value,
            gradient,
            hvp,
        }
    }

    /// `(Φ(x_i))_i`, shape `(B,)`.
    pub fn value(&self) -> &Tensor {
        &self.value
    }

    /// `(∇Φ(x_i))_i`, shape `(B, d)`.
    pub fn gradient(&self) -> &Tensor {
        &self.gradient
    }

    /// `(∇²Φ(x_i) v_i)_i` for `v` of shape `(B, d)`.
    pub fn hvp(&self, v: &Tensor) -> Result<Tensor, ConvexOptError> {
        (self.hvp)(v)
    }
}

impl std::fmt::Debug for SecondOrderModel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecondOrderModel")
            .field("value", &self.value.shape())
            .field("gradient", &self.gradient.shape())
            .finish_non_exhaustive()
    }
}

/// A [`BatchedPotential`] from a closure `x ↦ (Φ(x) (B,), ∇Φ(x) (B, d))`.
///
/// Add Hessian-vector products with [`FnPotential::with_hvp`].
///
/// **Errors of your own:** the closures return `candle_core::Result`, so an error of another
/// type goes in through `candle_core::Error::wrap(e)`, which keeps its **message only**
/// (candle 0.11 stores it as `Display`: no [`source`](std::error::Error::source), no
/// downcast). To keep the error itself, implement [`BatchedPotential`] and return
/// [`ConvexOptError::potential`]`(e)` (see the second example).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use convex_opt::{
///     invert_lbfgs_batched, BatchedLbfgsParams, BatchedPotential, ConvexOptError, FnPotential,
///     InversionOptions,
/// };
/// // Φ(x) = ½‖x‖² + Σ_j x_j⁴/4: ∇Φ(x) = x + x³, so ∇Φ(1) = 2.
/// let pot = FnPotential::new(|x: &Tensor| {
///     let v = ((x.sqr()?.sum(1)? * 0.5)? + (x.powf(4.0)?.sum(1)? * 0.25)?)?;
///     Ok((v, (x + x.powf(3.0)?)?))
/// });
/// let y = Tensor::new(&[[2.0f64, -2.0, 0.0]], &Device::Cpu)?;
/// let res = invert_lbfgs_batched(&pot, &y, &InversionOptions::default(), &BatchedLbfgsParams::default())?;
/// let x = res.x.to_vec2::<f64>()?;
/// assert!((x[0][0] - 1.0).abs() < 1e-8 && (x[0][1] + 1.0).abs() < 1e-8 && x[0][2].abs() < 1e-8);
/// // Without `with_hvp` there are no Hessian-vector products.
/// assert!(matches!(pot.hvp(&y, &y), Err(ConvexOptError::Unsupported("hvp"))));
/// # Ok::<(), ConvexOptError>(())
/// ```
///
/// A closure's own error keeps its message; a [`BatchedPotential`] of your own keeps the
/// error:
///
/// ```
/// use std::error::Error;
/// use candle_core::{Device, Tensor};
/// use convex_opt::{BatchedPotential, ConvexOptError, FnPotential};
/// #[derive(Debug, thiserror::Error)]
/// #[error("weights not loaded")]
/// struct NotLoaded;
/// let x = Tensor::new(&[[1.0f64]], &Device::Cpu)?;
/// let closure = FnPotential::new(|_: &Tensor| Err(candle_core::Error::wrap(NotLoaded)));
/// let e = closure.value_and_gradient(&x).unwrap_err();
/// assert!(e.to_string().contains("weights not loaded"));
/// assert!(e.source().is_none()); // the message only
///
/// struct Mine;
/// impl BatchedPotential for Mine {
///     fn value_and_gradient(&self, _x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
///         Err(ConvexOptError::potential(NotLoaded))
///     }
/// }
/// let e = Mine.value_and_gradient(&x).unwrap_err();
/// assert!(e.source().unwrap().downcast_ref::<NotLoaded>().is_some()); // the error itself
/// # Ok::<(), ConvexOptError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FnPotential<F> {
    value_and_gradient: F,
}

impl<F> FnPotential<F>
where
    F: Fn(&Tensor) -> candle_core::Result<(Tensor, Tensor)>,
{
    /// Wraps a closure returning values `(B,)` and gradients `(B, d)`.
    pub fn new(value_and_gradient: F) -> Self {
        Self { value_and_gradient }
    }

    /// Adds a Hessian-vector-product closure `(x, v) ↦ (∇²Φ(x_i) v_i)_i`.
    pub fn with_hvp<H>(self, hvp: H) -> FnPotentialWithHvp<F, H>
    where
        H: Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    {
        FnPotentialWithHvp {
            value_and_gradient: self.value_and_gradient,
            hvp,
        }
    }
}

impl<F> BatchedPotential for FnPotential<F>
where
    F: Fn(&Tensor) -> candle_core::Result<(Tensor, Tensor)>,
{
    fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
        Ok((self.value_and_gradient)(x)?)
    }
}

/// A [`BatchedPotential`] from two closures: values and gradients, and Hessian-vector products.
/// Built by [`FnPotential::with_hvp`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// use convex_opt::{invert_newton_cg, BatchedPotential, FnPotential, InversionOptions, NewtonCgParams};
/// // Φ(x) = ½‖x‖² + Σ_j x_j⁴/4: ∇Φ(x) = x + x³, ∇²Φ(x) = diag(1 + 3x²).
/// let pot = FnPotential::new(|x: &Tensor| {
///     let v = ((x.sqr()?.sum(1)? * 0.5)? + (x.powf(4.0)?.sum(1)? * 0.25)?)?;
///     Ok((v, (x + x.powf(3.0)?)?))
/// })
/// .with_hvp(|x: &Tensor, v: &Tensor| ((x.sqr()? * 3.0)? + 1.0)? * v);
/// let ones = Tensor::new(&[[1.0f64, 1.0]], &Device::Cpu)?;
/// assert_eq!(pot.hvp(&ones, &ones)?.to_vec2::<f64>()?, vec![vec![4.0, 4.0]]);
/// let y = Tensor::new(&[[2.0f64, 10.0]], &Device::Cpu)?; // x = (1, 2)
/// let res = invert_newton_cg(&pot, &y, &InversionOptions::default(), &NewtonCgParams::default())?;
/// let x = res.x.to_vec2::<f64>()?;
/// assert!((x[0][0] - 1.0).abs() < 1e-9 && (x[0][1] - 2.0).abs() < 1e-9);
/// assert!(res.stats.hvp_calls > 0);
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FnPotentialWithHvp<F, H> {
    value_and_gradient: F,
    hvp: H,
}

impl<F, H> BatchedPotential for FnPotentialWithHvp<F, H>
where
    F: Fn(&Tensor) -> candle_core::Result<(Tensor, Tensor)>,
    H: Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
{
    fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
        Ok((self.value_and_gradient)(x)?)
    }

    fn hvp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor, ConvexOptError> {
        Ok((self.hvp)(x, v)?)
    }
}
