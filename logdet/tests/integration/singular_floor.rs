//! What SLQ gives for a singular SPD matrix: its zero eigenvalue counts as the round-off level
//! `RITZ_ROUNDOFF_FACTOR·u·max|θ|` (documented on `slq_logdet` and `RITZ_ROUNDOFF_FACTOR`),
//! not `−∞`, an error, or an absolute floor.

use faer::Mat;
use krylov::DenseNalgebraOperator;
use logdet::{RITZ_ROUNDOFF_FACTOR, SlqParams, rademacher_probes, slq_logdet};
use nalgebra::DMatrix;

use crate::common::*;

/// `H = Q diag(0, 1, …, d−1) Qᵀ` (rotated, so no probe is an eigenvector). With `m = d` steps
/// the Ritz values are the eigenvalues to round-off, the Ritz value of 0 is `O(u‖H‖)` of
/// either sign (at most 3u·‖H‖ measured, 30× below the level) and is raised to the level
/// `100·u·(d−1)` (the largest Ritz value is `d − 1` to round-off). So every probe `v` gives
/// `Σ_k (vᵀq_k)² log λ̃_k` with `λ̃_0 = level`, `λ̃_k = k`: `est` is the mean of that over
/// the probes `slq_logdet` draws (Rademacher, one `rademacher_probes(rng, 1, d)` per probe
/// round, reproduced here from a clone of the generator).
///
/// Tolerance 1e-10: the Ritz values of the non-zero eigenvalues carry `O(d·u·‖H‖)` ≈ 1e-13
/// absolute error (log error below 1e-13), the weights `τ_j²` an error `O(u‖H‖/gap)` ≈ 1e-14
/// (gap 1), times `|log level| ≈ 28` and `‖v‖² = d`; measured ≤ 3e-14 (d = 4, 12, 30). The
/// reference's absolute floor 1e-8 would move the value by `w·(log 1e-8 − log level)` ≈ 10·w,
/// a level 10× off by `w·log 10`, with `w` (the mean of `(vᵀq_0)²`, ≥ 0.079 here) asserted
/// above 0.01 so that the floor weighs in.
#[test]
fn singular_matrix_counts_its_zero_eigenvalue_as_the_roundoff_level() {
    let mut r = rng(3);
    for d in [4usize, 12, 30] {
        let q = random_orthogonal(&mut r, d);
        let eigs: Vec<f64> = (0..d).map(|k| k as f64).collect();
        let singular = with_eigs(&q, &eigs);
        let op = DenseNalgebraOperator::new(vec![DMatrix::from_fn(d, d, |i, j| singular[(i, j)])])
            .unwrap();
        let probes = 4;
        let mut replay = r.clone();
        let est = slq_logdet(
            &op,
            &DMatrix::<f64>::zeros(d, 1),
            &mut r,
            &SlqParams::default()
                .with_probes(probes)
                .with_lanczos_steps(d),
        )
        .unwrap();
        let level = RITZ_ROUNDOFF_FACTOR * f64::EPSILON * (d - 1) as f64;
        let floored: Vec<f64> = eigs.iter().map(|&l| l.max(level).ln()).collect();
        let mut expected = 0.0;
        let mut zero_weight = 0.0;
        for _ in 0..probes {
            let v = rademacher_probes(&mut replay, 1, d).unwrap();
            let v = Mat::<f64>::from_fn(d, 1, |i, _| v[i]);
            let coeffs = q.transpose() * &v;
            expected += (0..d)
                .map(|k| coeffs[(k, 0)].powi(2) * floored[k])
                .sum::<f64>();
            zero_weight += coeffs[(0, 0)].powi(2);
        }
        expected /= probes as f64;
        zero_weight /= probes as f64;
        // The zero eigenvalue must weigh in, or the test would not see the floor.
        assert!(zero_weight > 0.01, "d = {d}: weight {zero_weight}");
        assert!(
            (est.estimate[0] - expected).abs() < 1e-10,
            "d = {d}: {} vs {expected} (level {level:e}, weight of λ = 0: {zero_weight})",
            est.estimate[0]
        );
    }
}
