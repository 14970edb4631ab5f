//! Progress of the image evaluation passes (SLQ and exact bits per dimension), reported
//! between chunks to a caller's monitor, which may also stop them: a progress bar, a time
//! limit or an interrupt.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use super::data::ImageSet;
use super::evaluate::{
    BpdEstimate, ImageTestReport, exact_bpd_per_image_monitored, score_test_set_monitored,
    slq_bpd_per_image_monitored,
};
use crate::config::SlqConfig;
use crate::error::Result;
use crate::image::flow::ImageFlow;

/// A caller's monitor: called before each chunk of a pass and once at its end.
pub(super) type Monitor<'a> = &'a mut dyn FnMut(EvalProgress) -> ControlFlow<()>;

/// Which pass of an image evaluation is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalPass {
    /// Stochastic Lanczos quadrature log-dets (every scored image).
    Slq,
    /// Exact log-dets (the test score's exact subset, or an exact pass of its own).
    Exact,
}

/// Where a pass stands: `done` of its `total` images scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalProgress {
    /// The pass.
    pub pass: EvalPass,
    /// Images of this pass scored so far.
    pub done: usize,
    /// Images this pass scores.
    pub total: usize,
}

impl EvalProgress {
    pub(super) fn new(pass: EvalPass, done: usize, total: usize) -> Self {
        Self { pass, done, total }
    }
}

/// [`score_test_set`](super::score_test_set) with a monitor: `monitor` is called before each
/// chunk of `batch` images of either pass, and once at the end of each pass, with the images
/// scored so far; returning `ControlFlow::Break(())` before a chunk stops the score, and the
/// function returns `Ok(None)`. The numbers are `score_test_set`'s (same noise, same probes).
///
/// ```
/// use std::ops::ControlFlow;
/// use cpflow::image::ImageTestConfig;
/// use cpflow::image::train::{EvalPass, EvalProgress, score_test_set, score_test_set_with_monitor};
/// # use cpflow::candle::{DType, Device};
/// # use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// # use cpflow::icnn::ImageShape;
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     width: 4, depth: 2, nblocks: vec![1], float: cpflow::FloatType::F64, ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..80).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// flow.initialize(&set.dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)?)?;
/// let cfg = ImageTestConfig { images: Some(5), exact_images: 2, ..Default::default() };
/// // Record every report: 5 SLQ images in chunks of 2, then 2 exact images.
/// let mut seen = Vec::new();
/// let report = score_test_set_with_monitor(&flow, &set, &cfg, 2, 0, &mut |p: EvalProgress| {
///     seen.push((p.pass, p.done, p.total));
///     ControlFlow::Continue(())
/// })?
/// .expect("not stopped");
/// use EvalPass::{Exact, Slq};
/// assert_eq!(seen, [(Slq, 0, 5), (Slq, 2, 5), (Slq, 4, 5), (Slq, 5, 5), (Exact, 0, 2), (Exact, 2, 2)]);
/// assert_eq!(report.slq, score_test_set(&flow, &set, &cfg, 2, 0)?.slq);
/// // Stopping after the first chunk of the exact pass returns no score.
/// let stop = score_test_set_with_monitor(&flow, &set, &cfg, 1, 0, &mut |p: EvalProgress| {
///     if p.pass == Exact && p.done == 1 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
/// })?;
/// assert!(stop.is_none());
/// # Ok(())
/// # }
/// ```
pub fn score_test_set_with_monitor(
    flow: &ImageFlow,
    test: &ImageSet,
    cfg: &super::config::ImageTestConfig,
    batch: usize,
    seed: u64,
    monitor: &mut dyn FnMut(EvalProgress) -> ControlFlow<()>,
) -> Result<Option<ImageTestReport>> {
    score_test_set_monitored(flow, test, cfg, batch, seed, monitor)
}

/// [`exact_bpd_per_image`](super::exact_bpd_per_image) with a monitor, as
/// [`score_test_set_with_monitor`]: `Ok(None)` when the monitor breaks before a chunk.
///
/// ```
/// use std::ops::ControlFlow;
/// use cpflow::image::train::{EvalProgress, exact_bpd_per_image, exact_bpd_per_image_with_monitor};
/// # use cpflow::candle::{DType, Device};
/// # use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// # use cpflow::icnn::ImageShape;
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     width: 4, depth: 2, nblocks: vec![1], float: cpflow::FloatType::F64, ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..48).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// flow.initialize(&set.dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)?)?;
/// let mut calls = 0;
/// let v = exact_bpd_per_image_with_monitor(&flow, &set, 3, 2, 7, &mut |_: EvalProgress| {
///     calls += 1;
///     ControlFlow::Continue(())
/// })?;
/// assert_eq!(v, Some(exact_bpd_per_image(&flow, &set, 3, 2, 7)?));
/// assert_eq!(calls, 3); // before each of the 2 chunks, and at the end
/// # Ok(())
/// # }
/// ```
pub fn exact_bpd_per_image_with_monitor(
    flow: &ImageFlow,
    set: &ImageSet,
    n: usize,
    batch: usize,
    seed: u64,
    monitor: &mut dyn FnMut(EvalProgress) -> ControlFlow<()>,
) -> Result<Option<Vec<f64>>> {
    exact_bpd_per_image_monitored(flow, set, n, batch, seed, monitor)
}

/// A monitor that stops the passes before their next chunk once `stop` is set.
fn stop_flag(stop: Option<&AtomicBool>) -> impl FnMut(EvalProgress) -> ControlFlow<()> + '_ {
    move |_| {
        if stop.is_some_and(|f| f.load(Ordering::Relaxed)) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// [`super::slq_bpd`] that gives up (`None`) before the next chunk once `stop` is set.
pub(crate) fn slq_bpd_until(
    flow: &ImageFlow,
    set: &ImageSet,
    n: usize,
    slq: &SlqConfig,
    batch: usize,
    seed: u64,
    stop: Option<&AtomicBool>,
) -> Result<Option<BpdEstimate>> {
    Ok(
        slq_bpd_per_image_monitored(flow, set, n, slq, batch, seed, &mut stop_flag(stop))?
            .map(|per_image| BpdEstimate::from_values(&per_image.bpd)),
    )
}

/// [`super::score_test_set`] that gives up (`None`) before the next chunk of either pass once `stop`
/// is set (an interrupt: the exact pass of a large model takes minutes per image).
pub(crate) fn score_test_set_until(
    flow: &ImageFlow,
    test: &ImageSet,
    cfg: &super::config::ImageTestConfig,
    batch: usize,
    seed: u64,
    stop: Option<&AtomicBool>,
) -> Result<Option<ImageTestReport>> {
    score_test_set_monitored(flow, test, cfg, batch, seed, &mut stop_flag(stop))
}
