//! Hidden units per image of the VAE's encoder and decoder: what the activation memory of a
//! training step scales with (`cpflow vae` refuses, before anything is built, a batch whose
//! activations cannot fit in the machine's memory).

use super::data::VaeLikelihood;
use super::network::VaeArchitecture;
use crate::error::Result;
use crate::model_size::{add, mul};

/// `channels · height · width`, saturating.
fn map_size(channels: usize, (h, w): (usize, usize)) -> usize {
    mul(channels, mul(h, w))
}

impl VaeArchitecture {
    /// Values per image in the outputs of the encoder's gated convolutions, the decoder's
    /// gated transposed convolutions and the decoder's output (the logits), for `image_hw`
    /// images (28×28 or 28×20) and `latent_dim` latents; saturating. A gated layer counts
    /// its output once (its two pre-activations and its gate have the same size); the
    /// categorical head's hidden map is not counted (the head runs as one merged
    /// convolution). A training step keeps several values per unit (activations, their
    /// gradients), so this is what its memory grows with per image.
    ///
    /// ```
    /// use cpflow::vae::{VaeArchitecture, VaeLikelihood};
    /// let cpu = VaeArchitecture { channels: 16, feature_dim: 256, head_channels: 64 };
    /// // Frey Faces (28×20): encoder 16·560 + 16·140 + 32·140 + 32·35 + 32·35 + 256,
    /// // decoder 32·35 + 32·35 + 16·140 + 16·140 + 16·560 + 16·560, logits 256·560.
    /// let frey = cpu.hidden_units((28, 20), 64, VaeLikelihood::Categorical256)?;
    /// assert_eq!(frey, 18_176 + 24_640 + 143_360);
    /// // Binary 28×28 images: one Bernoulli logit per pixel.
    /// let mnist = cpu.hidden_units((28, 28), 64, VaeLikelihood::Bernoulli)?;
    /// assert_eq!(mnist, 25_344 + 34_496 + 784);
    /// # Ok::<(), cpflow::CpflowError>(())
    /// ```
    pub fn hidden_units(
        &self,
        image_hw: (usize, usize),
        latent_dim: usize,
        likelihood: VaeLikelihood,
    ) -> Result<usize> {
        let mut units = 0;
        let mut hw = image_hw;
        for (_, out, shape) in self.encoder_layers(image_hw)? {
            hw = shape.conv_output(hw);
            units = add(units, map_size(out, hw));
        }
        // The decoder starts from the latent vector as a 1×1 map.
        hw = (1, 1);
        for (_, out, shape) in self.decoder_layers(image_hw, latent_dim)? {
            hw = shape.transposed_output(hw);
            units = add(units, map_size(out, hw));
        }
        let mut logits = 0;
        for (_, out, shape) in self.head_layers(likelihood) {
            hw = shape.conv_output(hw);
            logits = out;
        }
        Ok(add(units, map_size(logits, hw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vae::GatedConv;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarMap;
    use rand::SeedableRng;

    /// The size arithmetic against the layers themselves: every encoder and decoder layer,
    /// built with its shape and run on a map of the size computed for its input, outputs the
    /// size computed for its output; the encoder ends at 1×1 and the decoder at the image.
    #[test]
    fn layer_sizes_match_the_gated_convolutions() {
        let arch = VaeArchitecture {
            channels: 2,
            feature_dim: 3,
            head_channels: 2,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let vm = VarMap::new();
        let run = |g: GatedConv, n_in: usize, hw: (usize, usize)| {
            let x = Tensor::zeros((1, n_in, hw.0, hw.1), DType::F32, &Device::Cpu).unwrap();
            let y = g.forward(&x).unwrap();
            (y.dims()[2], y.dims()[3])
        };
        for image in [(28, 28), (28, 20)] {
            let mut hw = image;
            for (i, (a, b, s)) in arch.encoder_layers(image).unwrap().into_iter().enumerate() {
                let name = format!("enc{image:?}{i}");
                let g = GatedConv::conv(&vm, &name, a, b, s, DType::F32, &Device::Cpu, &mut rng)
                    .unwrap();
                let next = s.conv_output(hw);
                assert_eq!(run(g, a, hw), next, "encoder layer {i} of {image:?}");
                hw = next;
            }
            assert_eq!(hw, (1, 1));
            let layers = arch.decoder_layers(image, 4).unwrap();
            for (i, (a, b, s)) in layers.into_iter().enumerate() {
                let name = format!("dec{image:?}{i}");
                let g =
                    GatedConv::transposed(&vm, &name, a, b, s, DType::F32, &Device::Cpu, &mut rng)
                        .unwrap();
                let next = s.transposed_output(hw);
                assert_eq!(run(g, a, hw), next, "decoder layer {i} of {image:?}");
                hw = next;
            }
            assert_eq!(hw, image);
        }
    }

    /// Units grow with the widths and saturate instead of overflowing.
    #[test]
    fn units_grow_with_the_widths_and_saturate() {
        let base = VaeArchitecture::reference();
        let units = |a: &VaeArchitecture| {
            a.hidden_units((28, 28), 64, VaeLikelihood::Bernoulli)
                .unwrap()
        };
        let wider = VaeArchitecture {
            channels: 64,
            ..base.clone()
        };
        assert!(units(&wider) > units(&base));
        let huge = VaeArchitecture {
            channels: usize::MAX / 2,
            ..base
        };
        assert_eq!(units(&huge), usize::MAX);
    }
}
