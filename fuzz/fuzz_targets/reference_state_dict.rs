#![no_main]
//! A state_dict exported from the authors' PyTorch code (`import-reference`): the tensors load
//! into a tabular flow or the loader names what is wrong.
use std::collections::HashMap;

use candle_core::{Device, Tensor};
use cpflow::reference_weights::{KeyMapping, load_reference_state_dict};
use cpflow::{FloatType, Flow, FlowConfig, PotentialConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tensors) = candle_core::safetensors::load_buffer(data, &Device::Cpu) else {
        return;
    };
    // The seed also holds the parity test's inputs and outputs (`in.x`, `out.*`).
    let state_dict: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("model.").map(|k| (k.to_string(), v)))
        .collect();
    // The architecture of the seed (tests/fixtures/reference/tabular_icnn2.safetensors).
    let pot = PotentialConfig::Icnn2(icnn::Icnn2Config {
        dim: 6,
        width: 16,
        depth: 3,
        ..Default::default()
    });
    let cfg = FlowConfig::tabular(6, 2, pot).with_float(FloatType::F64);
    let flow = Flow::new(cfg, &Device::Cpu).expect("the seed's flow");
    let mapping = KeyMapping::for_flow(flow.config());
    let _ = load_reference_state_dict(&flow.named_vars(), &state_dict, &mapping);
});
