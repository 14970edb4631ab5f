//! The row-by-row gathers and scatters of the transforms against the tile-by-tile loops they
//! replaced (kept here as the reference), bit for bit: both copy the same values into the
//! same places, so the transformed tiles and the images must agree exactly.

use super::{Plan, Rows, Sandwich, Scratch};
use crate::gemm_conv::PatchGeometry;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The former `input_transform`: tile by tile.
fn input_transform_by_tiles(p: &Plan<f64>, x: &[f64], channels: usize, s: &mut Scratch<f64>) {
    let (alpha, len, plane) = (p.alpha, s.len, p.plane());
    let mats = Sandwich::new(&p.bt, alpha, alpha);
    for c in 0..channels {
        for t in 0..len {
            let (img, i0, j0) = p.origin(t);
            let src = &x[(img * channels + c) * plane..][..plane];
            for u in 0..alpha {
                let row = (i0 + u).wrapping_sub(p.pad);
                for q in 0..alpha {
                    let col = (j0 + q).wrapping_sub(p.pad);
                    s.patch[(u * alpha + q) * len + t] = if row < p.h && col < p.w {
                        src[row * p.w + col]
                    } else {
                        0.0
                    };
                }
            }
        }
        mats.apply(Rows {
            src: &s.patch,
            src_stride: len,
            dst: &mut s.v[c * alpha * alpha * len..],
            dst_stride: len,
            tmp: &mut s.tmp,
            len,
        });
    }
}

/// The former `output_adjoint`: tile by tile.
fn output_adjoint_by_tiles(p: &Plan<f64>, ybar: &[f64], c_out: usize, s: &mut Scratch<f64>) {
    let (m, len, plane) = (p.m, s.len, p.plane());
    let mats = Sandwich::new(&p.a, p.alpha, m);
    for o in 0..c_out {
        for t in 0..len {
            let (img, i0, j0) = p.origin(t);
            let src = &ybar[(img * c_out + o) * plane..][..plane];
            for i in 0..m {
                for j in 0..m {
                    let (row, col) = (i0 + i, j0 + j);
                    s.tile[(i * m + j) * len + t] = if row < p.h && col < p.w {
                        src[row * p.w + col]
                    } else {
                        0.0
                    };
                }
            }
        }
        mats.apply(Rows {
            src: &s.tile,
            src_stride: len,
            dst: &mut s.prod[o * p.xi() * len..],
            dst_stride: len,
            tmp: &mut s.tmp,
            len,
        });
    }
}

/// The former `output_transform`: tile by tile.
fn output_transform_by_tiles(
    p: &Plan<f64>,
    y: &mut [f64],
    c_out: usize,
    bias: &[f64],
    s: &mut Scratch<f64>,
) {
    let (m, len, plane) = (p.m, s.len, p.plane());
    let mats = Sandwich::new(&p.at, m, p.alpha);
    for o in 0..c_out {
        mats.apply(Rows {
            src: &s.prod[o * p.xi() * len..],
            src_stride: len,
            dst: &mut s.tile,
            dst_stride: len,
            tmp: &mut s.tmp,
            len,
        });
        for t in 0..len {
            let (img, i0, j0) = p.origin(t);
            let dst = &mut y[(img * c_out + o) * plane..][..plane];
            for i in 0..m.min(p.h - i0) {
                for j in 0..m.min(p.w - j0) {
                    dst[(i0 + i) * p.w + j0 + j] = bias[o] + s.tile[(i * m + j) * len + t];
                }
            }
        }
    }
}

/// Geometries whose sides are and are not multiples of the tile (28×20: 7×5 tiles, 7×5:
/// 2×2 tiles with a partial row and column, 9×7 with 3×3 kernels), chunks of 1 to 3 images.
#[test]
fn row_by_row_transforms_are_the_tile_by_tile_ones_to_the_bit() {
    for (c, (h, w), r, images) in [
        (3, (28, 20), 5, 2),
        (2, (14, 10), 5, 3),
        (3, (7, 5), 5, 3),
        (2, (9, 7), 3, 1),
    ] {
        let g = PatchGeometry::for_conv(c, (h, w), (r, r), 1, r / 2).unwrap();
        let p = Plan::<f64>::new(&g).unwrap();
        let c_out = 4;
        let len = images * p.tiles;
        let x = random(1, images * c * h * w);
        let ybar = random(2, images * c_out * h * w);
        let bias = random(3, c_out);
        let what = format!("{h}×{w}, {r}×{r}, {images} images");

        let (mut new, mut old) = (
            Scratch::new(&p, c, c_out, len),
            Scratch::new(&p, c, c_out, len),
        );
        p.input_transform(&x, c, &mut new);
        input_transform_by_tiles(&p, &x, c, &mut old);
        assert!(
            bits(&new.v) == bits(&old.v),
            "{what}: input transforms differ"
        );

        p.output_adjoint(&ybar, c_out, &mut new);
        output_adjoint_by_tiles(&p, &ybar, c_out, &mut old);
        assert!(
            bits(&new.prod) == bits(&old.prod),
            "{what}: output adjoints differ"
        );

        let (mut y_new, mut y_old) = (vec![f64::NAN; ybar.len()], vec![f64::NAN; ybar.len()]);
        p.output_transform(&mut y_new, c_out, Some(&bias), &mut new);
        output_transform_by_tiles(&p, &mut y_old, c_out, &bias, &mut old);
        assert!(
            bits(&y_new) == bits(&y_old),
            "{what}: output transforms differ"
        );
        assert!(
            y_new.iter().all(|v| v.is_finite()),
            "{what}: a pixel was not written"
        );
    }
}
