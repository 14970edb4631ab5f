#![no_main]
//! An image flow's `model.safetensors` or `checkpoint.safetensors`: a model or a typed error.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("cpflow-fuzz-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, data).unwrap();
    let cpu = candle_core::Device::Cpu;
    let _ = cpflow::image::ImageFlow::load(&path, &cpu);
    let _ = cpflow::image::train::load_image_checkpoint(&path, &cpu);
});
