//! Tests of `reference_weights.rs`: renamed and reshaped loads, errors that name the key,
//! and the multi-scale and VAE-posterior layouts.

use super::*;
use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use icnn::Icnn2Config;

use crate::potential::PotentialConfig;
use crate::{FloatType, Flow};

fn small_flow() -> Flow {
    let pot = PotentialConfig::Icnn2(Icnn2Config {
        dim: 3,
        width: 4,
        depth: 2,
        ..Default::default()
    });
    let cfg = FlowConfig::tabular(3, 1, pot).with_float(FloatType::F64);
    Flow::new(cfg, &Device::Cpu).unwrap()
}

/// The flow's own variables, renamed to reference keys and reshaped like PyTorch's
/// ActNorms, as a state_dict.
fn reference_state_dict(flow: &Flow) -> HashMap<String, Tensor> {
    flow.named_vars()
        .into_iter()
        .filter(|(k, _)| !k.ends_with("initialized"))
        .map(|(k, v)| {
            let t = (v.as_tensor() + 0.25).unwrap();
            let (key, t) = match k.strip_suffix(".bias") {
                Some(p) if !p.contains("icnn") => (format!("{p}.b"), t.unsqueeze(2).unwrap()),
                _ if k.ends_with(".logs") && !k.contains("icnn") => {
                    (k.clone(), t.unsqueeze(2).unwrap())
                }
                _ => (k.clone(), t),
            };
            (key.replacen("layers.", "flows.", 1), t)
        })
        .collect()
}

#[test]
fn loads_renamed_and_reshaped_weights_and_marks_flags() {
    let flow = small_flow();
    assert!(!flow.is_initialized().unwrap());
    let sd = reference_state_dict(&flow);
    let m = KeyMapping::for_flow(flow.config());
    let r = load_reference_state_dict(&flow.named_vars(), &sd, &m).unwrap();
    assert_eq!(r.loaded, sd.len());
    assert!(r.flags_marked >= 3);
    assert!(flow.is_initialized().unwrap());
    let b = flow
        .named_vars()
        .into_iter()
        .find(|(k, _)| k == "layers.0.bias")
        .unwrap()
        .1;
    let expect = sd["flows.0.b"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(
        b.as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap(),
        expect
    );
}

#[test]
fn errors_name_the_offending_key() {
    let flow = small_flow();
    let m = KeyMapping::for_flow(flow.config());
    let vars = flow.named_vars();
    let message = |sd: &HashMap<String, Tensor>| {
        let e = load_reference_state_dict(&vars, sd, &m).unwrap_err();
        assert!(matches!(e, CpflowError::Checkpoint(_)), "{e}");
        e.to_string()
    };
    let mut sd = reference_state_dict(&flow);
    sd.remove("flows.1.w0");
    assert!(message(&sd).contains("has no flows.1.w0 (the model's layers.1.w0)"));
    let mut sd = reference_state_dict(&flow);
    sd.insert(
        "flows.1.icnn.Wzs.0.weight".into(),
        Tensor::zeros((4, 2), DType::F64, &Device::Cpu).unwrap(),
    );
    let msg = message(&sd);
    assert!(
        msg.contains("flows.1.icnn.Wzs.0.weight has shape [4, 2]"),
        "{msg}"
    );
    let mut sd = reference_state_dict(&flow);
    sd.insert(
        "flows.7.b".into(),
        Tensor::zeros(3, DType::F64, &Device::Cpu).unwrap(),
    );
    assert!(message(&sd).contains("flows.7.b matches no rule"));
    let mut sd = reference_state_dict(&flow);
    sd.insert(
        "flows.1.extra".into(),
        Tensor::zeros(1, DType::F64, &Device::Cpu).unwrap(),
    );
    assert!(message(&sd).contains("maps to layers.1.extra, which the model does not have"));
    let mut sd = reference_state_dict(&flow);
    let w1 = sd["flows.1.w1"].clone();
    sd.insert("flows.1.w1".into(), (w1 * f64::NAN).unwrap());
    assert!(message(&sd).contains("flows.1.w1 holds a NaN or infinite value"));
    // Integer and half-precision values are refused by key (they were converted silently:
    // an I64 w1 imported as a model with NLL 1.6e37).
    for dtype in [DType::I64, DType::F16, DType::U8] {
        let mut sd = reference_state_dict(&flow);
        let w1 = sd["flows.1.w1"].to_dtype(dtype).unwrap();
        sd.insert("flows.1.w1".into(), w1);
        let msg = message(&sd);
        assert!(
            msg.contains(&format!("flows.1.w1 holds {dtype:?} values")),
            "{msg}"
        );
    }
    // A frozen reference w0 must hold the constant that a fixed-w0 block uses.
    let mut cfg = flow.config().clone();
    for l in &mut cfg.layers {
        if let LayerConfig::Cpf(b) = l {
            b.trainable_w0 = false;
        }
    }
    let fixed = Flow::new(cfg, &Device::Cpu).unwrap();
    let fixed_map = KeyMapping::for_flow(fixed.config());
    let mut sd = reference_state_dict(&flow);
    sd.insert(
        "flows.1.w0".into(),
        Tensor::new(&[crate::block::LOG_E_MINUS_1 as f32], &Device::Cpu).unwrap(),
    );
    let r = load_reference_state_dict(&fixed.named_vars(), &sd, &fixed_map).unwrap();
    assert_eq!(r.loaded, sd.len() - 1);
    sd.insert(
        "flows.1.w0".into(),
        Tensor::new(&[0.7f64], &Device::Cpu).unwrap(),
    );
    let e = load_reference_state_dict(&fixed.named_vars(), &sd, &fixed_map).unwrap_err();
    assert!(e.to_string().contains("flows.1.w0 is [0.7]"), "{e}");
    // Nothing was written by the failed loads.
    assert!(!flow.is_initialized().unwrap());
}

#[test]
fn multiscale_and_posterior_mappings_follow_the_reference_layout() {
    use crate::image::MultiscaleConfig;
    let ms = MultiscaleConfig {
        image: icnn::ImageShape::new(1, 4, 4),
        nblocks: vec![2, 1],
        factor_out: true,
        fc_end: Some(PotentialConfig::Icnn2(Icnn2Config::default())),
        ..MultiscaleConfig::mnist()
    };
    let cfg = ImageFlowConfig::multiscale(&ms).unwrap();
    let m = KeyMapping::for_multiscale(&cfg).unwrap();
    // [logit, AN, AN, CPF, AN, CPF, squeeze, factor-out | AN, CPF, fc CPF, fc AN]
    let pairs = [
        ("transforms.0.flows.1.b", "layers.1.bias"),
        ("transforms.0.flows.5.flows.0.w0", "layers.5.w0"),
        ("transforms.1.flows.0.logs", "layers.8.logs"),
        (
            "transforms.1.flows.1.flows.0.icnn.Wz0.weight",
            "layers.9.icnn.Wz0.weight",
        ),
        ("transforms.1.flows.2.fc_module.flows.0.w1", "layers.10.w1"),
        ("transforms.1.flows.3.fc_module.b", "layers.11.bias"),
    ];
    for (theirs, ours) in pairs {
        assert_eq!(m.map(theirs).as_deref(), Some(ours), "{theirs}");
    }
    let pc = PosteriorConfig::reference_vae(4, 3).with_blocks(2);
    let m = KeyMapping::for_vae_posterior(&pc, "flow.", "q").unwrap();
    assert_eq!(
        m.map("flow.flows.4.flow.flows.1.logs").as_deref(),
        Some("q.layers.4.logs")
    );
    assert_eq!(
        m.map("flow.flows.3.icnn.Wcs.0.bias").as_deref(),
        Some("q.layers.3.icnn.Wcs.0.bias")
    );
    assert!(KeyMapping::for_vae_posterior(&pc.with_actnorm(false), "flow.", "q").is_err());
}
