//! The Winograd convolutions (through `ops.rs`'s dispatch) against direct loops in f64: forward (with and without bias),
//! adjoint and kernel gradient, for 3×3 and 5×5 kernels, image sides that are and are not
//! multiples of the tile, and batches that span several chunks and tasks.
//!
//! Tolerance, relative to the largest entry of the reference: 1e-12 (the transforms with
//! `α = 8` have entries up to 2⁶ and the products sum `C·α²` terms; the errors measured on
//! cases like these are 3e-15–2e-14).

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Case {
    b: usize,
    c: usize,
    c_out: usize,
    h: usize,
    w: usize,
    r: usize,
}

impl Case {
    fn geometry(&self) -> PatchGeometry {
        PatchGeometry::for_conv(self.c, (self.h, self.w), (self.r, self.r), 1, self.r / 2)
            .expect("valid geometry")
    }
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// `x[b][c][i + u − p][j + v − p]`, zero outside the image.
fn pixel(x: &[f64], s: &Case, channels: usize, (b, c): (usize, usize), i: usize, j: usize) -> f64 {
    if i < s.h && j < s.w {
        x[((b * channels + c) * s.h + i) * s.w + j]
    } else {
        0.0
    }
}

fn direct_forward(s: &Case, x: &[f64], k: &[f64], bias: &[f64]) -> Vec<f64> {
    let (p, r) = (s.r / 2, s.r);
    let mut y = vec![0.0; s.b * s.c_out * s.h * s.w];
    for b in 0..s.b {
        for o in 0..s.c_out {
            for i in 0..s.h {
                for j in 0..s.w {
                    let mut acc = bias[o];
                    for c in 0..s.c {
                        for u in 0..r {
                            for v in 0..r {
                                let (ii, jj) = ((i + u).wrapping_sub(p), (j + v).wrapping_sub(p));
                                acc += k[((o * s.c + c) * r + u) * r + v]
                                    * pixel(x, s, s.c, (b, c), ii, jj);
                            }
                        }
                    }
                    y[((b * s.c_out + o) * s.h + i) * s.w + j] = acc;
                }
            }
        }
    }
    y
}

/// `Σ_{o,u,v} K[o][c][u][v] y[b][o][i − u + p][j − v + p]`.
fn direct_adjoint(s: &Case, y: &[f64], k: &[f64]) -> Vec<f64> {
    let (p, r) = (s.r / 2, s.r);
    let mut x = vec![0.0; s.b * s.c * s.h * s.w];
    for b in 0..s.b {
        for c in 0..s.c {
            for i in 0..s.h {
                for j in 0..s.w {
                    let mut acc = 0.0;
                    for o in 0..s.c_out {
                        for u in 0..r {
                            for v in 0..r {
                                let (ii, jj) = ((i + p).wrapping_sub(u), (j + p).wrapping_sub(v));
                                acc += k[((o * s.c + c) * r + u) * r + v]
                                    * pixel(y, s, s.c_out, (b, o), ii, jj);
                            }
                        }
                    }
                    x[((b * s.c + c) * s.h + i) * s.w + j] = acc;
                }
            }
        }
    }
    x
}

/// `Σ_{b,i,j} ȳ[b][o][i][j] x[b][c][i + u − p][j + v − p]`.
fn direct_kernel_grad(s: &Case, x: &[f64], ybar: &[f64]) -> Vec<f64> {
    let (p, r) = (s.r / 2, s.r);
    let mut k = vec![0.0; s.c_out * s.c * r * r];
    for o in 0..s.c_out {
        for c in 0..s.c {
            for u in 0..r {
                for v in 0..r {
                    let mut acc = 0.0;
                    for b in 0..s.b {
                        for i in 0..s.h {
                            for j in 0..s.w {
                                let (ii, jj) = ((i + u).wrapping_sub(p), (j + v).wrapping_sub(p));
                                acc += ybar[((b * s.c_out + o) * s.h + i) * s.w + j]
                                    * pixel(x, s, s.c, (b, c), ii, jj);
                            }
                        }
                    }
                    k[((o * s.c + c) * r + u) * r + v] = acc;
                }
            }
        }
    }
    k
}

fn assert_close<T: GemmFloat>(ours: &[T], reference: &[f64], tol: f64, what: &str) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = ours
        .iter()
        .zip(reference)
        .fold(0.0f64, |m, (a, b)| m.max((a.to_f64() - b).abs()));
    assert!(
        err <= tol * scale,
        "{what}: error {err:e} against scale {scale:e}"
    );
}

fn cast<T: GemmFloat>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&e| T::from_f64(e)).collect()
}

/// The three ops against the direct loops, in `T`, through `ops.rs`'s dispatch.
fn check<T: GemmFloat>(s: &Case, tol: f64, grad_tol: f64, seed: u64) {
    let g = s.geometry();
    assert!(
        covers::<T>(&g, s.c_out),
        "the case must take the Winograd path"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let x = random(&mut rng, s.b * s.c * s.h * s.w);
    let k = random(&mut rng, s.c_out * s.c * s.r * s.r);
    let bias = random(&mut rng, s.c_out);
    let ybar = random(&mut rng, s.b * s.c_out * s.h * s.w);
    let bias_c = random(&mut rng, s.c);
    let what = format!("{}×{} {}→{} r={} b={}", s.h, s.w, s.c, s.c_out, s.r, s.b);

    let (xt, kt) = (cast::<T>(&x), cast::<T>(&k));
    let y = super::super::ops::forward_cpu(&xt, &kt, Some(&cast::<T>(&bias)), &g, s.b, s.c_out)
        .expect("forward");
    assert_close(
        &y,
        &direct_forward(s, &x, &k, &bias),
        tol,
        &format!("forward {what}"),
    );
    let y0 = super::super::ops::forward_cpu(&xt, &kt, None, &g, s.b, s.c_out).expect("forward");
    let zero = vec![0.0; s.c_out];
    assert_close(
        &y0,
        &direct_forward(s, &x, &k, &zero),
        tol,
        &format!("unbiased {what}"),
    );

    let ybar_t = cast::<T>(&ybar);
    let xbar =
        super::super::ops::adjoint_cpu(&ybar_t, &kt, Some(&cast::<T>(&bias_c)), &g, s.b, s.c_out)
            .expect("adjoint");
    let mut expected = direct_adjoint(s, &ybar, &k);
    let plane = s.h * s.w;
    for (n, e) in expected.iter_mut().enumerate() {
        *e += bias_c[n / plane % s.c];
    }
    assert_close(&xbar, &expected, tol, &format!("adjoint {what}"));

    let kbar = super::super::ops::kernel_grad_cpu(&xt, &ybar_t, &g, s.b, s.c_out).expect("grad");
    assert_close(
        &kbar,
        &direct_kernel_grad(s, &x, &ybar),
        grad_tol,
        &format!("kernel grad {what}"),
    );
}

fn cases() -> Vec<Case> {
    vec![
        // The VAE's head shape, scaled down: 5×5 on a 28×20 map (multiples of the tile);
        // more output than input channels (the adjoint runs transposed).
        Case {
            b: 2,
            c: 32,
            c_out: 48,
            h: 28,
            w: 20,
            r: 5,
        },
        // 7×5 maps (not multiples of 4): 4 tiles per image, 16 images per chunk, so tasks of
        // 20 (2 threads) or 40 images span several chunks, the last one partial.
        Case {
            b: 40,
            c: 32,
            c_out: 32,
            h: 7,
            w: 5,
            r: 5,
        },
        // More input than output channels (the forward runs transposed).
        Case {
            b: 7,
            c: 37,
            c_out: 32,
            h: 14,
            w: 10,
            r: 5,
        },
        // 3×3 kernels, odd sides.
        Case {
            b: 3,
            c: 32,
            c_out: 36,
            h: 9,
            w: 11,
            r: 3,
        },
        // A one-pixel-high image: every tile is mostly padding.
        Case {
            b: 2,
            c: 32,
            c_out: 32,
            h: 1,
            w: 6,
            r: 5,
        },
    ]
}

#[test]
fn winograd_convolutions_match_direct_loops() {
    for (i, s) in cases().iter().enumerate() {
        check::<f64>(s, 1e-12, 1e-12, 100 + i as u64);
    }
}

#[test]
fn thin_or_strided_or_unpadded_or_f32_convolutions_are_not_covered() {
    let conv =
        |c, hw, r, stride, pad| PatchGeometry::for_conv(c, hw, (r, r), stride, pad).expect("valid");
    assert!(covers::<f64>(&conv(32, (8, 8), 5, 1, 2), 32));
    assert!(covers::<f64>(&conv(32, (8, 8), 3, 1, 1), 32));
    assert!(!covers::<f32>(&conv(32, (8, 8), 5, 1, 2), 32));
    assert!(!covers::<f64>(&conv(31, (8, 8), 5, 1, 2), 32));
    assert!(!covers::<f64>(&conv(32, (8, 8), 5, 1, 2), 31));
    assert!(!covers::<f64>(&conv(32, (8, 8), 5, 2, 2), 32));
    assert!(!covers::<f64>(&conv(32, (8, 8), 5, 1, 1), 32));
    assert!(!covers::<f64>(&conv(32, (8, 8), 7, 1, 3), 32));
    assert!(!covers::<f64>(&conv(32, (8, 8), 1, 1, 0), 32));
}
