//! Tests of `config.rs`: the layer chain's checks and the multi-scale layout.

use super::*;
use icnn::Icnn2Config;

fn dense(dim: usize) -> PotentialConfig {
    PotentialConfig::Icnn2(Icnn2Config {
        dim,
        width: 4,
        depth: 2,
        ..Default::default()
    })
}

fn cfg(image: ImageShape, layers: Vec<ImageLayerConfig>) -> ImageFlowConfig {
    ImageFlowConfig {
        image,
        layers,
        prior: GaussianPrior::standard(),
        float: FloatType::F64,
        init_seed: 0,
    }
}

#[test]
fn image_layer_shapes_are_checked() {
    use ImageLayerConfig as L;
    let s = ImageShape::new(1, 4, 6);
    let ok = cfg(
        s,
        vec![
            L::Squeeze,
            L::FactorOut,
            L::Cpf(BlockConfig::new(dense(12))),
        ],
    );
    let shapes = ok.layer_shapes().unwrap();
    assert_eq!(shapes.output, ImageShape::new(2, 2, 3));
    assert_eq!(shapes.factored, vec![ImageShape::new(2, 2, 3)]);
    // Wrong block dimension, odd squeeze, odd factor-out, bad alpha.
    let bad = [
        vec![L::Squeeze, L::Cpf(BlockConfig::new(dense(12)))],
        vec![L::Squeeze, L::Squeeze],
        vec![L::FactorOut],
        vec![L::Logit { alpha: 0.5 }],
    ];
    for layers in bad {
        assert!(cfg(s, layers).layer_shapes().is_err());
    }
}

#[test]
fn multiscale_resizes_the_potential_per_scale() {
    let ms = MultiscaleConfig {
        image: ImageShape::new(1, 4, 4),
        nblocks: vec![1, 1],
        factor_out: true,
        potential: dense(1),
        fc_end: Some(dense(1)),
        ..MultiscaleConfig::mnist()
    };
    let c = ImageFlowConfig::multiscale(&ms).unwrap();
    let dims: Vec<usize> = c
        .layers
        .iter()
        .filter_map(|l| match l {
            ImageLayerConfig::Cpf(b) => Some(b.potential.dim()),
            _ => None,
        })
        .collect();
    // 16 at scale 0; 8 after squeeze + factor-out; the fc_end block sees the same 8.
    assert_eq!(dims, vec![16, 8, 8]);
    assert_eq!(c.layers.last(), Some(&ImageLayerConfig::FeatureActNorm));
}

#[test]
fn too_many_scales_are_refused_naming_nblocks_and_the_most() {
    // 28×28: squeezed to 14×14, then 7×7, which is odd: at most 3 scales.
    let mnist = MultiscaleConfig {
        potential: dense(1),
        ..MultiscaleConfig::mnist()
    };
    assert_eq!(MultiscaleConfig::max_scales(mnist.image), 3);
    let three = MultiscaleConfig {
        nblocks: vec![1, 1, 1],
        ..mnist.clone()
    };
    assert!(ImageFlowConfig::multiscale(&three).is_ok());
    let four = MultiscaleConfig {
        nblocks: vec![1, 1, 1, 1],
        ..mnist
    };
    // The layer chain's error was "layer 10: cannot squeeze a 7×7 image".
    let e = ImageFlowConfig::multiscale(&four).unwrap_err().to_string();
    assert!(
        e.contains("model.nblocks = [1, 1, 1, 1] has 4 scales")
            && e.contains("1×28×28 images allow at most 3")
            && e.contains("28×28 → 14×14 → 7×7")
            && e.contains("e.g. model.nblocks = [1, 1, 1]"),
        "{e}"
    );
    // A 1×1 image has one scale; 32×32 six (32, 16, 8, 4, 2, 1).
    assert_eq!(MultiscaleConfig::max_scales(ImageShape::new(1, 1, 1)), 1);
    assert_eq!(MultiscaleConfig::max_scales(ImageShape::new(3, 32, 32)), 6);
}
