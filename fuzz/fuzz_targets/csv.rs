#![no_main]
//! CSV bytes: a matrix or a typed error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cpflow::datasets::parse_csv_matrix("fuzz.csv".as_ref(), data);
});
