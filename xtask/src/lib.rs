//! `cargo xtask`: dataset download with checksums, tabular benchmarks and paper reproduction
//! for the CP-Flow workspace.
//!
//! * `cargo xtask download <power|gas|hepmass|miniboone|bsds300|mnist|cifar10|all> [--dir DIR]`
//!   fetches the upstream files ([`registry`]), verifies them ([`checksum`]), downloads
//!   resumably and atomically ([`fetch`]) and lays them out as `cpflow::datasets` expects
//!   ([`install`], [`extract`]).
//! * `cargo xtask bench-tabular` and `cargo xtask reproduce` are declared with their flags but
//!   not implemented yet (they need the CP-Flow trainer).

pub mod checksum;
pub mod cli;
pub mod extract;
pub mod fetch;
pub mod install;
pub mod registry;
