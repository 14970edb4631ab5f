//! The three solvers on random `Icnn2` / `Icnn3` potentials plus `α/2‖x‖²`.

use crate::common::{
    IcnnPotential, icnn2_potential, icnn3_potential, max_abs_diff, normal_batch, residuals,
    solve_all,
};
use candle_core::{DType, Tensor};
use convex_opt::{
    BatchedPotential, FlatLbfgsParams, InversionOptions, InversionResult, LineSearch,
    invert_lbfgs_flat,
};
use icnn::ConvexPotential;

/// Reported residuals and flags agree with an independent recomputation at the returned x.
fn assert_honest<P: BatchedPotential>(name: &str, pot: &P, y: &Tensor, res: &InversionResult) {
    let r = residuals(pot, &res.x, y);
    for (i, &ri) in r.iter().enumerate() {
        // The solver's last evaluation was at a batch of different composition (subsets of
        // rows); per-row results agree to a few ulps of the gradient's magnitude.
        let slack = if y.dtype() == DType::F64 { 1e-12 } else { 1e-5 } + 1e-6 * ri;
        assert!(
            (ri - res.residual_inf[i]).abs() <= slack,
            "{name}: sample {i} reports {} but has {}",
            res.residual_inf[i],
            ri
        );
        if res.converged[i] {
            assert!(
                ri <= res.tolerance[i] + slack,
                "{name}: sample {i} flagged converged at residual {}",
                ri
            );
        }
    }
}

fn check_accurate_and_agreeing<N: ConvexPotential>(
    pot: &IcnnPotential<N>,
    n: usize,
    d: usize,
    seed: u64,
) {
    let y = (normal_batch(n, d, DType::F64, seed) * 1.5).unwrap();
    let results = solve_all(pot, &y, &InversionOptions::default());
    for (name, res) in &results {
        eprintln!(
            "{name}: max {:e} failed {} iters {}",
            res.max_residual(),
            res.num_failed(),
            res.iterations[0]
        );
    }
    for (name, res) in &results {
        assert!(
            res.all_converged(),
            "{name}: residuals {:?}",
            res.residual_inf
        );
        // Acceptance: ‖∇Φ(x) − y‖∞ ≤ 1e-8 on every sample (the default f64 tolerance is 1e-9).
        assert!(res.max_residual() <= 1e-8, "{name}: {}", res.max_residual());
        assert_honest(name, pot, &y, res);
    }
    // Strong convexity with modulus α: ‖x − x*‖₂ ≤ ‖r‖₂/α ≤ √d·1e-9/α for each solver, so two
    // solutions differ by at most 2√d·1e-9/α.
    let bound = 2.0 * (d as f64).sqrt() * 1e-9 / pot.alpha;
    for k in 1..results.len() {
        let diff = max_abs_diff(&results[0].1.x, &results[k].1.x);
        assert!(
            diff <= bound,
            "{} vs {}: {diff} > {bound}",
            results[0].0,
            results[k].0
        );
    }
}

#[test]
fn icnn2_f64_all_solvers_agree() {
    let d = 5;
    let pot = icnn2_potential(d, 16, 3, DType::F64, 100, 1.0, 1.0);
    check_accurate_and_agreeing(&pot, 48, d, 101);
}

#[test]
fn icnn3_f64_all_solvers_agree() {
    let d = 4;
    let pot = icnn3_potential(d, 16, 3, DType::F64, 200, 0.7, 0.5);
    check_accurate_and_agreeing(&pot, 48, d, 201);
}

#[test]
fn ill_conditioned_icnn_converges_or_is_reported() {
    // Small α (weak strong convexity) and a large network scale: condition numbers of the
    // Hessians up to ~1e4 and strongly curved gradients.
    let d = 6;
    for (alpha, scale) in [(1e-3, 10.0), (1e-2, 50.0)] {
        let pot = icnn2_potential(d, 16, 4, DType::F64, 300, scale, alpha);
        let y = (normal_batch(24, d, DType::F64, 301) * 3.0).unwrap();
        let opts = InversionOptions::default().with_max_iterations(500);
        let mut results = solve_all(&pot, &y, &opts);
        let strong_wolfe = FlatLbfgsParams::default().with_line_search(LineSearch::MoreThuente);
        results.push((
            "flat_strong_wolfe",
            invert_lbfgs_flat(&pot, &y, &opts, &strong_wolfe).unwrap(),
        ));
        for (name, res) in results {
            assert_honest(name, &pot, &y, &res);
            eprintln!(
                "α={alpha} scale={scale} {name}: {} / {} converged, max residual {:.2e}, iterations ≤ {}",
                res.converged.iter().filter(|&&c| c).count(),
                res.converged.len(),
                res.max_residual(),
                res.iterations.iter().max().unwrap()
            );
            // Newton–CG with exact HVPs handles this conditioning.
            if name == "newton" {
                assert!(res.all_converged(), "newton: {:?}", res.residual_inf);
            }
        }
    }
}

#[test]
fn icnn2_f32_reaches_default_tolerance() {
    let d = 8;
    let pot = icnn2_potential(d, 32, 4, DType::F32, 400, 0.69, 1.0);
    let y = normal_batch(64, d, DType::F32, 401);
    let opts = InversionOptions::default();
    for (name, res) in solve_all(&pot, &y, &opts) {
        assert_honest(name, &pot, &y, &res);
        eprintln!(
            "f32 {name}: {} / 64 converged, max residual {:.2e}",
            64 - res.num_failed(),
            res.max_residual()
        );
        if name != "flat" {
            // The batched solvers reach the documented f32 default on every sample.
            assert!(res.all_converged(), "{name}: {:?}", res.residual_inf);
        }
    }
}

#[test]
fn adapter_hvp_matches_finite_differences() {
    // Central differences of the gradient along v (f64): error O(h²·‖∇³Φ‖) + O(ε/h) ≈ 1e-9.
    let d = 5;
    let pot = icnn2_potential(d, 16, 3, DType::F64, 500, 1.3, 0.4);
    let x = normal_batch(7, d, DType::F64, 501);
    let v = normal_batch(7, d, DType::F64, 502);
    let h = 1e-5;
    let (_, gp) = pot
        .value_and_gradient(&(&x + (&v * h).unwrap()).unwrap())
        .unwrap();
    let (_, gm) = pot
        .value_and_gradient(&(&x - (&v * h).unwrap()).unwrap())
        .unwrap();
    let fd = ((gp - gm).unwrap() / (2.0 * h)).unwrap();
    let model = pot.second_order(&x).unwrap();
    assert!(max_abs_diff(&model.hvp(&v).unwrap(), &fd) <= 1e-6);
    assert!(max_abs_diff(&pot.hvp(&x, &v).unwrap(), &fd) <= 1e-6);
    let (val, grad) = pot.value_and_gradient(&x).unwrap();
    assert!(max_abs_diff(model.value(), &val) <= 1e-12);
    assert!(max_abs_diff(model.gradient(), &grad) <= 1e-12);
    assert!(max_abs_diff(&pot.value(&x).unwrap(), &val) <= 1e-12);
}
