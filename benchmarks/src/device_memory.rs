//! Peak device memory of a CUDA run: the high-water mark of CUDA's default memory pool.
//!
//! candle (through cudarc) allocates every CUDA tensor with `cuMemAllocAsync` from the
//! device's default memory pool, so the pool's `USED_MEM_HIGH` attribute is the peak of the
//! bytes our tensors held — the counterpart of PyTorch's `torch.cuda.max_memory_allocated()`,
//! which `ref_tabular.py` reports for the reference (both count live allocations, not what the
//! allocator keeps cached; neither counts cuBLAS's workspace).
//!
//! ```
//! use candle_core::Device;
//! // On the CPU (or in a build without the `cuda` feature) there is nothing to measure.
//! assert!(benchmarks::device_memory::reset_peak(&Device::Cpu).unwrap().is_none());
//! assert!(benchmarks::device_memory::peak_mib(&Device::Cpu).unwrap().is_none());
//! ```

use anyhow::Result;
use candle_core::Device;

/// Resets the peak of `dev`'s memory pool to what is in use now. `None` when `dev` is not a
/// CUDA device.
pub fn reset_peak(dev: &Device) -> Result<Option<()>> {
    imp::reset_peak(dev)
}

/// The pool's peak bytes since the last [`reset_peak`] (or since the process started), in
/// MiB. `None` when `dev` is not a CUDA device.
pub fn peak_mib(dev: &Device) -> Result<Option<f64>> {
    imp::peak_mib(dev)
}

#[cfg(feature = "cuda")]
mod imp {
    use anyhow::{Context, Result};
    use candle_core::Device;
    use candle_core::cuda::cudarc::driver::{result, sys};

    fn pool(dev: &Device) -> Result<Option<sys::CUmemoryPool>> {
        let Device::Cuda(cuda) = dev else {
            return Ok(None);
        };
        dev.synchronize()?;
        let ctx = cuda.cuda_stream().context().clone();
        ctx.bind_to_thread().context("binding the CUDA context")?;
        // SAFETY: `cu_device` comes from a live context of this process.
        let pool = unsafe { result::device::get_default_mem_pool(ctx.cu_device()) }
            .context("the device's default memory pool")?;
        Ok(Some(pool))
    }

    pub(super) fn reset_peak(dev: &Device) -> Result<Option<()>> {
        let Some(pool) = pool(dev)? else {
            return Ok(None);
        };
        let mut zero: u64 = 0;
        // SAFETY: a valid pool; USED_MEM_HIGH takes a u64 (0 resets it to the current use).
        unsafe {
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut zero as *mut u64).cast(),
            )
        }
        .context("resetting the pool's peak")?;
        Ok(Some(()))
    }

    pub(super) fn peak_mib(dev: &Device) -> Result<Option<f64>> {
        let Some(pool) = pool(dev)? else {
            return Ok(None);
        };
        let mut high: u64 = 0;
        // SAFETY: a valid pool; USED_MEM_HIGH is a u64.
        unsafe {
            result::mem_pool::get_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut high as *mut u64).cast(),
            )
        }
        .context("reading the pool's peak")?;
        Ok(Some(high as f64 / (1u64 << 20) as f64))
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use anyhow::Result;
    use candle_core::Device;

    pub(super) fn reset_peak(_dev: &Device) -> Result<Option<()>> {
        Ok(None)
    }

    pub(super) fn peak_mib(_dev: &Device) -> Result<Option<f64>> {
        Ok(None)
    }
}
