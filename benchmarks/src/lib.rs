//! Benchmarks and the side-by-side performance harness for cpflow.
//!
//! - `cargo run --release -p benchmarks --bin tabular_bench -- --dims 6,43,63` prints one JSON
//!   document with train-step, exact/SLQ evaluation and inversion timings of the reference's
//!   tabular configuration (see `benches/` of each crate for the criterion micro-benchmarks).
//! - `side_by_side` runs the authors' PyTorch code (through `ref_tabular.py`) and ours on the
//!   same data in one session and writes `docs/results/side-by-side-cpu.{md,json}`
//!   ([`side_by_side`] holds the table and ratio code, [`ours`] our protocol, [`memory`] the
//!   peak-memory meters).
//! - `memory_figure`: peak train-step memory against forced CG iterations, CG surrogate vs
//!   back-propagation through CG (paper Fig. 2; `docs/results/memory-cg-iterations.*`).
//! - `kernel_ab`: interleaved A/B timings of the Hessian and Hessian-vector-product kernels.
//! - [`gaussian_mixture`] generates the synthetic data that the reference measurements used.
//! - [`CpuWatch`] and [`CpuTrace`] give the cores our side used (process CPU seconds per wall
//!   second) over a phase, or over a stretch of a run known only from its log.

pub mod cpu_trace;
pub mod data;
pub mod device_memory;
pub mod env;
pub mod memory;
pub mod ours;
pub mod output_prefix;
pub mod side_by_side;
pub mod timing;

pub use cpu_trace::{CpuSamples, CpuTrace};
pub use data::gaussian_mixture;
pub use env::{expand_home, load_average, open_device, python_command, stdout_json};
pub use timing::{CpuWatch, Stopwatch, median, process_cpu_seconds};
