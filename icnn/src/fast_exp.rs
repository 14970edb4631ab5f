//! `exp` of non-positive arguments, branch-free so that loops over it vectorise: the kernel
//! the activations use (`fused.rs`), for other element-wise code (the VAE's gates and its
//! 256-way softmax).

/// `exp(y)` for `y ≤ 0` by Cody–Waite reduction and a Taylor polynomial (about 1 ulp), with
/// the power of two built from its bits; no branch and no call, so a loop of it vectorises
/// (libm's `exp` is a call per value). Arguments below the smallest normal exponent
/// (−708 in f64, −87 in f32) give about the smallest normal value instead of a subnormal or
/// 0 (absolute error below 1e-307 in f64, 1e-37 in f32); NaN gives NaN. Positive arguments
/// are outside the contract.
///
/// ```
/// use icnn::ExpNonPositive;
///
/// for y in [0.0f64, -1e-9, -0.5, -3.25, -40.0, -700.0] {
///     let (fast, libm) = (y.exp_nonpositive(), y.exp());
///     assert!((fast - libm).abs() <= 4.0 * f64::EPSILON * libm);
/// }
/// assert!((-3.25f32).exp_nonpositive() > 0.0);
/// assert!(f64::NAN.exp_nonpositive().is_nan());
/// ```
pub trait ExpNonPositive: Copy {
    /// `exp(self)` for `self ≤ 0` (see the trait docs).
    fn exp_nonpositive(self) -> Self;
}

impl ExpNonPositive for f64 {
    #[inline(always)]
    fn exp_nonpositive(self) -> f64 {
        crate::fused::k64::exp_neg(self)
    }
}

impl ExpNonPositive for f32 {
    #[inline(always)]
    fn exp_nonpositive(self) -> f32 {
        crate::fused::k32::exp_neg(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative to libm over `[−700, 0]` (f64) and `[−87, 0]` (f32), 20,001 points each: the
    /// polynomial is accurate to ~1 ulp, libm to < 1 ulp, so 4 units of the type's epsilon.
    #[test]
    fn matches_libm_on_the_normal_range() {
        let n = 20_000;
        for i in 0..=n {
            let y = -700.0 * i as f64 / n as f64;
            let (fast, libm) = (y.exp_nonpositive(), y.exp());
            assert!(
                (fast - libm).abs() <= 4.0 * f64::EPSILON * libm,
                "f64 {y}: {fast} vs {libm}"
            );
            let y = (-87.0 * i as f64 / n as f64) as f32;
            let (fast, libm) = (y.exp_nonpositive(), y.exp());
            assert!(
                (fast - libm).abs() <= 4.0 * f32::EPSILON * libm,
                "f32 {y}: {fast} vs {libm}"
            );
        }
    }

    #[test]
    fn edges_zero_underflow_and_nan() {
        assert_eq!(0.0f64.exp_nonpositive(), 1.0);
        assert_eq!(0.0f32.exp_nonpositive(), 1.0);
        let tiny = f64::NEG_INFINITY.exp_nonpositive();
        assert!((0.0..1e-300).contains(&tiny));
        assert!(f32::NAN.exp_nonpositive().is_nan());
    }
}
