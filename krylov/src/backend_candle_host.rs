//! Lanczos reorthogonalization of CPU candle tensors on their host memory (feature `candle`).
//!
//! [`crate::BatchVectors::orthogonalize_against`] as whole-batch tensor operations stacks the
//! basis into a `(B, k, d)` tensor, runs `B` tiny `(k × d)(d × 1)` products and transposes:
//! strided copies and per-system GEMM calls that were about 45% of a tabular flow's SLQ
//! evaluation (d = 63, ten Lanczos steps). On the CPU the same classical Gram–Schmidt pass is
//! a few loops over the tensors' own slices, with no copy of the basis.

use candle_core::{DType, Layout, Storage, Tensor, WithDType};

use crate::KrylovError;

/// The element types of the host pass.
trait HostFloat: WithDType + Copy {
    fn widen(self) -> f64;
    fn narrow(v: f64) -> Self;
}

impl HostFloat for f32 {
    #[inline(always)]
    fn widen(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn narrow(v: f64) -> Self {
        v as f32
    }
}

impl HostFloat for f64 {
    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }
    #[inline(always)]
    fn narrow(v: f64) -> Self {
        v
    }
}

/// `w − Σ_j (q_jᵀ w) q_j` per active system (row) of `w`, the coefficients from the `w` given
/// (classical Gram–Schmidt, like the tensor path), inactive rows unchanged: `None` unless
/// `w` and every basis vector are contiguous f32 or f64 CPU tensors of one dtype that record
/// no gradient graph (the caller then runs the tensor path).
pub(crate) fn orthogonalized_on_host(
    w: &Tensor,
    basis: &[Tensor],
    active: &[bool],
) -> Result<Option<Tensor>, KrylovError> {
    let usable = |t: &Tensor| {
        t.device().is_cpu()
            && host_kernels_enabled()
            && t.dtype() == w.dtype()
            && t.is_contiguous()
            && !t.track_op()
            && t.rank() == 2
            && t.dims() == w.dims()
    };
    if !usable(w) || !basis.iter().all(usable) {
        return Ok(None);
    }
    match w.dtype() {
        DType::F32 => run::<f32>(w, basis, active),
        DType::F64 => run::<f64>(w, basis, active),
        _ => Ok(None),
    }
}

/// The slice of a contiguous CPU tensor's values, `None` for another storage.
fn values<'a, T: HostFloat>(
    storage: &'a Storage,
    layout: &Layout,
) -> Result<Option<&'a [T]>, KrylovError> {
    let (Storage::Cpu(cpu), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
        return Ok(None);
    };
    Ok(cpu.as_slice::<T>()?.get(start..end))
}

fn run<T: HostFloat>(
    w: &Tensor,
    basis: &[Tensor],
    active: &[bool],
) -> Result<Option<Tensor>, KrylovError> {
    let (b, d) = w.dims2()?;
    let guards: Vec<_> = std::iter::once(w)
        .chain(basis)
        .map(|t| t.storage_and_layout())
        .collect();
    let mut slices: Vec<&[T]> = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        match values::<T>(storage, layout)? {
            Some(s) if s.len() == b * d => slices.push(s),
            _ => return Ok(None),
        }
    }
    let (wv, qs) = (slices[0], &slices[1..]);
    let mut out = wv.to_vec();
    orthogonalize_rows(&mut out, qs, active, d);
    drop(slices);
    drop(guards);
    Ok(Some(Tensor::from_vec(out, (b, d), w.device())?))
}

/// The rows of `out` (`d` values each) with `active[r]`, orthogonalized against the rows `r`
/// of `qs`. Runs as a copy compiled for AVX2 + FMA where the CPU has both: the workspace
/// builds for the x86-64 baseline, whose 2-lane f64 vectors made this pass about 12% of a
/// tabular flow's SLQ evaluation (d = 63, ten Lanczos steps, `perf`).
fn orthogonalize_rows<T: HostFloat>(out: &mut [T], qs: &[&[T]], active: &[bool], d: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn wide<T: HostFloat>(out: &mut [T], qs: &[&[T]], active: &[bool], d: usize) {
            rows_kernel(out, qs, active, d);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above), `wide`'s target features.
            return unsafe { wide(out, qs, active, d) };
        }
    }
    rows_kernel(out, qs, active, d);
}

#[inline(always)]
fn rows_kernel<T: HostFloat>(out: &mut [T], qs: &[&[T]], active: &[bool], d: usize) {
    let (mut coef, mut proj) = (vec![0.0f64; qs.len()], vec![0.0f64; d]);
    for (r, row) in out.chunks_exact_mut(d.max(1)).enumerate() {
        if !active.get(r).copied().unwrap_or(false) {
            continue;
        }
        let k = r * d..(r + 1) * d;
        for (c, q) in coef.iter_mut().zip(qs) {
            *c = dot(&q[k.clone()], row);
        }
        proj.fill(0.0);
        for (&c, q) in coef.iter().zip(qs) {
            for (p, &x) in proj.iter_mut().zip(&q[k.clone()]) {
                *p += c * x.widen();
            }
        }
        for (o, &p) in row.iter_mut().zip(&proj) {
            *o = T::narrow(o.widen() - p);
        }
    }
}

/// `aᵀb` in f64, over [`LANES`] partial sums (one sequential sum does not vectorize).
#[inline(always)]
fn dot<T: HostFloat>(a: &[T], b: &[T]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| x.widen() * y.widen())
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l].widen() * y[l].widen();
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Partial sums of [`dot`].
const LANES: usize = 8;

/// Whether the host loops are on: unless the environment variable `CPFLOW_HOST_KERNELS` is
/// `off` when the process starts (read once), as icnn's `host_kernels_enabled`: with it off,
/// CPU tensors take the tensor path a GPU takes, so that path can be checked without a GPU.
fn host_kernels_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("CPFLOW_HOST_KERNELS").as_deref() != Ok("off"))
}
