//! Raster plots: density heat maps, 2-D histograms of data, potential contours.

use super::colors::{bupu, viridis};
use super::grid::{Bounds, Grid2d};
use super::{Figure, PlotError, ResolvedFigure, raster_png};
use crate::toy::Point2;
use plotters::prelude::*;
use std::path::Path;

/// Normaliser `v ↦ (v − min)/(max − min)` over the finite values of `grid`.
fn normaliser(grid: &Grid2d) -> Result<impl Fn(f64) -> f64, PlotError> {
    let (lo, hi) = grid
        .finite_range()
        .ok_or_else(|| PlotError::InvalidInput("grid has no finite value".into()))?;
    let span = if hi > lo { hi - lo } else { 1.0 };
    Ok(move |v: f64| if v.is_finite() { (v - lo) / span } else { 0.0 })
}

/// Heat map of a density grid (e.g. `exp(log p)` of a model) in the `BuPu` colour map, scaled
/// from the grid's minimum (white) to its maximum (dark purple), bilinearly interpolated to
/// the plot area.
///
/// ```
/// use cpflow::plot::{Bounds, Grid2d, density_heatmap_png};
/// # fn main() -> Result<(), cpflow::plot::PlotError> {
/// let path = std::env::temp_dir().join(format!("cpflow-doc-heatmap-{}.png", std::process::id()));
/// let normal = |p: [f64; 2]| (-0.5 * (p[0] * p[0] + p[1] * p[1])).exp();
/// let grid = Grid2d::evaluate(Bounds::square(3.0), 32, 32, normal);
/// density_heatmap_png(&path, &grid, 120)?;
/// let bytes = std::fs::read(&path).unwrap();
/// assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
/// assert_eq!(cpflow::image_file::read_rgb8(&path).unwrap().dimensions(), (120, 120));
/// // A grid needs at least 2×2 values.
/// assert!(Grid2d::from_values(Bounds::square(3.0), 1, 1, vec![0.5]).is_err());
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn density_heatmap_png(
    path: impl AsRef<Path>,
    grid: &Grid2d,
    figure: impl Into<Figure>,
) -> Result<(), PlotError> {
    let path = path.as_ref();
    let norm = normaliser(grid)?;
    let fig = ResolvedFigure::plane(figure.into(), path);
    raster_png(path, &fig, grid.bounds, |_, _, centres| {
        Ok(centres
            .iter()
            .map(|p| bupu(norm(grid.interpolate(*p))))
            .collect())
    })
}

/// 2-D histogram of `points` with `bins × bins` cells over `bounds` in `BuPu` (the reference's
/// `*_data.png`: `histogram2d(…, 200, range=[[−4, 4], [−4, 4]])`).
///
/// ```
/// use cpflow::plot::{Bounds, PlotError, histogram_png};
/// # fn main() -> Result<(), cpflow::plot::PlotError> {
/// let path =
///     std::env::temp_dir().join(format!("cpflow-doc-histogram-{}.png", std::process::id()));
/// use cpflow::rand::SeedableRng;
/// let x = cpflow::toy::sample_moons(2000, &mut cpflow::rand::rngs::StdRng::seed_from_u64(0));
/// histogram_png(&path, &x, Bounds::square(4.0), 50, 120)?;
/// let bytes = std::fs::read(&path).unwrap();
/// assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
/// assert_eq!(cpflow::image_file::read_rgb8(&path).unwrap().dimensions(), (120, 120));
/// let empty = histogram_png(&path, &[], Bounds::square(4.0), 50, 120);
/// assert!(matches!(empty, Err(PlotError::InvalidInput(_))));
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn histogram_png(
    path: impl AsRef<Path>,
    points: &[Point2],
    bounds: Bounds,
    bins: usize,
    figure: impl Into<Figure>,
) -> Result<(), PlotError> {
    let path = path.as_ref();
    bounds.validate()?;
    if points.is_empty() || bins == 0 {
        return Err(PlotError::InvalidInput("no points or no bins".into()));
    }
    let mut counts = vec![0u32; bins * bins];
    let cell = |p: Point2| -> Option<(usize, usize)> {
        if !bounds.contains(p) {
            return None;
        }
        let fx = (p[0] - bounds.x.0) / (bounds.x.1 - bounds.x.0);
        let fy = (p[1] - bounds.y.0) / (bounds.y.1 - bounds.y.0);
        let i = ((fx * bins as f64) as usize).min(bins - 1);
        let j = ((fy * bins as f64) as usize).min(bins - 1);
        Some((i, j))
    };
    for p in points {
        if let Some((i, j)) = cell(*p) {
            counts[j * bins + i] += 1;
        }
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let fig = ResolvedFigure::plane(figure.into(), path);
    raster_png(path, &fig, bounds, |_, _, centres| {
        Ok(centres
            .iter()
            .map(|p| match cell(*p) {
                Some((i, j)) => bupu(counts[j * bins + i] as f64 / max),
                None => bupu(0.0),
            })
            .collect())
    })
}

/// Filled contour plot of a potential: `levels` equally spaced bands between the grid's
/// minimum and maximum, coloured with Viridis, with dark level lines where the band changes
/// (matplotlib `contourf` + `contour` with `levels=20`).
///
/// ```
/// use cpflow::plot::{Bounds, Grid2d, PlotError, potential_contour_png};
/// # fn main() -> Result<(), cpflow::plot::PlotError> {
/// let path = std::env::temp_dir().join(format!("cpflow-doc-contour-{}.png", std::process::id()));
/// // The potential ‖x‖²/2, whose gradient map is the identity.
/// let grid = Grid2d::evaluate(Bounds::square(2.0), 40, 40, |p| 0.5 * (p[0] * p[0] + p[1] * p[1]));
/// potential_contour_png(&path, &grid, 10, 120)?;
/// let bytes = std::fs::read(&path).unwrap();
/// assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
/// assert_eq!(cpflow::image_file::read_rgb8(&path).unwrap().dimensions(), (120, 120));
/// // A grid without one finite value has nothing to draw.
/// let nan = Grid2d::evaluate(Bounds::square(2.0), 4, 4, |_| f64::NAN);
/// assert!(matches!(potential_contour_png(&path, &nan, 10, 120), Err(PlotError::InvalidInput(_))));
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn potential_contour_png(
    path: impl AsRef<Path>,
    grid: &Grid2d,
    levels: usize,
    figure: impl Into<Figure>,
) -> Result<(), PlotError> {
    let path = path.as_ref();
    let levels = levels.max(2);
    let norm = normaliser(grid)?;
    let fig = ResolvedFigure::plane(figure.into(), path);
    raster_png(path, &fig, grid.bounds, |w, h, centres| {
        let bands: Vec<usize> = centres
            .iter()
            .map(|p| ((norm(grid.interpolate(*p)) * levels as f64) as usize).min(levels - 1))
            .collect();
        let band = |px: u32, py: u32| bands[(py * w + px) as usize];
        let mut colors = Vec::with_capacity(bands.len());
        for py in 0..h {
            for px in 0..w {
                let k = band(px, py);
                let edge =
                    (px + 1 < w && band(px + 1, py) != k) || (py + 1 < h && band(px, py + 1) != k);
                colors.push(if edge {
                    RGBColor(30, 30, 30)
                } else {
                    viridis(k as f64 / (levels - 1) as f64)
                });
            }
        }
        Ok(colors)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::test_util::{png_stats, temp_png};

    #[test]
    fn heatmap_histogram_and_contour_write_non_trivial_pngs() {
        let b = Bounds::square(4.0);
        let g = Grid2d::evaluate(b, 50, 50, |p| (-0.5 * (p[0] * p[0] + p[1] * p[1])).exp());
        let path = temp_png("heat");
        density_heatmap_png(&path, &g, 120).unwrap();
        let (w, h, var, ink) = png_stats(&path);
        assert_eq!((w, h), (120, 120));
        // A centred bump: plenty of variation, and the corners stay (almost) white.
        assert!(var > 100.0 && ink > 0.1 && ink < 0.9, "{var} {ink}");
        let img = crate::image_file::read_rgb8(&path).unwrap();
        assert!(img.pixel(0, 0)[0] > 240, "corner should be white");
        // The bump's top is dark purple (the plot area is inset by the axes and the title, so
        // the darkest pixel is searched for rather than read at the canvas centre).
        let darkest = img.pixels.iter().step_by(3).min().copied().unwrap();
        assert!(darkest < 100, "centre should be dark ({darkest})");

        let pts: Vec<Point2> = (0..2000)
            .map(|i| {
                let t = i as f64 * 0.01;
                [2.0 * t.cos(), 2.0 * t.sin()]
            })
            .collect();
        let path = temp_png("hist");
        histogram_png(&path, &pts, b, 60, 120).unwrap();
        let (_, _, var, ink) = png_stats(&path);
        // A thin ring: little ink, but some.
        assert!(var > 10.0 && ink > 0.01 && ink < 0.5, "{var} {ink}");
        assert!(histogram_png(&path, &[], b, 60, 120).is_err());

        let path = temp_png("contour");
        potential_contour_png(&path, &g, 10, 120).unwrap();
        let (_, _, var, ink) = png_stats(&path);
        // The bands fill the whole plot area, about a third of a 120-px canvas once the title,
        // the tick labels and the axis labels take their bands.
        assert!(var > 100.0 && ink > 0.25, "{var} {ink}");
        let flat = Grid2d::evaluate(b, 4, 4, |_| f64::NAN);
        assert!(potential_contour_png(&path, &flat, 10, 64).is_err());
    }
}
