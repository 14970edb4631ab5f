//! The image-model configurations: the no-CP-Flow baseline, the dense `fc_end` block, and
//! the repository's config files with their stated parameter counts.

use std::path::Path;

use candle_core::Device;
use cpflow::FloatType;
use cpflow::image::{
    ImageExperimentConfig, ImageFlow, ImageFlowConfig, ImageLayerConfig, ImageModelConfig,
    ImageRunOptions, MultiscaleConfig, run_image_training,
};
use icnn::ImageShape;

use super::{temp_dir, tiny_data, tiny_train};

#[test]
fn baseline_has_no_cp_flow_block_and_a_finite_exact_bpd() {
    let model = ImageModelConfig {
        baseline: true,
        float: FloatType::F64,
        ..Default::default()
    };
    // The MNIST layout without blocks: logit, 10 ActNorms, 2 squeezes.
    let mnist = model.flow_config(ImageShape::new(1, 28, 28), 1e-6).unwrap();
    assert_eq!(mnist.num_blocks(), 0);
    let count =
        |f: &dyn Fn(&ImageLayerConfig) -> bool| mnist.layers.iter().filter(|l| f(l)).count();
    assert_eq!(count(&|l| matches!(l, ImageLayerConfig::ActNorm)), 10);
    assert_eq!(count(&|l| matches!(l, ImageLayerConfig::Squeeze)), 2);
    assert_eq!(count(&|l| matches!(l, ImageLayerConfig::Logit { .. })), 1);
    let with_blocks = ImageModelConfig {
        baseline: false,
        ..model.clone()
    };
    let full = with_blocks
        .flow_config(ImageShape::new(1, 28, 28), 1e-6)
        .unwrap();
    assert_eq!(full.layers.len(), mnist.layers.len() + 9);
    // Trained two steps on the tiny images: finite bpd, and SLQ equals the exact value (no
    // block, so no stochastic log-det: only logit and ActNorm terms, exact in both).
    let flow = model.flow_config(ImageShape::new(1, 4, 4), 0.05).unwrap();
    let r = run_image_training(
        &flow,
        &tiny_train(2),
        &tiny_data(2, 3),
        &Device::Cpu,
        &ImageRunOptions::default(),
    )
    .unwrap();
    assert_eq!(r.cp_flow_blocks, 0);
    assert_eq!(r.mean_cg_iterations, 0.0);
    let t = r.test.unwrap();
    let ex = t.exact.unwrap();
    assert!(t.slq.bpd.is_finite() && ex.exact.bpd.is_finite());
    assert!(ex.max_abs_difference < 1e-9, "{ex:?}");
}

/// `model.fc_end = true` (train_img.py's `--fc_end`) ends the flow with a dense CP-Flow block
/// `ICNN2(D, width, depth)` on the last scale's flattened row and a per-feature ActNorm; the
/// baseline drops the block and keeps the ActNorm. Trained two steps on the tiny images, the
/// saved model scores finite bits/dim and inverts its own outputs.
#[test]
fn fc_end_adds_a_dense_block_that_trains_and_inverts() {
    let model: ImageModelConfig =
        toml::from_str("width = 4\ndepth = 2\nnblocks = [1, 1]\nfc_end = true\nfloat = \"f64\"")
            .unwrap();
    assert!(model.fc_end && !ImageModelConfig::default().fc_end);
    let shape = ImageShape::new(1, 4, 4);
    let flow = model.flow_config(shape, 0.05).unwrap();
    let plain = ImageModelConfig {
        fc_end: false,
        ..model.clone()
    }
    .flow_config(shape, 0.05)
    .unwrap();
    assert_eq!(flow.num_blocks(), plain.num_blocks() + 1);
    let n = flow.layers.len();
    assert_eq!(flow.layers[..n - 2], plain.layers[..]);
    let ImageLayerConfig::Cpf(block) = &flow.layers[n - 2] else {
        panic!("{:?}", flow.layers[n - 2]);
    };
    // The reference's ICNN2 on the whole row: 16 = 4 channels × 2 × 2 after the squeeze.
    match &block.potential {
        cpflow::PotentialConfig::Icnn2(c) => assert_eq!((c.dim, c.width, c.depth), (16, 4, 2)),
        p => panic!("{p:?}"),
    }
    assert_eq!(flow.layers[n - 1], ImageLayerConfig::FeatureActNorm);
    let base = ImageModelConfig {
        baseline: true,
        ..model.clone()
    }
    .flow_config(shape, 0.05)
    .unwrap();
    assert_eq!(base.num_blocks(), 0);
    assert_eq!(base.layers.last(), Some(&ImageLayerConfig::FeatureActNorm));

    let dir = temp_dir("fc-end");
    let opts = ImageRunOptions {
        out_dir: Some(dir.clone()),
        ..Default::default()
    };
    let r =
        run_image_training(&flow, &tiny_train(2), &tiny_data(2, 3), &Device::Cpu, &opts).unwrap();
    assert_eq!(r.cp_flow_blocks, 3);
    assert!(r.final_loss.is_finite() && r.mean_cg_iterations >= 1.0);
    let ex = r.test.unwrap().exact.unwrap();
    assert!(ex.exact.bpd.is_finite() && ex.slq.bpd.is_finite(), "{ex:?}");
    let saved = ImageFlow::load(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(saved.config(), &flow);
    let x = tiny_data(0, 3)
        .test
        .dequantized_range(
            0,
            3,
            candle_core::DType::F64,
            &Device::Cpu,
            &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5),
        )
        .unwrap();
    let (z, _) = saved.transform(&x).unwrap();
    let back = saved.inverse(&z).unwrap();
    assert!(back.report.all_converged());
    let err = crate::image_common::max_abs_diff(&back.x.flatten_from(1).unwrap(), &x);
    // The inversion's tolerance is on the gradient map's residual (1e-10 by default);
    // through the logit's derivative at pixels near 0 or 1 it stays far below 1e-6.
    assert!(err < 1e-6, "round trip error {err:e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn repo_config(name: &str) -> ImageExperimentConfig {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap();
    let cfg: ImageExperimentConfig = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    cfg
}

fn parameters(cfg: &ImageFlowConfig) -> usize {
    ImageFlow::new(cfg.clone(), &Device::Cpu)
        .unwrap()
        .num_parameters()
}

#[test]
fn config_files_parse_and_have_the_stated_parameter_counts() {
    // Anchor: the reference defaults (ConvICNN 64×3, 3-3-3) have 1,407,890 (MNIST) and
    // 1,553,298 (CIFAR-10) parameters by the hand count of images-vae.md §2.10.
    let ms = |m: MultiscaleConfig| parameters(&ImageFlowConfig::multiscale(&m).unwrap());
    assert_eq!(ms(MultiscaleConfig::mnist()), 1_407_890);
    assert_eq!(ms(MultiscaleConfig::cifar10()), 1_553_298);
    for (file, paper) in [("mnist.toml", 2.9e6), ("cifar10.toml", 1.9e6)] {
        let cfg = repo_config(file);
        let n = parameters(&cfg.flow_config().unwrap());
        let rel = n as f64 / paper - 1.0;
        eprintln!(
            "{file}: {n} parameters ({:+.2}% of the paper's {paper})",
            100.0 * rel
        );
        assert!(rel.abs() <= 0.05, "{file}: {n}");
        assert_eq!(cfg.model.float, FloatType::F32);
        assert!(!cfg.model.baseline);
    }
    let cpu = repo_config("mnist-cpu.toml");
    let n = parameters(&cpu.flow_config().unwrap());
    eprintln!("mnist-cpu.toml: {n} parameters");
    assert!(
        n <= 300_000 && cpu.flow_config().unwrap().num_blocks() > 0,
        "{n}"
    );
    assert_eq!(cpu.model.float, FloatType::F32);
    assert!(cpu.train.max_minutes.is_some());
    // The baseline of the acceptance: the same file with model.baseline = true.
    let mut base = cpu.clone();
    base.model.baseline = true;
    assert_eq!(base.flow_config().unwrap().num_blocks(), 0);
}
