//! Small timing helpers for the harness binaries.

use std::time::Instant;

/// Median of a non-empty sample (NaN for an empty one).
///
/// ```
/// assert_eq!(benchmarks::median(&[3.0, 1.0, 2.0]), 2.0);
/// assert_eq!(benchmarks::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
/// ```
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Wall-clock stopwatch returning seconds.
///
/// ```
/// let sw = benchmarks::Stopwatch::start();
/// assert!(sw.seconds() >= 0.0);
/// ```
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// Start now.
    pub fn start() -> Self {
        Stopwatch(Instant::now())
    }

    /// Seconds since start.
    pub fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}
