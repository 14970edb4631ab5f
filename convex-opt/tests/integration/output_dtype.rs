//! A potential whose gradient or value has another dtype than the points it is evaluated at
//! is refused by every solver, as a Hessian-vector product of another dtype is; and parameter
//! messages print small floats in a short form.

use candle_core::{DType, Device, Tensor};
use convex_opt::{
    BatchedLbfgsParams, BatchedPotential, ConvexOptError, FlatLbfgsParams, FnPotential,
    InversionOptions, NewtonCgParams, invert_lbfgs_batched, invert_lbfgs_flat, invert_newton_cg,
};

/// `Φ = ‖x‖²` (solution `x = y/2`) with the value or the gradient cast to `f32` for `f64`
/// points: a `DTypeMismatch` naming `potential value` / `potential gradient`. The gradient
/// used to be cast back and used: Newton–CG ended `LineSearchFailed` and batched L-BFGS ran
/// its 1,000 iterations (its 1e-7 rounding is far above the f64 tolerance).
#[test]
fn potential_outputs_of_another_dtype_are_refused() {
    let dev = Device::Cpu;
    let y = Tensor::new(&[[0.1f64, 2.0], [-3.0, 0.7]], &dev).unwrap();
    let f32_grad =
        FnPotential::new(|x: &Tensor| Ok((x.sqr()?.sum(1)?, (x * 2.0)?.to_dtype(DType::F32)?)))
            .with_hvp(|_x: &Tensor, v: &Tensor| v * 2.0);
    let f32_value =
        FnPotential::new(|x: &Tensor| Ok((x.sqr()?.sum(1)?.to_dtype(DType::F32)?, (x * 2.0)?)))
            .with_hvp(|_x: &Tensor, v: &Tensor| v * 2.0);
    refused(&f32_grad, &y, "potential gradient");
    refused(&f32_value, &y, "potential value");
}

/// Every solver refuses `pot` at `y` with a dtype mismatch in `context`.
fn refused<P: BatchedPotential>(pot: &P, y: &Tensor, context: &str) {
    let opts = InversionOptions::default();
    let results = [
        (
            "newton",
            invert_newton_cg(pot, y, &opts, &NewtonCgParams::default()),
        ),
        (
            "lbfgs batched",
            invert_lbfgs_batched(pot, y, &opts, &BatchedLbfgsParams::default()),
        ),
        (
            "lbfgs flat",
            invert_lbfgs_flat(pot, y, &opts, &FlatLbfgsParams::default()),
        ),
    ];
    for (name, r) in results {
        match r {
            Err(ConvexOptError::DTypeMismatch {
                context: c,
                expected: DType::F64,
                found: DType::F32,
            }) => assert_eq!(c, context, "{name}"),
            other => panic!("{name}, {context}: {:?}", other.map(|r| r.termination)),
        }
    }
}

/// An absolute tolerance of 1e-9 with a NaN relative one: the message prints `1e-9` (it was
/// `0.000000001`; a subnormal printed as hundreds of digits).
#[test]
fn tolerance_message_prints_small_floats_briefly() {
    for (abs, shown) in [(1e-9, "abs 1e-9, rel NaN"), (1e-320, "abs 1e-320, rel NaN")] {
        let err = InversionOptions::default()
            .with_abs_tolerance(abs)
            .with_rel_tolerance(f64::NAN)
            .tolerances(DType::F64)
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(shown) && msg.len() < 100, "{msg}");
    }
}
