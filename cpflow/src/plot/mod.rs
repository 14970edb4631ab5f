//! PNG plots for 2-D flows (paper Fig. 1, Fig. 3) and the optimal-transport experiment
//! (Fig. 4), drawn with `plotters` on its bitmap backend.
//!
//! Every function takes plain data (points, a [`Grid2d`] of values, a mapped mesh, line
//! series) and writes one PNG; nothing here knows about models, so the plots can be tested
//! against synthetic inputs.
//!
//! **No text is drawn.** plotters' `ab_glyph` backend needs a font file registered at run
//! time, and neither this machine nor CI is guaranteed to have one (no system font lookup
//! is compiled in). The reference's own toy figures are drawn with `plt.axis('off')` anyway.
//! Axis ranges are the [`Bounds`] passed in; the CLI writes them, with the numbers behind each
//! figure, to a JSON/CSV file next to the PNG. Line charts draw light grid lines at "nice"
//! tick positions (1, 2 or 5 × 10ᵏ) so values can still be read off against the table.
//!
//! ```
//! use cpflow::plot::{Bounds, Grid2d, density_heatmap_png};
//! let b = Bounds::square(4.0);
//! let g = Grid2d::evaluate(b, 64, 64, |p| (-0.5 * (p[0] * p[0] + p[1] * p[1])).exp());
//! let path = std::env::temp_dir().join(format!("cpflow-doc-heat-{}.png", std::process::id()));
//! density_heatmap_png(&path, &g, 200).unwrap();
//! assert!(path.exists());
//! # std::fs::remove_file(path).ok();
//! ```

mod colors;
mod field;
mod grid;
mod heatmap;
mod lines;
mod scatter;

pub use colors::{bupu, rainbow, viridis};
pub use field::{quiver_png, warped_mesh_png};
pub use grid::{Bounds, Grid2d};
pub use heatmap::{density_heatmap_png, histogram_png, potential_contour_png};
pub use lines::{LineSeries, line_chart_png};
pub use scatter::{scatter_colored_png, scatter_png};

use plotters::prelude::*;
use std::path::Path;

/// What can go wrong while drawing.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The inputs are inconsistent (empty data, grid size mismatch, non-finite bounds, …).
    #[error("invalid plot input: {0}")]
    InvalidInput(String),
    /// plotters (or the PNG encoder behind it) failed.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The output file.
        path: String,
        /// plotters' message.
        message: String,
    },
}

pub(crate) fn draw_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> PlotError + '_ {
    move |e| PlotError::Draw {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Cartesian chart over `bounds` filling a `size × size` white canvas with a small margin,
/// with no labels (see the module docs), handed to `draw`; the PNG is written at the end.
pub(crate) fn with_chart<F>(
    path: &Path,
    size: u32,
    bounds: Bounds,
    draw: F,
) -> Result<(), PlotError>
where
    F: FnOnce(
        &mut ChartContext<
            '_,
            BitMapBackend<'_>,
            Cartesian2d<
                plotters::coord::types::RangedCoordf64,
                plotters::coord::types::RangedCoordf64,
            >,
        >,
    ) -> Result<(), PlotError>,
{
    bounds.validate()?;
    let size = size.max(16);
    let err = draw_err(path);
    let root = BitMapBackend::new(path, (size, size)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .margin(size / 50)
        .build_cartesian_2d(bounds.x.0..bounds.x.1, bounds.y.0..bounds.y.1)
        .map_err(|e| err(&e))?;
    draw(&mut chart)?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::PathBuf;

    /// A fresh temporary PNG path for one test.
    pub fn temp_png(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cpflow-plot-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(format!("{name}.png"))
    }

    /// Decodes a PNG and returns (width, height, variance of the grey levels, fraction of
    /// non-white pixels).
    pub fn png_stats(path: &std::path::Path) -> (u32, u32, f64, f64) {
        let img = image::open(path).unwrap().to_luma8();
        let (w, h) = img.dimensions();
        let px: Vec<f64> = img.pixels().map(|p| p.0[0] as f64).collect();
        let n = px.len() as f64;
        let mean = px.iter().sum::<f64>() / n;
        let var = px.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let ink = px.iter().filter(|v| **v < 250.0).count() as f64 / n;
        (w, h, var, ink)
    }
}
