//! Host kernels of the detached tangent recursions (Hessian-vector products inside CG, SLQ
//! and Newton–CG): sums of products and their scalings in one pass. No autograd: inputs are
//! read in place, one output is allocated per call, and the sums and products that candle
//! would run as separate ops (each allocating its own output) happen together. Only CPU f32/f64
//! contiguous tensors take this path ([`host_fusable`]); the caller falls back to the composed
//! tensor ops otherwise.

use candle_core::{DType, Tensor};

use crate::fused::{contiguous_slice, unsupported};

/// The tangent tensors of one kernel call: CPU, f32 or f64, all of one dtype and shape,
/// contiguous. `false` sends the caller to the composed tensor ops.
pub(crate) fn host_fusable(ts: &[&Tensor]) -> bool {
    let Some(first) = ts.first() else {
        return false;
    };
    let dt = first.dtype();
    matches!(dt, DType::F32 | DType::F64)
        && ts.iter().all(|t| {
            crate::takes_host_kernels(t.device())
                && t.dtype() == dt
                && t.is_contiguous()
                && t.dims() == first.dims()
        })
}

/// Element type of the host kernels.
trait HostFloat:
    candle_core::WithDType
    + std::ops::Add<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
{
}
impl HostFloat for f32 {}
impl HostFloat for f64 {}

/// Runs `f` on the contiguous host slices of `ts` (checked by [`host_fusable`]) and wraps
/// its output in a tensor of their shape.
fn on_host<T: HostFloat>(
    ts: &[&Tensor],
    f: impl FnOnce(&[&[T]], &mut [T]),
) -> candle_core::Result<Tensor> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices: Vec<&[T]> = Vec::with_capacity(ts.len());
    for (storage, layout) in &guards {
        let candle_core::Storage::Cpu(cpu) = &**storage else {
            return Err(candle_core::Error::Msg(
                "icnn host kernel: not a CPU tensor".into(),
            ));
        };
        slices.push(contiguous_slice(cpu.as_slice::<T>()?, layout)?);
    }
    let n = slices.first().map_or(0, |s| s.len());
    let mut out: Vec<T> = vec![T::from_f64(0.0); n];
    f(&slices, &mut out);
    drop(slices);
    drop(guards);
    Tensor::from_vec(out, ts[0].shape().clone(), ts[0].device())
}

fn dispatch(
    ts: &[&Tensor],
    f32k: impl FnOnce(&[&[f32]], &mut [f32]),
    f64k: impl FnOnce(&[&[f64]], &mut [f64]),
) -> candle_core::Result<Tensor> {
    match ts.first().map(|t| t.dtype()) {
        Some(DType::F32) => on_host::<f32>(ts, f32k),
        Some(DType::F64) => on_host::<f64>(ts, f64k),
        _ => Err(unsupported()),
    }
}

/// `out = p_0 + p_1 (+ …)`: sum of the `parts` slices into `out`.
#[inline(always)]
fn sum_into<T: HostFloat>(parts: &[&[T]], out: &mut [T]) {
    match parts {
        [a] => out.copy_from_slice(a),
        [a, b, rest @ ..] => {
            for ((o, &x), &y) in out.iter_mut().zip(a.iter()).zip(b.iter()) {
                *o = x + y;
            }
            for p in rest {
                for (o, &x) in out.iter_mut().zip(p.iter()) {
                    *o += x;
                }
            }
        }
        [] => {}
    }
}

/// `Σ parts` (at least one part).
pub(crate) fn host_sum(parts: &[&Tensor]) -> candle_core::Result<Tensor> {
    dispatch(parts, sum_into, sum_into)
}

/// `(Σ parts) ⊙ s`: the forward tangent `ż_j = s'(a_j) ⊙ ȧ_j` from the products that make
/// up `ȧ_j`.
pub(crate) fn host_sum_times(parts: &[&Tensor], s: &Tensor) -> candle_core::Result<Tensor> {
    fn k<T: HostFloat>(sl: &[&[T]], out: &mut [T]) {
        let (s, parts) = sl.split_first().expect("scale slice");
        match parts {
            [a] => {
                for ((o, &x), &w) in out.iter_mut().zip(a.iter()).zip(s.iter()) {
                    *o = x * w;
                }
            }
            [a, b] => {
                for (((o, &x), &y), &w) in out.iter_mut().zip(a.iter()).zip(b.iter()).zip(s.iter())
                {
                    *o = (x + y) * w;
                }
            }
            _ => {
                sum_into(parts, out);
                for (o, &w) in out.iter_mut().zip(s.iter()) {
                    *o *= w;
                }
            }
        }
    }
    let mut ts = vec![s];
    ts.extend_from_slice(parts);
    dispatch(&ts, k, k)
}

/// `(Σ parts) ⊙ c + g ⊙ s`: the reverse tangent `δ̇_j = ȧ_j ⊙ (g_j s''(a_j)) + ġ_j ⊙ s'(a_j)`.
pub(crate) fn host_sum_times_plus(
    parts: &[&Tensor],
    c: &Tensor,
    g: &Tensor,
    s: &Tensor,
) -> candle_core::Result<Tensor> {
    fn k<T: HostFloat>(sl: &[&[T]], out: &mut [T]) {
        let (c, g, s, parts) = (sl[0], sl[1], sl[2], &sl[3..]);
        match parts {
            [a] => {
                for ((((o, &x), &cw), &gv), &sw) in out
                    .iter_mut()
                    .zip(a.iter())
                    .zip(c.iter())
                    .zip(g.iter())
                    .zip(s.iter())
                {
                    *o = x * cw + gv * sw;
                }
            }
            _ => {
                sum_into(parts, out);
                for (((o, &cw), &gv), &sw) in
                    out.iter_mut().zip(c.iter()).zip(g.iter()).zip(s.iter())
                {
                    *o = *o * cw + gv * sw;
                }
            }
        }
    }
    let mut ts = vec![c, g, s];
    ts.extend_from_slice(parts);
    dispatch(&ts, k, k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The host kernels equal the composed tensor ops (f64 and f32, one to three parts).
    #[test]
    fn host_kernels_match_tensor_ops() {
        let dev = Device::Cpu;
        for dt in [DType::F64, DType::F32] {
            let t = |seed: usize| {
                let v: Vec<f64> = (0..24)
                    .map(|i| ((i * 7 + seed * 13) % 11) as f64 * 0.3 - 1.4)
                    .collect();
                Tensor::from_vec(v, (4, 6), &dev)
                    .unwrap()
                    .to_dtype(dt)
                    .unwrap()
            };
            let (a, b, e, c, g, s) = (t(1), t(2), t(3), t(4), t(5), t(6));
            for parts in [vec![&a], vec![&a, &b], vec![&a, &b, &e]] {
                assert!(host_fusable(&parts));
                let mut sum = parts[0].clone();
                for p in &parts[1..] {
                    sum = (sum + *p).unwrap();
                }
                let want = [
                    sum.clone(),
                    (&sum * &s).unwrap(),
                    ((&sum * &c).unwrap() + (&g * &s).unwrap()).unwrap(),
                ];
                let got = [
                    host_sum(&parts).unwrap(),
                    host_sum_times(&parts, &s).unwrap(),
                    host_sum_times_plus(&parts, &c, &g, &s).unwrap(),
                ];
                for (w, h) in want.iter().zip(&got) {
                    let diff = (w - h)
                        .unwrap()
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_dtype(DType::F64)
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap();
                    // Same operations in the same order: at most a rounding of the fused
                    // multiply-add contraction (f32 ulp of values below 10).
                    assert!(diff <= 1e-5, "{dt:?} {} parts: {diff}", parts.len());
                }
            }
            // Non-contiguous views are refused (the caller falls back).
            assert!(!host_fusable(&[&a.t().unwrap()]));
        }
    }
}
