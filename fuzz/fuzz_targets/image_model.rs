#![no_main]
//! An image flow's `model.safetensors` or `checkpoint.safetensors`: a model or a typed error.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = cpflow_fuzz::temp_file("image", "model.safetensors", data);
    let cpu = candle_core::Device::Cpu;
    let _ = cpflow::image::ImageFlow::load(&path, &cpu);
    let _ = cpflow::image::train::load_image_checkpoint(&path, &cpu);
});
