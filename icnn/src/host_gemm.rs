//! Matrix products on host slices with faer, written into caller-owned buffers: no
//! zero-filled fresh output, optional accumulation. Shared by the fused convolution ops and
//! the host surrogate kernels.
//!
//! faer rather than the gemm crate (candle's CPU matmul backend): faer picks its kernels at
//! run time and uses AVX-512 where the CPU has it, which gemm does only with its nightly
//! feature. On the 2-core AVX-512 machine of `docs/results/matmul-ab.md`, one thread:
//! `(1024 × 64) · (64 × 64)` f32 144 vs 88 GFLOP/s, f64 66 vs 44; the convolution shapes
//! 1.0–1.5× (`target/release/matmul_ab`).
//!
//! Memory: faer's x86 kernels keep one packing arena per thread for the life of the thread,
//! reserved at twice the L3 size (960 MiB of address space on a CPU reporting 480 MiB of L3)
//! and committed only where touched (a few MiB: the resident set does not grow by the
//! reservation). Under strict overcommit (`vm.overcommit_memory = 2`) that reservation
//! counts against the commit limit.

use candle_core::WithDType;
pub(crate) use faer::Par;
use faer::{Accum, MatMut, MatRef};

/// The element types the ops dispatch on (f32, f64), multiplied by faer.
pub(crate) trait GemmFloat: WithDType + Default + faer::traits::ComplexField {
    /// `a·b + c` rounded once. One instruction only in code compiled with the `fma` target
    /// feature (a library call otherwise): callers use it under `#[target_feature]`.
    fn fused_mul_add(a: Self, b: Self, c: Self) -> Self;
}
impl GemmFloat for f32 {
    #[inline(always)]
    fn fused_mul_add(a: Self, b: Self, c: Self) -> Self {
        a.mul_add(b, c)
    }
}
impl GemmFloat for f64 {
    #[inline(always)]
    fn fused_mul_add(a: Self, b: Self, c: Self) -> Self {
        a.mul_add(b, c)
    }
}

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

/// `dst (m × n, row-major) = lhs · rhs` (or `+=` when `accumulate`) with faer, on the
/// calling thread (`Par::Seq`) or on rayon's pool (matrix–vector products always on the
/// calling thread): the same bits either way.
pub(crate) fn matmul_into<T: GemmFloat>(
    dst: &mut [T],
    lhs: View<'_, T>,
    rhs: View<'_, T>,
    accumulate: bool,
    parallelism: Par,
) -> candle_core::Result<()> {
    matmul_into_rows(dst, rhs.cols, lhs, rhs, accumulate, parallelism)
}

/// [`matmul_into`] with the rows of `dst` `dst_rs ≥ n` values apart (row `i` of the product
/// at `dst[i·dst_rs..i·dst_rs + n]`; the values between rows are left alone).
pub(crate) fn matmul_into_rows<T: GemmFloat>(
    dst: &mut [T],
    dst_rs: usize,
    lhs: View<'_, T>,
    rhs: View<'_, T>,
    accumulate: bool,
    parallelism: Par,
) -> candle_core::Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k
        || dst_rs < n
        || !fits(dst.len(), m, n, dst_rs, 1)
        || !fits(lhs.data.len(), m, k, lhs.rs, lhs.cs)
        || !fits(rhs.data.len(), k, n, rhs.rs, rhs.cs)
    {
        candle_core::bail!("host gemm: internal matrix product shape error");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    // faer splits a parallel product among threads by its output, except a matrix–vector
    // product with a column-major matrix, whose inner dimension it cuts into one part per
    // thread (`matvec_colmajor`): a sum whose rounding would follow the thread count. Those
    // run on the calling thread (`thread_count_tests`).
    let parallelism = if m == 1 || n == 1 {
        Par::Seq
    } else {
        parallelism
    };
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(T::zero());
            }
        }
        return Ok(());
    }
    let stride = |s: usize| isize::try_from(s).ok();
    let (Some(lrs), Some(lcs), Some(rrs), Some(rcs), Some(drs)) = (
        stride(lhs.rs),
        stride(lhs.cs),
        stride(rhs.rs),
        stride(rhs.cs),
        stride(dst_rs),
    ) else {
        candle_core::bail!("host gemm: stride overflows isize");
    };
    // SAFETY: the checks above keep every element of the three `m × n`, `m × k`, `k × n`
    // views inside its slice (strides non-negative, fitting isize), and `dst` is borrowed
    // mutably, so it aliases neither input and no two of its view's elements coincide
    // (row stride `dst_rs ≥ n`, column stride 1).
    let (lhs, rhs, dst) = unsafe {
        (
            MatRef::from_raw_parts(lhs.data.as_ptr(), m, k, lrs, lcs),
            MatRef::from_raw_parts(rhs.data.as_ptr(), k, n, rrs, rcs),
            MatMut::from_raw_parts_mut(dst.as_mut_ptr(), m, n, drs, 1),
        )
    };
    let accum = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    faer::linalg::matmul::matmul(dst, accum, lhs, rhs, T::one(), parallelism);
    if matches!(parallelism, Par::Seq) {
        clear_upper_vector_state();
    } else {
        // faer's kernels ran on the pool's threads too.
        rayon::broadcast(|_| clear_upper_vector_state());
    }
    Ok(())
}

/// `vzeroupper` on this thread (x86-64 with AVX; a no-op elsewhere).
///
/// faer's x86 kernels (`private-gemm-x86`, generated assembly) return with the upper halves
/// of the vector registers dirty. Until something clears them, every legacy-SSE instruction
/// on that thread — the scalar float code rustc emits for the x86-64 baseline, libm's `exp`
/// entry — pays a false dependency on the whole register: `exp` in the VAE's gate ran ~25×
/// slower on rayon's threads after a faer product (`perf annotate`: 81% of its samples on
/// the first instruction). Compilers insert `vzeroupper` after their own AVX code; these
/// kernels are not theirs, so [`matmul_into`] does it after each product, on every thread
/// of rayon's pool after a parallel one.
#[inline]
fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        fn zeroupper() {
            // Zeroes bits 128 and up of the vector registers; no value lives there across
            // a call (the x86-64 calling conventions preserve none of them).
            std::arch::x86_64::_mm256_zeroupper();
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU supports AVX (checked above), the target feature of zeroupper.
            unsafe { zeroupper() }
        }
    }
}
