//! `ImageFlow::sample_and_log_prob(_with)`: the returned log-density is `log_prob_exact` of
//! the returned images bit for bit (f64 and f32, temperatures 1 and ½, unconverged
//! inversions), at temperature 0 the closed-form mode density, the samples and the RNG
//! stream are those of `sample_with`, and the errors and empty batches are `sample_with`'s.

use crate::image_common::{conv, dense, host, small_config};
use candle_core::{DType, Device, Tensor};
use cpflow::image::{ImageFlow, ImageFlowConfig, MultiscaleConfig, dequantize};
use cpflow::{CpflowError, FloatType, InverseParams, PotentialConfig};
use icnn::ImageShape;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The two-scale flow of `image_flow`'s tests (2×4×4, D = 32), initialised.
fn small_flow(potential: PotentialConfig, factor_out: bool, float: FloatType) -> ImageFlow {
    let flow = ImageFlow::new(small_config(potential, factor_out, float), &Device::Cpu).unwrap();
    // Dequantised images of fixed grey levels (seeded), in the flow's dtype.
    let k: Vec<u32> = (0..6 * 32).map(|i| ((i * 37 + 11) % 256) as u32).collect();
    let k = Tensor::from_vec(k, (6, 32), &Device::Cpu).unwrap();
    let x = dequantize(&k, float.dtype(), &mut StdRng::seed_from_u64(4)).unwrap();
    flow.initialize(&x).unwrap();
    flow
}

fn seed(s: u64) -> StdRng {
    StdRng::seed_from_u64(s)
}

#[test]
fn image_sample_log_prob_matches_log_prob_exact_f64() {
    for (potential, fo) in [(conv(), true), (dense(), false)] {
        let flow = small_flow(potential, fo, FloatType::F64);
        let tight = InverseParams {
            abs_tolerance: Some(1e-13),
            rel_tolerance: Some(1e-13),
            ..flow.default_inverse_params()
        };
        for (params, what) in [(flow.default_inverse_params(), "default"), (tight, "1e-13")] {
            for temperature in [1.0, 0.5] {
                let (s, logp) = flow
                    .sample_and_log_prob_with(5, temperature, &params, &mut seed(7))
                    .unwrap();
                assert!(s.report.all_converged());
                assert_eq!(s.report.blocks.len(), 3);
                assert_eq!((logp.dims(), logp.dtype()), (&[5][..], DType::F64));
                let exact = flow.log_prob_exact(&s.x).unwrap();
                assert_eq!(host(&logp), host(&exact), "fo={fo} T={temperature} {what}");
            }
        }
    }
}

#[test]
fn image_sample_log_prob_draws_the_samples_of_sample_with() {
    let flow = small_flow(conv(), true, FloatType::F64);
    let params = flow.default_inverse_params();
    for temperature in [1.0, 0.7] {
        let (mut r1, mut r2) = (seed(11), seed(11));
        let (s, _) = flow
            .sample_and_log_prob_with(4, temperature, &params, &mut r1)
            .unwrap();
        let plain = flow.sample_with(4, temperature, &params, &mut r2).unwrap();
        // Bit for bit, with the same per-sample report, and the stream left in one state.
        assert_eq!(host(&s.x), host(&plain.x));
        assert_eq!(s.report.converged, plain.report.converged);
        assert_eq!(s.report.max_residual(), plain.report.max_residual());
        assert_eq!(s.report.max_iterations(), plain.report.max_iterations());
        assert_eq!(r1.random::<u64>(), r2.random::<u64>());
    }
    // The default-parameter entry point is `sample`'s.
    let (s, _) = flow.sample_and_log_prob(3, 0.5, &mut seed(12)).unwrap();
    assert_eq!(
        host(&s.x),
        host(&flow.sample(3, 0.5, &mut seed(12)).unwrap().x)
    );
}

#[test]
fn image_sample_log_prob_f32() {
    let flow = small_flow(conv(), true, FloatType::F32);
    let (s, logp) = flow.sample_and_log_prob(5, 1.0, &mut seed(7)).unwrap();
    assert!(s.report.all_converged());
    assert_eq!((logp.dims(), logp.dtype()), (&[5][..], DType::F32));
    assert_eq!(s.x.dtype(), DType::F32);
    assert_eq!(host(&logp), host(&flow.log_prob_exact(&s.x).unwrap()));
}

#[test]
fn image_sample_log_prob_at_temperature_zero_is_the_mode_density() {
    // T = 0: every latent is 0, so every sample is f⁻¹(0) and has one density, the prior's
    // maximum −(D/2)·ln 2π plus the log-dets at f⁻¹(0).
    let flow = small_flow(dense(), false, FloatType::F64);
    let (s, logp) = flow.sample_and_log_prob(3, 0.0, &mut seed(3)).unwrap();
    assert!(s.report.all_converged());
    let v = host(&logp);
    assert!(v.iter().all(|l| *l == v[0]), "{v:?}");
    let x = host(&s.x);
    assert!(x[..32] == x[32..64] && x[..32] == x[64..]);
    assert_eq!(v, host(&flow.log_prob_exact(&s.x).unwrap()));
    // The density is the model's (temperature 1) at the sample, not the tempered one's.
    let (z, ld) = flow.transform(&s.x).unwrap();
    assert!(host(&z).iter().all(|v| v.abs() < 1e-8));
    let mode = -16.0 * (2.0 * std::f64::consts::PI).ln() + host(&ld)[0];
    assert!((v[0] - mode).abs() < 1e-8, "{} vs {mode}", v[0]);
}

#[test]
fn image_sample_log_prob_of_unconverged_samples_is_that_of_the_returned_images() {
    let flow = small_flow(conv(), true, FloatType::F64);
    // Four Newton steps per block at temperature 3 reach the tolerance 1e-11 for some of
    // these 12 samples only (five reach it for all).
    let params = InverseParams {
        max_iterations: 4,
        ..flow.default_inverse_params()
    };
    let (s, logp) = flow
        .sample_and_log_prob_with(12, 3.0, &params, &mut seed(5))
        .unwrap();
    let failed: Vec<usize> = (0..12).filter(|&i| !s.report.converged[i]).collect();
    let ok: Vec<usize> = (0..12).filter(|&i| s.report.converged[i]).collect();
    assert!(
        !failed.is_empty() && !ok.is_empty(),
        "want a mixed report: {:?}",
        s.report.converged
    );
    assert_eq!(s.report.num_failed(), failed.len());
    // Every row, converged or not, gets the density at the image returned.
    assert_eq!(host(&logp), host(&flow.log_prob_exact(&s.x).unwrap()));
    // The failed rows' densities do not depend on the other rows of the batch.
    let lp = host(&logp);
    let idx: Vec<u32> = failed.iter().map(|&i| i as u32).collect();
    let idx = Tensor::from_vec(idx, failed.len(), &Device::Cpu).unwrap();
    let redo = host(
        &flow
            .log_prob_exact(&s.x.index_select(&idx, 0).unwrap())
            .unwrap(),
    );
    for (k, &i) in failed.iter().enumerate() {
        assert_eq!(lp[i], redo[k], "row {i}");
    }
}

#[test]
fn image_sample_log_prob_errors_and_empty_batches_follow_sample_with() {
    let flow = small_flow(conv(), true, FloatType::F64);
    // 0 samples: a (0, D) sample, a (0,) log-density, an empty report; nothing drawn.
    let mut rng = seed(1);
    let (s, logp) = flow.sample_and_log_prob(0, 1.0, &mut rng).unwrap();
    let plain = flow.sample(0, 1.0, &mut seed(1)).unwrap();
    assert_eq!((s.x.dims(), plain.x.dims()), (&[0, 32][..], &[0, 32][..]));
    assert_eq!((logp.dims(), logp.dtype()), (&[0][..], DType::F64));
    assert!(s.report.converged.is_empty() && s.report.blocks.is_empty());
    assert_eq!(rng.random::<u64>(), seed(1).random::<u64>());
    // Temperatures that are not finite and non-negative, as `sample_with`.
    for t in [-0.5, f64::NAN, f64::INFINITY] {
        let e = flow.sample_and_log_prob(2, t, &mut seed(1)).unwrap_err();
        let plain = flow.sample(2, t, &mut seed(1)).unwrap_err();
        assert!(matches!(e, CpflowError::InvalidInput(_)), "{e}");
        assert_eq!(e.to_string(), plain.to_string());
    }
    // More values than memory can address: refused before anything is drawn.
    let e = flow
        .sample_and_log_prob(usize::MAX, 1.0, &mut seed(1))
        .unwrap_err();
    let plain = flow.sample(usize::MAX, 1.0, &mut seed(1)).unwrap_err();
    assert!(matches!(e, CpflowError::InvalidInput(_)), "{e}");
    assert_eq!(e.to_string(), plain.to_string());
    // An uninitialised flow, as `sample`.
    let ms = MultiscaleConfig {
        image: ImageShape::new(1, 4, 4),
        nblocks: vec![1],
        potential: conv(),
        float: FloatType::F64,
        ..MultiscaleConfig::mnist()
    };
    let fresh = ImageFlow::new(ImageFlowConfig::multiscale(&ms).unwrap(), &Device::Cpu).unwrap();
    assert!(matches!(
        fresh.sample_and_log_prob(2, 1.0, &mut seed(1)),
        Err(CpflowError::NotInitialized)
    ));
    assert!(matches!(
        fresh.sample(2, 1.0, &mut seed(1)),
        Err(CpflowError::NotInitialized)
    ));
}
