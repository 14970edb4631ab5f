//! Image-flow training (`cpflow::image::train`): a short run writes its files, a resumed run
//! follows the uninterrupted trajectory bit for bit, the no-CP-Flow baseline, the parameter
//! counts of the configs, the sample grid and the CLI path (the EMA rule: `image_ema`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use cpflow::image::train::{TEST_SEED_SALT, exact_bpd_per_image, slq_bpd_per_image};
use cpflow::image::{
    EmaConfig, ImageData, ImageExperimentConfig, ImageFlow, ImageFlowConfig, ImageLayerConfig,
    ImageMetricsRecord, ImageModelConfig, ImageRunOptions, ImageSet, ImageTestConfig,
    ImageTrainConfig, ImageTrainReport, MultiscaleConfig, run_image_training,
};
use cpflow::{FloatType, SlqConfig};
use icnn::ImageShape;

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-imgtrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` fabricated 1×4×4 images with structure (a bright diagonal on a dark background, the
/// diagonal's brightness varying with the image index).
fn images(n: usize, offset: usize) -> ImageSet {
    let shape = ImageShape::new(1, 4, 4);
    let mut v = Vec::with_capacity(n * 16);
    for i in 0..n {
        for y in 0..4 {
            for x in 0..4 {
                let k = if x == y {
                    150 + (7 * (i + offset)) % 100
                } else {
                    (13 * (i + offset) + 3 * x) % 40
                };
                v.push(k as u8);
            }
        }
    }
    ImageSet::new(shape, v).unwrap()
}

pub(crate) fn tiny_data(n_val: usize, n_test: usize) -> ImageData {
    ImageData::new(images(12, 0), images(n_val, 100), images(n_test, 200)).unwrap()
}

/// A tiny two-scale conv flow on 1×4×4 images (ConvICNN width 4, depth 2, blocks 1-1).
pub(crate) fn tiny_flow(float: FloatType) -> ImageFlowConfig {
    ImageModelConfig {
        width: 4,
        depth: 2,
        nblocks: vec![1, 1],
        float,
        ..Default::default()
    }
    .flow_config(ImageShape::new(1, 4, 4), 0.05)
    .unwrap()
}

pub(crate) fn tiny_train(iters: usize) -> ImageTrainConfig {
    ImageTrainConfig {
        max_iterations: Some(iters),
        batch_size: 4,
        ema: EmaConfig {
            decay: 0.5,
            start_iteration: 1,
        },
        eval_batch_size: 3,
        log_every: 1,
        test: ImageTestConfig {
            slq: SlqConfig::default(),
            images: None,
            exact_images: 2,
        },
        seed: 3,
        ..Default::default()
    }
}

pub(crate) fn read_metrics(p: &Path) -> Vec<ImageMetricsRecord> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn checkpoint_tensors(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("checkpoint.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn two_steps_write_checkpoint_metrics_model_and_report() {
    let dir = temp_dir("files");
    let data = tiny_data(3, 3);
    let mut cfg = ImageTrainConfig {
        val_every: 1,
        train_slq_every: 1,
        ..tiny_train(2)
    };
    cfg.test.slq = SlqConfig {
        probes: 32,
        steps: 16,
    };
    let opts = ImageRunOptions {
        out_dir: Some(dir.clone()),
        ..Default::default()
    };
    let flow = tiny_flow(FloatType::F64);
    let r = run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts).unwrap();
    assert_eq!((r.iterations, r.cp_flow_blocks), (2, 2));
    assert_eq!((r.n_train, r.n_val, r.n_test), (12, 3, 3));
    // 12 images in batches of 4: two steps are 2/3 of an epoch.
    assert!((r.epochs - 2.0 / 3.0).abs() < 1e-12);
    assert!(r.mean_cg_iterations >= 1.0 && r.final_loss.is_finite());
    // Validated after each step; the end adds no duplicate point.
    let its: Vec<usize> = r.val_curve.iter().map(|p| p.iteration).collect();
    assert_eq!(its, vec![1, 2]);
    assert!(
        r.val_curve
            .iter()
            .all(|p| p.val.bpd.is_finite() && p.val.images == 3)
    );
    let m = read_metrics(&dir.join("metrics.jsonl"));
    assert_eq!(m.len(), 2);
    assert!(
        m.iter()
            .all(|l| l.val_bpd.is_some() && l.train_bpd_slq.is_some())
    );
    assert!(
        m.iter()
            .all(|l| l.cg_iterations >= 1.0 && l.grad_norm > 0.0)
    );
    // The test score: SLQ over the 3 test images, exact on 2 of them, on the same dequantised
    // images. Recomputed here from the saved EMA model with the documented test seed.
    let model = ImageFlow::load(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let seed = cfg.seed ^ TEST_SEED_SALT;
    let t = r.test.as_ref().unwrap();
    assert_eq!(t.slq.images, 3);
    let ex = t.exact.as_ref().unwrap();
    assert_eq!(ex.exact.images, 2);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let exact = exact_bpd_per_image(&model, &data.test, 2, 3, seed).unwrap();
    let slq = slq_bpd_per_image(&model, &data.test, 3, &cfg.test.slq, 3, seed).unwrap();
    assert!((mean(&exact) - ex.exact.bpd).abs() < 1e-12);
    assert!((mean(&slq.bpd) - t.slq.bpd).abs() < 1e-12);
    assert!((ex.slq.bpd - ex.exact.bpd - ex.mean_difference).abs() < 1e-12);
    // With steps = D the Lanczos quadrature is exact for each probe, so SLQ − exact is probe
    // noise only: within 5 of its standard errors (from the 32 probes) per image.
    let z = ex.max_abs_z.unwrap();
    assert!(z < 5.0, "{ex:?}");
    assert!(t.probe_std_err.unwrap() > 0.0);
    // Other dequantisation noise gives other exact values (the comparison pairs images).
    let other = exact_bpd_per_image(&model, &data.test, 2, 3, seed ^ 1).unwrap();
    assert!((other[0] - exact[0]).abs() > 1e-6);
    // report.json is the returned report (compared as text: serde_json's default float
    // parsing may be one ulp off), and it reads back.
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    assert_eq!(text, serde_json::to_string_pretty(&r).unwrap());
    let saved: ImageTrainReport = serde_json::from_str(&text).unwrap();
    assert_eq!(saved.val_curve.len(), 2);
    // model.safetensors holds the EMA weights of the checkpoint.
    let ck = checkpoint_tensors(&dir);
    for (name, t) in model.weight_tensors() {
        let ema = &ck[&format!("ema.{name}")];
        let d = (t - ema).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f64>().unwrap(), 0.0, "{name}");
    }
    assert!(ck.keys().any(|k| k.starts_with("adam.m.")));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A non-finite loss or gradient names the 1-based step that produced it, as `metrics.jsonl`
/// counts: with a huge learning rate the steps before it are logged finite.
#[test]
fn non_finite_steps_are_counted_as_the_metrics_count_them() {
    let dir = temp_dir("nan");
    let mut cfg = tiny_train(6);
    cfg.adam.lr = 1e30;
    let opts = ImageRunOptions {
        out_dir: Some(dir.clone()),
        ..Default::default()
    };
    let flow = tiny_flow(FloatType::F64);
    let err = run_image_training(&flow, &cfg, &tiny_data(3, 3), &Device::Cpu, &opts).unwrap_err();
    let cpflow::CpflowError::NonFinite { step, .. } = err else {
        panic!("expected a non-finite step, got {err}");
    };
    let m = read_metrics(&dir.join("metrics.jsonl"));
    assert!(step >= 2 && m.iter().all(|r| r.loss.is_finite()), "{step}");
    assert_eq!(m.last().map(|r| r.iteration), Some(step - 1));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_follows_the_uninterrupted_trajectory() {
    let data = tiny_data(0, 0);
    let flow = tiny_flow(FloatType::F32);
    let run = |dir: &Path, iters: usize, seed: u64, resume: bool| {
        let opts = ImageRunOptions {
            out_dir: Some(dir.to_path_buf()),
            resume,
            ..Default::default()
        };
        let cfg = ImageTrainConfig {
            seed,
            ..tiny_train(iters)
        };
        run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts).unwrap()
    };
    let (a, b, c) = (
        temp_dir("resume-a"),
        temp_dir("resume-b"),
        temp_dir("resume-c"),
    );
    // 5 steps cross an epoch boundary (3 batches per epoch).
    run(&a, 5, 3, false);
    run(&b, 2, 3, false);
    let rb = run(&b, 5, 3, true);
    assert_eq!(rb.iterations, 5);
    run(&c, 5, 4, false);
    let (ta, tb, tc) = (
        checkpoint_tensors(&a),
        checkpoint_tensors(&b),
        checkpoint_tensors(&c),
    );
    assert_eq!(ta.len(), tb.len());
    let mut differs_with_seed = false;
    for (k, t) in &ta {
        // Weights, EMA shadows and Adam moments: bit for bit (same ops in the same order).
        let d = (t - &tb[k]).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{k}");
        let dc = (t - &tc[k]).unwrap().abs().unwrap().max_all().unwrap();
        differs_with_seed |= dc.to_scalar::<f32>().unwrap() > 0.0;
    }
    // Another seed (other batches, noise and probes) ends elsewhere: the comparison can fail.
    assert!(differs_with_seed);
    // An interrupt (the flag set from the start) pauses the run after its first step: the
    // checkpoint holds it, there is no model file, and resuming ends where `a` ended.
    let d = temp_dir("resume-d");
    let opts = ImageRunOptions {
        out_dir: Some(d.clone()),
        interrupt: Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
            true,
        ))),
        ..Default::default()
    };
    let cfg = ImageTrainConfig {
        seed: 3,
        ..tiny_train(5)
    };
    match run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts) {
        Err(cpflow::CpflowError::Interrupted {
            iteration: 1,
            checkpoint: Some(p),
        }) => assert_eq!(p, d.join("checkpoint.safetensors")),
        other => panic!("expected an interrupt after step 1, got {other:?}"),
    }
    assert!(!d.join("model.safetensors").exists());
    assert_eq!(run(&d, 5, 3, true).iterations, 5);
    let td = checkpoint_tensors(&d);
    for (k, t) in &ta {
        let diff = (t - &td[k]).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(
            diff.to_scalar::<f32>().unwrap(),
            0.0,
            "{k} after the interrupt"
        );
    }
    std::fs::remove_dir_all(&d).ok();
    // The resumed run appended to the metrics file: one line per step.
    let its: Vec<usize> = read_metrics(&b.join("metrics.jsonl"))
        .iter()
        .map(|l| l.iteration)
        .collect();
    assert_eq!(its, vec![1, 2, 3, 4, 5]);
    // Resuming with another model is refused.
    let other = tiny_flow(FloatType::F64);
    let opts = ImageRunOptions {
        out_dir: Some(b.clone()),
        resume: true,
        ..Default::default()
    };
    assert!(run_image_training(&other, &tiny_train(6), &data, &Device::Cpu, &opts).is_err());
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

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

#[cfg(any(feature = "datasets", feature = "toy-images"))]
#[test]
fn sample_grid_png_has_the_right_size_and_pixels() {
    use cpflow::image::grid::GRID_BACKGROUND;
    use cpflow::image::{grid_size, quantize_pixels, write_sample_grid};
    let dir = temp_dir("grid");
    // 5 grey 6×5 images in a 2×3 grid: image i is uniformly i/4.
    let v: Vec<f32> = (0..5).flat_map(|i| vec![i as f32 / 4.0; 30]).collect();
    let imgs = Tensor::from_vec(v, (5, 1, 6, 5), &Device::Cpu).unwrap();
    let p = dir.join("g.png");
    write_sample_grid(&imgs, 2, 3, &p).unwrap();
    let png = image::open(&p).unwrap().to_luma8();
    let (w, h) = grid_size(2, 3, 6, 5);
    assert_eq!((png.width() as usize, png.height() as usize), (w, h));
    assert_eq!((w, h), (3 * 5 + 4 * 2, 2 * 6 + 3 * 2));
    // Image 3 (row 1, column 0) starts at x = 2, y = 2 + 8; image 4 (row 1, column 1) at
    // x = 2 + 7; the sixth cell is empty.
    assert_eq!(png.get_pixel(2, 10)[0], 191); // round(255·0.75)
    assert_eq!(png.get_pixel(9, 10)[0], 255);
    assert_eq!(png.get_pixel(3, 2)[0], 0); // image 0
    assert_eq!(png.get_pixel(0, 0)[0], GRID_BACKGROUND);
    assert_eq!(png.get_pixel(2 + 2 * 7, 2 + 8)[0], GRID_BACKGROUND);
    // RGB: channel planes land in R, G, B.
    let rgb = Tensor::from_vec(
        [vec![1.0f32; 4], vec![0.0; 4], vec![0.5; 4]].concat(),
        (1, 3, 2, 2),
        &Device::Cpu,
    )
    .unwrap();
    write_sample_grid(&rgb, 1, 1, &p).unwrap();
    let png = image::open(&p).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (6, 6));
    assert_eq!(png.get_pixel(2, 2).0, [255, 0, 128]);
    // Too many images, bad channel count.
    assert!(write_sample_grid(&imgs, 2, 2, &p).is_err());
    let two = Tensor::zeros((1, 2, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(write_sample_grid(&two, 1, 1, &p).is_err());
    // Quantisation: ⌊256·x⌋/255.
    let q = quantize_pixels(&Tensor::new(&[0.0f64, 0.5, 0.999], &Device::Cpu).unwrap()).unwrap();
    assert_eq!(q.to_vec1::<f64>().unwrap(), vec![0.0, 128.0 / 255.0, 1.0]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes raw (not gzipped) MNIST IDX files with `n_train` / `n_test` images.
#[cfg(feature = "cli")]
fn fabricate_mnist(root: &Path, n_train: usize, n_test: usize) {
    let dir = root.join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, n: usize, salt: usize| {
        let mut img = vec![0, 0, 8, 3];
        for v in [n as u32, 28, 28] {
            img.extend(v.to_be_bytes());
        }
        for i in 0..n {
            for y in 0..28usize {
                for x in 0..28usize {
                    let r2 = (x as i64 - 14).pow(2) + (y as i64 - 14).pow(2);
                    let ring = (r2 - (6 + (i + salt) % 4) as i64 * 10).abs() < 12;
                    img.push(if ring {
                        200 + ((i * 7 + x) % 50) as u8
                    } else {
                        0
                    });
                }
            }
        }
        std::fs::write(dir.join(format!("{name}-images-idx3-ubyte")), img).unwrap();
        let mut lab = vec![0, 0, 8, 1];
        lab.extend((n as u32).to_be_bytes());
        lab.extend((0..n).map(|i| (i % 10) as u8));
        std::fs::write(dir.join(format!("{name}-labels-idx1-ubyte")), lab).unwrap();
    };
    write("train", n_train, 0);
    write("t10k", n_test, 3);
}

#[cfg(feature = "cli")]
#[test]
fn cli_trains_an_image_config_and_samples_a_grid() {
    let dir = temp_dir("cli");
    fabricate_mnist(&dir, 10, 3);
    let cfg = dir.join("img.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data]\ndataset = \"mnist\"\nroot = {:?}\nn_val = 2\n\
             [model]\nwidth = 4\ndepth = 2\nnblocks = [1]\n\
             [train]\nmax_iterations = 2\nbatch_size = 4\n\
             test = {{ exact_images = 1 }}\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let run = dir.join("run");
    use crate::cli_common::cpflow;
    let out = cpflow(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(out.contains("test bpd"), "{out}");
    for f in [
        "config.toml",
        "checkpoint.safetensors",
        "model.safetensors",
        "metrics.jsonl",
        "report.json",
    ] {
        assert!(run.join(f).is_file(), "{f}");
    }
    // The run is not replaced by a new one, nor resumed with another model.
    let args = [
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ];
    let err = crate::cli_common::cpflow_fails(&args);
    assert!(err.contains("already holds a run"), "{err}");
    let resume = [&args[..], &["--resume", "--set", "model.width=8"]].concat();
    let err = crate::cli_common::cpflow_fails(&resume);
    assert!(
        err.contains("model.width: 8 (requested) vs 4 (the run)"),
        "{err}"
    );
    let png = dir.join("s.png");
    let out = cpflow(&[
        "sample",
        "--model",
        run.to_str().unwrap(),
        "--grid",
        "2x3",
        "--temperature",
        "0.8",
        "--output",
        png.to_str().unwrap(),
    ]);
    assert!(out.contains("6 of 6 converged"), "{out}");
    let img = image::open(&png).unwrap();
    let (w, h) = cpflow::image::grid_size(2, 3, 28, 28);
    assert_eq!((img.width() as usize, img.height() as usize), (w, h));
    // A grid is a PNG: another name is refused (it wrote PNG bytes into `g.npy`).
    let npy = dir.join("g.npy");
    let args = ["sample", "--model", run.to_str().unwrap(), "--grid", "2x2"];
    let err =
        crate::cli_common::cpflow_fails(&[&args[..], &["-o", npy.to_str().unwrap()]].concat());
    assert!(err.contains("PNG") && err.contains("g.npy"), "{err}");
    assert!(!npy.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
