//! The statistics of an ActNorm's data-dependent initialisation (per-feature or per-channel
//! mean and biased standard deviation of a batch), accumulated on the host in `f64` whatever
//! the layer's dtype. icnn's ActNorms and cpflow's flow ActNorms (`ActNorm`,
//! `ChannelActNorm`) all use them.
//!
//! In the layer's dtype the sums go wrong on data far from 0: an f32 running sum of 65,536
//! values near `1e4` reaches `6.6e8`, where an f32 ulp is 64, so each addition rounds by up to
//! 32 and the mean, then the centred squares, drift. Measured: cpflow's
//! `FlowConfig::tabular(6, 1, Icnn2 64×10)` initialised on 65,536 correlated rows of standard
//! deviation ≈ 1 around `1e4` normalised its data to |mean| up to 0.97σ and |std − 1| up to
//! 0.75, and lost 2.4 nats per row of mean log-density (−11.50 against −9.09 in f64), with no
//! error; an f32 `Icnn2` (4 → 16) on 65,536 rows around `1e4` got a first-ActNorm mean off by
//! 2.1, four times the unit's spread (icnn's `tests/integration/actnorm_f32_offset.rs`).
//! Here the values are read back once, converted to `f64` (exactly), and reduced in two
//! passes: the mean, then the mean of the centred squares (biased, as in the reference).
//! `f64` has 29 more bits than `f32`, so the same drift, `n·u·|offset|`, is below `1e-6` of a
//! unit spread for those batches.
//!
//! On `f64` data the results are those of candle's CPU reductions, bit for bit
//! (`x.mean_keepdim(0)`, then `(x − mean)².mean_keepdim(0)` and its `sqrt`): the same sums in
//! the same order (each column's values in row order, from 0), scaled the same way
//! (`sum · (1/n) + 0`, candle's `affine` of `mean_keepdim`). So f64 models initialise as
//! they did when the statistics were candle reductions.

use crate::error::{IcnnError, Result};

/// Per-feature (or per-channel) mean and biased standard deviation of a batch, in `f64`:
/// what [`feature_statistics`] and [`channel_statistics`] return.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStatistics {
    /// The mean of each feature (channel) over the batch.
    pub mean: Vec<f64>,
    /// The biased standard deviation `sqrt(mean((x − mean)²))` of each feature (channel).
    pub std: Vec<f64>,
}

/// `sum · (1/count) + 0`, as candle's `mean_keepdim` scales a sum (`affine(1/count, 0)`; the
/// `+ 0` turns a `−0` into `+0` as it does).
fn scaled_mean(sum: f64, count: usize) -> f64 {
    sum * (1.0 / count as f64) + 0.0
}

/// A [`IcnnError::Shape`] unless `len` values are a whole number `≥ 1` of groups of `group`
/// values (`group ≥ 1`); the number of groups. `what` names a group in the message.
fn group_count(len: usize, group: Option<usize>, what: &str) -> Result<usize> {
    match group {
        Some(g) if g > 0 && len > 0 && len.is_multiple_of(g) => Ok(len / g),
        Some(g) if g > 0 => Err(IcnnError::Shape(format!(
            "batch statistics of {len} values need a whole number (at least 1) of {what} of \
             {g} values"
        ))),
        _ => Err(IcnnError::Shape(format!(
            "batch statistics need {what} of at least 1 value"
        ))),
    }
}

/// Per-column mean and biased standard deviation of the row-major `(n, features)` batch
/// `rows`, accumulated in `f64` in two passes (the mean, then the centred squares), the sums
/// in row order (module docs: bit for bit candle's f64 `mean_keepdim(0)` and the biased
/// variance's `sqrt`, and exact to `f64` rounding for f32 data far from 0).
///
/// An empty batch, `features = 0`, or a length that is not a multiple of `features` is an
/// [`IcnnError::Shape`]. The values are not checked: a non-finite one gives non-finite
/// statistics in its column, and so does a variance beyond `f64` (a spread of about `1e154`).
///
/// ```
/// use icnn::feature_statistics;
/// # fn main() -> icnn::Result<()> {
/// // Three rows of two features, far from 0 in the second: nothing is lost to f32 sums.
/// let rows = [1.0, 10_000.0, 3.0, 10_001.0, 5.0, 10_002.0];
/// let stats = feature_statistics(&rows, 2)?;
/// assert_eq!(stats.mean, [3.0, 10_001.0]);
/// assert_eq!(stats.std, [(8.0f64 / 3.0).sqrt(), (2.0f64 / 3.0).sqrt()]);
/// assert!(feature_statistics(&rows, 4).is_err()); // not whole rows
/// # Ok(())
/// # }
/// ```
pub fn feature_statistics(rows: &[f64], features: usize) -> Result<BatchStatistics> {
    let n = group_count(rows.len(), Some(features), "rows")?;
    let mut sums = vec![0.0f64; features];
    for row in rows.chunks_exact(features) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s += *v;
        }
    }
    let mean: Vec<f64> = sums.iter().map(|s| scaled_mean(*s, n)).collect();
    let mut squares = vec![0.0f64; features];
    for row in rows.chunks_exact(features) {
        for ((s, v), m) in squares.iter_mut().zip(row).zip(&mean) {
            let c = v - m;
            *s += c * c;
        }
    }
    let std = squares.iter().map(|s| scaled_mean(*s, n).sqrt()).collect();
    Ok(BatchStatistics { mean, std })
}

/// Per-channel mean and biased standard deviation over the images and pixels of the
/// row-major `(b, channels, pixels)` batch `values`: each image's channel mean over its
/// pixels, then the mean of those over the images (every group has `pixels` entries, so the
/// mean of means is the mean), and likewise for the centred squares; in `f64`, in the order
/// of candle's `mean_keepdim(2)` then `mean_keepdim(0)` (bit for bit those on f64 data).
///
/// No image, `channels = 0`, `pixels = 0`, or a length that is not a multiple of
/// `channels·pixels` is an [`IcnnError::Shape`]; the values are not checked, as in
/// [`feature_statistics`].
///
/// ```
/// use icnn::channel_statistics;
/// # fn main() -> icnn::Result<()> {
/// // Two images of two channels of two pixels: channel 0 holds 0, 2 and 4, 6.
/// let values = [0.0, 2.0, 1e4, 1e4, 4.0, 6.0, 1e4, 1e4 + 4.0];
/// let stats = channel_statistics(&values, 2, 2)?;
/// assert_eq!(stats.mean, [3.0, 1e4 + 1.0]);
/// assert_eq!(stats.std, [5.0f64.sqrt(), 3.0f64.sqrt()]);
/// # Ok(())
/// # }
/// ```
pub fn channel_statistics(
    values: &[f64],
    channels: usize,
    pixels: usize,
) -> Result<BatchStatistics> {
    let images = group_count(values.len(), channels.checked_mul(pixels), "images")?;
    // `per_image(f)`: per channel, the mean over the images of the mean over the pixels of f.
    let per_image = |f: &dyn Fn(usize, f64) -> f64| -> Vec<f64> {
        let mut sums = vec![0.0f64; channels];
        for (k, pixels_of) in values.chunks_exact(pixels).enumerate() {
            let channel = k % channels;
            let mut s = 0.0f64;
            for v in pixels_of {
                s += f(channel, *v);
            }
            sums[channel] += scaled_mean(s, pixels);
        }
        sums.iter().map(|s| scaled_mean(*s, images)).collect()
    };
    let mean = per_image(&|_, v| v);
    let var = per_image(&|channel, v| {
        let centred = v - mean[channel];
        centred * centred
    });
    let std = var.iter().map(|v| v.sqrt()).collect();
    Ok(BatchStatistics { mean, std })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn host(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    /// Data of several scales and signs (−0 included), so that the sums round.
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| match i % 7 {
                0 => -0.0,
                1 => 1e4 + rng.random::<f64>(),
                _ => (rng.random::<f64>() - 0.5) * 10f64.powi((i % 5) as i32 - 2),
            })
            .collect()
    }

    fn bits(a: &[f64]) -> Vec<u64> {
        a.iter().map(|x| x.to_bits()).collect()
    }

    /// On f64 data the host statistics are those of candle's reductions (the code they
    /// replace), bit for bit, so f64 models initialise as before.
    #[test]
    fn f64_statistics_are_candles_bit_for_bit() {
        let dev = Device::Cpu;
        let (n, d) = (257, 5);
        let v = values(n * d, 1);
        let x = Tensor::from_vec(v.clone(), (n, d), &dev).unwrap();
        let mean = x.mean_keepdim(0).unwrap();
        let var = x
            .broadcast_sub(&mean)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_keepdim(0)
            .unwrap();
        let s = feature_statistics(&v, d).unwrap();
        assert_eq!(bits(&s.mean), bits(&host(&mean)));
        assert_eq!(bits(&s.std), bits(&host(&var.sqrt().unwrap())));
        // A strided view reduces in the same (logical) order: icnn's ActNorm takes any layout.
        let xt = Tensor::from_vec(v.clone(), (d, n), &dev)
            .unwrap()
            .t()
            .unwrap();
        let rows = host(&xt);
        let s = feature_statistics(&rows, d).unwrap();
        assert_eq!(bits(&s.mean), bits(&host(&xt.mean_keepdim(0).unwrap())));

        let (b, c, hw) = (9, 3, 35);
        let v = values(b * c * hw, 2);
        let x3 = Tensor::from_vec(v.clone(), (b, c, hw), &dev).unwrap();
        let mean = x3.mean_keepdim(2).unwrap().mean_keepdim(0).unwrap();
        let var = x3
            .broadcast_sub(&mean)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .mean_keepdim(0)
            .unwrap();
        let s = channel_statistics(&v, c, hw).unwrap();
        assert_eq!(bits(&s.mean), bits(&host(&mean)));
        assert_eq!(bits(&s.std), bits(&host(&var.sqrt().unwrap())));
    }

    /// f32 values around 1e4: the f64 statistics of the f32 values are exact to f64
    /// rounding, while candle's f32 reductions of the same values drift (the bug this module
    /// fixes; checked here so that the test data keep showing it).
    #[test]
    fn f32_data_far_from_zero_get_exact_statistics() {
        let dev = Device::Cpu;
        let (n, d) = (65_536, 2);
        let mut rng = StdRng::seed_from_u64(3);
        let v: Vec<f64> = (0..n * d)
            .map(|_| f64::from((1e4 + 2.0 * (rng.random::<f64>() - 0.5)) as f32))
            .collect();
        // Reference: centred on a shift of 1e4 (exact), so that its sums are small.
        let reference = |j: usize| {
            let col: Vec<f64> = v.iter().skip(j).step_by(d).map(|x| x - 1e4).collect();
            let m = col.iter().sum::<f64>() / n as f64;
            let var = col.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
            (m + 1e4, var.sqrt())
        };
        let s = feature_statistics(&v, d).unwrap();
        let x32 = Tensor::from_vec(v.clone(), (n, d), &dev)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let m32 = host(&x32.mean_keepdim(0).unwrap().to_dtype(DType::F64).unwrap());
        for (j, m32) in m32.iter().enumerate() {
            let (rm, rs) = reference(j);
            // f64 sums of 65,536 values near 1e4: error ≲ n·2⁻⁵³·1e4 ≈ 7e-8 on the mean.
            assert!((s.mean[j] - rm).abs() < 1e-7, "{j}: {} vs {rm}", s.mean[j]);
            assert!(
                (s.std[j] / rs - 1.0).abs() < 1e-7,
                "{j}: {} vs {rs}",
                s.std[j]
            );
            // candle's f32 mean of the same values is off by far more than f32 resolves
            // at 1e4 (an ulp: 1e-3), relative to the spread (≈ 0.58).
            assert!((m32 - rm).abs() > 1e-2, "{j}: f32 mean {m32} vs {rm}");
        }
    }

    /// Sizes that do not make a batch are errors, not panics or NaN statistics.
    #[test]
    fn batches_without_whole_rows_or_images_are_shape_errors() {
        let shape = |r: Result<BatchStatistics>| match r {
            Err(IcnnError::Shape(m)) => m,
            other => panic!("expected a shape error, got {other:?}"),
        };
        assert!(shape(feature_statistics(&[], 3)).contains("at least 1"));
        assert!(shape(feature_statistics(&[1.0, 2.0], 0)).contains("at least 1 value"));
        assert!(shape(feature_statistics(&[1.0; 5], 2)).contains("whole number"));
        assert!(shape(channel_statistics(&[], 2, 3)).contains("images"));
        assert!(shape(channel_statistics(&[1.0; 4], 2, 0)).contains("at least 1 value"));
        assert!(shape(channel_statistics(&[1.0; 4], usize::MAX, 2)).contains("at least 1"));
        assert!(shape(channel_statistics(&[1.0; 7], 2, 2)).contains("whole number"));
        // One row or one image is a batch (its std is 0).
        let s = feature_statistics(&[2.0, -1.0], 2).unwrap();
        assert_eq!((s.mean, s.std), (vec![2.0, -1.0], vec![0.0, 0.0]));
    }
}
