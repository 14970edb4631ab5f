//! The statistics of ActNorm's data-dependent initialisation, accumulated on the host in
//! `f64` whatever the layer's dtype.
//!
//! In the layer's dtype the sums go wrong on data far from 0: an f32 running sum of 65,536
//! values near `1e4` reaches `6.6e8`, where an f32 ulp is 64, so each addition rounds by up to
//! 32 and the mean, then the centred squares, drift. Measured (the f32 precision audit:
//! `FlowConfig::tabular(6, 1, Icnn2 64×10)` initialised on 65,536 correlated rows of standard
//! deviation ≈ 1 around `1e4`): the normalised data had |mean| up to 0.97σ and |std − 1| up to
//! 0.75, and the mean log-density lost 2.4 nats per row (−11.50 against −9.09 in f64; around
//! `1e5`: −28.6), with no error. Here the values are read back once, converted to `f64`
//! (exactly), and reduced in two passes: the mean, then the mean of the centred squares
//! (biased, as in the reference). `f64` has 29 more bits than `f32`, so the same drift,
//! `n·u·|offset|`, is below `1e-6` of a unit spread for those batches.
//!
//! On `f64` data the results are those candle's CPU reductions gave, bit for bit: the same
//! sums in the same order (each column's values in row order, from 0), scaled the same way
//! (`sum · (1/n) + 0`, candle's `affine` of `mean_keepdim`).

/// `sum · (1/count) + 0`, as candle's `mean_keepdim` scales a sum (`affine(1/count, 0)`; the
/// `+ 0` turns a `−0` into `+0` as it does).
fn scaled_mean(sum: f64, count: usize) -> f64 {
    sum * (1.0 / count as f64) + 0.0
}

/// Per-column mean and biased standard deviation of the row-major `(n, d)` batch `rows`
/// (`n ≥ 1`): two passes in `f64`, the sums in row order.
pub(crate) fn feature_statistics(rows: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() / d.max(1);
    let mut sums = vec![0.0f64; d];
    for row in rows.chunks_exact(d) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s += *v;
        }
    }
    let mean: Vec<f64> = sums.iter().map(|s| scaled_mean(*s, n)).collect();
    let mut squares = vec![0.0f64; d];
    for row in rows.chunks_exact(d) {
        for ((s, v), m) in squares.iter_mut().zip(row).zip(&mean) {
            let c = v - m;
            *s += c * c;
        }
    }
    let std = squares.iter().map(|s| scaled_mean(*s, n).sqrt()).collect();
    (mean, std)
}

/// Per-channel mean and biased standard deviation over the images and pixels of the
/// row-major `(b, c, pixels)` batch `values` (`b, pixels ≥ 1`): each image's channel mean over
/// its pixels, then the mean of those over the images (every group has `pixels` entries, so
/// the mean of means is the mean), and likewise for the centred squares; in `f64`, the order
/// of candle's `mean_keepdim(2)` then `mean_keepdim(0)`.
pub(crate) fn channel_statistics(values: &[f64], c: usize, pixels: usize) -> (Vec<f64>, Vec<f64>) {
    let group = pixels.max(1);
    let images = values.len() / (c * group).max(1);
    // `per_image(f)`: per channel, the mean over the images of the mean over the pixels of f.
    let per_image = |f: &dyn Fn(usize, f64) -> f64| -> Vec<f64> {
        let mut sums = vec![0.0f64; c];
        for (k, pixels_of) in values.chunks_exact(group).enumerate() {
            let channel = k % c.max(1);
            let mut s = 0.0f64;
            for v in pixels_of {
                s += f(channel, *v);
            }
            sums[channel] += scaled_mean(s, group);
        }
        sums.iter().map(|s| scaled_mean(*s, images)).collect()
    };
    let mean = per_image(&|_, v| v);
    let var = per_image(&|channel, v| {
        let centred = v - mean[channel];
        centred * centred
    });
    (mean, var.iter().map(|v| v.sqrt()).collect())
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
        let (m, s) = feature_statistics(&v, d);
        let bits = |a: &[f64]| a.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&m), bits(&host(&mean)));
        assert_eq!(bits(&s), bits(&host(&var.sqrt().unwrap())));

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
        let (m, s) = channel_statistics(&v, c, hw);
        assert_eq!(bits(&m), bits(&host(&mean)));
        assert_eq!(bits(&s), bits(&host(&var.sqrt().unwrap())));
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
        // Reference: compensated-free exact enough, centred on a shift of 1e4 (exact).
        let reference = |j: usize| {
            let col: Vec<f64> = v.iter().skip(j).step_by(d).map(|x| x - 1e4).collect();
            let m = col.iter().sum::<f64>() / n as f64;
            let var = col.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
            (m + 1e4, var.sqrt())
        };
        let (m, s) = feature_statistics(&v, d);
        let x32 = Tensor::from_vec(v.clone(), (n, d), &dev)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let m32 = host(&x32.mean_keepdim(0).unwrap().to_dtype(DType::F64).unwrap());
        for j in 0..d {
            let (rm, rs) = reference(j);
            // f64 sums of 65,536 values near 1e4: error ≲ n·2⁻⁵³·1e4 ≈ 7e-8 on the mean.
            assert!((m[j] - rm).abs() < 1e-7, "{j}: {} vs {rm}", m[j]);
            assert!((s[j] / rs - 1.0).abs() < 1e-7, "{j}: {} vs {rs}", s[j]);
            // candle's f32 mean of the same values is off by far more than f32 resolves
            // at 1e4 (an ulp: 1e-3), relative to the spread (≈ 0.58).
            assert!(
                (m32[j] - rm).abs() > 1e-2,
                "{j}: f32 mean {} vs {rm}",
                m32[j]
            );
        }
    }
}
