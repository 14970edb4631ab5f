//! The Sylvester-flows encoder and decoder (`lib/sylvester/models/VAE.py`,
//! `docs/reference/images-vae.md` §3.3), with the channel widths as parameters.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::data::VaeLikelihood;
use super::gated::{Conv, ConvShape, GatedConv, uniform_var};
use super::likelihood::{categorical_log_likelihood, conv_categorical_log_likelihood};
use crate::error::{CpflowError, Result};

/// Widths of the encoder and decoder. The reference is
/// [`VaeArchitecture::reference`]: channels 32 (the gated layers have 32, 32, 64, 64, 64
/// channels in the encoder and 64, 64, 32, 32, 32, 32 in the decoder), a 256-d encoder
/// feature, and for the 256-way head of Frey Faces a 256-channel hidden map.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::vae::{Vae, VaeArchitecture, VaeLikelihood, VaeModelConfig};
/// let r = VaeArchitecture::reference();
/// assert_eq!((r.channels, r.feature_dim, r.head_channels), (32, 256, 256));
/// assert_eq!(VaeArchitecture::default(), r);
/// // Every width must be at least 1.
/// let cfg = VaeModelConfig {
///     architecture: VaeArchitecture { channels: 0, ..r },
///     ..Default::default()
/// };
/// let err = Vae::new(&cfg, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu).unwrap_err();
/// assert!(matches!(err, cpflow::CpflowError::InvalidConfig(_)));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeArchitecture {
    /// Base channel count `c` (reference 32): gated layers have `c` or `2c` channels.
    pub channels: usize,
    /// Encoder feature dimension (reference 256): the context of the CP-Flow posterior.
    pub feature_dim: usize,
    /// Hidden channels of the categorical head `Conv(c→k, 5×5) → Conv(k→256, 1×1)`
    /// (reference 256; unused for Bernoulli data).
    pub head_channels: usize,
}

impl VaeArchitecture {
    /// The reference widths (32 / 256 / 256).
    pub fn reference() -> Self {
        VaeArchitecture {
            channels: 32,
            feature_dim: 256,
            head_channels: 256,
        }
    }

    /// The encoder's gated convolutions `(in, out, kernel)` for `height × width` images.
    pub(crate) fn encoder_layers(&self, (height, width): (usize, usize)) -> Result<[Layer; 6]> {
        let c = self.channels;
        let c2 = c.saturating_mul(2);
        Ok([
            (1, c, ConvShape::square(5, 1, 2)),
            (c, c, ConvShape::square(5, 2, 2)),
            (c, c2, ConvShape::square(5, 1, 2)),
            (c2, c2, ConvShape::square(5, 2, 2)),
            (c2, c2, ConvShape::square(5, 1, 2)),
            (c2, self.feature_dim, last_kernel(height, width)?),
        ])
    }

    /// The decoder's gated transposed convolutions `(in, out, kernel)`.
    pub(crate) fn decoder_layers(
        &self,
        (height, width): (usize, usize),
        latent_dim: usize,
    ) -> Result<[Layer; 6]> {
        let c = self.channels;
        let c2 = c.saturating_mul(2);
        let up = ConvShape::square(5, 2, 2).with_output_padding(1);
        Ok([
            (latent_dim, c2, last_kernel(height, width)?),
            (c2, c2, ConvShape::square(5, 1, 2)),
            (c2, c, up),
            (c, c, ConvShape::square(5, 1, 2)),
            (c, c, up),
            (c, c, ConvShape::square(5, 1, 2)),
        ])
    }

    /// The decoder head's convolutions `(in, out, kernel)`: one 1×1 to the Bernoulli
    /// logits, or `c → k` (5×5) then `k → 256` (1×1) for the 256-way categorical.
    pub(crate) fn head_layers(&self, likelihood: VaeLikelihood) -> Vec<Layer> {
        let c = self.channels;
        match likelihood {
            VaeLikelihood::Bernoulli => vec![(c, 1, ConvShape::square(1, 1, 0))],
            VaeLikelihood::Categorical256 => vec![
                (c, self.head_channels, ConvShape::square(5, 1, 2)),
                (self.head_channels, 256, ConvShape::square(1, 1, 0)),
            ],
        }
    }

    fn validate(&self) -> Result<()> {
        if self.channels == 0 || self.feature_dim == 0 || self.head_channels == 0 {
            return Err(CpflowError::InvalidConfig(
                "VAE architecture: channels, feature_dim and head_channels must be ≥ 1".into(),
            ));
        }
        Ok(())
    }
}

impl Default for VaeArchitecture {
    fn default() -> Self {
        Self::reference()
    }
}

/// One convolution of the encoder or decoder: input and output channels, kernel.
pub(crate) type Layer = (usize, usize, ConvShape);

/// The kernel of the last encoder layer / first decoder layer, which maps the 7×7 (Frey
/// 7×5) map to 1×1 and back.
fn last_kernel(height: usize, width: usize) -> Result<ConvShape> {
    match (height, width) {
        (28, 28) => Ok(ConvShape::square(7, 1, 0)),
        (28, 20) => Ok(ConvShape {
            kh: 7,
            kw: 5,
            stride: 1,
            padding: 0,
            output_padding: 0,
        }),
        _ => Err(CpflowError::InvalidConfig(format!(
            "the VAE networks take 28×28 or 28×20 images, not {height}×{width}"
        ))),
    }
}

/// A dense layer `y = x Wᵀ + b` (PyTorch `nn.Linear`, default initialisation).
#[derive(Clone, Debug)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    #[allow(clippy::too_many_arguments)]
    fn new<R: Rng + ?Sized>(
        vm: &VarMap,
        prefix: &str,
        n_in: usize,
        n_out: usize,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        let bound = 1.0 / (n_in as f64).sqrt();
        let weight = uniform_var(
            vm,
            &format!("{prefix}.weight"),
            &[n_out, n_in],
            bound,
            dtype,
            device,
            rng,
        )?;
        let bias = uniform_var(
            vm,
            &format!("{prefix}.bias"),
            &[n_out],
            bound,
            dtype,
            device,
            rng,
        )?;
        Ok(Linear { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(icnn::host_matmul(x, &self.weight.t()?)?.broadcast_add(&self.bias)?)
    }
}

/// What the encoder returns for a batch.
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
/// use cpflow::vae::{Encoder, VaeArchitecture, VaeLikelihood};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let arch = VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 };
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let enc = Encoder::new(
///     &VarMap::new(), "encoder", &arch, (28, 20), 3, VaeLikelihood::Categorical256,
///     DType::F64, &Device::Cpu, &mut rng,
/// )?;
/// let x = (Tensor::arange(0f64, 1120.0, &Device::Cpu)? / 1120.0)?.reshape((2, 1, 28, 20))?;
/// let out = enc.forward(&x)?;
/// assert_eq!((out.mu.dims(), out.feature.dims()), (&[2, 3][..], &[2, 4][..]));
/// // σ = exp(log σ) > 0 always; for the 256-way likelihood σ² is clipped to [0.01, 7].
/// let ls = out.log_sigma.flatten_all()?.to_vec1::<f64>()?;
/// assert!(ls.iter().all(|l| (0.01f64.ln() / 2.0 - 1e-12..=7f64.ln() / 2.0 + 1e-12).contains(l)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct EncoderOutput {
    /// `μ`, `(B, z)`.
    pub mu: Tensor,
    /// `log σ`, `(B, z)` (`σ² = softplus(·)`, clipped to `[0.01, 7]` for Frey Faces).
    pub log_sigma: Tensor,
    /// The feature `h_enc`, `(B, feature_dim)`: the posterior's context.
    pub feature: Tensor,
}

/// The gated-convolution encoder `q_z_nn` with its `μ` and `σ²` heads.
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
/// use cpflow::vae::{Encoder, VaeArchitecture, VaeLikelihood};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let arch = VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 };
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let enc = Encoder::new(
///     &VarMap::new(), "encoder", &arch, (28, 20), 3, VaeLikelihood::Categorical256,
///     DType::F64, &Device::Cpu, &mut rng,
/// )?;
/// let x = (Tensor::arange(0f64, 1120.0, &Device::Cpu)? / 1120.0)?.reshape((2, 1, 28, 20))?;
/// let out = enc.forward(&x)?;
/// assert_eq!((out.mu.dims(), out.feature.dims()), (&[2, 3][..], &[2, 4][..]));
/// // The batch must be (B, 1, H, W): a missing channel axis is an error.
/// assert!(enc.forward(&Tensor::zeros((2, 28, 20), DType::F64, &Device::Cpu)?).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Encoder {
    layers: Vec<GatedConv>,
    mean: Linear,
    var: Linear,
    clip_variance: bool,
}

impl Encoder {
    /// Build the encoder for `height × width` images (28×28 or 28×20) and latent size `z`,
    /// variables under `prefix`.
    #[allow(clippy::too_many_arguments)]
    pub fn new<R: Rng + ?Sized>(
        vm: &VarMap,
        prefix: &str,
        arch: &VaeArchitecture,
        (height, width): (usize, usize),
        latent_dim: usize,
        likelihood: VaeLikelihood,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        arch.validate()?;
        let specs = arch.encoder_layers((height, width))?;
        let mut layers = Vec::with_capacity(specs.len());
        for (i, (a, b, s)) in specs.into_iter().enumerate() {
            layers.push(GatedConv::conv(
                vm,
                &format!("{prefix}.q_z_nn.{i}"),
                a,
                b,
                s,
                dtype,
                device,
                rng,
            )?);
        }
        let mean = Linear::new(
            vm,
            &format!("{prefix}.q_z_mean"),
            arch.feature_dim,
            latent_dim,
            dtype,
            device,
            rng,
        )?;
        let var = Linear::new(
            vm,
            &format!("{prefix}.q_z_var"),
            arch.feature_dim,
            latent_dim,
            dtype,
            device,
            rng,
        )?;
        Ok(Encoder {
            layers,
            mean,
            var,
            clip_variance: likelihood == VaeLikelihood::Categorical256,
        })
    }

    /// Encode `x` of shape `(B, 1, H, W)`.
    pub fn forward(&self, x: &Tensor) -> Result<EncoderOutput> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h)?;
        }
        let b = h.dim(0)?;
        let feature = h.reshape((b, ()))?;
        let mu = self.mean.forward(&feature)?;
        let mut var = softplus(&self.var.forward(&feature)?)?;
        if self.clip_variance {
            var = var.clamp(0.01, 7.0)?;
        }
        let log_sigma = (var.log()? * 0.5)?;
        Ok(EncoderOutput {
            mu,
            log_sigma,
            feature,
        })
    }
}

/// `log(1 + eˣ)`, computed stably as `max(x, 0) + log1p(e^{−|x|})`, to a few ulps for every
/// `x` (a variance `softplus(x)` far below 1 keeps its digits, and stays positive down to
/// `eˣ`'s underflow instead of becoming 0 at `x ≈ −37`).
///
/// candle has no `log1p`: with `u = e^{−|x|}` and `w = 1 + u` (rounded), `log1p(u) =
/// log(w)·u/(w − 1)` (the rounding of `w` cancels between `log w` and `w − 1`), and `u`
/// itself where `w` rounds to 1.
pub(crate) fn softplus(x: &Tensor) -> Result<Tensor> {
    let pos = x.relu()?;
    let u = x.abs()?.neg()?.exp()?;
    let w = (&u + 1.0)?;
    let d = (&w - 1.0)?;
    let tiny = d.eq(0.0)?;
    // `d` replaced by 1 where it is 0, so that the unused branch stays finite (a 0/0 there
    // would turn its zero gradient into NaN).
    let d_safe = tiny.where_cond(&d.ones_like()?, &d)?;
    let tail = tiny.where_cond(&u, &((w.log()? * &u)? / d_safe)?)?;
    Ok((pos + tail)?)
}

/// The gated transposed-convolution decoder with its output head: Bernoulli logits
/// `(B, 1, H, W)` or 256-way logits `(B, 256, H, W)`.
///
/// ```
/// use cpflow::candle::{DType, Device, Tensor};
/// use cpflow::candle_nn::VarMap;
/// use cpflow::vae::{Decoder, VaeArchitecture, VaeLikelihood};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let arch = VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 };
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let z = Tensor::zeros((2, 3), DType::F64, &Device::Cpu)?;
/// let (vm, dt, dev) = (VarMap::new(), DType::F64, &Device::Cpu);
/// let (bern, cat) = (VaeLikelihood::Bernoulli, VaeLikelihood::Categorical256);
/// let bern = Decoder::new(&vm, "bern", &arch, (28, 28), 3, bern, dt, dev, &mut rng)?;
/// assert_eq!(bern.forward(&z)?.dims(), &[2, 1, 28, 28]);
/// // Frey Faces: 256 logits per pixel of a 28×20 image.
/// let cat = Decoder::new(&vm, "cat", &arch, (28, 20), 3, cat, dt, dev, &mut rng)?;
/// assert_eq!(cat.forward(&z)?.dims(), &[2, 256, 28, 20]);
/// // Other image sizes are refused.
/// let bern = VaeLikelihood::Bernoulli;
/// assert!(Decoder::new(&vm, "x", &arch, (32, 32), 3, bern, dt, dev, &mut rng).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Decoder {
    layers: Vec<GatedConv>,
    head: Vec<Conv>,
    latent_dim: usize,
}

impl Decoder {
    /// Build the decoder for `height × width` images and latent size `z`.
    #[allow(clippy::too_many_arguments)]
    pub fn new<R: Rng + ?Sized>(
        vm: &VarMap,
        prefix: &str,
        arch: &VaeArchitecture,
        (height, width): (usize, usize),
        latent_dim: usize,
        likelihood: VaeLikelihood,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        arch.validate()?;
        let specs = arch.decoder_layers((height, width), latent_dim)?;
        let mut layers = Vec::with_capacity(specs.len());
        for (i, (a, b, s)) in specs.into_iter().enumerate() {
            layers.push(GatedConv::transposed(
                vm,
                &format!("{prefix}.p_x_nn.{i}"),
                a,
                b,
                s,
                dtype,
                device,
                rng,
            )?);
        }
        let head = arch
            .head_layers(likelihood)
            .into_iter()
            .enumerate()
            .map(|(i, (a, b, s))| {
                let prefix = format!("{prefix}.p_x_mean.{i}");
                Conv::plain(vm, &prefix, a, b, s, dtype, device, rng)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Decoder {
            layers,
            head,
            latent_dim,
        })
    }

    /// Decode `z` of shape `(B, latent_dim)` into output logits.
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.hidden(z)?;
        if let Some(both) = self.merged_head()? {
            return both.forward(&h);
        }
        for c in &self.head {
            h = c.forward(&h)?;
        }
        Ok(h)
    }

    /// `categorical_log_likelihood(&self.forward(z)?, targets)` `(B,)` for the 256-way head
    /// (targets `(B, H·W)`): the same values, with the head's convolution and the likelihood
    /// as one op (`likelihood::conv_categorical_log_likelihood`), so that the `(B, 256, H, W)`
    /// logits are not a tensor of candle's graph.
    pub(super) fn categorical_log_likelihood(
        &self,
        z: &Tensor,
        targets: &Tensor,
    ) -> Result<Tensor> {
        let mut h = self.hidden(z)?;
        if let Some(both) = self.merged_head()? {
            return conv_categorical_log_likelihood(&h, &both, targets);
        }
        for c in &self.head {
            h = c.forward(&h)?;
        }
        categorical_log_likelihood(&h, targets)
    }

    /// The gated layers' output, the head's input.
    fn hidden(&self, z: &Tensor) -> Result<Tensor> {
        let b = z.dim(0)?;
        let mut h = z.reshape((b, self.latent_dim, 1, 1))?;
        for l in &self.layers {
            h = l.forward(&h)?;
        }
        Ok(h)
    }

    /// The 256-way head is a 5×5 convolution followed by a 1×1 one with nothing between
    /// them: one linear map, applied as one 5×5 convolution with the composed kernel (a
    /// quarter fewer products in the head, no 115 MB intermediate). `None` for other heads.
    fn merged_head(&self) -> Result<Option<Conv>> {
        match self.head.as_slice() {
            [spatial, pointwise] => spatial.then_pointwise(pointwise),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::softplus;
    use candle_core::{Device, Tensor, Var};

    /// Values against `max(x, 0) + ln_1p(e^{−|x|})` in f64 (correctly rounded to within an
    /// ulp or two): 4 ulps relative, from far below the point where `1 + e^{x}` rounds to 1
    /// (x ≈ −36.7, where the plain `log(1 + u)` gave 0 and a variance of 0) to large `x`;
    /// gradients against the logistic function `σ(x)`, the exact derivative, to 1e-14.
    #[test]
    fn softplus_is_accurate_far_below_zero_and_its_gradient_is_the_logistic() {
        let xs = [
            -700.0, -200.0, -40.0, -36.7, -30.0, -17.9, -5.0, -1e-9, 0.0, 1e-9, 3.0, 40.0,
        ];
        let want: Vec<f64> = xs
            .iter()
            .map(|&x: &f64| x.max(0.0) + (-x.abs()).exp().ln_1p())
            .collect();
        let v = Var::new(&xs[..], &Device::Cpu).unwrap();
        let y = softplus(v.as_tensor()).unwrap();
        let got = y.to_vec1::<f64>().unwrap();
        for ((x, g), w) in xs.iter().zip(&got).zip(&want) {
            assert!(*g > 0.0, "softplus({x}) = {g}");
            assert!(
                (g - w).abs() <= 4.0 * f64::EPSILON * w,
                "softplus({x}) = {g:e}, want {w:e}"
            );
        }
        let grads = y.sum_all().unwrap().backward().unwrap();
        let dx = grads.get(&v).unwrap().to_vec1::<f64>().unwrap();
        for (x, g) in xs.iter().zip(dx) {
            let sigma = 1.0 / (1.0 + (-x).exp());
            assert!(
                g.is_finite() && (g - sigma).abs() <= 1e-14,
                "d/dx at {x}: {g} vs {sigma}"
            );
        }
        // f32: positive where `1 + e^{x}` rounds to 1 (x < −17), accurate to a few ulps.
        let y32 = softplus(&Tensor::new(&[-30.0f32, -10.0, 2.0], &Device::Cpu).unwrap())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (g, x) in y32.iter().zip([-30.0f64, -10.0, 2.0]) {
            let w = x.max(0.0) + (-x.abs()).exp().ln_1p();
            assert!(
                ((*g as f64) - w).abs() <= 4.0 * f32::EPSILON as f64 * w,
                "{x}: {g} vs {w}"
            );
        }
    }
}
