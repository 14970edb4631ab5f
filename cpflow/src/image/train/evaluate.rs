//! Bits per dimension of an image set: SLQ (validation and the test score, with the standard
//! error over images) and, on a subset, exact log-dets (how far the SLQ number is off).

use std::time::Instant;

use candle_core::DType;
use serde::{Deserialize, Serialize};

use super::data::ImageSet;
use crate::config::SlqParams;
use crate::error::Result;
use crate::image::bpd::bits_per_dim;
use crate::image::flow::{ImageFlow, mean_and_std_err};
use crate::rng::FlowRng;

/// Mean bits per dimension over images with the standard error of that mean (spread over the
/// images: data, dequantisation noise and, for SLQ, the probes together; `NaN` for one image).
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
    fn from_values(v: &[f64]) -> Self {
        let (bpd, std_err) = mean_and_std_err(v);
        BpdEstimate {
            images: v.len(),
            bpd,
            std_err,
        }
    }
}

/// Exact against SLQ bits per dimension on the same (identically dequantised) test images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExactComparison {
    /// Exact log-det bpd.
    pub exact: BpdEstimate,
    /// SLQ bpd of the same images (same noise; the probes of the full SLQ pass).
    pub slq: BpdEstimate,
    /// Mean of `slq − exact` per image, bits/dim.
    #[serde(deserialize_with = "super::f64_or_nan")]
    pub mean_difference: f64,
    /// Standard error of that mean (`NaN` for one image).
    #[serde(deserialize_with = "super::f64_or_nan")]
    pub difference_std_err: f64,
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageTestReport {
    /// The SLQ estimator used.
    pub slq_params: SlqParams,
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
#[derive(Clone, Debug, PartialEq)]
pub struct PerImageBpd {
    /// Bits per dimension of each image.
    pub bpd: Vec<f64>,
    /// Standard error of each value from the spread over the SLQ probes (bits/dim; NaN
    /// with one probe; 0 for exact values).
    pub probe_std_err: Vec<f64>,
}

/// Per-image SLQ bpd of the first `n` images of `set` (dequantisation noise and probes drawn
/// from `seed`), `batch` images per pass.
pub fn slq_bpd_per_image(
    flow: &ImageFlow,
    set: &ImageSet,
    n: usize,
    slq: &SlqParams,
    batch: usize,
    seed: u64,
) -> Result<PerImageBpd> {
    let (mut noise, mut probes) = streams(seed);
    let d = flow.dim();
    let per_nat = 1.0 / (d as f64 * std::f64::consts::LN_2);
    let n = n.min(set.len());
    let mut out = PerImageBpd {
        bpd: Vec::with_capacity(n),
        probe_std_err: Vec::with_capacity(n),
    };
    let mut start = 0;
    while start < n {
        let end = (start + batch.max(1)).min(n);
        let x = set.dequantized_range(start, end, flow.dtype(), flow.device(), &mut noise)?;
        let lp = flow.log_prob_slq(&x, slq, &mut probes)?;
        let v = lp.log_prob.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        out.bpd.extend(v.into_iter().map(|l| bits_per_dim(l, d)));
        out.probe_std_err
            .extend(lp.std_err.iter().map(|se| se * per_nat));
        start = end;
    }
    Ok(out)
}

/// SLQ bpd of the first `n` images of `set` (see [`slq_bpd_per_image`]).
pub fn slq_bpd(
    flow: &ImageFlow,
    set: &ImageSet,
    n: usize,
    slq: &SlqParams,
    batch: usize,
    seed: u64,
) -> Result<BpdEstimate> {
    Ok(BpdEstimate::from_values(
        &slq_bpd_per_image(flow, set, n, slq, batch, seed)?.bpd,
    ))
}

/// Per-image exact bpd of the first `n` images of `set`, dequantised exactly as
/// [`slq_bpd_per_image`] with the same `seed` dequantises them.
pub fn exact_bpd_per_image(
    flow: &ImageFlow,
    set: &ImageSet,
    n: usize,
    batch: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    let (mut noise, _) = streams(seed);
    let d = flow.dim();
    let n = n.min(set.len());
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let end = (start + batch.max(1)).min(n);
        let x = set.dequantized_range(start, end, flow.dtype(), flow.device(), &mut noise)?;
        let lp = flow
            .log_prob_exact(&x)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        out.extend(lp.into_iter().map(|l| bits_per_dim(l, d)));
        start = end;
    }
    Ok(out)
}

/// The test score: SLQ bpd over the first `images` test images (all when `None`) and the
/// exact bpd on the first `exact_images` of them, compared image by image.
pub fn score_test_set(
    flow: &ImageFlow,
    test: &ImageSet,
    cfg: &super::config::ImageTestConfig,
    batch: usize,
    seed: u64,
) -> Result<ImageTestReport> {
    let n = cfg.images.unwrap_or(test.len()).min(test.len());
    let t = Instant::now();
    let per_image = slq_bpd_per_image(flow, test, n, &cfg.slq, batch, seed)?;
    let slq = &per_image.bpd;
    let slq_seconds = t.elapsed().as_secs_f64();
    let m = cfg.exact_images.min(n);
    let exact = if m > 0 {
        let t = Instant::now();
        let ex = exact_bpd_per_image(flow, test, m, batch, seed)?;
        let seconds = t.elapsed().as_secs_f64();
        let diff: Vec<f64> = slq[..m].iter().zip(&ex).map(|(s, e)| s - e).collect();
        let max_abs_z = diff
            .iter()
            .zip(&per_image.probe_std_err)
            .map(|(d, se)| (d / se).abs())
            .fold(0.0, f64::max);
        let (mean_difference, difference_std_err) = mean_and_std_err(&diff);
        Some(ExactComparison {
            exact: BpdEstimate::from_values(&ex),
            slq: BpdEstimate::from_values(&slq[..m]),
            mean_difference,
            difference_std_err,
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
    Ok(ImageTestReport {
        slq_params: cfg.slq.clone(),
        slq: BpdEstimate::from_values(slq),
        probe_std_err,
        slq_seconds,
        exact,
    })
}
