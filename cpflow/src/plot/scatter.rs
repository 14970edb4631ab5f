//! Scatter plots of points.

use super::colors::rainbow;
use super::grid::Bounds;
use super::{Figure, Mesh, PlotError, ResolvedFigure, draw_err, with_chart};
use crate::toy::Point2;
use plotters::prelude::*;
use std::path::Path;

/// Scatter plot of `points` inside `bounds` (points outside are clipped), dots of radius
/// `radius` pixels in a single purple.
///
/// ```
/// use cpflow::plot::{Bounds, scatter_png};
/// # fn main() -> Result<(), cpflow::plot::PlotError> {
/// let path = std::env::temp_dir().join(format!("cpflow-doc-scatter-{}.png", std::process::id()));
/// let points = [[0.0, 0.0], [1.0, -1.0], [0.5, 2.0]];
/// scatter_png(&path, &points, Bounds::around(&points, 0.1), 2, 120)?;
/// let bytes = std::fs::read(&path).unwrap();
/// assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
/// assert_eq!(cpflow::image_file::read_rgb8(&path).unwrap().dimensions(), (120, 120));
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn scatter_png(
    path: impl AsRef<Path>,
    points: &[Point2],
    bounds: Bounds,
    radius: u32,
    figure: impl Into<Figure>,
) -> Result<(), PlotError> {
    let colors = vec![f64::NAN; points.len()];
    draw_scatter(
        path.as_ref(),
        points,
        &colors,
        bounds,
        radius,
        figure.into(),
    )
}

/// Scatter plot with one colour value `t ∈ [0, 1]` per point (rainbow map), e.g. the rank of
/// `‖z‖` so that latent and data samples can be matched (reference `*_x_sample.png`).
///
/// ```
/// use cpflow::plot::{Bounds, PlotError, scatter_colored_png};
/// # fn main() -> Result<(), cpflow::plot::PlotError> {
/// let path =
///     std::env::temp_dir().join(format!("cpflow-doc-scatter-colored-{}.png", std::process::id()));
/// let points = [[0.0, 0.0], [1.0, -1.0], [0.5, 2.0]];
/// scatter_colored_png(&path, &points, &[0.0, 0.5, 1.0], Bounds::square(3.0), 3, 120)?;
/// let bytes = std::fs::read(&path).unwrap();
/// assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
/// assert_eq!(cpflow::image_file::read_rgb8(&path).unwrap().dimensions(), (120, 120));
/// // One colour value per point.
/// let two = scatter_colored_png(&path, &points, &[0.0, 1.0], Bounds::square(3.0), 3, 120);
/// assert!(matches!(two, Err(PlotError::InvalidInput(_))));
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn scatter_colored_png(
    path: impl AsRef<Path>,
    points: &[Point2],
    color_values: &[f64],
    bounds: Bounds,
    radius: u32,
    figure: impl Into<Figure>,
) -> Result<(), PlotError> {
    if color_values.len() != points.len() {
        return Err(PlotError::InvalidInput(format!(
            "{} colour values for {} points",
            color_values.len(),
            points.len()
        )));
    }
    draw_scatter(
        path.as_ref(),
        points,
        color_values,
        bounds,
        radius,
        figure.into(),
    )
}

fn draw_scatter(
    path: &Path,
    points: &[Point2],
    color_values: &[f64],
    bounds: Bounds,
    radius: u32,
    figure: Figure,
) -> Result<(), PlotError> {
    if points.is_empty() {
        return Err(PlotError::InvalidInput("no points to plot".into()));
    }
    let fig = ResolvedFigure::plane(figure, path);
    let plain = RGBColor(110, 40, 150).mix(0.6);
    with_chart(path, &fig, bounds, Mesh::AxesOnly, |chart| {
        let dots = points
            .iter()
            .zip(color_values)
            .filter(|(p, _)| bounds.contains(**p))
            .map(|(p, t)| {
                let style = if t.is_nan() {
                    plain.filled()
                } else {
                    rainbow(*t).filled()
                };
                Circle::new((p[0], p[1]), radius.max(1), style)
            });
        chart.draw_series(dots).map_err(|e| draw_err(path, e))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::test_util::{png_stats, temp_png};

    #[test]
    fn scatter_plots_are_non_trivial_and_validate_inputs() {
        let pts: Vec<Point2> = (0..500)
            .map(|i| [(i as f64 * 0.37).sin() * 3.0, (i as f64 * 0.11).cos() * 3.0])
            .collect();
        let b = Bounds::square(4.0);
        let path = temp_png("scatter");
        scatter_png(&path, &pts, b, 2, 150).unwrap();
        let (w, _, var, ink) = png_stats(&path);
        assert_eq!(w, 150);
        assert!(var > 50.0 && ink > 0.02 && ink < 0.95, "{var} {ink}");
        let t: Vec<f64> = (0..500).map(|i| i as f64 / 499.0).collect();
        let path = temp_png("scatter-colored");
        scatter_colored_png(&path, &pts, &t, b, 2, 150).unwrap();
        let (_, _, var, _) = png_stats(&path);
        assert!(var > 50.0);
        assert!(scatter_colored_png(&path, &pts, &t[..3], b, 2, 150).is_err());
        assert!(scatter_png(&path, &[], b, 2, 150).is_err());
    }
}
