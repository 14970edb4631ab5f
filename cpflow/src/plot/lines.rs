//! Line charts (training curves, transport cost against KL).

use super::grid::Bounds;
use super::{PlotError, draw_err, with_chart};
use crate::toy::Point2;
use plotters::prelude::*;
use std::path::Path;

/// One polyline of a [`line_chart_png`].
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

/// "Nice" tick positions (multiples of 1, 2 or 5 × 10ᵏ, about 4–9 of them) inside `[lo, hi]`.
pub(crate) fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        return Vec::new();
    }
    // The smallest nice step giving at most ~9 intervals.
    let raw = span / 8.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Draws `series` over `bounds` (or the window around all finite points, padded by 5%, if
/// `None`) with light grey grid lines at [`nice_ticks`] positions and darker zero axes.
/// No text is drawn (see the module docs): pair the PNG with the numbers it shows.
pub fn line_chart_png(
    path: impl AsRef<Path>,
    series: &[LineSeries],
    bounds: Option<Bounds>,
    size: u32,
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
    let err = draw_err(path);
    with_chart(path, size, b, |chart| {
        let grey = RGBColor(220, 220, 220).stroke_width(1);
        let axis = RGBColor(120, 120, 120).stroke_width(1);
        let mut grid = Vec::new();
        for x in nice_ticks(b.x.0, b.x.1) {
            let style = if x == 0.0 { axis } else { grey };
            grid.push(PathElement::new(vec![(x, b.y.0), (x, b.y.1)], style));
        }
        for y in nice_ticks(b.y.0, b.y.1) {
            let style = if y == 0.0 { axis } else { grey };
            grid.push(PathElement::new(vec![(b.x.0, y), (b.x.1, y)], style));
        }
        chart.draw_series(grid).map_err(|e| err(&e))?;
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
                    .map_err(|e| err(&e))?;
            } else {
                chart
                    .draw_series(plotters::series::LineSeries::new(pts, style))
                    .map_err(|e| err(&e))?;
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
    fn ticks_are_nice_and_inside() {
        let t = nice_ticks(0.0, 1.0);
        let expected = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
        assert_eq!(t.len(), expected.len());
        assert!(
            t.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-12),
            "{t:?}"
        );
        let t = nice_ticks(-3.7, 12.2);
        assert!(t.iter().all(|v| *v >= -3.7 && *v <= 12.2));
        assert!(t.len() >= 4 && t.len() <= 11, "{t:?}");
        assert!(nice_ticks(1.0, 1.0).is_empty());
    }

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
