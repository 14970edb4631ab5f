//! [`super::check_resumable`]: a consistent state passes; each number edited out of range,
//! or out of line with the others, is refused naming the file and the field.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};

use super::super::{BpdEstimate, ImageTrainState, ValPoint};
use super::{IMAGE_TRAIN_FORMAT_VERSION, ImageTrainCheckpointMeta, check_resumable};
use crate::adam::{AdamParams, AdamState};
use crate::icnn::ImageShape;
use crate::image::ImageModelConfig;
use crate::image::train::ImageTrainConfig;
use crate::rng::FlowRng;
use crate::train::TrainStepStats;

/// The state of 6 steps of batches of 4 on 10 images (two epochs of 3 batches: the run is at
/// the start of its third), validated at 3 and 6, with its Adam state and moments.
fn consistent() -> (ImageTrainCheckpointMeta, HashMap<String, Tensor>) {
    let model = ImageModelConfig {
        width: 4,
        depth: 2,
        nblocks: vec![1],
        ..Default::default()
    };
    let flow = model
        .flow_config(ImageShape::new(1, 4, 4), 0.05)
        .expect("config");
    let point = |iteration, train_time_s| ValPoint {
        iteration,
        train_time_s,
        val: BpdEstimate {
            images: 2,
            bpd: 3.5,
            std_err: 0.1,
        },
    };
    let state = ImageTrainState {
        iteration: 6,
        epoch: 2,
        epoch_batch: 0,
        samples_seen: 20,
        train_time_s: 1.5,
        val_curve: vec![point(3, 0.75), point(6, 1.5)],
        step_stats: TrainStepStats {
            steps: 6,
            last_loss: Some(2.5),
            cg_mean_sum: 30.0,
            cg_steps: 6,
            cg_systems: 12,
            cg_converged: 11,
            cg_unconverged_steps: 1,
            cg_max: 9,
        },
        n_train: Some(10),
    };
    let meta = ImageTrainCheckpointMeta {
        format_version: IMAGE_TRAIN_FORMAT_VERSION,
        flow,
        train: ImageTrainConfig {
            max_iterations: Some(6),
            batch_size: 4,
            ..Default::default()
        },
        state,
        adam: AdamState {
            params: AdamParams::default(),
            steps: BTreeMap::from([("w".to_string(), 6), ("b".to_string(), 5)]),
        },
        rng: FlowRng::seed_from_u64(3).state(),
        ema: false,
    };
    let t = Tensor::zeros(2, candle_core::DType::F64, &Device::Cpu).expect("tensor");
    let tensors = ["w", "b"]
        .into_iter()
        .flat_map(|n| [format!("adam.m.{n}"), format!("adam.v.{n}")])
        .map(|k| (k, t.clone()))
        .collect();
    (meta, tensors)
}

#[test]
fn a_consistent_state_passes() {
    let (meta, tensors) = consistent();
    check_resumable(Path::new("ck.safetensors"), &meta, &tensors).expect("consistent");
    // In the middle of an epoch, and an older checkpoint without the number of images.
    let mut mid = meta.clone();
    (mid.state.epoch_batch, mid.state.samples_seen) = (2, 28);
    check_resumable(Path::new("ck.safetensors"), &mid, &tensors).expect("mid-epoch");
    mid.state.n_train = None;
    check_resumable(Path::new("ck.safetensors"), &mid, &tensors).expect("no n_train");
}

/// Each edit is refused, naming the file and the field.
#[test]
fn each_edited_number_is_refused_naming_the_file_and_the_field() {
    type Edit = Box<dyn Fn(&mut ImageTrainCheckpointMeta)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("batch sizes", Box::new(|m| m.train.batch_size = 0)),
        (
            "adam.params.beta1",
            Box::new(|m| m.adam.params.beta1 = -1.0),
        ),
        ("adam.params.eps", Box::new(|m| m.adam.params.eps = 0.0)),
        (
            "weight_decay",
            Box::new(|m| m.adam.params.weight_decay = -1e300),
        ),
        (
            "adam.steps",
            Box::new(|m| _ = m.adam.steps.insert("w".into(), 7)),
        ),
        (
            "adam.steps",
            Box::new(|m| _ = m.adam.steps.insert("w".into(), 0)),
        ),
        (
            "adam.steps",
            Box::new(|m| _ = m.adam.steps.insert("x".into(), 1)),
        ),
        ("state.epoch_batch", Box::new(|m| m.state.epoch_batch = 3)),
        (
            "state.epoch_batch",
            Box::new(|m| m.state.epoch_batch = 1_000_000),
        ),
        ("state.epoch", Box::new(|m| m.state.epoch = 13)),
        ("state.samples_seen", Box::new(|m| m.state.samples_seen = 5)),
        (
            "state.train_time_s",
            Box::new(|m| m.state.train_time_s = -1.0),
        ),
        (
            "state.train_time_s",
            Box::new(|m| m.state.train_time_s = f64::NAN),
        ),
        (
            "state.val_curve[1]",
            Box::new(|m| m.state.val_curve[1].iteration = 7),
        ),
        (
            "state.val_curve[1]",
            Box::new(|m| m.state.val_curve[1].iteration = 2),
        ),
        (
            "state.val_curve[0].train_time_s",
            Box::new(|m| m.state.val_curve[0].train_time_s = 1e300),
        ),
        (
            "state.val_curve has 8 points",
            Box::new(|m| {
                let p = m.state.val_curve[0].clone();
                m.state.val_curve = vec![p; 8];
            }),
        ),
        (
            "state.step_stats.steps",
            Box::new(|m| m.state.step_stats.steps = 7),
        ),
        (
            "state.step_stats.cg_converged",
            Box::new(|m| m.state.step_stats.cg_converged = 13),
        ),
        (
            "state.step_stats.last_loss",
            Box::new(|m| m.state.step_stats.last_loss = Some(f64::INFINITY)),
        ),
        (
            "state.step_stats.cg_mean_sum",
            Box::new(|m| m.state.step_stats.cg_mean_sum = -1e300),
        ),
        ("rng", Box::new(|m| m.rng.seed_hex = "abc".into())),
        ("rng", Box::new(|m| m.rng.word_pos = "-1".into())),
    ];
    let (meta, tensors) = consistent();
    let path = Path::new("edited.safetensors");
    for (field, edit) in cases {
        let mut m = meta.clone();
        edit(&mut m);
        let msg = match check_resumable(path, &m, &tensors) {
            Ok(()) => panic!("{field}: the edited state passed"),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.contains("edited.safetensors") && msg.contains(field),
            "{field}: {msg}"
        );
    }
}
