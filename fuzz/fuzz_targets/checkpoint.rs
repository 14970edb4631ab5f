#![no_main]
//! A `model.safetensors` of `cpflow train`: a checkpoint or a typed error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = cpflow_fuzz::temp_file("checkpoint", "model.safetensors", data);
    let _ = cpflow::checkpoint::load_checkpoint(&path, &candle_core::Device::Cpu);
});
