//! The toy densities of the CP-Flow repository (`data/toy_data.py`), reproduced with a seeded
//! Rust RNG. The constants are the reference ones (including the `/1.414` of EightGaussian).

use super::Point2;
use rand::Rng;
use rand::seq::SliceRandom;
use rand_distr::StandardNormal;
use std::f64::consts::{FRAC_1_SQRT_2, LN_2, PI};

/// The reference divides EightGaussian by `1.414` (not `√2`); kept for fidelity.
const EIGHT_GAUSSIANS_DIVISOR: f64 = 1.414;
/// Radius of the EightGaussian centres before the division.
const EIGHT_GAUSSIANS_SCALE: f64 = 4.0;
/// Standard deviation of each EightGaussian component before the division.
const EIGHT_GAUSSIANS_STD: f64 = 0.5;

fn normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    rng.sample(StandardNormal)
}

/// The eight unit directions of the reference, in its order.
fn eight_directions() -> [Point2; 8] {
    let s = FRAC_1_SQRT_2;
    [
        [1.0, 0.0],
        [-1.0, 0.0],
        [0.0, 1.0],
        [0.0, -1.0],
        [s, s],
        [s, -s],
        [-s, s],
        [-s, -s],
    ]
}

/// Draws `n` EightGaussian points together with their component index (0..8, reference order).
///
/// ```
/// use cpflow::rand::SeedableRng;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let (x, k) = cpflow::toy::sample_eight_gaussians_with_labels(500, &mut rng);
/// assert_eq!((x.len(), k.len()), (500, 500));
/// // Component 0 is centred at (4, 0)/1.414 with std 0.354: its points lie right of 0.8.
/// assert!(x.iter().zip(&k).filter(|(_, k)| **k == 0).all(|(p, _)| p[0] > 0.8));
/// assert!(k.iter().all(|&k| k < 8));
/// ```
pub fn sample_eight_gaussians_with_labels<R: Rng + ?Sized>(
    n: usize,
    rng: &mut R,
) -> (Vec<Point2>, Vec<usize>) {
    let dirs = eight_directions();
    let mut pts = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let e0 = normal(rng) * EIGHT_GAUSSIANS_STD;
        let e1 = normal(rng) * EIGHT_GAUSSIANS_STD;
        let k = rng.random_range(0..8);
        let c = dirs[k];
        pts.push([
            (EIGHT_GAUSSIANS_SCALE * c[0] + e0) / EIGHT_GAUSSIANS_DIVISOR,
            (EIGHT_GAUSSIANS_SCALE * c[1] + e1) / EIGHT_GAUSSIANS_DIVISOR,
        ]);
        labels.push(k);
    }
    (pts, labels)
}

/// EightGaussian: centres `4·(±1,0), 4·(0,±1), 4·(±1/√2, ±1/√2)`, noise `N(0, 0.5²)`, all
/// divided by 1.414 (radius ≈ 2.83, component std ≈ 0.354).
///
/// ```
/// use cpflow::rand::SeedableRng;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = cpflow::toy::sample_eight_gaussians(4000, &mut rng);
/// // E‖x‖² = R² + 2s² with R = 4/1.414, s = 0.5/1.414 (standard error ≈ 0.03).
/// let m2 = x.iter().map(|p| p[0] * p[0] + p[1] * p[1]).sum::<f64>() / 4000.0;
/// let (r, s) = (4.0 / 1.414, 0.5 / 1.414);
/// assert!((m2 - (r * r + 2.0 * s * s)).abs() < 0.15, "{m2}");
/// ```
pub fn sample_eight_gaussians<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<Point2> {
    sample_eight_gaussians_with_labels(n, rng).0
}

/// Exact log-density of the EightGaussian mixture (equal weights).
///
/// ```
/// use cpflow::toy::eight_gaussians_log_density as log_p;
/// // At a centre the other seven components add under 1e-7: log(1/8 · 1/(2πs²)).
/// let (r, s) = (4.0 / 1.414, 0.5 / 1.414);
/// let want = -(8.0 * 2.0 * std::f64::consts::PI * s * s).ln();
/// assert!((log_p([r, 0.0]) - want).abs() < 1e-6);
/// // The mixture is symmetric under x ↦ −x and (x, y) ↦ (y, x).
/// assert!((log_p([0.3, 1.1]) - log_p([-0.3, -1.1])).abs() < 1e-12);
/// assert!((log_p([0.3, 1.1]) - log_p([1.1, 0.3])).abs() < 1e-12);
/// ```
pub fn eight_gaussians_log_density(x: Point2) -> f64 {
    let s = EIGHT_GAUSSIANS_STD / EIGHT_GAUSSIANS_DIVISOR;
    let r = EIGHT_GAUSSIANS_SCALE / EIGHT_GAUSSIANS_DIVISOR;
    let log_norm = -(2.0 * PI * s * s).ln() - 8f64.ln();
    let terms: Vec<f64> = eight_directions()
        .iter()
        .map(|c| {
            let d0 = x[0] - r * c[0];
            let d1 = x[1] - r * c[1];
            log_norm - (d0 * d0 + d1 * d1) / (2.0 * s * s)
        })
        .collect();
    log_sum_exp(&terms)
}

/// Numerically stable `log Σ exp(tᵢ)`.
pub(crate) fn log_sum_exp(terms: &[f64]) -> f64 {
    let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln()
}

/// SwissRoll: sklearn `make_swiss_roll(n, noise=0.5)` (`t = 1.5π(1 + 2U)`,
/// `(t cos t, 21U, t sin t) + 0.5·N(0, I₃)`), columns (0, 2), divided by 5.
///
/// ```
/// use cpflow::rand::SeedableRng;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = cpflow::toy::sample_swiss_roll(1000, &mut rng);
/// // The roll's radius t runs over [1.5π, 4.5π], divided by 5: |x| ≤ 4.5π/5 + noise.
/// let r: Vec<f64> = x.iter().map(|p| p[0].hypot(p[1])).collect();
/// assert!(r.iter().all(|&r| r < 4.5 * std::f64::consts::PI / 5.0 + 0.6));
/// assert_eq!(x, cpflow::toy::sample_swiss_roll(1000, &mut cpflow::rand::rngs::StdRng::seed_from_u64(0)));
/// ```
pub fn sample_swiss_roll<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<Point2> {
    const NOISE: f64 = 0.5;
    (0..n)
        .map(|_| {
            let t = 1.5 * PI * (1.0 + 2.0 * rng.random::<f64>());
            // The discarded height coordinate (21·U) and its noise are still drawn so the
            // stream of random numbers has the reference's shape.
            let _height = 21.0 * rng.random::<f64>();
            let e0 = normal(rng);
            let _e1 = normal(rng);
            let e2 = normal(rng);
            [
                (t * t.cos() + NOISE * e0) / 5.0,
                (t * t.sin() + NOISE * e2) / 5.0,
            ]
        })
        .collect()
}

/// TwoSpirals (the BNAF generator): `r = √U · 3π`, arm `(−cos r · r + U/2, sin r · r + U/2)`
/// and its mirror image, divided by 3, plus `N(0, 0.1²)`. The first ⌈n/2⌉ points go on the
/// first arm; the result is shuffled.
///
/// ```
/// use cpflow::rand::SeedableRng;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = cpflow::toy::sample_two_spirals(1000, &mut rng);
/// assert_eq!(x.len(), 1000);
/// // The two arms are mirror images: the sample mean is near the origin (arm means ≈ ±1/12).
/// let m = cpflow::toy::mean_point(&x);
/// assert!(m[0].abs() < 0.2 && m[1].abs() < 0.2, "{m:?}");
/// ```
pub fn sample_two_spirals<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<Point2> {
    let first = n.div_ceil(2);
    let mut pts: Vec<Point2> = (0..n)
        .map(|i| {
            let r = rng.random::<f64>().sqrt() * 540.0 * (2.0 * PI) / 360.0;
            let dx = -r.cos() * r + rng.random::<f64>() * 0.5;
            let dy = r.sin() * r + rng.random::<f64>() * 0.5;
            let sign = if i < first { 1.0 } else { -1.0 };
            [
                sign * dx / 3.0 + 0.1 * normal(rng),
                sign * dy / 3.0 + 0.1 * normal(rng),
            ]
        })
        .collect();
    pts.shuffle(rng);
    pts
}

/// `k` evenly spaced angles in `[0, 2π)` (numpy `linspace(0, 2π, k, endpoint=False)`).
fn angles_without_endpoint(k: usize) -> impl Iterator<Item = f64> {
    (0..k).map(move |i| 2.0 * PI * i as f64 / k as f64)
}

/// Rings: four concentric circles of radii `{1, 0.75, 0.5, 0.25}·3` with `n/4` evenly spaced
/// points each (the innermost takes the remainder), shuffled, plus `N(0, 0.08²)`.
///
/// ```
/// use cpflow::rand::SeedableRng;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = cpflow::toy::sample_rings(400, &mut rng);
/// // Every point is within 0.4 (5 noise standard deviations) of a ring of radius 3, 2.25,
/// // 1.5 or 0.75, and each ring gets 100 points.
/// let ring = |p: &[f64; 2]| ((p[0].hypot(p[1]) / 0.75).round() as usize).clamp(1, 4);
/// assert!(x.iter().all(|p| (p[0].hypot(p[1]) - 0.75 * ring(p) as f64).abs() < 0.4));
/// assert_eq!(x.iter().filter(|p| ring(p) == 4).count(), 100);
/// ```
pub fn sample_rings<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<Point2> {
    let q = n / 4;
    let counts = [q, q, q, n - 3 * q];
    let radii = [1.0, 0.75, 0.5, 0.25];
    let mut pts = Vec::with_capacity(n);
    for (k, r) in counts.iter().zip(radii) {
        pts.extend(angles_without_endpoint(*k).map(|a| [3.0 * r * a.cos(), 3.0 * r * a.sin()]));
    }
    pts.shuffle(rng);
    for p in &mut pts {
        p[0] += 0.08 * normal(rng);
        p[1] += 0.08 * normal(rng);
    }
    pts
}

/// MAFMoon: `x ~ N(0, I)`, then `x₀ ← (x₀ + x₁²)/2 − 2`.
///
/// ```
/// use cpflow::rand::SeedableRng;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = cpflow::toy::sample_maf_moon(4000, &mut rng);
/// // E[y₀] = (E[x₀] + E[x₁²])/2 − 2 = −1.5 (standard error ≈ 0.011).
/// let m = cpflow::toy::mean_point(&x);
/// assert!((m[0] + 1.5).abs() < 0.05 && m[1].abs() < 0.08, "{m:?}");
/// ```
pub fn sample_maf_moon<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<Point2> {
    (0..n)
        .map(|_| {
            let x0 = normal(rng);
            let x1 = normal(rng);
            [(x0 + x1 * x1) / 2.0 - 2.0, x1]
        })
        .collect()
}

/// Exact log-density of MAFMoon: `y = ((x₀ + x₁²)/2 − 2, x₁)` has inverse
/// `x₀ = 2(y₀ + 2) − y₁²` and Jacobian determinant `1/2`, so
/// `log p(y) = log N(x₀) + log N(y₁) + log 2`.
///
/// ```
/// use cpflow::toy::maf_moon_log_density;
/// use std::f64::consts::{LN_2, PI};
/// // y = (−2, 0) comes from x = (0, 0): log N(0) + log N(0) + log 2.
/// assert!((maf_moon_log_density([-2.0, 0.0]) - (LN_2 - (2.0 * PI).ln())).abs() < 1e-12);
/// // A Riemann sum over [−6, 6]² (cell 0.05) integrates to 1.
/// let h = 0.05;
/// let mass: f64 = (0..240)
///     .flat_map(|i| (0..240).map(move |j| [i, j]))
///     .map(|[i, j]| [-6.0 + (i as f64 + 0.5) * h, -6.0 + (j as f64 + 0.5) * h])
///     .map(|p| maf_moon_log_density(p).exp() * h * h)
///     .sum();
/// assert!((mass - 1.0).abs() < 1e-3, "{mass}");
/// ```
pub fn maf_moon_log_density(y: Point2) -> f64 {
    let x0 = 2.0 * (y[0] + 2.0) - y[1] * y[1];
    -(2.0 * PI).ln() - 0.5 * (x0 * x0 + y[1] * y[1]) + LN_2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toy::integrate_log_density as integrate;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn eight_gaussians_second_moment_matches_closed_form() {
        let mut rng = StdRng::seed_from_u64(0);
        let n = 100_000;
        let x = sample_eight_gaussians(n, &mut rng);
        let r = 4.0 / 1.414;
        let s = 0.5 / 1.414;
        // E‖x‖² = R² + 2s² exactly (isotropic noise around centres at radius R).
        let expected = r * r + 2.0 * s * s;
        let m2 = x.iter().map(|p| p[0] * p[0] + p[1] * p[1]).sum::<f64>() / n as f64;
        // Var‖x‖² ≈ 4R²s² + 2s⁴·2 ≈ 4.0, so the standard error is ≈ 0.0063: 0.03 is ~5 SE.
        assert!((m2 - expected).abs() < 0.03, "{m2} vs {expected}");
        // Labels: each component gets ≈ 1/8 of the points (SE ≈ 0.001).
        let (_, labels) = sample_eight_gaussians_with_labels(n, &mut rng);
        for k in 0..8 {
            let f = labels.iter().filter(|&&l| l == k).count() as f64 / n as f64;
            assert!((f - 0.125).abs() < 0.006, "component {k}: {f}");
        }
    }

    #[test]
    fn eight_gaussians_density_integrates_to_one_and_matches_samples() {
        // Step 0.02 against a component std of 0.354: the midpoint rule is accurate to ≪1e-4.
        let z = integrate(eight_gaussians_log_density, (-5.0, 5.0), (-5.0, 5.0), 0.02);
        assert!((z - 1.0).abs() < 1e-4, "{z}");
        // Cross-entropy of the samples equals the entropy: E[-log p] for a mixture of
        // well-separated components ≈ log 8 + log(2πe s²).
        let s = 0.5 / 1.414;
        let h = 8f64.ln() + (2.0 * PI * std::f64::consts::E * s * s).ln();
        let mut rng = StdRng::seed_from_u64(1);
        let x = sample_eight_gaussians(50_000, &mut rng);
        let nll = -x
            .iter()
            .map(|p| eight_gaussians_log_density(*p))
            .sum::<f64>()
            / 5e4;
        // SE of the mean of -log p is ≈ 1/√(2·5e4) ≈ 0.003 (χ² with 2 dof / 2); 0.02 is ~6 SE.
        assert!((nll - h).abs() < 0.02, "{nll} vs {h}");
    }

    #[test]
    fn maf_moon_moments_and_density() {
        let mut rng = StdRng::seed_from_u64(2);
        let n = 100_000;
        let x = sample_maf_moon(n, &mut rng);
        let m0 = x.iter().map(|p| p[0]).sum::<f64>() / n as f64;
        let v0 = x.iter().map(|p| (p[0] - m0).powi(2)).sum::<f64>() / n as f64;
        // E y₀ = (0 + 1)/2 − 2 = −1.5;  Var y₀ = (1 + Var x₁²)/4 = (1 + 2)/4 = 0.75.
        // SE(mean) ≈ 0.0027, SE(var) ≈ 0.006 (heavy-ish tail of x₁⁴): tolerances ≈ 5 SE.
        assert!((m0 + 1.5).abs() < 0.015, "{m0}");
        assert!((v0 - 0.75).abs() < 0.04, "{v0}");
        let z = integrate(maf_moon_log_density, (-5.0, 12.0), (-5.5, 5.5), 0.02);
        assert!((z - 1.0).abs() < 1e-4, "{z}");
    }

    #[test]
    fn swiss_roll_rings_spirals_geometry() {
        let mut rng = StdRng::seed_from_u64(4);
        // Swiss roll: the noise-free radius t/5 lies in [0.3π, 0.9π]; with 0.1 noise per axis
        // nearly every point stays within [0.3π − 0.5, 0.9π + 0.5].
        let sr = sample_swiss_roll(5000, &mut rng);
        let radii: Vec<f64> = sr.iter().map(|p| p[0].hypot(p[1])).collect();
        assert!(
            radii
                .iter()
                .all(|r| *r > 0.3 * PI - 0.5 && *r < 0.9 * PI + 0.5)
        );
        // Rings: the radii cluster at 3, 2.25, 1.5, 0.75 (noise 0.08).
        let rings = sample_rings(4000, &mut rng);
        for p in &rings {
            let r = p[0].hypot(p[1]);
            let nearest = [3.0, 2.25, 1.5, 0.75]
                .iter()
                .map(|c| (r - c).abs())
                .fold(f64::INFINITY, f64::min);
            assert!(nearest < 0.5, "ring radius {r}");
        }
        // Two spirals: point-symmetric, so the mean is ≈ 0 (first and second halves mirror).
        let sp = sample_two_spirals(20_000, &mut rng);
        let m = super::super::mean_point(&sp);
        // Per-axis std ≈ 1.2, SE ≈ 0.009; the U/2 jitter mirrors too. 0.05 is ~5 SE.
        assert!(m[0].abs() < 0.05 && m[1].abs() < 0.05, "{m:?}");
    }

    #[test]
    fn log_sum_exp_is_stable() {
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + LN_2)).abs() < 1e-12);
        assert_eq!(log_sum_exp(&[f64::NEG_INFINITY]), f64::NEG_INFINITY);
    }
}
