//! Bits per dimension of an image set: SLQ (validation and the test score, with the standard
//! error over images) and, on a subset, exact log-dets (how far the SLQ number is off).

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::DType;
use serde::{Deserialize, Serialize};

use super::data::ImageSet;
use super::eval_progress::{EvalPass, EvalProgress, Monitor};
use crate::config::SlqConfig;
use crate::error::{CpflowError, Result};
use crate::image::bpd::bits_per_dim;
use crate::image::flow::{ImageFlow, mean_and_std_err};
use crate::rng::FlowRng;
use crate::slq::SlqBiasCounts;

/// Mean bits per dimension over images with the standard error of that mean (spread over the
/// images: data, dequantisation noise and, for SLQ, the probes together; `NaN` for one image).
///
/// ```
/// use cpflow::image::BpdEstimate;
/// # fn main() -> cpflow::Result<()> {
/// // One image has no standard error: NaN, written to JSON as `null` and read back as NaN.
/// let one = BpdEstimate { images: 1, bpd: 3.25, std_err: f64::NAN };
/// let json = serde_json::to_string(&one)?;
/// assert_eq!(json, r#"{"images":1,"bpd":3.25,"std_err":null}"#);
/// let back: BpdEstimate = serde_json::from_str(&json)?;
/// assert_eq!((back.images, back.bpd), (1, 3.25));
/// assert!(back.std_err.is_nan());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BpdEstimate {
    /// Number of images.
    pub images: usize,
    /// Mean bits per dimension.
    #[serde(deserialize_with = "super::f64_or_nan")]
    pub bpd: f64,
    /// Standard error of the mean.
    #[serde(deserialize_with = "super::f64_or_nan")]
    pub std_err: f64,
}

impl BpdEstimate {
    pub(super) fn from_values(v: &[f64]) -> Self {
        let (bpd, std_err) = mean_and_std_err(v);
        BpdEstimate {
            images: v.len(),
            bpd,
            std_err,
        }
    }
}

/// Exact against SLQ bits per dimension on the same (identically dequantised) test images.
///
/// ```
/// use cpflow::image::ImageTestConfig;
/// use cpflow::image::train::score_test_set;
/// # use cpflow::candle::{DType, Device};
/// # use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// # use cpflow::icnn::ImageShape;
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block flow on 4×4 grey images, initialised on two dequantised images.
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     width: 4, depth: 2, nblocks: vec![1], float: cpflow::FloatType::F64, ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..32).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = set.dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)?;
/// flow.initialize(&x)?;
/// let cfg = ImageTestConfig { exact_images: 2, ..Default::default() };
/// let cmp = score_test_set(&flow, &set, &cfg, 2, 0)?.exact.unwrap();
/// assert_eq!((cmp.exact.images, cmp.slq.images), (2, 2));
/// // The mean of the per-image differences is the difference of the means.
/// assert!((cmp.slq.bpd - cmp.exact.bpd - cmp.slq_minus_exact).abs() < 1e-12);
/// assert!(cmp.max_abs_difference >= cmp.slq_minus_exact.abs());
/// assert!(cmp.max_abs_z.is_none()); // one probe: no per-image probe error
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExactComparison {
    /// Exact log-det bpd.
    pub exact: BpdEstimate,
    /// SLQ bpd of the same images (same noise; the probes of the full SLQ pass).
    pub slq: BpdEstimate,
    /// Mean of `slq − exact` per image, bits/dim (named for its sign; reports written before
    /// it was renamed call it `mean_difference`).
    #[serde(alias = "mean_difference", deserialize_with = "super::f64_or_nan")]
    pub slq_minus_exact: f64,
    /// Standard error of that mean (`NaN` for one image).
    #[serde(alias = "difference_std_err", deserialize_with = "super::f64_or_nan")]
    pub slq_minus_exact_std_err: f64,
    /// Largest `|slq − exact|` of one image, bits/dim.
    #[serde(deserialize_with = "super::f64_or_nan")]
    pub max_abs_difference: f64,
    /// Largest `|slq − exact|/se` of one image, `se` its SLQ standard error over the probes
    /// (only with several probes): values far above 3 mean more than probe noise (the
    /// bias of stopping Lanczos early).
    pub max_abs_z: Option<f64>,
    /// Seconds of the exact pass.
    pub seconds: f64,
}

/// The test score of a run (scored once, EMA weights).
///
/// ```
/// use cpflow::SlqConfig;
/// use cpflow::image::ImageTestConfig;
/// use cpflow::image::train::score_test_set;
/// # use cpflow::candle::{DType, Device};
/// # use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// # use cpflow::icnn::ImageShape;
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block flow on 4×4 grey images, initialised on two dequantised images.
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     width: 4, depth: 2, nblocks: vec![1], float: cpflow::FloatType::F64, ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..32).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = set.dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)?;
/// flow.initialize(&x)?;
/// // Two probes per block: each image gets a probe standard error.
/// let cfg = ImageTestConfig {
///     slq: SlqConfig { probes: 2, steps: 10 },
///     images: Some(2),
///     exact_images: 0,
/// };
/// let report = score_test_set(&flow, &set, &cfg, 2, 0)?;
/// assert_eq!(report.slq.images, 2);
/// assert!(report.slq.bpd.is_finite() && report.probe_std_err.unwrap() > 0.0);
/// assert!(report.exact.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageTestReport {
    /// The SLQ estimator used.
    pub slq_params: SlqConfig,
    /// SLQ bpd over the scored test images.
    pub slq: BpdEstimate,
    /// Root mean square over the images of each image's SLQ standard error from the spread
    /// over its probes, bits/dim (only with several probes). With one probe (the reference)
    /// the probe noise is part of `slq.std_err`, and `exact` measures the error on a subset.
    pub probe_std_err: Option<f64>,
    /// Seconds of the SLQ pass.
    pub slq_seconds: f64,
    /// Exact log-det on the first images, with the SLQ error measured there.
    pub exact: Option<ExactComparison>,
    /// Test images whose SLQ value is biased beyond its standard error
    /// ([`crate::SlqBiasCounts::samples`]: a floored Ritz value or an early Lanczos stop;
    /// the name `cpflow eval` gives the flows' count). Absent when none is (and in reports
    /// written before it was counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slq_biased_points: Option<usize>,
    /// Their Ritz values raised to the round-off floor, summed; absent when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slq_floored_ritz_values: Option<usize>,
    /// Their probes' early Lanczos stops, summed; absent when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slq_premature_breakdowns: Option<usize>,
}

impl ImageTestReport {
    /// The SLQ bias counts of the report (zero where a field is absent).
    pub fn slq_bias_counts(&self) -> SlqBiasCounts {
        SlqBiasCounts {
            samples: self.slq_biased_points.unwrap_or(0),
            floored_ritz_values: self.slq_floored_ritz_values.unwrap_or(0),
            premature_breakdowns: self.slq_premature_breakdowns.unwrap_or(0),
        }
    }

    /// The report with the bias counts `c` (each field present only when non-zero).
    pub(super) fn with_slq_bias(self, c: SlqBiasCounts) -> Self {
        let nonzero = |c: usize| (c > 0).then_some(c);
        Self {
            slq_biased_points: nonzero(c.samples),
            slq_floored_ritz_values: nonzero(c.floored_ritz_values),
            slq_premature_breakdowns: nonzero(c.premature_breakdowns),
            ..self
        }
    }
}

/// Seeds of the evaluation passes: the noise and the probes come from separate streams so
/// that an exact pass over a prefix sees the same dequantised images.
fn streams(seed: u64) -> (FlowRng, FlowRng) {
    (
        FlowRng::seed_from_u64(seed ^ 0x0D0E_0A01),
        FlowRng::seed_from_u64(seed ^ 0x51C0_0B35),
    )
}

/// Per-image bits per dimension.
///
/// ```
/// use cpflow::SlqConfig;
/// use cpflow::image::train::slq_bpd_per_image;
/// # use cpflow::candle::{DType, Device};
/// # use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// # use cpflow::icnn::ImageShape;
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block flow on 4×4 grey images, initialised on two dequantised images.
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     width: 4, depth: 2, nblocks: vec![1], float: cpflow::FloatType::F64, ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..32).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = set.dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)?;
/// flow.initialize(&x)?;
/// let one = slq_bpd_per_image(&flow, &set, 2, &SlqConfig::default(), 2, 0)?;
/// assert_eq!(one.bpd.len(), 2);
/// assert!(one.probe_std_err.iter().all(|s| s.is_nan())); // one probe
/// let two = slq_bpd_per_image(&flow, &set, 2, &SlqConfig { probes: 2, steps: 10 }, 2, 0)?;
/// assert!(two.probe_std_err.iter().all(|s| s.is_finite()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PerImageBpd {
    /// Bits per dimension of each image.
    pub bpd: Vec<f64>,
    /// Standard error of each value from the spread over the SLQ probes (bits/dim; NaN
    /// with one probe; 0 for exact values).
    pub probe_std_err: Vec<f64>,
    /// SLQ's hidden-bias counts over the images ([`crate::SlqLogProb::bias_counts`]):
    /// images whose value is biased beyond `probe_std_err`, with their floored Ritz values
    /// and early Lanczos stops; zero for exact values.
    pub slq_bias: SlqBiasCounts,
}

/// Per-image SLQ bpd of the first `n` images of `set` (dequantisation noise and probes drawn
/// from `seed`), `batch` images per pass.
///
/// ```
/// use cpflow::SlqConfig;
/// use cpflow::image::train::slq_bpd_per_image;
/// # use cpflow::candle::{DType, Device};
/// # use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// # use cpflow::icnn::ImageShape;
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block flow on 4×4 grey images, initialised on two dequantised images.
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     width: 4, depth: 2, nblocks: vec![1], float: cpflow::FloatType::F64, ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..32).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = set.dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)?;
/// flow.initialize(&x)?;
/// // The seed fixes the dequantisation noise and the probes.
/// let a = slq_bpd_per_image(&flow, &set, 2, &SlqConfig::default(), 2, 5)?;
/// assert_eq!(a.bpd, slq_bpd_per_image(&flow, &set, 2, &SlqConfig::default(), 2, 5)?.bpd);
/// assert_ne!(a.bpd, slq_bpd_per_image(&flow, &set, 2, &SlqConfig::default(), 2, 6)?.bpd);
/// // Asking for more images than the set holds scores the set.
/// assert_eq!(slq_bpd_per_image(&flow, &set, 10, &SlqConfig::default(), 4, 5)?.bpd.len(), 2);
/// # Ok(())
/// # }
/// ```
pub fn slq_bpd_per_image(
    flow: &ImageFlow,
    set: &ImageSet,
    n: usize,
    slq: &SlqConfig,
    batch: usize,
    seed: u64,
) -> Result<PerImageBpd> {
    slq_bpd_per_image_monitored(flow, set, n, slq, batch, seed, &mut |_| {
        ControlFlow::Continue(())
    })
    .and_then(never_stopped)
}

/// The result of a pass run without a stop flag (which cannot have stopped).
fn never_stopped<T>(r: Option<T>) -> Result<T> {
    r.ok_or_else(|| CpflowError::Internal("an evaluation without a stop flag stopped".into()))
}

/// [`slq_bpd_per_image`] that calls `monitor` before each chunk (and once at the end) with
/// the images scored so far, and gives up (`None`) when it breaks before a chunk.
pub(super) fn slq_bpd_per_image_monitored(
    flow: &ImageFlow,
    set: &ImageSet,
    n: usize,
    slq: &SlqConfig,
    batch: usize,
    seed: u64,
    monitor: Monitor<'_>,
) -> Result<Option<PerImageBpd>> {
    let (mut noise, mut probes) = streams(seed);
    let d = flow.dim();
    let per_nat = 1.0 / (d as f64 * std::f64::consts::LN_2);
    let n = n.min(set.len());
    let mut out = PerImageBpd {
        bpd: Vec::with_capacity(n),
        probe_std_err: Vec::with_capacity(n),
        slq_bias: SlqBiasCounts::default(),
    };
    let mut start = 0;
    while start < n {
        if monitor(EvalProgress::new(EvalPass::Slq, start, n)).is_break() {
            return Ok(None);
        }
        let end = (start + batch.max(1)).min(n);
        let x = set.dequantized_range(start, end, flow.dtype(), flow.device(), &mut noise)?;
        let lp = flow.log_prob_slq(&x, slq, &mut probes)?;
        let v = lp.log_prob.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        out.bpd.extend(v.into_iter().map(|l| bits_per_dim(l, d)));
        out.probe_std_err
            .extend(lp.std_err.iter().map(|se| se * per_nat));
        out.slq_bias += lp.bias_counts();
        start = end;
    }
    // Nothing is left to stop: the pass is complete whatever the monitor says.
    let _ = monitor(EvalProgress::new(EvalPass::Slq, n, n));
    Ok(Some(out))
}

/// SLQ bpd of the first `n` images of `set` (see [`slq_bpd_per_image`]).
///
/// ```
/// use cpflow::SlqConfig;
/// use cpflow::image::mean_and_std_err;
/// use cpflow::image::train::{slq_bpd, slq_bpd_per_image};
/// # use cpflow::candle::{DType, Device};
/// # use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// # use cpflow::icnn::ImageShape;
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block flow on 4×4 grey images, initialised on two dequantised images.
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     width: 4, depth: 2, nblocks: vec![1], float: cpflow::FloatType::F64, ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..32).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = set.dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)?;
/// flow.initialize(&x)?;
/// let est = slq_bpd(&flow, &set, 2, &SlqConfig::default(), 2, 3)?;
/// let per = slq_bpd_per_image(&flow, &set, 2, &SlqConfig::default(), 2, 3)?;
/// assert_eq!((est.bpd, est.std_err), mean_and_std_err(&per.bpd));
/// assert_eq!(est.images, 2);
/// # Ok(())
/// # }
/// ```
pub fn slq_bpd(
    flow: &ImageFlow,
    set: &ImageSet,
    n: usize,
    slq: &SlqConfig,
    batch: usize,
    seed: u64,
) -> Result<BpdEstimate> {
    let per_image = slq_bpd_per_image(flow, set, n, slq, batch, seed)?;
    Ok(BpdEstimate::from_values(&per_image.bpd))
}

/// Per-image exact bpd of the first `n` images of `set`, dequantised exactly as
/// [`slq_bpd_per_image`] with the same `seed` dequantises them.
///
/// ```
/// use cpflow::candle::{DType, Device};
/// use cpflow::SlqConfig;
/// use cpflow::image::train::{exact_bpd_per_image, slq_bpd_per_image};
/// use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// use cpflow::icnn::ImageShape;
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // The baseline flow has no CP-Flow block, so SLQ has nothing to estimate: with the same
/// // seed (the same dequantisation noise) it agrees with the exact values.
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     nblocks: vec![1],
///     baseline: true,
///     float: cpflow::FloatType::F64,
///     ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..48).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// flow.initialize(&set.dequantized_range(0, 3, DType::F64, &Device::Cpu, &mut rng)?)?;
/// let exact = exact_bpd_per_image(&flow, &set, 3, 2, 7)?;
/// let slq = slq_bpd_per_image(&flow, &set, 3, &SlqConfig::default(), 2, 7)?;
/// assert_eq!(exact.len(), 3);
/// for (e, s) in exact.iter().zip(&slq.bpd) {
///     assert!((e - s).abs() < 1e-12, "{e} vs {s}");
/// }
/// # Ok(())
/// # }
/// ```
pub fn exact_bpd_per_image(
    flow: &ImageFlow,
    set: &ImageSet,
    n: usize,
    batch: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    exact_bpd_per_image_monitored(
        flow,
        set,
        n,
        batch,
        seed,
        &mut |_| ControlFlow::Continue(()),
    )
    .and_then(never_stopped)
}

/// [`exact_bpd_per_image`] that calls `monitor` before each chunk (and once at the end) with
/// the images scored so far, and gives up (`None`) when it breaks before a chunk.
pub(super) fn exact_bpd_per_image_monitored(
    flow: &ImageFlow,
    set: &ImageSet,
    n: usize,
    batch: usize,
    seed: u64,
    monitor: Monitor<'_>,
) -> Result<Option<Vec<f64>>> {
    let (mut noise, _) = streams(seed);
    let d = flow.dim();
    let n = n.min(set.len());
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        if monitor(EvalProgress::new(EvalPass::Exact, start, n)).is_break() {
            return Ok(None);
        }
        let end = (start + batch.max(1)).min(n);
        let x = set.dequantized_range(start, end, flow.dtype(), flow.device(), &mut noise)?;
        let lp = flow
            .log_prob_exact(&x)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        out.extend(lp.into_iter().map(|l| bits_per_dim(l, d)));
        start = end;
    }
    let _ = monitor(EvalProgress::new(EvalPass::Exact, n, n));
    Ok(Some(out))
}

/// The test score: SLQ bpd over the first `images` test images (all when `None`) and the
/// exact bpd on the first `exact_images` of them, compared image by image.
///
/// ```
/// use cpflow::image::ImageTestConfig;
/// use cpflow::image::train::score_test_set;
/// # use cpflow::candle::{DType, Device};
/// # use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// # use cpflow::icnn::ImageShape;
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block flow on 4×4 grey images, initialised on two dequantised images.
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     width: 4, depth: 2, nblocks: vec![1], float: cpflow::FloatType::F64, ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..32).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = set.dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)?;
/// flow.initialize(&x)?;
/// let cfg = ImageTestConfig { images: Some(1), exact_images: 1, ..Default::default() };
/// let report = score_test_set(&flow, &set, &cfg, 8, 0)?;
/// assert_eq!(report.slq.images, 1);
/// assert!(report.slq.std_err.is_nan()); // one image: no standard error over images
/// let cmp = report.exact.unwrap();
/// assert_eq!(cmp.exact.images, 1);
/// assert!((cmp.slq.bpd - cmp.exact.bpd - cmp.slq_minus_exact).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
pub fn score_test_set(
    flow: &ImageFlow,
    test: &ImageSet,
    cfg: &super::config::ImageTestConfig,
    batch: usize,
    seed: u64,
) -> Result<ImageTestReport> {
    score_test_set_monitored(flow, test, cfg, batch, seed, &mut |_| {
        ControlFlow::Continue(())
    })
    .and_then(never_stopped)
}

/// [`score_test_set`] that calls `monitor` before each chunk of either pass (and at the end
/// of each) with the images scored so far, and gives up (`None`) when it breaks before a
/// chunk.
pub(super) fn score_test_set_monitored(
    flow: &ImageFlow,
    test: &ImageSet,
    cfg: &super::config::ImageTestConfig,
    batch: usize,
    seed: u64,
    monitor: Monitor<'_>,
) -> Result<Option<ImageTestReport>> {
    let n = cfg.images.unwrap_or(test.len()).min(test.len());
    if cfg.exact_images > n {
        tracing::warn!(
            exact_images = cfg.exact_images,
            images = n,
            "test.exact_images is larger than the images scored: the exact score covers those {n}"
        );
    }
    let t = Instant::now();
    let Some(per_image) =
        slq_bpd_per_image_monitored(flow, test, n, &cfg.slq, batch, seed, monitor)?
    else {
        return Ok(None);
    };
    let slq = &per_image.bpd;
    let slq_seconds = t.elapsed().as_secs_f64();
    let m = cfg.exact_images.min(n);
    let exact = if m > 0 {
        let t = Instant::now();
        let Some(ex) = exact_bpd_per_image_monitored(flow, test, m, batch, seed, monitor)? else {
            return Ok(None);
        };
        let seconds = t.elapsed().as_secs_f64();
        let diff: Vec<f64> = slq[..m].iter().zip(&ex).map(|(s, e)| s - e).collect();
        let max_abs_z = diff
            .iter()
            .zip(&per_image.probe_std_err)
            .map(|(d, se)| (d / se).abs())
            .fold(0.0, f64::max);
        let (slq_minus_exact, slq_minus_exact_std_err) = mean_and_std_err(&diff);
        Some(ExactComparison {
            exact: BpdEstimate::from_values(&ex),
            slq: BpdEstimate::from_values(&slq[..m]),
            slq_minus_exact,
            slq_minus_exact_std_err,
            max_abs_difference: diff.iter().fold(0.0, |a, d| a.max(d.abs())),
            max_abs_z: if cfg.slq.probes > 1 {
                Some(max_abs_z)
            } else {
                None
            },
            seconds,
        })
    } else {
        None
    };
    let probe_std_err = (cfg.slq.probes > 1 && n > 0).then(|| {
        let ms = per_image.probe_std_err.iter().map(|s| s * s).sum::<f64>() / n as f64;
        ms.sqrt()
    });
    Ok(Some(
        ImageTestReport {
            slq_params: cfg.slq.clone(),
            slq: BpdEstimate::from_values(slq),
            probe_std_err,
            slq_seconds,
            exact,
            slq_biased_points: None,
            slq_floored_ritz_values: None,
            slq_premature_breakdowns: None,
        }
        .with_slq_bias(per_image.slq_bias),
    ))
}

#[cfg(test)]
mod tests;
