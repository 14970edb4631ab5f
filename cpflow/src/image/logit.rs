//! Uniform dequantisation of 8-bit images and the logit transform (`train_img.py`
//! `add_noise` and `lib/flows/elemwise.py:LogitTransform`, images-vae.md §1.4, §2.2).

use candle_core::{DType, Tensor};
use rand::Rng;

use crate::error::{CpflowError, Result};

/// The logit offset `α` of the reference's MNIST model (`LogitTransform(1e-6)`).
pub const MNIST_LOGIT_ALPHA: f64 = 1e-6;
/// The logit offset `α` of the reference's CIFAR-10 model (`LogitTransform(0.05)`).
pub const CIFAR10_LOGIT_ALPHA: f64 = 0.05;

/// Uniform dequantisation as `train_img.py:add_noise`: a grey level `k ∈ {0, …, 255}` becomes
/// `x = (k + u)/256` with `u ~ U[0, 1)` drawn on the host, so `x ∈ [0, 1)`.
///
/// `levels` holds the integer levels (any shape, any numeric dtype); the result has the same
/// shape and device, in `dtype`. A value that is not an integer in `0..=255` is an
/// [`CpflowError::InvalidInput`].
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let k = Tensor::new(&[[0u8, 255, 17, 128]], &Device::Cpu)?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = cpflow::image::dequantize(&k, DType::F64, &mut rng)?.to_vec2::<f64>()?;
/// assert!(x[0][0] >= 0.0 && x[0][0] < 1.0 / 256.0);
/// assert!(x[0][1] >= 255.0 / 256.0 && x[0][1] < 1.0);
/// # Ok(())
/// # }
/// ```
pub fn dequantize<R: Rng + ?Sized>(levels: &Tensor, dtype: DType, rng: &mut R) -> Result<Tensor> {
    let host = levels
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let mut out = Vec::with_capacity(host.len());
    for k in host {
        if !(0.0..=255.0).contains(&k) || k.fract() != 0.0 {
            return Err(CpflowError::InvalidInput(format!(
                "dequantize expects integer grey levels in 0..=255, got {k}"
            )));
        }
        out.push((k + rng.random::<f64>()) / 256.0);
    }
    Ok(Tensor::from_vec(out, levels.shape().clone(), levels.device())?.to_dtype(dtype)?)
}

/// The logit transform `s = α + (1 − 2α)x`, `y = log s − log(1 − s)` (an elementwise
/// bijection from `(−α/(1−2α), (1−α)/(1−2α)) ⊃ [0, 1]` onto ℝ), with
/// `log|det ∂y/∂x| = Σ_j [log(1 − 2α) − log s_j − log(1 − s_j)]` per sample and the inverse
/// `x = (σ(y) − α)/(1 − 2α)`.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::image::LogitTransform;
/// # fn main() -> cpflow::Result<()> {
/// let t = LogitTransform::new(0.0)?;
/// let x = Tensor::new(&[[0.5f64, 0.5], [0.25, 0.75]], &Device::Cpu)?;
/// let (y, logdet) = t.forward(&x)?;
/// // With α = 0: y = log(x/(1 − x)) and log|det| = −Σ log(x(1 − x)); at x = ½ that is 4 log 2.
/// assert_eq!(y.to_vec2::<f64>()?[0], vec![0.0, 0.0]);
/// let ld = logdet.to_vec1::<f64>()?;
/// assert!((ld[0] - 4.0 * 2f64.ln()).abs() < 1e-12);
/// let back = t.inverse(&y)?.to_vec2::<f64>()?;
/// assert!((back[1][0] - 0.25).abs() < 1e-12 && (back[1][1] - 0.75).abs() < 1e-12);
/// assert!(LogitTransform::new(0.5).is_err()); // α must be below ½
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogitTransform {
    alpha: f64,
}

impl LogitTransform {
    /// A logit transform with offset `α ∈ [0, 0.5)`.
    pub fn new(alpha: f64) -> Result<Self> {
        if !(0.0..0.5).contains(&alpha) {
            return Err(CpflowError::InvalidConfig(format!(
                "logit alpha must be in [0, 0.5), got {alpha}"
            )));
        }
        Ok(LogitTransform { alpha })
    }

    /// The offset `α`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// `(y, log|det ∂y/∂x|)` for rows `x` `(B, D)`: `y` `(B, D)` and the log-det `(B,)`,
    /// both differentiable through `x`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let a = self.alpha;
        let s = x.affine(1.0 - 2.0 * a, a)?;
        let log_s = s.log()?;
        // `1 − s = (1 − 2α)(1 − x) + α`, with `1 − x` first: exact for `x ∈ [½, 1]`
        // (Sterbenz), so near `x = 1` the result keeps full relative precision. `1 − s`
        // computed from the rounded `s` loses it (in f32 with `α = 10⁻⁶`, up to 1.3e-2 in `y`
        // at `x = 1`).
        let log_1ms = x.affine(-1.0, 1.0)?.affine(1.0 - 2.0 * a, a)?.log()?;
        let y = (&log_s - &log_1ms)?;
        let d = x.dim(1)? as f64;
        let logdet = (log_s + log_1ms)?
            .sum(1)?
            .affine(-1.0, d * (1.0 - 2.0 * a).ln())?;
        Ok((y, logdet))
    }

    /// The closed range `[−α/(1−2α), (1−α)/(1−2α)]`, the image of ℝ under the exact inverse:
    /// wider than `[0, 1]` for `α > 0`, so the samples of a logit flow may leave `[0, 1]`.
    /// [`LogitTransform::inverse`] stays strictly inside it (it saturates short of the ends,
    /// where the forward is infinite).
    ///
    /// ```
    /// use cpflow::image::LogitTransform;
    /// # fn main() -> cpflow::Result<()> {
    /// let (lo, hi) = LogitTransform::new(0.05)?.range();
    /// assert!((lo + 0.05 / 0.9).abs() < 1e-15 && (hi - 0.95 / 0.9).abs() < 1e-15);
    /// assert_eq!(LogitTransform::new(0.0)?.range(), (0.0, 1.0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn range(&self) -> (f64, f64) {
        let a = self.alpha;
        (-a / (1.0 - 2.0 * a), (1.0 - a) / (1.0 - 2.0 * a))
    }

    /// The inverse `x = (σ(y) − α)/(1 − 2α)`, saturating: `y` beyond
    /// `±`[`LogitTransform::saturation`] of its dtype is taken at that bound (a NaN stays NaN).
    ///
    /// Without the bound, `σ(y)` rounds to exactly 0 or 1 for large `|y|` (`|y| ≳ 17` in
    /// f32), and `x` to an end of [`LogitTransform::range`] or, by the rounding of the affine
    /// map, just beyond it: a point where the forward is infinite (`log 0`), and which the
    /// data checks of a flow refuse. With it, every output maps forward to a finite `y` (the
    /// bound back, up to rounding), so a flow's samples are points it can score. A saturated
    /// pixel's log-density term is that of the returned point (large and finite: the
    /// `−log s − log(1 − s)` of the log-det is about the bound), not the density at the latent
    /// that was drawn, which no float of the dtype represents. Outputs differ from the exact
    /// inverse only where `σ(y)` lies within `4ε` of 0 or 1 (`ε` the dtype's epsilon): for
    /// the MNIST offset `α = 10⁻⁶`, only beyond the logit of `[0, 1]` (`|y| > 13.8`), so
    /// outside `[0, 1]`.
    ///
    /// ```
    /// use cpflow::candle::{DType, Device, Tensor};
    /// use cpflow::image::LogitTransform;
    /// # fn main() -> cpflow::Result<()> {
    /// let t = LogitTransform::new(1e-6)?;
    /// let y = Tensor::new(&[[-1e3f32, -20.0, 0.0, 20.0, 1e3, f32::NAN]], &Device::Cpu)?;
    /// let x = t.inverse(&y)?;
    /// let (back, logdet) = t.forward(&x.narrow(1, 0, 5)?)?;
    /// let bound = LogitTransform::saturation(DType::F32) as f32; // 21 ln 2 ≈ 14.56
    /// let back = back.to_vec2::<f32>()?;
    /// assert!((back[0][0] + bound).abs() < 0.5 && (back[0][4] - bound).abs() < 0.5);
    /// assert!(logdet.to_vec1::<f32>()?[0].is_finite());
    /// assert!(x.to_vec2::<f32>()?[0][5].is_nan());
    /// # Ok(())
    /// # }
    /// ```
    pub fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        let a = self.alpha;
        let bound = Self::saturation(y.dtype());
        // Only |y| > bound is replaced, so that a NaN stays NaN on every device (CUDA's
        // min/max drop NaNs); ±∞ saturates.
        let beyond = y.abs()?.gt(bound)?;
        let y = beyond.where_cond(&y.clamp(-bound, bound)?, y)?;
        let sigma = (y.neg()?.exp()? + 1.0)?.recip()?;
        Ok(sigma.affine(1.0 / (1.0 - 2.0 * a), -a / (1.0 - 2.0 * a))?)
    }

    /// The bound `ln(1/(4ε))` on `|y|` in [`LogitTransform::inverse`], `ε` the machine
    /// epsilon of `dtype` (f32: `21 ln 2 ≈ 14.56`, f64: `50 ln 2 ≈ 34.66`; f16, bf16 theirs;
    /// other dtypes as f32: [`krylov::unit_roundoff_of`]): `σ` of it is `4ε`, at least 8
    /// representable steps, from 0 and 1, a margin that the roundings of the inverse and of
    /// the forward's `α + (1 − 2α)x` (about one step each) cannot close, so the forward of
    /// every output is finite.
    pub fn saturation(dtype: DType) -> f64 {
        -(4.0 * krylov::unit_roundoff_of(dtype)).ln()
    }
}
