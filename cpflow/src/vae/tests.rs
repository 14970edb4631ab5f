//! Tests of the VAE experiment code (tiny widths, fabricated images: seconds each).

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use super::*;

/// `max |a − b|` over all elements, in f64.
pub(super) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Normal draws `N(0, std²)` of `shape` in f64 from a seeded host RNG (candle's own RNG
/// cannot be seeded).
fn seeded_normal(rng: &mut rand::rngs::StdRng, shape: &[usize], std: f64) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| std * rng.sample::<f64, _>(rand_distr::StandardNormal))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub(super) fn tiny_config(posterior: PosteriorKind) -> VaeModelConfig {
    VaeModelConfig {
        latent_dim: 3,
        architecture: VaeArchitecture {
            channels: 2,
            feature_dim: 5,
            head_channels: 4,
        },
        posterior,
        blocks: 1,
        width: 6,
        depth: 2,
        ..Default::default()
    }
}

/// `n` fabricated 28×20 "faces": a bright blob whose position depends on the image, plus
/// noise — learnable structure, 8-bit values.
fn fake_frey(n: usize, seed: u64) -> VaeImages {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(n * 560);
    for i in 0..n {
        let (cr, cc) = (8.0 + (i % 3) as f64 * 6.0, 6.0 + (i % 2) as f64 * 8.0);
        for r in 0..28 {
            for c in 0..20 {
                let d2 = (r as f64 - cr).powi(2) + (c as f64 - cc).powi(2);
                let v = 40.0 + 180.0 * (-d2 / 20.0).exp() + rng.random::<f64>() * 20.0;
                pixels.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    VaeImages { n, pixels }
}

pub(super) fn fake_data() -> VaeData {
    VaeData {
        name: VaeDatasetName::FreyFaces,
        likelihood: VaeLikelihood::Categorical256,
        height: 28,
        width: 20,
        train: fake_frey(24, 1),
        val: fake_frey(6, 2),
        test: fake_frey(6, 3),
        dynamic_binarization: false,
    }
}

#[test]
fn gated_conv_is_h_times_sigmoid_g() {
    // The fused forward (one convolution with both kernels) must equal the definition.
    let dev = Device::Cpu;
    let vm = candle_nn::VarMap::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let shape = ConvShape::square(5, 2, 2);
    let g = GatedConv::conv(&vm, "l", 3, 4, shape, DType::F64, &dev, &mut rng).unwrap();
    let t = GatedConv::transposed(
        &vm,
        "t",
        4,
        2,
        shape.with_output_padding(1),
        DType::F64,
        &dev,
        &mut rng,
    )
    .unwrap();
    let x = seeded_normal(&mut rng, &[2, 3, 8, 6], 1.0);
    let get = |k: &str| {
        vm.data()
            .lock()
            .unwrap()
            .get(k)
            .unwrap()
            .as_tensor()
            .clone()
    };
    let bias = |k: &str| get(k).reshape((1, (), 1, 1)).unwrap();
    let h = x
        .conv2d(&get("l.h.weight"), 2, 2, 1, 1)
        .unwrap()
        .broadcast_add(&bias("l.h.bias"))
        .unwrap();
    let s = x
        .conv2d(&get("l.g.weight"), 2, 2, 1, 1)
        .unwrap()
        .broadcast_add(&bias("l.g.bias"))
        .unwrap();
    let want = (h * candle_nn::ops::sigmoid(&s).unwrap()).unwrap();
    let got = g.forward(&x).unwrap();
    let diff = (got.clone() - &want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert!(diff.to_scalar::<f64>().unwrap() < 1e-13);
    // Transposed: 4×4 → 8×8 with stride 2, padding 2, output padding 1.
    let y = t.forward(&got).unwrap();
    let h = got
        .conv_transpose2d(&get("t.h.weight"), 2, 1, 2, 1)
        .unwrap()
        .broadcast_add(&bias("t.h.bias"))
        .unwrap();
    let s = got
        .conv_transpose2d(&get("t.g.weight"), 2, 1, 2, 1)
        .unwrap()
        .broadcast_add(&bias("t.g.bias"))
        .unwrap();
    let want = (h * candle_nn::ops::sigmoid(&s).unwrap()).unwrap();
    assert_eq!(y.dims(), &[2, 2, 8, 6]);
    let diff = (y - want).unwrap().abs().unwrap().max_all().unwrap();
    assert!(diff.to_scalar::<f64>().unwrap() < 1e-13);
}

#[test]
fn pointwise_after_spatial_conv_composes_into_one_conv() {
    // The decoder's 256-way head runs Conv(5×5) then Conv(1×1) as one convolution with the
    // composed kernel and bias: the same values and parameter gradients as the two convs
    // (f64; the composed kernel reorders sums of ≤ 6·75 products: 1e-12).
    use super::gated::Conv;
    let dev = Device::Cpu;
    let vm = candle_nn::VarMap::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let spatial = ConvShape::square(5, 1, 2);
    let pointwise = ConvShape::square(1, 1, 0);
    let a = Conv::plain(&vm, "a", 3, 6, spatial, DType::F64, &dev, &mut rng).unwrap();
    let b = Conv::plain(&vm, "b", 6, 7, pointwise, DType::F64, &dev, &mut rng).unwrap();
    let x = seeded_normal(&mut rng, &[2, 3, 8, 6], 1.0);
    let r = seeded_normal(&mut rng, &[2, 7, 8, 6], 1.0);
    let var = |k: &str| vm.data().lock().unwrap().get(k).unwrap().clone();
    let names = ["a.weight", "a.bias", "b.weight", "b.bias"];
    let grads = |out: &Tensor| {
        let g = (out * &r).unwrap().sum_all().unwrap().backward().unwrap();
        names.map(|n| g.get(var(n).as_tensor()).unwrap().clone())
    };
    let bias = |k: &str| var(k).as_tensor().reshape((1, (), 1, 1)).unwrap();
    let want = x
        .conv2d(var("a.weight").as_tensor(), 2, 1, 1, 1)
        .unwrap()
        .broadcast_add(&bias("a.bias"))
        .unwrap()
        .conv2d(var("b.weight").as_tensor(), 0, 1, 1, 1)
        .unwrap()
        .broadcast_add(&bias("b.bias"))
        .unwrap();
    let got = a.then_pointwise(&b).unwrap().unwrap().forward(&x).unwrap();
    assert!(max_abs_diff(&got, &want) < 1e-12);
    for (n, (g, w)) in names
        .iter()
        .zip(grads(&got).iter().zip(grads(&want).iter()))
    {
        assert!(max_abs_diff(g, w) < 1e-10, "{n}: gradients differ");
    }
    // Only a pointwise convolution composes.
    let c = Conv::plain(&vm, "c", 6, 7, spatial, DType::F64, &dev, &mut rng).unwrap();
    assert!(a.then_pointwise(&c).unwrap().is_none());
}

#[test]
fn reference_widths_give_the_reference_parameter_counts() {
    // images-vae.md §3.8 (and the authors' model, counted with PyTorch by
    // benchmarks/scripts/ref_vae_epoch.py): Frey encoder 1,745,600, decoder 1,018,880, flow
    // 452,122; binary 28×28 encoder 2,204,352, decoder 862,753.
    let dev = Device::Cpu;
    let count = |lik, hw, post| {
        let cfg = VaeModelConfig {
            posterior: post,
            ..Default::default()
        };
        let v = Vae::new(&cfg, lik, hw, &dev).unwrap();
        let part = |p: &str| -> usize {
            v.named_vars()
                .iter()
                .filter(|(k, _)| k.starts_with(p) && !k.ends_with("initialized"))
                .map(|(_, t)| t.elem_count())
                .sum()
        };
        (part("encoder"), part("decoder"), part("posterior"))
    };
    let frey = count(
        VaeLikelihood::Categorical256,
        (28, 20),
        PosteriorKind::CpFlow,
    );
    assert_eq!(frey, (1_745_600, 1_018_880, 452_122));
    let bin = count(VaeLikelihood::Bernoulli, (28, 28), PosteriorKind::Gaussian);
    assert_eq!((bin.0, bin.1, bin.2), (2_204_352, 862_753, 0));
}

#[test]
fn likelihoods_match_explicit_sums() {
    let dev = Device::Cpu;
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let logits = seeded_normal(&mut rng, &[2, 256, 3, 2], 2.0);
    let t: Vec<u32> = (0..12).map(|_| rng.random_range(0..256)).collect();
    let targets = Tensor::from_vec(t.clone(), (2, 6), &dev).unwrap();
    let ll = categorical_log_likelihood(&logits, &targets)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let flat = logits
        .reshape((2, 256, 6))
        .unwrap()
        .to_vec3::<f64>()
        .unwrap();
    for b in 0..2 {
        let mut want = 0.0;
        for p in 0..6 {
            let lse = flat[b].iter().map(|row| row[p].exp()).sum::<f64>().ln();
            want += flat[b][t[b * 6 + p] as usize][p] - lse;
        }
        assert!((ll[b] - want).abs() < 1e-10, "{} vs {want}", ll[b]);
    }
    let bl = Tensor::new(&[[[[-30.0f64, 0.3], [40.0, -1.0]]]], &dev).unwrap();
    let bx = Tensor::new(&[[[[1.0f64, 0.0], [1.0, 1.0]]]], &dev).unwrap();
    let got = bernoulli_log_likelihood(&bl, &bx)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[0];
    let s = |z: f64| 1.0 / (1.0 + (-z).exp());
    let want = s(-30.0).ln() + (1.0 - s(0.3)).ln() + s(40.0).ln() + s(-1.0).ln();
    assert!((got - want).abs() < 1e-12);
    // The log-sum-exp must be the stable one: huge logits stay finite.
    let big = (Tensor::ones((1, 256, 1, 1), DType::F64, &dev).unwrap() * 1e4).unwrap();
    let t0 = Tensor::new(&[[0u32]], &dev).unwrap();
    let v = categorical_log_likelihood(&big, &t0)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[0];
    assert!((v + 256f64.ln()).abs() < 1e-9);
}

#[test]
fn encoder_gradient_matches_finite_differences() {
    // d(−ELBO with fixed noise)/d(one encoder weight), autodiff vs central differences, with
    // the exact log q through a CP-Flow posterior (f64; the gradient reaches the encoder
    // through μ, σ and the context).
    let dev = Device::Cpu;
    let vae = Vae::new(
        &tiny_config(PosteriorKind::CpFlow),
        VaeLikelihood::Categorical256,
        (28, 20),
        &dev,
    )
    .unwrap();
    let data = fake_data();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let b = make_batch(&vae, &data, VaeSplit::Train, &[0, 1, 2], &mut rng).unwrap();
    vae.initialize(&b, &mut rng).unwrap();
    let eps = vae.posterior().draw_noise(3, &mut rng).unwrap();
    let objective = || -> Tensor {
        let e = vae.encode_for_tests(&b.x).unwrap();
        let s = vae
            .posterior()
            .transform_noise_exact(&e.mu, &e.log_sigma, &e.feature, &eps)
            .unwrap();
        let ll = vae.log_likelihood(&b, &s.z).unwrap();
        let lp = (s.z.sqr().unwrap().sum(1).unwrap() * -0.5).unwrap();
        ((s.log_q - lp).unwrap() - ll).unwrap().sum_all().unwrap()
    };
    let vars = vae.named_vars();
    for name in ["encoder.q_z_nn.5.g.weight", "encoder.q_z_nn.2.h.bias"] {
        let var = &vars.iter().find(|(k, _)| k == name).unwrap().1;
        let grads = objective().backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for &i in &[0usize, base.len() / 2] {
            let h = 1e-5;
            let eval = |delta: f64| {
                let mut w = base.clone();
                w[i] += delta;
                var.set(&Tensor::from_vec(w, var.shape(), &dev).unwrap())
                    .unwrap();
                objective().to_scalar::<f64>().unwrap()
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &dev).unwrap())
                .unwrap();
            // Central differences in f64 with h = 1e-5 on an O(10³) objective: error ~1e-6
            // relative; 1e-4 leaves room.
            assert!(
                (fd - g[i]).abs() <= 1e-4 * (1.0 + fd.abs()),
                "{name}[{i}]: autodiff {} vs FD {fd}",
                g[i]
            );
        }
    }
}

/// A small run of the tiny model on [`fake_data`]: batches of 8 (3 steps an epoch), β warm-up
/// over 2 epochs, `is_samples` importance samples for 2 test images.
pub(super) fn tiny_run_config(
    posterior: PosteriorKind,
    epochs: usize,
    is_samples: usize,
) -> VaeConfig {
    VaeConfig {
        data: VaeDataConfig {
            dataset: VaeDatasetName::FreyFaces,
            root: "unused".into(),
            seed: 0,
            n_train: None,
        },
        model: tiny_config(posterior),
        train: VaeTrainConfig {
            epochs,
            batch_size: 8,
            warmup_epochs: 2,
            optimizer: AdamaxParams {
                lr: 3e-3,
                ..Default::default()
            },
            ..Default::default()
        },
        eval: VaeEvalConfig {
            is_samples,
            is_chunk: 10,
            is_images: Some(2),
        },
    }
}

/// The epoch records of the run in `dir`, timing aside.
pub(super) fn epoch_records(dir: &std::path::Path) -> Vec<VaeEpochRecord> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut r: VaeEpochRecord = serde_json::from_str(l).unwrap();
            (r.train_seconds, r.val_seconds) = (0.0, 0.0);
            r
        })
        .collect()
}

#[test]
fn training_lowers_the_validation_elbo_and_resume_is_exact() {
    let dir = std::env::temp_dir().join(format!("cpflow-vae-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = fake_data();
    let mut cfg = tiny_run_config(PosteriorKind::CpFlow, 4, 20);
    let opts = VaeRunOptions::default();
    let full = run_vae_on(&cfg, &data, &dir.join("full"), &opts).unwrap();
    assert_eq!(full.epochs, 4);
    assert_eq!(full.stop_reason, VaeStopReason::MaxEpochs);
    let curve: Vec<f64> = full.val_curve.iter().map(|p| p.1).collect();
    assert!(
        curve[3] < curve[0],
        "validation −ELBO did not improve: {curve:?}"
    );
    // The importance-sampled −log p(x) is tighter than the −ELBO in expectation, image by
    // image (Jensen: E[−log mean_k w_k] ≤ E[−log w]). The run scored the first 2 test images
    // with 20 samples; the −ELBO of the same images with the same (best) weights is averaged
    // over 100 single-sample draws. The margin is 3 standard errors of the difference: the
    // reported mean MC error of the per-image IS estimates (an upper bound on that of their
    // mean) and that of the −ELBO average (per-image spread over the draws).
    let is = full.test_is_nll.unwrap();
    assert_eq!(is.n, 2);
    let is_se = full.test_is_mc_std_err.unwrap();
    let (best, _) = load_vae(&dir.join("full"), &Device::Cpu).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let draws: Vec<Vec<f64>> = (0..100)
        .map(|_| split_neg_elbo(&best, &data, VaeSplit::Test, 2, 2, &mut rng).unwrap())
        .collect();
    let per_image: Vec<MeanWithError> = (0..2)
        .map(|i| MeanWithError::of(&draws.iter().map(|d| d[i]).collect::<Vec<_>>()))
        .collect();
    let elbo = (per_image[0].mean + per_image[1].mean) / 2.0;
    let elbo_se = (per_image[0].std_err.powi(2) + per_image[1].std_err.powi(2)).sqrt() / 2.0;
    let margin = 3.0 * (is_se.powi(2) + elbo_se.powi(2)).sqrt();
    assert!(
        is.mean <= elbo + margin,
        "IS −log p(x) {} ± {is_se} is looser than the −ELBO {elbo} ± {elbo_se} of the same images",
        is.mean
    );
    assert!(full.test_neg_elbo_bpd.is_some());
    // 2 epochs, stop, resume to 4: same weights bit for bit.
    cfg.train.epochs = 2;
    run_vae_on(&cfg, &data, &dir.join("split"), &opts).unwrap();
    cfg.train.epochs = 4;
    let resumed = run_vae_on(
        &cfg,
        &data,
        &dir.join("split"),
        &VaeRunOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(resumed.val_curve, full.val_curve);
    // An interrupt (the flag set from the start) pauses after the step in progress, with its
    // checkpoint; an epoch here is 3 steps (24 images, batches of 8). Paused after steps 1
    // and 2 (within the first epoch), then after step 3 (its last: the epoch is validated
    // and checkpointed first), then resumed to the end: the run ends where the uninterrupted
    // one did, and the epoch records are the same.
    let interrupt = Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
        true,
    )));
    let paused = dir.join("paused");
    for (k, (steps, epoch, within)) in [(1, 0, Some(1)), (2, 0, Some(2)), (3, 1, None)]
        .into_iter()
        .enumerate()
    {
        let err = run_vae_on(
            &cfg,
            &data,
            &paused,
            &VaeRunOptions {
                resume: k > 0,
                interrupt: interrupt.clone(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(&err, crate::CpflowError::Interrupted { iteration, checkpoint: Some(p) }
                if *p == paused.join("checkpoint.safetensors") && *iteration == steps),
            "{err}"
        );
        let (meta, _) =
            load_vae_checkpoint(&paused.join("checkpoint.safetensors"), &Device::Cpu).unwrap();
        let state = meta.state.unwrap();
        assert_eq!(
            (
                state.steps,
                state.epoch,
                state.partial_epoch.map(|p| p.sums.batches)
            ),
            (steps, epoch, within)
        );
    }
    let resume = VaeRunOptions {
        resume: true,
        ..Default::default()
    };
    assert_eq!(
        run_vae_on(&cfg, &data, &paused, &resume).unwrap().val_curve,
        full.val_curve
    );
    assert_eq!(epoch_records(&paused), epoch_records(&dir.join("full")));
    let (_, a) =
        load_vae_checkpoint(&dir.join("full/checkpoint.safetensors"), &Device::Cpu).unwrap();
    for other in ["split", "paused"] {
        let (_, b) = load_vae_checkpoint(
            &dir.join(other).join("checkpoint.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        for (k, t) in &a {
            assert_eq!(max_abs_diff(t, &b[k]), 0.0, "{k} ({other})");
        }
    }
    // A checkpoint of another model is refused.
    cfg.model.width = 7;
    let err = run_vae_on(
        &cfg,
        &data,
        &dir.join("split"),
        &VaeRunOptions {
            resume: true,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("another model"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_inputs_are_errors() {
    let dev = Device::Cpu;
    let vae = Vae::new(
        &tiny_config(PosteriorKind::Gaussian),
        VaeLikelihood::Bernoulli,
        (28, 28),
        &dev,
    )
    .unwrap();
    let wrong = VaeBatch {
        x: Tensor::zeros((2, 1, 28, 20), DType::F64, &dev).unwrap(),
        targets: None,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    assert!(vae.initialize(&wrong, &mut rng).is_err());
    assert!(
        Vae::new(
            &tiny_config(PosteriorKind::Gaussian),
            VaeLikelihood::Bernoulli,
            (32, 32),
            &dev
        )
        .is_err()
    );
    let mut cfg: VaeConfig =
        toml::from_str("[data]\ndataset = \"caltech101\"\nroot = \"x\"\n").unwrap();
    cfg.validate().unwrap();
    cfg.train.batch_size = 0;
    assert!(cfg.validate().is_err());
    cfg.train.batch_size = 1;
    cfg.train.epochs = 0;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("train.epochs"), "{err}");
    cfg.train.epochs = 1;
    cfg.model.blocks = 0;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("model.blocks"), "{err}");
    cfg.model.posterior = PosteriorKind::Gaussian;
    cfg.validate().unwrap();
    assert!(
        toml::from_str::<VaeConfig>(
            "[data]\ndataset = \"caltech101\"\nroot = \"x\"\n[train]\nepoch = 3\n"
        )
        .is_err()
    );
}

/// The stop reason prints as `report.json` names it; a non-finite training loss names the
/// 1-based step that produced it: with a huge learning rate the first step (at the initial
/// weights) is finite and the second is not.
#[test]
fn stop_reasons_print_kebab_case_and_non_finite_steps_are_one_based() {
    for r in [
        VaeStopReason::MaxEpochs,
        VaeStopReason::EarlyStopping,
        VaeStopReason::TimeBudget,
    ] {
        assert_eq!(serde_json::to_value(r).unwrap(), r.to_string());
    }
    let dir = std::env::temp_dir().join(format!("cpflow-vae-nan-{}", std::process::id()));
    let mut cfg =
        VaeConfig::reference(VaeDatasetName::FreyFaces, "unused", PosteriorKind::Gaussian);
    cfg.model = tiny_config(PosteriorKind::Gaussian);
    cfg.train.batch_size = 8;
    cfg.train.optimizer.lr = 1e30;
    let err = run_vae_on(&cfg, &fake_data(), &dir, &VaeRunOptions::default()).unwrap_err();
    assert!(
        matches!(err, crate::CpflowError::NonFinite { step: 2, .. }),
        "{err}"
    );
    // Weights that diverged so far that the encoder's output is non-finite before the loss
    // is formed (Frey at lr 1e8): the posterior's input check becomes the same error, naming
    // the step; other errors pass through.
    let input = |m: &str| crate::CpflowError::InvalidInput(m.into());
    let err = super::train::diverged(input("mu contains NaN or infinite values"), 7, None);
    assert!(
        matches!(&err, crate::CpflowError::NonFinite { step: 7, what, .. } if what.contains("mu")),
        "{err}"
    );
    let err = super::train::diverged(input("x must hold floating-point values"), 7, None);
    assert!(matches!(err, crate::CpflowError::InvalidInput(_)), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
