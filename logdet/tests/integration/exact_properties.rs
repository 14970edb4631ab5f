//! Property tests (proptest, fixed seed) of `exact_logdet` on random SPD batches: agreement
//! with nalgebra's symmetric eigen-solver, and invariances (scaling, symmetric permutation,
//! diagonal congruence, block-diagonal assembly, batch order).
//!
//! Tolerances. Both Cholesky and the symmetric eigen-solver are backward stable: each computes
//! the log-det of `H + E` with `‖E‖₂ ≤ c·d·u·‖H‖₂`, and
//! `|log det(H + E) − log det H| ≤ d·‖H⁻¹E‖₂ ≤ c·d²·u·κ` (κ the condition number), so two
//! such values differ by at most `2c·d²·u·κ`; `c = 4` gives [`backward_tol`]'s `8·d²·u·κ`
//! (measured over 2,000 cases per test: at most 0.27 of the tolerance against the eigenvalues,
//! 0.17 for scaling, 0.03 or less for the other invariances). The final sums of `d` logarithms add
//! `d·u·Σ|log λ|` each, hence the second term.

use crate::common::*;
use faer::Mat;
use logdet::exact_logdet;
use proptest::prelude::*;
use rand::Rng;
use rand::seq::SliceRandom;

/// `8·d²·u·κ + 4·d·u·(Σ|log λ| + 1)`: see the module docs.
fn backward_tol(d: usize, cond: f64, log_mass: f64) -> f64 {
    let d = d as f64;
    8.0 * d * d * U * cond + 4.0 * d * U * (log_mass + 1.0)
}

/// A batch of `bsz` random SPD matrices of size `d`, condition number `cond`, each scaled by
/// its own `10^U(−log_scale, log_scale)`; also `Σ|log λ|` per matrix.
fn batch(seed: u64, d: usize, bsz: usize, cond: f64, log_scale: f64) -> (Vec<Mat<f64>>, Vec<f64>) {
    let mut r = rng(seed);
    (0..bsz)
        .map(|_| {
            let s = 10f64.powf(r.random_range(-log_scale..=log_scale));
            let (h, eigs) = spd_with_condition(&mut r, d, cond, s);
            (h, eigs.iter().map(|l| l.ln().abs()).sum::<f64>())
        })
        .unzip()
}

proptest! {
    #![proptest_config(proptest_config(64))]

    /// `exact_logdet` equals `Σ log λ` with `λ` from nalgebra's `SymmetricEigen` of the same
    /// matrix (not the designed spectrum: the construction rounds), for d = 1…16, batches of
    /// 1…4, condition numbers 1…1e8 and scales 1e-4…1e4 (so that log det is far from 0 and a
    /// lost factor, e.g. `Σ log L_kk` without the 2, cannot pass).
    #[test]
    fn exact_logdet_matches_symmetric_eigen(
        seed in any::<u64>(), d in 1usize..=16, bsz in 1usize..=4,
        log_cond in 0.0f64..=8.0, log_scale in 0.0f64..=4.0,
    ) {
        let cond = 10f64.powf(log_cond);
        let (mats, log_mass) = batch(seed, d, bsz, cond, log_scale);
        let got = exact_logdet(&mats).unwrap();
        prop_assert_eq!(got.len(), bsz);
        for i in 0..bsz {
            let eig = nalgebra::SymmetricEigen::new(to_nalgebra(&mats[i])).eigenvalues;
            prop_assert!(eig.iter().all(|l| *l > 0.0), "{:?}", eig);
            let expected: f64 = eig.iter().map(|l| l.ln()).sum();
            let tol = backward_tol(d, cond, log_mass[i]);
            prop_assert!(
                (got[i] - expected).abs() <= tol,
                "system {}: {} vs {} (tol {:e})", i, got[i], expected, tol
            );
        }
    }

    /// Invariances, each against the unmodified matrices' log-dets `ℓ_i`:
    /// * scaling: `log det(c·H) = d·log c + ℓ` for `c = 10^U(−8, 8)` (the entries of `c·H`
    ///   are rounded: one more backward error of `u·|H|`, within [`backward_tol`]);
    /// * symmetric permutation `P H Pᵀ` and diagonal congruence `D H D` (`D` a random positive
    ///   diagonal in `[1/2, 2]`, `+ 2 Σ log D_kk`): the same spectrum up to rounding of the
    ///   rearranged or scaled entries (condition number of `DHD` ≤ 16κ);
    /// * block-diagonal assembly: `log det(H_1 ⊕ … ⊕ H_B) = Σ ℓ_i` (size `Σd ≤ 64`);
    /// * batch structure: one batched call equals one call per system, and a permuted batch
    ///   gives the permuted values, bit for bit (systems are independent).
    #[test]
    fn exact_logdet_invariances(
        seed in any::<u64>(), d in 1usize..=16, bsz in 1usize..=4,
        log_cond in 0.0f64..=8.0, log_c in -8.0f64..=8.0,
    ) {
        let cond = 10f64.powf(log_cond);
        let (mats, log_mass) = batch(seed, d, bsz, cond, 2.0);
        let base = exact_logdet(&mats).unwrap();
        let mut r = rng(seed ^ 0x5eed);

        // Batch structure.
        for i in 0..bsz {
            prop_assert_eq!(exact_logdet(&mats[i..=i]).unwrap(), vec![base[i]]);
        }
        let mut perm: Vec<usize> = (0..bsz).collect();
        perm.shuffle(&mut r);
        let permuted: Vec<Mat<f64>> = perm.iter().map(|&k| mats[k].clone()).collect();
        let expected: Vec<f64> = perm.iter().map(|&k| base[k]).collect();
        prop_assert_eq!(exact_logdet(&permuted).unwrap(), expected);

        // Scaling.
        let c = 10f64.powf(log_c);
        let scaled: Vec<Mat<f64>> = mats.iter().map(|m| m * faer::Scale(c)).collect();
        let got = exact_logdet(&scaled).unwrap();
        for i in 0..bsz {
            let shift = d as f64 * c.ln();
            let tol = backward_tol(d, cond, log_mass[i] + shift.abs());
            prop_assert!(
                (got[i] - base[i] - shift).abs() <= tol,
                "c = {}, system {}: {} vs {} + {} (tol {:e})", c, i, got[i], base[i], shift, tol
            );
        }

        // Symmetric permutation and diagonal congruence.
        let mut p: Vec<usize> = (0..d).collect();
        p.shuffle(&mut r);
        let diag: Vec<f64> = (0..d).map(|_| 2f64.powf(r.random_range(-1.0..1.0))).collect();
        let log_diag: f64 = diag.iter().map(|x| x.ln()).sum();
        let sym_perm: Vec<Mat<f64>> =
            mats.iter().map(|m| Mat::from_fn(d, d, |i, j| m[(p[i], p[j])])).collect();
        let congruent: Vec<Mat<f64>> =
            mats.iter().map(|m| Mat::from_fn(d, d, |i, j| diag[i] * m[(i, j)] * diag[j])).collect();
        let (got_p, got_d) = (exact_logdet(&sym_perm).unwrap(), exact_logdet(&congruent).unwrap());
        for i in 0..bsz {
            let tol = backward_tol(d, 16.0 * cond, log_mass[i] + 2.0 * log_diag.abs());
            prop_assert!((got_p[i] - base[i]).abs() <= tol, "PHPᵀ: {} vs {}", got_p[i], base[i]);
            prop_assert!(
                (got_d[i] - base[i] - 2.0 * log_diag).abs() <= tol,
                "DHD: {} vs {} + {}", got_d[i], base[i], 2.0 * log_diag
            );
        }

        // Block-diagonal assembly. The off-block entries are exact zeros and stay so in the
        // factorisation (products with 0 and sums with 0 are exact), so each block is factorised
        // with its own backward error, relative to its own norm (the blocks' scales differ by up
        // to 1e4: a tolerance from the whole matrix's condition number would be vacuous); the
        // sum of n logarithms adds n·u·Σ|log λ|.
        let n = d * bsz;
        let block = Mat::<f64>::from_fn(n, n, |i, j| {
            if i / d == j / d { mats[i / d][(i % d, j % d)] } else { 0.0 }
        });
        let whole = exact_logdet(&[block]).unwrap()[0];
        let sum: f64 = base.iter().sum();
        let total_mass: f64 = log_mass.iter().sum();
        let tol = log_mass.iter().map(|m| backward_tol(d, cond, *m)).sum::<f64>()
            + 4.0 * n as f64 * U * total_mass;
        prop_assert!((whole - sum).abs() <= tol, "⊕: {} vs Σ {} (tol {:e})", whole, sum, tol);
    }
}
