//! Tests that take a device run on the CPU and, in a build with `--features cuda`, on CUDA
//! device 0, with one body (candle's `test_device!` pattern):
//!
//! ```text
//! fn log_prob_matches_the_dense_formula(dev: &Device) { … }
//! test_device!(log_prob_matches_the_dense_formula, log_prob_cpu, log_prob_cuda);
//! ```
//!
//! CI (no GPU, no `cuda` feature) runs the `_cpu` variants in the integration binary. With
//! `--features cuda` both variants exist; the `device` test binary (`tests/device`, the
//! device modules alone: `cargo test --release -p cpflow --features cuda --test device
//! --no-run`) is what `benchmarks/gpu/run.sh` runs on the GPU machine, filter `_cuda`. A
//! `_cuda` test fails, not skips, when no CUDA device opens: a GPU run that silently tested
//! nothing must not pass. Runs select the variants by the substring `_cuda` or `_cpu`, so a
//! body's name must contain neither.

/// Defines `#[test] fn $cpu()` running `$body(&Device::Cpu)` and, with the `cuda` feature,
/// `#[test] fn $cuda()` running `$body(&cuda())`.
macro_rules! test_device {
    ($body:ident, $cpu:ident, $cuda:ident) => {
        #[test]
        fn $cpu() {
            $body(&candle_core::Device::Cpu);
        }

        #[cfg(feature = "cuda")]
        #[test]
        fn $cuda() {
            $body(&$crate::device_common::cuda());
        }
    };
}

/// CUDA device 0 as the CLI opens it ([`cpflow::open_cuda_device`]: one stream, no event
/// tracking), opened once per test process and shared by every `_cuda` test (the tests
/// run on several threads; the one stream orders their work). Opening it once also loads
/// each kernel module once.
#[cfg(feature = "cuda")]
pub(crate) fn cuda() -> candle_core::Device {
    static DEVICE: std::sync::OnceLock<candle_core::Device> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| {
            cpflow::open_cuda_device(0)
                .unwrap_or_else(|e| panic!("no CUDA device 0 for a `_cuda` test: {e}"))
        })
        .clone()
}

/// Host copy of any tensor, as f64 (flattened).
pub(crate) fn host(t: &candle_core::Tensor) -> Vec<f64> {
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// `|a − b| / max(1, |b|)`, the largest over the entries (same lengths).
pub(crate) fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}
