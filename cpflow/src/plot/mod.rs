//! PNG plots for 2-D flows (paper Fig. 1, Fig. 3) and the optimal-transport experiment
//! (Fig. 4), drawn with `plotters` on its bitmap backend (feature `plot`).
//!
//! Every function takes plain data (points, a [`Grid2d`] of values, a mapped mesh, line
//! series) and writes one PNG; nothing here knows about models, so the plots can be tested
//! against synthetic inputs.
//!
//! Every figure carries a title, axis labels and tick labels, set with a [`Figure`] (a bare
//! pixel size gives the defaults: the file name as title). The text is drawn with DejaVu Sans,
//! embedded in the crate (`cpflow/assets/DejaVuSans.ttf`, licence beside it) and registered
//! with plotters' `ab_glyph` renderer on first use, so no system font is needed. Raster plots
//! (heat maps, histograms, contours) fill the plot area pixel by pixel; line charts add light
//! grid lines at the ticks.
//!
//! ```
//! use cpflow::plot::{Bounds, Figure, Grid2d, density_heatmap_png};
//! let b = Bounds::square(4.0);
//! let g = Grid2d::evaluate(b, 64, 64, |p| (-0.5 * (p[0] * p[0] + p[1] * p[1])).exp());
//! let path = std::env::temp_dir().join(format!("cpflow-doc-heat-{}.png", std::process::id()));
//! let fig = Figure::new(300).title("standard normal density").labels("x₁", "x₂");
//! density_heatmap_png(&path, &g, fig).unwrap();
//! assert!(path.exists());
//! # std::fs::remove_file(path).ok();
//! ```

mod colors;
mod field;
mod figure;
mod grid;
mod heatmap;
mod lines;
mod scatter;

pub use colors::{bupu, rainbow, viridis};
pub use field::{quiver_png, warped_mesh_png};
pub use figure::Figure;
pub use grid::{Bounds, Grid2d};
pub use heatmap::{density_heatmap_png, histogram_png, potential_contour_png};
pub use lines::{LineSeries, line_chart_png};
pub use scatter::{scatter_colored_png, scatter_png};

use crate::toy::Point2;
pub(crate) use figure::ResolvedFigure;
use figure::{FONT_FAMILY, ensure_font};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::path::Path;

/// What can go wrong while drawing.
///
/// ```
/// use cpflow::plot::{Bounds, PlotError, scatter_png};
/// let path = std::env::temp_dir().join("cpflow-doc-plot-error.png");
/// // An empty window is refused before anything is drawn.
/// let err = scatter_png(&path, &[[0.0, 0.0]], Bounds::square(0.0), 2, 120).unwrap_err();
/// assert!(matches!(err, PlotError::InvalidInput(_)), "{err}");
/// assert!(err.to_string().contains("plot window"));
/// // A file that cannot be written (its folder is a file) is a drawing error naming it.
/// let file = std::env::temp_dir().join(format!("cpflow-doc-plot-error-{}", std::process::id()));
/// std::fs::write(&file, b"not a folder").unwrap();
/// let err = scatter_png(file.join("x.png"), &[[0.0, 0.0]], Bounds::square(1.0), 2, 120);
/// let err = err.unwrap_err();
/// assert!(matches!(&err, PlotError::Draw { path, .. } if path.ends_with("x.png")), "{err}");
/// # std::fs::remove_file(&file).ok();
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// The inputs are inconsistent (empty data, grid size mismatch, non-finite bounds, …).
    #[error("invalid plot input: {0}")]
    InvalidInput(String),
    /// plotters, the PNG encoder or the file write failed; its error is the source.
    #[error("drawing {path} failed")]
    Draw {
        /// The output file.
        path: String,
        /// plotters' error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The embedded font could not be registered with plotters.
    #[error("the embedded plot font (DejaVu Sans) could not be loaded")]
    Font,
}

/// [`PlotError::Draw`] for `path`, keeping plotters' error as the source.
pub(crate) fn draw_err<E: std::error::Error + Send + Sync + 'static>(
    path: &Path,
    e: E,
) -> PlotError {
    PlotError::Draw {
        path: path.display().to_string(),
        source: Box::new(e),
    }
}

/// The chart every plot draws on: f64 × f64 Cartesian coordinates on a bitmap.
pub(crate) type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Whether the tick grid is drawn under the data ([`Mesh::Grid`], line charts) or only the
/// axes, ticks and labels around it ([`Mesh::AxesOnly`], drawn after the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mesh {
    Grid,
    AxesOnly,
}

/// A titled chart over `bounds` on a white `size × size` canvas with labelled axes, handed to
/// `draw`; the PNG is written at the end.
pub(crate) fn with_chart<F>(
    path: &Path,
    fig: &ResolvedFigure,
    bounds: Bounds,
    mesh: Mesh,
    draw: F,
) -> Result<(), PlotError>
where
    F: FnOnce(&mut Chart<'_, '_>) -> Result<(), PlotError>,
{
    bounds.validate()?;
    ensure_font()?;
    let err = |e| draw_err(path, e);
    let layout = fig.layout(bounds, |v| tick_label(v, bounds.y));
    let mut pixels = vec![0u8; 3 * fig.size as usize * fig.size as usize];
    let root = BitMapBackend::with_buffer(&mut pixels, (fig.size, fig.size)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            &fig.title,
            (FONT_FAMILY, fig.title_px).into_font().color(&BLACK),
        )
        .margin_top(layout.top)
        .margin_bottom(layout.bottom)
        .margin_left(layout.left)
        .margin_right(layout.right)
        .x_label_area_size(layout.x_area)
        .y_label_area_size(layout.y_area)
        .build_cartesian_2d(bounds.x.0..bounds.x.1, bounds.y.0..bounds.y.1)
        .map_err(err)?;
    let tick_style = (FONT_FAMILY, fig.tick_px).into_font().color(&BLACK);
    let desc_style = (FONT_FAMILY, fig.label_px).into_font().color(&BLACK);
    let x_fmt = |v: &f64| tick_label(*v, bounds.x);
    let y_fmt = |v: &f64| tick_label(*v, bounds.y);
    let draw_mesh = |chart: &mut Chart<'_, '_>, grid: bool| {
        let mut m = chart.configure_mesh();
        m.x_desc(fig.x_label.as_str())
            .y_desc(fig.y_label.as_str())
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(tick_style.clone())
            .axis_desc_style(desc_style.clone())
            .axis_style(RGBColor(60, 60, 60));
        if grid {
            m.bold_line_style(RGBColor(215, 215, 215))
                .light_line_style(TRANSPARENT);
        } else {
            m.disable_mesh();
        }
        m.draw().map_err(err)
    };
    if mesh == Mesh::Grid {
        draw_mesh(&mut chart, true)?;
    }
    draw(&mut chart)?;
    if mesh == Mesh::AxesOnly {
        draw_mesh(&mut chart, false)?;
    }
    root.present().map_err(err)?;
    drop(chart);
    drop(root);
    let size = (fig.size, fig.size);
    crate::image_file::write_png(path, size, crate::image_file::PngColor::Rgb8, &pixels)
        .map_err(|e| draw_err(path, e))
}

/// A tick label: few digits, scaled to the axis span (`0.5`, `-2`, `1.2e-5`, `3e+04`).
fn tick_label(v: f64, range: (f64, f64)) -> String {
    let span = (range.1 - range.0).abs();
    let mag = v.abs().max(span);
    if v == 0.0 || v.abs() < span * 1e-9 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&mag) {
        let s = format!("{v:.1e}");
        return s.replace(".0e", "e");
    }
    // Decimals enough to tell ticks ~span/6 apart (trailing zeros are dropped).
    let decimals = (-(span / 20.0).log10().floor()).clamp(0.0, 6.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Fills the plot area of a titled chart over `bounds` pixel by pixel: `paint(w, h, centres)`
/// gets the plot area's size and the data point at the centre of each of its pixels
/// (row-major from the top-left, y pointing up) and returns one colour per pixel.
pub(crate) fn raster_png(
    path: &Path,
    fig: &ResolvedFigure,
    bounds: Bounds,
    paint: impl FnOnce(u32, u32, &[Point2]) -> Result<Vec<RGBColor>, PlotError>,
) -> Result<(), PlotError> {
    with_chart(path, fig, bounds, Mesh::AxesOnly, |chart| {
        let area = chart.plotting_area().strip_coord_spec();
        let (w, h) = area.dim_in_pixel();
        let centres: Vec<Point2> = (0..h)
            .flat_map(|py| {
                (0..w).map(move |px| {
                    [
                        bounds.x.0 + (px as f64 + 0.5) / w as f64 * (bounds.x.1 - bounds.x.0),
                        bounds.y.1 - (py as f64 + 0.5) / h as f64 * (bounds.y.1 - bounds.y.0),
                    ]
                })
            })
            .collect();
        let colors = paint(w, h, &centres)?;
        if colors.len() != centres.len() {
            return Err(PlotError::InvalidInput(format!(
                "{} colours for a {w}×{h} raster",
                colors.len()
            )));
        }
        for (k, c) in colors.iter().enumerate() {
            let (px, py) = ((k as u32 % w) as i32, (k as u32 / w) as i32);
            area.draw_pixel((px, py), c)
                .map_err(|e| draw_err(path, e))?;
        }
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::PathBuf;

    /// A fresh temporary PNG path for one test, in a directory of its own that is removed
    /// when the guard drops, unless the test is failing.
    pub fn temp_png(name: &str) -> TempPng {
        let dir =
            std::env::temp_dir().join(format!("cpflow-plot-tests-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempPng(dir.join(format!("{name}.png")))
    }

    /// A test's PNG path ([`temp_png`]).
    pub struct TempPng(PathBuf);

    impl std::ops::Deref for TempPng {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    impl AsRef<std::path::Path> for TempPng {
        fn as_ref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TempPng {
        fn drop(&mut self) {
            if !std::thread::panicking()
                && let Some(dir) = self.0.parent()
            {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    /// Decodes a PNG and returns (width, height, variance of the grey levels, fraction of
    /// non-white pixels).
    pub fn png_stats(path: &std::path::Path) -> (u32, u32, f64, f64) {
        let img = crate::image_file::read_rgb8(path).unwrap();
        let (w, h) = img.dimensions();
        let px: Vec<f64> = img.to_pil_gray().into_iter().map(f64::from).collect();
        let n = px.len() as f64;
        let mean = px.iter().sum::<f64>() / n;
        let var = px.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let ink = px.iter().filter(|v| **v < 250.0).count() as f64 / n;
        (w, h, var, ink)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::temp_png;
    use super::*;

    /// Fraction of dark pixels (grey level < 100) in rows `rows` of a PNG.
    fn dark_fraction(path: &Path, rows: std::ops::Range<u32>, cols: std::ops::Range<u32>) -> f64 {
        let img = crate::image_file::read_rgb8(path).unwrap();
        let grey = img.to_pil_gray();
        let n = (rows.len() * cols.len()) as f64;
        let dark = rows
            .flat_map(|y| cols.clone().map(move |x| (x, y)))
            .filter(|&(x, y)| grey[(y * img.width + x) as usize] < 100)
            .count();
        dark as f64 / n
    }

    #[test]
    fn titles_axis_labels_and_tick_labels_are_rendered_as_dark_text() {
        let path = temp_png("text-bands");
        let series = [LineSeries::solid(
            vec![[0.0, 0.0], [1.0, 1.0]],
            (31, 119, 180),
        )];
        let size = 400;
        let bounds = Bounds {
            x: (0.0, 1.0),
            y: (0.0, 1.0),
        };
        let fig = Figure::new(size)
            .title("Transport cost")
            .labels("iteration", "cost");
        line_chart_png(&path, &series, Some(bounds), fig.clone()).unwrap();
        let r = ResolvedFigure::chart(fig, &path);
        let l = r.layout(bounds, |v| tick_label(v, bounds.y));
        // The title band: the top margin plus plotters' caption band, less the upper half of
        // the topmost y tick label (centred on the plot's top edge). The line is blue (grey
        // level ≈ 100–110) and the grid light grey, so dark pixels there can only be text.
        let title_rows = 0..(l.top + r.caption_height() - (r.tick_px / 2.0) as u32 - 1);
        let title_ink = dark_fraction(&path, title_rows.clone(), 0..size);
        assert!(title_ink > 0.01, "title band has {title_ink} dark pixels");
        // Centred over the plot area: no text in the outer fifths of the band.
        let left = dark_fraction(&path, title_rows.clone(), 0..size / 5);
        let right = dark_fraction(&path, title_rows.clone(), 4 * size / 5..size);
        assert!(
            left == 0.0 && right == 0.0,
            "title not centred: {left} {right}"
        );
        // Tick labels and the y label left of the axis, tick labels and the x label under it.
        let y_band = dark_fraction(&path, title_rows.end..size - l.x_area, 0..l.left + l.y_area);
        let x_band = dark_fraction(&path, size - l.x_area..size, l.left + l.y_area..size);
        assert!(y_band > 0.005 && x_band > 0.005, "{y_band} {x_band}");

        // A one-letter title leaves the band nearly empty: the ink above is the title's.
        let other = temp_png("text-bands-other");
        let fig = Figure::new(size).title("T").labels("iteration", "cost");
        line_chart_png(&other, &series, Some(bounds), fig).unwrap();
        let short = dark_fraction(&other, title_rows, 0..size);
        assert!(
            short < title_ink / 4.0,
            "one letter vs 14: {short} vs {title_ink}"
        );
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(0.5, (0.0, 1.0)), "0.5");
        assert_eq!(tick_label(-2.0, (-4.0, 4.0)), "-2");
        assert_eq!(tick_label(1e-12, (0.0, 1.0)), "0");
        assert_eq!(tick_label(1.2e-5, (0.0, 2e-5)), "1.2e-5");
        assert_eq!(tick_label(30000.0, (0.0, 2e5)), "3e4");
        assert_eq!(tick_label(2.875, (2.8, 2.9)), "2.875");
    }

    #[test]
    fn draw_errors_keep_the_cause_as_source() {
        use std::error::Error;
        // The figure's directory is a file: the write fails.
        let png = temp_png("not-a-dir");
        let not_a_dir = png.with_extension("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let path = not_a_dir.join("x.png");
        let err = scatter_png(&path, &[[0.0, 0.0]], Bounds::square(1.0), 1, 100).unwrap_err();
        assert!(matches!(err, PlotError::Draw { .. }), "{err:?}");
        let source = err.source().expect("the cause is the source");
        assert!(!err.to_string().contains(&source.to_string()), "{err}");
        assert!(!path.exists());
        std::fs::remove_file(&not_a_dir).ok();
    }

    /// A figure in a directory that does not exist yet: created, PNG complete, no
    /// temporary file left beside it.
    #[test]
    fn figures_create_their_directory_and_leave_no_temporary_file() {
        let png = temp_png("new-dir");
        let dir = png.with_extension("");
        std::fs::remove_dir_all(&dir).ok();
        let path = dir.join("sub").join("x.png");
        scatter_png(&path, &[[0.0, 0.0]], Bounds::square(1.0), 1, 100).unwrap();
        let img = crate::image_file::read_rgb8(&path).unwrap();
        assert_eq!(img.dimensions(), (100, 100));
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.png")]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
