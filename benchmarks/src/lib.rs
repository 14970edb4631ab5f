//! Benchmarks and the side-by-side performance harness for cpflow.
//!
//! - `cargo run --release -p benchmarks --bin tabular_bench -- --dims 6,43,63` prints one JSON
//!   document with train-step, exact/SLQ evaluation and inversion timings of the reference's
//!   tabular configuration (see `benches/` of each crate for the criterion micro-benchmarks).
//! - [`gaussian_mixture`] generates the synthetic data that the reference measurements used.

pub mod data;
pub mod timing;

pub use data::gaussian_mixture;
pub use timing::{Stopwatch, median};
