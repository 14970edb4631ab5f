//! Activations with their first and second derivatives, as candle tensor ops.
//!
//! Every activation returns its value, first and second derivative as tensors built from
//! ops that candle can differentiate (`abs`, `relu`, `exp`, `log`, `erf`, affine maps), so
//! candle's ordinary backward differentiates the explicit gradients and Hessian-vector
//! products w.r.t. the parameters, and candle's higher-order autodiff
//! (`CANDLE_GRAD_DO_NOT_DETACH=1`) can differentiate the value itself several times.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{IcnnError, Result};
use crate::fused::{ActDerivative, ActSpec, ActTriple};

/// Whether the fused CPU kernels handle `x`.
pub(crate) fn fused_supported(x: &Tensor) -> bool {
    crate::takes_host_kernels(x.device()) && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// [`IcnnError::Shape`] for a tensor of integers: candle's `abs`/`exp` on them panic ("no
/// unary function for u32").
fn check_float(op: &str, x: &Tensor) -> Result<()> {
    if x.dtype().is_float() {
        Ok(())
    } else {
        Err(IcnnError::Shape(format!(
            "{op}: expected a floating-point tensor, got dtype {:?}",
            x.dtype()
        )))
    }
}

/// The convex, non-decreasing activation `s` of the hidden layers (reference
/// `get_softplus(softplus_type, ...)`).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use icnn::{Activation, ActivationKind};
/// # fn main() -> icnn::Result<()> {
/// let zero = Tensor::new(&[0.0f64], &Device::Cpu)?;
/// let at_zero = |kind| -> icnn::Result<(f64, f64)> {
///     let eval = Activation::new(kind).eval(&zero, true)?;
///     Ok((eval.value.to_vec1::<f64>()?[0], eval.d1.unwrap().to_vec1::<f64>()?[0]))
/// };
/// // s(0) = ln 2 and 1/√(2π); both have s'(0) = 1/2.
/// let (v, d) = at_zero(ActivationKind::Softplus)?;
/// assert!((v - 2f64.ln()).abs() < 1e-15 && (d - 0.5).abs() < 1e-15);
/// let (v, d) = at_zero(ActivationKind::GaussianSoftplus)?;
/// assert!((v - 0.398_942_280_401_432_7).abs() < 1e-15 && (d - 0.5).abs() < 1e-15);
/// assert_eq!(ActivationKind::default(), ActivationKind::Softplus);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ActivationKind {
    /// `softplus(x) = log(1 + eˣ)`; `s' = σ(x)`, `s'' = σ(x)(1 − σ(x))`.
    #[default]
    Softplus,
    /// `x Φ(x) + φ(x)` (the integral of the Gaussian CDF); `s' = Φ(x)`, `s'' = φ(x)`.
    GaussianSoftplus,
}

/// A fully specified activation: the kind, whether it is shifted to 0 at 0
/// (`zero_softplus`), and whether it is the symmetric variant `s(x) − x/2`
/// (used on input-only paths, `symm_act_first`).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use icnn::{Activation, ActivationKind};
/// # fn main() -> icnn::Result<()> {
/// let x = Tensor::new(&[-3.0f64, 0.0, 2.0], &Device::Cpu)?;
/// let plain = Activation::new(ActivationKind::Softplus);
/// // Shifted: s(x) − s(0), zero at zero.
/// let shifted = plain.with_zero_shift(true).value(&x)?.to_vec1::<f64>()?;
/// assert!(shifted[1].abs() < 1e-15);
/// // Symmetric: s(x) − x/2, so s'(0) = 0 and s'' is unchanged.
/// let symm = plain.with_symmetric(true);
/// assert!(symm.first_derivative(&x)?.to_vec1::<f64>()?[1].abs() < 1e-15);
/// let d2 = symm.second_derivative(&x)?.to_vec1::<f64>()?;
/// assert_eq!(d2, plain.second_derivative(&x)?.to_vec1::<f64>()?);
/// // The fused CPU kernel and the composed candle ops agree.
/// let fused = plain.eval(&x, false)?.value.to_vec1::<f64>()?;
/// let composed = plain.eval_composed(&x, false)?.value.to_vec1::<f64>()?;
/// assert!(fused.iter().zip(&composed).all(|(a, b)| (a - b).abs() < 1e-14));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The base function `s`.
    pub kind: ActivationKind,
    /// Subtract `s(0)` so that the activation is 0 at 0 (reference `zero_softplus`).
    pub zero_shift: bool,
    /// Use `s(x) − x/2` (reference `symm_softplus`); convex but not monotone, so only valid
    /// on affine functions of the input.
    pub symmetric: bool,
}

impl Activation {
    /// A plain (non-shifted, non-symmetric) activation of the given kind.
    pub fn new(kind: ActivationKind) -> Self {
        Self {
            kind,
            zero_shift: false,
            symmetric: false,
        }
    }

    /// The same activation, symmetric (`s(x) − x/2`) when `symmetric` is true.
    pub fn with_symmetric(self, symmetric: bool) -> Self {
        Self { symmetric, ..self }
    }

    /// The same activation, shifted to 0 at 0 when `zero_shift` is true.
    pub fn with_zero_shift(self, zero_shift: bool) -> Self {
        Self { zero_shift, ..self }
    }

    /// `s(0)` of the base function (before the shift).
    fn base_at_zero(&self) -> f64 {
        match self.kind {
            ActivationKind::Softplus => std::f64::consts::LN_2,
            ActivationKind::GaussianSoftplus => FRAC_1_SQRT_2PI,
        }
    }

    /// The value `s(x)` (elementwise).
    pub fn value(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.eval(x, false)?.value)
    }

    /// The first derivative `s'(x)` (elementwise).
    pub fn first_derivative(&self, x: &Tensor) -> Result<Tensor> {
        self.eval(x, true)?
            .d1
            .ok_or_else(|| IcnnError::InvalidConfig("activation without derivative".into()))
    }

    /// The second derivative `s''(x)` (elementwise).
    pub fn second_derivative(&self, x: &Tensor) -> Result<Tensor> {
        self.eval(x, true)?
            .d2
            .ok_or_else(|| IcnnError::InvalidConfig("activation without derivative".into()))
    }

    pub(crate) fn spec(&self) -> ActSpec {
        ActSpec {
            kind: self.kind,
            shift: if self.zero_shift {
                self.base_at_zero()
            } else {
                0.0
            },
            symmetric: self.symmetric,
        }
    }

    /// Value and, when `derivatives` is true, first and second derivatives, sharing work.
    ///
    /// CPU f32/f64 tensors use fused single-pass kernels (custom ops whose backward is the
    /// next derivative, so they can be differentiated any number of times); other devices use
    /// [`Activation::eval_composed`].
    pub fn eval(&self, x: &Tensor, derivatives: bool) -> Result<ActivationEval> {
        if !fused_supported(x) {
            return self.eval_composed(x, derivatives);
        }
        let x = x.contiguous()?;
        if derivatives {
            let t = x.apply_op1(ActTriple::new(self.spec()))?;
            Ok(ActivationEval {
                value: t.get(0)?,
                d1: Some(t.get(1)?),
                d2: Some(t.get(2)?),
            })
        } else {
            Ok(ActivationEval {
                value: x.apply_op1(ActDerivative::new(self.spec(), 0))?,
                d1: None,
                d2: None,
            })
        }
    }

    /// The same as [`Activation::eval`], composed from elementwise candle ops (`abs`, `relu`,
    /// `exp`, `log`, `erf`, `maximum`, affine maps, candle-nn's `sigmoid`) that run on every
    /// device; at `x = ±∞` they give the limits, as the fused kernels do. A tensor of
    /// integers is an [`IcnnError::Shape`] (here and in [`Activation::eval`]).
    pub fn eval_composed(&self, x: &Tensor, derivatives: bool) -> Result<ActivationEval> {
        check_float("activation", x)?;
        let shift = if self.zero_shift {
            self.base_at_zero()
        } else {
            0.0
        };
        // The shift of a non-symmetric variant (the symmetric ones fold it into their affine
        // map).
        let minus_shift = |v: Tensor| -> Result<Tensor> {
            Ok(if shift != 0.0 {
                v.affine(1.0, -shift)?
            } else {
                v
            })
        };
        // Each variant is written so that x = ±∞ gives the limits (as the fused kernels do):
        // no `∞ − ∞`, no `0·∞`.
        let (value, d1, d2) = match self.kind {
            ActivationKind::Softplus => {
                // e = e^{−|x|} ≤ 1, L = log(1 + e): sp(x) = relu(x) + L, and the symmetric
                // sp(x) − x/2 = |x|/2 + L. σ is candle-nn's sigmoid kernel, 1/(1 + e^{−x})
                // (its backward σ(1 − σ) never meets the e^{−x} that overflows), and
                // σ(1 − σ) = e/(1 + e)².
                let ax = x.abs()?;
                let e = ax.neg()?.exp()?;
                let one_plus_e = e.affine(1.0, 1.0)?;
                let l = one_plus_e.log()?;
                let value = if self.symmetric {
                    (ax.affine(0.5, -shift)? + &l)?
                } else {
                    minus_shift((x.relu()? + &l)?)?
                };
                if derivatives {
                    let sigma = candle_nn::ops::sigmoid(x)?;
                    let d1 = if self.symmetric {
                        sigma.affine(1.0, -0.5)?
                    } else {
                        sigma
                    };
                    let d2 = (e / one_plus_e.sqr()?)?;
                    (value, Some(d1), Some(d2))
                } else {
                    (value, None, None)
                }
            }
            ActivationKind::GaussianSoftplus => {
                // Φ(x) = ½(1 + erf(x/√2)), φ(x) = exp(−x²/2 − ln√(2π)), s = xΦ + φ, and the
                // symmetric s(x) − x/2 = ½x·erf(x/√2) + φ (even).
                let erf = x.affine(std::f64::consts::FRAC_1_SQRT_2, 0.0)?.erf()?;
                let pdf = x.sqr()?.affine(-0.5, -LN_SQRT_2PI)?.exp()?;
                if self.symmetric {
                    let value = ((x * &erf)?.affine(0.5, -shift)? + &pdf)?;
                    let d1 = derivatives.then(|| erf.affine(0.5, 0.0)).transpose()?;
                    (value, d1, derivatives.then_some(pdf))
                } else {
                    let cdf = erf.affine(0.5, 0.5)?;
                    // x·Φ(x) with x floored at −10⁴, where Φ is 0 in every float type (and
                    // so is the gradient): 0 at x = −∞, not −∞·0.
                    let value = minus_shift(((x.maximum(-1e4)? * &cdf)? + &pdf)?)?;
                    if derivatives {
                        (value, Some(cdf), Some(pdf))
                    } else {
                        (value, None, None)
                    }
                }
            }
        };
        Ok(ActivationEval { value, d1, d2 })
    }
}

/// `1/√(2π)`.
pub(crate) const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
/// `ln √(2π)`.
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// The result of [`Activation::eval`]: value and (optionally) derivatives.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use icnn::{Activation, ActivationKind};
/// # fn main() -> icnn::Result<()> {
/// let x = Tensor::new(&[-1.0f64, 0.5], &Device::Cpu)?;
/// let act = Activation::new(ActivationKind::Softplus);
/// assert!(act.eval(&x, false)?.d1.is_none()); // value only
/// let eval = act.eval(&x, true)?;
/// // softplus' = σ, softplus'' = σ(1 − σ).
/// let s = eval.d1.unwrap().to_vec1::<f64>()?;
/// let s2 = eval.d2.unwrap().to_vec1::<f64>()?;
/// for (i, xi) in [-1.0f64, 0.5].into_iter().enumerate() {
///     let sigma = 1.0 / (1.0 + (-xi).exp());
///     assert!((s[i] - sigma).abs() < 1e-15 && (s2[i] - sigma * (1.0 - sigma)).abs() < 1e-15);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ActivationEval {
    /// `s(x)`.
    pub value: Tensor,
    /// `s'(x)`, when requested.
    pub d1: Option<Tensor>,
    /// `s''(x)`, when requested.
    pub d2: Option<Tensor>,
}

/// Numerically stable softplus `log(1 + eˣ) = max(x, 0) + log(1 + e^{−|x|})` that candle can
/// differentiate any number of times (fused kernel on CPU, composed ops elsewhere).
///
/// Below `x ≈ −708` (f64; `−87` in f32) the fused kernel returns about the smallest normal
/// value instead of the underflowed `e^x` (an absolute error below `1e-307`, see
/// [`ExpNonPositive`](crate::ExpNonPositive)). A tensor of integers is an
/// [`IcnnError::Shape`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// # fn main() -> icnn::Result<()> {
/// let x = Tensor::new(&[-1000.0f64, 0.0, 1000.0], &Device::Cpu)?;
/// let y = icnn::softplus(&x)?.to_vec1::<f64>()?;
/// // No overflow at ±1000: log(1 + e¹⁰⁰⁰) = 1000 in f64, and e⁻¹⁰⁰⁰ is (about) 0.
/// assert_eq!(y[2], 1000.0);
/// assert!((0.0..1e-300).contains(&y[0]));
/// assert!((y[1] - 2f64.ln()).abs() < 1e-15);
/// // The limits at ±∞.
/// let inf = Tensor::new(&[f64::NEG_INFINITY, f64::INFINITY], &Device::Cpu)?;
/// assert_eq!(icnn::softplus(&inf)?.to_vec1::<f64>()?, [0.0, f64::INFINITY]);
/// # Ok(())
/// # }
/// ```
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    check_float("softplus", x)?;
    if fused_supported(x) {
        let spec = ActSpec {
            kind: ActivationKind::Softplus,
            shift: 0.0,
            symmetric: false,
        };
        return Ok(x.contiguous()?.apply_op1(ActDerivative::new(spec, 0))?);
    }
    let e = x.abs()?.neg()?.exp()?;
    Ok((x.relu()? + e.affine(1.0, 1.0)?.log()?)?)
}
