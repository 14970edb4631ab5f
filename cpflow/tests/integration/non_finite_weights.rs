//! Non-finite weights are refused where they enter (`set_weights`) and where they would be
//! written (`save`: the loaders refuse such a file, so an atomic write over the last good
//! checkpoint would lose the run), and a sample whose point is not finite is never reported
//! as converged. Found by QA: NaN weights were accepted by `set_weights`, saved by `save`
//! into a file `load` then refused, and `sample` returned NaN rows marked converged.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use cpflow::{CpflowError, Flow};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::flow_common::{data, two_block_flow};

fn initialized_flow() -> Flow {
    let flow = two_block_flow(2, 3);
    flow.initialize(&data(64, 2, 4)).unwrap();
    flow
}

/// The exact log-densities of four fixed points (compared bit for bit).
fn probe_log_prob(flow: &Flow) -> Vec<f64> {
    flow.log_prob_exact(&data(4, 2, 5))
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// The name of the first ActNorm bias (a layer without a solver: a NaN there reaches the
/// sample directly, past every convergence test).
fn actnorm_bias(flow: &Flow) -> String {
    flow.weight_tensors()
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.starts_with("layers.0.") && !k.ends_with("initialized"))
        .unwrap()
}

fn with_value(flow: &Flow, name: &str, v: f64) -> Tensor {
    let (_, t) = flow
        .weight_tensors()
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap();
    let mut values = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    values[0] = v;
    Tensor::from_vec(values, t.shape(), &Device::Cpu).unwrap()
}

#[test]
fn set_weights_refuses_non_finite_values_naming_the_tensor() {
    let flow = initialized_flow();
    let name = actnorm_bias(&flow);
    let before = probe_log_prob(&flow);
    for bad in [f64::NAN, f64::INFINITY] {
        let mut w: HashMap<String, Tensor> = flow.weight_tensors().into_iter().collect();
        w.insert(name.clone(), with_value(&flow, &name, bad));
        match flow.set_weights(&w, "") {
            Err(CpflowError::InvalidInput(msg)) => {
                assert!(
                    msg.contains(&format!("tensor {name} holds 1 non-finite value")),
                    "{msg}"
                );
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }
    // Nothing was set: the flow computes what it did before (bit for bit).
    assert_eq!(probe_log_prob(&flow), before);
}

/// `set_weights` with the flow's own `weight_tensors()` (views of its variables, which candle
/// refuses to set a variable from) is a plain assignment: it used to fail with "cannot set a
/// variable to a tensor that is derived from its value".
#[test]
fn set_weights_accepts_the_flows_own_tensors() {
    let flow = initialized_flow();
    let before = probe_log_prob(&flow);
    let own: HashMap<String, Tensor> = flow.weight_tensors().into_iter().collect();
    flow.set_weights(&own, "").unwrap();
    assert_eq!(probe_log_prob(&flow), before);
}

#[test]
fn save_refuses_non_finite_weights_and_keeps_the_old_file() {
    let dir = std::env::temp_dir().join(format!("cpflow-nonfinite-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flow.safetensors");
    let flow = initialized_flow();
    flow.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    // A NaN put into a variable directly (as a diverged optimiser step would).
    let name = actnorm_bias(&flow);
    let var = flow
        .named_vars()
        .into_iter()
        .find(|(k, _)| *k == name)
        .unwrap()
        .1;
    var.set(&with_value(&flow, &name, f64::NAN)).unwrap();
    match flow.save(&path) {
        Err(CpflowError::Checkpoint(msg)) => {
            assert!(
                msg.contains(&format!("tensor {name} holds 1 non-finite value")),
                "{msg}"
            );
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "the old file must survive"
    );
    assert!(Flow::load(&path, &Device::Cpu).is_ok());

    // The NaN bias reaches every sample through the ActNorm inverse: no sample may be
    // reported converged (each block's solver did converge on what it was given).
    let s = flow.sample(3, &mut StdRng::seed_from_u64(6)).unwrap();
    let x = s.x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert!(x.iter().any(|v| v.is_nan()));
    assert_eq!(s.report.converged, vec![false; 3]);
    assert!(s.report.blocks.iter().all(|b| b.all_converged()));
    let _ = std::fs::remove_dir_all(&dir);
}
