//! Per-system running mean and standard error over probes.

/// Accumulates one sample per system per round (Welford), keeping the samples for the rare
/// system whose squared deviations overflow (see [`PerSystemMean::finish`]).
#[derive(Clone, Debug)]
pub(crate) struct PerSystemMean {
    n: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
    /// `samples[round][system]`.
    samples: Vec<Vec<f64>>,
}

impl PerSystemMean {
    /// An empty accumulator for `systems` systems.
    pub fn new(systems: usize) -> Self {
        Self {
            n: 0,
            mean: vec![0.0; systems],
            m2: vec![0.0; systems],
            samples: Vec::new(),
        }
    }

    /// Adds one round of samples, one per system.
    pub fn push(&mut self, samples: &[f64]) {
        self.n += 1;
        let n = self.n as f64;
        for ((m, s), x) in self.mean.iter_mut().zip(self.m2.iter_mut()).zip(samples) {
            let delta = x - *m;
            *m += delta / n;
            *s += delta * (x - *m);
        }
        self.samples.push(samples.to_vec());
    }

    /// Means and standard errors of the mean (`NaN` with fewer than two samples).
    ///
    /// A system whose finite samples have deviations beyond `√f64::MAX ≈ 1.3e154` (e.g. the
    /// Hutchinson samples of an operator of norm 1e300) overflows Welford's sum of squares to
    /// `+∞`; its mean and standard error are then computed again from the samples divided by a
    /// power of two (exact) that brings the largest to `[1, 2)`, and multiplied back.
    pub fn finish(self) -> (Vec<f64>, Vec<f64>) {
        let n = self.n as f64;
        let mut mean = self.mean;
        let mut se: Vec<f64> = self
            .m2
            .iter()
            .map(|s| {
                if self.n >= 2 {
                    (s / (n - 1.0) / n).sqrt()
                } else {
                    f64::NAN
                }
            })
            .collect();
        for i in 0..mean.len() {
            if self.n < 2 || (mean[i].is_finite() && se[i].is_finite()) {
                continue;
            }
            let column: Vec<f64> = self.samples.iter().map(|round| round[i]).collect();
            if let Some((m, s)) = scaled_mean_and_std_err(&column) {
                mean[i] = m;
                se[i] = s;
            }
        }
        (mean, se)
    }
}

/// Mean and standard error of the mean of at least two finite `samples`, computed on the
/// samples times `2^-e` (exact) with `2^e` just above the largest magnitude, so no square
/// overflows; `None` when a sample is not finite (the plain result stands).
fn scaled_mean_and_std_err(samples: &[f64]) -> Option<(f64, f64)> {
    let largest = samples
        .iter()
        .try_fold(0.0f64, |m, x| x.is_finite().then_some(m.max(x.abs())))?;
    if largest == 0.0 {
        return Some((0.0, 0.0));
    }
    // `2^e ≥ largest`, e ≤ 1024: split in two factors so that each is representable.
    let e = largest.log2().floor() as i32 + 1;
    let (half, rest) = (e / 2, e - e / 2);
    let down = |x: f64| x * 2f64.powi(-half) * 2f64.powi(-rest);
    let up = |x: f64| x * 2f64.powi(half) * 2f64.powi(rest);
    let n = samples.len() as f64;
    let scaled: Vec<f64> = samples.iter().map(|x| down(*x)).collect();
    let mean = scaled.iter().sum::<f64>() / n;
    let m2: f64 = scaled.iter().map(|x| (x - mean).powi(2)).sum();
    Some((up(mean), up((m2 / (n - 1.0) / n).sqrt())))
}

#[cfg(test)]
mod tests {
    use super::PerSystemMean;

    /// Samples `c·(7 ± 2)` (the Rademacher samples of `c·[[4, 1], [1, 3]]`): mean `7c` and
    /// standard error `c·se₁` with `se₁` that of the unit samples, for `c = 1e300` as for
    /// `c = 1`. Scaling by a power of two is exact and `1e300` is not one, so the two agree to
    /// a few ulps of the sums (1e-14 relative).
    #[test]
    fn std_err_of_huge_samples_is_the_scaled_unit_one() {
        let unit = [9.0, 5.0, 5.0, 9.0, 9.0, 5.0, 9.0];
        let run = |c: f64| {
            let mut acc = PerSystemMean::new(1);
            for x in unit {
                acc.push(&[c * x]);
            }
            acc.finish()
        };
        let (m1, s1) = run(1.0);
        let (m, s) = run(1e300);
        assert!(s[0].is_finite(), "std_err {}", s[0]);
        assert!(
            (m[0] / 1e300 - m1[0]).abs() <= 1e-14 * m1[0],
            "{m:?} vs {m1:?}"
        );
        assert!(
            (s[0] / 1e300 - s1[0]).abs() <= 1e-14 * s1[0],
            "{s:?} vs {s1:?}"
        );
        // Closed form: 4 nines and 3 fives.
        let mean = (4.0 * 9.0 + 3.0 * 5.0) / 7.0;
        let var = (4.0 * (9.0f64 - mean).powi(2) + 3.0 * (5.0f64 - mean).powi(2)) / 6.0;
        assert!((s1[0] - (var / 7.0).sqrt()).abs() <= 1e-14);
    }
}
