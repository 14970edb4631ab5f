//! A logit image flow scores its own samples at any temperature, in f32 too: the logit's
//! inverse saturates short of the ends of its range. Before, a hot f32 sample (`σ(y)` rounded
//! to 1) came back as `(1 − α)/(1 − 2α)` rounded up, `1.00000107` for `α = 10⁻⁶`, above the
//! f64 bound of the range, and `sample_and_log_prob` (`cpflow sample --log-prob`) failed
//! with "a logit flow models dequantised images in [0, 1] …" on an input the user never gave.

use candle_core::{Device, Tensor};
use cpflow::image::{ImageFlow, ImageModelConfig, LogitTransform, MNIST_LOGIT_ALPHA, dequantize};
use cpflow::{CpflowError, FloatType};
use icnn::ImageShape;
use rand::{SeedableRng, rngs::StdRng};

use crate::device_common::host;

/// A one-block flow on 4×4 grey images behind the MNIST logit (`α = 10⁻⁶`), initialised on
/// dequantised images in its own dtype.
fn mnist_logit_flow(float: FloatType) -> ImageFlow {
    let model = ImageModelConfig {
        width: 4,
        depth: 2,
        nblocks: vec![1],
        float,
        ..Default::default()
    };
    let shape = ImageShape::new(1, 4, 4);
    let cfg = model.flow_config(shape, MNIST_LOGIT_ALPHA).unwrap();
    let flow = ImageFlow::new(cfg, &Device::Cpu).unwrap();
    let k: Vec<u32> = (0..4 * 16).map(|i| ((i * 37 + 11) % 256) as u32).collect();
    let k = Tensor::from_vec(k, (4, 16), &Device::Cpu).unwrap();
    let x = dequantize(&k, float.dtype(), &mut StdRng::seed_from_u64(4)).unwrap();
    flow.initialize(&x).unwrap();
    flow
}

#[test]
fn hot_samples_of_a_logit_flow_are_scored_in_f32_and_f64() {
    let logit = LogitTransform::new(MNIST_LOGIT_ALPHA).unwrap();
    let (lo, hi) = logit.range();
    for float in [FloatType::F32, FloatType::F64] {
        let flow = mnist_logit_flow(float);
        let bound = LogitTransform::saturation(float.dtype());
        for temperature in [30.0, 3.0] {
            let what = format!("{float:?} T={temperature}");
            let (s, logp) = flow
                .sample_and_log_prob(8, temperature, &mut StdRng::seed_from_u64(1))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            // Every density finite, and the one of the returned images.
            let lp = host(&logp);
            assert!(lp.iter().all(|l| l.is_finite()), "{what}: {lp:?}");
            assert_eq!(lp, host(&flow.log_prob_exact(&s.x).unwrap()), "{what}");
            // Inside the range, strictly, and at the bound somewhere at T = 30: the logit of
            // the samples comes back to ±bound (within the forward's rounding, which moves
            // 1 − s by a step or two of its 8: |Δy| ≤ ln(8/5) < 0.5), never beyond it.
            let x = host(&s.x);
            assert!(x.iter().all(|v| lo < *v && *v < hi), "{what}: {x:?}");
            let y = host(&logit.forward(&s.x).unwrap().0);
            let top = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(top < bound + 0.5, "{what}: max |y| {top} (bound {bound})");
            if temperature == 30.0 {
                assert!(
                    top > bound - 0.5,
                    "{what}: no pixel saturated (max |y| {top})"
                );
                assert!(x.iter().any(|v| *v > 1.0), "{what}: {x:?}");
            }
        }
    }
}

#[test]
fn images_outside_the_logit_range_are_still_refused_in_f32() {
    let flow = mnist_logit_flow(FloatType::F32);
    // 1.1, and the point the unsaturated f32 inverse returned (1.00000107, just above the
    // range's (1 − α)/(1 − 2α) = 1.000001000002): both refused, naming the range.
    for v in [1.1f32, 1.000_001_1, -0.1] {
        let x = Tensor::full(v, (1, 16), &Device::Cpu).unwrap();
        let err = flow.log_prob_exact(&x).unwrap_err();
        assert!(
            matches!(&err, CpflowError::InvalidInput(m)
                if m.contains("dequantised images in [0, 1]") && m.contains("logit's range")),
            "{v}: {err:?}"
        );
    }
    // [0, 1] itself, ends included, is scored finitely.
    let x = Tensor::from_vec(
        (0..16).map(|i| i as f32 / 15.0).collect::<Vec<_>>(),
        (1, 16),
        &Device::Cpu,
    )
    .unwrap();
    let lp = host(&flow.log_prob_exact(&x).unwrap());
    assert!(lp[0].is_finite(), "{lp:?}");
}
