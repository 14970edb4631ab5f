//! The host scalar types supported by the nalgebra and faer backends.

/// A host floating-point scalar (`f32` or `f64`). Sealed: only these two implement it.
///
/// It is the element type of the host backends ([`crate::DenseNalgebraOperator`],
/// [`crate::DenseFaerOperator`]); scalars cross to the solvers as `f64`.
///
/// ```
/// use krylov::Real;
/// fn to_f64_sum<T: Real>(xs: &[T]) -> f64 {
///     xs.iter().map(|x| x.into_f64()).sum()
/// }
/// assert_eq!(to_f64_sum(&[1.5f32, 2.5]), 4.0);
/// assert_eq!(<f32 as Real>::EPSILON, f32::EPSILON as f64);
/// // f32 rounds: 0.1 is not representable exactly.
/// assert_ne!(f32::lossy_from_f64(0.1).into_f64(), 0.1);
/// assert_eq!(f64::lossy_from_f64(0.1), 0.1);
/// ```
pub trait Real:
    Copy
    + PartialOrd
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + sealed::Sealed
{
    /// Unit roundoff.
    const EPSILON: f64;
    /// Zero.
    const ZERO: Self;
    /// Conversion to `f64`.
    fn into_f64(self) -> f64;
    /// Conversion from `f64` (rounding for `f32`).
    fn lossy_from_f64(v: f64) -> Self;
}

mod sealed {
    /// Seals [`super::Real`]: a private trait, so no type outside this crate can implement it.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

impl Real for f32 {
    const EPSILON: f64 = f32::EPSILON as f64;
    const ZERO: Self = 0.0;
    #[inline]
    fn into_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn lossy_from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Real for f64 {
    const EPSILON: f64 = f64::EPSILON;
    const ZERO: Self = 0.0;
    #[inline]
    fn into_f64(self) -> f64 {
        self
    }
    #[inline]
    fn lossy_from_f64(v: f64) -> Self {
        v
    }
}

/// Column kernels shared by the column-major host backends.
pub(crate) mod kernels {
    use super::Real;

    /// Dot product accumulated in `f64`.
    #[inline]
    pub fn dot<T: Real>(x: &[T], y: &[T]) -> f64 {
        x.iter()
            .zip(y)
            .map(|(a, b)| a.into_f64() * b.into_f64())
            .sum()
    }

    /// Max-abs, NaN-propagating.
    #[inline]
    pub fn norm_inf<T: Real>(x: &[T]) -> f64 {
        let mut m = 0.0f64;
        for v in x {
            let a = v.into_f64().abs();
            if a.is_nan() {
                return f64::NAN;
            }
            if a > m {
                m = a;
            }
        }
        m
    }

    /// `y ← a·y + b·x`, with the common special cases unrolled.
    #[inline]
    pub fn axpby<T: Real>(a: f64, b: f64, x: &[T], y: &mut [T]) {
        let (at, bt) = (T::lossy_from_f64(a), T::lossy_from_f64(b));
        if a == 1.0 {
            if b == 0.0 {
                return;
            }
            for (yi, xi) in y.iter_mut().zip(x) {
                *yi = *yi + bt * *xi;
            }
        } else if b == 0.0 {
            for yi in y.iter_mut() {
                *yi = at * *yi;
            }
        } else if b == 1.0 {
            for (yi, xi) in y.iter_mut().zip(x) {
                *yi = at * *yi + *xi;
            }
        } else {
            for (yi, xi) in y.iter_mut().zip(x) {
                *yi = at * *yi + bt * *xi;
            }
        }
    }

    /// `y ← a·y`.
    #[inline]
    pub fn scale<T: Real>(a: f64, y: &mut [T]) {
        let at = T::lossy_from_f64(a);
        for yi in y.iter_mut() {
            *yi = at * *yi;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Real;
    use super::kernels::axpby;

    /// `y ← a·y + b·x` against the closed form evaluated in `T` (`a`, `b` rounded to `T` once,
    /// then one rounding per product and one for the sum), for every branch of the kernel:
    /// `a = 1` with `b = 0` (no-op) and `b ≠ 0`, `b = 0`, `b = 1`, and the general case. The
    /// special cases drop only exact operations (`1·y`, `+ 0·x` for finite `x`, `1·x`), so
    /// they must agree with the closed form bit for bit (compared with `==`, which holds
    /// for equal values; no input is zero, so no sign of zero is at stake).
    /// `x` and `y` cannot alias: the signature takes `&[T]` and `&mut [T]`, which Rust's
    /// borrow rules keep disjoint.
    fn check<T: Real>() {
        let x0: Vec<f64> = vec![0.3, -1.7, 2.5e3, -4.1e-3, 7.0, 1.0 / 3.0];
        let y0: Vec<f64> = vec![-0.9, 0.11, 6.0, 3.3e-2, -2.0e2, 5.0 / 7.0];
        let x: Vec<T> = x0.iter().map(|&v| T::lossy_from_f64(v)).collect();
        let pairs = [
            (1.0, 0.0),
            (1.0, 2.5),
            (1.0, -0.1),
            (0.3, 0.0),
            (-2.0, 0.0),
            (0.7, 1.0),
            (0.0, 1.0),
            (-1.5, 0.25),
            (0.1, -3.0),
            (0.0, 0.0),
        ];
        for (a, b) in pairs {
            let mut y: Vec<T> = y0.iter().map(|&v| T::lossy_from_f64(v)).collect();
            let before = y.clone();
            axpby(a, b, &x, &mut y);
            let (at, bt) = (T::lossy_from_f64(a), T::lossy_from_f64(b));
            for i in 0..y.len() {
                let expected = at * before[i] + bt * x[i];
                assert!(
                    y[i] == expected,
                    "{} a = {a}, b = {b}, i = {i}: {:?} vs {expected:?}",
                    std::any::type_name::<T>(),
                    y[i]
                );
            }
            // The closed form in f64, to the rounding of T (relative 1e-6 for f32, whose
            // unit roundoff is 6e-8; 1e-15 for f64): catches a wrong formula that happens to
            // be evaluated consistently (e.g. a and b swapped).
            let tol = if T::EPSILON > 1e-10 { 1e-6 } else { 1e-15 };
            for i in 0..y.len() {
                let exact = a * y0[i] + b * x0[i];
                let scale = (a * y0[i]).abs() + (b * x0[i]).abs();
                assert!(
                    (y[i].into_f64() - exact).abs() <= tol * scale,
                    "{} a = {a}, b = {b}, i = {i}: {:?} vs {exact}",
                    std::any::type_name::<T>(),
                    y[i]
                );
            }
        }
    }

    #[test]
    fn axpby_matches_the_closed_form_in_every_branch() {
        check::<f64>();
        check::<f32>();
    }
}
