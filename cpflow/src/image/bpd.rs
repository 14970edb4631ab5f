//! Bits per dimension of 8-bit images under a flow on dequantised data.

/// Bits per dimension of 8-bit images from `log_prob`, the flow's log-density (nats) of the
/// **dequantised image `x = (k + u)/256 ∈ [0, 1)^D`**, the quantity
/// [`crate::image::ImageFlow::log_prob_exact`] / `log_prob_slq` return:
///
/// `bpd = (−log p(x) + D·ln 256) / (D·ln 2)`   (= `−log p(x)/(D ln 2) + 8`)
///
/// Every correction, in order (images-vae.md §2.4, the reference's `compute_loss`):
/// * **logit and ActNorm**: their log-Jacobians are layers of the flow, so `log p(x)`
///   already holds them (`log p(x) = log N(z) + log|det ∂y/∂x|_logit + Σ ActNorm log-dets
///   + Σ CP-Flow log-dets`). For a flow fitted to logit-space data `y` outside the flow (as
///   `cpflow::datasets::dequantize_logit` produces), pass `log p(y) + log|det ∂y/∂x|`.
/// * **256-level discretisation**: `x` lives on `[0, 1)^D` but the pixel `v = 256·x` on
///   `[0, 256)^D`: `log p(v) = log p(x) − D·ln 256`.
/// * **dequantisation**: with `u ~ U[0, 1)^D`, `P(k) = ∫ p(k + u) du ≥ exp E_u[log p(k + u)]`
///   (Jensen), so `−log p(v)/(D ln 2)` at a dequantised sample is an unbiased estimate of an
///   upper bound on the bits per dimension of the discrete image `k`: there is no further
///   term, and the noise must be the `U[0, 1)/256` of [`crate::image::dequantize`].
///
/// A standard error `se` of `log p` (nats) is `se/(D ln 2)` bits per dimension.
///
/// `bits_per_dim(a + b, D)` equals `cpflow::datasets::bits_per_dim(a, b, D)` (the same
/// formula with the logit Jacobian as a separate argument).
///
/// ```
/// // A uniform density on [0, 1)^D is 8 bits per dimension, whatever D.
/// assert!((cpflow::image::bits_per_dim(0.0, 784) - 8.0).abs() < 1e-12);
/// ```
pub fn bits_per_dim(log_prob: f64, dim: usize) -> f64 {
    let d = dim as f64;
    (-log_prob + d * 256f64.ln()) / (d * std::f64::consts::LN_2)
}
