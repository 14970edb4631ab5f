//! A/B of the two CPU matrix-product libraries in the build, one thread, on the shapes of the
//! host kernels and the gemm convolutions: faer's `matmul` (what `icnn`'s host kernels use,
//! AVX-512 where the CPU has it) against the gemm crate (candle's CPU matmul backend).
//! `C = A·B` and `C = Aᵀ·B` (weight-gradient layout), row-major, interleaved, GFLOP/s of the
//! fastest of `--reps` repetitions so a busy machine biases both sides alike.
//!
//! ```text
//! target/release/matmul_ab --reps 20
//! ```

use clap::Parser;
use faer::{Accum, MatMut, MatRef, Par};
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Repetitions per product (the fastest is reported).
    #[arg(long, default_value_t = 20)]
    reps: usize,
}

/// `(m, k, n)`: tabular layers (batch chunks × width), ConvICNN im2col products on MNIST
/// (batch 64 × 28 × 28 positions), the VAE's 5×5 convolution 32 → 256 at 28×20 (batch 100).
const SHAPES: [(usize, usize, usize); 7] = [
    (256, 64, 64),
    (1024, 64, 64),
    (1024, 43, 64),
    (50176, 36, 64),
    (12544, 576, 64),
    (56000, 800, 256),
    (56000, 256, 32),
];

/// The fastest of `reps` runs of `f`, seconds.
fn fastest(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// `dst (rows × n) = lhs · rhs` with faer; `lhs` given by its strides.
fn faer_mm<T: faer::traits::ComplexField + Copy>(
    dst: &mut [T],
    lhs: (&[T], usize, usize, usize, usize),
    rhs: &[T],
    n: usize,
    one: T,
) {
    let (a, rows, k, rs, cs) = lhs;
    // SAFETY: `a` holds `rows × k` elements at strides (rs, cs) by construction in `run`.
    let a = unsafe { MatRef::from_raw_parts(a.as_ptr(), rows, k, rs as isize, cs as isize) };
    let b = MatRef::from_row_major_slice(rhs, k, n);
    let c = MatMut::from_row_major_slice_mut(dst, rows, n);
    faer::linalg::matmul::matmul(c, Accum::Replace, a, b, one, Par::Seq);
}

/// The same with the gemm crate.
fn gemm_mm<T: 'static + Copy>(
    dst: &mut [T],
    lhs: (&[T], usize, usize, usize, usize),
    rhs: &[T],
    n: usize,
    one: T,
) {
    let (a, rows, k, rs, cs) = lhs;
    // SAFETY: all three matrices lie inside their slices (sizes from `run`), dst aliases
    // neither input, and T is f32 or f64.
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            cs as isize,
            rs as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            one,
            one,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

fn run<T: faer::traits::ComplexField + Copy + 'static>(name: &str, one: T, reps: usize) {
    for (m, k, n) in SHAPES {
        let a = vec![one; m * k];
        let b = vec![one; k * n];
        let bt = vec![one; m * n];
        let mut c = vec![one; m * n];
        let mut ct = vec![one; k * n];
        let flop = 2.0 * (m * k * n) as f64 / 1e9;
        let (mut ab_faer, mut ab_gemm, mut atb_faer, mut atb_gemm) = (0.0, 0.0, 0.0, 0.0);
        // Interleaved rounds, the fastest of each side.
        for _ in 0..reps.max(1) {
            let f = fastest(1, || faer_mm(&mut c, (&a, m, k, k, 1), &b, n, one));
            let g = fastest(1, || gemm_mm(&mut c, (&a, m, k, k, 1), &b, n, one));
            // Aᵀ (k × m) · B' (m × n): A row-major m × k seen transposed.
            let ft = fastest(1, || faer_mm(&mut ct, (&a, k, m, 1, k), &bt, n, one));
            let gt = fastest(1, || gemm_mm(&mut ct, (&a, k, m, 1, k), &bt, n, one));
            for (best, t) in [
                (&mut ab_faer, f),
                (&mut ab_gemm, g),
                (&mut atb_faer, ft),
                (&mut atb_gemm, gt),
            ] {
                *best = f64::max(*best, flop / t);
            }
        }
        println!(
            "| {name} | {m} × {k} · {k} × {n} | {ab_faer:.1} | {ab_gemm:.1} | {:.2}× | {atb_faer:.1} | {atb_gemm:.1} | {:.2}× |",
            ab_faer / ab_gemm,
            atb_faer / atb_gemm
        );
    }
}

fn main() {
    let args = Args::parse();
    // One thread on both sides.
    gemm::set_threading_threshold(usize::MAX);
    println!(
        "| type | product | faer A·B GFLOP/s | gemm A·B | ratio | faer Aᵀ·B | gemm Aᵀ·B | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    run::<f32>("f32", 1.0, args.reps);
    run::<f64>("f64", 1.0, args.reps);
}
