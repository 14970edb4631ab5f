//! Maps of the plane: a mesh grid pushed through a map (the gradient map `∇F` of a convex
//! potential, reference `*_z_meshgrid.png`), and quiver plots of vector fields.

use super::colors::viridis;
use super::grid::Bounds;
use super::{Figure, Mesh, PlotError, ResolvedFigure, draw_err, with_chart};
use crate::toy::Point2;
use plotters::prelude::*;
use std::path::Path;

/// Draws the image of a regular mesh under a map: `mapped[j * nx + i] = f(x_ij)` for the mesh
/// nodes in [`crate::plot::Grid2d::points`] order. Each mesh row and column becomes a
/// polyline (rows in blue, columns in orange). `frame`, if given, is drawn as a red rectangle
/// (e.g. the window of the undeformed mesh). Segments with a non-finite end are skipped.
///
/// ```
/// use cpflow::plot::{Bounds, Grid2d, PlotError, warped_mesh_png};
/// # fn main() -> Result<(), cpflow::plot::PlotError> {
/// let path = std::env::temp_dir().join(format!("cpflow-doc-mesh-{}.png", std::process::id()));
/// // A 5×5 mesh of [−1, 1]² pushed through x ↦ 2x (the gradient of ‖x‖²).
/// let b = Bounds::square(1.0);
/// let mesh = Grid2d::points(b, 5, 5);
/// let mapped: Vec<[f64; 2]> = mesh.iter().map(|p| [2.0 * p[0], 2.0 * p[1]]).collect();
/// warped_mesh_png(&path, &mapped, 5, 5, Bounds::square(2.0), Some(b), 120)?;
/// let bytes = std::fs::read(&path).unwrap();
/// assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
/// assert_eq!(cpflow::image_file::read_rgb8(&path).unwrap().dimensions(), (120, 120));
/// // The mapped points must fill the mesh.
/// let short = warped_mesh_png(&path, &mapped[..24], 5, 5, b, None, 120);
/// assert!(matches!(short, Err(PlotError::InvalidInput(_))));
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn warped_mesh_png(
    path: impl AsRef<Path>,
    mapped: &[Point2],
    nx: usize,
    ny: usize,
    bounds: Bounds,
    frame: Option<Bounds>,
    figure: impl Into<Figure>,
) -> Result<(), PlotError> {
    let path = path.as_ref();
    if nx < 2 || ny < 2 || mapped.len() != nx * ny {
        return Err(PlotError::InvalidInput(format!(
            "mesh {nx}×{ny} with {} mapped points",
            mapped.len()
        )));
    }
    let fig = ResolvedFigure::plane(figure.into(), path);
    let err = |e| draw_err(path, e);
    let row_style = RGBColor(31, 119, 180).stroke_width(1);
    let col_style = RGBColor(255, 127, 14).stroke_width(1);
    let finite = |p: &Point2| p[0].is_finite() && p[1].is_finite();
    with_chart(path, &fig, bounds, Mesh::AxesOnly, |chart| {
        let segment = |a: Point2, b: Point2| vec![(a[0], a[1]), (b[0], b[1])];
        let mut rows = Vec::new();
        let mut cols = Vec::new();
        for j in 0..ny {
            for i in 0..nx {
                let p = mapped[j * nx + i];
                if i + 1 < nx {
                    let q = mapped[j * nx + i + 1];
                    if finite(&p) && finite(&q) {
                        rows.push(segment(p, q));
                    }
                }
                if j + 1 < ny {
                    let q = mapped[(j + 1) * nx + i];
                    if finite(&p) && finite(&q) {
                        cols.push(segment(p, q));
                    }
                }
            }
        }
        chart
            .draw_series(rows.into_iter().map(|s| PathElement::new(s, row_style)))
            .map_err(err)?;
        chart
            .draw_series(cols.into_iter().map(|s| PathElement::new(s, col_style)))
            .map_err(err)?;
        if let Some(f) = frame {
            let corners = vec![
                (f.x.0, f.y.0),
                (f.x.1, f.y.0),
                (f.x.1, f.y.1),
                (f.x.0, f.y.1),
                (f.x.0, f.y.0),
            ];
            chart
                .draw_series(std::iter::once(PathElement::new(
                    corners,
                    RED.stroke_width(2),
                )))
                .map_err(err)?;
        }
        Ok(())
    })
}

/// Quiver plot: an arrow `vectors[k]` at `origins[k]`, all scaled by one factor so that the
/// longest arrow is 6% of the window width, coloured by length (Viridis).
///
/// ```
/// use cpflow::plot::{Bounds, Figure, Grid2d, PlotError, quiver_png};
/// # fn main() -> Result<(), cpflow::plot::PlotError> {
/// let path = std::env::temp_dir().join(format!("cpflow-doc-quiver-{}.png", std::process::id()));
/// // The rotation field (−y, x) on a 6×6 grid.
/// let origins = Grid2d::points(Bounds::square(1.5), 6, 6);
/// let arrows: Vec<[f64; 2]> = origins.iter().map(|p| [-p[1], p[0]]).collect();
/// quiver_png(&path, &origins, &arrows, Bounds::square(2.0), Figure::new(120).title("rotation"))?;
/// let bytes = std::fs::read(&path).unwrap();
/// assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
/// assert_eq!(cpflow::image_file::read_rgb8(&path).unwrap().dimensions(), (120, 120));
/// let short = quiver_png(&path, &origins, &arrows[1..], Bounds::square(2.0), 120);
/// assert!(matches!(short, Err(PlotError::InvalidInput(_))));
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn quiver_png(
    path: impl AsRef<Path>,
    origins: &[Point2],
    vectors: &[Point2],
    bounds: Bounds,
    figure: impl Into<Figure>,
) -> Result<(), PlotError> {
    let path = path.as_ref();
    if origins.is_empty() || origins.len() != vectors.len() {
        return Err(PlotError::InvalidInput(format!(
            "{} origins and {} vectors",
            origins.len(),
            vectors.len()
        )));
    }
    let len = |v: &Point2| v[0].hypot(v[1]);
    let max_len = vectors
        .iter()
        .map(len)
        .filter(|l| l.is_finite())
        .fold(0.0, f64::max);
    let scale = if max_len > 0.0 {
        0.06 * (bounds.x.1 - bounds.x.0) / max_len
    } else {
        0.0
    };
    let fig = ResolvedFigure::plane(figure.into(), path);
    let err = |e| draw_err(path, e);
    with_chart(path, &fig, bounds, Mesh::AxesOnly, |chart| {
        let mut arrows = Vec::new();
        for (o, v) in origins.iter().zip(vectors) {
            let l = len(v);
            if !l.is_finite() || !o[0].is_finite() || !o[1].is_finite() {
                continue;
            }
            let tip = [o[0] + scale * v[0], o[1] + scale * v[1]];
            let style = viridis(if max_len > 0.0 { l / max_len } else { 0.0 }).stroke_width(1);
            arrows.push(PathElement::new(
                vec![(o[0], o[1]), (tip[0], tip[1])],
                style,
            ));
            // Arrow head: two strokes at ±25° from the reversed direction, 30% of the length.
            let (dx, dy) = (tip[0] - o[0], tip[1] - o[1]);
            for angle in [0.44f64, -0.44] {
                let (s, c) = angle.sin_cos();
                let hx = -(dx * c - dy * s) * 0.3;
                let hy = -(dx * s + dy * c) * 0.3;
                arrows.push(PathElement::new(
                    vec![(tip[0], tip[1]), (tip[0] + hx, tip[1] + hy)],
                    style,
                ));
            }
        }
        chart.draw_series(arrows).map_err(err)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::Grid2d;
    use crate::plot::test_util::{png_stats, temp_png};

    #[test]
    fn warped_mesh_and_quiver_are_drawn() {
        let b = Bounds::square(3.0);
        let (nx, ny) = (20, 20);
        let nodes = Grid2d::points(b, nx, ny);
        // A shear-and-shrink map.
        let mapped: Vec<Point2> = nodes
            .iter()
            .map(|p| [0.5 * p[0] + 0.2 * p[1], 0.7 * p[1]])
            .collect();
        let path = temp_png("mesh");
        warped_mesh_png(&path, &mapped, nx, ny, Bounds::square(4.0), Some(b), 160).unwrap();
        let (_, _, var, ink) = png_stats(&path);
        assert!(var > 100.0 && ink > 0.05 && ink < 0.9, "{var} {ink}");
        assert!(warped_mesh_png(&path, &mapped[1..], nx, ny, b, None, 160).is_err());

        let vecs: Vec<Point2> = nodes.iter().map(|p| [-p[1], p[0]]).collect();
        let path = temp_png("quiver");
        quiver_png(&path, &nodes, &vecs, Bounds::square(3.5), 160).unwrap();
        let (_, _, var, ink) = png_stats(&path);
        assert!(var > 50.0 && ink > 0.02, "{var} {ink}");
        assert!(quiver_png(&path, &nodes, &vecs[1..], b, 160).is_err());
    }
}
