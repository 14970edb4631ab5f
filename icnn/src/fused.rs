//! Fused CPU kernels for the activations and their derivatives (candle custom ops). The
//! element-wise sums of the tangent recursions are in [`crate::fused_sums`].
//!
//! [`ActDerivative`] computes the `order`-th derivative of an activation in one pass over the
//! data (instead of the ~7 elementwise candle ops of the composed formula); [`ActTriple`]
//! computes value, first and second derivative together (sharing the exponential). The
//! backward of an op is the op of the next order, so candle can differentiate them any number
//! of times (first-order backward for the explicit derivatives, higher-order with
//! `CANDLE_GRAD_DO_NOT_DETACH=1`). Only CPU f32/f64 tensors take this path; other devices use
//! the composed tensor ops of [`crate::Activation`]. f32 data is computed in f32.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::activation::ActivationKind;

/// Which activation, with its shift/symmetry (see [`crate::Activation`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ActSpec {
    pub kind: ActivationKind,
    /// Subtracted from the value: `s(0)` when zero-shifted, else 0.
    pub shift: f64,
    /// `s(x) − x/2`.
    pub symmetric: bool,
}

/// Coefficients `c_i` (of `σ^i`) of the `order`-th derivative of softplus, `order ≥ 1`:
/// `p_1 = σ`, `p_{n+1}(σ) = p_n'(σ) (σ − σ²)`.
fn softplus_poly(order: usize) -> Vec<f64> {
    let mut p = vec![0.0, 1.0];
    for _ in 1..order {
        let dp: Vec<f64> = (1..p.len()).map(|i| i as f64 * p[i]).collect();
        let mut q = vec![0.0; dp.len() + 2];
        for (i, c) in dp.iter().enumerate() {
            q[i + 1] += c;
            q[i + 2] -= c;
        }
        p = q;
    }
    p
}

macro_rules! kernels {
    ($m:ident, $t:ty, $bits:ty, $erfc:path, $exp_min:expr, $magic:expr, $mant:expr, $bias:expr,
     $ln2_hi:expr, $ln2_lo:expr, $exp_coefs:expr, $log_coefs:expr) => {
        pub(crate) mod $m {
            use super::{ActSpec, ActivationKind};

            const FRAC_1_SQRT_2PI: $t =
                (std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2 * 0.5) as $t;
            const FRAC_1_SQRT_2: $t = std::f64::consts::FRAC_1_SQRT_2 as $t;
            const LOG2E: $t = std::f64::consts::LOG2_E as $t;
            /// Taylor coefficients of `exp` on `[−ln2/2, ln2/2]`, highest degree first.
            const EXP_COEFS: &[$t] = &$exp_coefs;
            /// `1/(2k+1)`, highest `k` first: `log1p(e) = 2s Σ s^{2k}/(2k+1)`, `s = e/(2+e)`.
            const LOG_COEFS: &[$t] = &$log_coefs;

            /// `exp(y)` for `y ≤ 0`, branch-free (vectorisable): Cody–Waite reduction, a Taylor
            /// polynomial accurate to ~1 ulp, and the power of two built from its bits. Inputs
            /// below the smallest normal exponent give about the smallest normal value
            /// (absolute error < 1e-37 in f32, 1e-307 in f64). NaN propagates.
            #[inline(always)]
            pub(crate) fn exp_neg(y: $t) -> $t {
                // A select (not `max`) so that NaN propagates.
                let y = if y < $exp_min { $exp_min } else { y };
                let shifted = y * LOG2E + $magic;
                let n = shifted - $magic;
                let k =
                    (shifted.to_bits() as $bits).wrapping_sub((($magic) as $t).to_bits() as $bits);
                let r = (y - n * $ln2_hi) - n * $ln2_lo;
                let mut p: $t = 0.0;
                for &c in EXP_COEFS {
                    p = p * r + c;
                }
                let scale = <$t>::from_bits((k.wrapping_add($bias) << $mant) as _);
                p * scale
            }

            /// `(σ(x), e, r)` with `e = exp(−|x|)` and `r = 1/(1 + e)`: the logistic function
            /// as `r` or `e·r` (no overflow; vectorisable), with the parts its derivatives use
            /// (`σ(1 − σ) = e·r²`).
            #[inline(always)]
            pub(crate) fn logistic(x: $t) -> ($t, $t, $t) {
                let e = exp_neg(-x.abs());
                let r = 1.0 / (1.0 + e);
                (if x >= 0.0 { r } else { e * r }, e, r)
            }

            /// `log(1 + e)` for `0 ≤ e ≤ 1` (vectorisable series in `s = e/(2+e) ≤ 1/3`,
            /// accurate in relative terms for small `e`).
            #[inline(always)]
            pub(super) fn log1p_unit(e: $t) -> $t {
                let s = e / (2.0 + e);
                let z = s * s;
                let mut p: $t = 0.0;
                for &c in LOG_COEFS {
                    p = p * z + c;
                }
                2.0 * s * p
            }

            #[inline(always)]
            fn cdf(x: $t) -> $t {
                0.5 * $erfc(-x * FRAC_1_SQRT_2)
            }

            #[inline(always)]
            fn pdf(x: $t) -> $t {
                exp_neg(-0.5 * x * x) * FRAC_1_SQRT_2PI
            }

            /// `(value, s', s'')` of the base function (no shift / symmetry).
            #[inline(always)]
            fn base_triple(kind: ActivationKind, x: $t) -> ($t, $t, $t) {
                match kind {
                    ActivationKind::Softplus => {
                        let (sig, e, r) = logistic(x);
                        (x.max(0.0) + log1p_unit(e), sig, e * r * r)
                    }
                    ActivationKind::GaussianSoftplus => {
                        let (c, p) = (cdf(x), pdf(x));
                        (x * c + p, c, p)
                    }
                }
            }

            /// Constants `(a, c0, c1)`: value `+ a·x + c0`, first derivative `+ c1`.
            #[inline(always)]
            fn affine_parts(s: &ActSpec) -> ($t, $t, $t) {
                let a: $t = if s.symmetric { -0.5 } else { 0.0 };
                (a, -(s.shift as $t), a)
            }

            /// The value `base + a·x + c0`, and its limit at `x = ±∞`, where the sum is `NaN`
            /// (`0·∞` for `a = 0`, `∞ − ∞` for the symmetric variants at `+∞`, and the Gaussian
            /// softplus's `x·Φ(x)` is `−∞·0` at `−∞`): `+∞` at `+∞` (slope `1 + a > 0`); at
            /// `−∞`, `+∞` for the symmetric variants (`−x/2`), else the constant `c0`.
            #[inline(always)]
            fn affine_value(base: $t, x: $t, a: $t, c0: $t) -> $t {
                if x.is_infinite() {
                    if x > 0.0 || a != 0.0 {
                        <$t>::INFINITY
                    } else {
                        c0
                    }
                } else {
                    base + a * x + c0
                }
            }

            crate::wide_simd::avx2_fma_fn! {
                /// Value, first and second derivative of `src` into `v`, `d1`, `d2`.
                pub(super) fn triple_into(
                    s: &ActSpec,
                    src: &[$t],
                    v: &mut [$t],
                    d1: &mut [$t],
                    d2: &mut [$t],
                ) {
                    let (a, c0, c1) = affine_parts(s);
                    macro_rules! run {
                        ($kind:expr) => {
                            for (((&x, v), d1), d2) in src
                                .iter()
                                .zip(v.iter_mut())
                                .zip(d1.iter_mut())
                                .zip(d2.iter_mut())
                            {
                                let (t0, t1, t2) = base_triple($kind, x);
                                *v = affine_value(t0, x, a, c0);
                                *d1 = t1 + c1;
                                *d2 = t2;
                            }
                        };
                    }
                    match s.kind {
                        ActivationKind::Softplus => run!(ActivationKind::Softplus),
                        ActivationKind::GaussianSoftplus => run!(ActivationKind::GaussianSoftplus),
                    }
                }
            }

            crate::wide_simd::avx2_fma_fn! {
                /// Derivative of order `order` of `src` (`poly`: softplus coefficients, order
                /// ≥ 4).
                pub(super) fn derivative_into(
                    s: &ActSpec,
                    order: usize,
                    poly: &[f64],
                    src: &[$t],
                    out: &mut [$t],
                ) {
                    let (a, c0, c1) = affine_parts(s);
                    macro_rules! run {
                        (|$x:ident| $body:expr) => {
                            for (&$x, o) in src.iter().zip(out.iter_mut()) {
                                *o = $body;
                            }
                        };
                    }
                    let kind = s.kind;
                    match (order, kind) {
                        (0, ActivationKind::Softplus) => run!(|x| {
                            let e = exp_neg(-x.abs());
                            affine_value(x.max(0.0) + log1p_unit(e), x, a, c0)
                        }),
                        (1, ActivationKind::Softplus) => run!(|x| logistic(x).0 + c1),
                        (2, ActivationKind::Softplus) => run!(|x| {
                            let (_, e, r) = logistic(x);
                            e * r * r
                        }),
                        (3, ActivationKind::Softplus) => run!(|x| {
                            // σ(1−σ)(1−2σ), with 1 − 2σ = −sign(x)(1−e)/(1+e).
                            let (_, e, r) = logistic(x);
                            let m = (1.0 - e) * r;
                            e * r * r * if x >= 0.0 { -m } else { m }
                        }),
                        (_, ActivationKind::Softplus) => run!(|x| {
                            let sg = logistic(x).0;
                            poly.iter().rev().fold(0.0, |acc, &c| acc * sg + c as $t)
                        }),
                        (0, ActivationKind::GaussianSoftplus) => {
                            run!(|x| affine_value(base_triple(kind, x).0, x, a, c0))
                        }
                        (1, ActivationKind::GaussianSoftplus) => run!(|x| cdf(x) + c1),
                        (n, ActivationKind::GaussianSoftplus) => {
                            // φ^{(k)} = (−1)^k He_k(x) φ(x), k = n − 2.
                            let k = n - 2;
                            let sign: $t = if k % 2 == 0 { 1.0 } else { -1.0 };
                            run!(|x| {
                                let (mut h0, mut h1): ($t, $t) = (1.0, x);
                                if k == 0 {
                                    h1 = 1.0;
                                }
                                for j in 1..k {
                                    let h2 = x * h1 - j as $t * h0;
                                    h0 = h1;
                                    h1 = h2;
                                }
                                // Where φ underflows (`exp_neg` returns about the smallest
                                // normal value there), so does He_k·φ: 0, not the clamped φ
                                // times a polynomial that may overflow (∞ at x = ±∞).
                                if 0.5 * x * x > -$exp_min { 0.0 } else { sign * h1 * pdf(x) }
                            })
                        }
                    }
                }
            }

            /// Scalar derivative (tests).
            #[cfg(test)]
            pub(super) fn derivative(s: &ActSpec, order: usize, poly: &[f64], x: $t) -> $t {
                let mut out = [0.0];
                derivative_into(s, order, poly, &[x], &mut out);
                out[0]
            }
        }
    };
}

kernels!(
    k64,
    f64,
    i64,
    candle_core::cpu::erf::erfc_f64,
    -708.0,
    6755399441055744.0,
    52,
    1023,
    6.931_457_519_531_25e-1,
    1.428_606_820_309_417_2e-6,
    [
        1.0 / 6227020800.0,
        1.0 / 479001600.0,
        1.0 / 39916800.0,
        1.0 / 3628800.0,
        1.0 / 362880.0,
        1.0 / 40320.0,
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0
    ],
    [
        1.0 / 33.0,
        1.0 / 31.0,
        1.0 / 29.0,
        1.0 / 27.0,
        1.0 / 25.0,
        1.0 / 23.0,
        1.0 / 21.0,
        1.0 / 19.0,
        1.0 / 17.0,
        1.0 / 15.0,
        1.0 / 13.0,
        1.0 / 11.0,
        1.0 / 9.0,
        1.0 / 7.0,
        1.0 / 5.0,
        1.0 / 3.0,
        1.0
    ]
);
kernels!(
    k32,
    f32,
    i32,
    candle_core::cpu::erf::erfc_f32,
    -87.0,
    12582912.0,
    23,
    127,
    355.0 / 512.0,
    -2.121_944_4e-4,
    [
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0
    ],
    [
        1.0 / 15.0,
        1.0 / 13.0,
        1.0 / 11.0,
        1.0 / 9.0,
        1.0 / 7.0,
        1.0 / 5.0,
        1.0 / 3.0,
        1.0
    ]
);

/// The activation kernels for one host element type (the host surrogate kernels are generic
/// over f32 and f64).
pub(crate) trait ActKernels: Sized {
    /// Value, first and second derivative of `src` into `v`, `d1`, `d2`.
    fn triple_into(s: &ActSpec, src: &[Self], v: &mut [Self], d1: &mut [Self], d2: &mut [Self]);
    /// The value (`order` 0) or a derivative of order 1 to 3 of `src` into `out`, with the
    /// arithmetic of [`ActDerivative`] (the same bits).
    fn derivative_into(s: &ActSpec, order: usize, src: &[Self], out: &mut [Self]);
}

impl ActKernels for f32 {
    fn triple_into(s: &ActSpec, src: &[f32], v: &mut [f32], d1: &mut [f32], d2: &mut [f32]) {
        k32::triple_into(s, src, v, d1, d2)
    }
    fn derivative_into(s: &ActSpec, order: usize, src: &[f32], out: &mut [f32]) {
        debug_assert!(order <= 3, "orders ≥ 4 need softplus_poly");
        k32::derivative_into(s, order, &[], src, out)
    }
}

impl ActKernels for f64 {
    fn triple_into(s: &ActSpec, src: &[f64], v: &mut [f64], d1: &mut [f64], d2: &mut [f64]) {
        k64::triple_into(s, src, v, d1, d2)
    }
    fn derivative_into(s: &ActSpec, order: usize, src: &[f64], out: &mut [f64]) {
        debug_assert!(order <= 3, "orders ≥ 4 need softplus_poly");
        k64::derivative_into(s, order, &[], src, out)
    }
}

pub(crate) fn contiguous_slice<'a, T>(v: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg("icnn activation op needs a contiguous input".into())
    })?;
    Ok(&v[start..end])
}

pub(crate) fn unsupported() -> candle_core::Error {
    candle_core::Error::Msg("icnn activation op supports f32 and f64 only".into())
}

/// The `order`-th derivative of an activation, elementwise.
#[derive(Debug, Clone)]
pub(crate) struct ActDerivative {
    spec: ActSpec,
    order: usize,
    poly: Vec<f64>,
}

impl ActDerivative {
    pub(crate) fn new(spec: ActSpec, order: usize) -> Self {
        let poly = if spec.kind == ActivationKind::Softplus && order >= 4 {
            softplus_poly(order)
        } else {
            Vec::new()
        };
        Self { spec, order, poly }
    }
}

impl CustomOp1 for ActDerivative {
    fn name(&self) -> &'static str {
        "icnn-activation-derivative"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (s, o, p) = (&self.spec, self.order, self.poly.as_slice());
        let out = match storage {
            CpuStorage::F64(v) => {
                let src = contiguous_slice(v, layout)?;
                let mut out = vec![0.0f64; src.len()];
                k64::derivative_into(s, o, p, src, &mut out);
                CpuStorage::F64(out)
            }
            CpuStorage::F32(v) => {
                let src = contiguous_slice(v, layout)?;
                let mut out = vec![0.0f32; src.len()];
                k32::derivative_into(s, o, p, src, &mut out);
                CpuStorage::F32(out)
            }
            _ => return Err(unsupported()),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let d = arg.apply_op1(ActDerivative::new(self.spec, self.order + 1))?;
        Ok(Some(grad_res.mul(&d)?))
    }
}

/// Value, first and second derivative in one pass; output shape `(3, ...)`.
#[derive(Debug, Clone)]
pub(crate) struct ActTriple {
    spec: ActSpec,
}

impl ActTriple {
    pub(crate) fn new(spec: ActSpec) -> Self {
        Self { spec }
    }
}

impl CustomOp1 for ActTriple {
    fn name(&self) -> &'static str {
        "icnn-activation-triple"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = &self.spec;
        let mut dims = vec![3];
        dims.extend_from_slice(layout.dims());
        macro_rules! run {
            ($v:expr, $k:ident, $t:ty, $variant:ident) => {{
                let src = contiguous_slice($v, layout)?;
                let n = src.len();
                let mut out: Vec<$t> = vec![0.0; 3 * n];
                let (a, rest) = out.split_at_mut(n);
                let (b, c) = rest.split_at_mut(n);
                $k::triple_into(s, src, a, b, c);
                CpuStorage::$variant(out)
            }};
        }
        let out = match storage {
            CpuStorage::F64(v) => run!(v, k64, f64, F64),
            CpuStorage::F32(v) => run!(v, k32, f32, F32),
            _ => return Err(unsupported()),
        };
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        // d/dx of (s, s', s'') is (s', s'', s'''): the first two are the op's own outputs
        // (tracked, so higher-order backward goes through this op again), only s''' is new.
        let d3 = arg.apply_op1(ActDerivative::new(self.spec, 3))?;
        let total = ((grad_res.get(0)?.mul(&res.get(1)?)?
            + grad_res.get(1)?.mul(&res.get(2)?)?)?
            + grad_res.get(2)?.mul(&d3)?)?;
        Ok(Some(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn specs() -> Vec<ActSpec> {
        let mut v = Vec::new();
        for kind in [ActivationKind::Softplus, ActivationKind::GaussianSoftplus] {
            for (shift, symmetric) in [(0.0, false), (0.3, true)] {
                v.push(ActSpec {
                    kind,
                    shift,
                    symmetric,
                });
            }
        }
        v
    }

    /// Each derivative order (up to 6) equals the central difference of the previous one.
    #[test]
    fn derivative_orders_match_central_differences() {
        let xs: Vec<f64> = vec![-7.0, -2.5, -0.7, -0.1, 0.2, 0.9, 3.0, 6.5];
        let h = 1e-5;
        for spec in specs() {
            for order in 0..6 {
                let op = ActDerivative::new(spec, order);
                let next = ActDerivative::new(spec, order + 1);
                for &x in &xs {
                    let f = |t: f64| k64::derivative(&op.spec, op.order, &op.poly, t);
                    let fd = (f(x + h) - f(x - h)) / (2.0 * h);
                    let d = k64::derivative(&next.spec, next.order, &next.poly, x);
                    // Truncation h²·|f'''| with derivatives of order ≤ 9 bounded by ~10.
                    assert!(
                        (fd - d).abs() <= 1e-7 * (1.0 + d.abs()),
                        "{spec:?} order {}: at {x}: {d} vs {fd}",
                        order + 1
                    );
                }
            }
        }
    }

    /// The f32 kernels agree with the f64 ones, and the tensor ops with the kernels.
    #[test]
    fn f32_kernels_and_triple_op_agree() {
        let xs: Vec<f64> = (0..41).map(|i| -10.0 + 0.5 * i as f64).collect();
        for spec in specs() {
            let t = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
            let triple = t.apply_op1(ActTriple::new(spec)).unwrap();
            for k in 0..3 {
                let single = t.apply_op1(ActDerivative::new(spec, k)).unwrap();
                let a = triple.get(k).unwrap().to_vec1::<f64>().unwrap();
                let b = single.to_vec1::<f64>().unwrap();
                assert_eq!(a, b);
                for (i, &x) in xs.iter().enumerate() {
                    let f32v = k32::derivative(&spec, k, &[], x as f32) as f64;
                    assert!((f32v - b[i]).abs() <= 1e-5 * (1.0 + b[i].abs()));
                }
            }
        }
    }

    /// At `x = ±∞` each order takes its limit (was `NaN` for the value: `0·∞`, `∞ − ∞`,
    /// `−∞·Φ(−∞)`), and the Gaussian softplus's derivatives of order ≥ 3 are 0 where `φ`
    /// underflows (were the clamped `φ` times `He_k(x)`: `∞` at `±1e200`), in f64 and f32; the
    /// public `softplus` (order 0) agrees with its composed form at `±∞`.
    #[test]
    fn every_order_takes_its_limit_at_infinity_and_far_out() {
        for spec in specs() {
            let slope = if spec.symmetric { -0.5 } else { 0.0 };
            let c0 = -spec.shift;
            for order in 0..6 {
                let op = ActDerivative::new(spec, order);
                // (x, limit); far out the derivatives of order ≥ 2 are 0 to 1e-300 (f64).
                let mut cases = vec![(f64::INFINITY, 0.0), (f64::NEG_INFINITY, 0.0)];
                match order {
                    0 => {
                        cases[0].1 = f64::INFINITY;
                        cases[1].1 = if spec.symmetric { f64::INFINITY } else { c0 };
                    }
                    1 => {
                        cases[0].1 = 1.0 + slope;
                        cases[1].1 = slope;
                    }
                    _ => cases.extend([(1e200, 0.0), (-1e200, 0.0)]),
                }
                if spec.kind == ActivationKind::GaussianSoftplus && order >= 2 {
                    // φ(40) = e⁻⁸⁰⁰/√(2π) underflows in f64 (σ(1 − σ) at 40 does not).
                    cases.push((40.0, 0.0));
                }
                for (x, want) in cases {
                    let got = k64::derivative(&op.spec, op.order, &op.poly, x);
                    let ok = if want.is_infinite() {
                        got == want
                    } else {
                        (got - want).abs() <= 1e-300
                    };
                    assert!(ok, "{spec:?} order {order} at {x}: {got}, want {want}");
                    let got32 = k32::derivative(&op.spec, op.order, &op.poly, x as f32);
                    let ok = if want.is_infinite() {
                        got32 == want as f32
                    } else {
                        (got32 - want as f32).abs() <= 1e-37
                    };
                    assert!(
                        ok,
                        "f32 {spec:?} order {order} at {x}: {got32}, want {want}"
                    );
                }
            }
        }
        let x = Tensor::new(&[f64::NEG_INFINITY, f64::INFINITY], &Device::Cpu).unwrap();
        let fused = crate::softplus(&x).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(fused, [0.0, f64::INFINITY]);
        let composed = crate::Activation::new(ActivationKind::Softplus)
            .eval_composed(&x, false)
            .unwrap()
            .value
            .to_vec1::<f64>()
            .unwrap();
        assert_eq!(fused, composed);
    }

    #[test]
    fn softplus_polynomials() {
        // σ'' = σ − 3σ² + 2σ³ as the third derivative of softplus.
        assert_eq!(softplus_poly(3), vec![0.0, 1.0, -3.0, 2.0]);
    }
}
