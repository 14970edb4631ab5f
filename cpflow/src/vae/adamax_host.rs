//! One [`super::Adamax`] update of a CPU f32/f64 variable as two parallel passes instead of
//! ten candle ops.
//!
//! Composed from candle's ops, an update allocates and writes a tensor per operation
//! (`m·β₁`, `g·(1−β₁)`, their sum, `|g|`, `+ε`, `u·β₂`, the maximum, `m/u`, `·lr`, `θ −`),
//! each a serial pass on the driver thread (candle's element-wise ops run on one thread): for
//! the VAE's 2.8 M parameters about 1.4% of a step's CPU samples, with the other core idle.
//! Here the first pass writes the new moments `(m, u)` from `(g, m, u)` and the second
//! updates `θ` in place from them, both split over rayon's threads. Each value is computed by
//! the same operations in the same order as the composed form (candle's scalar multiply is
//! `x·a + 0`), so the two agree to the bit (`adamax.rs` tests).

use candle_core::{CpuStorage, InplaceOp3, Layout, Storage, Tensor, WithDType};
use rayon::prelude::*;

use super::AdamaxParams;
use crate::error::Result;

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

/// f32/f64 with `abs`.
trait AdamaxFloat: WithDType {
    fn abs(self) -> Self;
}

impl AdamaxFloat for f32 {
    fn abs(self) -> Self {
        f32::abs(self)
    }
}

impl AdamaxFloat for f64 {
    fn abs(self) -> Self {
        f64::abs(self)
    }
}

/// `f` on a contiguous CPU tensor's values of type `T`; `None` for any other tensor.
fn with_host<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Option<R> {
    let (s, l) = t.storage_and_layout();
    let Storage::Cpu(c) = &*s else {
        return None;
    };
    let v = T::cpu_storage_as_slice(c).ok()?;
    let (a, b) = l.contiguous_offsets()?;
    Some(f(v.get(a..b)?))
}

/// The new moments from the gradient `g` and the old moments (absent on a variable's first
/// step): `m' = m·β₁ + g·(1−β₁)`, `u' = max(u·β₂, |g| + ε)`.
fn moments<T: AdamaxFloat>(
    g: &[T],
    m: Option<&[T]>,
    u: Option<&[T]>,
    p: &AdamaxParams,
) -> (Vec<T>, Vec<T>) {
    let (b1, c1) = (T::from_f64(p.beta1), T::from_f64(1.0 - p.beta1));
    let (b2, eps) = (T::from_f64(p.beta2), T::from_f64(p.eps));
    let (zero, one) = (T::zero(), T::one());
    let (mut m2, mut u2) = (Vec::new(), Vec::new());
    (0..g.len())
        .into_par_iter()
        .with_min_len(CHUNK)
        .map(|i| {
            let new = g[i] * c1 + zero;
            let m = match m {
                Some(m) => (m[i] * b1 + zero) + new,
                None => new,
            };
            let a = g[i].abs() * one + eps;
            let u = match u {
                Some(u) => {
                    let decayed = u[i] * b2 + zero;
                    if decayed < a { a } else { decayed }
                }
                None => a,
            };
            (m, u)
        })
        .unzip_into_vecs(&mut m2, &mut u2);
    (m2, u2)
}

/// The new moments `(m', u')` of a variable's update as tensors shaped like `g`, when `g` and
/// the old moments are contiguous CPU tensors of one float type (f32 or f64); `None`
/// otherwise (the caller composes candle's ops).
pub(super) fn host_moments(
    g: &Tensor,
    m: Option<&Tensor>,
    u: Option<&Tensor>,
    p: &AdamaxParams,
) -> Result<Option<(Tensor, Tensor)>> {
    fn typed<T: AdamaxFloat>(
        g: &Tensor,
        m: Option<&Tensor>,
        u: Option<&Tensor>,
        p: &AdamaxParams,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let same = |t: Option<&Tensor>| t.is_none_or(|t| t.dims() == g.dims());
        if !(same(m) && same(u)) {
            return Ok(None);
        }
        let host = with_host::<T, _>(g, |g| match (m, u) {
            (Some(m), Some(u)) => with_host::<T, _>(m, |m| {
                with_host::<T, _>(u, |u| moments(g, Some(m), Some(u), p))
            })
            .flatten(),
            (None, None) => Some(moments(g, None, None, p)),
            _ => None,
        })
        .flatten();
        let Some((m, u)) = host else {
            return Ok(None);
        };
        let (shape, dev) = (g.shape(), g.device());
        Ok(Some((
            Tensor::from_vec(m, shape, dev)?,
            Tensor::from_vec(u, shape, dev)?,
        )))
    }
    match g.dtype() {
        candle_core::DType::F32 => typed::<f32>(g, m, u, p),
        candle_core::DType::F64 => typed::<f64>(g, m, u, p),
        _ => Ok(None),
    }
}

/// `θ ← θ − (m / u)·clr` in place on a contiguous CPU variable, with `(m, u)` from
/// [`host_moments`].
pub(super) fn apply_in_place(theta: &Tensor, m: &Tensor, u: &Tensor, clr: f64) -> Result<()> {
    Ok(theta.inplace_op3(m, u, &ApplyUpdate { clr })?)
}

/// The in-place `θ` update of [`apply_in_place`].
struct ApplyUpdate {
    clr: f64,
}

fn apply<T: WithDType>(theta: &mut [T], m: &[T], u: &[T], clr: f64) {
    let (clr, zero) = (T::from_f64(clr), T::zero());
    theta
        .par_chunks_mut(CHUNK)
        .zip(m.par_chunks(CHUNK))
        .zip(u.par_chunks(CHUNK))
        .for_each(|((t, m), u)| {
            for ((t, &m), &u) in t.iter_mut().zip(m).zip(u) {
                *t -= (m / u) * clr + zero;
            }
        });
}

impl InplaceOp3 for ApplyUpdate {
    fn name(&self) -> &'static str {
        "adamax-update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        u: &CpuStorage,
        ul: &Layout,
    ) -> candle_core::Result<()> {
        let name = self.name();
        let range = |l: &Layout| {
            l.contiguous_offsets()
                .filter(|_| l.shape() == dst_l.shape())
                .ok_or_else(|| candle_core::Error::Msg(format!("{name}: layouts differ")))
        };
        let ((d0, d1), (m0, m1), (u0, u1)) = (range(dst_l)?, range(ml)?, range(ul)?);
        match (dst, m, u) {
            (CpuStorage::F32(t), CpuStorage::F32(m), CpuStorage::F32(u)) => {
                apply(&mut t[d0..d1], &m[m0..m1], &u[u0..u1], self.clr)
            }
            (CpuStorage::F64(t), CpuStorage::F64(m), CpuStorage::F64(u)) => {
                apply(&mut t[d0..d1], &m[m0..m1], &u[u0..u1], self.clr)
            }
            _ => candle_core::bail!("{name}: expected f32 or f64 tensors of one type"),
        }
        Ok(())
    }
}
