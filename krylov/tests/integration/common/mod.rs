//! Shared helpers for the krylov integration tests: random SPD matrices with a prescribed
//! spectrum, and dense reference solutions from faer.
#![allow(dead_code)]

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// A random orthogonal `d × d` matrix (Q factor of a Gaussian matrix, sign-fixed).
pub fn random_orthogonal(rng: &mut impl Rng, d: usize) -> Mat<f64> {
    let g = Mat::<f64>::from_fn(d, d, |_, _| rng.sample(StandardNormal));
    let qr = g.qr();
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

/// `Q diag(eigs) Qᵀ` with a random orthogonal `Q` (exactly symmetrised).
pub fn spd_with_eigs(rng: &mut impl Rng, eigs: &[f64]) -> Mat<f64> {
    let d = eigs.len();
    let q = random_orthogonal(rng, d);
    let mut h = Mat::<f64>::zeros(d, d);
    for i in 0..d {
        for j in 0..d {
            let mut s = 0.0;
            for k in 0..d {
                s += q[(i, k)] * eigs[k] * q[(j, k)];
            }
            h[(i, j)] = s;
        }
    }
    Mat::from_fn(d, d, |i, j| 0.5 * (h[(i, j)] + h[(j, i)]))
}

/// Eigenvalues log-uniformly spread over `[1, cond]` (both ends included when `d ≥ 2`).
pub fn spread_eigs(rng: &mut impl Rng, d: usize, cond: f64) -> Vec<f64> {
    (0..d)
        .map(|k| match (k, d) {
            (0, _) => 1.0,
            (1, _) => cond,
            _ => cond.powf(rng.random::<f64>()),
        })
        .collect()
}

/// A random SPD matrix of size `d` with condition number `cond`, and its eigenvalues.
pub fn random_spd(rng: &mut impl Rng, d: usize, cond: f64) -> (Mat<f64>, Vec<f64>) {
    let eigs = if d == 1 {
        vec![1.0]
    } else {
        spread_eigs(rng, d, cond)
    };
    (spd_with_eigs(rng, &eigs), eigs)
}

/// Dense solve `H x = b` by faer's Cholesky.
pub fn faer_solve(h: &Mat<f64>, b: &[f64]) -> Vec<f64> {
    let llt = h.llt(Side::Lower).unwrap();
    let rhs = Mat::<f64>::from_fn(b.len(), 1, |i, _| b[i]);
    let x = llt.solve(&rhs);
    (0..b.len()).map(|i| x[(i, 0)]).collect()
}

/// `H x` in f64.
pub fn matvec(h: &Mat<f64>, x: &[f64]) -> Vec<f64> {
    (0..x.len())
        .map(|i| (0..x.len()).map(|j| h[(i, j)] * x[j]).sum())
        .collect()
}

pub fn norm2(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

pub fn norm_inf(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Gaussian system-major data of length `n`.
pub fn gaussian(rng: &mut impl Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.sample(StandardNormal)).collect()
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `d × B` faer matrix (one system per column) from system-major data.
pub fn faer_batch<T>(data: &[f64], d: usize, b: usize, conv: impl Fn(f64) -> T) -> Mat<T>
where
    T: Copy + faer::traits::ComplexField,
{
    Mat::from_fn(d, b, |i, j| conv(data[j * d + i]))
}

/// The 2 × 2 matrices of the breakdown-cause tests' systems, `big` an entry whose products
/// are finite but whose `bᵀHb` (with `b = (1, 1)`) overflows in the dot products' precision:
/// no breakdown, CG rescales such a system (`cg_overflow.rs`).
pub fn breakdown_cause_matrices(big: f64) -> Vec<[[f64; 2]; 2]> {
    vec![
        [[f64::NAN, 0.0], [0.0, 1.0]],      // 0: NaN product at once
        [[-1.0, 0.0], [0.0, -1.0]],         // 1: negative curvature at once
        [[0.0, 0.0], [0.0, 0.0]],           // 2: zero curvature at once
        [[f64::INFINITY, 0.0], [0.0, 1.0]], // 3: +Inf product at once
        [[big, 0.0], [0.0, big]],           // 4: finite product, bᵀHb overflows: rescaled
        [[3.0, 0.0], [0.0, -1.0]],          // 5: one step (pᵀHp = 2), then pᵀHp = −24
        [[1.0, 0.0], [0.0, 2.0]],           // 6: SPD, converges in 2 iterations
    ]
}

/// What [`breakdown_cause_matrices`] give with `b = (1, 1)` in every system and default
/// parameters: `(breakdown, non_finite, iterations)`. System 4 (`big = 0.75·MAX` of the
/// reductions' type) is rescaled once its `bᵀHb` overflows; its solution `1/big` lies in the
/// subnormals, where the step `α·p` underflows: it stagnates on its true residual after a
/// step and a restart, instead of breaking down.
pub fn breakdown_cause_expected() -> (Vec<bool>, Vec<bool>, Vec<usize>) {
    (
        vec![true, true, true, true, false, true, false],
        vec![true, false, false, true, false, false, false],
        vec![0, 0, 0, 0, 2, 1, 2],
    )
}
