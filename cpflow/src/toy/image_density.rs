//! A 2-D density drawn from an image (the reference `train_toy.py --img_file`).
//!
//! The image is converted to grey levels (PIL's `convert('L')`:
//! `L = (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16`), inverted (`max − L`, dark = mass) and
//! normalised into pixel weights `π_k`. The density is the mixture
//! `Σ_k π_k N(μ_k, diag(σ_x², σ_y²))` with the pixel centres `μ_k` on a `w × h` grid spanning
//! `[−4, 4]²` and `σ = (4/w, 4/h)` (half a pixel width).
//!
//! One deliberate difference: pixel row 0 is mapped to `y = +4` (the reference maps it to
//! `y = −4` and then plots with `imshow`, whose y axis points down). Both show the logo
//! upright in their own plots; ours is also upright in a y-up coordinate system.

use super::{Point2, ToyError};
use rand::Rng;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand_distr::StandardNormal;
use std::f64::consts::PI;
use std::path::Path;

/// Half-width of the square the image is mapped onto.
const HALF_WIDTH: f64 = 4.0;
/// Components farther than this many standard deviations are ignored in
/// [`ImageDensity::log_density`] (their weight is below `e^{−18}` relative).
const TRUNCATION_SIGMAS: f64 = 6.0;

/// A pixel-grid Gaussian mixture built from an image.
///
/// ```
/// use cpflow::toy::ImageDensity;
/// use cpflow::rand::SeedableRng;
/// // A 2×2 image whose only dark pixel is the top-left one: all the mass is in the
/// // Gaussian at that pixel's centre (−4, 4) (the centres span [−4, 4]²), σ = 4/2 = 2.
/// let d = ImageDensity::from_grey(&[0, 255, 255, 255], 2, 2).unwrap();
/// assert_eq!(d.mean(), [-4.0, 4.0]);
/// let want = -(2.0 * std::f64::consts::PI * 4.0).ln(); // log N(μ; μ, 4·I)
/// assert!((d.log_density([-4.0, 4.0]) - want).abs() < 1e-12);
/// let x = d.sample(2000, &mut cpflow::rand::rngs::StdRng::seed_from_u64(0));
/// let m = cpflow::toy::mean_point(&x);
/// assert!((m[0] + 4.0).abs() < 0.2 && (m[1] - 4.0).abs() < 0.2, "{m:?}"); // SE ≈ 0.045
/// // A uniform image has no mass.
/// assert!(ImageDensity::from_grey(&[9; 4], 2, 2).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct ImageDensity {
    width: usize,
    height: usize,
    /// Row-major pixel weights (sum 1), row 0 = top of the image.
    weights: Vec<f64>,
    sampler: WeightedIndex<f64>,
    sigma: Point2,
}

impl ImageDensity {
    /// Loads a PNG or a JPEG from `path` ([`crate::image_file::read_rgb8`]), in grey levels
    /// of PIL's `convert("L")` ([`crate::image_file::pil_luma`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ToyError> {
        let path = path.as_ref();
        let rgb = crate::image_file::read_rgb8(path).map_err(|source| ToyError::Image {
            path: path.display().to_string(),
            source,
        })?;
        let (w, h) = rgb.dimensions();
        let grey = rgb.to_pil_gray();
        Self::from_grey(&grey, w as usize, h as usize).map_err(|e| match e {
            ToyError::EmptyImage(_) => ToyError::EmptyImage(path.display().to_string()),
            other => other,
        })
    }

    /// Builds the density from row-major 8-bit grey levels (row 0 = top).
    pub fn from_grey(grey: &[u8], width: usize, height: usize) -> Result<Self, ToyError> {
        if width < 2 || height < 2 || grey.len() != width * height {
            return Err(ToyError::InvalidArgument(format!(
                "grey image of {} values for {width}×{height} (need at least 2×2)",
                grey.len()
            )));
        }
        let max = grey.iter().copied().max().unwrap_or(0);
        let inverted: Vec<f64> = grey.iter().map(|&g| (max - g) as f64).collect();
        let total: f64 = inverted.iter().sum();
        if total <= 0.0 {
            return Err(ToyError::EmptyImage("<grey buffer>".into()));
        }
        let weights: Vec<f64> = inverted.iter().map(|v| v / total).collect();
        let sampler = WeightedIndex::new(&weights).map_err(ToyError::PixelWeights)?;
        Ok(Self {
            width,
            height,
            weights,
            sampler,
            sigma: [
                2.0 * HALF_WIDTH / width as f64 / 2.0,
                2.0 * HALF_WIDTH / height as f64 / 2.0,
            ],
        })
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Centre of pixel `(row, col)` in the plane.
    fn centre(&self, row: usize, col: usize) -> Point2 {
        let x = -HALF_WIDTH + 2.0 * HALF_WIDTH * col as f64 / (self.width - 1) as f64;
        let y = HALF_WIDTH - 2.0 * HALF_WIDTH * row as f64 / (self.height - 1) as f64;
        [x, y]
    }

    /// Mean of the mixture, `Σ π_k μ_k`.
    pub fn mean(&self) -> Point2 {
        let mut m = [0.0, 0.0];
        for (k, w) in self.weights.iter().enumerate() {
            let c = self.centre(k / self.width, k % self.width);
            m[0] += w * c[0];
            m[1] += w * c[1];
        }
        m
    }

    /// Draws `n` points: a pixel by weight, then its Gaussian.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<Point2> {
        (0..n)
            .map(|_| {
                let k = self.sampler.sample(rng);
                let c = self.centre(k / self.width, k % self.width);
                let e0: f64 = rng.sample(StandardNormal);
                let e1: f64 = rng.sample(StandardNormal);
                [c[0] + self.sigma[0] * e0, c[1] + self.sigma[1] * e1]
            })
            .collect()
    }

    /// Log-density of the mixture at `x`, summing the components within 6σ (exact to a
    /// relative `e^{−18}`); `−∞` where no pixel contributes.
    pub fn log_density(&self, x: Point2) -> f64 {
        let dx = 2.0 * HALF_WIDTH / (self.width - 1) as f64;
        let dy = 2.0 * HALF_WIDTH / (self.height - 1) as f64;
        let col_f = (x[0] + HALF_WIDTH) / dx;
        let row_f = (HALF_WIDTH - x[1]) / dy;
        let rc = (TRUNCATION_SIGMAS * self.sigma[0] / dx).ceil();
        let rr = (TRUNCATION_SIGMAS * self.sigma[1] / dy).ceil();
        let c_lo = (col_f - rc).floor().max(0.0);
        let c_hi = (col_f + rc).ceil().min((self.width - 1) as f64);
        let r_lo = (row_f - rr).floor().max(0.0);
        let r_hi = (row_f + rr).ceil().min((self.height - 1) as f64);
        if !(c_lo <= c_hi && r_lo <= r_hi) {
            return f64::NEG_INFINITY;
        }
        let norm = 1.0 / (2.0 * PI * self.sigma[0] * self.sigma[1]);
        let mut p = 0.0;
        for row in r_lo as usize..=r_hi as usize {
            for col in c_lo as usize..=c_hi as usize {
                let w = self.weights[row * self.width + col];
                if w == 0.0 {
                    continue;
                }
                let c = self.centre(row, col);
                let u = (x[0] - c[0]) / self.sigma[0];
                let v = (x[1] - c[1]) / self.sigma[1];
                p += w * norm * (-0.5 * (u * u + v * v)).exp();
            }
        }
        p.ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toy::integrate_log_density;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn logo(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/toy2d")
            .join(name)
    }

    #[test]
    fn small_image_density_integrates_to_one_and_samples_match_the_mean() {
        // A 6×5 image with one white (massless) pixel and varied grey levels.
        let grey: Vec<u8> = (0..30u32).map(|i| ((i * 37) % 256) as u8).collect();
        let d = ImageDensity::from_grey(&grey, 6, 5).unwrap();
        // σ = (0.67, 0.8); step 0.02 ≪ σ and the box covers ±6σ beyond [−4, 4].
        let z = integrate_log_density(|p| d.log_density(p), (-9.0, 9.0), (-9.0, 9.0), 0.02);
        assert!((z - 1.0).abs() < 1e-5, "{z}");
        let mut rng = StdRng::seed_from_u64(0);
        let x = d.sample(100_000, &mut rng);
        let m = crate::toy::mean_point(&x);
        let e = d.mean();
        // Spread ≈ 2.5 per axis → SE ≈ 0.008; 0.04 is 5 SE.
        assert!(
            (m[0] - e[0]).abs() < 0.04 && (m[1] - e[1]).abs() < 0.04,
            "{m:?} vs {e:?}"
        );
    }

    #[test]
    fn top_left_dark_pixel_maps_to_the_top_left_corner() {
        // Only pixel (row 0, col 0) is dark: all mass near (−4, +4).
        let mut grey = vec![255u8; 16];
        grey[0] = 0;
        let d = ImageDensity::from_grey(&grey, 4, 4).unwrap();
        let m = d.mean();
        assert_eq!(m, [-4.0, 4.0]);
        assert!(ImageDensity::from_grey(&[7u8; 16], 4, 4).is_err());
    }

    #[test]
    fn reference_logos_load_and_sample_inside_the_square() {
        for name in ["github.png", "twitter.png"] {
            let path = logo(name);
            if !path.exists() {
                eprintln!("skipping: {} not found", path.display());
                continue;
            }
            let d = ImageDensity::from_file(&path).unwrap();
            assert!(d.width() >= 400 && d.height() >= 400);
            let mut rng = StdRng::seed_from_u64(1);
            let x = d.sample(20_000, &mut rng);
            let m = crate::toy::mean_point(&x);
            let e = d.mean();
            assert!((m[0] - e[0]).abs() < 0.1 && (m[1] - e[1]).abs() < 0.1);
            assert!(x.iter().all(|p| p[0].abs() < 4.2 && p[1].abs() < 4.2));
            assert!(d.log_density(x[0]).is_finite());
        }
        assert!(ImageDensity::from_file("/nonexistent.png").is_err());
    }
}
