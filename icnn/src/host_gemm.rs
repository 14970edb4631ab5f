//! Matrix products on host slices with the gemm crate (candle's CPU matmul backend),
//! written into caller-owned buffers: no zero-filled fresh output, optional accumulation.
//! Shared by the fused convolution ops and the host surrogate kernels.

use candle_core::WithDType;
use gemm::Parallelism;

/// The element types the gemm crate multiplies (and that the ops dispatch on).
pub(crate) trait GemmFloat: WithDType {}
impl GemmFloat for f32 {}
impl GemmFloat for f64 {}

/// A matrix view into a slice: `rows × cols`, element `(i, j)` at `i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A contiguous row-major `rows × cols` matrix.
    pub(crate) fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transposed view (no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// Whether every element of a `rows × cols` view with strides `(rs, cs)` lies in `len`.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
}

/// `dst (m × n, row-major) = lhs · rhs` (or `+=` when `accumulate`) with the gemm crate
/// (candle's CPU matmul backend).
pub(crate) fn matmul_into<T: GemmFloat>(
    dst: &mut [T],
    lhs: View<'_, T>,
    rhs: View<'_, T>,
    accumulate: bool,
    parallelism: Parallelism,
) -> candle_core::Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k
        || !fits(dst.len(), m, n, n, 1)
        || !fits(lhs.data.len(), m, k, lhs.rs, lhs.cs)
        || !fits(rhs.data.len(), k, n, rhs.rs, rhs.cs)
    {
        candle_core::bail!("host gemm: internal matrix product shape error");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::zero());
        }
        return Ok(());
    }
    // SAFETY: the checks above keep every element of the three `m × n`, `m × k`, `k × n`
    // views inside its slice; `dst` is borrowed mutably, so it aliases neither input; and T
    // is f32 or f64 (`GemmFloat`), types the gemm crate supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}
