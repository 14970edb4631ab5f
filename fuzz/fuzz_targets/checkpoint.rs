#![no_main]
//! A `model.safetensors` of `cpflow train`: a checkpoint or a typed error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("cpflow-fuzz-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, data).unwrap();
    let _ = cpflow::checkpoint::load_checkpoint(&path, &candle_core::Device::Cpu);
});
