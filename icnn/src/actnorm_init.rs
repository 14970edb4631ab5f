//! The ActNorm data-dependent initialisation: the statistics of a batch, computed and checked
//! before anything is written, so that an unusable batch leaves the network as it was.
//!
//! The reference sets `b = −mean(x)`, `logs = log(1/(std(x) + 1e-6))` per unit (biased std
//! over the batch), with no floor on `std`: a unit constant over the batch gets the scale
//! `1e6 + 0.001`. That numerics is kept for a single constant unit (a unit that does not
//! vary on the init batch while the others do). What is refused, with
//! [`IcnnError::Initialization`]:
//! * fewer than 2 rows: every `std` is 0, every unit of every layer is scaled by `1e6`, and
//!   the scales compound over the layers (potentials of `1e17` away from the batch);
//! * non-finite values (in the input or, after an overflow, in a pre-activation): `NaN`
//!   statistics poison every later call;
//! * a layer none of whose units varies over the batch (all points equal, to rounding): the
//!   same compounding `1e6` scales as a single row.

use candle_core::{DType, Tensor};

use crate::actnorm::ACTNORM_SCALE_MIN;
use crate::batch_statistics::{BatchStatistics, feature_statistics};
use crate::error::{IcnnError, Result};

/// The reference's epsilon in `logs = log(1/(std + 1e-6))`.
pub(crate) const ACTNORM_STD_EPS: f64 = 1e-6;

/// A unit counts as constant over the batch when its range is within this many machine
/// epsilons of its magnitude (the rows of a matrix product of identical input rows may differ
/// by rounding).
const CONSTANT_RANGE_ULPS: f64 = 64.0;

/// An [`IcnnError::Initialization`] at `layer`.
pub(crate) fn init_error(layer: &str, reason: impl Into<String>) -> IcnnError {
    IcnnError::Initialization {
        layer: layer.to_string(),
        reason: reason.into(),
    }
}

/// The machine epsilon of a floating-point dtype (`f32`'s for the others).
fn epsilon(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::EPSILON,
        DType::F16 => 9.765_625e-4,
        DType::BF16 => 7.812_5e-3,
        _ => f64::from(f32::EPSILON),
    }
}

/// `x` `(n, c)` as row-major host `f64` values.
fn host_rows(x: &Tensor) -> Result<Vec<f64>> {
    Ok(x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Error unless the batch has at least 2 rows.
fn check_row_count(layer: &str, n: usize) -> Result<()> {
    if n < 2 {
        return Err(init_error(
            layer,
            format!(
                "the batch has {n} row(s); the data-dependent initialisation needs at least 2 \
                 distinct points (with one, every standard deviation is 0 and every unit would \
                 be scaled by 1e6). An uninitialised network runs it on its first \
                 potential/linearize call; `initialize` runs it on a batch of your choice"
            ),
        ));
    }
    Ok(())
}

/// Error at the first non-finite value of the row-major `(n, c)` batch `v`.
fn check_finite(layer: &str, v: &[f64], c: usize, what: &str) -> Result<()> {
    if let Some(k) = v.iter().position(|x| !x.is_finite()) {
        return Err(init_error(
            layer,
            format!(
                "{what} {} in row {}, column {} is not finite; the statistics would be NaN",
                v[k],
                k / c.max(1),
                k % c.max(1)
            ),
        ));
    }
    Ok(())
}

/// Whether some column of the row-major `(n, c)` batch `v` varies by more than `tol` times
/// its magnitude (`tol = 0`: by anything at all).
fn some_column_varies(v: &[f64], c: usize, tol: f64) -> bool {
    (0..c).any(|u| {
        let (lo, hi) = v
            .iter()
            .skip(u)
            .step_by(c)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &a| {
                (lo.min(a), hi.max(a))
            });
        hi - lo > tol * lo.abs().max(hi.abs())
    })
}

/// Checks the input batch `x` `(n, d)` of a dense network's initialisation: at least 2 rows,
/// finite, and not all rows identical.
pub(crate) fn check_input_rows(layer: &str, x: &Tensor) -> Result<()> {
    let (n, d) = x.dims2()?;
    check_row_count(layer, n)?;
    let v = host_rows(x)?;
    check_finite(layer, &v, d, "value")?;
    if !some_column_varies(&v, d, 0.0) {
        return Err(init_error(
            layer,
            format!(
                "all {n} rows of the batch are the same point; the data-dependent \
                 initialisation needs at least 2 distinct points (every standard deviation \
                 would be 0 and every unit scaled by 1e6)"
            ),
        ));
    }
    Ok(())
}

/// Checks the contexts `c` `(n, k)` of a conditional network's initialisation: finite, and
/// not the same on every row (the context ActNorm standardises them over the batch).
pub(crate) fn check_context_rows(layer: &str, c: &Tensor) -> Result<()> {
    let (n, k) = c.dims2()?;
    let v = host_rows(c)?;
    check_finite(layer, &v, k, "context value")?;
    if k > 0 && !some_column_varies(&v, k, 0.0) {
        return Err(init_error(
            layer,
            format!(
                "the context is the same on all {n} rows; the context ActNorm standardises the \
                 contexts over the batch and needs at least 2 different ones (every standard \
                 deviation would be 0 and every context unit scaled by 1e6)"
            ),
        ));
    }
    Ok(())
}

/// Checks the input images `x` `(B, C, H, W)` of a conv network's initialisation (whose
/// statistics run over the batch and the pixels): at least one image, finite, and not every
/// pixel of every image equal in each channel.
pub(crate) fn check_input_images(layer: &str, x: &Tensor) -> Result<()> {
    let (b, c, h, w) = x.dims4()?;
    if b == 0 {
        return Err(init_error(
            layer,
            "the batch has no image; the data-dependent initialisation takes its statistics \
             over the images and their pixels",
        ));
    }
    let rows = x
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .reshape((b * h * w, c))?;
    let v = host_rows(&rows)?;
    check_finite(layer, &v, c, "value")?;
    if !some_column_varies(&v, c, 0.0) {
        return Err(init_error(
            layer,
            format!(
                "every pixel of the {b} image(s) has the same value in each channel; the \
                 data-dependent initialisation needs inputs that vary over the batch and the \
                 pixels"
            ),
        ));
    }
    Ok(())
}

/// The parameters of one ActNorm computed from a batch, not yet written.
#[derive(Debug, Clone)]
pub(crate) struct ActNormInit {
    /// `b = −mean`, `(C,)`.
    pub shift: Tensor,
    /// `logs = −ln(std + 1e-6)`, `(C,)`.
    pub logs: Tensor,
}

impl ActNormInit {
    /// The reference's statistics of the pre-activations `x` `(n, C)` (rows: samples, or
    /// samples × pixels), after the checks of the module docs; `layer` names the ActNorm in
    /// the errors.
    pub(crate) fn from_batch(layer: &str, x: &Tensor) -> Result<Self> {
        let (n, c) = x.dims2()?;
        let x = x.detach();
        check_row_count(layer, n)?;
        let v = host_rows(&x)?;
        check_finite(layer, &v, c, "pre-activation")?;
        let tol = CONSTANT_RANGE_ULPS * epsilon(x.dtype());
        if c > 0 && !some_column_varies(&v, c, tol) {
            return Err(init_error(
                layer,
                format!(
                    "none of its {c} units varies over the {n} rows of the batch (to \
                     rounding), as when all points are the same; 1/(std + 1e-6) would scale \
                     every unit by about 1e6, and such scales compound over the layers: \
                     initialise from a batch of distinct points (if the points are \
                     distinct, their spread is below what an ActNorm's 1e-6 floor can \
                     scale to unit size: standardise the data)"
                ),
            ));
        }
        // In f64 on the host, then rounded to the layer's dtype: f32 reductions drift on
        // pre-activations far from 0 (`batch_statistics.rs`); on f64 batches these are the
        // candle reductions' results, bit for bit.
        let BatchStatistics { mean, std } = feature_statistics(&v, c)?;
        let as_layer = |s: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::from_vec(s, c, x.device())?.to_dtype(x.dtype())?)
        };
        let (mean, std) = (as_layer(mean)?, as_layer(std)?);
        let stats = host_rows(&Tensor::stack(&[&mean, &std], 0)?)?;
        if let Some(k) = stats.iter().position(|s| !s.is_finite()) {
            return Err(init_error(
                layer,
                format!(
                    "the {} of unit {} over the batch overflows {:?}",
                    if k < c { "mean" } else { "standard deviation" },
                    k % c.max(1),
                    x.dtype()
                ),
            ));
        }
        let logs = std.affine(1.0, ACTNORM_STD_EPS)?.log()?.neg()?;
        let shift = mean.neg()?;
        Ok(Self { shift, logs })
    }

    /// The initialised ActNorm's scale `exp(logs) + 0.001`, `(C,)`.
    pub(crate) fn scale(&self) -> Result<Tensor> {
        Ok(self.logs.exp()?.affine(1.0, ACTNORM_SCALE_MIN)?)
    }

    /// `(x + b) ⊙ (exp(logs) + 0.001)` for `x` `(n, C)`: the initialised ActNorm's output.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_add(&self.shift)?
            .broadcast_mul(&self.scale()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// On f64 batches the host statistics initialise as candle's reductions did (the code
    /// they replace: `mean_keepdim(0)`, `(x − mean)².mean(0)`, `sqrt`), bit for bit, on a
    /// contiguous batch and on a strided view, with values far from 0 and of mixed scales.
    #[test]
    fn f64_initialisation_is_the_candle_reductions_bit_for_bit() {
        let (n, c) = (301, 4);
        let v: Vec<f64> = (0..n * c)
            .map(|k| {
                let t = (k as f64 * 0.7548776662466927).fract() - 0.5;
                t * 10f64.powi((k % 4) as i32) + if k % 3 == 0 { 1e4 } else { 0.0 }
            })
            .collect();
        let dense = Tensor::from_vec(v.clone(), (n, c), &Device::Cpu).unwrap();
        let strided = Tensor::from_vec(v, (c, n), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap();
        let bits = |t: &Tensor| -> Vec<u64> {
            t.to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        };
        for x in [dense, strided] {
            let init = ActNormInit::from_batch("an", &x).unwrap();
            let mean = x.mean_keepdim(0).unwrap();
            let var = x
                .broadcast_sub(&mean)
                .unwrap()
                .sqr()
                .unwrap()
                .mean(0)
                .unwrap();
            let logs = var
                .sqrt()
                .unwrap()
                .affine(1.0, ACTNORM_STD_EPS)
                .unwrap()
                .log()
                .unwrap()
                .neg()
                .unwrap();
            assert_eq!(
                bits(&init.shift),
                bits(&mean.squeeze(0).unwrap().neg().unwrap())
            );
            assert_eq!(bits(&init.logs), bits(&logs));
        }
    }
}
