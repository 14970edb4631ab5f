//! Images from a trained VAE: latents from the prior `N(0, T²·I)`, decoded into the pixel
//! means of `p(x | z)` or into draws from it.
//!
//! The decoder's pixels are independent given `z`: a Bernoulli of probability `σ(l)` per pixel
//! (binary images) or a 256-way categorical `softmax(l)` per pixel (Frey Faces, values
//! `k/255`). Both decodings are computed on the host in f64 from the decoder's logits; draws
//! come from a seeded `rand` RNG, so they depend only on the seed.

use candle_core::{DType, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;

use super::data::VaeLikelihood;
use super::model::{Vae, VaeBatch};
use crate::error::{CpflowError, Result};

impl Vae {
    /// `n` latents from the prior at temperature `t`: `z = t·ε`, `ε ~ N(0, I)` drawn from
    /// `rng` (row-major), `(n, latent_dim)` in the network's float type.
    ///
    /// ```
    /// use cpflow::candle::Device;
    /// use cpflow::vae::{Vae, VaeArchitecture, VaeLikelihood, VaeModelConfig};
    /// use cpflow::rand::SeedableRng;
    /// # fn main() -> cpflow::Result<()> {
    /// let cfg = VaeModelConfig {
    ///     latent_dim: 3,
    ///     architecture: VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 },
    ///     ..Default::default()
    /// };
    /// let vae = Vae::new(&cfg, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu)?;
    /// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
    /// let z = vae.prior_latents(4, 0.5, &mut rng)?;
    /// assert_eq!(z.dims(), &[4, 3]);
    /// assert!(vae.prior_latents(4, f64::NAN, &mut rng).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn prior_latents<R: Rng + ?Sized>(
        &self,
        n: usize,
        temperature: f64,
        rng: &mut R,
    ) -> Result<Tensor> {
        // 0 is the prior's mode (z = 0 for every draw), as for the image flows.
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(CpflowError::InvalidInput(format!(
                "the prior's temperature must be finite and non-negative, got {temperature:?}"
            )));
        }
        let d = self.config().latent_dim;
        let eps: Vec<f64> = (0..n * d)
            .map(|_| temperature * rng.sample::<f64, _>(StandardNormal))
            .collect();
        Ok(Tensor::from_vec(eps, (n, d), self.device())?.to_dtype(self.network_dtype())?)
    }

    /// The mean pixel values of `p(x | z)` for latents `z` `(B, latent_dim)`: `(B, 1, H, W)`
    /// in `[0, 1]` (f64). Bernoulli: `σ(l)`; 256-way: `Σ_k softmax(l)_k · k/255`.
    ///
    /// ```
    /// use cpflow::candle::{DType, Device, Tensor};
    /// use cpflow::vae::{Vae, VaeArchitecture, VaeLikelihood, VaeModelConfig};
    /// # fn main() -> cpflow::Result<()> {
    /// let cfg = VaeModelConfig {
    ///     latent_dim: 3,
    ///     architecture: VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 },
    ///     ..Default::default()
    /// };
    /// // Frey Faces' shape and likelihood: 28×20 pixels, 256 values each.
    /// let vae = Vae::new(&cfg, VaeLikelihood::Categorical256, (28, 20), &Device::Cpu)?;
    /// let z = Tensor::zeros((2, 3), DType::F64, &Device::Cpu)?;
    /// let m = vae.decoded_means(&z)?;
    /// assert_eq!(m.dims(), &[2, 1, 28, 20]);
    /// let v = m.flatten_all()?.to_vec1::<f64>()?;
    /// assert!(v.iter().all(|p| (0.0..=1.0).contains(p)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn decoded_means(&self, z: &Tensor) -> Result<Tensor> {
        let (b, logits) = self.host_logits(z)?;
        let (h, w) = self.image_hw();
        let means = means_from_logits(self.likelihood(), &logits, b, h * w);
        Ok(Tensor::from_vec(means, (b, 1, h, w), self.device())?)
    }

    /// One draw of every pixel from `p(x | z)` for latents `z` `(B, latent_dim)`, uniforms
    /// from `rng` (one per pixel, row-major): `(B, 1, H, W)` f64, `0`/`1` (Bernoulli) or `k/255`
    /// (256-way).
    ///
    /// ```
    /// use cpflow::candle::{DType, Device, Tensor};
    /// use cpflow::vae::{Vae, VaeArchitecture, VaeLikelihood, VaeModelConfig};
    /// use cpflow::rand::SeedableRng;
    /// # fn main() -> cpflow::Result<()> {
    /// let cfg = VaeModelConfig {
    ///     latent_dim: 3,
    ///     architecture: VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 },
    ///     ..Default::default()
    /// };
    /// let vae = Vae::new(&cfg, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu)?;
    /// let z = Tensor::zeros((2, 3), DType::F64, &Device::Cpu)?;
    /// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
    /// let x = vae.decoded_samples(&z, &mut rng)?.flatten_all()?.to_vec1::<f64>()?;
    /// assert!(x.iter().all(|&p| p == 0.0 || p == 1.0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn decoded_samples<R: Rng + ?Sized>(&self, z: &Tensor, rng: &mut R) -> Result<Tensor> {
        let (b, logits) = self.host_logits(z)?;
        let (h, w) = self.image_hw();
        let pixels = draws_from_logits(self.likelihood(), &logits, b, h * w, rng);
        Ok(Tensor::from_vec(pixels, (b, 1, h, w), self.device())?)
    }

    /// Reconstructions of `batch`: each image encoded, one posterior sample `z ~ q(z | x)`
    /// drawn from `rng`, decoded into the pixel means of `p(x | z)`: `(B, 1, H, W)` f64.
    ///
    /// ```
    /// use cpflow::candle::{DType, Device, Tensor};
    /// use cpflow::vae::{PosteriorKind, Vae, VaeArchitecture, VaeBatch, VaeLikelihood, VaeModelConfig};
    /// use cpflow::rand::SeedableRng;
    /// # fn main() -> cpflow::Result<()> {
    /// let cfg = VaeModelConfig {
    ///     latent_dim: 3,
    ///     architecture: VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 },
    ///     posterior: PosteriorKind::Gaussian,
    ///     ..Default::default()
    /// };
    /// let vae = Vae::new(&cfg, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu)?;
    /// let x = Tensor::ones((2, 1, 28, 28), DType::F64, &Device::Cpu)?;
    /// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
    /// let r = vae.reconstructed_means(&VaeBatch { x, targets: None }, &mut rng)?;
    /// assert_eq!(r.dims(), &[2, 1, 28, 28]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reconstructed_means<R: Rng + ?Sized>(
        &self,
        batch: &VaeBatch,
        rng: &mut R,
    ) -> Result<Tensor> {
        let z = self.posterior_sample_exact(batch, rng)?.z;
        self.decoded_means(&z.detach())
    }

    /// The decoder's logits for `z`, checked and on the host: `(B, values)` with the values of
    /// an image in the decoder's `(C, H, W)` order.
    fn host_logits(&self, z: &Tensor) -> Result<(usize, Vec<f64>)> {
        let d = self.config().latent_dim;
        match z.dims() {
            [_, k] if *k == d => {}
            other => {
                return Err(CpflowError::InvalidInput(format!(
                    "latents must be (B, {d}), got {}",
                    super::shape_text::tuple_text(other)
                )));
            }
        }
        let logits = self.decoder().forward(&z.to_dtype(self.network_dtype())?)?;
        let v = logits
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
            return Err(CpflowError::InvalidInput(format!(
                "the decoder gave a non-finite logit ({bad}): non-finite weights or latents"
            )));
        }
        Ok((z.dim(0)?, v))
    }
}

/// The mean pixel values of `b` images of `pixels` pixels from the decoder's logits
/// (`(B, pixels)` Bernoulli, `(B, 256, pixels)` 256-way).
fn means_from_logits(lik: VaeLikelihood, logits: &[f64], b: usize, pixels: usize) -> Vec<f64> {
    match lik {
        VaeLikelihood::Bernoulli => logits.iter().map(|&l| logistic(l)).collect(),
        VaeLikelihood::Categorical256 => {
            let mut out = Vec::with_capacity(b * pixels);
            for_each_pixel_softmax(logits, b, pixels, |p| {
                out.push(
                    p.iter()
                        .enumerate()
                        .map(|(k, pk)| pk * k as f64)
                        .sum::<f64>()
                        / 255.0,
                )
            });
            out
        }
    }
}

/// One draw of every pixel from the decoder's logits (as [`means_from_logits`]), one uniform
/// from `rng` per pixel.
fn draws_from_logits<R: Rng + ?Sized>(
    lik: VaeLikelihood,
    logits: &[f64],
    b: usize,
    pixels: usize,
    rng: &mut R,
) -> Vec<f64> {
    match lik {
        VaeLikelihood::Bernoulli => logits
            .iter()
            .map(|&l| f64::from(rng.random::<f64>() < logistic(l)))
            .collect(),
        VaeLikelihood::Categorical256 => {
            let mut out = Vec::with_capacity(b * pixels);
            for_each_pixel_softmax(logits, b, pixels, |p| {
                let u: f64 = rng.random();
                let mut acc = 0.0;
                // The last class takes what rounding leaves above the summed probabilities.
                let k = p
                    .iter()
                    .position(|pk| {
                        acc += pk;
                        u < acc
                    })
                    .unwrap_or(p.len() - 1);
                out.push(k as f64 / 255.0)
            });
            out
        }
    }
}

/// `1 / (1 + e^{−l})`, without overflow for large `|l|`.
fn logistic(l: f64) -> f64 {
    if l >= 0.0 {
        1.0 / (1.0 + (-l).exp())
    } else {
        let e = l.exp();
        e / (1.0 + e)
    }
}

/// Calls `f` with the 256 class probabilities of each pixel in turn (image-major, then pixel),
/// from logits laid out `(B, 256, pixels)`.
fn for_each_pixel_softmax(logits: &[f64], b: usize, pixels: usize, mut f: impl FnMut(&[f64])) {
    let mut p = [0.0f64; 256];
    for img in logits.chunks_exact(256 * pixels).take(b) {
        for px in 0..pixels {
            let max = (0..256)
                .map(|k| img[k * pixels + px])
                .fold(f64::MIN, f64::max);
            let mut sum = 0.0;
            for (k, pk) in p.iter_mut().enumerate() {
                *pk = (img[k * pixels + px] - max).exp();
                sum += *pk;
            }
            p.iter_mut().for_each(|pk| *pk /= sum);
            f(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vae::tests::max_abs_diff;
    use crate::vae::{VaeArchitecture, VaeModelConfig};
    use candle_core::Device;
    use rand::SeedableRng;

    fn tiny(likelihood: VaeLikelihood, hw: (usize, usize)) -> Vae {
        let cfg = VaeModelConfig {
            latent_dim: 3,
            architecture: VaeArchitecture {
                channels: 2,
                feature_dim: 4,
                head_channels: 2,
            },
            ..Default::default()
        };
        Vae::new(&cfg, likelihood, hw, &Device::Cpu).unwrap()
    }

    fn latents(vae: &Vae, n: usize, seed: u64) -> Tensor {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        vae.prior_latents(n, 1.5, &mut rng).unwrap()
    }

    /// The means against candle's own sigmoid and softmax of the decoder's logits (composed on
    /// the tensor side, an independent route to the same numbers; rounding-level agreement).
    #[test]
    fn means_match_candle_sigmoid_and_softmax() {
        let vae = tiny(VaeLikelihood::Bernoulli, (28, 28));
        let z = latents(&vae, 3, 1);
        let want = candle_nn::ops::sigmoid(&vae.decoder().forward(&z).unwrap()).unwrap();
        let max = max_abs_diff(&vae.decoded_means(&z).unwrap(), &want);
        assert!(max < 1e-14, "{max}");

        let vae = tiny(VaeLikelihood::Categorical256, (28, 20));
        let z = latents(&vae, 2, 2);
        let p = candle_nn::ops::softmax(&vae.decoder().forward(&z).unwrap(), 1).unwrap();
        let k = (Tensor::arange(0f64, 256.0, &Device::Cpu).unwrap() / 255.0).unwrap();
        let want = p
            .broadcast_mul(&k.reshape((1, 256, 1, 1)).unwrap())
            .unwrap()
            .sum_keepdim(1)
            .unwrap();
        let max = max_abs_diff(&vae.decoded_means(&z).unwrap(), &want);
        assert!(max < 1e-13, "{max}");
    }

    /// The draws' average over many repeats of the same logits converges to the means: with
    /// 400 repeats the standard error of a pixel's average is at most 0.5/√400 = 0.025, so a
    /// pixel more than 6 of them (0.15) away has probability below 1e-8 (over all pixels
    /// here, below 1e-5). The logits are drawn wide (N(0, 3²)), so the pixels' means spread
    /// over most of [0, 1]; a sampler with a shifted or scrambled class order fails.
    #[test]
    fn draws_average_to_the_means() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for (lik, classes) in [
            (VaeLikelihood::Bernoulli, 1),
            (VaeLikelihood::Categorical256, 256),
        ] {
            let (b, pixels) = (2, 50);
            let logits: Vec<f64> = (0..b * classes * pixels)
                .map(|_| 3.0 * rng.sample::<f64, _>(StandardNormal))
                .collect();
            let means = means_from_logits(lik, &logits, b, pixels);
            let reps = 400;
            let mut sum = vec![0.0; means.len()];
            for _ in 0..reps {
                let x = draws_from_logits(lik, &logits, b, pixels, &mut rng);
                for (s, v) in sum.iter_mut().zip(&x) {
                    // Each draw is a legal pixel value of its likelihood.
                    let k = v * 255.0;
                    assert!(
                        (k - k.round()).abs() < 1e-9 && (0.0..=255.0).contains(&k),
                        "{v}"
                    );
                    *s += v;
                }
            }
            let worst = sum
                .iter()
                .zip(&means)
                .map(|(s, m)| (s / reps as f64 - m).abs())
                .fold(0.0, f64::max);
            assert!(worst < 0.15, "{lik:?}: {worst}");
            let (lo, hi) = means
                .iter()
                .fold((1.0f64, 0.0f64), |(a, b), m| (a.min(*m), b.max(*m)));
            assert!(hi - lo > 0.3, "{lik:?}: means in [{lo}, {hi}]");
        }
    }

    #[test]
    fn latents_scale_with_the_temperature_and_shapes_are_checked() {
        let vae = tiny(VaeLikelihood::Bernoulli, (28, 28));
        let a = latents(&vae, 5, 9);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let b = vae.prior_latents(5, 3.0, &mut rng).unwrap();
        let max = max_abs_diff(&(a * 2.0).unwrap(), &b);
        assert!(max < 1e-12, "{max}");
        let wrong = Tensor::zeros((2, 4), DType::F64, &Device::Cpu).unwrap();
        assert!(vae.decoded_means(&wrong).is_err());
        // Temperature 0: the prior's mode, as the image flows take it (it was refused).
        let mode = vae.prior_latents(2, 0.0, &mut rng).unwrap();
        assert_eq!(
            mode.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap(),
            0.0
        );
        assert!(vae.prior_latents(1, -0.5, &mut rng).is_err());
    }

    /// An f32 network (the CPU configs') draws f32 latents and decodes to f64 pixels that
    /// agree with the f64 decoder of the same weights to f32 rounding.
    #[test]
    fn f32_networks_decode_as_their_f64_twins() {
        let cfg = |float| VaeModelConfig {
            latent_dim: 3,
            architecture: VaeArchitecture {
                channels: 2,
                feature_dim: 4,
                head_channels: 2,
            },
            network_float: float,
            ..Default::default()
        };
        let lik = VaeLikelihood::Categorical256;
        let v64 = Vae::new(&cfg(crate::FloatType::F64), lik, (28, 20), &Device::Cpu).unwrap();
        let v32 = Vae::new(&cfg(crate::FloatType::F32), lik, (28, 20), &Device::Cpu).unwrap();
        let w: std::collections::HashMap<String, Tensor> = v64
            .weight_tensors()
            .into_iter()
            .map(|(k, t)| (k, t.to_dtype(DType::F32).unwrap()))
            .collect();
        v32.set_weights(&w, "").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let z = v32.prior_latents(4, 1.0, &mut rng).unwrap();
        assert_eq!(z.dtype(), DType::F32);
        let m32 = v32.decoded_means(&z).unwrap();
        assert_eq!(m32.dtype(), DType::F64);
        let m64 = v64.decoded_means(&z.to_dtype(DType::F64).unwrap()).unwrap();
        let max = max_abs_diff(&m32, &m64);
        assert!(max < 1e-5, "{max}");
    }
}
