//! `NewtonCgParams::with_c1` sets the Armijo constant the backtracking line search uses: its
//! range is checked, and on a problem whose first Newton step has a known decrease ratio the
//! unit step is accepted exactly for the `c1` below that ratio.

use candle_core::{Device, Tensor};
use convex_opt::{
    ConvexOptError, FnPotential, InversionOptions, NewtonCgParams, Termination, invert_newton_cg,
};

/// `Φ(x) = Σ_j x_j⁴/4 + x_j²/2`: `∇Φ = x³ + x`, `∇²Φ = diag(3x² + 1)`.
fn quartic() -> impl convex_opt::BatchedPotential {
    FnPotential::new(|x: &Tensor| {
        let v = ((x.powf(4.0)? * 0.25)? + (x.sqr()? * 0.5)?)?.sum(1)?;
        let g = (x.powf(3.0)? + x)?;
        Ok((v, g))
    })
    .with_hvp(|x: &Tensor, v: &Tensor| ((x.sqr()? * 3.0)? + 1.0)? * v)
}

/// A `c1` outside `(0, 0.5)` (or NaN) is refused before any evaluation, naming `c1`; the
/// bounds' neighbours inside are accepted.
#[test]
fn with_c1_out_of_range_is_refused() {
    let y = Tensor::new(&[[1.0f64]], &Device::Cpu).unwrap();
    let opts = InversionOptions::default();
    for c1 in [0.0, -1e-4, 0.5, 0.7, f64::NAN] {
        match invert_newton_cg(
            &quartic(),
            &y,
            &opts,
            &NewtonCgParams::default().with_c1(c1),
        ) {
            Err(ConvexOptError::InvalidParameter(m)) => {
                assert!(m.contains("c1"), "{c1}: {m}")
            }
            other => panic!("c1 = {c1}: {other:?}"),
        }
    }
    for c1 in [1e-12, 0.499] {
        let res = invert_newton_cg(
            &quartic(),
            &y,
            &opts,
            &NewtonCgParams::default().with_c1(c1),
        )
        .unwrap();
        assert!(res.all_converged(), "c1 = {c1}: {:?}", res.termination);
    }
}

/// From `x0 = 0` (`∇²Φ = 1`) the Newton step for target `y` is `p = y` (1-D CG is exact), with
/// `φ'(0) = −y²` and `φ(1) − φ(0) = y⁴/4 − y²/2`: the Armijo ratio `(φ(1) − φ(0))/φ'(0)` is
/// `1/2 − y²/4`, i.e. 1/4 for `y = 1` and 7/16 for `y = 1/2`. A row accepts `x = y` when
/// `c1 ≤` its ratio; otherwise the quadratic-interpolation step `−φ'(0)/(2(φ(1) − φ(0) −
/// φ'(0)))` (2/3 and 8/9 here) is clamped to `t = 0.5`, where both rows pass any `c1 < 0.5`
/// (ratios 0.72 and 0.74): `x = y/2`. One outer iteration (`max_iterations = 1`), so `x` is
/// that first step; every value is exact in binary (tolerance 1e-12 for the CG step).
#[test]
fn with_c1_decides_which_rows_accept_the_unit_newton_step() {
    let y = Tensor::new(&[[1.0f64], [0.5]], &Device::Cpu).unwrap();
    let opts = InversionOptions::default()
        .with_max_iterations(1)
        .with_x0(Tensor::zeros((2, 1), candle_core::DType::F64, &Device::Cpu).unwrap());
    for (c1, expected, backtracked) in [
        (1e-4, [1.0, 0.5], false),
        (0.2, [1.0, 0.5], false),
        (0.3, [0.5, 0.5], true),
        (0.45, [0.5, 0.25], true),
    ] {
        let params = NewtonCgParams::default().with_c1(c1);
        let res = invert_newton_cg(&quartic(), &y, &opts, &params).unwrap();
        let x: Vec<f64> = res.x.flatten_all().unwrap().to_vec1().unwrap();
        for (got, want) in x.iter().zip(expected) {
            assert!(
                (got - want).abs() < 1e-12,
                "c1 = {c1}: x = {x:?}, want {expected:?}"
            );
        }
        assert_eq!(
            res.count(Termination::MaxIterations),
            2,
            "{:?}",
            res.termination
        );
        // Start, first round, and a second round when a row backtracked.
        let calls = if backtracked { 3 } else { 2 };
        assert_eq!(
            res.stats.gradient_calls, calls,
            "c1 = {c1}: {:?}",
            res.stats
        );
    }
}
