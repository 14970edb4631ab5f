//! The test scores of a tabular benchmark: the flow's exact test NLL ([`exact_test_nll`])
//! and that of the full-covariance Gaussian fitted to the same training rows
//! ([`gaussian_test_nll`]).

use anyhow::Result;
use candle_core::Tensor;
use cpflow::datasets::{GaussianBaseline, Split};
use cpflow::{Dataset, Flow};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Exact per-sample NLL over `x` in chunks; returns (mean, 2 standard errors).
pub fn exact_test_nll(flow: &Flow, x: &Tensor, chunk: usize, progress: bool) -> Result<(f64, f64)> {
    let n = x.dim(0)?;
    anyhow::ensure!(n > 0, "empty test set");
    let bar = if progress {
        ProgressBar::new(n as u64)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("test NLL {bar:30} {pos}/{len} [{elapsed_precise}]")
    {
        bar.set_style(style);
    }
    let data = Dataset::new(x.clone());
    // Exact log-dets: the RNG draws nothing.
    let mut rng = StdRng::seed_from_u64(0);
    let est = cpflow::nll_estimate_with(
        flow,
        &data,
        &cpflow::NllEstimator::Exact,
        chunk.max(1),
        &mut rng,
        |done| {
            bar.set_position(done as u64);
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    Ok((est.mean, 2.0 * est.std_err.unwrap_or(0.0)))
}

/// Test NLL (mean, 2 standard errors) of the full-covariance Gaussian fitted to `split`'s
/// training rows, or `None` (with a warning) when it cannot be fitted.
///
/// ```
/// use cpflow::datasets::{Matrix, Split};
/// use xtask::bench_tabular::gaussian_test_nll;
/// let rows = |n: usize, s: f32| Matrix::new(n, 2, (0..2 * n).map(|i| s * ((i * 7) % 11) as f32).collect()).unwrap();
/// let split = Split { train: rows(50, 1.0), val: rows(5, 1.0), test: rows(20, 2.0) };
/// let (nll, two_se) = gaussian_test_nll(&split).unwrap();
/// assert!(nll.is_finite() && two_se > 0.0);
/// // A constant column: no Gaussian, and no error either.
/// let flat = Split { train: Matrix::new(3, 1, vec![1.0f32; 3]).unwrap(), ..split };
/// assert_eq!(gaussian_test_nll(&flat), None);
/// ```
pub fn gaussian_test_nll(split: &Split) -> Option<(f64, f64)> {
    let scored = GaussianBaseline::fit(&split.train).and_then(|g| g.mean_nll(&split.test));
    match scored {
        Ok(s) => Some((s.mean, 2.0 * s.std_err.unwrap_or(0.0))),
        Err(e) => {
            tracing::warn!("no Gaussian baseline: {e}");
            None
        }
    }
}
