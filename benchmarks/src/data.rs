//! Synthetic tabular data: a standardised mixture of full-covariance Gaussians.

use rand::Rng;
use rand_distr::StandardNormal;

/// `n` points of a mixture of `components` full-covariance Gaussians in `d` dimensions,
/// standardised per feature (mean 0, variance 1), row-major `(n, d)`.
///
/// Component means are `N(0, 4 I)`, covariances `A Aᵀ / d + 0.1 I` with `A` standard normal —
/// the "8 full-covariance components, standardised" data of the reference measurements
/// (`docs/reference/baseline-cpu.md`).
///
/// ```
/// use rand::SeedableRng;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let x = benchmarks::gaussian_mixture(100, 3, 8, &mut rng);
/// assert_eq!(x.len(), 300);
/// let mean0: f64 = (0..100).map(|i| x[i * 3]).sum::<f64>() / 100.0;
/// assert!(mean0.abs() < 1e-9);
/// ```
pub fn gaussian_mixture<R: Rng + ?Sized>(
    n: usize,
    d: usize,
    components: usize,
    rng: &mut R,
) -> Vec<f64> {
    let components = components.max(1);
    let mut means = Vec::with_capacity(components);
    let mut factors = Vec::with_capacity(components);
    for _ in 0..components {
        let m: Vec<f64> = (0..d)
            .map(|_| 2.0 * rng.sample::<f64, _>(StandardNormal))
            .collect();
        means.push(m);
        // Cholesky-like factor L of A Aᵀ/d + 0.1 I is not needed: sampling x = m + A g / √d + √0.1 h
        // has exactly that covariance.
        let a: Vec<f64> = (0..d * d)
            .map(|_| rng.sample::<f64, _>(StandardNormal) / (d as f64).sqrt())
            .collect();
        factors.push(a);
    }
    let mut x = vec![0.0; n * d];
    for i in 0..n {
        let c = rng.random_range(0..components);
        let g: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
        for r in 0..d {
            let mut v = means[c][r] + 0.1f64.sqrt() * rng.sample::<f64, _>(StandardNormal);
            for (k, gk) in g.iter().enumerate() {
                v += factors[c][r * d + k] * gk;
            }
            x[i * d + r] = v;
        }
    }
    for r in 0..d {
        let mean = (0..n).map(|i| x[i * d + r]).sum::<f64>() / n as f64;
        let var = (0..n).map(|i| (x[i * d + r] - mean).powi(2)).sum::<f64>() / n as f64;
        let sd = var.sqrt().max(1e-12);
        for i in 0..n {
            x[i * d + r] = (x[i * d + r] - mean) / sd;
        }
    }
    x
}
