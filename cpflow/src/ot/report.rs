//! What an OT run records and reports: the curve, the report, its table and figures.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{OtError, W2Bounds};
use crate::plot::{Bounds, Figure, LineSeries, line_chart_png};

/// One point of the training curve.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::ot::{OtConfig, run_ot_experiment};
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// // The reference settings, shrunk: a width-8 ICNN, 256 training points, 10 steps.
/// let mut cfg = OtConfig::reference(2);
/// (cfg.n_train, cfg.n_test, cfg.n_eval_curve, cfg.eval_every) = (256, 128, 64, 5);
/// cfg.train.max_iterations = 10;
/// cfg.train.batch_size = 64;
/// cfg.train.lr_schedule = cpflow::LrSchedule::Cosine { t_max: 10 };
/// if let cpflow::PotentialConfig::Icnn3(c) = &mut cfg.potential {
///     (c.width, c.depth) = (8, 2);
/// }
/// let (_flow, report) = run_ot_experiment(&cfg, &Device::Cpu, Default::default())?;
/// // Recorded at the start, every 5 steps and at the end.
/// let steps: Vec<usize> = report.curve.iter().map(|r| r.iteration).collect();
/// assert_eq!(steps, vec![0, 5, 10]);
/// assert!(report.curve.iter().all(|r| r.transport_cost > 0.0 && r.kl.is_finite()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OtRecord {
    /// Optimiser steps done.
    pub iteration: usize,
    /// `E‖x − f(x)‖²` on the curve's test points.
    pub transport_cost: f64,
    /// `mean(log p − log q)` on the curve's test points.
    pub kl: f64,
}

/// Results of one OT run.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::ot::{OtConfig, run_ot_experiment};
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// // The reference settings, shrunk: a width-8 ICNN, 256 training points, 10 steps.
/// let mut cfg = OtConfig::reference(2);
/// (cfg.n_train, cfg.n_test, cfg.n_eval_curve, cfg.eval_every) = (256, 128, 64, 5);
/// cfg.train.max_iterations = 10;
/// cfg.train.batch_size = 64;
/// cfg.train.lr_schedule = cpflow::LrSchedule::Cosine { t_max: 10 };
/// if let cpflow::PotentialConfig::Icnn3(c) = &mut cfg.potential {
///     (c.width, c.depth) = (8, 2);
/// }
/// let (_flow, report) = run_ot_experiment(&cfg, &Device::Cpu, Default::default())?;
/// let r = &report;
/// assert!((r.relative_error - (r.transport_cost - r.w2_squared) / r.w2_squared).abs() < 1e-12);
/// // The closed form is the target's.
/// let target = cfg.build_target(&mut cpflow::rng::FlowRng::seed_from_u64(cfg.data_seed))?;
/// assert_eq!(r.w2_squared, target.w2_squared_to_standard_normal());
/// assert_eq!(r.entropy, target.entropy());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "OtReportFile")]
pub struct OtReport {
    /// Dimension.
    pub dim: usize,
    /// Closed-form `W₂²(N(m, C), N(0, I))`.
    pub w2_squared: f64,
    /// Final `E‖x − f(x)‖²` on the whole test set.
    pub transport_cost: f64,
    /// `(cost − W₂²)/W₂²`.
    pub relative_error: f64,
    /// `E‖x − T*(x)‖²` of the exact optimal map `T*(x) = C^{-½}(x − m)` on the same test
    /// points: the Monte-Carlo value the model's cost should match (the sampling error of the
    /// test set cancels in the comparison).
    pub optimal_cost_on_test: f64,
    /// `(cost − optimal_cost_on_test)/optimal_cost_on_test`: the model's own error.
    pub paired_relative_error: f64,
    /// Final KL estimate on the whole test set.
    pub kl: f64,
    /// What `transport_cost` and `kl` say about `W₂²` without its closed form
    /// ([`W2Bounds::from_cost_and_kl`]): its bounds, and whether the map has converged far
    /// enough for the cost to estimate it (a short run's cost is far below `W₂²`).
    /// Computed from the two when a report written before this field is read.
    pub w2_squared_bounds: W2Bounds,
    /// Final test NLL (nats).
    pub test_nll: f64,
    /// Entropy of the data Gaussian (nats).
    pub entropy: f64,
    /// The curve over training.
    pub curve: Vec<OtRecord>,
    /// Wall-clock seconds of training (evaluations excluded).
    pub train_time_s: f64,
    /// Wall-clock seconds of the whole run.
    pub wall_time_s: f64,
}

/// [`OtReport`] as written, `w2_squared_bounds` optional (reports written before it
/// existed): what [`OtReport`] deserialises from.
#[derive(Deserialize)]
struct OtReportFile {
    dim: usize,
    w2_squared: f64,
    transport_cost: f64,
    relative_error: f64,
    optimal_cost_on_test: f64,
    paired_relative_error: f64,
    kl: f64,
    #[serde(default)]
    w2_squared_bounds: Option<W2Bounds>,
    test_nll: f64,
    entropy: f64,
    curve: Vec<OtRecord>,
    train_time_s: f64,
    wall_time_s: f64,
}

impl From<OtReportFile> for OtReport {
    fn from(f: OtReportFile) -> Self {
        OtReport {
            w2_squared_bounds: f
                .w2_squared_bounds
                .unwrap_or_else(|| W2Bounds::from_cost_and_kl(f.transport_cost, f.kl)),
            dim: f.dim,
            w2_squared: f.w2_squared,
            transport_cost: f.transport_cost,
            relative_error: f.relative_error,
            optimal_cost_on_test: f.optimal_cost_on_test,
            paired_relative_error: f.paired_relative_error,
            kl: f.kl,
            test_nll: f.test_nll,
            entropy: f.entropy,
            curve: f.curve,
            train_time_s: f.train_time_s,
            wall_time_s: f.wall_time_s,
        }
    }
}

/// A Markdown table of OT results: `d | W₂² | transport cost | rel. error | optimal map's
/// cost | paired rel. error | KL | W₂² bounds from the KL | converged | test NLL | entropy |
/// train time`. A row whose map has not converged ([`W2Bounds`]) says **no** in the
/// converged column: its cost is not an estimate of `W₂²`.
///
/// ```
/// use cpflow::ot::{OtRecord, OtReport, W2Bounds, ot_table_markdown};
/// let report = OtReport {
///     dim: 3,
///     w2_squared: 2.0,
///     transport_cost: 2.2,
///     relative_error: 0.1,
///     optimal_cost_on_test: 2.1,
///     paired_relative_error: 0.1 / 2.1,
///     kl: 0.01,
///     w2_squared_bounds: W2Bounds::from_cost_and_kl(2.2, 0.01),
///     test_nll: 4.0,
///     entropy: 3.99,
///     curve: vec![
///         OtRecord { iteration: 0, transport_cost: 5.0, kl: 1.5 },
///         OtRecord { iteration: 50, transport_cost: 2.5, kl: 0.1 },
///         OtRecord { iteration: 100, transport_cost: 2.2, kl: 0.01 },
///     ],
///     train_time_s: 12.0,
///     wall_time_s: 13.0,
/// };
/// let table = ot_table_markdown(&[report]);
/// assert_eq!(table.lines().count(), 3); // header, separator, one row
/// assert!(table.lines().last().unwrap().starts_with("| 3 | 2.0000 | 2.2000 | +10.00% |"));
/// // KL 0.01 bounds W₂² to [(√2.2 − √0.02)², (√2.2 + √0.02)²]: √0.02/√2.2 = 9.5% ≤ 10%.
/// assert!(table.contains("| [1.8005, 2.6395] | yes |"), "{table}");
/// ```
pub fn ot_table_markdown(reports: &[OtReport]) -> String {
    let mut s = String::from(
        "| d | W2^2 (closed form) | transport cost E|x-f(x)|^2 | rel. error | optimal map's cost on the test set | paired rel. error | KL | W2^2 bounds from the KL | converged (cost estimates W2^2) | test NLL | entropy | train time (s) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let b = &r.w2_squared_bounds;
        s.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:+.2}% | {:.4} | {:+.2}% | {:.4} | [{:.4}, {:.4}] | {} | {:.4} | {:.4} | {:.1} |\n",
            r.dim,
            r.w2_squared,
            r.transport_cost,
            100.0 * r.relative_error,
            r.optimal_cost_on_test,
            100.0 * r.paired_relative_error,
            r.kl,
            b.lower,
            b.upper,
            if b.converged { "yes" } else { "**no**" },
            r.test_nll,
            r.entropy,
            r.train_time_s
        ));
    }
    s
}

/// Writes the two figures of one run into `dir`:
/// * `ot_d{d}_cost_vs_kl.png` (paper Fig. 4): x = `log₁₀ KL`, y = transport cost (blue), and
///   the closed-form `W₂²` as a red dashed line. Points with KL ≤ 0 and the untrained model
///   (iteration 0, whose KL is orders of magnitude larger and would squash the rest) are left
///   out;
/// * `ot_d{d}_cost_vs_iter.png`: x = iteration, y = transport cost (blue), `W₂²` (red dashed).
///
/// Each PNG has a title and axis labels; `ot_d{d}_curve.csv`, written beside them, has the
/// numbers.
///
/// ```
/// use cpflow::ot::{OtRecord, OtReport, W2Bounds, write_ot_figures};
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// let report = OtReport {
///     dim: 3,
///     w2_squared: 2.0,
///     transport_cost: 2.2,
///     relative_error: 0.1,
///     optimal_cost_on_test: 2.1,
///     paired_relative_error: 0.1 / 2.1,
///     kl: 0.01,
///     w2_squared_bounds: W2Bounds::from_cost_and_kl(2.2, 0.01),
///     test_nll: 4.0,
///     entropy: 3.99,
///     curve: vec![
///         OtRecord { iteration: 0, transport_cost: 5.0, kl: 1.5 },
///         OtRecord { iteration: 50, transport_cost: 2.5, kl: 0.1 },
///         OtRecord { iteration: 100, transport_cost: 2.2, kl: 0.01 },
///     ],
///     train_time_s: 12.0,
///     wall_time_s: 13.0,
/// };
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-ot-figures-{}", std::process::id()));
/// write_ot_figures(&dir, &report)?;
/// for f in ["ot_d3_cost_vs_kl.png", "ot_d3_cost_vs_iter.png"] {
///     assert_eq!(cpflow::image_file::read_rgb8(dir.join(f)).unwrap().dimensions(), (500, 500));
/// }
/// let csv = std::fs::read_to_string(dir.join("ot_d3_curve.csv")).unwrap();
/// assert_eq!(csv.lines().nth(2), Some("50,2.5,0.1,2"));
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
pub fn write_ot_figures(dir: &Path, report: &OtReport) -> Result<(), OtError> {
    let io = |path: &Path| {
        let p = path.display().to_string();
        move |cause| OtError::Io { path: p, cause }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let d = report.dim;
    let w2 = report.w2_squared;
    let blue = (31, 119, 180);
    let red = (214, 39, 40);
    let by_kl: Vec<[f64; 2]> = report
        .curve
        .iter()
        .filter(|r| r.iteration > 0 && r.kl > 0.0 && r.kl.is_finite())
        .map(|r| [r.kl.log10(), r.transport_cost])
        .collect();
    // A KL estimate at or below 0 (the map is optimal to within the estimate's noise) has no
    // place on the log axis: say so rather than leave the curve silently short or empty.
    let trained = report.curve.iter().filter(|r| r.iteration > 0).count();
    if by_kl.len() < trained {
        tracing::warn!(
            dim = d,
            not_drawn = trained - by_kl.len(),
            of = trained,
            "curve points with a KL estimate ≤ 0 (below its noise: the map is essentially \
             optimal) are left out of the log-KL figure; ot_d{d}_curve.csv has them all"
        );
    }
    let (min_lkl, max_lkl) = by_kl
        .iter()
        .map(|p| p[0])
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (min_lkl, max_lkl) = if min_lkl <= max_lkl {
        (min_lkl, max_lkl)
    } else {
        (-3.0, 0.0)
    };
    let cost_hi = report
        .curve
        .iter()
        .map(|r| r.transport_cost)
        .chain([w2])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    // y: the trained model's costs and W₂², padded (a 0-based axis would squash them).
    let (y_lo, y_hi) = by_kl
        .iter()
        .map(|p| p[1])
        .chain([w2])
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let y_pad = 0.05 * (y_hi - y_lo).max(1e-3 * w2.abs().max(1e-9));
    let span = (max_lkl - min_lkl).max(0.1);
    let bounds = Bounds {
        x: (min_lkl - span / 20.0, max_lkl + span / 20.0),
        y: (y_lo - y_pad, y_hi + y_pad),
    };
    line_chart_png(
        dir.join(format!("ot_d{d}_cost_vs_kl.png")),
        &[
            LineSeries::solid(by_kl, blue),
            LineSeries::dashed(vec![[min_lkl, w2], [max_lkl, w2]], red),
        ],
        Some(bounds),
        Figure::new(500)
            .title(format!("transport cost vs KL, d = {d} (red: W₂²)"))
            .labels("log₁₀ KL", "transport cost"),
    )?;
    let by_iter: Vec<[f64; 2]> = report
        .curve
        .iter()
        .map(|r| [r.iteration as f64, r.transport_cost])
        .collect();
    let last = by_iter.last().map(|p| p[0]).unwrap_or(1.0).max(1.0);
    line_chart_png(
        dir.join(format!("ot_d{d}_cost_vs_iter.png")),
        &[
            LineSeries::solid(by_iter, blue),
            LineSeries::dashed(vec![[0.0, w2], [last, w2]], red),
        ],
        Some(Bounds {
            x: (0.0, last),
            y: (0.0, cost_hi * 1.1 + 1e-9),
        }),
        Figure::new(500)
            .title(format!(
                "transport cost during training, d = {d} (red: W₂²)"
            ))
            .labels("iteration", "transport cost"),
    )?;
    let mut csv = String::from("iteration,transport_cost,kl,w2_squared\n");
    for r in &report.curve {
        csv.push_str(&format!(
            "{},{},{},{}\n",
            r.iteration, r.transport_cost, r.kl, w2
        ));
    }
    let path = dir.join(format!("ot_d{d}_curve.csv"));
    crate::checkpoint::write_atomic(&path, csv.as_bytes())?;
    Ok(())
}
