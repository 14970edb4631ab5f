//! CG's rescaling of a system one of whose reductions overflowed although its factors are
//! finite: the starting `rᵀM⁻¹r` (Jacobi on a diagonal of 1e-21 with `‖b‖ ≈ 1e9`) or the
//! `pᵀHp` of an iteration (`H` of 1e14 with `‖b‖ ≈ 1e9`). f32 tensors reduce in f32, whose range ends
//! at ≈ 3e38, so they meet this where backends that reduce in f64 do not. The system is
//! scaled down by a power of two (exact: CG is linear in `b`), sized from a bound on the
//! reduction that overflowed ([`overflow_scale`]); every function here is called only once
//! a reduction has come out non-finite, so ordinary solves make no extra reduction.

use crate::vectors::overflow_scale;
use crate::{BatchVectors, KrylovError};

/// Where each system's solve stands: its tolerance, the scale it is solved at, `‖b_i‖∞`
/// before that scaling, and the backend's unit roundoff.
pub(crate) struct SolveScales<'a> {
    tol: &'a [f64],
    scales: &'a [f64],
    b_norms: &'a [f64],
    unit_roundoff: f64,
}

impl<'a> SolveScales<'a> {
    pub fn new(tol: &'a [f64], scales: &'a [f64], b_norms: &'a [f64], unit_roundoff: f64) -> Self {
        Self {
            tol,
            scales,
            b_norms,
            unit_roundoff,
        }
    }

    /// [`overflow_scale`] for system `i` with `log₂` of the bound `log2_high` and of its
    /// `rᵀM⁻¹r` `log2_rz`, and residual norm `rnorm`.
    fn overflow_scale(&self, i: usize, log2_high: f64, log2_rz: f64, rnorm: f64) -> f64 {
        overflow_scale(
            (log2_high, log2_rz),
            rnorm,
            // The tolerance and ‖s_i·b_i‖∞, exactly (`s_i` is a power of two).
            (self.tol[i], self.scales[i] * self.b_norms[i]),
            self.scales[i],
            self.unit_roundoff,
        )
    }
}

/// `log₂(d·‖u‖∞·‖v‖∞)`, a bound on `|uᵀv|` for vectors of length `d` (finite whenever the
/// norms are, also where the product would overflow f64).
fn log2_dot_bound(d: usize, u_norm: f64, v_norm: f64) -> f64 {
    (d as f64).log2() + u_norm.log2() + v_norm.log2()
}

/// The powers of two by which to multiply the systems whose starting `rᵀz = rᵀM⁻¹r`
/// overflowed (Inf, or NaN from a supplied `M⁻¹` whose terms have both signs) while `r`
/// is finite: `None` (and no reduction) when there is none, otherwise one more reduction
/// (`‖z‖∞`) and `1` for the systems left alone (also those whose `z` is not finite: they
/// break down as before).
pub(crate) fn starting_rz_overflow_scales<V: BatchVectors>(
    rz: &[f64],
    rnorm: &[f64],
    z: &V,
    at: &SolveScales<'_>,
) -> Result<Option<Vec<f64>>, KrylovError> {
    let overflowed = |i: usize| !rz[i].is_finite() && rnorm[i].is_finite();
    if !(0..rz.len()).any(overflowed) {
        return Ok(None);
    }
    let z_norms = z.norms_inf()?;
    let d = z.system_dim();
    let extra = (0..rz.len())
        .map(|i| {
            if !overflowed(i) {
                return 1.0;
            }
            let bound = log2_dot_bound(d, rnorm[i], z_norms[i]);
            at.overflow_scale(i, bound, bound, rnorm[i])
        })
        .collect();
    Ok(Some(extra))
}

/// The powers of two by which to multiply the systems in `unconverged` whose `pᵀHp`
/// overflowed (±Inf, or NaN from terms of both signs) while `p` and `Hp` are finite: the
/// range from the bound `d·‖p‖∞·‖Hp‖∞` down to the `rᵀM⁻¹r` the solve ends at (from `rz` at
/// the residual norm `rnorm`) is centred on 1. Any iteration can meet this, not only the
/// first: `pᵀHp/pᵀp` grows towards `H`'s largest eigenvalue as CG proceeds. `None` (and no
/// reduction) when there is none, otherwise two more reductions (`‖p‖∞`, `‖Hp‖∞`) and `1`
/// for the systems left alone (also those whose `p` or `Hp` is not finite: they break down
/// as before).
pub(crate) fn curvature_overflow_scales<V: BatchVectors>(
    php: &[f64],
    unconverged: &[bool],
    (p, hp): (&V, &V),
    (rz, rnorm): (&[f64], &[f64]),
    at: &SolveScales<'_>,
) -> Result<Option<Vec<f64>>, KrylovError> {
    let overflowed = |i: usize| unconverged[i] && !php[i].is_finite();
    if !(0..php.len()).any(overflowed) {
        return Ok(None);
    }
    let (p_norms, hp_norms) = (p.norms_inf()?, hp.norms_inf()?);
    let d = p.system_dim();
    let extra = (0..php.len())
        .map(|i| {
            if !overflowed(i) {
                return 1.0;
            }
            let bound = log2_dot_bound(d, p_norms[i], hp_norms[i]);
            at.overflow_scale(i, bound, rz[i].log2(), rnorm[i])
        })
        .collect();
    Ok(Some(extra))
}

/// Multiplies system `i` of each of `vectors` and its `scales`, `tol` and `rnorm` by
/// `extra[i]` (a power of two: exact). Returns whether any system was rescaled: when every
/// `extra[i]` is 1 nothing is touched (no vector operation).
pub(crate) fn rescale_systems<V: BatchVectors>(
    extra: &[f64],
    vectors: &mut [&mut V],
    scales: &mut [f64],
    tol: &mut [f64],
    rnorm: &mut [f64],
) -> Result<bool, KrylovError> {
    if extra.iter().all(|e| *e == 1.0) {
        return Ok(false);
    }
    for v in vectors.iter_mut() {
        v.scale_per_system(extra)?;
    }
    for (i, e) in extra.iter().enumerate() {
        scales[i] *= e;
        tol[i] *= e;
        rnorm[i] *= e;
    }
    Ok(true)
}
