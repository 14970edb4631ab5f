//! A resume on another number of training images than the run's is refused, naming both.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::Device;

use super::super::run_image_training;
use super::super::{ImageData, ImageRunOptions, ImageSet, load_image_checkpoint};
use super::tests_stats::{config, rewrite_checkpoint_json, run, setup, temp_dir};
use crate::error::CpflowError;

#[test]
fn a_resume_on_another_number_of_training_images_is_refused() {
    let d = temp_dir("train-images");
    assert!(run(&d, 3, false, true).is_err());
    let (flow, data) = setup();
    // 6 training images instead of the run's 8.
    let fewer = ImageSet::new(
        data.train.shape(),
        (0..6 * 16).map(|i| (i * 37 % 256) as u8).collect(),
    )
    .unwrap();
    let other = ImageData::new(fewer, data.val.clone(), data.test.clone()).unwrap();
    let opts = ImageRunOptions {
        out_dir: Some(d.clone()),
        resume: true,
        interrupt: Some(Arc::new(AtomicBool::new(false))),
        ..Default::default()
    };
    let resume = || run_image_training(&flow, &config(3), &other, &Device::Cpu, &opts);
    match resume() {
        Err(CpflowError::InvalidInput(m)) => assert!(
            m.contains("trained on 8 training images") && m.contains("now hold 6"),
            "{m}"
        ),
        other => panic!("expected a refusal: {other:?}"),
    }
    // The checkpoint is as it was.
    let path = d.join("checkpoint.safetensors");
    let ck = load_image_checkpoint(&path, &Device::Cpu).unwrap();
    assert_eq!(
        (ck.meta.state.iteration, ck.meta.state.n_train),
        (1, Some(8))
    );
    // A checkpoint written before the count was kept cannot tell: the resume goes on.
    rewrite_checkpoint_json(&path, |j| {
        j["state"].as_object_mut().unwrap().remove("n_train");
    });
    assert_eq!(resume().unwrap().n_train, 6);
    std::fs::remove_dir_all(d).ok();
}
