//! FFJORD-style toy densities (`lib/toy_data.py` of FFJORD, built on sklearn's `make_moons`
//! and `make_circles`), reproduced with a seeded Rust RNG.

use super::Point2;
use rand::Rng;
use rand::seq::SliceRandom;
use rand_distr::StandardNormal;
use std::f64::consts::PI;

fn normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    rng.sample(StandardNormal)
}

/// `k` points of numpy `linspace(a, b, k)` (endpoint included).
fn linspace(a: f64, b: f64, k: usize) -> impl Iterator<Item = f64> {
    let step = if k > 1 { (b - a) / (k - 1) as f64 } else { 0.0 };
    (0..k).map(move |i| a + step * i as f64)
}

/// Moons: sklearn `make_moons(n, noise=0.1)` (upper half circle and the shifted lower one,
/// ⌊n/2⌋ and ⌈n/2⌉ evenly spaced points, shuffled, plus `N(0, 0.1²)`), then `2x + (−1, −0.2)`.
///
/// ```
/// use cpflow::rand::SeedableRng;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = cpflow::toy::sample_moons(1000, &mut rng);
/// assert_eq!(x.len(), 1000);
/// // Without noise the moons span x ∈ [−3, 3], y ∈ [−1.2, 1.8] after 2x + (−1, −0.2).
/// assert!(x.iter().all(|p| p[0].abs() < 4.0 && p[1] > -2.2 && p[1] < 2.8));
/// ```
pub fn sample_moons<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<Point2> {
    let n_out = n / 2;
    let n_in = n - n_out;
    let mut pts: Vec<Point2> = linspace(0.0, PI, n_out)
        .map(|t| [t.cos(), t.sin()])
        .chain(linspace(0.0, PI, n_in).map(|t| [1.0 - t.cos(), 1.0 - t.sin() - 0.5]))
        .collect();
    pts.shuffle(rng);
    pts.into_iter()
        .map(|p| {
            let a = p[0] + 0.1 * normal(rng);
            let b = p[1] + 0.1 * normal(rng);
            [2.0 * a - 1.0, 2.0 * b - 0.2]
        })
        .collect()
}

/// Circles: sklearn `make_circles(n, factor=0.5, noise=0.08)` (unit circle and the one of
/// radius 0.5, ⌊n/2⌋ and ⌈n/2⌉ evenly spaced points, shuffled, plus `N(0, 0.08²)`), times 3.
///
/// ```
/// use cpflow::rand::SeedableRng;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = cpflow::toy::sample_circles(1000, &mut rng);
/// // Half the points near radius 3, half near 1.5 (noise std 0.24, so a few of the 1000
/// // cross the middle radius 2.25).
/// let outer = x.iter().filter(|p| p[0].hypot(p[1]) > 2.25).count();
/// assert!((490..=510).contains(&outer), "{outer}");
/// ```
pub fn sample_circles<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<Point2> {
    let n_out = n / 2;
    let n_in = n - n_out;
    let ring = |k: usize, r: f64| {
        (0..k).map(move |i| {
            let t = 2.0 * PI * i as f64 / k as f64;
            [r * t.cos(), r * t.sin()]
        })
    };
    let mut pts: Vec<Point2> = ring(n_out, 1.0).chain(ring(n_in, 0.5)).collect();
    pts.shuffle(rng);
    pts.into_iter()
        .map(|p| {
            [
                3.0 * (p[0] + 0.08 * normal(rng)),
                3.0 * (p[1] + 0.08 * normal(rng)),
            ]
        })
        .collect()
}

/// Pinwheel: five arms; a radial `N(1, 0.3²)` and tangential `N(0, 0.1²)` feature rotated by
/// `2πk/5 + 0.25·exp(radial)`, times 2. Point `i` goes to arm `i mod 5`; the result is shuffled.
///
/// ```
/// use cpflow::rand::SeedableRng;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = cpflow::toy::sample_pinwheel(1000, &mut rng);
/// // The radial feature is N(1, 0.3²), times 2: the mean distance from 0 is about 2.
/// let r = x.iter().map(|p| p[0].hypot(p[1])).sum::<f64>() / 1000.0;
/// assert!((r - 2.0).abs() < 0.1, "{r}");
/// ```
pub fn sample_pinwheel<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<Point2> {
    const RADIAL_STD: f64 = 0.3;
    const TANGENTIAL_STD: f64 = 0.1;
    const NUM_ARMS: usize = 5;
    const RATE: f64 = 0.25;
    let mut pts: Vec<Point2> = (0..n)
        .map(|i| {
            let f0 = normal(rng) * RADIAL_STD + 1.0;
            let f1 = normal(rng) * TANGENTIAL_STD;
            let arm = (i % NUM_ARMS) as f64;
            let angle = 2.0 * PI * arm / NUM_ARMS as f64 + RATE * f0.exp();
            let (s, c) = angle.sin_cos();
            // FFJORD's einsum("ti,tij->tj") with rotation [[cos, −sin], [sin, cos]].
            [2.0 * (f0 * c + f1 * s), 2.0 * (-f0 * s + f1 * c)]
        })
        .collect();
    pts.shuffle(rng);
    pts
}

/// Checkerboard: `x₁ ~ U(−2, 2)`, `x₂ ~ U(0, 1) − 2·Bernoulli(½) + (⌊x₁⌋ mod 2)`, times 2:
/// uniform on 8 squares of side 2 in `[−4, 4]²`.
///
/// ```
/// use cpflow::toy::{Toy, sample_checkerboard};
/// use cpflow::rand::SeedableRng;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = sample_checkerboard(1000, &mut rng);
/// // Every point is on a dark square, where the density is 1/32.
/// let lp = (1.0f64 / 32.0).ln();
/// assert!(x.iter().all(|&p| Toy::Checkerboard.log_density(p) == Some(lp)));
/// assert_eq!(Toy::Checkerboard.log_density([1.0, -1.0]), Some(f64::NEG_INFINITY)); // light
/// ```
pub fn sample_checkerboard<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<Point2> {
    (0..n)
        .map(|_| {
            let x1 = rng.random::<f64>() * 4.0 - 2.0;
            let shift = if rng.random::<bool>() { 2.0 } else { 0.0 };
            let x2 = rng.random::<f64>() - shift + x1.floor().rem_euclid(2.0);
            [2.0 * x1, 2.0 * x2]
        })
        .collect()
}

/// Exact log-density of the checkerboard: `log(1/32)` on its 8 squares (total area 32),
/// `−∞` elsewhere.
pub(crate) fn checkerboard_log_density(x: Point2) -> f64 {
    let u1 = x[0] / 2.0;
    let u2 = x[1] / 2.0;
    if !(-2.0..2.0).contains(&u1) {
        return f64::NEG_INFINITY;
    }
    let v = u2 - u1.floor().rem_euclid(2.0);
    if (0.0..1.0).contains(&v) || (-2.0..-1.0).contains(&v) {
        -(32f64.ln())
    } else {
        f64::NEG_INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toy::integrate_log_density;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn checkerboard_samples_lie_on_the_support_and_density_integrates_to_one() {
        let mut rng = StdRng::seed_from_u64(0);
        let x = sample_checkerboard(20_000, &mut rng);
        assert!(x.iter().all(|p| checkerboard_log_density(*p).is_finite()));
        // The squares' edges fall on multiples of 2: a grid step of 0.05 resolves them exactly.
        let z = integrate_log_density(checkerboard_log_density, (-5.0, 5.0), (-5.0, 5.0), 0.05);
        assert!((z - 1.0).abs() < 1e-9, "{z}");
        // (1, 1) lies on a dark square, (1, −1) on a light one (no mass).
        assert!(checkerboard_log_density([1.0, 1.0]).is_finite());
        assert_eq!(checkerboard_log_density([1.0, -1.0]), f64::NEG_INFINITY);
    }

    #[test]
    fn moons_and_circles_match_their_geometry() {
        let mut rng = StdRng::seed_from_u64(1);
        // Circles: radii 3 and 1.5 (noise 0.24 after scaling); half the points on each.
        let c = sample_circles(10_000, &mut rng);
        let outer = c.iter().filter(|p| p[0].hypot(p[1]) > 2.25).count();
        assert!((outer as f64 / 1e4 - 0.5).abs() < 0.01, "{outer}");
        // Moons: noise-free mean of the two arcs is (0.5, 0.25) → 2·(0.5, 0.25) + (−1, −0.2)
        // = (0, 0.3). SE ≈ 0.01 per axis with n = 10⁴; 0.05 is 5 SE.
        let m = crate::toy::mean_point(&sample_moons(10_000, &mut rng));
        assert!(m[0].abs() < 0.05 && (m[1] - 0.3).abs() < 0.05, "{m:?}");
    }

    #[test]
    fn pinwheel_has_five_arms_of_equal_mass() {
        let mut rng = StdRng::seed_from_u64(2);
        let x = sample_pinwheel(10_000, &mut rng);
        // Mean radius: 2·E‖(f0, f1)‖ ≈ 2·√(1 + 0.09 + 0.01) ≈ 2.1 at most; at least 2·E f0 = 2.
        let mr = x.iter().map(|p| p[0].hypot(p[1])).sum::<f64>() / 1e4;
        assert!(mr > 1.95 && mr < 2.15, "{mr}");
        // Five-fold symmetry: the mean is ≈ 0 (SE ≈ 0.015).
        let m = crate::toy::mean_point(&x);
        assert!(m[0].abs() < 0.08 && m[1].abs() < 0.08, "{m:?}");
    }
}
