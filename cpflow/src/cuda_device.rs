//! Opening a CUDA device set up for cpflow's many small operations.
//!
//! A CP-Flow train step at the reference's sizes is thousands of small kernels (a few
//! GFLOP in all): what they cost around the arithmetic decides the speed. candle's
//! [`Device::new_cuda`] uses CUDA's per-thread default stream and cudarc's per-tensor event
//! tracking (two CUDA events created with every allocation, recorded and waited on at every
//! use, so that tensors can be shared between streams), and CUDA's default memory pool
//! hands freed memory back to the driver at every synchronisation (the next allocations map
//! it again). [`open_cuda_device`] instead gives the process **one** stream for every
//! operation of every thread on that device (so uses are ordered by the stream itself and
//! the events are not needed), turns event tracking off, and lets the pool keep freed
//! memory for reuse (PyTorch's caching allocator does the same).
//!
//! ```
//! // Without the `cuda` feature, or without a GPU, opening fails with candle's error.
//! # #[cfg(not(feature = "cuda"))]
//! assert!(cpflow::open_cuda_device(0).is_err());
//! ```

use candle_core::Device;

use crate::error::Result;

/// CUDA device `ordinal` with one stream for the whole process, no per-tensor event
/// tracking and a memory pool that keeps freed memory (module docs). Every tensor of a run
/// must be created on this [`Device`] (or a clone of it): tensors of another `Device` value
/// for the same GPU live on another stream and mixing them is refused by candle as a device
/// mismatch.
///
/// # Errors
/// candle's error when no such device opens (no GPU, or a build without the `cuda` feature).
/// Should the driver refuse the memory-pool setting, a warning is logged and the device is
/// used with its pool as it is.
pub fn open_cuda_device(ordinal: usize) -> Result<Device> {
    let dev = Device::new_cuda_with_stream(ordinal)?;
    tune(&dev)?;
    Ok(dev)
}

#[cfg(feature = "cuda")]
fn tune(dev: &Device) -> Result<()> {
    let Device::Cuda(cuda) = dev else {
        return Ok(());
    };
    // SAFETY: `new_cuda_with_stream` gave this device its own stream, and every operation on
    // its tensors — from any thread — is issued on that one stream, so each use is ordered
    // after the allocation and the writes before it: the condition under which candle allows
    // turning event tracking off. Only tensors created after this call are affected, and none
    // exists yet.
    unsafe { cuda.disable_event_tracking() };
    // Keeping freed memory only saves time: where the driver refuses it, say so and go on
    // with the pool as it is.
    if let Err(e) = keep_pool_memory(cuda) {
        tracing::warn!(error = %e, "CUDA's memory pool releases freed memory at each synchronisation");
    }
    Ok(())
}

/// Sets the device's default memory pool to keep freed memory (release threshold u64::MAX).
#[cfg(feature = "cuda")]
fn keep_pool_memory(cuda: &candle_core::CudaDevice) -> Result<()> {
    use candle_core::cuda::WrapErr;
    use candle_core::cuda::cudarc::driver::{result, sys};

    let ctx = cuda.cuda_stream().context().clone();
    ctx.bind_to_thread().w()?;
    // SAFETY: a device of a live context; the threshold attribute takes a u64.
    unsafe {
        let pool = result::device::get_default_mem_pool(ctx.cu_device()).w()?;
        let mut keep: u64 = u64::MAX;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut keep as *mut u64).cast(),
        )
        .w()?;
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn tune(_dev: &Device) -> Result<()> {
    Ok(())
}
