//! Per-system running mean and standard error over probes.

/// Accumulates one sample per system per round (Welford).
#[derive(Clone, Debug)]
pub(crate) struct PerSystemMean {
    n: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl PerSystemMean {
    /// An empty accumulator for `systems` systems.
    pub fn new(systems: usize) -> Self {
        Self {
            n: 0,
            mean: vec![0.0; systems],
            m2: vec![0.0; systems],
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
    }

    /// Means and standard errors of the mean (`NaN` with fewer than two samples).
    pub fn finish(self) -> (Vec<f64>, Vec<f64>) {
        let n = self.n as f64;
        let se = self
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
        (self.mean, se)
    }
}
