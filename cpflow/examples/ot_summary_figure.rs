//! Paper Fig. 4 style summary of an OT run over several dimensions: reads the
//! `ot_reports.json` written by `cpflow ot` (reference data settings: `OtConfig::reference(d)`,
//! no `--config`, no `--seed`) and draws, for every d, the model's transport cost divided by
//! the optimal map's cost **on the same curve points** (so the test-set sampling error
//! cancels) against `log₁₀ KL`, with the dashed line at 1. The untrained model's point
//! (iteration 0) is left out: its KL is orders of magnitude larger. y is clipped to
//! [0.9, 1.1]. Colours: d = 2 blue, 4 orange, 8 green, 16 red, others purple. The PNG has no
//! text; the printed lines give the numbers. It also re-renders every run's per-d figures
//! (`write_ot_figures`) in the same folder.
//!
//! ```text
//! cargo build --release -p cpflow --example ot_summary_figure
//! target/release/examples/ot_summary_figure docs/results/ot   # writes ot_summary.png there
//! ```

use cpflow::FlowRng;
use cpflow::ot::{OtConfig, OtReport, write_ot_figures};
use cpflow::plot::{Bounds, LineSeries, line_chart_png};

/// `E‖x − T*(x)‖²` over the curve's test points, regenerated from the reference data seed.
fn optimal_cost_on_curve_points(dim: usize) -> anyhow::Result<f64> {
    let cfg = OtConfig::reference(dim);
    let mut rng = FlowRng::seed_from_u64(cfg.data_seed);
    let target = cfg.build_target(&mut rng)?;
    let _train = target.sample(cfg.n_train, &mut rng);
    let test = target.sample(cfg.n_test, &mut rng);
    let n = cfg.n_eval_curve.clamp(1, cfg.n_test);
    let rows = &test[..n * dim];
    let mapped = target.optimal_map_to_standard_normal(rows);
    Ok(rows
        .iter()
        .zip(&mapped)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        / n as f64)
}

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "docs/results/ot".into()),
    );
    let reports: Vec<OtReport> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ot_reports.json"))?)?;
    let color = |d: usize| match d {
        2 => (31, 119, 180),
        4 => (255, 127, 14),
        8 => (44, 160, 44),
        16 => (214, 39, 40),
        _ => (148, 103, 189),
    };
    let mut series = Vec::new();
    let (mut xlo, mut xhi) = (f64::MAX, f64::MIN);
    for r in &reports {
        // Re-render the per-dimension figures with the current `write_ot_figures`.
        write_ot_figures(&dir, r)?;
        let opt = optimal_cost_on_curve_points(r.dim)?;
        let pts: Vec<[f64; 2]> = r
            .curve
            .iter()
            .filter(|c| c.iteration > 0 && c.kl > 0.0 && c.kl.is_finite())
            .map(|c| [c.kl.log10(), c.transport_cost / opt])
            .collect();
        for p in &pts {
            xlo = xlo.min(p[0]);
            xhi = xhi.max(p[0]);
        }
        let last = pts.last().copied().unwrap_or([f64::NAN, f64::NAN]);
        println!(
            "d = {}: {} points; last curve point log10 KL {:.3}, cost / optimal cost on the same points {:.4} (optimal {:.4}, W2² {:.4})",
            r.dim,
            pts.len(),
            last[0],
            last[1],
            opt,
            r.w2_squared
        );
        series.push(LineSeries::solid(pts, color(r.dim)));
    }
    if xlo > xhi {
        anyhow::bail!("no curve points with positive KL in {}", dir.display());
    }
    series.push(LineSeries::dashed(
        vec![[xlo, 1.0], [xhi, 1.0]],
        (80, 80, 80),
    ));
    let out = dir.join("ot_summary.png");
    line_chart_png(
        &out,
        &series,
        Some(Bounds {
            x: (xlo - 0.1, xhi + 0.1),
            y: (0.9, 1.1),
        }),
        600,
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
