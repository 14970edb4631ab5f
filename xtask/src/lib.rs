//! `cargo xtask`: dataset download with checksums, tabular benchmarks and paper reproduction
//! for the CP-Flow workspace.
//!
//! * `cargo xtask download <power|gas|hepmass|miniboone|bsds300|mnist|cifar10|omniglot|all> [--dir DIR]`
//!   fetches the upstream files ([`registry`]; `--mirror URL|DIR` for a mirror server or a
//!   local directory), verifies them ([`checksum`]), downloads resumably and atomically
//!   ([`fetch`]), checks that the loaders can read them ([`installed_check`]) and lays them
//!   out as `cpflow::datasets` expects ([`install`], [`extract`]).
//! * `cargo xtask bench-tabular [--datasets power,gas,hepmass,miniboone,bsds300]
//!   [--minutes N] [--quick] [--device cpu|cuda] [--data-dir DIR] [--out DIR]` trains CP-Flow
//!   on the MAF benchmarks found on disk ([`bench_tabular`], configurations in
//!   [`tabular_config`], budgeted training in [`budget_train`]) and writes
//!   `bench-tabular.{md,json}` ([`bench_report`]).
//! * `cargo xtask reproduce [--quick] [--out DIR] [--image-datasets mnist,cifar10]
//!   [--no-images] [--vae-datasets frey-faces,caltech101] [--vae-data-dir DIR] [--no-vae]`
//!   runs the 2-D toys ([`toy_figures`]), the optimal-transport experiment, the tabular
//!   benchmarks, the image flows of Table 2 ([`reproduce_image`]) and the VAE posteriors of
//!   Table 3 ([`reproduce_vae`]) and writes `report.md` ([`reproduce`]); `--resume` continues
//!   an interrupted one ([`reproduce_resume`]).
//!
//! The library entry points ([`bench_tabular::run_bench_tabular`],
//! [`reproduce::run_reproduce`]) take option structs with presets (`paper`/`full`, `quick`,
//! `tiny`) so tests can run the whole pipeline in seconds.

pub mod bench_curve;
pub mod bench_report;
pub mod bench_resume;
pub mod bench_tabular;
pub mod budget_train;
pub mod checksum;
pub mod cli;
pub mod extract;
pub mod fetch;
pub mod fetch_error;
pub mod install;
pub mod installed_check;
pub mod installed_sizes;
pub mod json_file;
pub mod mirror;
pub mod name_record;
pub mod registry;
pub mod reproduce;
pub mod reproduce_image;
pub mod reproduce_resume;
pub mod reproduce_vae;
pub mod reproduce_vae_table;
pub mod tabular_config;
pub mod toy_figures;
