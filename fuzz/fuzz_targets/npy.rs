#![no_main]
//! `.npy` bytes: a matrix or a typed error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cpflow::datasets::parse_npy_matrix("fuzz.npy".as_ref(), data);
});
