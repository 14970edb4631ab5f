//! The Winograd convolutions against a direct loop over the kernel taps (the definition of a
//! "same" cross-correlation with zero padding), on odd and even image sizes, several groups
//! per task, stored and accumulated outputs, f64 and f32.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random<T: Real>(rng: &mut StdRng, n: usize) -> Vec<T> {
    (0..n)
        .map(|_| T::from_f64(rng.random_range(-1.0..1.0)))
        .collect()
}

fn geometry(c: usize, h: usize, w: usize) -> PatchGeometry {
    PatchGeometry::for_conv(c, (h, w), (3, 3), 1, 1).expect("a 3×3 same convolution fits")
}

/// `y[b, i, j, o] = Σ_{c, a, e} K[o, c, a, e] x[b, i + a − 1, j + e − 1, c]` (channel-last,
/// zero outside the image), in f64.
fn direct(k: &[f64], x: &[f64], b: usize, (h, w, c, co): (usize, usize, usize, usize)) -> Vec<f64> {
    let mut y = vec![0.0; b * h * w * co];
    for img in 0..b {
        for i in 0..h {
            for j in 0..w {
                for o in 0..co {
                    let mut s = 0.0;
                    for ci in 0..c {
                        for a in 0..3 {
                            for e in 0..3 {
                                let (ii, jj) = ((i + a) as isize - 1, (j + e) as isize - 1);
                                if ii < 0 || jj < 0 || ii >= h as isize || jj >= w as isize {
                                    continue;
                                }
                                let px = ((img * h + ii as usize) * w + jj as usize) * c + ci;
                                s += k[((o * c + ci) * 3 + a) * 3 + e] * x[px];
                            }
                        }
                    }
                    y[((img * h + i) * w + j) * co + o] = s;
                }
            }
        }
    }
    y
}

/// `x̄[b, i + a − 1, j + e − 1, c] += Σ_o K[o, c, a, e] ȳ[b, i, j, o]` (the transpose of
/// [`direct`]; nothing lands outside the image), in f64.
fn direct_adjoint(
    k: &[f64],
    ybar: &[f64],
    b: usize,
    (h, w, c, co): (usize, usize, usize, usize),
) -> Vec<f64> {
    let mut xbar = vec![0.0; b * h * w * c];
    for img in 0..b {
        for i in 0..h {
            for j in 0..w {
                let out = ((img * h + i) * w + j) * co;
                for a in 0..3 {
                    for e in 0..3 {
                        let (ii, jj) = ((i + a) as isize - 1, (j + e) as isize - 1);
                        if ii < 0 || jj < 0 || ii >= h as isize || jj >= w as isize {
                            continue;
                        }
                        let px = ((img * h + ii as usize) * w + jj as usize) * c;
                        for ci in 0..c {
                            for o in 0..co {
                                xbar[px + ci] += k[((o * c + ci) * 3 + a) * 3 + e] * ybar[out + o];
                            }
                        }
                    }
                }
            }
        }
    }
    xbar
}

/// `∂⟨ȳ, conv(x, K)⟩/∂K` by the direct loop, f64.
fn direct_kernel_grad(
    ybar: &[f64],
    x: &[f64],
    b: usize,
    (h, w, c, co): (usize, usize, usize, usize),
) -> Vec<f64> {
    let mut g = vec![0.0; co * c * 9];
    for img in 0..b {
        for i in 0..h {
            for j in 0..w {
                for a in 0..3 {
                    for e in 0..3 {
                        let (ii, jj) = ((i + a) as isize - 1, (j + e) as isize - 1);
                        if ii < 0 || jj < 0 || ii >= h as isize || jj >= w as isize {
                            continue;
                        }
                        let px = ((img * h + ii as usize) * w + jj as usize) * c;
                        let out = ((img * h + i) * w + j) * co;
                        for o in 0..co {
                            for ci in 0..c {
                                g[((o * c + ci) * 3 + a) * 3 + e] += ybar[out + o] * x[px + ci];
                            }
                        }
                    }
                }
            }
        }
    }
    g
}

fn to_f64<T: Real>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// Largest `|a − b|` over `max |b|`.
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// `op(out, acc)` stored over random contents and added onto random contents, each against
/// `want` (the direct loop's result); the stored result.
fn stored_and_accumulated<T: Real>(
    rng: &mut StdRng,
    want: &[f64],
    tol: f64,
    what: &str,
    op: impl Fn(&mut [T], bool),
) -> Vec<T> {
    let mut out = random::<T>(rng, want.len());
    op(&mut out, false);
    let e = rel_err(&to_f64(&out), want);
    assert!(e < tol, "{what}: {e:e}");
    let base = random::<T>(rng, want.len());
    let mut acc = base.clone();
    op(&mut acc, true);
    let sum: Vec<f64> = to_f64(&base).iter().zip(want).map(|(p, q)| p + q).collect();
    let e = rel_err(&to_f64(&acc), &sum);
    assert!(e < tol, "accumulated {what}: {e:e}");
    out
}

/// Forward and adjoint (stored and accumulated) and kernel gradient of one shape against the
/// direct loops; the adjoint, on the forward's transformed kernel, also by the dot-product
/// identity `⟨ȳ, L x⟩ = ⟨Lᵀ ȳ, x⟩`.
fn check<T: Real>(b: usize, (h, w, c, co): (usize, usize, usize, usize), tol: f64, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let g = geometry(c, h, w);
    assert!(covers(&g, co));
    let (k, x) = (
        random::<T>(&mut rng, co * c * 9),
        random::<T>(&mut rng, b * h * w * c),
    );
    let ybar = random::<T>(&mut rng, b * h * w * co);
    let (k64, x64, ybar64) = (to_f64(&k), to_f64(&x), to_f64(&ybar));
    let kernel = TransformedKernel::of(&k, co, c);
    let shape = format!("{b}×{h}×{w}×{c}→{co}");

    let want = direct(&k64, &x64, b, (h, w, c, co));
    stored_and_accumulated(
        &mut rng,
        &want,
        tol,
        &format!("forward {shape}"),
        |y, acc| forward(&kernel, &g, &x, y, b, acc).expect("forward"),
    );

    let want_bar = direct_adjoint(&k64, &ybar64, b, (h, w, c, co));
    let xbar = stored_and_accumulated(
        &mut rng,
        &want_bar,
        tol,
        &format!("adjoint {shape}"),
        |xb, acc| adjoint(&kernel, &g, &ybar, xb, b, acc).expect("adjoint"),
    );
    let lhs: f64 = ybar64.iter().zip(&want).map(|(p, q)| p * q).sum();
    let rhs: f64 = to_f64(&xbar).iter().zip(&x64).map(|(p, q)| p * q).sum();
    let scale: f64 = ybar64.iter().zip(&want).map(|(p, q)| (p * q).abs()).sum();
    assert!(
        (lhs - rhs).abs() < tol * scale,
        "adjoint identity: {lhs} vs {rhs}"
    );

    let mut kbar = random::<T>(&mut rng, co * c * 9);
    let before = to_f64(&kbar);
    param_grad(&g, co, &mut kbar, &ybar, &x, b).expect("kernel gradient");
    let grad = direct_kernel_grad(&ybar64, &x64, b, (h, w, c, co));
    let added: Vec<f64> = to_f64(&kbar)
        .iter()
        .zip(&before)
        .map(|(p, q)| p - q)
        .collect();
    let e = rel_err(&added, &grad);
    assert!(e < tol, "kernel gradient {b}×{h}×{w}×{c}→{co}: {e:e}");
    // One task over all images, its products on two threads (the path of wide layers, whose
    // tasks' gradients would exceed `MAX_PARTIAL_GRADIENT_BYTES`; forced here by a limit of 0).
    let mut one_task = before.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a pool of two threads");
    pool.install(|| param_grad_split(&g, co, &mut one_task, &ybar, &x, b, 0))
        .expect("kernel gradient in one task");
    let added: Vec<f64> = to_f64(&one_task)
        .iter()
        .zip(&before)
        .map(|(p, q)| p - q)
        .collect();
    let e = rel_err(&added, &grad);
    assert!(
        e < tol,
        "kernel gradient in one task {b}×{h}×{w}×{c}→{co}: {e:e}"
    );
}

// f64: the transforms round ~100× above ε = 2.2e-16 (see the f32 case below; NumPy: 5e-15
// on a 6×6 tile), so 1e-12 leaves a margin of ~100; a wrong tap or transform entry gives
// O(1).
#[test]
fn matches_direct_f64_square_odd_and_even() {
    check::<f64>(3, (7, 7, 32, 32), 1e-12, 1);
    check::<f64>(2, (6, 6, 32, 40), 1e-12, 2);
}

#[test]
fn matches_direct_f64_rectangular_and_tiny() {
    check::<f64>(2, (5, 8, 33, 32), 1e-12, 3);
    check::<f64>(4, (1, 1, 32, 32), 1e-12, 4);
    check::<f64>(3, (2, 3, 32, 36), 1e-12, 5);
    check::<f64>(2, (9, 13, 32, 32), 1e-12, 11);
}

/// 28×28 makes chunks of 9 tile rows (an image has 7 rows of 7 tiles): 12 images span
/// chunks that straddle images and a short last chunk.
#[test]
fn matches_direct_f64_across_groups() {
    check::<f64>(12, (28, 28, 32, 32), 1e-12, 6);
}

// f32: the transforms scale terms by up to 8 · 5 and the kernel's by 1/24 before the sums
// cancel, so F(4×4, 3×3) rounds ~100× above ε = 1.2e-7 relative to the largest output (a
// NumPy check over 200 random 64-channel tiles: 2.6e-6 on average, 9.8e-6 at most): 5e-5
// is five times the worst seen; a wrong coefficient gives O(1).
#[test]
fn matches_direct_f32() {
    check::<f32>(3, (7, 7, 32, 48), 5e-5, 7);
    check::<f32>(6, (14, 14, 48, 32), 5e-5, 8);
    check::<f32>(2, (28, 28, 64, 64), 5e-5, 10);
}

#[test]
fn thin_or_other_geometries_are_not_covered() {
    assert!(!covers(&geometry(4, 14, 14), 64));
    assert!(!covers(&geometry(64, 14, 14), 16));
    assert!(!covers(&geometry(16, 14, 14), 64));
    assert!(covers(&geometry(32, 14, 14), 32));
    let five = PatchGeometry::for_conv(32, (8, 8), (5, 5), 1, 2).expect("5×5 fits");
    assert!(!covers(&five, 32));
    let strided = PatchGeometry::for_conv(32, (8, 8), (3, 3), 2, 1).expect("stride 2 fits");
    assert!(!covers(&strided, 32));
}

/// A transformed kernel for other channel counts than the images' is an error, not a
/// misread buffer.
#[test]
fn a_kernel_for_other_channels_is_refused() {
    let (g, k) = (geometry(32, 8, 8), vec![0.5f64; 40 * 32 * 9]);
    let (x, mut y) = (vec![1.0; 2 * 8 * 8 * 32], vec![0.0; 2 * 8 * 8 * 40]);
    assert!(forward(&TransformedKernel::of(&k, 40, 32), &g, &x, &mut y, 2, false).is_ok());
    let other = TransformedKernel::of(&k, 32, 40);
    assert!(forward(&other, &g, &x, &mut y, 2, false).is_err());
    let mut xbar = vec![0.0; x.len()];
    let kernel = TransformedKernel::of(&k, 40, 32);
    assert!(adjoint(&kernel, &g, &y, &mut xbar, 2, false).is_ok());
    let other = TransformedKernel::of(&k, 32, 40);
    assert!(adjoint(&other, &g, &y, &mut xbar, 2, false).is_err());
}
