#![no_main]
//! Level-5 MAT-file bytes (Caltech 101 Silhouettes, Omniglot): arrays or a typed error.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path: &std::path::Path = "fuzz.mat".as_ref();
    let _ = cpflow::vae::parse_mat_v5::<f32>(path, data, &["data", "testdata"]);
    let _ = cpflow::vae::parse_mat_v5::<f64>(path, data, &["a"]);
});
