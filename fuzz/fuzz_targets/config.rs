#![no_main]
//! Run configurations: a TOML file read as `cpflow train` (tabular/toy and image runs) and
//! `cpflow vae` read one, then the model it describes sized as the commands size it before
//! building it (`cpflow::cli::read_config_file`, compiled under `--cfg fuzzing` only).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = cpflow_fuzz::temp_file("config", "config.toml", data);
    cpflow::cli::read_config_file(&path);
});
