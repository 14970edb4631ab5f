//! The vector-space trait for a batch of `B` independent vectors of length `d`.

use crate::KrylovError;

/// A batch of `B` vectors of length `d`, one per independent system.
///
/// All per-system scalars (dot products, norms, step sizes) cross the trait boundary as `f64`
/// on the host, one value per system; the vectors themselves stay in the backend (host matrix
/// or device tensor), so a solver iteration moves `O(B)` numbers, never `O(B·d)`.
///
/// Layout of the implementations in this crate:
/// * `nalgebra::DMatrix<T>` and `faer::Mat<T>` (`T` = `f32` or `f64`): a `d × B` matrix, **one
///   system per column** (column-major storage keeps each system contiguous);
/// * `candle_core::Tensor` (feature `candle`): shape `(B, d)`, **one system per row**, any
///   float dtype, any device.
///
/// Host data exchanged through [`BatchVectors::from_host_like`] and [`BatchVectors::to_host`]
/// is always *system-major*: the `d` entries of system 0, then those of system 1, and so on.
///
/// ```
/// use krylov::BatchVectors;
/// use nalgebra::DMatrix;
/// // Two systems of dimension 3: columns (1, 2, 2) and (0, -4, 3).
/// let x = DMatrix::<f64>::from_column_slice(3, 2, &[1.0, 2.0, 2.0, 0.0, -4.0, 3.0]);
/// assert_eq!((x.n_systems(), x.system_dim()), (2, 3));
/// assert_eq!(x.norms2()?, vec![3.0, 5.0]);
/// assert_eq!(x.norms_inf()?, vec![2.0, 4.0]);
/// assert_eq!(x.dots(&x)?, vec![9.0, 25.0]);
/// // Host data is system-major, and round-trips.
/// let host = x.to_host()?;
/// assert_eq!(host, vec![1.0, 2.0, 2.0, 0.0, -4.0, 3.0]);
/// assert_eq!(DMatrix::from_host_like(&x, &host)?, x);
/// // Per-system update on the active systems only.
/// let mut y = x.clone();
/// y.axpby_masked(&[2.0, 2.0], &[1.0, 1.0], &x, &[true, false])?;
/// assert_eq!(y.to_host()?, vec![3.0, 6.0, 6.0, 0.0, -4.0, 3.0]);
/// # Ok::<(), krylov::KrylovError>(())
/// ```
pub trait BatchVectors: Clone {
    /// Checks the batch is well formed (for tensors: rank 2 and a float dtype). Solvers call it
    /// on their inputs.
    fn validate(&self) -> Result<(), KrylovError> {
        Ok(())
    }

    /// Number of systems `B`.
    fn n_systems(&self) -> usize;

    /// Length `d` of each vector (named `system_dim` to avoid clashing with `Tensor::dim`).
    fn system_dim(&self) -> usize;

    /// A batch of zeros with the shape, element type (and device) of `self`.
    fn zeros_like(&self) -> Result<Self, KrylovError>;

    /// Builds a batch with the shape, element type (and device) of `like` from system-major
    /// host data of length `B·d`.
    fn from_host_like(like: &Self, data: &[f64]) -> Result<Self, KrylovError>;

    /// Copies the batch to the host, system-major (`B·d` values).
    fn to_host(&self) -> Result<Vec<f64>, KrylovError>;

    /// Per-system dot products `⟨self_i, other_i⟩`.
    fn dots(&self, other: &Self) -> Result<Vec<f64>, KrylovError>;

    /// Per-system max-norms `‖self_i‖∞`. Must propagate NaN: a system holding a NaN has norm
    /// NaN (the solvers' convergence tests rely on it).
    fn norms_inf(&self) -> Result<Vec<f64>, KrylovError>;

    /// Per-system Euclidean norms `‖self_i‖₂` (NaN for a system holding a NaN).
    fn norms2(&self) -> Result<Vec<f64>, KrylovError> {
        Ok(self
            .dots(self)?
            .into_iter()
            // `f64::max` would turn a NaN into 0.
            .map(|v| if v.is_nan() { v } else { v.max(0.0).sqrt() })
            .collect())
    }

    /// Checks that `found` can be combined with `self` (the reference batch of a solve): the
    /// same `(B, d)` ([`KrylovError::ShapeMismatch`]) and, for tensors, the same rank and
    /// dtype. Solvers call it on initial guesses and on every operator output.
    fn check_compatible(&self, context: &'static str, found: &Self) -> Result<(), KrylovError> {
        check_same_shape(context, self, found)
    }

    /// `self_i ← a_i·self_i + b_i·x_i` for every system with `active[i]`; the other systems are
    /// left untouched, and their rows of `x` are never read into `self` (they may hold NaN).
    fn axpby_masked(
        &mut self,
        a: &[f64],
        b: &[f64],
        x: &Self,
        active: &[bool],
    ) -> Result<(), KrylovError>;

    /// `self_i ← self_i + alphas_i·x_i` for every system.
    fn axpy_per_system(&mut self, alphas: &[f64], x: &Self) -> Result<(), KrylovError> {
        let ones = vec![1.0; alphas.len()];
        let all = vec![true; alphas.len()];
        self.axpby_masked(&ones, alphas, x, &all)
    }

    /// `self_i ← alphas_i·self_i` for every system.
    fn scale_per_system(&mut self, alphas: &[f64]) -> Result<(), KrylovError>;

    /// Entry-wise product `self ⊙ other` (used by the Jacobi preconditioner).
    fn mul_elementwise(&self, other: &Self) -> Result<Self, KrylovError>;

    /// A copy that does not record operations for automatic differentiation. The identity for
    /// host backends; `Tensor::detach` for candle. Solvers call it on their inputs so that no
    /// autograd graph is built through the iterations.
    fn detached(&self) -> Self {
        self.clone()
    }

    /// Unit roundoff of the element type (`f32::EPSILON`, `f64::EPSILON`, …).
    fn unit_roundoff(&self) -> f64;

    /// The smallest positive normal number of the floating-point type in which
    /// [`BatchVectors::dots`] (and so [`BatchVectors::norms2`]) accumulate. A sum of squares
    /// below it is subnormal (it has lost precision) and, a little lower, underflows to 0:
    /// re-orthogonalised CG ([`crate::CgParams::reorthogonalize`]) stops a system whose
    /// squared residual norm falls below it. The default assumes the reductions run in the
    /// element type: `f64::MIN_POSITIVE` when [`BatchVectors::unit_roundoff`] is f64's, f32's
    /// otherwise. The nalgebra and faer backends accumulate in f64 whatever the element type
    /// (`f64::MIN_POSITIVE`); candle tensors reduce in f64 for f64 and in f32 otherwise.
    ///
    /// ```
    /// use krylov::BatchVectors;
    /// use nalgebra::DMatrix;
    /// // f32 storage, f64 accumulation.
    /// let x = DMatrix::<f32>::zeros(3, 2);
    /// assert_eq!(x.reduction_min_positive(), f64::MIN_POSITIVE);
    /// ```
    fn reduction_min_positive(&self) -> f64 {
        if has_f64_range(self.unit_roundoff()) {
            f64::MIN_POSITIVE
        } else {
            f64::from(f32::MIN_POSITIVE)
        }
    }

    /// Removes from each active system `self_i` its components along `basis[k]_i` for every `k`
    /// (one pass of classical Gram–Schmidt: `self_i ← self_i − Σ_k ⟨q_k, self_i⟩ q_k`).
    /// The basis vectors are assumed orthonormal per system. Backends may override this with a
    /// fused implementation (candle does: one batched matmul, no host synchronisation).
    fn orthogonalize_against(
        &mut self,
        basis: &[Self],
        active: &[bool],
    ) -> Result<(), KrylovError> {
        let n = self.n_systems();
        let ones = vec![1.0; n];
        let coeffs: Vec<Vec<f64>> = basis
            .iter()
            .map(|q| q.dots(self))
            .collect::<Result<_, _>>()?;
        for (q, c) in basis.iter().zip(coeffs) {
            let neg: Vec<f64> = c.iter().map(|v| -v).collect();
            self.axpby_masked(&ones, &neg, q, active)?;
        }
        Ok(())
    }
}

/// Checks that two batches have the same `(B, d)`.
pub(crate) fn check_same_shape<V: BatchVectors>(
    context: &'static str,
    expected: &V,
    found: &V,
) -> Result<(), KrylovError> {
    let e = (expected.n_systems(), expected.system_dim());
    let f = (found.n_systems(), found.system_dim());
    if e == f {
        Ok(())
    } else {
        Err(KrylovError::ShapeMismatch {
            context,
            expected: e,
            found: f,
        })
    }
}

/// Checks that a per-system slice has length `n`.
pub(crate) fn check_len(context: &'static str, n: usize, found: usize) -> Result<(), KrylovError> {
    if n == found {
        Ok(())
    } else {
        Err(KrylovError::WrongSystemCount {
            context,
            expected: n,
            found,
        })
    }
}

/// Errors with [`KrylovError::NonFiniteInput`] when a system of `v` holds a NaN or ±Inf.
/// `norms` are `v`'s NaN-propagating max-norms (already computed by the caller), so the host
/// copy of `v` is only made when one of them is not finite.
pub(crate) fn check_finite<V: BatchVectors>(
    context: &'static str,
    v: &V,
    norms: &[f64],
) -> Result<(), KrylovError> {
    let Some(system) = norms.iter().position(|n| !n.is_finite()) else {
        return Ok(());
    };
    let d = v.system_dim();
    let host = v.to_host()?;
    let row = host.get(system * d..(system + 1) * d).unwrap_or(&[]);
    let (index, value) = row
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_finite())
        .map_or((0, norms[system]), |(k, x)| (k, *x));
    Err(KrylovError::NonFiniteInput {
        context,
        system,
        index,
        value,
    })
}

/// Norms in `[1/MODERATE, MODERATE]` are left alone by the rescalings below.
const MODERATE: f64 = 4_294_967_296.0; // 2³²

/// Whether the element type with unit roundoff `unit_roundoff` is f64. Types with less
/// precision are taken to have f32's range (bf16 has, up to the rounding in its last binade),
/// except f16 ([`has_f16_range`]).
pub(crate) fn has_f64_range(unit_roundoff: f64) -> bool {
    unit_roundoff < 1e-10
}

/// f16's unit roundoff as the backends report it ([`BatchVectors::unit_roundoff`]: 2⁻¹⁰).
const F16_UNIT_ROUNDOFF: f64 = 9.765_625e-4;

/// f16's largest finite value.
const F16_MAX: f64 = 65_504.0;

/// Whether the element type with unit roundoff `unit_roundoff` is f16, whose range is
/// narrow: normal numbers from 2⁻¹⁴ ≈ 6.1e-5 to 65504 (subnormals down to 2⁻²⁴). CG
/// normalises an f16 system's right-hand side (and a far initial residual) to a max-norm in
/// `[1, 2)` ([`power_of_two_scale`]), whatever its size, so that its vectors stay in that range;
/// the element type is recognised by its unit roundoff, 2⁻¹⁰ (bf16's is 2⁻⁷, f32's 2⁻²³).
pub(crate) fn has_f16_range(unit_roundoff: f64) -> bool {
    unit_roundoff == F16_UNIT_ROUNDOFF
}

/// The largest `|k|` for which the rescalings use `2^k`: `2^±k` must be normal numbers of the
/// element type (whose range ends near 2¹²⁸ for types with less precision than f64, except
/// f16's, at 2¹⁶ with normal numbers from 2⁻¹⁴).
fn max_scale_exponent(unit_roundoff: f64) -> i32 {
    if has_f64_range(unit_roundoff) {
        1000
    } else if has_f16_range(unit_roundoff) {
        14
    } else {
        100
    }
}

/// The power of two `s` by which the solvers multiply an input vector (a right-hand side of
/// [`crate::cg()`], a start vector of [`crate::lanczos()`]) of max-norm `norm` before computing
/// its dot products: `1` for norms in `[2⁻³², 2³²]` (and for `0`), otherwise
/// `2^-⌊log₂ norm⌋`, which brings the norm into `[1, 2)`. Multiplying by a power of two is
/// exact (short of underflow of entries far below the largest one, which are then negligible
/// against it), so the scaled vector has the same direction, but its squared entries neither
/// overflow nor underflow. The exponent is clamped so that `s` and `1/s` are normal numbers
/// of the element type (±100 for types with less precision than f64, whose range ends near
/// 2¹²⁸; ±1000 for f64).
///
/// f16 ([`has_f16_range`]) has no room for such a window: there every vector is brought to a
/// max-norm in `[1, 2)` (`s = 1` only for norms in `[1, 2)` and for `0`; exponent clamped to
/// ±14), so that CG's residuals, from `‖b‖` down to the tolerance, stay in f16's normal
/// numbers and `H b` overflows only for `‖H‖` near f16's range (`‖H b‖∞ ≤ ‖H‖∞‖b‖∞ < 65504`
/// for `‖H‖∞ < 32752`). For Lanczos, which normalises its start vector anyway, this changes
/// no result.
pub(crate) fn power_of_two_scale(norm: f64, unit_roundoff: f64) -> f64 {
    if !has_f16_range(unit_roundoff) && (1.0 / MODERATE..=MODERATE).contains(&norm) {
        return 1.0;
    }
    normalising_scale(norm, unit_roundoff)
}

/// `2^-⌊log₂ norm⌋` (`norm` finite and positive), which brings `norm` into `[1, 2)`, its
/// exponent clamped so that it and its inverse are normal numbers of the element type; `1`
/// for `0`.
fn normalising_scale(norm: f64, unit_roundoff: f64) -> f64 {
    if norm == 0.0 {
        return 1.0;
    }
    let max_exponent = max_scale_exponent(unit_roundoff);
    // `norm` is finite and positive here (checked by the caller), so its floored log₂ is an
    // integer of magnitude ≤ 1075 and the conversion is exact.
    let exponent = (norm.log2().floor() as i32).clamp(-max_exponent, max_exponent);
    2f64.powi(-exponent)
}

/// Whether `1/norm` (`norm > 0`) overflows the element type with unit roundoff
/// `unit_roundoff`, so that a vector of Euclidean norm `norm` cannot be normalised by it.
/// For f64 `1/norm` is +Inf (`norm` below 2⁻¹⁰²⁴, deep in the subnormals); for the other
/// types ([`has_f64_range`]: f32's range) `norm` is below about 2⁻¹²⁸, in the subnormals;
/// for f16 ([`has_f16_range`]) below 1/65504 ≈ 2⁻¹⁶, in its subnormals too.
/// `false` for `0` and NaN.
pub(crate) fn reciprocal_overflows(norm: f64, unit_roundoff: f64) -> bool {
    if norm.is_nan() || norm <= 0.0 {
        return false;
    }
    let inverse = 1.0 / norm;
    if has_f64_range(unit_roundoff) {
        !inverse.is_finite()
    } else if has_f16_range(unit_roundoff) {
        // f16: `norm` below 1/65504 ≈ 1.5e-5, in f16's subnormals (from 6.1e-5 down).
        inverse > F16_MAX
    } else {
        // The conversion the f32 backends make (`Real::lossy_from_f64`, candle's `to_dtype`).
        !(inverse as f32).is_finite()
    }
}

/// Whether the square of `norm` (a Euclidean norm, the square root of a reduction) is
/// below `min_positive` ([`BatchVectors::reduction_min_positive`]): the reduction it came
/// from was subnormal or 0, so it (and every other reduction of that vector's size) has
/// lost precision, unless the vector is exactly 0. `true` for `0`, `false` for NaN.
pub(crate) fn square_underflows(norm: f64, min_positive: f64) -> bool {
    norm * norm < min_positive
}

/// The further power of two `e ≤ 1` by which CG multiplies a system whose initial residual
/// `r0 = b − H x0` is huge, after the right-hand side's own scaling `scale`
/// ([`power_of_two_scale`]); `residual` (‖r0‖∞), `tolerance` and `rhs` (‖b‖∞) are in the
/// units of that scaling, in which `rhs` is moderate. CG's residuals fall from `residual` to
/// about `lo = min(tolerance, rhs)` (`rhs` when the tolerance is 0), and their squares must
/// neither overflow nor underflow: `e` maps the geometric mean `√(residual·lo)` near 1, so
/// that both ends get the same head room (‖r0‖ ≈ 1e160 with `lo` ≈ 1e-6 in f64: residuals
/// from ≈ 1e83 down to ≈ 1e-83). `1` unless `residual` is finite and above 2³² (ordinary
/// guesses, `r0 = 0`, and non-finite residuals, which break down anyway, are left alone); never
/// above 1 (scaling down cannot overflow `x`), and `scale·e` stays a normal number of the
/// element type. Exact, like the first scaling. For f16 ([`has_f16_range`]), whose range
/// has no room for such a window, a residual of max-norm 2 or more is brought into `[1, 2)`,
/// like its right-hand side ([`power_of_two_scale`]).
pub(crate) fn initial_residual_scale(
    residual: f64,
    tolerance: f64,
    rhs: f64,
    scale: f64,
    unit_roundoff: f64,
) -> f64 {
    if has_f16_range(unit_roundoff) {
        if !(residual.is_finite() && residual >= 2.0) {
            return 1.0;
        }
        let first = scale.log2().round() as i32;
        let max_exponent = max_scale_exponent(unit_roundoff);
        let total = (first - residual.log2().floor() as i32).clamp(-max_exponent, max_exponent);
        return 2f64.powi((total - first).min(0));
    }
    if !(residual.is_finite() && residual > MODERATE && rhs > 0.0) {
        return 1.0;
    }
    let lo = if tolerance > 0.0 {
        tolerance.min(rhs)
    } else {
        rhs
    };
    let centre = 0.5 * (residual.log2() + lo.log2());
    // `scale` is a power of two (from `power_of_two_scale`), so its log₂ is an exact integer.
    let first = scale.log2().round() as i32;
    let max_exponent = max_scale_exponent(unit_roundoff);
    let total = (first - centre.floor() as i32).clamp(-max_exponent, max_exponent);
    2f64.powi((total - first).min(0))
}

/// The further power of two `e` by which CG multiplies a system so that its reductions
/// (`rᵀM⁻¹r`, and `pᵀHp`, of the same size for a well-scaled preconditioner) stay inside the
/// range of the reductions' type. Its starting `r0ᵀM⁻¹r0 = rz` (after the scalings of
/// [`power_of_two_scale`] and [`initial_residual_scale`], whose product is `scale`) falls
/// with the residual, from `‖r0‖∞ = residual` to about `lo` ([`initial_residual_scale`]'s
/// end of the range, `tolerance` or `rhs`), to ≈ `rz·(lo/residual)²`: unless the geometric
/// mean of the two, `centre = rz·lo/residual`, lies in `[2⁻⁶⁴, 2⁶⁴]`, `e = 2^-⌊log₂(centre)/2⌋`
/// brings it into `[1, 4)`. The scalings of `b` and of a far `r0` keep `centre` in that window
/// without a preconditioner (`rz = ‖r0‖₂²`), except for extreme tolerances; a preconditioner
/// of extreme scale leaves it (Jacobi on a diagonal of 1e14 with `‖b‖ ≈ 1e-9`: `rz ≈ 1e-32`;
/// f32 tensors reduce in f32, whose normal range ends at 1e-38, where re-orthogonalised CG
/// stops at its floor). `1` for `rz` or `residual` that is 0, negative or not finite (a
/// breakdown, or a converged system); `scale·e` stays a normal number of the element type.
/// Exact, like the other scalings. Always `1` for f16 ([`has_f16_range`]): its vectors,
/// normalised by [`power_of_two_scale`], have no room to move (an f16 `r` and `M⁻¹r` give an
/// `rᵀM⁻¹r` of at most `d·2³²`, far inside the f32 reductions' range).
pub(crate) fn reduction_scale(
    rz: f64,
    residual: f64,
    (tolerance, rhs): (f64, f64),
    scale: f64,
    unit_roundoff: f64,
) -> f64 {
    let lo = if tolerance > 0.0 {
        tolerance.min(rhs)
    } else {
        rhs
    };
    let positive = rz.is_finite() && rz > 0.0 && residual.is_finite() && residual > 0.0;
    // `lo = 0` only for `b = 0`, a converged system.
    if !positive || lo <= 0.0 || has_f16_range(unit_roundoff) {
        return 1.0;
    }
    // log₂ of `centre`, which itself could underflow.
    let log_centre = rz.log2() + lo.min(residual).log2() - residual.log2();
    if log_centre.abs() <= 64.0 {
        return 1.0;
    }
    centring_scale(log_centre, scale, unit_roundoff)
}

/// The power of two `e` with `e²·2^log_centre` in `[1, 4)`, such that `scale·e` stays a
/// normal number of the element type.
fn centring_scale(log_centre: f64, scale: f64, unit_roundoff: f64) -> f64 {
    // |log₂ centre| ≤ 2·1100: the floor is an exact integer; `scale` is a power of two.
    let half = (log_centre.floor() as i32).div_euclid(2);
    let first = scale.log2().round() as i32;
    let max_exponent = max_scale_exponent(unit_roundoff);
    let total = (first - half).clamp(-max_exponent, max_exponent);
    2f64.powi(total - first)
}

/// The further power of two `e < 1` by which CG multiplies a system one of whose reductions
/// overflowed the reductions' type although its factors are finite (f32 tensors reduce in
/// f32, whose range ends at ≈ 3e38): the starting `rᵀM⁻¹r` (Jacobi on a diagonal of 1e-21
/// with `‖b‖ ≈ 1e9`), or the first `pᵀHp` (`H` of 1e19 with `‖b‖ ≈ 1e9`). `log2_high` is
/// `log₂` of a bound on the largest reduction the solve starts with (`d·‖u‖∞·‖v‖∞` for the
/// reduction `uᵀv` that overflowed), `log2_rz` that of its starting `rᵀM⁻¹r` (the bound
/// again when that is what overflowed); the other arguments are [`reduction_scale`]'s. As
/// the residual falls from `residual` to `lo` (the tolerance, or `rhs`), `rᵀM⁻¹r` falls to
/// ≈ `rz·(lo/residual)²`: `e` centres the range from there up to the bound on 1. `1` when
/// that would not scale down (the range is too wide for the type) or an input is not
/// positive and finite; `scale·e` stays a normal number of the element type. Exact, like
/// the other scalings. Used only once a reduction has overflowed.
pub(crate) fn overflow_scale(
    (log2_high, log2_rz): (f64, f64),
    residual: f64,
    (tolerance, rhs): (f64, f64),
    scale: f64,
    unit_roundoff: f64,
) -> f64 {
    let lo = if tolerance > 0.0 {
        tolerance.min(rhs)
    } else {
        rhs
    };
    let usable = log2_high.is_finite()
        && log2_rz.is_finite()
        && residual.is_finite()
        && residual > 0.0
        && lo > 0.0;
    if !usable {
        return 1.0;
    }
    let log_centre = 0.5 * (log2_high + log2_rz) + lo.min(residual).log2() - residual.log2();
    let e = centring_scale(log_centre, scale, unit_roundoff);
    if e < 1.0 { e } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `reduction_scale` leaves a system alone unless the geometric mean of the `rᵀM⁻¹r` its
    /// solve crosses is outside `[2⁻⁶⁴, 2⁶⁴]`, and then brings it into `[1, 4)`.
    #[test]
    fn reduction_scale_centres_the_range_of_r_m_r() {
        let (u64_, u32_) = (f64::EPSILON, f64::from(f32::EPSILON));
        // An ordinary system: `rz ≈ 1`, `rtol = 1e-6` (centre 1e-6), and the tolerance 0.
        assert_eq!(reduction_scale(3.0, 1.0, (1e-6, 1.0), 1.0, u32_), 1.0);
        assert_eq!(reduction_scale(3.0, 1.0, (0.0, 1.0), 1.0, u32_), 1.0);
        // Jacobi on a diagonal of 1e14 with ‖b‖ = 1e-9 (not rescaled): rz ≈ 1e-32, centre
        // ≈ 1e-38 (≈ 2⁻¹²⁶) at rtol 1e-6.
        let (rz, b) = (1e-32, 1e-9);
        let e = reduction_scale(rz, b, (1e-6 * b, b), 1.0, u32_);
        let centre = rz * e * e * 1e-6;
        assert!((1.0..4.0).contains(&centre), "{e:e}: {centre:e}");
        assert_eq!(e.log2().fract(), 0.0);
        // A centre below the window from a tiny tolerance alone (rtol 1e-40 in f64) ...
        let e = reduction_scale(1.0, 1.0, (1e-40, 1.0), 1.0, u64_);
        assert!((1.0..4.0).contains(&(e * e * 1e-40)), "{e:e}");
        // ... and above it.
        let e = reduction_scale(1e30, 1.0, (0.0, 1.0), 1.0, u64_);
        assert!((1.0..4.0).contains(&(e * e * 1e30)), "{e:e}");
        // A centre that underflows as a product (1e-400) is still found.
        let e = reduction_scale(1e-300, 1.0, (1e-100, 1.0), 1.0, u64_);
        assert_eq!(
            e,
            2f64.powi(-((-400f64 * 10f64.log2()).floor() as i32).div_euclid(2))
        );
        // Breakdowns and converged systems are left alone.
        for rz in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert_eq!(reduction_scale(rz, 1.0, (0.0, 1.0), 1.0, u64_), 1.0);
        }
        assert_eq!(reduction_scale(1e-200, 0.0, (0.0, 1.0), 1.0, u64_), 1.0);
        assert_eq!(reduction_scale(1e-200, 1.0, (0.0, 0.0), 1.0, u64_), 1.0);
        // The total scale stays a normal number of the element type (f32: 2^±100).
        let e = reduction_scale(1e-300, 1.0, (0.0, 1.0), 2f64.powi(90), u32_);
        assert_eq!(e, 2f64.powi(10));
    }

    /// `overflow_scale` centres the range from the bound down to the last `rᵀM⁻¹r` on 1,
    /// and only ever scales down.
    #[test]
    fn overflow_scale_centres_the_range_below_an_overflowed_reduction() {
        let u32_ = f64::from(f32::EPSILON);
        // A starting `rᵀM⁻¹r` bounded by 2¹⁴⁰ (overflowed in f32), ‖r‖ = 2³⁰, tolerance
        // 2¹⁰: the range is 2¹⁴⁰ down to 2¹⁰⁰, its centre 2¹²⁰, so e = 2⁻⁶⁰.
        let (r, t) = (2f64.powi(30), 2f64.powi(10));
        assert_eq!(
            overflow_scale((140.0, 140.0), r, (t, r), 1.0, u32_),
            2f64.powi(-60)
        );
        // A first `pᵀHp` bounded by 2¹³⁰ with `rᵀr = 2⁶⁰`, which ends at 2⁶⁰·(2¹⁰/2³⁰)²
        // = 2²⁰: centre 2⁷⁵, e = 2⁻³⁷ (e²·2⁷⁵ = 2, in [1, 4)).
        let e = overflow_scale((130.0, 60.0), r, (t, r), 1.0, u32_);
        assert_eq!(e, 2f64.powi(-37));
        // The total scale stays within the clamp; a range that would need scaling up, or
        // non-finite or zero inputs, are left alone.
        let e = overflow_scale((140.0, 140.0), r, (t, r), 2f64.powi(-90), u32_);
        assert_eq!(e, 2f64.powi(-10));
        assert_eq!(overflow_scale((10.0, -200.0), r, (t, r), 1.0, u32_), 1.0);
        for bad in [f64::INFINITY, f64::NAN] {
            assert_eq!(overflow_scale((bad, 1.0), r, (t, r), 1.0, u32_), 1.0);
            assert_eq!(overflow_scale((140.0, 140.0), bad, (t, r), 1.0, u32_), 1.0);
        }
        assert_eq!(
            overflow_scale((140.0, 140.0), r, (0.0, 0.0), 1.0, u32_),
            1.0
        );
    }

    /// f16 (unit roundoff 2⁻¹⁰): every right-hand side is brought into `[1, 2)` (the exponent
    /// clamped to ±14), a far initial residual likewise (never scaled up), `reduction_scale`
    /// leaves it alone, and `1/norm` overflows below 1/65504. Other types are unchanged.
    #[test]
    fn f16_systems_are_normalised_into_its_range() {
        let (u16_, ubf16, u32_) = (9.765_625e-4, 7.812_5e-3, f64::from(f32::EPSILON));
        assert!(has_f16_range(u16_) && !has_f16_range(ubf16) && !has_f16_range(u32_));
        for (norm, s) in [(1.0, 1.0), (1.99, 1.0), (2.0, 0.5), (300.0, 2f64.powi(-8))] {
            assert_eq!(power_of_two_scale(norm, u16_), s, "{norm}");
        }
        assert_eq!(power_of_two_scale(1e-4, u16_), 2f64.powi(14));
        assert_eq!(power_of_two_scale(0.0, u16_), 1.0);
        assert_eq!(power_of_two_scale(1e-7, u16_), 2f64.powi(14));
        // Other types keep the window [2⁻³², 2³²].
        assert_eq!(power_of_two_scale(300.0, ubf16), 1.0);
        assert_eq!(power_of_two_scale(300.0, u32_), 1.0);
        // A residual of 1000 after a scale of 2⁻⁸: a further 2⁻⁹ would make the total 2⁻¹⁷,
        // clamped to 2⁻¹⁴, so 2⁻⁶; after no scale, 2⁻⁹; one below 2 is left alone.
        let e = initial_residual_scale(1000.0, 1e-2, 1.0, 2f64.powi(-8), u16_);
        assert_eq!(e, 2f64.powi(-6));
        assert_eq!(
            initial_residual_scale(1000.0, 1e-2, 1.0, 1.0, u16_),
            2f64.powi(-9)
        );
        assert_eq!(initial_residual_scale(1.5, 1e-2, 1.0, 1.0, u16_), 1.0);
        assert_eq!(reduction_scale(1e-30, 1.0, (1e-2, 1.0), 1.0, u16_), 1.0);
        assert!(reciprocal_overflows(1.5e-5, u16_) && !reciprocal_overflows(1.6e-5, u16_));
        assert!(!reciprocal_overflows(1.5e-5, ubf16));
    }

    /// The floor sits where the square leaves the normal numbers: `2⁻⁵¹¹` squared is f64's
    /// `MIN_POSITIVE` (normal), anything below it squares to a subnormal or 0.
    #[test]
    fn square_underflows_below_the_smallest_normal_square() {
        let edge = 2f64.powi(-511);
        assert!(!square_underflows(edge, f64::MIN_POSITIVE));
        assert!(square_underflows(
            edge * (1.0 - f64::EPSILON),
            f64::MIN_POSITIVE
        ));
        assert!(square_underflows(1e-170, f64::MIN_POSITIVE));
        assert!(square_underflows(0.0, f64::MIN_POSITIVE));
        assert!(!square_underflows(f64::NAN, f64::MIN_POSITIVE));
        let f32_floor = f64::from(f32::MIN_POSITIVE);
        assert!(!square_underflows(2f64.powi(-63), f32_floor));
        assert!(square_underflows(1e-20, f32_floor));
        assert!(!square_underflows(1e-20, f64::MIN_POSITIVE));
    }
}
