//! Plot windows and regular grids of values.

use super::PlotError;
use crate::toy::Point2;

/// An axis-aligned window `[x.0, x.1] × [y.0, y.1]`.
///
/// ```
/// use cpflow::plot::Bounds;
/// assert_eq!(Bounds::square(4.0), Bounds { x: (-4.0, 4.0), y: (-4.0, 4.0) });
/// // The window around points, padded by 10% of the span on every side.
/// let b = Bounds::around(&[[0.0, 0.0], [2.0, 1.0], [f64::NAN, 9.0]], 0.1);
/// assert!((b.x.0 + 0.2).abs() < 1e-12 && (b.x.1 - 2.2).abs() < 1e-12);
/// assert!((b.y.0 + 0.1).abs() < 1e-12 && (b.y.1 - 1.1).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// x range (min, max).
    pub x: (f64, f64),
    /// y range (min, max).
    pub y: (f64, f64),
}

impl Bounds {
    /// `[−h, h]²`.
    pub fn square(half_width: f64) -> Self {
        Self {
            x: (-half_width, half_width),
            y: (-half_width, half_width),
        }
    }

    /// The smallest window holding all `points`, enlarged by `pad` (a fraction of the span)
    /// on every side; `[−1, 1]²` for no finite point.
    pub fn around(points: &[Point2], pad: f64) -> Self {
        let finite = points
            .iter()
            .filter(|p| p[0].is_finite() && p[1].is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        );
        for p in finite {
            x0 = x0.min(p[0]);
            x1 = x1.max(p[0]);
            y0 = y0.min(p[1]);
            y1 = y1.max(p[1]);
        }
        if !x0.is_finite() {
            return Self::square(1.0);
        }
        let px = ((x1 - x0) * pad).max(1e-9);
        let py = ((y1 - y0) * pad).max(1e-9);
        Self {
            x: (x0 - px, x1 + px),
            y: (y0 - py, y1 + py),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), PlotError> {
        let ok = |r: (f64, f64)| r.0.is_finite() && r.1.is_finite() && r.0 < r.1;
        if ok(self.x) && ok(self.y) {
            Ok(())
        } else {
            Err(PlotError::InvalidInput(format!(
                "the plot window x from {} to {}, y from {} to {} needs finite ends and a \
                 positive width and height",
                self.x.0, self.x.1, self.y.0, self.y.1
            )))
        }
    }

    pub(crate) fn contains(&self, p: Point2) -> bool {
        p[0] >= self.x.0 && p[0] <= self.x.1 && p[1] >= self.y.0 && p[1] <= self.y.1
    }
}

/// Values on a regular `nx × ny` grid of cell centres over a [`Bounds`] window. Stored
/// row-major with row `j` at height `y_j` (row 0 at the bottom, `y.0`) and column `i` at
/// `x_i`: `values[j * nx + i]`.
///
/// ```
/// use cpflow::plot::{Bounds, Grid2d};
/// let b = Bounds { x: (0.0, 4.0), y: (-1.0, 1.0) };
/// let f = |p: [f64; 2]| 3.0 * p[0] - p[1];
/// let g = Grid2d::evaluate(b, 5, 3, f);
/// // Row 0 is the bottom edge; the corners are the window's.
/// assert_eq!((g.point(0, 0), g.point(4, 2)), ([0.0, -1.0], [4.0, 1.0]));
/// assert_eq!(g.values[2 * 5 + 1], f([1.0, 1.0]));
/// // Bilinear interpolation is exact for an affine function.
/// assert!((g.interpolate([2.5, 0.3]) - f([2.5, 0.3])).abs() < 1e-12);
/// assert_eq!(g.finite_range(), Some((-1.0, 13.0)));
/// // Values computed at `points` (e.g. a model's log-density) in the same order:
/// let values: Vec<f64> = Grid2d::points(b, 5, 3).into_iter().map(f).collect();
/// assert_eq!(Grid2d::from_values(b, 5, 3, values).unwrap(), g);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Grid2d {
    /// The window the grid covers.
    pub bounds: Bounds,
    /// Number of columns (x samples).
    pub nx: usize,
    /// Number of rows (y samples).
    pub ny: usize,
    /// Row-major values, `values[j * nx + i]` at [`Grid2d::point`]`(i, j)`.
    pub values: Vec<f64>,
}

impl Grid2d {
    /// The grid points, row-major (the order [`Grid2d::from_values`] expects): feed them to a
    /// model in one batch and wrap the outputs.
    pub fn points(bounds: Bounds, nx: usize, ny: usize) -> Vec<Point2> {
        let mut pts = Vec::with_capacity(nx * ny);
        for j in 0..ny {
            for i in 0..nx {
                pts.push(Self::node(bounds, nx, ny, i, j));
            }
        }
        pts
    }

    fn node(bounds: Bounds, nx: usize, ny: usize, i: usize, j: usize) -> Point2 {
        let fx = if nx > 1 {
            i as f64 / (nx - 1) as f64
        } else {
            0.5
        };
        let fy = if ny > 1 {
            j as f64 / (ny - 1) as f64
        } else {
            0.5
        };
        [
            bounds.x.0 + fx * (bounds.x.1 - bounds.x.0),
            bounds.y.0 + fy * (bounds.y.1 - bounds.y.0),
        ]
    }

    /// Point `(i, j)` of the grid (column `i`, row `j`); the corners are the window corners.
    pub fn point(&self, i: usize, j: usize) -> Point2 {
        Self::node(self.bounds, self.nx, self.ny, i, j)
    }

    /// Wraps values computed at [`Grid2d::points`].
    pub fn from_values(
        bounds: Bounds,
        nx: usize,
        ny: usize,
        values: Vec<f64>,
    ) -> Result<Self, PlotError> {
        bounds.validate()?;
        if nx < 2 || ny < 2 || values.len() != nx * ny {
            return Err(PlotError::InvalidInput(format!(
                "grid {nx}×{ny} with {} values (need ≥ 2×2)",
                values.len()
            )));
        }
        Ok(Self {
            bounds,
            nx,
            ny,
            values,
        })
    }

    /// Evaluates `f` at every grid point (sizes below 2 are raised to 2).
    pub fn evaluate(bounds: Bounds, nx: usize, ny: usize, f: impl Fn(Point2) -> f64) -> Self {
        let (nx, ny) = (nx.max(2), ny.max(2));
        let values = Self::points(bounds, nx, ny).into_iter().map(f).collect();
        Self {
            bounds,
            nx,
            ny,
            values,
        }
    }

    /// Bilinear interpolation at `p` (clamped to the window).
    pub fn interpolate(&self, p: Point2) -> f64 {
        let b = self.bounds;
        let fx = ((p[0] - b.x.0) / (b.x.1 - b.x.0)).clamp(0.0, 1.0) * (self.nx - 1) as f64;
        let fy = ((p[1] - b.y.0) / (b.y.1 - b.y.0)).clamp(0.0, 1.0) * (self.ny - 1) as f64;
        let i0 = (fx.floor() as usize).min(self.nx - 2);
        let j0 = (fy.floor() as usize).min(self.ny - 2);
        let (tx, ty) = (fx - i0 as f64, fy - j0 as f64);
        let v = |i: usize, j: usize| self.values[j * self.nx + i];
        let bottom = v(i0, j0) * (1.0 - tx) + v(i0 + 1, j0) * tx;
        let top = v(i0, j0 + 1) * (1.0 - tx) + v(i0 + 1, j0 + 1) * tx;
        bottom * (1.0 - ty) + top * ty
    }

    /// (min, max) over the finite values; `None` if there are none.
    pub fn finite_range(&self) -> Option<(f64, f64)> {
        let mut it = self.values.iter().copied().filter(|v| v.is_finite());
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_points_and_interpolation_reproduce_linear_functions() {
        let b = Bounds {
            x: (-1.0, 3.0),
            y: (0.0, 2.0),
        };
        let f = |p: Point2| 2.0 * p[0] - 3.0 * p[1] + 1.0;
        let g = Grid2d::evaluate(b, 5, 4, f);
        assert_eq!(g.point(0, 0), [-1.0, 0.0]);
        assert_eq!(g.point(4, 3), [3.0, 2.0]);
        // Bilinear interpolation is exact for affine functions.
        for p in [[0.3, 0.7], [2.9, 1.99], [-1.0, 0.0]] {
            assert!((g.interpolate(p) - f(p)).abs() < 1e-12);
        }
        assert_eq!(Grid2d::points(b, 5, 4).len(), 20);
        assert!(Grid2d::from_values(b, 5, 4, vec![0.0; 19]).is_err());
        assert_eq!(g.finite_range(), Some((f([-1.0, 2.0]), f([3.0, 0.0]))));
    }

    #[test]
    fn bounds_around_points() {
        let b = Bounds::around(&[[0.0, 1.0], [2.0, -1.0], [f64::NAN, 5.0]], 0.0);
        assert!((b.x.0 - 0.0).abs() < 1e-6 && (b.x.1 - 2.0).abs() < 1e-6);
        assert!((b.y.0 + 1.0).abs() < 1e-6 && (b.y.1 - 1.0).abs() < 1e-6);
        assert!(Bounds::square(0.0).validate().is_err());
    }

    /// A bad window is described in words, not as a `Debug` dump of the struct.
    #[test]
    fn bad_bounds_are_described_in_words() {
        for b in [Bounds::square(0.0), Bounds::square(f64::NAN)] {
            let err = b.validate().unwrap_err().to_string();
            assert!(!err.contains("Bounds {"), "{err}");
            assert!(
                err.contains("plot window") && err.contains("positive width"),
                "{err}"
            );
        }
    }
}
