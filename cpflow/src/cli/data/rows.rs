//! The rows of one part of the data, in the precision they were read in.

use std::borrow::Cow;

use candle_core::DType;

/// Row-major values of one part, in the precision they were read in: f32 for the tabular
/// benchmarks (as MAF stores them; widening BSDS300's 1.3 M rows to f64 took 650 MB), f64 for
/// toys, images and files.
#[derive(Debug)]
pub enum Rows {
    F64(Vec<f64>),
    F32(Vec<f32>),
}

impl Rows {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Rows::F64(v) => v.len(),
            Rows::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f64 (a copy for f32 rows).
    pub fn to_f64(&self) -> Cow<'_, [f64]> {
        match self {
            Rows::F64(v) => Cow::Borrowed(v),
            Rows::F32(v) => Cow::Owned(v.iter().map(|&x| f64::from(x)).collect()),
        }
    }
}

impl Rows {
    /// Whether the values, finite here, overflow `dtype` (a model's float type): `None`
    /// when they fit, else how many do and the largest magnitude, in words. The CLI checks
    /// this before converting the rows, which would turn them into infinities that read as
    /// "NaN or infinite values" in the data.
    pub fn overflow_in(&self, dtype: DType) -> Option<String> {
        let Rows::F64(v) = self else {
            return None;
        };
        let limit = match dtype {
            DType::F32 => f64::from(f32::MAX),
            DType::F16 => 65504.0,
            DType::BF16 => 3.3895313892515355e38,
            _ => return None,
        };
        let big: Vec<f64> = v
            .iter()
            .copied()
            .filter(|x| x.is_finite() && x.abs() > limit)
            .collect();
        let largest = big.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        (!big.is_empty()).then(|| {
            format!(
                "{} of them, up to |x| = {largest:e}, beyond its largest {limit:e}",
                big.len()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_counts_the_values_beyond_the_float_type() {
        let rows = Rows::F64(vec![0.5, 1e100, -3e39, f64::MAX / 2.0]);
        let why = rows.overflow_in(DType::F32).expect("overflows f32");
        assert!(
            why.starts_with("3 of them, up to |x| = 8.988465674311579e307"),
            "{why}"
        );
        assert_eq!(rows.overflow_in(DType::F64), None);
        assert_eq!(Rows::F64(vec![3e38, -3e38]).overflow_in(DType::F32), None);
        assert_eq!(Rows::F32(vec![f32::MAX]).overflow_in(DType::F32), None);
    }
}
