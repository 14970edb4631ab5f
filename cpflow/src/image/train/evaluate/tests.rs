//! The test score's stop flag and SLQ bias counts.

use super::*;
use crate::image::ImageModelConfig;
use crate::image::train::ImageTestConfig;
use candle_core::Device;
use icnn::ImageShape;
use rand::SeedableRng;
use std::sync::atomic::AtomicBool;

/// A one-block f64 flow on 1×4×4 images, initialised on 2 of the 4 fixed images it returns.
fn tiny_flow_and_images() -> (ImageFlow, ImageSet) {
    let shape = ImageShape::new(1, 4, 4);
    let model = ImageModelConfig {
        width: 4,
        depth: 2,
        nblocks: vec![1],
        float: crate::FloatType::F64,
        ..Default::default()
    };
    let flow = ImageFlow::new(model.flow_config(shape, 0.05).unwrap(), &Device::Cpu).unwrap();
    let set = ImageSet::new(shape, (0..64).map(|i| (i * 37 % 256) as u8).collect()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let x = set
        .dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)
        .unwrap();
    flow.initialize(&x).unwrap();
    (flow, set)
}

/// An interrupt stops the test score at its next chunk, in either pass: set from the
/// start, nothing is scored (`None`); unset, the result is `score_test_set`'s.
#[test]
fn a_set_stop_flag_stops_the_score_before_its_next_chunk() {
    let (flow, set) = tiny_flow_and_images();
    let cfg = ImageTestConfig {
        images: Some(4),
        exact_images: 2,
        ..Default::default()
    };
    let stop = AtomicBool::new(true);
    assert!(
        super::super::eval_progress::score_test_set_until(&flow, &set, &cfg, 1, 0, Some(&stop))
            .unwrap()
            .is_none()
    );
    let go = AtomicBool::new(false);
    let until =
        super::super::eval_progress::score_test_set_until(&flow, &set, &cfg, 1, 0, Some(&go))
            .unwrap()
            .unwrap();
    let plain = score_test_set(&flow, &set, &cfg, 1, 0).unwrap();
    assert_eq!(until.slq, plain.slq);
    assert_eq!(until.exact.map(|e| e.exact), plain.exact.map(|e| e.exact));
}

/// The SLQ bias counts of the test score's SLQ pass reach its report: the scorer puts the
/// per-image pass's totals (zero for this well-conditioned f64 flow: no image flow small
/// enough for a unit test was found whose f32 SLQ floors a Ritz value) into the report with
/// `with_slq_bias`, which writes each non-zero count under the flows' `eval` name and reads
/// back the same counts; a report without them (zero counts, or written before they were
/// counted) reads back with none.
#[test]
fn slq_bias_counts_reach_the_test_report() {
    let (flow, set) = tiny_flow_and_images();
    let cfg = ImageTestConfig {
        images: Some(4),
        exact_images: 0,
        ..Default::default()
    };
    let report = score_test_set(&flow, &set, &cfg, 2, 0).unwrap();
    let per_image = slq_bpd_per_image(&flow, &set, 4, &cfg.slq, 2, 0).unwrap();
    assert_eq!(report.slq_bias_counts(), per_image.slq_bias);
    // Zero counts are not written; the report reads back with none.
    let json = serde_json::to_string(&report).unwrap();
    assert!(
        !json.contains("slq_biased") && !json.contains("floored"),
        "{json}"
    );
    let back: ImageTestReport = serde_json::from_str(&json).unwrap();
    assert!(back.slq_bias_counts().is_zero());
    // Non-zero counts: written under their names, read back the same.
    let counts = SlqBiasCounts {
        samples: 2,
        floored_ritz_values: 5,
        premature_breakdowns: 0,
    };
    let biased = report.clone().with_slq_bias(counts);
    assert_eq!(
        (biased.slq_biased_points, biased.slq_floored_ritz_values),
        (Some(2), Some(5))
    );
    assert_eq!(biased.slq_premature_breakdowns, None);
    let json = serde_json::to_string(&biased).unwrap();
    assert!(
        json.contains("\"slq_biased_points\":2") && json.contains("\"slq_floored_ritz_values\":5"),
        "{json}"
    );
    assert!(!json.contains("premature"), "{json}");
    let back: ImageTestReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.slq_bias_counts(), counts);
    assert_eq!(back, biased);
}
