//! [`super::check_resumable`]: a consistent state passes; each number edited out of range,
//! or out of line with the others, is refused naming the file and the field.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};

use super::super::adamax::{AdamaxParams, AdamaxState};
use super::super::config::VaeConfig;
use super::super::{PosteriorKind, VaeDatasetName};
use super::{EpochSums, PartialEpoch, VaeCheckpointMeta, VaeTrainState, check_resumable};
use crate::rng::FlowRng;
use crate::train::TrainStepStats;

/// The configured learning rate of [`consistent`]'s run.
const LR: f64 = 5e-4;

/// 3 epochs of 4 steps done and 2 steps of the fourth, paused; the best validation at
/// epoch 2, one bad epoch since.
fn consistent() -> (VaeCheckpointMeta, HashMap<String, Tensor>) {
    let state = VaeTrainState {
        epoch: 3,
        steps: 14,
        best_val: Some((90.0, 2)),
        bad_epochs: 1,
        val_curve: vec![(1, 100.0), (2, 90.0), (3, 95.0)],
        train_seconds: 12.0,
        rng: FlowRng::seed_from_u64(1).state(),
        partial_epoch: Some(PartialEpoch {
            shuffle_rng: FlowRng::seed_from_u64(2).state(),
            sums: EpochSums {
                batches: 2,
                loss: 180.0,
                reconstruction: 170.0,
                cg_iterations: 40,
                cg_systems: 4,
                cg_converged: 4,
                seconds: 1.0,
            },
        }),
        step_stats: TrainStepStats {
            steps: 14,
            last_loss: Some(92.0),
            cg_mean_sum: 140.0,
            cg_steps: 14,
            cg_systems: 28,
            cg_converged: 27,
            cg_unconverged_steps: 1,
            cg_max: 20,
        },
    };
    let meta = VaeCheckpointMeta {
        config: VaeConfig::reference(VaeDatasetName::FreyFaces, "data", PosteriorKind::CpFlow),
        state: Some(state),
        optimizer: Some(AdamaxState {
            params: AdamaxParams {
                lr: LR,
                ..Default::default()
            },
            steps: BTreeMap::from([("w".to_string(), 14), ("b".to_string(), 3)]),
        }),
    };
    let t = Tensor::zeros(2, candle_core::DType::F64, &Device::Cpu).expect("tensor");
    let tensors = ["w", "b"]
        .into_iter()
        .flat_map(|n| [format!("adamax.m.{n}"), format!("adamax.u.{n}")])
        .map(|k| (k, t.clone()))
        .collect();
    (meta, tensors)
}

#[test]
fn a_consistent_state_passes() {
    let (meta, tensors) = consistent();
    let path = Path::new("ck.safetensors");
    check_resumable(path, &meta, LR, &tensors).expect("consistent");
    // A configured learning rate above 1 is the run's own.
    let mut big = meta.clone();
    if let Some(o) = &mut big.optimizer {
        o.params.lr = 3.0;
    }
    check_resumable(path, &big, 3.0, &tensors).expect("configured");
    // A weights-only file has nothing to check.
    let weights = VaeCheckpointMeta {
        state: None,
        optimizer: None,
        ..meta
    };
    check_resumable(path, &weights, LR, &HashMap::new()).expect("weights only");
}

/// Each edit is refused, naming the file and the field.
#[test]
fn each_edited_number_is_refused_naming_the_file_and_the_field() {
    type Edit = Box<dyn Fn(&mut AdamaxState, &mut VaeTrainState)>;
    fn sums(s: &mut VaeTrainState) -> &mut EpochSums {
        &mut s.partial_epoch.as_mut().expect("paused").sums
    }
    let mut cases: Vec<(&str, Edit)> = vec![];
    for lr in [-1.0, -1e300, 0.0, 1e300, f64::NAN] {
        cases.push((
            "optimizer.params.lr",
            Box::new(move |o, _| o.params.lr = lr),
        ));
    }
    cases.extend::<Vec<(&str, Edit)>>(vec![
        (
            "optimizer.params.beta1",
            Box::new(|o, _| o.params.beta1 = -1.0),
        ),
        ("optimizer.params.eps", Box::new(|o, _| o.params.eps = 0.0)),
        (
            "optimizer.steps",
            Box::new(|o, _| _ = o.steps.insert("w".into(), 15)),
        ),
        (
            "optimizer.steps",
            Box::new(|o, _| _ = o.steps.insert("w".into(), 0)),
        ),
        (
            "optimizer.steps",
            Box::new(|o, _| _ = o.steps.insert("x".into(), 1)),
        ),
        ("state.epoch", Box::new(|_, s| s.epoch = 13)),
        (
            "state.steps",
            Box::new(|o, s| {
                o.steps.values_mut().for_each(|n| *n = 3);
                s.steps = 4;
            }),
        ),
        ("state.bad_epochs", Box::new(|_, s| s.bad_epochs = 4)),
        (
            "state.best_val",
            Box::new(|_, s| s.best_val = Some((90.0, 4))),
        ),
        (
            "state.best_val",
            Box::new(|_, s| s.best_val = Some((90.0, 0))),
        ),
        (
            "state.best_val",
            Box::new(|_, s| s.best_val = Some((f64::NEG_INFINITY, 2))),
        ),
        ("state.val_curve[2]", Box::new(|_, s| s.val_curve[2].0 = 2)),
        (
            "state.val_curve[3]",
            Box::new(|_, s| s.val_curve.push((4, 1.0))),
        ),
        (
            "state.val_curve[0]",
            Box::new(|_, s| s.val_curve[0].1 = f64::NAN),
        ),
        (
            "state.train_seconds",
            Box::new(|_, s| s.train_seconds = -1.0),
        ),
        (
            "state.train_seconds",
            Box::new(|_, s| s.train_seconds = f64::INFINITY),
        ),
        (
            "state.step_stats.steps",
            Box::new(|_, s| s.step_stats.steps = 15),
        ),
        (
            "state.step_stats.cg_unconverged_steps",
            Box::new(|_, s| s.step_stats.cg_unconverged_steps = 15),
        ),
        (
            "state.step_stats.last_loss",
            Box::new(|_, s| s.step_stats.last_loss = Some(f64::NAN)),
        ),
        (
            "state.step_stats.cg_mean_sum",
            Box::new(|_, s| s.step_stats.cg_mean_sum = f64::INFINITY),
        ),
        ("state.rng", Box::new(|_, s| s.rng.seed_hex = "00".into())),
        (
            "state.partial_epoch.shuffle_rng",
            Box::new(|_, s| {
                if let Some(p) = &mut s.partial_epoch {
                    p.shuffle_rng.word_pos = "x".into();
                }
            }),
        ),
        (
            "state.partial_epoch.sums.batches",
            Box::new(|_, s| sums(s).batches = 0),
        ),
        ("state.epoch", Box::new(|_, s| sums(s).batches = 12)),
        (
            "state.partial_epoch.sums.cg_converged",
            Box::new(|_, s| sums(s).cg_converged = 5),
        ),
        (
            "state.partial_epoch.sums.loss",
            Box::new(|_, s| sums(s).loss = f64::NEG_INFINITY),
        ),
        (
            "state.partial_epoch.sums.seconds",
            Box::new(|_, s| sums(s).seconds = -1.0),
        ),
    ]);
    let (meta, tensors) = consistent();
    let path = Path::new("edited.safetensors");
    for (field, edit) in cases {
        let mut m = meta.clone();
        if let (Some(o), Some(s)) = (&mut m.optimizer, &mut m.state) {
            edit(o, s);
        }
        let msg = match check_resumable(path, &m, LR, &tensors) {
            Ok(()) => panic!("{field}: the edited state passed"),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.contains("edited.safetensors") && msg.contains(field),
            "{field}: {msg}"
        );
    }
}
