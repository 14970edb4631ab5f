//! Whether the scale of each column of the data suits a flow: spread enough for ActNorm's
//! scale cap, and resolved by the float type the model computes in.
//!
//! Both failures train without an error and end with a test NLL that is silently wrong (the
//! numbers of the audit, `configs/toy-8gaussians-fast.toml`, 1,500 iterations, are in the
//! comments of the thresholds below).

use candle_core::DType;

/// ActNorm's epsilon in `logs = −log(std + 1e-6)` ([`crate::actnorm::ACTNORM_STD_EPS`]): the
/// layer scales a column by at most `1/(std + 1e-6)`, about `1e6`.
pub const ACTNORM_STD_FLOOR: f64 = crate::actnorm::ACTNORM_STD_EPS;

/// Below this standard deviation a column is refused: ActNorm cannot bring it to unit spread
/// (its output's standard deviation `std/(std + 1e-6)` is under 1/2), and the blocks have to
/// learn the rest of a scale of `1/std`. 2-D data (standard deviations 1.8 and 0.5) scaled
/// by `s` ended 1,500 iterations worse than the Gaussian fitted to them by 4.1 nats
/// (`s = 1e-6`), 15.9 (`1e-7`) and 9.3 (`1e-8`; 466,516 nats after 100 iterations),
/// against −0.007 unscaled.
pub const REFUSED_STD: f64 = ACTNORM_STD_FLOOR;

/// Below this standard deviation (100 × ActNorm's epsilon, which then shifts the initial
/// scale by 1% or more) a column is trained with a warning: the same data scaled by
/// `s = 1e-5` (smallest column standard deviation 5e-6) ended 0.79 nats worse than the
/// Gaussian, `s = 1e-4` (5e-5) 0.13 nats and `s = 1e-3` (5e-4) 0.014 nats better, as
/// unscaled.
pub const WARNED_STD: f64 = 1e-4;

/// A column whose float spacing at its largest magnitude is at least this fraction of its
/// standard deviation is refused. 2-D data whose column 0 (standard deviation 1.8) was
/// offset so that f32's spacing there is `h`: test NLL against f64's 2.7432 of 2.0122 at
/// `h/σ = 4.4` (the audit's `1e8 + N(0, 1)`), 1.3390 at 0.55 (the flow fits the lattice of
/// values), 2.7463 at 0.069 and 2.7451 at 0.0087.
pub const REFUSED_SPACING: f64 = 0.1;

/// A column whose float spacing at its largest magnitude is above this fraction of its
/// standard deviation is trained with a warning (2.7431 against 2.7432 at `h/σ = 1.1e-3`):
/// the values round to a lattice of steps `h`, which adds a variance of `h²/12` (`8e-8` of
/// the column's) and which a flexible enough flow can fit instead of the density.
pub const WARNED_SPACING: f64 = 1e-3;

/// The largest magnitude and the standard deviation (biased, over the rows) of one column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColumnSpread {
    /// `max |x|` over the rows.
    pub max_abs: f64,
    /// Standard deviation over the rows.
    pub std: f64,
}

/// The [`ColumnSpread`] of every column of the row-major values `rows` of `dim` columns
/// (three passes over the rows, whatever their layout). Computed on each column divided by
/// its largest magnitude, so that values near 1e300 do not overflow the squares.
pub fn column_spreads<T: Copy + Into<f64>>(rows: &[T], dim: usize) -> Vec<ColumnSpread> {
    let dim = dim.max(1);
    let n = (rows.len() / dim).max(1) as f64;
    let mut max_abs = vec![0.0f64; dim];
    for row in rows.chunks_exact(dim) {
        for (m, &v) in max_abs.iter_mut().zip(row) {
            *m = m.max(v.into().abs());
        }
    }
    let unit = |v: T, j: usize| {
        if max_abs[j] > 0.0 {
            v.into() / max_abs[j]
        } else {
            0.0
        }
    };
    let mut mean = vec![0.0f64; dim];
    for row in rows.chunks_exact(dim) {
        for (j, &v) in row.iter().enumerate() {
            mean[j] += unit(v, j) / n;
        }
    }
    let mut var = vec![0.0f64; dim];
    for row in rows.chunks_exact(dim) {
        for (j, &v) in row.iter().enumerate() {
            var[j] += (unit(v, j) - mean[j]).powi(2) / n;
        }
    }
    (0..dim)
        .map(|j| ColumnSpread {
            max_abs: max_abs[j],
            std: max_abs[j] * var[j].sqrt(),
        })
        .collect()
}

/// The distance from `x > 0` to the next larger value of `dtype` (`x·2⁻⁵²` up to a factor 2
/// in f64, `x·2⁻²³` in f32); `None` for a non-float dtype.
pub fn float_spacing(dtype: DType, x: f64) -> Option<f64> {
    let mantissa_bits = match dtype {
        DType::F64 => 52,
        DType::F32 => 23,
        DType::F16 => 10,
        DType::BF16 => 7,
        _ => return None,
    };
    if !(x.is_finite() && x > 0.0) {
        return Some(0.0);
    }
    Some(2f64.powi(x.log2().floor() as i32 - mantissa_bits))
}

/// What the data scan says of a column's spread: nothing, a warning, or a refusal.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Trained as is, with this warning.
    Warn(String),
    /// Refused, with this reason.
    Refuse(String),
}

/// The verdict on column `j` (of the data `what`, a file's path or a source's name) whose
/// standard deviation `std > 0` may be too small for ActNorm ([`REFUSED_STD`],
/// [`WARNED_STD`]); `None` when it is not.
pub fn small_spread(what: &str, j: usize, std: f64) -> Option<Verdict> {
    if std >= WARNED_STD || std == 0.0 {
        return None;
    }
    let why = format!(
        "{what}: column {j} (counted from 0) has standard deviation {std:.3e} in the training \
         rows; ActNorm scales a column by at most 1/(std + {ACTNORM_STD_FLOOR:e}), so"
    );
    let fix = "standardise the data (subtract each column's mean, divide by its standard \
               deviation; the NLL then differs from the original data's by the sum of the \
               log standard deviations)";
    Some(if std < REFUSED_STD {
        Verdict::Refuse(format!(
            "{why} it cannot bring this one to unit spread and the flow ends many nats from \
             the density (data of standard deviation 1e-8: 9 nats worse than a Gaussian after \
             1,500 iterations); {fix}"
        ))
    } else {
        Verdict::Warn(format!(
            "{why} its 1e-6 shifts this one's scale by {:.0}%, which training has to undo \
             (it ended 0.1–0.8 nats worse than a Gaussian on such data); {fix}",
            100.0 * ACTNORM_STD_FLOOR / (std + ACTNORM_STD_FLOOR)
        ))
    })
}

/// The verdict on the columns of `rows` (row-major, `dim` columns, at least 2 rows; the
/// data `what`) for a model computing in `dtype`: refused when a column's values are
/// rounded to steps of [`REFUSED_SPACING`] of its standard deviation or more, warned of
/// above [`WARNED_SPACING`]. The step is the float spacing at the column's largest
/// magnitude: a column of 1e8 + N(0, 1) is rounded to steps of 8 in f32. `None` when every
/// column is resolved (or has a single row, or is constant: refused elsewhere).
pub fn unresolved_columns<T: Copy + Into<f64>>(
    what: &str,
    rows: &[T],
    dim: usize,
    dtype: DType,
) -> Option<Verdict> {
    if rows.len() < 2 * dim.max(1) {
        return None;
    }
    let mut worst: Option<(f64, usize, ColumnSpread, f64)> = None;
    for (j, s) in column_spreads(rows, dim).into_iter().enumerate() {
        let h = float_spacing(dtype, s.max_abs)?;
        if s.std > 0.0 && h / s.std > worst.map_or(WARNED_SPACING, |w| w.0) {
            worst = Some((h / s.std, j, s, h));
        }
    }
    let (ratio, j, s, h) = worst?;
    let name = format!("{dtype:?}").to_lowercase();
    let remedy = if dtype == DType::F64 {
        "centre or standardise the data (subtract each column's mean, divide by its standard \
         deviation)"
            .to_string()
    } else {
        "centre or standardise the data (subtract each column's mean, divide by its standard \
         deviation), or train in f64 (`--dtype f64`)"
            .to_string()
    };
    let text = format!(
        "{what}: column {j} (counted from 0) reaches |x| = {:e} with standard deviation \
         {:.3e}; {name} rounds values that large to steps of {h:e}, {ratio:.2e} of the \
         standard deviation",
        s.max_abs, s.std
    );
    Some(if ratio >= REFUSED_SPACING {
        Verdict::Refuse(format!(
            "{text}: the model would be trained and scored on rounded data (1e8 + N(0, 1) in \
             f32: test NLL 2.01 against f64's 2.74); {remedy}"
        ))
    } else {
        Verdict::Warn(format!(
            "{text}: the model sees the values rounded (little changes at this ratio, a flow \
             fits the lattice past ~0.1); {remedy}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_is_the_float_step_at_the_magnitude() {
        assert_eq!(float_spacing(DType::F32, 1e8), Some(8.0));
        assert_eq!(
            float_spacing(DType::F32, 1.0),
            Some(f64::from(f32::EPSILON))
        );
        assert_eq!(float_spacing(DType::F64, 1.5), Some(f64::EPSILON));
        assert_eq!(float_spacing(DType::U8, 1.5), None);
        // The spacing is that of the type: 1e8 + 8 is the next f32 above 1e8.
        assert_eq!(1e8f32 + 4.0, 1e8f32);
        assert_eq!(1e8f32 + 8.0, 100_000_008f32);
    }

    #[test]
    fn spreads_are_per_column() {
        let rows = [1.0f64, 1e300, 3.0, -1e300];
        let s = column_spreads(&rows, 2);
        assert_eq!(
            s[0],
            ColumnSpread {
                max_abs: 3.0,
                std: 1.0
            }
        );
        // No overflow of the squares near 1e300.
        assert_eq!(
            s[1],
            ColumnSpread {
                max_abs: 1e300,
                std: 1e300
            }
        );
    }

    /// Column 0 of standard deviation 1 around `offset`: refused, warned of or passed as
    /// the f32 spacing there is 4 (1e7 … 1.6e7: spacing 1; 1.2e7 → 1, ratio ≥ 0.1), 1/64
    /// (2e5) or 2⁻¹² (3e3) of it; f64 resolves all three.
    #[test]
    fn unresolved_columns_by_the_float_spacing() {
        let rows = |offset: f64| -> Vec<f32> {
            (0..200)
                .flat_map(|i| {
                    let z = ((i * 7919) % 200) as f64 / 200.0 * 3.4641 - 1.7320;
                    [(offset + z) as f32, z as f32]
                })
                .collect()
        };
        let verdict = |offset: f64, dtype| unresolved_columns("f.csv", &rows(offset), 2, dtype);
        match verdict(1.2e7, DType::F32) {
            Some(Verdict::Refuse(m)) => assert!(
                m.starts_with("f.csv: column 0 (counted from 0)")
                    && m.contains("f32 rounds values that large to steps of 1e0")
                    && m.contains("`--dtype f64`"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(verdict(2e5, DType::F32), Some(Verdict::Warn(_))));
        assert_eq!(verdict(3e3, DType::F32), None);
        assert_eq!(verdict(1.2e7, DType::F64), None);
        // One row: no standard deviation to judge by.
        assert_eq!(
            unresolved_columns("f.csv", &[1e8f32, 1.0], 2, DType::F32),
            None
        );
    }

    #[test]
    fn small_spreads_are_warned_of_then_refused() {
        assert_eq!(small_spread("f", 0, 1e-3), None);
        assert_eq!(small_spread("f", 0, 0.0), None);
        assert!(matches!(small_spread("f", 1, 5e-5), Some(Verdict::Warn(m))
            if m.contains("column 1") && m.contains("shifts this one's scale by 2%")));
        assert!(
            matches!(small_spread("f", 0, 1e-8), Some(Verdict::Refuse(m))
            if m.contains("standard deviation 1.000e-8") && m.contains("standardise the data"))
        );
    }
}
