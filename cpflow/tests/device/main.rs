//! The device tests alone, for GPU runs: the modules of `tests/integration` whose tests take
//! a device (`test_device!`), built into one small binary that `benchmarks/gpu/build.sh`
//! carries to the GPU machine (the whole integration binary is larger and mostly CLI and
//! file tests that need no GPU). Only with `--features cuda` (`required-features`); CI
//! runs the same bodies' `_cpu` variants in the integration binary.
//!
//! ```text
//! cargo test --release -p cpflow --features cuda --test device --no-run
//! <binary> _cuda          # on the GPU machine: every CUDA variant
//! ```

// Helpers of these modules that only other integration modules use.
#![allow(dead_code)]

#[macro_use]
#[path = "../integration/device_common/mod.rs"]
mod device_common;

#[path = "../integration/flow_common/mod.rs"]
mod flow_common;

#[path = "../integration/device_derivatives.rs"]
mod device_derivatives;
#[path = "../integration/device_flow.rs"]
mod device_flow;
#[path = "../integration/device_solvers.rs"]
mod device_solvers;
#[path = "../integration/device_training.rs"]
mod device_training;
#[path = "../integration/reference_parity.rs"]
mod reference_parity;
#[path = "../integration/reference_parity_vae.rs"]
mod reference_parity_vae;
#[path = "../integration/reference_parity_vae_is.rs"]
mod reference_parity_vae_is;
