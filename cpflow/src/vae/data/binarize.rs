//! Stochastic binarisation of grey images.
//!
//! * Once, at load time, for the validation and test sets of the dynamically binarised
//!   datasets: the reference does `np.random.seed(777); x_val = np.random.binomial(1, x_val);
//!   x_test = np.random.binomial(1, x_test)` (`load_omniglot`, `docs/reference/images-vae.md`
//!   §3.2). [`numpy_binarize`] reproduces numpy's legacy `RandomState.binomial(1, p)` bit
//!   for bit (the inversion algorithm of numpy's `legacy-distributions.c`, one or more
//!   53-bit doubles per pixel, zero-probability pixels included).
//! * On every training batch: a pixel with grey level `g ∈ 0..=255` becomes 1 with
//!   probability `g/255` ([`bernoulli_grey`], the analogue of `torch.bernoulli`).

use rand::Rng;

use crate::datasets::NumpyRandomState;

/// numpy's cached state of the binomial inversion sampler (`binomial_t`), for `n = 1`.
#[derive(Debug, Clone, Copy)]
struct InversionCache {
    p: f64,
    q: f64,
    qn: f64,
}

impl InversionCache {
    fn new() -> Self {
        Self {
            p: f64::NAN,
            q: 0.0,
            qn: 0.0,
        }
    }

    /// `random_binomial_inversion(n = 1, p)` of numpy's legacy distributions.
    fn inversion(&mut self, rng: &mut NumpyRandomState, p: f64) -> u8 {
        if self.p.to_bits() != p.to_bits() {
            self.p = p;
            self.q = 1.0 - p;
            // qn = exp(n·log(q)) with n = 1.
            self.qn = self.q.ln().exp();
        }
        let (q, qn) = (self.q, self.qn);
        // bound = min(n, np + 10·sqrt(np·q + 1)) = 1 for n = 1.
        let mut x = 0u8;
        let mut px = qn;
        let mut u = rng.random_sample();
        while u > px {
            x += 1;
            if x > 1 {
                x = 0;
                px = qn;
                u = rng.random_sample();
            } else {
                u -= px;
                // ((n − X + 1)·p·px) / (X·q) with n = X = 1.
                px = (p * px) / q;
            }
        }
        x
    }

    /// `legacy_random_binomial(p, n = 1)`: inversion on `min(p, 1 − p)`.
    fn binomial(&mut self, rng: &mut NumpyRandomState, p: f64) -> u8 {
        if p <= 0.5 {
            self.inversion(rng, p)
        } else {
            1 - self.inversion(rng, 1.0 - p)
        }
    }
}

/// `np.random.binomial(1, probs)` on numpy's legacy global/`RandomState` generator `rng`:
/// one 0/1 value per probability, drawn in order (numpy iterates in C order). Each
/// probability is used as `f64` (numpy converts a `float32` array to `float64`).
///
/// Probabilities must lie in `[0, 1]` (NaN included in neither); callers check this.
///
/// ```
/// use cpflow::datasets::NumpyRandomState;
/// use cpflow::vae::numpy_binarize;
/// // np.random.seed(777); np.random.binomial(1, [0.0, 1.0, 0.5, 0.3, 0.7])
/// let bits = numpy_binarize(&mut NumpyRandomState::new(777), &[0.0f32, 1.0, 0.5, 0.3, 0.7]);
/// assert_eq!(bits, vec![0, 1, 0, 0, 0]);
/// ```
pub fn numpy_binarize(rng: &mut NumpyRandomState, probs: &[f32]) -> Vec<u8> {
    let mut cache = InversionCache::new();
    probs
        .iter()
        .map(|&p| cache.binomial(rng, f64::from(p)))
        .collect()
}

/// One Bernoulli draw with probability exactly `grey / 255` (up to 2⁻³² from one 32-bit
/// draw): `u·255 < grey·2³²` for `u` uniform on `0..2³²`.
pub(crate) fn bernoulli_grey<R: Rng + ?Sized>(rng: &mut R, grey: u8) -> bool {
    u64::from(rng.next_u32()) * 255 < u64::from(grey) << 32
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    /// Produced with numpy 2.4.6:
    /// `p = np.array([0.0, 1.0, 0.5, 0.3, 0.7, 1e-9, 0.999999, 0.25, 0.75, 0.0, 0.0, 1.0,
    /// 0.1, 0.9, 0.6, 0.4] * 4); np.random.seed(777); np.random.binomial(1, p).tolist()`,
    /// then `np.random.random_sample()` (which shows that exactly one double was drawn per
    /// probability, zero and one included).
    #[test]
    fn binomial_matches_numpy_legacy() {
        let base = [
            0.0, 1.0, 0.5, 0.3, 0.7, 1e-9, 0.999999, 0.25, 0.75, 0.0, 0.0, 1.0, 0.1, 0.9, 0.6, 0.4,
        ];
        let p: Vec<f64> = (0..4).flat_map(|_| base).collect();
        let want: [u8; 64] = [
            0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0,
            1, 1, 0, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0,
            0, 1, 0, 1, 1, 0,
        ];
        let mut rng = NumpyRandomState::new(777);
        let mut cache = InversionCache::new();
        let got: Vec<u8> = p.iter().map(|&p| cache.binomial(&mut rng, p)).collect();
        assert_eq!(got, want);
        assert_eq!(rng.random_sample(), 0.09702690259622726);
    }

    /// `np.random.seed(777); b = np.random.binomial(1, (np.arange(256, dtype=np.uint8)
    /// .astype(np.float32) / 255.).reshape(16, 16))`: `b.sum() == 137`, the first nonzero
    /// flat indices, and the next `random_sample()` (numpy 2.4.6). Exercises `float32`
    /// probabilities (`k/255` rounded to `f32`, then widened), as the MNIST loader uses.
    #[test]
    fn binarize_f32_grey_levels_matches_numpy() {
        let p: Vec<f32> = (0..=255u8).map(|k| f32::from(k) / 255.0).collect();
        let mut rng = NumpyRandomState::new(777);
        let b = numpy_binarize(&mut rng, &p);
        assert_eq!(b.iter().map(|&x| usize::from(x)).sum::<usize>(), 137);
        let nz: Vec<usize> = (0..256).filter(|&i| b[i] == 1).take(20).collect();
        assert_eq!(
            nz,
            [
                14, 37, 57, 66, 68, 71, 73, 75, 78, 79, 86, 87, 91, 92, 93, 95, 96, 98, 100, 101
            ]
        );
        assert_eq!(rng.random_sample(), 0.31245389187444617);
    }

    #[test]
    fn bernoulli_grey_extremes_and_rate() {
        let mut rng = StdRng::seed_from_u64(3);
        assert!((0..1000).all(|_| !bernoulli_grey(&mut rng, 0)));
        assert!((0..1000).all(|_| bernoulli_grey(&mut rng, 255)));
        // 200,000 draws at p = 51/255 = 0.2: standard error sqrt(0.16/2e5) ≈ 9e-4, so 5e-3
        // is more than 5 standard errors.
        let n = 200_000;
        let hits = (0..n).filter(|_| bernoulli_grey(&mut rng, 51)).count();
        assert!((hits as f64 / n as f64 - 0.2).abs() < 5e-3, "{hits}");
    }
}
