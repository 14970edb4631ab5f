//! Whether the host (CPU) kernels may serve a computation, or candle's own tensor operations
//! must, as they do on a GPU.
//!
//! On the CPU, most of this crate's work (activations, fused sums, matrix products, the
//! dense and convolutional networks' linearisations, gemm/Winograd convolutions) runs in host
//! kernels; on any other device the same results come from candle operations composed on the
//! tensors. Setting the environment variable [`HOST_KERNELS_ENV`] to `off` before the process
//! starts makes CPU tensors take the composed path too, so the operation graph a CUDA run
//! executes can be run and checked on a machine without a GPU (cpflow's integration test
//! `device_tests_pass_on_the_composed_path` runs every device test so). It is read once per
//! process.
//!
//! ```
//! use candle_core::Device;
//! // Unless the variable says `off`, CPU tensors take the host kernels.
//! if std::env::var(icnn::HOST_KERNELS_ENV).as_deref() != Ok("off") {
//!     assert!(icnn::host_kernels_enabled());
//!     assert!(icnn::takes_host_kernels(&Device::Cpu));
//! }
//! ```

use std::sync::OnceLock;

use candle_core::Device;

/// The environment variable that turns the host kernels off (`off`); any other value, or
/// none, leaves them on.
pub const HOST_KERNELS_ENV: &str = "CPFLOW_HOST_KERNELS";

/// Whether the host kernels are on for this process (module docs).
pub fn host_kernels_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var(HOST_KERNELS_ENV).as_deref() != Ok("off"))
}

/// Whether tensors on `device` take the host kernels: CPU tensors while they are on.
pub fn takes_host_kernels(device: &Device) -> bool {
    device.is_cpu() && host_kernels_enabled()
}
