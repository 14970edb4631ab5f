//! The validation curve of a `bench-tabular` run: the validation NLL of every validation in
//! the run's `metrics.jsonl` (every sitting of a resumed run) against the iteration, with its
//! running best, as `<out>/<dataset>/validation-curve.png`. It answers the question a
//! wall-clock budget leaves open: was the run still improving when it stopped?

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cpflow::metrics::read_metrics;
use cpflow::plot::{Bounds, Figure, LineSeries, line_chart_png};

/// File name of the figure in a dataset's run directory.
pub const CURVE_PNG: &str = "validation-curve.png";

/// The points drawn: `(iteration, validation NLL)` of the validations after the first tenth
/// of the run (the first ones, tens of nats above the rest, would flatten the part that
/// matters), and the running best over the whole run at the same iterations. Non-finite
/// validations are skipped. Empty when fewer than two validations remain.
///
/// ```
/// use xtask::bench_curve::curve_points;
/// let vals: Vec<(usize, f64)> = vec![(1, -60.0), (50, -100.0), (100, -99.0), (150, -101.0), (200, -100.5)];
/// let (curve, best) = curve_points(&vals);
/// // Iteration 1 is in the first tenth of the 200: not drawn, but the best counts it.
/// assert_eq!(curve, [[50.0, -100.0], [100.0, -99.0], [150.0, -101.0], [200.0, -100.5]]);
/// assert_eq!(best, [[50.0, -100.0], [100.0, -100.0], [150.0, -101.0], [200.0, -101.0]]);
/// ```
pub fn curve_points(vals: &[(usize, f64)]) -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
    let last = vals.iter().map(|&(i, _)| i).max().unwrap_or(0);
    let (mut curve, mut best) = (Vec::new(), Vec::new());
    let mut running = f64::INFINITY;
    for &(it, v) in vals.iter().filter(|(_, v)| v.is_finite()) {
        running = running.min(v);
        if it * 10 >= last {
            curve.push([it as f64, v]);
            best.push([it as f64, running]);
        }
    }
    if curve.len() < 2 {
        return (Vec::new(), Vec::new());
    }
    (curve, best)
}

/// Draws the validation curve of the run in `run_dir` into [`CURVE_PNG`] there; `Ok(None)`
/// when its metrics hold fewer than two validations to draw.
pub fn write_validation_curve(run_dir: &Path, dataset: &str) -> Result<Option<PathBuf>> {
    let metrics = run_dir.join("metrics.jsonl");
    let records =
        read_metrics(&metrics).with_context(|| format!("reading {}", metrics.display()))?;
    let vals: Vec<(usize, f64)> = records
        .iter()
        .filter_map(|r| r.val_nll.map(|v| (r.iteration, v)))
        .collect();
    let (curve, best) = curve_points(&vals);
    if curve.is_empty() {
        return Ok(None);
    }
    let mut bounds = Bounds::around(&curve, 0.05);
    bounds.x.0 = bounds.x.0.max(0.0);
    let path = run_dir.join(CURVE_PNG);
    let figure = Figure::new(640)
        .title(format!(
            "{dataset}: validation NLL (solid), best so far (dashed)"
        ))
        .labels("iteration", "nats");
    line_chart_png(
        &path,
        &[
            LineSeries::solid(curve, (31, 119, 180)),
            LineSeries::dashed(best, (214, 39, 40)),
        ],
        Some(bounds),
        figure,
    )
    .with_context(|| format!("drawing {}", path.display()))?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Too few validations draw nothing; NaN validations are skipped, not drawn.
    #[test]
    fn short_or_broken_curves() {
        assert_eq!(curve_points(&[]), (vec![], vec![]));
        assert_eq!(curve_points(&[(10, -1.0)]), (vec![], vec![]));
        let (curve, best) = curve_points(&[(10, -1.0), (20, f64::NAN), (30, -2.0)]);
        assert_eq!(curve, [[10.0, -1.0], [30.0, -2.0]]);
        assert_eq!(best, [[10.0, -1.0], [30.0, -2.0]]);
    }

    /// A metrics file with validations gives a PNG; one without gives none.
    #[test]
    fn writes_a_png_from_the_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let line = |it: usize, val: Option<f64>| {
            serde_json::json!({
                "iteration": it, "epoch": 0, "loss": 1.0, "lr": 1e-3, "grad_norm": 1.0,
                "cg_iterations": 2.0, "cg_converged": 1.0, "train_nll_slq": null,
                "val_nll": val, "samples_per_sec": 1.0, "elapsed_s": 1.0
            })
            .to_string()
        };
        let text: Vec<String> = (0..5).map(|k| line(k * 100 + 1, None)).collect();
        std::fs::write(dir.path().join("metrics.jsonl"), text.join("\n")).unwrap();
        assert_eq!(write_validation_curve(dir.path(), "gas").unwrap(), None);
        let text: Vec<String> = (0..5)
            .map(|k| line(k * 100 + 1, Some(-(k as f64))))
            .collect();
        std::fs::write(dir.path().join("metrics.jsonl"), text.join("\n")).unwrap();
        let png = write_validation_curve(dir.path(), "gas").unwrap().unwrap();
        let bytes = std::fs::read(png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    }
}
