//! 2-D toy densities (paper Fig. 1 and Fig. 3) and the Gaussian target of the
//! optimal-transport experiment (paper Fig. 4).
//!
//! Everything here is plain host code on `f64`, driven by a caller-supplied
//! [`rand::Rng`]; [`points_to_tensor`] moves a batch of points to candle.
//!
//! * [`Toy`]: the named procedural densities of the CP-Flow repository
//!   (`data/toy_data.py`: EightGaussian, SwissRoll, TwoSpirals, Rings, MAFMoon) and the
//!   FFJORD-style ones (`moons`, `circles`, `pinwheel`, `checkerboard`), with the closed-form
//!   log-density where one exists ([`Toy::log_density`]).
//! * `ImageDensity` (feature `toy-images`): a density drawn from a PNG (the reference
//!   `train_toy.py --img_file`).
//! * [`GaussianTarget`]: `N(m, C)` with a random mean and a Wishart covariance, its entropy and
//!   the closed-form squared 2-Wasserstein distance to `N(0, I)`.
//!
//! ```
//! use cpflow::toy::Toy;
//! use cpflow::rand::SeedableRng;
//! let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
//! let toy: Toy = "8gaussians".parse().unwrap();
//! let x = toy.sample(1000, &mut rng);
//! assert_eq!(x.len(), 1000);
//! assert!(toy.log_density(x[0]).unwrap().is_finite());
//! ```

mod error;
mod ffjord;
mod gaussian;
#[cfg(feature = "toy-images")]
mod image_density;
mod paper;

pub use error::ToyError;
pub use ffjord::{sample_checkerboard, sample_circles, sample_moons, sample_pinwheel};
pub use gaussian::{GaussianTarget, sample_wishart, w2_squared_gaussians};
#[cfg(feature = "toy-images")]
pub use image_density::ImageDensity;
pub use paper::{
    eight_gaussians_log_density, maf_moon_log_density, sample_eight_gaussians,
    sample_eight_gaussians_with_labels, sample_maf_moon, sample_rings, sample_swiss_roll,
    sample_two_spirals,
};

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use std::fmt;
use std::str::FromStr;

/// A point of the plane.
pub type Point2 = [f64; 2];

/// The named procedural 2-D toy densities.
///
/// ```
/// use cpflow::toy::Toy;
/// use cpflow::rand::SeedableRng;
/// for toy in Toy::ALL {
///     assert_eq!(toy.name().parse::<Toy>().unwrap(), toy);
/// }
/// assert_eq!("TwoSpirals".parse::<Toy>().unwrap(), Toy::TwoSpirals); // reference class name
/// let x = Toy::MafMoon.sample(3, &mut cpflow::rand::rngs::StdRng::seed_from_u64(0));
/// assert_eq!(Toy::MafMoon.log_density(x[0]), Some(cpflow::toy::maf_moon_log_density(x[0])));
/// assert_eq!(Toy::Rings.log_density(x[0]), None); // no closed form
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Toy {
    /// Eight isotropic Gaussians on a circle of radius `4/1.414`, std `0.5/1.414`.
    EightGaussians,
    /// sklearn `make_swiss_roll(noise=0.5)`, columns (0, 2), divided by 5.
    SwissRoll,
    /// Two interleaved spirals (the BNAF generator).
    TwoSpirals,
    /// Four concentric noisy circles of radii 3, 2.25, 1.5, 0.75.
    Rings,
    /// Two half-moons (sklearn `make_moons(noise=0.1)`, scaled by 2, shifted by (−1, −0.2)).
    Moons,
    /// Uniform on the 8 dark squares of a 4×4 checkerboard over `[−4, 4]²`.
    Checkerboard,
    /// Five curved arms (the FFJORD pinwheel).
    Pinwheel,
    /// Two concentric circles (sklearn `make_circles(factor=0.5, noise=0.08)`, scaled by 3).
    Circles,
    /// The MAF "moon": `x ~ N(0, I)`, `x₀ ← (x₀ + x₁²)/2 − 2`.
    MafMoon,
}

impl Toy {
    /// Every toy, in a fixed order.
    pub const ALL: [Toy; 9] = [
        Toy::EightGaussians,
        Toy::SwissRoll,
        Toy::TwoSpirals,
        Toy::Rings,
        Toy::Moons,
        Toy::Checkerboard,
        Toy::Pinwheel,
        Toy::Circles,
        Toy::MafMoon,
    ];

    /// The canonical command-line name (`8gaussians`, `swissroll`, …).
    pub fn name(self) -> &'static str {
        match self {
            Toy::EightGaussians => "8gaussians",
            Toy::SwissRoll => "swissroll",
            Toy::TwoSpirals => "2spirals",
            Toy::Rings => "rings",
            Toy::Moons => "moons",
            Toy::Checkerboard => "checkerboard",
            Toy::Pinwheel => "pinwheel",
            Toy::Circles => "circles",
            Toy::MafMoon => "mafmoon",
        }
    }

    /// Draws `n` independent points.
    pub fn sample<R: Rng + ?Sized>(self, n: usize, rng: &mut R) -> Vec<Point2> {
        match self {
            Toy::EightGaussians => sample_eight_gaussians(n, rng),
            Toy::SwissRoll => sample_swiss_roll(n, rng),
            Toy::TwoSpirals => sample_two_spirals(n, rng),
            Toy::Rings => sample_rings(n, rng),
            Toy::Moons => sample_moons(n, rng),
            Toy::Checkerboard => sample_checkerboard(n, rng),
            Toy::Pinwheel => sample_pinwheel(n, rng),
            Toy::Circles => sample_circles(n, rng),
            Toy::MafMoon => sample_maf_moon(n, rng),
        }
    }

    /// The exact log-density at `x` where it has a closed form (8gaussians, checkerboard,
    /// MAF moon); `None` for the others.
    pub fn log_density(self, x: Point2) -> Option<f64> {
        match self {
            Toy::EightGaussians => Some(eight_gaussians_log_density(x)),
            Toy::MafMoon => Some(maf_moon_log_density(x)),
            Toy::Checkerboard => Some(ffjord::checkerboard_log_density(x)),
            _ => None,
        }
    }
}

impl fmt::Display for Toy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Toy {
    type Err = ToyError;

    /// Accepts the canonical names and the reference class names, case-insensitively,
    /// ignoring `_` and `-` (`EightGaussian`, `swiss_roll`, `TwoSpirals`, `MAFMoon`, …).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key: String = s
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect();
        let toy = match key.as_str() {
            "8gaussians" | "eightgaussian" | "eightgaussians" => Toy::EightGaussians,
            "swissroll" => Toy::SwissRoll,
            "2spirals" | "twospirals" => Toy::TwoSpirals,
            "rings" => Toy::Rings,
            "moons" => Toy::Moons,
            "checkerboard" => Toy::Checkerboard,
            "pinwheel" => Toy::Pinwheel,
            "circles" => Toy::Circles,
            "mafmoon" => Toy::MafMoon,
            _ => return Err(ToyError::UnknownToy(s.to_string())),
        };
        Ok(toy)
    }
}

/// Builds a `(n, 2)` tensor of `dtype` on `device` from points.
///
/// ```
/// # use cpflow::candle::{DType, Device};
/// let t = cpflow::toy::points_to_tensor(&[[1.0, 2.0], [3.0, 4.0]], DType::F32, &Device::Cpu).unwrap();
/// assert_eq!(t.dims(), &[2, 2]);
/// ```
pub fn points_to_tensor(
    points: &[Point2],
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let flat: Vec<f64> = points.iter().flat_map(|p| [p[0], p[1]]).collect();
    Tensor::from_vec(flat, (points.len(), 2), device)?.to_dtype(dtype)
}

/// Reads a `(n, 2)` tensor (any float dtype, any device) back into points.
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::toy::{ToyError, points_to_tensor, tensor_to_points};
/// let pts = vec![[1.0, -2.0], [0.5, 4.0]];
/// let t = points_to_tensor(&pts, DType::F32, &Device::Cpu).unwrap();
/// assert_eq!(tensor_to_points(&t).unwrap(), pts);
/// let three = Tensor::zeros((2, 3), DType::F64, &Device::Cpu).unwrap();
/// assert!(matches!(tensor_to_points(&three), Err(ToyError::InvalidArgument(_))));
/// ```
pub fn tensor_to_points(t: &Tensor) -> Result<Vec<Point2>, ToyError> {
    let (_, d) = t.dims2()?;
    if d != 2 {
        return Err(ToyError::InvalidArgument(format!(
            "expected a (n, 2) tensor, got {:?}",
            t.dims()
        )));
    }
    let rows = t.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    Ok(rows.into_iter().map(|r| [r[0], r[1]]).collect())
}

/// Mean of a set of points (`[0, 0]` for an empty set).
///
/// ```
/// use cpflow::toy::mean_point;
/// assert_eq!(mean_point(&[[1.0, 2.0], [3.0, -2.0]]), [2.0, 0.0]);
/// assert_eq!(mean_point(&[]), [0.0, 0.0]);
/// ```
pub fn mean_point(points: &[Point2]) -> Point2 {
    let n = points.len().max(1) as f64;
    let s = points
        .iter()
        .fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
    [s[0] / n, s[1] / n]
}

/// Riemann sum of `exp(log_p)` over a box (midpoint rule), for density tests.
#[cfg(test)]
pub(crate) fn integrate_log_density(
    log_p: impl Fn(Point2) -> f64,
    x: (f64, f64),
    y: (f64, f64),
    h: f64,
) -> f64 {
    let nx = ((x.1 - x.0) / h).round() as usize;
    let ny = ((y.1 - y.0) / h).round() as usize;
    let mut s = 0.0;
    for i in 0..nx {
        for j in 0..ny {
            let p = [x.0 + (i as f64 + 0.5) * h, y.0 + (j as f64 + 0.5) * h];
            s += log_p(p).exp();
        }
    }
    s * h * h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for toy in Toy::ALL {
            assert_eq!(toy.name().parse::<Toy>().unwrap(), toy);
        }
        assert_eq!("EightGaussian".parse::<Toy>().unwrap(), Toy::EightGaussians);
        assert_eq!("MAFMoon".parse::<Toy>().unwrap(), Toy::MafMoon);
        assert_eq!("swiss_roll".parse::<Toy>().unwrap(), Toy::SwissRoll);
        assert!("nope".parse::<Toy>().is_err());
    }

    #[test]
    fn every_toy_samples_the_requested_count_of_finite_points_and_is_seeded() {
        for toy in Toy::ALL {
            for n in [1usize, 7, 1000] {
                let a = toy.sample(n, &mut StdRng::seed_from_u64(3));
                let b = toy.sample(n, &mut StdRng::seed_from_u64(3));
                assert_eq!(a.len(), n, "{toy} n={n}");
                assert_eq!(a, b, "{toy}: same seed must give the same points");
                assert!(a.iter().all(|p| p[0].is_finite() && p[1].is_finite()));
                // Every toy lives well inside the [-6, 6]² plotting window.
                assert!(
                    a.iter().all(|p| p[0].abs() < 8.0 && p[1].abs() < 8.0),
                    "{toy} produced a far outlier"
                );
            }
        }
    }

    #[test]
    fn tensor_round_trip() {
        let pts = vec![[1.0, -2.0], [0.5, 4.0], [3.0, 3.0]];
        let t = points_to_tensor(&pts, DType::F64, &Device::Cpu).unwrap();
        assert_eq!(tensor_to_points(&t).unwrap(), pts);
    }
}
