//! `cpflow eval`: flows on vectors here; image flows in [`super::eval_image`].

mod scored_points;

use crate::cli::interrupt::Interrupt;
use crate::evaluate::nll_estimate_and_slq_bias_with;
use crate::slq::SlqBiasCounts;
use crate::{CpflowError, Dataset, FloatType, FlowRng, NllEstimator, SlqConfig};
use anyhow::{Result, bail};
use serde::Serialize;
use std::time::Instant;

use super::{data_root, load_flow, locate_model, saved_run_config};
use crate::cli::data::{DataSource, SourceName, load, load_all};
use crate::cli::data_record::check_scored_data;
use crate::cli::model_file::{ModelKind, model_kind, require_flow};
use crate::cli::{Estimator, EvalArgs, MAX_EVAL_POINTS};
use scored_points::ScoredPoints;

#[derive(Serialize)]
struct EvalSummary {
    model: String,
    data: String,
    /// Which points of `data` were scored: `test` (the run's test split without `--data`, or
    /// a benchmark's), `fresh draws` (a toy or an image density given as `--data`) or `file`
    /// (every row of a file given as `--data`); `scored` says it in words.
    split: &'static str,
    scored: String,
    /// The seed of fresh draws (`split = "fresh draws"`; absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    draw_seed: Option<u64>,
    points: usize,
    /// The estimator as report.json names it (`exact`, `slq(2 probes, 10 steps)`).
    estimator: String,
    nll: f64,
    /// Standard error of `nll` (rows' spread over √n; with SLQ it includes the probes',
    /// not the bias of too few Lanczos steps).
    nll_std_err: Option<f64>,
    #[serde(flatten)]
    slq_bias: SlqBiasFields,
    data_entropy: Option<f64>,
    kl_estimate: Option<f64>,
    /// The float type the score was computed in: the model's, or `--dtype` (`"f32"`,
    /// `"f64"`; the image eval's field of the same name).
    float: FloatType,
    seconds: f64,
}

/// SLQ's hidden-bias counts over the points scored ([`SlqBiasCounts`]), each printed only when
/// non-zero: the points whose estimate is biased beyond its standard error, and their
/// floored Ritz values and early Lanczos stops (`SlqLogProb::floored_ritz_values`,
/// `premature_breakdowns`), summed.
#[derive(Debug, Default, PartialEq, Serialize)]
pub(super) struct SlqBiasFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    slq_biased_points: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slq_floored_ritz_values: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slq_premature_breakdowns: Option<usize>,
}

impl From<SlqBiasCounts> for SlqBiasFields {
    fn from(c: SlqBiasCounts) -> Self {
        let nonzero = |c: usize| (c > 0).then_some(c);
        Self {
            slq_biased_points: nonzero(c.samples),
            slq_floored_ritz_values: nonzero(c.floored_ritz_values),
            slq_premature_breakdowns: nonzero(c.premature_breakdowns),
        }
    }
}

/// Points drawn from a toy or an image density without `-n`.
const DEFAULT_POINTS: usize = 10_000;
/// Rows per evaluation chunk without `--batch-size`.
const DEFAULT_BATCH: usize = 1024;

/// What the first Ctrl-C / SIGTERM logs.
const INTERRUPT_MESSAGE: &str = "interrupted: stopping after the chunk of points in progress (no \
     score is printed); interrupt again to quit now";

/// Refuses `--probes` and `--steps` (the SLQ estimator's settings) with the exact estimator,
/// which takes neither: they were ignored, and the score printed was not the one asked for.
fn refuse_slq_options_without_slq(a: &EvalArgs) -> Result<()> {
    if a.estimator == Estimator::Slq {
        return Ok(());
    }
    let given: Vec<&str> = [(a.probes, "--probes"), (a.steps, "--steps")]
        .into_iter()
        .filter_map(|(v, name)| v.map(|_| name))
        .collect();
    if !given.is_empty() {
        bail!(
            "{} (SLQ settings) do not apply to `--estimator exact`, the default (the dense \
             Hessian log-det, which has no probes or Lanczos steps): add `--estimator slq` to \
             score by SLQ, or leave {} out",
            given.join(" and "),
            given.join(" and ")
        );
    }
    Ok(())
}

/// Scores `--model` on `--data` (or the held-out split of the run's data) and prints a JSON
/// summary; an image flow is scored on its dataset's test split ([`super::eval_image`]).
pub fn eval(a: EvalArgs) -> Result<()> {
    let t0 = Instant::now();
    let device = crate::cli::device(a.dev.device.as_deref())?;
    let loc = locate_model(&a.model)?;
    let kind = model_kind(&loc.file)?;
    if kind == ModelKind::Vae {
        return super::eval_vae::eval_vae(&a, &loc, t0);
    }
    if a.is_samples.is_some() {
        bail!(
            "--is-samples applies to VAEs (of `cpflow vae`); {} is a flow",
            loc.file.display()
        );
    }
    require_flow(&loc.file, kind, "eval", true)?;
    refuse_slq_options_without_slq(&a)?;
    if kind == ModelKind::Image {
        return super::eval_image::eval_image(&a, &loc, &device, t0);
    }
    let saved = saved_run_config(loc.run_dir.as_deref())?;
    // `-n` on rows that are scored as they are (a file, a benchmark's test split) is refused
    // before the model and the data are read: that can take minutes.
    if let Some(n) = a.n {
        let source = match (&a.data, &saved) {
            (Some(src), _) => Some(src.as_str()),
            (None, Some(cfg)) => Some(cfg.data.source.as_str()),
            (None, None) => None,
        };
        if let Some(source) = source.filter(|s| SourceName::of(s).has_fixed_rows()) {
            bail!(
                "-n {n} draws points of a toy or an image density; the rows of {source} are \
                 scored as they are: to score fewer, pass a file of those rows with --data"
            );
        }
    }
    // Without -n: the run's own held-out split is scored whole (for a toy, as many fresh
    // points as its test score used, so that the report's number is reproduced), other
    // toys and images with DEFAULT_POINTS draws.
    let n = match (a.n, &a.data, &saved) {
        (Some(n), _, _) => n,
        (None, None, Some(cfg)) if cfg.data.n_test > 0 => cfg.data.n_test.min(MAX_EVAL_POINTS),
        _ => DEFAULT_POINTS,
    };
    let flow = load_flow(&loc.file, &device, a.dev.dtype)?;
    let seed = a.dev.seed.unwrap_or(0);
    // Explicit --data: every row of a file, the test split of a tabular benchmark (under the
    // run's data root), or `n` fresh points of a toy/image. Otherwise the held-out part of the
    // run's data (fresh points for toys/images, the test split of files and benchmarks).
    let (source, data, scored_points) = match (&a.data, &saved) {
        (Some(src), _) => {
            let root = a
                .data_root
                .clone()
                .unwrap_or_else(|| data_root(saved.as_ref()));
            let draw_seed = seed.wrapping_add(1_000_003);
            let data = load_all(src, &root, n, draw_seed)?;
            let scored = ScoredPoints::given(&data.source, draw_seed);
            (src.clone(), data, scored)
        }
        (None, Some(cfg)) => {
            // `n` counts a density's test points (a file's or a benchmark's rows are scored
            // as they are: `data.n_test` is not read there).
            let mut s = cfg.data.clone();
            s.n_test = n;
            if let Some(root) = &a.data_root {
                s.root = root.clone();
            }
            // A changed data file is refused before it is read and split (that can take
            // minutes).
            if let Some(run_dir) = &loc.run_dir {
                check_scored_data(run_dir, &s.source)?;
            }
            let data = load(&s)?;
            let scored = ScoredPoints::run_test(&s, &data.source);
            (s.source.clone(), data, scored)
        }
        (None, None) => bail!(
            "no --data given and no config.toml beside {} to tell the run's data: pass the \
             data to score with `--data <file.npy|file.csv|toy|benchmark>`",
            loc.file.display()
        ),
    };
    if data.dim != flow.dim() {
        bail!(
            "the data ({source}) are {}-D, the model {}-D{}",
            data.dim,
            flow.dim(),
            if a.data.is_none() {
                ": pass --data with the model's data"
            } else {
                ""
            }
        );
    }
    if data.n_test() == 0 {
        // Only the run's own split can be empty (`--data` sources are checked when read).
        let fraction = saved.as_ref().map_or(0.0, |c| c.data.test_fraction);
        bail!(
            "the run's data `{source}` leave no test rows to score (data.test_fraction = \
             {fraction} in {}): pass `--data <file.npy|file.csv|toy|benchmark>` to score other \
             data",
            loc.run_dir.as_deref().map_or_else(
                || "config.toml".into(),
                |d| d.join("config.toml").display().to_string()
            )
        );
    }
    if let Some(why) = data.test.overflow_in(flow.dtype()) {
        bail!(
            "the data ({source}) hold finite values too large for the model's {:?} ({why}): \
             score them in f64 (`--dtype f64`)",
            flow.float()
        );
    }
    let test = Dataset::new(data.tensor(&data.test, flow.dtype(), &device)?);
    let estimator = match a.estimator {
        Estimator::Exact => NllEstimator::Exact,
        Estimator::Slq => {
            let d = SlqConfig::default();
            NllEstimator::Slq(SlqConfig {
                probes: a.probes.unwrap_or(d.probes),
                steps: a.steps.unwrap_or(d.steps),
            })
        }
    };
    let mut rng = FlowRng::seed_from_u64(seed);
    let batch = a.batch_size.unwrap_or(DEFAULT_BATCH);
    let points = data.n_test();
    // A bar over the points (hidden for one chunk, and when stderr is not a terminal): the
    // whole test split of BSDS300 (250,000 rows) takes minutes. The first Ctrl-C stops the
    // score before its next chunk.
    let interrupt = Interrupt::install_with_message(INTERRUPT_MESSAGE)?;
    tracing::info!("scoring {points} points of {source} in chunks of {batch}");
    let bar = super::chunk_progress_bar(a.no_progress, points, batch, "scoring", " points");
    let mut stopped_at = None;
    let scored =
        nll_estimate_and_slq_bias_with(&flow, &test, &estimator, batch, &mut rng, |done| {
            bar.set_position(done as u64);
            if interrupt.is_set() {
                stopped_at = Some(done);
                return Err(CpflowError::EvaluationInterrupted {
                    skipped: "the rest of the score".into(),
                    saved: Vec::new(),
                });
            }
            Ok(())
        });
    bar.finish_and_clear();
    let (est, bias) = match (scored, stopped_at) {
        (Err(CpflowError::EvaluationInterrupted { .. }), Some(done)) => {
            bail!("interrupted after {done} of {points} points: no score")
        }
        (r, _) => r?,
    };
    if est.non_finite > 0 {
        let first = est
            .first_non_finite
            .map(|i| {
                // A row of a CSV file is also named by its file line, as the data messages
                // name it.
                let line = match scored_points {
                    ScoredPoints::File => csv_line(&data.source, i),
                    _ => None,
                };
                format!(", the first at {}", scored_points.locate(i, line))
            })
            .unwrap_or_default();
        bail!(
            "{} of the {} points of {source} have no finite log-density under the model (NLL \
             {}{first}): they lie where the model gives no density, far outside the data it \
             was trained on, or their values overflow its {:?}",
            est.non_finite,
            est.n,
            est.mean,
            flow.float()
        );
    }
    let nll = est.mean;
    let entropy = data.test_entropy();
    let summary = EvalSummary {
        model: loc.file.display().to_string(),
        split: scored_points.split(),
        scored: scored_points.describe(&source, data.n_test()),
        draw_seed: scored_points.draw_seed(),
        data: source,
        points: data.n_test(),
        // As report.json names it, with SLQ's probes and steps: `slq(2 probes, 10 steps)`.
        estimator: estimator.to_string(),
        nll,
        nll_std_err: est.std_err,
        slq_bias: bias.into(),
        data_entropy: entropy,
        kl_estimate: entropy.map(|h| nll - h),
        float: flow.float(),
        seconds: t0.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// The file line (from 1) of row `row` of a CSV file given with `--data`, and the file's
/// name, for the message about points without a finite log-density; `None` for other data
/// (or when the file can no longer be read: the message then gives the row alone).
fn csv_line(source: &DataSource, row: usize) -> Option<(u64, String)> {
    let DataSource::Csv(path) = source else {
        return None;
    };
    let rows = crate::datasets::read_csv_rows(path).ok()?;
    let line = *rows.lines.get(row)?;
    let name = path.file_name().unwrap_or(path.as_os_str());
    Some((line, name.to_string_lossy().into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Non-zero counts are printed under their names; zero ones (exact scores, well-conditioned
    /// models) leave the line as it was.
    #[test]
    fn slq_bias_counts_are_printed_when_non_zero() {
        let counts = SlqBiasCounts {
            samples: 6,
            floored_ritz_values: 48,
            premature_breakdowns: 0,
        };
        let json = serde_json::to_string(&SlqBiasFields::from(counts)).unwrap();
        assert_eq!(
            json,
            r#"{"slq_biased_points":6,"slq_floored_ritz_values":48}"#
        );
        let none = serde_json::to_string(&SlqBiasFields::from(SlqBiasCounts::default()));
        assert_eq!(none.unwrap(), "{}");
    }
}
