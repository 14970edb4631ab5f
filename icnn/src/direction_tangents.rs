//! [`DirectionTangents`]: the forward tangents of a batch of directions through the network
//! of a [`crate::HostLinearization`], kept so that the surrogate's bilinear form need not
//! recompute them.
//!
//! The tangents `ȧ_j(t) = J_j t` of the pre-activations are linear in the direction `t`.
//! Conjugate gradient builds its solution as `u = u₀ + Σ_k α_k p_k` from directions whose
//! Hessian-vector products already computed `ȧ(p_k)`, so `ȧ(u) = ȧ(u₀) + Σ_k α_k ȧ(p_k)`
//! costs a few vector updates instead of a pass of the network
//! ([`crate::HostLinearization::hvp_and_tangents`],
//! [`DirectionTangents::add_scaled_rows`],
//! [`crate::HostLinearization::gradient_and_bilinear_given_tangents`]).

use crate::active_rows::{Rows, scaled};
use crate::error::{IcnnError, Result};
use crate::host_par;
use crate::surrogate_host::{HostNet, Primal, Real, Tangents};

/// Forward tangents `ȧ_j` of one direction per row (`B` rows), per group of the network that
/// computed them (channel-last for convolutional networks), in f32 or f64 like the network.
///
/// Only meaningful with the [`crate::HostLinearization`] that made them: combining them with
/// another linearisation's tangents, or passing them to another linearisation, is an error
/// when the shapes differ and silently wrong otherwise.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use icnn::{ConvexPotential, Icnn2, Icnn2Config};
/// use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
/// let cfg = Icnn2Config { dim: 3, width: 8, depth: 2, ..Default::default() };
/// let net = Icnn2::new(vb, &cfg, &mut rand::rngs::StdRng::seed_from_u64(0))?;
/// let rand = |s| Tensor::randn(0.0, 1.0, s, &Device::Cpu)?.to_dtype(DType::F64);
/// let (x, v, p) = (rand((4, 3))?, rand((4, 3))?, rand((4, 3))?);
/// let lin = net.host_linearize(&x)?.expect("dense ICNN on the CPU");
/// // u = v + α ⊙ p (one α per row), its tangents from those of v and p.
/// let alpha = [0.5, -1.0, 2.0, 0.25];
/// let (_, tv) = lin.hvp_and_tangents(&v)?;
/// let (_, tp) = lin.hvp_and_tangents(&p)?;
/// let mut tu = tv.clone();
/// tu.add_scaled_rows(&alpha, &tp)?;
/// let a = Tensor::from_slice(&alpha, (4, 1), &Device::Cpu)?;
/// let u = (&v + p.broadcast_mul(&a)?)?;
/// let (_, q) = lin.gradient_and_bilinear_given_tangents(&u, &v, &tu, &tv)?;
/// let (_, q_direct) = lin.gradient_and_bilinear(&u, &v)?;
/// let err = (q - q_direct)?.abs()?.max(0)?.to_scalar::<f64>()?;
/// assert!(err < 1e-12);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DirectionTangents {
    pub(crate) rows: TangentRows,
    pub(crate) batch: usize,
}

/// Per-group tangent buffers of either precision.
#[derive(Debug, Clone)]
pub(crate) enum TangentRows {
    F32(Vec<Vec<f32>>),
    F64(Vec<Vec<f64>>),
}

/// Tangents die once per CG iteration: their arrays go back to the array pool.
impl Drop for TangentRows {
    fn drop(&mut self) {
        match self {
            Self::F32(g) => g.drain(..).for_each(crate::scratch::recycle),
            Self::F64(g) => g.drain(..).for_each(crate::scratch::recycle),
        }
    }
}

/// The element types [`TangentRows`] holds.
pub(crate) trait TangentReal: Real {
    fn wrap(groups: Vec<Vec<Self>>) -> TangentRows;
    fn view(rows: &TangentRows) -> Option<&[Vec<Self>]>;
}

impl TangentReal for f32 {
    fn wrap(groups: Vec<Vec<f32>>) -> TangentRows {
        TangentRows::F32(groups)
    }
    fn view(rows: &TangentRows) -> Option<&[Vec<f32>]> {
        match rows {
            TangentRows::F32(g) => Some(g),
            TangentRows::F64(_) => None,
        }
    }
}

impl TangentReal for f64 {
    fn wrap(groups: Vec<Vec<f64>>) -> TangentRows {
        TangentRows::F64(groups)
    }
    fn view(rows: &TangentRows) -> Option<&[Vec<f64>]> {
        match rows {
            TangentRows::F64(g) => Some(g),
            TangentRows::F32(_) => None,
        }
    }
}

fn mismatch(what: &str) -> IcnnError {
    IcnnError::Shape(format!("direction tangents: {what}"))
}

impl DirectionTangents {
    pub(crate) fn new<T: TangentReal>(adot: Vec<Vec<T>>, batch: usize) -> Self {
        Self {
            rows: T::wrap(adot),
            batch,
        }
    }

    /// The number of directions (rows) `B`.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// `self_b ← self_b + α_b · other_b` for every row `b` (the tangents of
    /// `t_b + α_b s_b`, by linearity).
    ///
    /// # Errors
    /// When `alpha` does not have one entry per row, or `other` has another precision or
    /// other shapes (it came from another network or batch).
    pub fn add_scaled_rows(&mut self, alpha: &[f64], other: &DirectionTangents) -> Result<()> {
        if alpha.len() != self.batch || other.batch != self.batch {
            return Err(mismatch(&format!(
                "{} rows, {} step sizes, {} rows to add",
                self.batch,
                alpha.len(),
                other.batch
            )));
        }
        match (&mut self.rows, &other.rows) {
            (TangentRows::F32(a), TangentRows::F32(t)) => add_scaled(a, alpha, t),
            (TangentRows::F64(a), TangentRows::F64(t)) => add_scaled(a, alpha, t),
            _ => Err(mismatch("mixed precisions")),
        }
    }
}

/// `acc_j ← acc_j + α_b t_j` row by row, for every group `j`.
fn add_scaled<T: Real>(acc: &mut [Vec<T>], alpha: &[f64], t: &[Vec<T>]) -> Result<()> {
    if acc.len() != t.len() || acc.iter().zip(t).any(|(a, t)| a.len() != t.len()) {
        return Err(mismatch("group shapes differ"));
    }
    for (a, t) in acc.iter_mut().zip(t) {
        if a.is_empty() {
            continue;
        }
        let m = a.len() / alpha.len();
        host_par::rows1(m, a, |r0, a| {
            let rows = a.chunks_mut(m).zip(t[r0 * m..].chunks(m));
            for ((ar, tr), &s) in rows.zip(&alpha[r0..]) {
                if s == 0.0 {
                    continue;
                }
                let s = T::from_f64(s);
                for (x, &y) in ar.iter_mut().zip(tr) {
                    *x += s * y;
                }
            }
        });
    }
    Ok(())
}

/// The stacked `[u; v]` tangents (`2B` rows) the bilinear form and its adjoint read, from the
/// tangents of `u` and `v` (`ż = s' ⊙ ȧ` for nonlinear groups, `ȧ` for the identity).
pub(crate) fn stacked_pair<T: TangentReal>(
    net: &HostNet<T>,
    p: &Primal<T>,
    u: &DirectionTangents,
    v: &DirectionTangents,
) -> Result<Tangents<T>> {
    let (Some(tu), Some(tv)) = (T::view(&u.rows), T::view(&v.rows)) else {
        return Err(mismatch("precision differs from the linearisation's"));
    };
    let n = net.groups.len();
    let expected = |j: usize, t: &[T]| t.is_empty() || t.len() == p.b * net.groups[j].width;
    if u.batch != p.b
        || v.batch != p.b
        || tu.len() != n
        || tv.len() != n
        || (0..n)
            .any(|j| !expected(j, &tu[j]) || !expected(j, &tv[j]) || tu[j].len() != tv[j].len())
    {
        return Err(mismatch("not made by this linearisation"));
    }
    let mut out = Tangents {
        adot: Vec::with_capacity(n),
        zdot: Vec::with_capacity(n),
    };
    for (j, g) in net.groups.iter().enumerate() {
        let half = tu[j].len();
        let a = host_par::filled(2 * half, |st, out| {
            for (i, o) in out.iter_mut().enumerate() {
                let k = st + i;
                *o = if k < half { tu[j][k] } else { tv[j][k - half] };
            }
        });
        let z = match g.act {
            Some(_) if !a.is_empty() => scaled(&a, &p.s1[j], Rows::All, p.b, g.width),
            _ => a.clone(),
        };
        out.adot.push(a);
        out.zdot.push(z);
    }
    Ok(out)
}
