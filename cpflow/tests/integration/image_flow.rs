//! The multi-scale image flow: log-det of the whole map against finite differences, exact
//! vs SLQ, inverse of forward, sampling, save/load, the training loss, and bits per dimension
//! on closed forms.

// Index loops over rows read more plainly than zipped iterators in these checks.
#![allow(clippy::needless_range_loop)]

use crate::image_common::{
    conv, dense, fd_jacobian, host, log_abs_det, max_abs_diff, small_config,
};
use candle_core::{DType, Device, Tensor};
use cpflow::image::{
    ImageFlow, ImageFlowConfig, ImageLayerConfig, MultiscaleConfig, bits_per_dim, dequantize,
};
use cpflow::{FloatType, GaussianPrior, PotentialConfig, SlqConfig, SurrogateParams};
use icnn::ImageShape;
use rand::{SeedableRng, rngs::StdRng};

const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// Dequantised images of random grey levels (seeded), (n, D) f64.
fn images(n: usize, d: usize, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let k: Vec<u32> = (0..n * d).map(|i| ((i * 37 + 11) % 256) as u32).collect();
    let k = Tensor::from_vec(k, (n, d), &Device::Cpu).unwrap();
    dequantize(&k, DType::F64, &mut rng).unwrap()
}

#[test]
fn multiscale_layout_follows_the_reference() {
    let cfg = small_config(conv(), true, FloatType::F64);
    use ImageLayerConfig as L;
    let kinds: Vec<&str> = cfg
        .layers
        .iter()
        .map(|l| match l {
            L::Logit { .. } => "logit",
            L::ActNorm => "an",
            L::FeatureActNorm => "fan",
            L::Squeeze => "sq",
            L::FactorOut => "fo",
            L::Cpf(_) => "cpf",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "logit", "an", "an", "cpf", "sq", "fo", "an", "cpf", "an", "cpf"
        ]
    );
    let shapes = cfg.layer_shapes().unwrap();
    assert_eq!(shapes.output, ImageShape::new(4, 2, 2));
    assert_eq!(shapes.factored, vec![ImageShape::new(4, 2, 2)]);
    // The reference's default parameter counts (images-vae.md §2.10, counting the unused
    // ActNorms of the ConvICNNs as PyTorch does).
    for (ms, expect) in [
        (MultiscaleConfig::mnist(), 1_407_890),
        (MultiscaleConfig::cifar10(), 1_553_298),
    ] {
        let cfg = ImageFlowConfig::multiscale(&ms).unwrap();
        // Counted from the configuration alone, before building.
        assert_eq!(cfg.parameter_count().unwrap(), Some(expect));
        let flow = ImageFlow::new(cfg, &Device::Cpu).unwrap();
        assert_eq!(flow.num_parameters(), expect);
    }
}

/// The count checked before building agrees with the built flow for every potential, with
/// and without factor-out, ActNorms and a dense `fc_end`; an absurd number of blocks (which
/// listed layers until the memory ran out) or depth is refused at once, naming the size.
#[test]
fn multiscale_flows_are_counted_before_they_are_built() {
    let potentials = [
        conv(),
        dense(),
        PotentialConfig::ConvIcnn2(icnn::ConvIcnn2Config {
            width: 4,
            depth: 2,
            ..Default::default()
        }),
        PotentialConfig::ConvIcnn3(icnn::ConvIcnn3Config {
            width: 4,
            depth: 3,
            ..Default::default()
        }),
    ];
    for potential in potentials {
        for (factor_out, actnorm, fc_end) in [(true, true, true), (false, false, false)] {
            let ms = MultiscaleConfig {
                image: ImageShape::new(2, 4, 4),
                nblocks: vec![2, 1],
                factor_out,
                actnorm,
                fc_end: fc_end.then(dense),
                potential: potential.clone(),
                ..MultiscaleConfig::mnist()
            };
            let cfg = ImageFlowConfig::multiscale(&ms).unwrap();
            let built = ImageFlow::new(cfg.clone(), &Device::Cpu)
                .unwrap()
                .num_parameters();
            assert_eq!(cfg.parameter_count().unwrap(), Some(built), "{ms:?}");
        }
    }
    let refuse = |ms: MultiscaleConfig| {
        let err = ImageFlowConfig::multiscale(&ms).unwrap_err().to_string();
        assert!(err.contains("a model may have at most"), "{err}");
    };
    let small = MultiscaleConfig {
        image: ImageShape::new(2, 4, 4),
        potential: conv(),
        ..MultiscaleConfig::mnist()
    };
    refuse(MultiscaleConfig {
        nblocks: vec![1, 1_000_000_000_000_000],
        ..small.clone()
    });
    refuse(MultiscaleConfig {
        nblocks: vec![usize::MAX, 1],
        ..small.clone()
    });
    let deep = PotentialConfig::ConvIcnn(icnn::ConvIcnnConfig {
        width: 4,
        depth: 100_000_000,
        ..Default::default()
    });
    refuse(MultiscaleConfig {
        potential: deep,
        nblocks: vec![1],
        ..small
    });
}

#[test]
fn flow_logdet_matches_finite_differences_with_and_without_factor_out() {
    for (pot, fo) in [(conv(), true), (conv(), false), (dense(), true)] {
        let flow =
            ImageFlow::new(small_config(pot.clone(), fo, FloatType::F64), &Device::Cpu).unwrap();
        let x = images(6, 32, 1);
        assert!(
            flow.transform(&x).is_err(),
            "uninitialised flow must refuse"
        );
        flow.initialize(&x).unwrap();
        let (_, ld) = flow.transform(&x).unwrap();
        let ld = host(&ld);
        for r in 0..2 {
            let xr = host(&x.narrow(0, r, 1).unwrap());
            let fd = log_abs_det(&fd_jacobian(&|v| flow.transform(v).unwrap().0, &xr));
            // See image_layers.rs: FD log |det| is good to ≈1e-8 relative.
            assert!(
                (fd - ld[r]).abs() < 1e-6 * fd.abs(),
                "{pot:?} fo={fo}: {fd} vs {}",
                ld[r]
            );
        }
        // log p = log N(z) + log-det.
        let (z, _) = flow.transform(&x).unwrap();
        let lp = host(&flow.log_prob_exact(&x).unwrap());
        let zv = host(&z);
        for r in 0..6 {
            let q: f64 = zv[r * 32..(r + 1) * 32].iter().map(|v| v * v).sum();
            assert!((lp[r] - (-0.5 * q - 16.0 * LN_2PI + ld[r])).abs() < 1e-9);
        }
    }
}

#[test]
fn slq_agrees_with_the_exact_logdet_within_its_standard_error() {
    let flow = ImageFlow::new(small_config(conv(), true, FloatType::F64), &Device::Cpu).unwrap();
    let x = images(4, 32, 2);
    flow.initialize(&x).unwrap();
    let exact = host(&flow.log_prob_exact(&x).unwrap());
    let mut rng = StdRng::seed_from_u64(5);
    // steps = D: the Krylov space is complete, so each probe's quadrature is exactly
    // vᵀ log(H) v and the estimate is unbiased; 5 standard errors is a 6e-7 false-alarm rate.
    let slq = flow
        .log_prob_slq(
            &x,
            &SlqConfig {
                probes: 64,
                steps: 32,
            },
            &mut rng,
        )
        .unwrap();
    let est = host(&slq.log_prob);
    for r in 0..4 {
        let se = slq.std_err[r];
        assert!(se.is_finite() && se > 0.0);
        assert!(
            (est[r] - exact[r]).abs() < 5.0 * se + 1e-9,
            "{} vs {} (se {se})",
            est[r],
            exact[r]
        );
    }
    // One probe, ten steps (the reference's evaluation): no standard error per image.
    let one = flow
        .log_prob_slq(&x, &SlqConfig::default(), &mut rng)
        .unwrap();
    assert!(one.std_err.iter().all(|s| s.is_nan()));
    let (m, se) = one.mean_and_std_err().unwrap();
    assert!(m.is_finite() && se.is_finite());
}

#[test]
fn inverse_of_forward_recovers_images_f64_and_f32() {
    // The flow's default solver parameters (per-block residual 1e-11 in f64, 2e-6 in f32;
    // the blocks are 1-strongly monotone, and the ActNorm/logit inverses scale errors by
    // O(1) here), against the acceptance bounds 1e-8 (f64) and 1e-4 (f32).
    for (float, tol) in [(FloatType::F64, 1e-8), (FloatType::F32, 1e-4)] {
        for fo in [true, false] {
            let flow = ImageFlow::new(small_config(conv(), fo, float), &Device::Cpu).unwrap();
            let x = images(5, 32, 3);
            flow.initialize(&x).unwrap();
            let (z, _) = flow.transform(&x).unwrap();
            // `transform` runs the blocks' host kernels, `forward` the composed recursions:
            // the same map up to rounding (summation order).
            let agree = max_abs_diff(&flow.forward(&x).unwrap(), &z);
            assert!(
                agree < tol * 1e-2,
                "{float:?} fo={fo}: forward vs transform {agree}"
            );
            let inv = flow.inverse(&z).unwrap();
            assert!(inv.report.all_converged(), "{float:?} fo={fo}");
            assert_eq!(inv.report.blocks.len(), 3);
            assert_eq!(inv.report.converged.len(), 5);
            let err = max_abs_diff(&inv.x, &x);
            eprintln!(
                "{float:?} factor_out={fo}: max |x − f⁻¹(f(x))| = {err:.3e}, max residual {:.3e}, max iterations {}",
                inv.report.max_residual(),
                inv.report.max_iterations()
            );
            assert!(err < tol, "{float:?} fo={fo}: max error {err}");
        }
    }
}

#[test]
fn sampling_applies_the_temperature_to_the_prior_draw() {
    let flow = ImageFlow::new(small_config(conv(), true, FloatType::F64), &Device::Cpu).unwrap();
    flow.initialize(&images(6, 32, 4)).unwrap();
    let s = flow.sample(3, 0.7, &mut StdRng::seed_from_u64(9)).unwrap();
    assert!(s.report.all_converged());
    assert_eq!(flow.to_images(&s.x).unwrap().dims(), &[3, 2, 4, 4]);
    let eps = GaussianPrior::standard()
        .sample(
            3,
            32,
            DType::F64,
            &Device::Cpu,
            &mut StdRng::seed_from_u64(9),
        )
        .unwrap();
    let (z, _) = flow.transform(&s.x).unwrap();
    // Forward of the sample returns T·ε (to the inversion tolerance 1e-11 per block).
    assert!(max_abs_diff(&z, &(eps * 0.7).unwrap()) < 1e-7);
}

#[test]
fn save_and_load_roundtrip_preserves_the_density() {
    let flow = ImageFlow::new(small_config(conv(), true, FloatType::F64), &Device::Cpu).unwrap();
    let x = images(4, 32, 5);
    flow.initialize(&x).unwrap();
    let dir = std::env::temp_dir().join(format!("cpflow-image-{}", std::process::id()));
    let path = dir.join("flow.safetensors");
    flow.save(&path).unwrap();
    let back = ImageFlow::load(&path, &Device::Cpu).unwrap();
    assert_eq!(back.config(), flow.config());
    assert!(back.is_initialized().unwrap());
    let (a, b) = (
        flow.log_prob_exact(&x).unwrap(),
        back.log_prob_exact(&x).unwrap(),
    );
    assert_eq!(host(&a), host(&b));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `try_clone` copies the weights instead of sharing them: equal densities, then a change of
/// the original's weights moves its densities and not the copy's.
#[test]
fn a_cloned_image_flow_keeps_its_own_weights() {
    let flow = ImageFlow::new(small_config(conv(), true, FloatType::F64), &Device::Cpu).unwrap();
    let x = images(3, 32, 6);
    flow.initialize(&x).unwrap();
    let copy = flow.try_clone().unwrap();
    assert!(copy.is_initialized().unwrap());
    let before = host(&flow.log_prob_exact(&x).unwrap());
    assert_eq!(host(&copy.log_prob_exact(&x).unwrap()), before);
    let moved: std::collections::HashMap<_, _> = flow
        .weight_tensors()
        .into_iter()
        .map(|(name, t)| (name, t.affine(0.9, 0.02).unwrap()))
        .collect();
    flow.set_weights(&moved, "").unwrap();
    assert_ne!(host(&flow.log_prob_exact(&x).unwrap()), before);
    assert_eq!(host(&copy.log_prob_exact(&x).unwrap()), before);
}

/// A flow without blocks: `[Logit(α), ActNorm]` on 1×4×4, f64.
fn closed_form_flow(x: &Tensor, alpha: f64) -> ImageFlow {
    let cfg = ImageFlowConfig {
        image: ImageShape::new(1, 4, 4),
        layers: vec![ImageLayerConfig::Logit { alpha }, ImageLayerConfig::ActNorm],
        prior: GaussianPrior::standard(),
        float: FloatType::F64,
        init_seed: 0,
    };
    let flow = ImageFlow::new(cfg, &Device::Cpu).unwrap();
    flow.initialize(x).unwrap();
    flow
}

#[test]
fn bits_per_dim_matches_closed_forms() {
    // Uniform density on [0, 1)^D: 8 bits per dimension.
    assert!((bits_per_dim(0.0, 784) - 8.0).abs() < 1e-12);
    // Logit + ActNorm: y = logit(α + (1 − 2α)x) is modelled as N(m, σ²) per pixel with
    // m = mean(y), σ = 1/(1/(std(y) + 1e-6) + 0.001) (the ActNorm's init); the closed form
    // log p(x) = Σ_j [log N(y_j; m, σ²) + log(1 − 2α) − log s_j(1 − s_j)] is computed here
    // on the host, independently of the flow.
    let alpha = 1e-6;
    let d = 16;
    let x = images(8, d, 6);
    let flow = closed_form_flow(&x, alpha);
    let xv = host(&x);
    let s: Vec<f64> = xv.iter().map(|v| alpha + (1.0 - 2.0 * alpha) * v).collect();
    let y: Vec<f64> = s.iter().map(|s| (s / (1.0 - s)).ln()).collect();
    let n = y.len() as f64;
    let m = y.iter().sum::<f64>() / n;
    let sd = (y.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt();
    let sigma = 1.0 / (1.0 / (sd + 1e-6) + 1e-3);
    let lp = host(&flow.log_prob_exact(&x).unwrap());
    for r in 0..8 {
        let mut expect = 0.0;
        for j in r * d..(r + 1) * d {
            let u = (y[j] - m) / sigma;
            expect += -0.5 * u * u - 0.5 * LN_2PI - sigma.ln() + (1.0 - 2.0 * alpha).ln()
                - (s[j] * (1.0 - s[j])).ln();
        }
        assert!(
            (lp[r] - expect).abs() < 1e-9 * expect.abs(),
            "{} vs {expect}",
            lp[r]
        );
        let bpd = bits_per_dim(lp[r], d);
        let expect_bpd = (-expect / d as f64 + 256f64.ln()) / std::f64::consts::LN_2;
        assert!((bpd - expect_bpd).abs() < 1e-9);
    }
    // The training loss of a flow without blocks is exactly the mean bpd.
    let loss = flow
        .surrogate_loss(
            &x,
            &SurrogateParams::default(),
            &mut StdRng::seed_from_u64(0),
        )
        .unwrap()
        .loss
        .to_scalar::<f64>()
        .unwrap();
    let mean_bpd = lp.iter().map(|l| bits_per_dim(*l, d)).sum::<f64>() / 8.0;
    assert!((loss - mean_bpd).abs() < 1e-10);
}

#[cfg(feature = "datasets")]
#[test]
fn bits_per_dim_agrees_with_the_dataset_helpers() {
    // `datasets::dequantize_logit` draws the same uniform noise in the same order as
    // `image::dequantize`, so a logit-only flow and the dataset path see the same x.
    let alpha = cpflow::image::MNIST_LOGIT_ALPHA;
    let d = 16;
    let k: Vec<u8> = (0..3 * d).map(|i| ((i * 53 + 7) % 256) as u8).collect();
    let m = cpflow::datasets::Matrix::new(3, d, k.clone()).unwrap();
    let ds = cpflow::datasets::dequantize_logit(&m, alpha, &mut StdRng::seed_from_u64(8)).unwrap();
    let kt = Tensor::from_vec(k, (3, d), &Device::Cpu).unwrap();
    let x = dequantize(&kt, DType::F64, &mut StdRng::seed_from_u64(8)).unwrap();
    let cfg = ImageFlowConfig {
        image: ImageShape::new(1, 4, 4),
        layers: vec![ImageLayerConfig::Logit { alpha }],
        prior: GaussianPrior::standard(),
        float: FloatType::F64,
        init_seed: 0,
    };
    let flow = ImageFlow::new(cfg, &Device::Cpu).unwrap();
    let lp = host(&flow.log_prob_exact(&x).unwrap());
    for r in 0..3 {
        let y = &ds.data.data()[r * d..(r + 1) * d];
        let log_n: f64 = y
            .iter()
            .map(|v| -0.5 * f64::from(*v).powi(2) - 0.5 * LN_2PI)
            .sum();
        let a = cpflow::datasets::bits_per_dim(log_n, ds.log_jacobian[r], d);
        let b = bits_per_dim(lp[r], d);
        // The dataset path stores y in f32: |Δy| ≤ 1e-6·|y| with |y| ≤ 14, so Δ log N ≤ 1e-4
        // per pixel and Δbpd ≤ 1e-4/ln 2.
        assert!((a - b).abs() < 2e-4, "{a} vs {b}");
    }
}

#[test]
fn surrogate_loss_backpropagates_to_every_trainable_parameter() {
    let flow = ImageFlow::new(small_config(conv(), true, FloatType::F32), &Device::Cpu).unwrap();
    let x = images(4, 32, 7).to_dtype(DType::F32).unwrap();
    flow.initialize(&x).unwrap();
    let out = flow
        .surrogate_loss(
            &x,
            &SurrogateParams::default(),
            &mut StdRng::seed_from_u64(1),
        )
        .unwrap();
    assert!(out.loss.to_scalar::<f32>().unwrap().is_finite());
    assert_eq!(out.cg.iterations.len(), 3 * 4);
    let grads = out.loss.backward().unwrap();
    // Every flow ActNorm and every block's w₀, w₁ and ICNN weights get a gradient (the init
    // flags and the ICNNs' unused ActNorms, kept for the reference's parameter count, don't).
    let mut blocks_with_icnn_grad = std::collections::BTreeSet::new();
    for (name, v) in flow.named_vars() {
        let has = grads.get(v.as_tensor()).is_some();
        if name.contains(".icnn.") {
            if has && name.ends_with("weight") {
                blocks_with_icnn_grad.insert(name.split(".icnn.").next().unwrap().to_string());
            }
        } else if !name.ends_with("initialized") {
            assert!(has, "no gradient for {name}");
        }
    }
    assert_eq!(blocks_with_icnn_grad.len(), 3);
}

/// One image initialises a convolutional flow (statistics over images and pixels, as in the
/// reference); with a dense `fc_end` block the error says that layer needs 2 images (it spoke
/// of rows and asked for `initialize`, which had just been called).
#[test]
fn one_image_initialises_conv_layers_and_fc_end_needs_two() {
    let conv_only =
        ImageFlow::new(small_config(conv(), true, FloatType::F64), &Device::Cpu).unwrap();
    conv_only.initialize(&images(1, 32, 5)).unwrap();
    assert!(conv_only.is_initialized().unwrap());
    let ms = MultiscaleConfig {
        image: ImageShape::new(2, 4, 4),
        nblocks: vec![1],
        logit_alpha: Some(0.05),
        potential: conv(),
        fc_end: Some(dense()),
        float: FloatType::F64,
        init_seed: 3,
        ..MultiscaleConfig::mnist()
    };
    let flow = ImageFlow::new(ImageFlowConfig::multiscale(&ms).unwrap(), &Device::Cpu).unwrap();
    let e = flow.initialize(&images(1, 32, 5)).unwrap_err().to_string();
    assert!(
        e.contains("initialising from 1 image") && e.contains("fc_end"),
        "{e}"
    );
    assert!(!flow.is_initialized().unwrap());
    flow.initialize(&images(2, 32, 5)).unwrap();
    assert!(flow.is_initialized().unwrap());
}
