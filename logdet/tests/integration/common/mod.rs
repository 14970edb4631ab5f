//! Shared helpers for the logdet tests.
#![allow(dead_code)]

use faer::{Mat, Side};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn gaussian_mat(rng: &mut impl Rng, r: usize, c: usize) -> Mat<f64> {
    Mat::from_fn(r, c, |_, _| rng.sample(StandardNormal))
}

/// A random orthogonal matrix (sign-fixed Q factor of a Gaussian matrix).
pub fn random_orthogonal(rng: &mut impl Rng, d: usize) -> Mat<f64> {
    let qr = gaussian_mat(rng, d, d).qr();
    let q = qr.compute_Q();
    let r = qr.R();
    Mat::from_fn(d, d, |i, j| {
        if r[(j, j)] < 0.0 {
            -q[(i, j)]
        } else {
            q[(i, j)]
        }
    })
}

/// `Q diag(f(eigs)) Qᵀ` for a given orthogonal Q.
pub fn with_eigs(q: &Mat<f64>, eigs: &[f64]) -> Mat<f64> {
    let d = eigs.len();
    let h = Mat::<f64>::from_fn(d, d, |i, j| {
        (0..d).map(|k| q[(i, k)] * eigs[k] * q[(j, k)]).sum()
    });
    Mat::from_fn(d, d, |i, j| 0.5 * (h[(i, j)] + h[(j, i)]))
}

/// Symmetric eigen-decomposition via faer: (eigenvalues ascending, eigenvectors as columns).
pub fn eigh(h: &Mat<f64>) -> (Vec<f64>, Mat<f64>) {
    let e = h.self_adjoint_eigen(Side::Lower).unwrap();
    let d = h.nrows();
    let vals = (0..d).map(|i| e.S()[i]).collect();
    (vals, e.U().to_owned())
}

/// Per-probe variance of the Rademacher Hutchinson estimator of `tr M`:
/// `2(‖M_s‖_F² − Σ_k M_kk²)` with `M_s = (M + Mᵀ)/2`.
pub fn rademacher_variance(m: &Mat<f64>) -> f64 {
    let d = m.nrows();
    let mut s = 0.0;
    for i in 0..d {
        for j in 0..d {
            if i != j {
                let sym = 0.5 * (m[(i, j)] + m[(j, i)]);
                s += sym * sym;
            }
        }
    }
    2.0 * s
}

pub fn matmul(a: &Mat<f64>, b: &Mat<f64>) -> Mat<f64> {
    a * b
}
