//! Fused CPU kernels for the activations and their derivatives (candle custom ops).
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
    ($m:ident, $t:ty, $erfc:path) => {
        mod $m {
            use super::{ActSpec, ActivationKind};

            const FRAC_1_SQRT_2PI: $t = 0.398_942_280_401_432_7;
            const FRAC_1_SQRT_2: $t = std::f64::consts::FRAC_1_SQRT_2 as $t;

            /// `(e^{−|x|}, 1/(1 + e^{−|x|}))`.
            #[inline(always)]
            fn exp_parts(x: $t) -> ($t, $t) {
                let e = (-x.abs()).exp();
                (e, 1.0 / (1.0 + e))
            }

            #[inline(always)]
            fn sigmoid(x: $t, e: $t, r: $t) -> $t {
                if x >= 0.0 { r } else { e * r }
            }

            #[inline(always)]
            fn cdf(x: $t) -> $t {
                0.5 * $erfc(-x * FRAC_1_SQRT_2)
            }

            #[inline(always)]
            fn pdf(x: $t) -> $t {
                (-0.5 * x * x).exp() * FRAC_1_SQRT_2PI
            }

            /// Value, first and second derivative.
            #[inline(always)]
            pub(super) fn triple(s: &ActSpec, x: $t) -> ($t, $t, $t) {
                let (v, d1, d2) = match s.kind {
                    ActivationKind::Softplus => {
                        let (e, r) = exp_parts(x);
                        (x.max(0.0) + e.ln_1p(), sigmoid(x, e, r), e * r * r)
                    }
                    ActivationKind::GaussianSoftplus => {
                        let (c, p) = (cdf(x), pdf(x));
                        (x * c + p, c, p)
                    }
                };
                if s.symmetric {
                    (v - 0.5 * x - s.shift as $t, d1 - 0.5, d2)
                } else {
                    (v - s.shift as $t, d1, d2)
                }
            }

            /// Derivative of order `order` (`poly`: softplus coefficients for order ≥ 4).
            #[inline(always)]
            pub(super) fn derivative(s: &ActSpec, order: usize, poly: &[f64], x: $t) -> $t {
                match (order, s.kind) {
                    (0..=2, _) => {
                        let t = triple(s, x);
                        [t.0, t.1, t.2][order]
                    }
                    (3, ActivationKind::Softplus) => {
                        // σ(1−σ)(1−2σ), with 1 − 2σ = −sign(x)(1−e)/(1+e).
                        let (e, r) = exp_parts(x);
                        let m = (1.0 - e) * r;
                        e * r * r * if x >= 0.0 { -m } else { m }
                    }
                    (_, ActivationKind::Softplus) => {
                        let (e, r) = exp_parts(x);
                        let sg = sigmoid(x, e, r);
                        poly.iter().rev().fold(0.0, |acc, &c| acc * sg + c as $t)
                    }
                    (n, ActivationKind::GaussianSoftplus) => {
                        // φ^{(k)} = (−1)^k He_k(x) φ(x), k = n − 2 ≥ 1.
                        let k = n - 2;
                        let (mut h0, mut h1): ($t, $t) = (1.0, x);
                        for j in 1..k {
                            let h2 = x * h1 - j as $t * h0;
                            h0 = h1;
                            h1 = h2;
                        }
                        let sign: $t = if k % 2 == 0 { 1.0 } else { -1.0 };
                        sign * h1 * pdf(x)
                    }
                }
            }
        }
    };
}

kernels!(k64, f64, candle_core::cpu::erf::erfc_f64);
kernels!(k32, f32, candle_core::cpu::erf::erfc_f32);

fn contiguous_slice<'a, T>(v: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("icnn activation op needs a contiguous input".into()))?;
    Ok(&v[start..end])
}

fn unsupported() -> candle_core::Error {
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
            CpuStorage::F64(v) => CpuStorage::F64(
                contiguous_slice(v, layout)?
                    .iter()
                    .map(|&x| k64::derivative(s, o, p, x))
                    .collect(),
            ),
            CpuStorage::F32(v) => CpuStorage::F32(
                contiguous_slice(v, layout)?
                    .iter()
                    .map(|&x| k32::derivative(s, o, p, x))
                    .collect(),
            ),
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
                for i in 0..n {
                    let (v0, v1, v2) = $k::triple(s, src[i]);
                    a[i] = v0;
                    b[i] = v1;
                    c[i] = v2;
                }
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
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        for k in 0..3 {
            let d = arg.apply_op1(ActDerivative::new(self.spec, k + 1))?;
            let t = grad_res.get(k)?.mul(&d)?;
            total = Some(match total {
                Some(s) => (s + t)?,
                None => t,
            });
        }
        Ok(total)
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

    #[test]
    fn softplus_polynomials() {
        // σ'' = σ − 3σ² + 2σ³ as the third derivative of softplus.
        assert_eq!(softplus_poly(3), vec![0.0, 1.0, -3.0, 2.0]);
    }
}
