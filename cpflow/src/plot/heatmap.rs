//! Raster plots: density heat maps, 2-D histograms of data, potential contours.

use super::colors::{bupu, viridis};
use super::grid::{Bounds, Grid2d};
use super::{PlotError, draw_err};
use crate::toy::Point2;
use plotters::prelude::*;
use std::path::Path;

/// Paints a `size × size` PNG pixel by pixel; `color_at(px, py, p)` gets the pixel indices and
/// the data point at its centre (y points up).
fn render_pixels(
    path: &Path,
    size: u32,
    bounds: Bounds,
    color_at: impl Fn(u32, u32, Point2) -> RGBColor,
) -> Result<(), PlotError> {
    bounds.validate()?;
    let size = size.max(16);
    let err = draw_err(path);
    let root = BitMapBackend::new(path, (size, size)).into_drawing_area();
    let s = size as f64;
    for py in 0..size {
        for px in 0..size {
            let p = [
                bounds.x.0 + (px as f64 + 0.5) / s * (bounds.x.1 - bounds.x.0),
                bounds.y.1 - (py as f64 + 0.5) / s * (bounds.y.1 - bounds.y.0),
            ];
            root.draw_pixel((px as i32, py as i32), &color_at(px, py, p))
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Normaliser `v ↦ (v − min)/(max − min)` over the finite values of `grid`.
fn normaliser(grid: &Grid2d) -> Result<impl Fn(f64) -> f64, PlotError> {
    let (lo, hi) = grid
        .finite_range()
        .ok_or_else(|| PlotError::InvalidInput("grid has no finite value".into()))?;
    let span = if hi > lo { hi - lo } else { 1.0 };
    Ok(move |v: f64| if v.is_finite() { (v - lo) / span } else { 0.0 })
}

/// Heat map of a density grid (e.g. `exp(log p)` of a model) in the `BuPu` colour map, scaled
/// from the grid's minimum (white) to its maximum (dark purple), bilinearly interpolated to a
/// `size × size` PNG.
pub fn density_heatmap_png(
    path: impl AsRef<Path>,
    grid: &Grid2d,
    size: u32,
) -> Result<(), PlotError> {
    let norm = normaliser(grid)?;
    render_pixels(path.as_ref(), size, grid.bounds, |_, _, p| {
        bupu(norm(grid.interpolate(p)))
    })
}

/// 2-D histogram of `points` with `bins × bins` cells over `bounds` in `BuPu` (the reference's
/// `*_data.png`: `histogram2d(…, 200, range=[[−4, 4], [−4, 4]])`).
pub fn histogram_png(
    path: impl AsRef<Path>,
    points: &[Point2],
    bounds: Bounds,
    bins: usize,
    size: u32,
) -> Result<(), PlotError> {
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
    render_pixels(path.as_ref(), size, bounds, |_, _, p| match cell(p) {
        Some((i, j)) => bupu(counts[j * bins + i] as f64 / max),
        None => bupu(0.0),
    })
}

/// Filled contour plot of a potential: `levels` equally spaced bands between the grid's
/// minimum and maximum, coloured with Viridis, with dark level lines where the band changes
/// (matplotlib `contourf` + `contour` with `levels=20`).
pub fn potential_contour_png(
    path: impl AsRef<Path>,
    grid: &Grid2d,
    levels: usize,
    size: u32,
) -> Result<(), PlotError> {
    let levels = levels.max(2);
    let norm = normaliser(grid)?;
    let size_px = size.max(16);
    let b = grid.bounds;
    let s = size_px as f64;
    let band_at = |px: u32, py: u32| -> usize {
        let p = [
            b.x.0 + (px as f64 + 0.5) / s * (b.x.1 - b.x.0),
            b.y.1 - (py as f64 + 0.5) / s * (b.y.1 - b.y.0),
        ];
        ((norm(grid.interpolate(p)) * levels as f64) as usize).min(levels - 1)
    };
    let mut bands = vec![0usize; (size_px * size_px) as usize];
    for py in 0..size_px {
        for px in 0..size_px {
            bands[(py * size_px + px) as usize] = band_at(px, py);
        }
    }
    let band = |px: u32, py: u32| bands[(py * size_px + px) as usize];
    render_pixels(path.as_ref(), size_px, b, |px, py, _| {
        let k = band(px, py);
        let edge = (px + 1 < size_px && band(px + 1, py) != k)
            || (py + 1 < size_px && band(px, py + 1) != k);
        if edge {
            RGBColor(30, 30, 30)
        } else {
            viridis(k as f64 / (levels - 1) as f64)
        }
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
        let img = image::open(&path).unwrap().to_rgb8();
        assert!(img.get_pixel(0, 0).0[0] > 240, "corner should be white");
        assert!(img.get_pixel(60, 60).0[0] < 100, "centre should be dark");

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
        assert!(var > 100.0 && ink > 0.99, "{var} {ink}");
        let flat = Grid2d::evaluate(b, 4, 4, |_| f64::NAN);
        assert!(potential_contour_png(&path, &flat, 10, 64).is_err());
    }
}
