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

/// The property tests' configuration: `cases` cases from a fixed seed (proptest's default seed
/// is random per run; the project's tests use fixed seeds) and no failure persistence
/// (proptest would otherwise write `proptest-regressions/` files into the source tree when a
/// case fails, in CI too). A failing case is printed in the panic message and, with the fixed
/// seed, recurs on every run.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6c6f_6764),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// Unit roundoff of f64.
pub const U: f64 = f64::EPSILON / 2.0;

/// A random SPD matrix `s·Q diag(λ) Qᵀ` with `λ` log-uniform in `[1, cond]`, the end points
/// included (so the condition number is `cond` up to the rounding of the construction, a
/// relative `O(d·u·cond)` ≤ 4e-7 here), `s = scale`. Returns the matrix and `s·λ`.
pub fn spd_with_condition(
    rng: &mut impl Rng,
    d: usize,
    cond: f64,
    scale: f64,
) -> (Mat<f64>, Vec<f64>) {
    let eigs: Vec<f64> = (0..d)
        .map(|k| match k {
            0 => scale,
            k if k == d - 1 => scale * cond,
            _ => scale * cond.powf(rng.random::<f64>()),
        })
        .collect();
    (with_eigs(&random_orthogonal(rng, d), &eigs), eigs)
}

/// The same matrix as a nalgebra `DMatrix` (the dense references use nalgebra, independent of
/// the faer code inside logdet).
pub fn to_nalgebra(m: &Mat<f64>) -> nalgebra::DMatrix<f64> {
    nalgebra::DMatrix::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

/// `f(H) = V diag(f(λ)) Vᵀ` from nalgebra's `SymmetricEigen` (e.g. `f = ln`: the matrix log).
pub fn dense_fn(h: &Mat<f64>, f: impl Fn(f64) -> f64) -> nalgebra::DMatrix<f64> {
    let e = nalgebra::SymmetricEigen::new(to_nalgebra(h));
    let fl = nalgebra::DMatrix::from_diagonal(&e.eigenvalues.map(f));
    &e.eigenvectors * fl * e.eigenvectors.transpose()
}

/// `vᵀ M v`.
pub fn quad_form(m: &nalgebra::DMatrix<f64>, v: &[f64]) -> f64 {
    let v = nalgebra::DVector::from_column_slice(v);
    v.dot(&(m * &v))
}
