//! Thread-count independence: every CPU convolution kernel (im2col, Winograd on
//! channel-first and on channel-last images, shifted products) and faer's parallel products
//! give bit-identical results on pools of 1, 2, 3 and 4 threads, in f32 and f64. The sums
//! over the batch (kernel gradients) are the point: their tasks used to follow the thread
//! count. Batches of 11 and 5 images are no multiple of the task count (8), or fewer.

use super::{PatchGeometry, adjoint_cpu, forward_cpu, kernel_grad_cpu};
use crate::host_gemm::{Par, View, matmul_into};
use crate::surrogate_host::Real;
use crate::{shifted_conv, winograd_conv};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const THREADS: [usize; 4] = [1, 2, 3, 4];

fn random<T: Real>(seed: u64, n: usize) -> Vec<T> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| T::from_f64(rng.random_range(-1.0..1.0)))
        .collect()
}

/// The bits of each value (f32 widens to f64 exactly), so `-0.0 ≠ 0.0` and NaNs compare.
fn bits<T: Real>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.to_f64().to_bits()).collect()
}

/// Runs `f` on a fresh pool of each of [`THREADS`] and checks that every result has the bits
/// of the one-thread result.
fn same_for_every_thread_count<T: Real>(what: &str, f: impl Fn() -> Vec<T> + Sync + Send) {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(&f)
    };
    let reference = run(1);
    assert!(!reference.is_empty(), "{what}: empty result");
    for threads in THREADS {
        let got = run(threads);
        let differ = bits(&got)
            .iter()
            .zip(bits(&reference))
            .filter(|(a, b)| **a != *b)
            .count();
        assert_eq!(
            differ,
            0,
            "{what} ({}): {differ} of {} values differ between 1 and {threads} threads",
            std::any::type_name::<T>(),
            reference.len()
        );
    }
}

fn geometry(
    c: usize,
    (h, w): (usize, usize),
    k: usize,
    stride: usize,
    pad: usize,
) -> PatchGeometry {
    PatchGeometry::for_conv(c, (h, w), (k, k), stride, pad).unwrap()
}

/// faer's products with `Par::rayon(threads)` against the calling thread: large enough for
/// its threads (and two blocks of its inner dimension, 512), and the matrix–vector shapes
/// (a row or column times a column-major matrix) where faer splits the inner dimension.
fn products<T: Real>() {
    let cases = [
        (300, 200, 1100, false),
        (1, 300, 400, false),
        (300, 1, 400, true),
    ];
    for (m, n, k, lhs_transposed) in cases {
        let (a, b) = (random::<T>(1, m * k), random::<T>(2, k * n));
        let product = |par: Par| {
            let lhs = if lhs_transposed {
                View::row_major(&a, k, m).t()
            } else {
                View::row_major(&a, m, k)
            };
            let mut out = vec![T::zero(); m * n];
            matmul_into(&mut out, lhs, View::row_major(&b, k, n), false, par).unwrap();
            out
        };
        let seq = bits(&product(Par::Seq));
        for threads in THREADS {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let par = pool.install(|| product(Par::rayon(threads)));
            assert!(
                bits(&par) == seq,
                "{m}×{k}·{k}×{n} ({}): Par::rayon({threads}) differs from Par::Seq",
                std::any::type_name::<T>()
            );
        }
    }
}

#[test]
fn faer_products_do_not_depend_on_the_thread_count() {
    products::<f32>();
    products::<f64>();
}

/// The channel-first kernels of `gemm_conv::ops` (im2col; Winograd for f64 with ≥ 32
/// channels) on `b` images: forward, adjoint, kernel gradient.
fn channel_first<T: Real>(g: PatchGeometry, c_out: usize, b: usize) {
    let what = format!(
        "gemm_conv {c_out}←{} {}×{} k{} s{}, batch {b}",
        g.channels, g.height, g.width, g.kh, g.stride
    );
    let (x, k) = (
        random::<T>(3, b * g.image_len()),
        random::<T>(4, c_out * g.patch_len()),
    );
    let y = random::<T>(5, b * c_out * g.positions());
    same_for_every_thread_count(&format!("{what} forward"), || {
        forward_cpu(&x, &k, None, &g, b, c_out).unwrap()
    });
    same_for_every_thread_count(&format!("{what} adjoint"), || {
        adjoint_cpu(&y, &k, None, &g, b, c_out).unwrap()
    });
    same_for_every_thread_count(&format!("{what} kernel gradient"), || {
        kernel_grad_cpu(&x, &y, &g, b, c_out).unwrap()
    });
}

#[test]
fn im2col_kernels_do_not_depend_on_the_thread_count() {
    for b in [11, 5] {
        channel_first::<f32>(geometry(3, (9, 7), 3, 1, 1), 5, b);
        channel_first::<f64>(geometry(3, (9, 7), 3, 1, 1), 5, b);
        channel_first::<f32>(geometry(4, (9, 8), 3, 2, 0), 6, b);
        channel_first::<f64>(geometry(4, (9, 8), 3, 2, 0), 6, b);
    }
}

#[test]
fn channel_first_winograd_kernels_do_not_depend_on_the_thread_count() {
    // f64, 5×5 "same", ≥ 32 channels: `gemm_conv::winograd`.
    channel_first::<f64>(geometry(32, (6, 5), 5, 1, 2), 36, 11);
    channel_first::<f64>(geometry(36, (5, 6), 3, 1, 1), 32, 5);
}

/// The channel-last "same" kernels of `shifted_conv` on `b` images.
fn shifted<T: Real>(c: usize, c_out: usize, (h, w): (usize, usize), k: usize, b: usize) {
    let g = geometry(c, (h, w), k, 1, (k - 1) / 2);
    let what = format!("shifted {c_out}←{c} {h}×{w} k{k}, batch {b}");
    let (x, kern) = (
        random::<T>(6, b * g.image_len()),
        random::<T>(7, c_out * g.patch_len()),
    );
    let y = random::<T>(8, b * c_out * h * w);
    same_for_every_thread_count(&format!("{what} forward"), || {
        let mut out = vec![T::zero(); b * c_out * h * w];
        shifted_conv::forward(&kern, &g, c_out, &x, &mut out, b, false).unwrap();
        out
    });
    same_for_every_thread_count(&format!("{what} adjoint"), || {
        let mut out = vec![T::zero(); b * g.image_len()];
        shifted_conv::adjoint(&kern, &g, c_out, &y, &mut out, b, false).unwrap();
        out
    });
    same_for_every_thread_count(&format!("{what} kernel gradient"), || {
        let mut out = vec![T::zero(); c_out * g.patch_len()];
        shifted_conv::param_grad(&g, c_out, &mut out, &y, &x, b).unwrap();
        out
    });
}

#[test]
fn shifted_kernels_do_not_depend_on_the_thread_count() {
    for b in [11, 5] {
        // Gathered taps (< 16 channels), 5×5; per-tap products; two images per group.
        shifted::<f32>(3, 8, (9, 7), 5, b);
        shifted::<f64>(3, 8, (9, 7), 5, b);
        shifted::<f32>(16, 12, (21, 22), 3, b);
        shifted::<f64>(16, 12, (21, 22), 3, b);
    }
}

/// The channel-last Winograd kernels of `winograd_conv` (3×3, ≥ 32 channels) on `b` images;
/// the kernel gradient also with every task's gradient over the size limit (one task).
fn channel_last_winograd<T: Real>(c: usize, c_out: usize, (h, w): (usize, usize), b: usize) {
    let g = geometry(c, (h, w), 3, 1, 1);
    let what = format!("winograd_conv {c_out}←{c} {h}×{w}, batch {b}");
    let (x, kern) = (
        random::<T>(9, b * g.image_len()),
        random::<T>(10, c_out * g.patch_len()),
    );
    let y = random::<T>(11, b * c_out * h * w);
    let u = winograd_conv::TransformedKernel::of(&kern, c_out, c);
    same_for_every_thread_count(&format!("{what} forward"), || {
        let mut out = vec![T::zero(); b * c_out * h * w];
        winograd_conv::forward(&u, &g, &x, &mut out, b, false).unwrap();
        out
    });
    same_for_every_thread_count(&format!("{what} adjoint"), || {
        let mut out = vec![T::zero(); b * g.image_len()];
        winograd_conv::adjoint(&u, &g, &y, &mut out, b, false).unwrap();
        out
    });
    same_for_every_thread_count(&format!("{what} kernel gradient"), || {
        let mut out = vec![T::zero(); c_out * g.patch_len()];
        winograd_conv::param_grad(&g, c_out, &mut out, &y, &x, b).unwrap();
        out
    });
    same_for_every_thread_count(&format!("{what} kernel gradient, one task"), || {
        let mut out = vec![T::zero(); c_out * g.patch_len()];
        winograd_conv::param_grad_split(&g, c_out, &mut out, &y, &x, b, 0).unwrap();
        out
    });
}

#[test]
fn channel_last_winograd_kernels_do_not_depend_on_the_thread_count() {
    for b in [11, 5] {
        channel_last_winograd::<f32>(32, 36, (9, 7), b);
        channel_last_winograd::<f64>(32, 36, (9, 7), b);
    }
}
