//! `minimize_lbfgs` at the rounding floor: the default gradient tolerance depends on the
//! float type (f64's `1e-9` cannot be met in f32), and a run that cannot decrease the cost
//! any further says so in its own words, not in argmin's internal-bug text.

use argmin::core::{CostFunction, Error, Gradient};
use convex_opt::{LbfgsParams, Termination, minimize_lbfgs};
use nalgebra::{DMatrix, DVector, RealField};

/// `f(x) = ½ xᵀAx − bᵀx` with `A` SPD, evaluated in `F`.
struct Quadratic<F: RealField + Copy> {
    a: DMatrix<F>,
    b: DVector<F>,
}

impl<F: RealField + Copy> CostFunction for Quadratic<F> {
    type Param = DVector<F>;
    type Output = F;
    fn cost(&self, x: &DVector<F>) -> Result<F, Error> {
        Ok(x.dot(&(&self.a * x)) * nalgebra::convert::<f64, F>(0.5) - self.b.dot(x))
    }
}

impl<F: RealField + Copy> Gradient for Quadratic<F> {
    type Param = DVector<F>;
    type Gradient = DVector<F>;
    fn gradient(&self, x: &DVector<F>) -> Result<DVector<F>, Error> {
        Ok(&self.a * x - &self.b)
    }
}

/// The audit's problem: `d = 20`, `A = Q diag(100^{i/(d−1)}) Qᵀ` (condition number 100, `Q`
/// orthogonal from a fixed matrix), `b_i = cos i`; the exact solution `x*` in f64.
fn audit_problem() -> (DMatrix<f64>, DVector<f64>, DVector<f64>) {
    let d = 20;
    let q = DMatrix::<f64>::from_fn(d, d, |i, j| ((i * j + i + 2 * j) as f64).sin())
        .qr()
        .q();
    let eig = DVector::from_fn(d, |i, _| 100f64.powf(i as f64 / (d - 1) as f64));
    let m = &q * DMatrix::from_diagonal(&eig) * q.transpose();
    let a = (&m + m.transpose()) * 0.5;
    let b = DVector::from_fn(d, |i, _| (i as f64).cos());
    let xs = a.clone().cholesky().unwrap().solve(&b);
    (a, b, xs)
}

/// The audit's f32 run with the default parameters stopped as `LineSearchFailed` (not
/// converged) at `|x − x*|∞ = 8.2e-8`, solved to f32 precision: f64's default tolerance `1e-9`
/// lies below the rounding level of an f32 gradient. With the f32 default
/// ([`convex_opt::F32_GRADIENT_TOLERANCE`]) it converges. The error bound: at `‖∇f‖∞ ≤ 2e-5`
/// and `λ_min(A) = 1`, `‖x − x*‖₂ ≤ √d·2e-5 ≈ 9e-5`.
#[test]
fn f32_quadratic_converges_with_the_default_tolerance() {
    let (a, b, xs) = audit_problem();
    let p = Quadratic {
        a: a.map(|v| v as f32),
        b: b.map(|v| v as f32),
    };
    let res = minimize_lbfgs(&p, DVector::zeros(20), &LbfgsParams::default()).unwrap();
    let err = (res.x.map(f64::from) - &xs).amax();
    assert!(res.converged, "{:?}: {}", res.reason, res.termination);
    assert_eq!(res.reason, Termination::Converged);
    assert!(
        res.gradient_inf <= convex_opt::F32_GRADIENT_TOLERANCE,
        "{}",
        res.gradient_inf
    );
    assert!(err < 1e-4, "{err:e}");
    // f64 keeps its default (1e-9).
    let p64 = Quadratic { a, b };
    let res = minimize_lbfgs(&p64, DVector::zeros(20), &LbfgsParams::default()).unwrap();
    assert!(
        res.converged && res.gradient_inf <= 1e-9,
        "{}",
        res.gradient_inf
    );
    assert_eq!(
        LbfgsParams::default().gradient_tolerance_for::<f64>(),
        convex_opt::F64_GRADIENT_TOLERANCE
    );
    assert_eq!(convex_opt::F64_GRADIENT_TOLERANCE, 1e-9);
}

/// A tolerance below the rounding floor (0 in f64 and f32): the line search finds no further
/// decrease. The termination text said argmin's "Potential bug: `HagerZhangLineSearch`:
/// Reached unreachable point … Please file a report on https://github.com/argmin-rs/argmin/
/// issues"; it now says what happened, keeping argmin's message only as a detail.
#[test]
fn failed_line_search_at_the_rounding_floor_does_not_ask_for_a_bug_report() {
    let (a, b, xs) = audit_problem();
    let params = LbfgsParams::default().with_gradient_tolerance(0.0);
    let p64 = Quadratic {
        a: a.clone(),
        b: b.clone(),
    };
    let r64 = minimize_lbfgs(&p64, DVector::zeros(20), &params).unwrap();
    let p32 = Quadratic {
        a: a.map(|v| v as f32),
        b: b.map(|v| v as f32),
    };
    let r32 = minimize_lbfgs(&p32, DVector::zeros(20), &params).unwrap();
    for (what, reason, text, err) in [
        ("f64", r64.reason, &r64.termination, (&r64.x - &xs).amax()),
        (
            "f32",
            r32.reason,
            &r32.termination,
            (r32.x.map(f64::from) - &xs).amax(),
        ),
    ] {
        println!("{what}: {reason:?} err {err:e}: {text}");
        assert_eq!(reason, Termination::LineSearchFailed, "{what}: {text}");
        assert!(!text.contains("file a report"), "{what}: {text}");
        assert!(!text.contains("Potential bug"), "{what}: {text}");
        assert!(text.contains("no further decrease"), "{what}: {text}");
        // Solved to the precision of the float type all the same.
        let bound = if what == "f64" { 1e-12 } else { 1e-5 };
        assert!(err < bound, "{what}: {err:e}");
    }
}
