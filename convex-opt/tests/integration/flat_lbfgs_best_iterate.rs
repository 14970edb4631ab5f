//! Which iterate the flat L-BFGS returns when its run ends at the rounding floor: the evaluated
//! point (accepted iterate or line-search trial point, see `flat_lbfgs_trial_points.rs`) at
//! which every sample is within its tolerance first, then the one of smallest residual
//! `max_i ‖∇Φ(x_i) − y_i‖∞`, not argmin's best parameter (the iterate of least cost).
//!
//! On `Σ x⁴/4 + x²/2` with targets `(1e-8, 0, 7)` and a tolerance below the rounding floor,
//! the run accepts an iterate with residual `4.8e-7` in `f32` (`1.8e-15` in `f64`), then its
//! line search fails. The summed cost no longer resolves the last steps (the `f32` cost of
//! the final iterate equals that of an earlier one, whose residual is `1.4e-4`; argmin's best
//! parameter needs a strictly smaller cost), so the solver used to return that earlier
//! iterate: residual `1.4e-4` in `f32`, `6.8e-8` (Hager–Zhang) and `9.4e-8` (Moré–Thuente)
//! in `f64`.

use argmin::core::{CostFunction, Error, Gradient};
use candle_core::{DType, Device, Tensor};
use convex_opt::{
    BatchedPotential, FlatLbfgsParams, FnPotential, InversionOptions, InversionResult, LbfgsParams,
    LineSearch, Termination, invert_lbfgs_flat, minimize_lbfgs,
};
use nalgebra::{DVector, RealField};

use crate::closed_form::cardano;
use crate::common::residuals;

/// `Φ(x) = Σ_j x_j⁴/4 + x_j²/2`, `∇Φ(x) = x³ + x` (`∇²Φ ⪰ I`).
pub(crate) fn quartic() -> impl BatchedPotential {
    FnPotential::new(|x: &Tensor| {
        let v = ((x.powf(4.0)?.sum(1)? * 0.25)? + (x.sqr()?.sum(1)? * 0.5)?)?;
        Ok((v, (x.powf(3.0)? + x)?))
    })
}

const TARGETS: [f64; 3] = [1e-8, 0.0, 7.0];
const SEARCHES: [LineSearch; 2] = [LineSearch::HagerZhang, LineSearch::MoreThuente];

/// Inverts `TARGETS` as one sample `(1, 3)` or as three `(3, 1)`, and checks that the reported
/// residuals are the ones at the returned `x` (the solver keeps the gradient it evaluated
/// there; recomputing it gives the same numbers).
fn invert(
    shape: (usize, usize),
    dtype: DType,
    search: LineSearch,
    opts: &InversionOptions,
) -> InversionResult {
    let pot = quartic();
    let y = Tensor::new(&TARGETS, &Device::Cpu)
        .unwrap()
        .reshape(shape)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let params = FlatLbfgsParams::default().with_line_search(search);
    let res = invert_lbfgs_flat(&pot, &y, opts, &params).unwrap();
    assert_eq!(
        res.residual_inf,
        residuals(&pot, &res.x, &y),
        "{dtype:?} {search:?} {shape:?}"
    );
    res
}

/// An absolute tolerance no iterate reaches: the `f32` residual of `x³ + x − 7` near the root
/// is a multiple of `2⁻²¹ = 4.77e-7` (one ulp of 7) in these runs, never 0.
fn below_the_f32_floor() -> InversionOptions {
    InversionOptions::default()
        .with_abs_tolerance(1e-7)
        .with_rel_tolerance(0.0)
}

/// `f32`, tolerance below the floor: the run fails its line search either way, but returns the
/// iterate of residual `4.77e-7` (one step of the floor; bound `1e-6`, two such steps), not the
/// earlier one of residual `1.4e-4`. The rows `1e-8` and `0` are solved exactly in both.
#[test]
fn f32_run_at_the_floor_returns_its_least_residual_iterate() {
    for search in SEARCHES {
        for shape in [(1, 3), (3, 1)] {
            let res = invert(shape, DType::F32, search, &below_the_f32_floor());
            assert!(
                res.max_residual() <= 1e-6,
                "{search:?} {shape:?}: returned residual {:e} ({res})",
                res.max_residual()
            );
            assert_eq!(
                res.termination.last(),
                Some(&Termination::LineSearchFailed),
                "{search:?} {shape:?}: {res}"
            );
        }
    }
}

/// Three samples with tolerances `3e-7 + 3e-7·|y_i|`: at the returned point the largest
/// residual is above the smallest tolerance, `3e-7` (the run's test before it became every
/// sample's own tolerance), but every sample is within its own tolerance (`7` gets
/// `2.4e-6 ≥ 4.77e-7`), and every sample says `Converged`. (It was `1e-7 + 1e-7·|y_i|`,
/// below f32's resolution `2·1.2e-7·max(1, |y_i|)`, which now ends `BelowResolution`.)
#[test]
fn f32_least_residual_iterate_within_each_samples_tolerance_is_converged() {
    let opts = InversionOptions::default()
        .with_abs_tolerance(3e-7)
        .with_rel_tolerance(3e-7);
    for search in SEARCHES {
        let res = invert((3, 1), DType::F32, search, &opts);
        assert!(res.all_converged(), "{search:?}: {res}");
        assert_eq!(res.termination, vec![Termination::Converged; 3]);
        assert!(res.residual_inf[2] <= res.tolerance[2], "{search:?}: {res}");
    }
}

/// `f64` at the default tolerance (`1e-9`) converges as before the change (its run meets its
/// test, and the point that met it is returned): every entry within the tolerance of
/// Cardano's root (`∇²Φ ⪰ I`: `|x − x*| ≤ residual`), plus a few ulps of the root for its own
/// rounding.
#[test]
fn f64_at_the_default_tolerance_is_unaffected() {
    for search in SEARCHES {
        for shape in [(1, 3), (3, 1)] {
            let res = invert(shape, DType::F64, search, &InversionOptions::default());
            assert!(res.all_converged() && res.max_residual() <= 1e-9, "{res}");
            let x = res.x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for (&xi, &yi) in x.iter().zip(&TARGETS) {
                let exact = cardano(1.0, yi);
                let bound = 1e-9 + 8.0 * f64::EPSILON * exact.abs();
                assert!((xi - exact).abs() <= bound, "{search:?} {shape:?}: {x:?}");
            }
        }
    }
}

/// `f64` with an absolute tolerance of `1e-15` (about one ulp of 7, `8.9e-16`: unreachable
/// here): the line search fails at the floor, and the returned residual is that floor
/// (measured `1.8e-15`, two ulps of 7; bound `1e-14`), where the iterate of least cost had
/// `6.8e-8` (Hager–Zhang) or `9.4e-8` (Moré–Thuente).
#[test]
fn f64_run_at_the_floor_returns_its_least_residual_iterate() {
    let opts = InversionOptions::default().with_abs_tolerance(1e-15);
    for search in SEARCHES {
        for shape in [(1, 3), (3, 1)] {
            let res = invert(shape, DType::F64, search, &opts);
            assert!(
                res.max_residual() <= 1e-14,
                "{search:?} {shape:?}: returned residual {:e} ({res})",
                res.max_residual()
            );
            assert_eq!(
                res.termination.last(),
                Some(&Termination::LineSearchFailed),
                "{search:?} {shape:?}: {res}"
            );
        }
    }
}

/// `f(x) = Σ_j x_j⁴/4 + x_j²/2 − x_j y_j` on the host, for [`minimize_lbfgs`] directly.
pub(crate) struct HostQuartic<F>(pub(crate) DVector<F>);

impl<F: RealField + Copy> CostFunction for HostQuartic<F> {
    type Param = DVector<F>;
    type Output = F;
    fn cost(&self, x: &DVector<F>) -> Result<F, Error> {
        let quarter = F::one() / (F::one() + F::one() + F::one() + F::one());
        let half = quarter + quarter;
        Ok(x.iter().zip(self.0.iter()).fold(F::zero(), |s, (&v, &y)| {
            s + v * v * v * v * quarter + v * v * half - v * y
        }))
    }
}

impl<F: RealField + Copy> Gradient for HostQuartic<F> {
    type Param = DVector<F>;
    type Gradient = DVector<F>;
    fn gradient(&self, x: &DVector<F>) -> Result<DVector<F>, Error> {
        Ok(x.zip_map(&self.0, |v, y| v * v * v + v - y))
    }
}

/// The same on [`minimize_lbfgs`] (host arithmetic, `x₀ = y`, tolerance `1e-15`): it returns
/// the accepted iterate of least `‖∇f‖∞`, with the gradient evaluated there. Measured:
/// `f32` `4.77e-7` with both searches (before: `1.4e-4` Hager–Zhang, `1.9e-6` Moré–Thuente
/// after spending its evaluation budget), `f64` `1.8e-15` (before: `6.8e-8`, `9.4e-8`).
/// Bounds as above: `1e-6` (two `f32` ulps of 7), `1e-14` (eleven `f64` ulps of 7).
#[test]
fn minimize_lbfgs_at_the_floor_returns_its_least_gradient_iterate() {
    fn check<F: argmin::core::ArgminFloat + argmin_math::ArgminZero + RealField + Copy>(
        y: DVector<F>,
        bound: f64,
    ) {
        for search in SEARCHES {
            let params = LbfgsParams::default()
                .with_line_search(search)
                .with_gradient_tolerance(1e-15);
            let problem = HostQuartic(y.clone());
            let res = minimize_lbfgs(&problem, y.clone(), &params).unwrap();
            assert!(!res.converged, "{search:?}");
            assert!(
                res.gradient_inf <= bound,
                "{search:?}: ‖∇f‖∞ = {:e}, {:?}",
                res.gradient_inf,
                res.reason
            );
            assert_eq!(res.gradient, problem.gradient(&res.x).unwrap());
            assert_eq!(res.cost, problem.cost(&res.x).unwrap());
        }
    }
    check(DVector::from_vec(vec![1e-8f32, 0.0, 7.0]), 1e-6);
    check(DVector::from_vec(TARGETS.to_vec()), 1e-14);
}

/// `Σ_j log cosh(x_j) + μ x_j²/2` (`∇²Φ ⪰ μI`), written without overflow.
fn log_cosh(mu: f64) -> impl BatchedPotential {
    FnPotential::new(move |x: &Tensor| {
        let a = x.abs()?;
        let lc = ((&a + ((&a * -2.0)?.exp()? + 1.0)?.log()?)? - std::f64::consts::LN_2)?;
        let v = (lc.sum(1)? + (x.sqr()?.sum(1)? * (0.5 * mu))?)?;
        Ok((v, (x.tanh()? + (x * mu)?)?))
    })
}

/// Run 1712 of `examples/flat_sweep.rs` (`f32`, default tolerances `2e-5 + 2e-5·‖y_i‖∞`):
/// samples 0 and 1 have targets ~`2e5` and ~`6e5` (tolerances `4.0` and `11.6`), sample 2
/// ~`7e-5` (tolerance `2.1e-5`), so the summed cost barely resolves sample 2. Each run
/// evaluates a point whose largest residual is smaller than that of the point returned but
/// lies in sample 2, above its tolerance (measured: Hager–Zhang `2.0e-2`, Moré–Thuente
/// `1.3e-2`), before the point where every sample is within its own tolerance (largest
/// residual `6.25e-2` and `3.1e-2`, in sample 0 or 1), where the run stops. The tracker's
/// ranking (every sample within its tolerance first, then the largest residual) returns the
/// latter; ranking by the largest residual alone returned the former, with sample 2 not
/// converged (checked by breaking the ranking: `all_converged` false with both searches).
#[test]
fn f32_point_with_every_sample_converged_ranks_before_a_smaller_largest_residual() {
    let y: [f64; 6] = [
        9.99999993922529e-9,
        201953.6875,
        -194578.4375,
        -577575.0625,
        -2.7665837478707545e-5,
        6.962555926293135e-5,
    ];
    // Each value is an `f32` (printed exactly as `f64`), so the cast is exact.
    let y: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    let y = Tensor::from_slice(&y, (3, 2), &Device::Cpu).unwrap();
    let pot = log_cosh(0.0584364232621908);
    for search in SEARCHES {
        let params = FlatLbfgsParams::default().with_line_search(search);
        let res = invert_lbfgs_flat(&pot, &y, &InversionOptions::default(), &params).unwrap();
        assert!(
            res.all_converged(),
            "{search:?}: {res}: residuals {:?}, tolerances {:?}",
            res.residual_inf,
            res.tolerance
        );
        // The largest residual is not within the smallest tolerance, nor is it sample 2's.
        assert!(res.max_residual() > 1e-3, "{search:?}: {res}");
        assert_eq!(res.residual_inf, residuals(&pot, &res.x, &y), "{search:?}");
    }
}
