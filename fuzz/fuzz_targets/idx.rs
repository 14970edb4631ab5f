#![no_main]
//! IDX image and label files (MNIST), raw and gzipped: arrays or a typed error.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = cpflow_fuzz::temp_file("idx", "images-idx3-ubyte", data);
    let _ = cpflow::datasets::read_idx_images(&raw);
    let _ = cpflow::datasets::read_idx_labels(&raw);
    let gz = cpflow_fuzz::temp_file("idx", "images-idx3-ubyte.gz", data);
    let _ = cpflow::datasets::read_idx_images(&gz);
});
