#![no_main]
//! IDX image and label files (MNIST), raw or gzipped (told apart by the gzip magic, not the
//! file name): arrays or a typed error.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = cpflow_fuzz::temp_file("idx", "images-idx3-ubyte", data);
    let _ = cpflow::datasets::read_idx_images(&path);
    let _ = cpflow::datasets::read_idx_labels(&path);
});
