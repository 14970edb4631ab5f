//! Line charts (training curves, transport cost against KL).

use super::grid::Bounds;
use super::{Figure, Mesh, PlotError, ResolvedFigure, draw_err, with_chart};
use crate::toy::Point2;
use plotters::prelude::*;
use std::path::Path;

/// One polyline of a [`line_chart_png`].
///
/// ```
/// use cpflow::plot::{LineSeries, line_chart_png};
/// # fn main() -> Result<(), cpflow::plot::PlotError> {
/// let path = std::env::temp_dir().join(format!("cpflow-doc-series-{}.png", std::process::id()));
/// let points = (0..20).map(|i| [i as f64, 1.0 / (1.0 + i as f64)]).collect();
/// let curve = LineSeries::solid(points, (31, 119, 180));
/// let target = LineSeries::dashed(vec![[0.0, 0.1], [19.0, 0.1]], (214, 39, 40));
/// assert!(target.dashed && !curve.dashed);
/// line_chart_png(&path, &[curve, target], None, 120)?;
/// let bytes = std::fs::read(&path).unwrap();
/// assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
/// assert_eq!(cpflow::image_file::read_rgb8(&path).unwrap().dimensions(), (120, 120));
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LineSeries {
    /// The (x, y) points, drawn in order; non-finite points are skipped.
    pub points: Vec<Point2>,
    /// RGB colour.
    pub color: (u8, u8, u8),
    /// Dashed instead of solid.
    pub dashed: bool,
}

impl LineSeries {
    /// A solid series.
    pub fn solid(points: Vec<Point2>, color: (u8, u8, u8)) -> Self {
        Self {
            points,
            color,
            dashed: false,
        }
    }

    /// A dashed series.
    pub fn dashed(points: Vec<Point2>, color: (u8, u8, u8)) -> Self {
        Self {
            points,
            color,
            dashed: true,
        }
    }
}

/// Draws `series` over `bounds` (or the window around all finite points, padded by 5%, if
/// `None`) with light grey grid lines at the ticks and darker zero axes.
///
/// ```
/// use cpflow::plot::{Bounds, Figure, LineSeries, PlotError, line_chart_png};
/// # fn main() -> Result<(), cpflow::plot::PlotError> {
/// let path = std::env::temp_dir().join(format!("cpflow-doc-lines-{}.png", std::process::id()));
/// let points = (0..=10).map(|i| [i as f64, (-0.3 * i as f64).exp()]).collect();
/// let loss = LineSeries::solid(points, (0, 0, 0));
/// let fig = Figure::new(120).title("loss").labels("step", "nats");
/// line_chart_png(&path, &[loss], Some(Bounds { x: (0.0, 10.0), y: (0.0, 1.0) }), fig)?;
/// let bytes = std::fs::read(&path).unwrap();
/// assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
/// assert_eq!(cpflow::image_file::read_rgb8(&path).unwrap().dimensions(), (120, 120));
/// // Nothing finite to draw is an error.
/// let empty = LineSeries::solid(vec![[f64::NAN, 1.0]], (0, 0, 0));
/// assert!(matches!(line_chart_png(&path, &[empty], None, 120), Err(PlotError::InvalidInput(_))));
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn line_chart_png(
    path: impl AsRef<Path>,
    series: &[LineSeries],
    bounds: Option<Bounds>,
    figure: impl Into<Figure>,
) -> Result<(), PlotError> {
    let path = path.as_ref();
    let all: Vec<Point2> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p[0].is_finite() && p[1].is_finite())
        .collect();
    if all.is_empty() {
        return Err(PlotError::InvalidInput(
            "no finite point in any series".into(),
        ));
    }
    let b = bounds.unwrap_or_else(|| Bounds::around(&all, 0.05));
    let fig = ResolvedFigure::chart(figure.into(), path);
    let err = |e| draw_err(path, e);
    with_chart(path, &fig, b, Mesh::Grid, |chart| {
        let axis = RGBColor(120, 120, 120).stroke_width(1);
        let mut zero_axes = Vec::new();
        if b.x.0 < 0.0 && b.x.1 > 0.0 {
            zero_axes.push(PathElement::new(vec![(0.0, b.y.0), (0.0, b.y.1)], axis));
        }
        if b.y.0 < 0.0 && b.y.1 > 0.0 {
            zero_axes.push(PathElement::new(vec![(b.x.0, 0.0), (b.x.1, 0.0)], axis));
        }
        chart.draw_series(zero_axes).map_err(err)?;
        for s in series {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| p[0].is_finite() && p[1].is_finite())
                .map(|p| (p[0], p[1]))
                .collect();
            let style = RGBColor(s.color.0, s.color.1, s.color.2).stroke_width(3);
            if s.dashed {
                chart
                    .draw_series(DashedLineSeries::new(pts, 10, 6, style))
                    .map_err(err)?;
            } else {
                chart
                    .draw_series(plotters::series::LineSeries::new(pts, style))
                    .map_err(err)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::test_util::{png_stats, temp_png};

    #[test]
    fn line_chart_is_drawn() {
        let curve: Vec<Point2> = (0..100)
            .map(|i| [i as f64, (i as f64 * 0.1).exp()])
            .collect();
        let flat = vec![[0.0, 100.0], [99.0, 100.0]];
        let path = temp_png("lines");
        line_chart_png(
            &path,
            &[
                LineSeries::solid(curve, (31, 119, 180)),
                LineSeries::dashed(flat, (214, 39, 40)),
            ],
            None,
            200,
        )
        .unwrap();
        let (_, _, var, ink) = png_stats(&path);
        assert!(var > 50.0 && ink > 0.02, "{var} {ink}");
        assert!(line_chart_png(&path, &[LineSeries::solid(vec![], (0, 0, 0))], None, 100).is_err());
    }
}
