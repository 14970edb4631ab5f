//! The one-pass gradients against the separate adjoint and kernel gradient (themselves
//! checked against direct loops in `winograd_tests.rs`), bit for bit, on pools of 1, 2 and 3
//! threads: the VAE's geometries (28×20 chunks of one image, 14×10 chunks of five, 7×5 of
//! sixteen) at batches that are no multiple of the 8 reduction tasks, and a 3×3 kernel.

use super::{adjoint_and_kernel_grad, covers};
use crate::gemm_conv::PatchGeometry;
use crate::gemm_conv::ops::{adjoint_cpu, kernel_grad_cpu};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `(C, C_o, (H, W), r, batch)`.
type Case = (usize, usize, (usize, usize), usize, usize);

fn check(&(c, c_out, (h, w), r, b): &Case) {
    let g = PatchGeometry::for_conv(c, (h, w), (r, r), 1, r / 2).unwrap();
    assert!(covers::<f64>(&g, c_out), "{c} → {c_out}");
    let x = random(1, b * c * h * w);
    let k = random(2, c_out * c * r * r);
    let ybar = random(3, b * c_out * h * w);
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (dx, dk) =
            pool.install(|| adjoint_and_kernel_grad(&x, &ybar, &k, &g, b, c_out).unwrap());
        let (dx_apart, dk_apart) = pool.install(|| {
            (
                adjoint_cpu(&ybar, &k, None, &g, b, c_out).unwrap(),
                kernel_grad_cpu(&x, &ybar, &g, b, c_out).unwrap(),
            )
        });
        let what = format!("{c} → {c_out} at {h}×{w}, {r}×{r}, batch {b}, {threads} threads");
        assert!(bits(&dx) == bits(&dx_apart), "{what}: the adjoints differ");
        assert!(
            bits(&dk) == bits(&dk_apart),
            "{what}: the kernel gradients differ"
        );
    }
}

#[test]
fn one_pass_gradients_are_the_separate_ones_to_the_bit() {
    let cases: [Case; 5] = [
        (32, 256, (28, 20), 5, 3),
        (32, 64, (28, 20), 5, 11),
        (32, 64, (14, 10), 5, 13),
        (32, 128, (7, 5), 5, 21),
        (32, 48, (9, 7), 3, 5),
    ];
    for case in &cases {
        check(case);
    }
}

/// No input channels' worth of tiles and an empty batch: zeros of the right sizes.
#[test]
fn an_empty_batch_gives_zero_gradients() {
    let g = PatchGeometry::for_conv(32, (8, 8), (5, 5), 1, 2).unwrap();
    let (dx, dk) =
        adjoint_and_kernel_grad::<f64>(&[], &[], &random(2, 64 * 32 * 25), &g, 0, 64).unwrap();
    assert!(dx.is_empty());
    assert_eq!(dk, vec![0.0; 64 * 32 * 25]);
}

/// [`covers`] is Winograd's cover with more output than input channels.
#[test]
fn covers_only_transposed_adjoints() {
    let g = PatchGeometry::for_conv(32, (28, 20), (5, 5), 1, 2).unwrap();
    assert!(covers::<f64>(&g, 64));
    assert!(!covers::<f64>(&g, 32));
    assert!(!covers::<f32>(&g, 64));
}
