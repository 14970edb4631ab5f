//! Measurements of the reference MNIST image flow (`train_img.py` defaults, untrained) on
//! real MNIST images: one training step, SLQ bits/dim with its standard error, the exact
//! log-det of one image against SLQ, and inverse of forward. Ignored by default (minutes on
//! 2 cores); run one with
//!
//! `cargo test -p cpflow --release --test integration -- --ignored --nocapture image_mnist::<name>`.
//! `IMAGE_MNIST_BATCH` sets the batch (default 64).

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use cpflow::datasets::load_mnist;
use cpflow::image::{ImageFlow, ImageFlowConfig, MultiscaleConfig, bits_per_dim, dequantize};
use cpflow::{SlqConfig, SurrogateParams};
use rand::{SeedableRng, rngs::StdRng};

const BPD_PER_NAT: f64 = 1.0 / (784.0 * std::f64::consts::LN_2);

/// The first `n` dequantised training images (f32) and the initialised reference model.
fn setup(n: usize, rng: &mut StdRng) -> (Tensor, ImageFlow) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let m = load_mnist(&root, 10_000).unwrap();
    let dev = Device::Cpu;
    let k = m.train.slice_rows(0, n);
    let k = Tensor::from_vec(k.data().to_vec(), (n, 784), &dev).unwrap();
    let x = dequantize(&k, DType::F32, rng).unwrap();
    let flow = ImageFlow::new(
        ImageFlowConfig::multiscale(&MultiscaleConfig::mnist()).unwrap(),
        &dev,
    )
    .unwrap();
    eprintln!("parameters: {}", flow.num_parameters());
    let t = Instant::now();
    flow.initialize(&x).unwrap();
    eprintln!(
        "initialise on {n} images: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    (x, flow)
}

fn batch() -> usize {
    std::env::var("IMAGE_MNIST_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

#[test]
#[ignore = "measurement on real MNIST; minutes on 2 cores"]
fn mnist_train_step_and_slq_bpd() {
    let mut rng = StdRng::seed_from_u64(0);
    let n = batch();
    let (x, flow) = setup(n, &mut rng);
    let t = Instant::now();
    let out = flow
        .surrogate_loss(&x, &SurrogateParams::default(), &mut rng)
        .unwrap();
    let t_fwd = t.elapsed().as_secs_f64();
    let _grads = out.loss.backward().unwrap();
    eprintln!(
        "train step (batch {n}): surrogate {t_fwd:.2} s + backward {:.2} s; CG iterations mean {:.1}, max {}, converged {}/{}",
        t.elapsed().as_secs_f64() - t_fwd,
        out.cg.mean_iterations(),
        out.cg.iterations.iter().max().unwrap(),
        out.cg.converged,
        out.cg.iterations.len()
    );
    let t = Instant::now();
    let slq = flow
        .log_prob_slq(&x, &SlqConfig::default(), &mut rng)
        .unwrap();
    let (mean, se) = slq.mean_and_std_err().unwrap();
    eprintln!(
        "SLQ (1 probe, 10 steps) on {n} images: {:.2} s; bpd {:.4} ± {:.4} (standard error over images)",
        t.elapsed().as_secs_f64(),
        bits_per_dim(mean, 784),
        se * BPD_PER_NAT
    );
}

#[test]
#[ignore = "measurement on real MNIST; minutes on 2 cores"]
fn mnist_exact_logdet_against_slq_on_one_image() {
    let mut rng = StdRng::seed_from_u64(1);
    let (x, flow) = setup(8, &mut rng);
    let x1 = x.narrow(0, 0, 1).unwrap();
    let t = Instant::now();
    let exact = flow.log_prob_exact(&x1).unwrap().to_vec1::<f32>().unwrap()[0];
    let t_exact = t.elapsed().as_secs_f64();
    let many = flow
        .log_prob_slq(
            &x1,
            &SlqConfig {
                probes: 16,
                steps: 10,
            },
            &mut rng,
        )
        .unwrap();
    let est = many.log_prob.to_vec1::<f32>().unwrap()[0];
    eprintln!(
        "image 0: exact bpd {:.5} ({t_exact:.1} s, 9 dense 784×784 Hessians); SLQ 16 probes {:.5} ± {:.5}",
        bits_per_dim(f64::from(exact), 784),
        bits_per_dim(f64::from(est), 784),
        many.std_err[0] * BPD_PER_NAT
    );
    assert!((exact - est).abs() as f64 <= 5.0 * many.std_err[0] + 1e-3);
}

#[test]
#[ignore = "measurement on real MNIST; minutes on 2 cores"]
fn mnist_inverse_of_forward() {
    let mut rng = StdRng::seed_from_u64(2);
    let (x, flow) = setup(batch(), &mut rng);
    let x8 = x.narrow(0, 0, 8.min(x.dim(0).unwrap())).unwrap();
    let z = flow.forward(&x8).unwrap();
    // `IMAGE_MNIST_INV_TOL` sets the per-block abs = rel tolerance on ‖∇Φ(x) − y‖∞
    // (default: the flow's, 2e-6 in f32).
    let mut params = flow.default_inverse_params();
    if let Some(tol) = std::env::var("IMAGE_MNIST_INV_TOL")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        params.abs_tolerance = Some(tol);
        params.rel_tolerance = Some(tol);
    }
    let tol = params.abs_tolerance;
    let t = Instant::now();
    let inv = flow.inverse_with(&z, &params).unwrap();
    let err = (inv.x - &x8)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    eprintln!(
        "inverse of forward, 8 images, f32, tolerance {tol:?}: {:.1} s; max error {err:.3e}; converged {}/{}; max residual {:.3e}; max Newton iterations {}",
        t.elapsed().as_secs_f64(),
        inv.report.converged.iter().filter(|c| **c).count(),
        inv.report.converged.len(),
        inv.report.max_residual(),
        inv.report.max_iterations()
    );
    assert!(inv.report.all_converged());
    assert!(err < 1e-4);
}
