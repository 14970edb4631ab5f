//! How many hidden units one row's forward pass keeps: what the activation memory of a
//! training step and the chunk size of the exact (dense-Hessian) passes scale with.
//!
//! A dense ICNN of width `w` and depth `L` keeps `w·L` units per row, each in several arrays
//! (pre-activation, `s'`, `s''`, the reverse recursion's `∂F/∂z`, …), and the exact pass
//! carries `d` tangents of every unit on top. Parameters grow as `w²·L`, activations as
//! `w·L·rows`: a wide, deep network is bounded by its activations long before its weights.

use crate::flow_config::{FlowConfig, LayerConfig};
use crate::model_size::{add, mul};
use crate::potential::PotentialConfig;

impl PotentialConfig {
    /// Hidden units per row, saturating: `width · depth` for the dense ICNNs, and for the
    /// convolutional ones `width · H · W · depth` (every hidden layer has `width` channels at
    /// the input's resolution; `ConvIcnn`'s pooled stages come on top, so for it this is a
    /// lower bound); `None` for networks of your own.
    ///
    /// ```
    /// use cpflow::PotentialConfig;
    /// let c = cpflow::icnn::Icnn2Config { dim: 43, width: 64, depth: 10, ..Default::default() };
    /// assert_eq!(PotentialConfig::Icnn2(c).hidden_units(), Some(640));
    /// let image = cpflow::icnn::ImageShape::new(1, 28, 28);
    /// let c = cpflow::icnn::ConvIcnn3Config { image, width: 16, depth: 2, ..Default::default() };
    /// assert_eq!(PotentialConfig::ConvIcnn3(c).hidden_units(), Some(16 * 28 * 28 * 2));
    /// ```
    pub fn hidden_units(&self) -> Option<usize> {
        let conv = |image: icnn::ImageShape, width: usize, depth: usize| {
            (mul(width, mul(image.height, image.width)), depth)
        };
        let (width, depth) = match self {
            PotentialConfig::Icnn(c) => (c.width, c.depth),
            PotentialConfig::Icnn2(c) => (c.width, c.depth),
            PotentialConfig::Icnn3(c) => (c.width, c.depth),
            PotentialConfig::DenseIcnn2(c) => (c.width, c.depth),
            PotentialConfig::Picnn(c) => (c.width, c.depth),
            PotentialConfig::ConvIcnn(c) => conv(c.image, c.width, c.depth),
            PotentialConfig::ConvIcnn2(c) => conv(c.image, c.width, c.depth),
            PotentialConfig::ConvIcnn3(c) => conv(c.image, c.width, c.depth),
            PotentialConfig::Custom(_) | PotentialConfig::CustomConditional(_) => return None,
        };
        Some(mul(width, depth))
    }
}

impl FlowConfig {
    /// The hidden units per row of the flow's widest block (blocks run one after the other
    /// in the evaluation passes); `None` when no block's potential has a count
    /// ([`PotentialConfig::hidden_units`]).
    ///
    /// ```
    /// use cpflow::FlowConfig;
    /// // The reference toy flow: Icnn3, width 32, depth 20.
    /// assert_eq!(FlowConfig::toy_reference(1).max_hidden_units(), Some(640));
    /// ```
    pub fn max_hidden_units(&self) -> Option<usize> {
        self.blocks()
            .filter_map(PotentialConfig::hidden_units)
            .max()
    }

    /// The hidden units per row of all blocks together (a training step keeps every block's
    /// forward pass for the backward pass); `None` as for [`FlowConfig::max_hidden_units`].
    ///
    /// ```
    /// use cpflow::FlowConfig;
    /// assert_eq!(FlowConfig::toy_reference(3).total_hidden_units(), Some(3 * 640));
    /// ```
    pub fn total_hidden_units(&self) -> Option<usize> {
        self.blocks()
            .filter_map(PotentialConfig::hidden_units)
            .reduce(add)
    }

    fn blocks(&self) -> impl Iterator<Item = &PotentialConfig> {
        self.layers.iter().filter_map(|l| match l {
            LayerConfig::Cpf(b) => Some(&b.potential),
            LayerConfig::ActNorm => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use icnn::Icnn3Config;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, StandardNormal};

    use crate::flow::{EVAL_CHUNK, exact_chunk_rows, exact_chunk_rows_for};
    use crate::{Flow, FlowConfig, PotentialConfig};

    /// Networks of up to 3,048 units keep the rows they were tuned with (`2,752 / d`);
    /// larger ones get chunks of at most 2²³ tangents (down to 16 rows).
    #[test]
    fn large_networks_get_smaller_exact_chunks() {
        for d in 1..=300 {
            let tuned = (2752 / d).clamp(16, EVAL_CHUNK);
            for units in [None, Some(1), Some(640), Some(3048)] {
                assert_eq!(exact_chunk_rows(d, units), tuned, "d = {d}, {units:?}");
            }
        }
        assert_eq!(exact_chunk_rows(43, Some(640)), 64);
        // Icnn3 width 512 depth 20 at d = 2: 409 rows instead of 1,024.
        assert_eq!(exact_chunk_rows(2, Some(10_240)), 409);
        for (d, units) in [(2, 40_960), (4, 4096), (48, 10_240), (63, 640)] {
            let rows = exact_chunk_rows(d, Some(units));
            assert!(
                rows * d * units <= 1 << 23 || rows == 16,
                "{d}, {units}: {rows}"
            );
        }
        assert_eq!(exact_chunk_rows(2, Some(usize::MAX)), 16);
        assert_eq!(exact_chunk_rows(usize::MAX, Some(usize::MAX)), 16);
        // CPU tensors keep these rows while the host kernels run (off them, as on a GPU,
        // chunks are as large as 2²⁶ tangents allow: the composed-path test runs that).
        let x = Tensor::zeros((1, 1), DType::F32, &Device::Cpu).unwrap();
        if icnn::host_kernels_enabled() {
            assert_eq!(
                exact_chunk_rows_for(&x, 63, Some(640)),
                exact_chunk_rows(63, Some(640))
            );
        } else {
            assert_eq!(exact_chunk_rows_for(&x, 63, Some(640)), EVAL_CHUNK);
            assert_eq!(exact_chunk_rows_for(&x, 2, Some(40_960)), 819);
        }
    }

    /// The exact log-density does not depend on the chunks: 600 rows through a network of
    /// 4,096 units at d = 4 (chunks of 512 and 88 rows) equal the two halves scored apart
    /// (one chunk each) to rounding.
    #[test]
    fn exact_log_prob_does_not_depend_on_the_chunks() {
        let pot = PotentialConfig::Icnn3(Icnn3Config {
            dim: 4,
            width: 128,
            depth: 32,
            ..Default::default()
        });
        assert_eq!(pot.hidden_units(), Some(4096));
        let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu).unwrap();
        assert_eq!(flow.config().max_hidden_units(), Some(4096));
        assert_eq!(exact_chunk_rows(4, Some(4096)), 512);
        let mut rng = StdRng::seed_from_u64(3);
        let v: Vec<f64> = (0..600 * 4)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let x = Tensor::from_vec(v, (600, 4), &Device::Cpu).unwrap();
        flow.initialize(&x).unwrap();
        let all = flow.log_prob_exact(&x).unwrap();
        let halves = Tensor::cat(
            &[
                flow.log_prob_exact(&x.narrow(0, 0, 300).unwrap()).unwrap(),
                flow.log_prob_exact(&x.narrow(0, 300, 300).unwrap())
                    .unwrap(),
            ],
            0,
        )
        .unwrap();
        assert_eq!(all.dtype(), DType::F64);
        let (a, b) = (
            all.to_vec1::<f64>().unwrap(),
            halves.to_vec1::<f64>().unwrap(),
        );
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(
                a.is_finite() && (a - b).abs() <= 1e-10 * a.abs().max(1.0),
                "row {i}: {a} vs {b}"
            );
        }
    }
}
