//! Central finite-difference checks of a convex potential's input gradient and
//! Hessian-vector products, for anyone writing a new architecture.

use candle_core::{DType, Tensor};

use crate::error::{IcnnError, Result};
use crate::finite_input::check_finite;
use crate::linearization::Linearization;
use crate::traits::{ConditionalConvexPotential, ConvexPotential};

/// What [`check_derivatives`] (or [`check_derivatives_given`]) measured: the largest difference between each analytic
/// derivative and its central difference along the given directions, relative to the
/// largest analytic value (or 1, whichever is larger). An error is NaN when any value it
/// compares (analytic or finite-difference) is NaN, and `+∞` when one is infinite, so that
/// [`DerivativeCheck::passes`] is false for any tolerance.
///
/// ```
/// use std::sync::Arc;
/// use candle_core::{Device, Tensor};
/// use icnn::{check_derivatives, ConvexPotential, HessianVectorProducts, Linearization};
/// /// ∇²F(x_b) = diag(row b of the stored tensor).
/// #[derive(Debug)]
/// struct Diag(Tensor);
/// impl HessianVectorProducts for Diag {
///     fn hvp(&self, v: &Tensor) -> icnn::Result<Tensor> {
///         Ok((v * &self.0)?)
///     }
///     fn detach(&self) -> Arc<dyn HessianVectorProducts> {
///         Arc::new(Diag(self.0.detach()))
///     }
/// }
/// /// F(x) = Σ_j exp(x_j), with a **wrong** Hessian 2·diag(exp(x)).
/// struct Wrong;
/// impl ConvexPotential for Wrong {
///     fn potential(&self, x: &Tensor) -> icnn::Result<Tensor> {
///         Ok(x.exp()?.sum(1)?)
///     }
///     fn linearize(&self, x: &Tensor) -> icnn::Result<Linearization> {
///         let e = x.exp()?;
///         Linearization::from_parts(e.sum(1)?, e.clone(), Arc::new(Diag((&e * 2.0)?)))
///     }
///     fn dim(&self) -> usize {
///         2
///     }
/// }
/// # fn main() -> icnn::Result<()> {
/// let x = Tensor::new(&[[0.0f64, 1.0], [-1.0, 0.5]], &Device::Cpu)?;
/// let v = Tensor::new(&[[1.0f64, -1.0], [0.5, 2.0]], &Device::Cpu)?;
/// let check = check_derivatives(&Wrong, &x, &v, 1e-5)?;
/// assert!(check.gradient_error < 1e-8); // the gradient is right
/// assert!(check.symmetry_error < 1e-12); // a diagonal product is symmetric...
/// assert!(check.hvp_error > 0.1); // ...but twice the central difference of the gradient
/// assert!(!check.passes(1e-6));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct DerivativeCheck {
    /// `max_b |∇F(x_b)·v_b − (F(x_b + h v_b) − F(x_b − h v_b)) / 2h|`, relative.
    pub gradient_error: f64,
    /// `max_{b,i} |(∇²F(x_b) v_b)_i − (∇F(x_b + h v_b) − ∇F(x_b − h v_b))_i / 2h|`, relative.
    pub hvp_error: f64,
    /// `max_b |uᵀ(∇²F v) − vᵀ(∇²F u)|` for `u` the coordinates of `v` shifted by one place
    /// with alternating signs (not parallel to `v`), relative: a
    /// Hessian-vector product that is not symmetric is not the Hessian of anything.
    pub symmetry_error: f64,
}

impl DerivativeCheck {
    /// Whether all three errors are at most `tol` (false when one is NaN or `+∞`).
    pub fn passes(&self, tol: f64) -> bool {
        self.gradient_error <= tol && self.hvp_error <= tol && self.symmetry_error <= tol
    }
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// `max |a − n| / max(1, max |a|)`; NaN when any value of either slice is NaN and `+∞` when
/// one is infinite (`f64::max` would drop a NaN, and `∞/∞` is NaN).
fn relative_max(analytic: &[f64], numeric: &[f64]) -> f64 {
    let values = || analytic.iter().chain(numeric);
    if values().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    if values().any(|v| v.is_infinite()) {
        return f64::INFINITY;
    }
    let scale = analytic.iter().fold(1.0f64, |m, a| m.max(a.abs()));
    analytic
        .iter()
        .zip(numeric)
        .fold(0.0f64, |m, (a, n)| m.max((a - n).abs()))
        / scale
}

/// Checks `potential`'s [`Linearization`](crate::Linearization) at the points `x` `(B, d)`
/// against central differences of its own potential and gradient along the directions `v`
/// `(B, d)` with step `step` (in f64, `1e-4` to `1e-5` balances the `O(h²)` truncation
/// against rounding: errors of `1e-7` or less are typical for smooth networks at unit scale;
/// a wrong derivative is off by `O(1)`). Use f64 tensors: in f32 rounding dominates. It calls
/// `potential.linearize`, so a network with a data-dependent initialisation that has not run
/// yet (the built-in ICNNs' ActNorms) is initialised on `x`, as on any first use. A NaN or
/// `±∞` in `x` or `v` is an [`IcnnError::NonFiniteInput`], an empty `x` (`B = 0` or `d = 0`)
/// an [`IcnnError::Shape`]; a non-finite derivative makes its
/// error NaN or `+∞` (see [`DerivativeCheck`]), so the check fails.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{check_derivatives, Icnn2, Icnn2Config};
/// use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let config = Icnn2Config { dim: 3, width: 8, depth: 2, ..Default::default() };
/// let net = Icnn2::new(vb.pp("icnn"), &config, &mut rand::rngs::StdRng::seed_from_u64(0))?;
/// let x = Tensor::new(&[[0.1f64, -0.2, 0.3], [1.0, 0.5, -1.0]], &Device::Cpu)?;
/// let v = Tensor::new(&[[1.0f64, 0.5, -0.5], [-0.3, 1.0, 0.2]], &Device::Cpu)?;
/// let check = check_derivatives(&net, &x, &v, 1e-5)?;
/// assert!(check.passes(1e-6), "{check:?}");
/// # Ok(())
/// # }
/// ```
pub fn check_derivatives<P: ConvexPotential + ?Sized>(
    potential: &P,
    x: &Tensor,
    v: &Tensor,
    step: f64,
) -> Result<DerivativeCheck> {
    check_linearization("check_derivatives", x, v, step, |p| potential.linearize(p))
}

/// [`check_derivatives`] for a potential `F(x; c)` convex in `x`
/// ([`ConditionalConvexPotential`], e.g. [`Picnn`](crate::Picnn)): its linearisation in `x`
/// at the points `x` `(B, d)` under the fixed `context` `(B, d_c)` (row `b` of `x` with row
/// `b` of `context`, at `x` and at `x ± h·v`), against central differences of its own
/// potential and gradient in `x` along `v`. Same report, tolerances and errors as
/// [`check_derivatives`], and an [`IcnnError::Shape`] for a `context` that is not `(B, ·)`
/// of `x`'s dtype, an [`IcnnError::NonFiniteInput`] for a NaN or `±∞` in it. Derivatives in
/// the context are not checked (they go through candle's autodiff).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{check_derivatives_given, Picnn, PicnnConfig};
/// use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let config = PicnnConfig { dim: 2, context_dim: 1, width: 8, depth: 2, ..Default::default() };
/// let net = Picnn::new(vb.pp("picnn"), &config, &mut rand::rngs::StdRng::seed_from_u64(0))?;
/// let x = Tensor::new(&[[0.1f64, -0.2], [1.0, 0.5], [-0.7, 0.3]], &Device::Cpu)?;
/// let c = Tensor::new(&[[0.5f64], [-1.0], [2.0]], &Device::Cpu)?;
/// let v = Tensor::new(&[[1.0f64, 0.5], [-0.3, 1.0], [0.2, -0.8]], &Device::Cpu)?;
/// let check = check_derivatives_given(&net, &x, &c, &v, 1e-5)?;
/// assert!(check.passes(1e-6), "{check:?}");
/// # Ok(())
/// # }
/// ```
pub fn check_derivatives_given<P: ConditionalConvexPotential + ?Sized>(
    potential: &P,
    x: &Tensor,
    context: &Tensor,
    v: &Tensor,
    step: f64,
) -> Result<DerivativeCheck> {
    const NAME: &str = "check_derivatives_given";
    if context.rank() != 2 || context.dim(0)? != x.dim(0)? || context.dtype() != x.dtype() {
        return Err(IcnnError::Shape(format!(
            "{NAME}: the context must be (B, d_c) with the B and dtype of x, got {:?} {:?} \
             for x {:?} {:?}",
            context.dims(),
            context.dtype(),
            x.dims(),
            x.dtype()
        )));
    }
    check_finite("check_derivatives_given: context", context)?;
    check_linearization(NAME, x, v, step, |p| {
        potential.linearize_with_context(p, context)
    })
}

/// The checks of [`check_derivatives`] and [`check_derivatives_given`] (`name` is the
/// function named in their errors) with `linearize` the potential's linearisation at a batch
/// of points.
fn check_linearization(
    name: &str,
    x: &Tensor,
    v: &Tensor,
    step: f64,
    linearize: impl Fn(&Tensor) -> Result<Linearization>,
) -> Result<DerivativeCheck> {
    if x.rank() != 2 || v.dims() != x.dims() || v.dtype() != x.dtype() {
        return Err(IcnnError::Shape(format!(
            "{name}: x and v must be (B, d) of one dtype, got {:?} {:?} and {:?} {:?}",
            x.dims(),
            x.dtype(),
            v.dims(),
            v.dtype()
        )));
    }
    if x.elem_count() == 0 {
        // An empty batch (or d = 0): nothing to measure (a reduction over it was candle's
        // "empty tensor for reduce").
        return Err(IcnnError::Shape(format!(
            "{name}: x of shape {:?} has no values: nothing would be measured",
            x.dims()
        )));
    }
    if !(step > 0.0 && step.is_finite()) {
        return Err(IcnnError::InvalidConfig(format!(
            "{name}: step must be finite and > 0, got {step}"
        )));
    }
    check_finite(&format!("{name}: x"), x)?;
    check_finite(&format!("{name}: v"), v)?;
    let hv = v.affine(step, 0.0)?;
    // A step that does not move x (rounded away, or v = 0) measures nothing.
    let moved = (x + &hv)?
        .sub(x)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    if moved == 0.0 {
        return Err(IcnnError::InvalidConfig(format!(
            "{name}: x + {step}·v rounds to x (step too small for the values, or v \
             = 0): nothing would be measured"
        )));
    }
    let lin = linearize(x)?.detach();
    let plus = linearize(&(x + &hv)?)?;
    let minus = linearize(&(x - &hv)?)?;
    let inv2h = 1.0 / (2.0 * step);

    let directional = host(&(lin.gradient() * v)?.sum(1)?)?;
    let fd_directional = host(&((plus.potential() - minus.potential())? * inv2h)?)?;
    let hvp = host(&lin.hvp(v)?)?;
    let fd_hvp = host(&((plus.gradient() - minus.gradient())? * inv2h)?)?;

    // The second direction: v's coordinates shifted by one place with alternating signs, so
    // that it is not parallel to v (rows reversed were v itself for identical rows, and
    // (0.5, 0.5) stayed (0.5, 0.5)); for d = 1 the test is trivially met.
    let d = x.dim(1)?;
    let u = if d > 1 {
        let shifted = Tensor::cat(&[v.narrow(1, 1, d - 1)?, v.narrow(1, 0, 1)?], 1)?;
        let signs: Vec<f64> = (0..d)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let signs = Tensor::new(signs.as_slice(), v.device())?.to_dtype(v.dtype())?;
        shifted.broadcast_mul(&signs)?
    } else {
        v.clone()
    };
    let u_hv = host(&(&u * lin.hvp(v)?)?.sum(1)?)?;
    let v_hu = host(&(v * lin.hvp(&u)?)?.sum(1)?)?;

    Ok(DerivativeCheck {
        gradient_error: relative_max(&directional, &fd_directional),
        hvp_error: relative_max(&hvp, &fd_hvp),
        symmetry_error: relative_max(&u_hv, &v_hu),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use candle_core::{DType, Device, Tensor};

    use super::{check_derivatives, check_derivatives_given};
    use crate::{
        ConditionalConvexPotential, ConvexPotential, HessianVectorProducts, IcnnError,
        Linearization, Result,
    };

    /// `∇²F v = scale·v`.
    #[derive(Debug)]
    struct Scaled(f64);

    impl HessianVectorProducts for Scaled {
        fn hvp(&self, v: &Tensor) -> Result<Tensor> {
            Ok(v.affine(self.0, 0.0)?)
        }
        fn detach(&self) -> Arc<dyn HessianVectorProducts> {
            Arc::new(Scaled(self.0))
        }
    }

    /// `F = ½‖x‖²` whose gradient is multiplied by `grad_factor` and whose Hessian-vector
    /// product is `hvp_factor·v` (1 and 1 are right).
    struct HalfSquare {
        grad_factor: f64,
        hvp_factor: f64,
    }

    impl ConvexPotential for HalfSquare {
        fn potential(&self, x: &Tensor) -> Result<Tensor> {
            Ok((x.sqr()?.sum(1)? * 0.5)?)
        }
        fn linearize(&self, x: &Tensor) -> Result<Linearization> {
            Linearization::from_parts(
                self.potential(x)?,
                x.affine(self.grad_factor, 0.0)?,
                Arc::new(Scaled(self.hvp_factor)),
            )
        }
        fn dim(&self) -> usize {
            2
        }
    }

    fn pair(dtype: DType) -> (Tensor, Tensor) {
        let x = Tensor::new(&[[0.5f64, -1.0], [2.0, 0.25]], &Device::Cpu).unwrap();
        let v = Tensor::new(&[[1.0f64, 0.5], [-0.5, 1.0]], &Device::Cpu).unwrap();
        (x.to_dtype(dtype).unwrap(), v.to_dtype(dtype).unwrap())
    }

    fn check(grad_factor: f64, hvp_factor: f64) -> super::DerivativeCheck {
        let (x, v) = pair(DType::F64);
        let pot = HalfSquare {
            grad_factor,
            hvp_factor,
        };
        check_derivatives(&pot, &x, &v, 1e-5).unwrap()
    }

    #[test]
    fn non_finite_derivatives_fail_the_check() {
        let right = check(1.0, 1.0);
        assert!(right.passes(1e-8), "{right:?}");
        // A NaN Hessian-vector product: before the fix hvp_error and symmetry_error were 0
        // and the check passed.
        let nan_hvp = check(1.0, f64::NAN);
        assert!(nan_hvp.hvp_error.is_nan() && nan_hvp.symmetry_error.is_nan());
        assert!(nan_hvp.gradient_error < 1e-8, "{nan_hvp:?}");
        assert!(!nan_hvp.passes(1e-6) && !nan_hvp.passes(f64::INFINITY));
        // A NaN gradient: every error compares a NaN (the HVP's central difference is of
        // the gradient).
        let nan_grad = check(f64::NAN, 1.0);
        assert!(nan_grad.gradient_error.is_nan() && nan_grad.hvp_error.is_nan());
        assert!(!nan_grad.passes(1e-6));
        // An infinite product: +∞.
        let inf_hvp = check(1.0, f64::INFINITY);
        assert_eq!(inf_hvp.hvp_error, f64::INFINITY);
        assert!(!inf_hvp.passes(f64::MAX));
    }

    /// An empty batch is a shape error saying nothing would be measured (it was candle's
    /// "empty tensor for reduce", from the reduction of the step check).
    #[test]
    fn empty_batches_are_refused() {
        let pot = HalfSquare {
            grad_factor: 1.0,
            hvp_factor: 1.0,
        };
        for dims in [(0, 2), (3, 0)] {
            let e = Tensor::zeros(dims, DType::F64, &Device::Cpu).unwrap();
            match check_derivatives(&pot, &e, &e, 1e-5) {
                Err(IcnnError::Shape(m)) => assert!(m.contains("nothing would be measured")),
                other => panic!("{dims:?}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn non_finite_points_or_directions_are_refused() {
        let pot = HalfSquare {
            grad_factor: 1.0,
            hvp_factor: 1.0,
        };
        for dtype in [DType::F64, DType::F32] {
            let (x, v) = pair(dtype);
            let nan_row = Tensor::new(&[[0.0f64, 0.0], [f64::NAN, 1.0]], &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let bad_x = (&x + &nan_row).unwrap();
            let bad_v = (&v + &nan_row).unwrap();
            for (x, v, input) in [(&bad_x, &v, "x"), (&x, &bad_v, "v")] {
                match check_derivatives(&pot, x, v, 1e-3) {
                    Err(IcnnError::NonFiniteInput {
                        input: name,
                        count,
                        row,
                        column,
                    }) => {
                        assert!(name.ends_with(input), "{name}");
                        assert_eq!((count, row, column), (1, 1, 0));
                    }
                    other => panic!("{dtype:?} {input}: unexpected {other:?}"),
                }
            }
        }
    }

    /// `F(x; c) = (1 + c₀²)·Σ_j exp(x_j)`, convex in `x` for every `c`, whose Hessian-vector
    /// product is multiplied by `hvp_factor` (1 is right).
    struct ScaledExp {
        hvp_factor: f64,
    }

    impl ScaledExp {
        fn scale(c: &Tensor) -> Result<Tensor> {
            Ok((c.narrow(1, 0, 1)?.sqr()? + 1.0)?)
        }
    }

    /// `∇²F v = diag(row b of the stored tensor)·v`.
    #[derive(Debug)]
    struct Diag(Tensor);

    impl HessianVectorProducts for Diag {
        fn hvp(&self, v: &Tensor) -> Result<Tensor> {
            Ok((v * &self.0)?)
        }
        fn detach(&self) -> Arc<dyn HessianVectorProducts> {
            Arc::new(Diag(self.0.detach()))
        }
    }

    impl ConditionalConvexPotential for ScaledExp {
        fn potential_with_context(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
            Ok(x.exp()?.broadcast_mul(&Self::scale(c)?)?.sum(1)?)
        }
        fn linearize_with_context(&self, x: &Tensor, c: &Tensor) -> Result<Linearization> {
            let g = x.exp()?.broadcast_mul(&Self::scale(c)?)?;
            Linearization::from_parts(
                g.sum(1)?,
                g.clone(),
                Arc::new(Diag(g.affine(self.hvp_factor, 0.0)?)),
            )
        }
        fn dim(&self) -> usize {
            2
        }
        fn context_dim(&self) -> usize {
            1
        }
    }

    fn context() -> Tensor {
        Tensor::new(&[[0.5f64], [-2.0]], &Device::Cpu).unwrap()
    }

    /// The conditional check passes a right potential and a PICNN, and catches a planted
    /// Hessian-vector product twice the right one (as `check_derivatives` does).
    #[test]
    fn the_conditional_check_passes_right_products_and_catches_a_wrong_one() {
        let (x, v) = pair(DType::F64);
        let c = context();
        // Tolerance 1e-6: the central differences' O(h²) truncation at h = 1e-5 and unit
        // scale is ~1e-10, their rounding ~u/h ≈ 1e-11 (relative to max(1, |analytic|)).
        let right =
            check_derivatives_given(&ScaledExp { hvp_factor: 1.0 }, &x, &c, &v, 1e-5).unwrap();
        assert!(right.passes(1e-6), "{right:?}");
        let wrong =
            check_derivatives_given(&ScaledExp { hvp_factor: 2.0 }, &x, &c, &v, 1e-5).unwrap();
        assert!(wrong.gradient_error < 1e-8, "{wrong:?}");
        // Off by the product itself, relative to the (doubled) analytic one:
        // max|∇²F v| / max(1, 2·max|∇²F v|) = 1/2 (max|∇²F v| = 5e²/2 ≈ 18.5 here).
        assert!((wrong.hvp_error - 0.5).abs() < 1e-6, "{wrong:?}");
        assert!(!wrong.passes(1e-6));

        use rand::SeedableRng;
        let vm = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let config = crate::PicnnConfig {
            dim: 2,
            context_dim: 1,
            width: 8,
            depth: 3,
            ..Default::default()
        };
        let net = crate::Picnn::new(
            vb.pp("picnn"),
            &config,
            &mut rand::rngs::StdRng::seed_from_u64(4),
        )
        .unwrap();
        let check = check_derivatives_given(&net, &x, &c, &v, 1e-5).unwrap();
        assert!(check.passes(1e-6), "{check:?}");
    }

    /// A context of another batch size or dtype, or with a NaN, is refused by name.
    #[test]
    fn the_conditional_check_refuses_a_bad_context() {
        let (x, v) = pair(DType::F64);
        let pot = ScaledExp { hvp_factor: 1.0 };
        let short = Tensor::new(&[[0.5f64]], &Device::Cpu).unwrap();
        let f32_context = context().to_dtype(DType::F32).unwrap();
        for c in [&short, &f32_context] {
            match check_derivatives_given(&pot, &x, c, &v, 1e-5) {
                Err(IcnnError::Shape(m)) => {
                    assert!(m.starts_with("check_derivatives_given: the context"), "{m}")
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let nan = Tensor::new(&[[0.5f64], [f64::NAN]], &Device::Cpu).unwrap();
        match check_derivatives_given(&pot, &x, &nan, &v, 1e-5) {
            Err(IcnnError::NonFiniteInput { input, row, .. }) => {
                assert_eq!(
                    (input.as_str(), row),
                    ("check_derivatives_given: context", 1)
                )
            }
            other => panic!("unexpected {other:?}"),
        }
        // The shared checks name the conditional function.
        match check_derivatives_given(&pot, &x, &context(), &v, 0.0) {
            Err(IcnnError::InvalidConfig(m)) => assert!(m.starts_with("check_derivatives_given:")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
