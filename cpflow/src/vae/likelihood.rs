//! The decoder's log-likelihood `log p(x | z)` per image (`optimization/loss.py`): Bernoulli
//! for binary images, a 256-way categorical per pixel for Frey Faces.

use candle_core::{D, DType, Tensor};

use std::sync::Arc;

use super::categorical_op::{CategoricalHead, fused_categorical_log_likelihood};
use super::gated::Conv;

use super::network::softplus;
use super::shape_text::tuple_text;
use crate::error::{CpflowError, Result};

/// `Σ_pixels log Bernoulli(x; σ(l))` per image, from logits `l` `(B, 1, H, W)` and binary
/// `x` of the same shape: `Σ x·l − softplus(l)`, `(B,)`.
///
/// (The reference applies a sigmoid and PyTorch's BCE, which clamps each log at −100; in
/// logits the same value is exact without the clamp.)
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// let l = Tensor::new(&[[[[0.0f64, 2.0]]]], &Device::Cpu)?;
/// let x = Tensor::new(&[[[[1.0f64, 0.0]]]], &Device::Cpu)?;
/// let ll = cpflow::vae::bernoulli_log_likelihood(&l, &x)?.to_vec1::<f64>()?;
/// let want = (0.5f64).ln() + (1.0 - 1.0 / (1.0 + (-2f64).exp())).ln();
/// assert!((ll[0] - want).abs() < 1e-12);
/// # Ok::<(), cpflow::CpflowError>(())
/// ```
pub fn bernoulli_log_likelihood(logits: &Tensor, x: &Tensor) -> Result<Tensor> {
    if logits.dims() != x.dims() || logits.rank() != 4 {
        return Err(CpflowError::InvalidInput(format!(
            "Bernoulli likelihood: logits {} and images {} must both be (B, 1, H, W)",
            tuple_text(logits.dims()),
            tuple_text(x.dims())
        )));
    }
    let per_pixel = ((x * logits)? - softplus(logits)?)?;
    Ok(per_pixel.flatten_from(1)?.sum(1)?)
}

/// `Σ_pixels log softmax(l)[target]` per image, from logits `(B, 256, H, W)` and class
/// targets `(B, H·W)` (`u32`, the 8-bit pixel values), `(B,)`.
///
/// On the CPU in f32/f64 this is one fused op (`categorical_op.rs`: two passes over the
/// logits forward, one backward); elsewhere it is composed from candle's ops.
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// let l = Tensor::zeros((1, 256, 1, 2), DType::F64, &Device::Cpu)?;
/// let t = Tensor::new(&[[3u32, 250]], &Device::Cpu)?;
/// let ll = cpflow::vae::categorical_log_likelihood(&l, &t)?.to_vec1::<f64>()?;
/// assert!((ll[0] + 2.0 * 256f64.ln()).abs() < 1e-12); // uniform: 2 pixels × log(1/256)
/// # Ok::<(), cpflow::CpflowError>(())
/// ```
pub fn categorical_log_likelihood(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (b, _, h, w) = logits.dims4()?;
    if targets.dims() != [b, h * w] {
        return Err(CpflowError::InvalidInput(format!(
            "categorical likelihood: targets {} must be (B, H·W) = ({b}, {})",
            tuple_text(targets.dims()),
            h * w
        )));
    }
    if icnn::takes_host_kernels(logits.device())
        && matches!(logits.dtype(), DType::F32 | DType::F64)
    {
        check_u32_targets(targets)?;
        return Ok(fused_categorical_log_likelihood(logits, targets)?);
    }
    composed_categorical_log_likelihood(logits, targets)
}

/// The CPU ops of the 256-way likelihood read the class targets as `u32`.
fn check_u32_targets(targets: &Tensor) -> Result<()> {
    if targets.dtype() != DType::U32 {
        return Err(CpflowError::InvalidInput(format!(
            "categorical likelihood: targets must be u32, got {}",
            targets.dtype().as_str()
        )));
    }
    Ok(())
}

/// [`categorical_log_likelihood`] of the logits `conv.forward(h)`: the same values, with the
/// convolution and the likelihood as one op (`CategoricalHead`), so that the logits are not
/// a tensor of candle's graph.
pub(super) fn conv_categorical_log_likelihood(
    h: &Tensor,
    conv: &Conv,
    targets: &Tensor,
) -> Result<Tensor> {
    if icnn::takes_host_kernels(h.device()) {
        check_u32_targets(targets)?;
    }
    let head = Arc::new(CategoricalHead::new(targets)?);
    Ok(conv.forward_headed(h, head)?.narrow(1, 0, 1)?.squeeze(1)?)
}

/// [`categorical_log_likelihood`] from candle's own ops (any device; the CPU path's reference
/// in the tests).
pub(super) fn composed_categorical_log_likelihood(
    logits: &Tensor,
    targets: &Tensor,
) -> Result<Tensor> {
    Ok(composed_categorical_parts(logits, targets)?.0)
}

/// From candle's ops: the per-image log-likelihood `(B,)` and the per-pixel
/// `lseₙ = log Σ_k exp l[k, n]` `(B, N)`.
pub(super) fn composed_categorical_parts(
    logits: &Tensor,
    targets: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (b, k, h, w) = logits.dims4()?;
    let l = logits.reshape((b, k, h * w))?;
    let lse = log_sum_exp_axis1(&l)?; // (b, hw)
    let picked = l
        .gather(&targets.reshape((b, 1, h * w))?.contiguous()?, 1)?
        .squeeze(1)?;
    Ok(((picked - &lse)?.sum(D::Minus1)?, lse))
}

/// `log Σ_k exp(l[:, k, :])` with the maximum subtracted, `(B, N)`.
fn log_sum_exp_axis1(l: &Tensor) -> candle_core::Result<Tensor> {
    let m = l.max_keepdim(1)?.detach();
    let s = l.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()?;
    (s + m)?.squeeze(1)
}
