//! Parameter counts of a VAE from its configuration, checked before anything is built.
//!
//! The encoder and decoder have a fixed number of layers, so only their widths can make
//! them absurd: `channels = 10⁵` asked for 10¹² weights per layer and, before this check,
//! either failed deep inside the first allocation or overflowed the element count.

use super::data::VaeLikelihood;
use super::model::VaeModelConfig;
use super::network::{Layer, VaeArchitecture};
use crate::error::Result;
use crate::model_size::{add, mul};

/// Parameters of convolutions `(in, out, kernel)` with biases.
fn convolutions(layers: &[Layer]) -> usize {
    layers.iter().fold(0, |n, &(a, b, s)| {
        add(n, add(mul(mul(a, b), mul(s.kh, s.kw)), b))
    })
}

impl VaeArchitecture {
    /// Scalar parameters of the encoder (gated convolutions, `μ` and `σ²` heads) and decoder
    /// (gated transposed convolutions, output head) for `image_hw` images (28×28 or 28×20),
    /// latent size `latent_dim` and `likelihood`, counted without building them. Saturates at
    /// `usize::MAX`.
    ///
    /// ```
    /// use cpflow::vae::{VaeArchitecture, VaeLikelihood};
    /// let n = VaeArchitecture::reference().parameter_count((28, 28), 64, VaeLikelihood::Bernoulli)?;
    /// // The authors' binary-image encoder and decoder, counted by PyTorch (images-vae.md §3.8).
    /// assert_eq!(n, 2_204_352 + 862_753);
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn parameter_count(
        &self,
        image_hw: (usize, usize),
        latent_dim: usize,
        likelihood: VaeLikelihood,
    ) -> Result<usize> {
        // Each gated layer holds two convolutions: `h` and the gate `g`.
        let encoder = mul(2, convolutions(&self.encoder_layers(image_hw)?));
        let decoder = mul(2, convolutions(&self.decoder_layers(image_hw, latent_dim)?));
        let head = convolutions(&self.head_layers(likelihood));
        // The `μ` and `σ²` heads: `feature_dim → latent_dim` each.
        let linear = add(mul(self.feature_dim, latent_dim), latent_dim);
        Ok(add(add(encoder, decoder), add(head, mul(2, linear))))
    }
}

impl VaeModelConfig {
    /// Scalar parameters of the VAE this configuration builds (encoder, decoder, posterior)
    /// for `likelihood` and `image_hw` images, counted without building it; `None` with a
    /// posterior potential of your own. Saturates at `usize::MAX`.
    ///
    /// ```
    /// use cpflow::candle::Device;
    /// use cpflow::vae::{Vae, VaeArchitecture, VaeLikelihood, VaeModelConfig};
    /// let cfg = VaeModelConfig {
    ///     latent_dim: 4,
    ///     architecture: VaeArchitecture { channels: 2, feature_dim: 6, head_channels: 3 },
    ///     blocks: 2,
    ///     width: 8,
    ///     depth: 2,
    ///     ..Default::default()
    /// };
    /// let vae = Vae::new(&cfg, VaeLikelihood::Categorical256, (28, 20), &Device::Cpu)?;
    /// let counted = cfg.parameter_count(VaeLikelihood::Categorical256, (28, 20))?;
    /// assert_eq!(counted, Some(vae.num_parameters()));
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn parameter_count(
        &self,
        likelihood: VaeLikelihood,
        image_hw: (usize, usize),
    ) -> Result<Option<usize>> {
        let networks = self.network_parameters(likelihood, image_hw)?;
        Ok(self
            .posterior_config()
            .parameter_count()
            .map(|q| add(networks, q)))
    }

    /// Refuse, before the first layer, a VAE of more than [`icnn::MAX_MODEL_PARAMETERS`]
    /// parameters (a posterior potential of your own counted as 0); else return the counts
    /// of its parts, `(encoder and decoder, posterior)`.
    pub(crate) fn check_size(
        &self,
        likelihood: VaeLikelihood,
        image_hw: (usize, usize),
    ) -> Result<(usize, usize)> {
        let a = &self.architecture;
        let (networks, posterior) = self.counted_parts(likelihood, image_hw)?;
        crate::model_size::check_model_size(
            &format!(
                "a VAE (channels {}, feature_dim {}, head_channels {}, latent_dim {}, {} blocks)",
                a.channels, a.feature_dim, a.head_channels, self.latent_dim, self.blocks
            ),
            add(networks, posterior),
        )?;
        Ok((networks, posterior))
    }

    /// Parameters of the VAE's parts for `likelihood` and `image_hw` images, counted without
    /// building it: `(encoder and decoder, posterior)`, a posterior potential of your own
    /// counted as 0 (their sum is what the size limit is checked against). Saturates at
    /// `usize::MAX`.
    pub(crate) fn counted_parts(
        &self,
        likelihood: VaeLikelihood,
        image_hw: (usize, usize),
    ) -> Result<(usize, usize)> {
        Ok((
            self.network_parameters(likelihood, image_hw)?,
            self.posterior_config().count().at_least,
        ))
    }

    fn network_parameters(
        &self,
        likelihood: VaeLikelihood,
        image_hw: (usize, usize),
    ) -> Result<usize> {
        self.architecture
            .parameter_count(image_hw, self.latent_dim, likelihood)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use rand::SeedableRng;

    use super::*;
    use crate::vae::{Encoder, PosteriorKind, Vae};

    fn small(posterior: PosteriorKind, channels: usize) -> VaeModelConfig {
        VaeModelConfig {
            latent_dim: 3,
            architecture: VaeArchitecture {
                channels,
                feature_dim: 5,
                head_channels: 4,
            },
            posterior,
            blocks: 2,
            width: 6,
            depth: 2,
            ..Default::default()
        }
    }

    /// The count agrees with the built VAE for both likelihoods, both image sizes and both
    /// posteriors, so the bound refuses exactly the models it should.
    #[test]
    fn counts_match_built_vaes() {
        for likelihood in [VaeLikelihood::Bernoulli, VaeLikelihood::Categorical256] {
            for hw in [(28, 28), (28, 20)] {
                for posterior in [PosteriorKind::Gaussian, PosteriorKind::CpFlow] {
                    for channels in [1, 3] {
                        let cfg = small(posterior, channels);
                        let vae = Vae::new(&cfg, likelihood, hw, &Device::Cpu).unwrap();
                        assert_eq!(
                            cfg.parameter_count(likelihood, hw).unwrap(),
                            Some(vae.num_parameters()),
                            "{likelihood:?} {hw:?} {posterior:?} {channels}"
                        );
                    }
                }
            }
        }
        // An image size without an encoder is an error, as when building.
        assert!(
            small(PosteriorKind::Gaussian, 1)
                .parameter_count(VaeLikelihood::Bernoulli, (32, 32))
                .is_err()
        );
    }

    /// Absurd widths and block counts are refused before anything is allocated; the public
    /// encoder built on its own refuses an oversized variable instead of overflowing its
    /// element count (a panic in a debug build).
    #[test]
    fn absurd_sizes_are_refused_before_building() {
        let bernoulli = VaeLikelihood::Bernoulli;
        let mut blocks = small(PosteriorKind::CpFlow, 2);
        blocks.blocks = 1_000_000_000_000_000;
        let mut head = small(PosteriorKind::Gaussian, 2);
        head.architecture.head_channels = usize::MAX / 2;
        for (cfg, likelihood) in [
            (small(PosteriorKind::Gaussian, 100_000), bernoulli),
            (small(PosteriorKind::Gaussian, usize::MAX / 2), bernoulli),
            (blocks, bernoulli),
            (head, VaeLikelihood::Categorical256),
        ] {
            let err = Vae::new(&cfg, likelihood, (28, 28), &Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(err.contains("a model may have at most"), "{err}");
        }
        let varmap = VarMap::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let arch = VaeArchitecture {
            channels: 1 << 40,
            feature_dim: 4,
            head_channels: 4,
        };
        let err = Encoder::new(
            &varmap,
            "e",
            &arch,
            (28, 28),
            2,
            bernoulli,
            DType::F32,
            &Device::Cpu,
            &mut rng,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("e.q_z_nn.0") && err.contains("elements"),
            "{err}"
        );
        assert!(varmap.all_vars().is_empty());
    }
}
