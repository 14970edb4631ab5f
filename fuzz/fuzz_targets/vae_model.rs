#![no_main]
//! A VAE run's `best.safetensors` or `checkpoint.safetensors`: a model or a typed error.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = cpflow_fuzz::temp_file("vae", "best.safetensors", data);
    let _ = cpflow::vae::load_vae_file(&path, &candle_core::Device::Cpu);
});
