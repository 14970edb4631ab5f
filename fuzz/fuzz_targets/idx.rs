#![no_main]
//! IDX image and label files (MNIST), raw and gzipped: arrays or a typed error.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("cpflow-fuzz-idx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("images-idx3-ubyte");
    std::fs::write(&raw, data).unwrap();
    let _ = cpflow::datasets::read_idx_images(&raw);
    let _ = cpflow::datasets::read_idx_labels(&raw);
    let gz = dir.join("images-idx3-ubyte.gz");
    std::fs::write(&gz, data).unwrap();
    let _ = cpflow::datasets::read_idx_images(&gz);
});
