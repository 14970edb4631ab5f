//! CG's host synchronisations: every per-system reduction (`dots`, `norms_inf`, `to_host`)
//! brings values from the backend to the host, a device→host sync on a GPU. A `BatchVectors`
//! wrapper that counts them pins how many a solve makes.

use krylov::{BatchVectors, CgParams, FnOperator, KrylovError, cg, cg_with_initial_guess};
use nalgebra::DMatrix;
use std::cell::Cell;
use std::rc::Rc;

/// A `d × B` nalgebra batch whose reductions add to a shared counter.
#[derive(Clone, Debug)]
struct Counted {
    m: DMatrix<f64>,
    reductions: Rc<Cell<usize>>,
}

impl Counted {
    fn with(&self, m: DMatrix<f64>) -> Self {
        Self {
            m,
            reductions: Rc::clone(&self.reductions),
        }
    }

    fn tick(&self) {
        self.reductions.set(self.reductions.get() + 1);
    }
}

impl BatchVectors for Counted {
    fn n_systems(&self) -> usize {
        self.m.n_systems()
    }
    fn system_dim(&self) -> usize {
        self.m.system_dim()
    }
    fn zeros_like(&self) -> Result<Self, KrylovError> {
        Ok(self.with(self.m.zeros_like()?))
    }
    fn from_host_like(like: &Self, data: &[f64]) -> Result<Self, KrylovError> {
        Ok(like.with(DMatrix::from_host_like(&like.m, data)?))
    }
    fn to_host(&self) -> Result<Vec<f64>, KrylovError> {
        self.tick();
        self.m.to_host()
    }
    fn dots(&self, other: &Self) -> Result<Vec<f64>, KrylovError> {
        self.tick();
        self.m.dots(&other.m)
    }
    fn norms_inf(&self) -> Result<Vec<f64>, KrylovError> {
        self.tick();
        self.m.norms_inf()
    }
    fn axpby_masked(
        &mut self,
        a: &[f64],
        b: &[f64],
        x: &Self,
        active: &[bool],
    ) -> Result<(), KrylovError> {
        self.m.axpby_masked(a, b, &x.m, active)
    }
    fn scale_per_system(&mut self, alphas: &[f64]) -> Result<(), KrylovError> {
        self.m.scale_per_system(alphas)
    }
    fn mul_elementwise(&self, other: &Self) -> Result<Self, KrylovError> {
        Ok(self.with(self.m.mul_elementwise(&other.m)?))
    }
    fn unit_roundoff(&self) -> f64 {
        f64::EPSILON
    }
}

/// Plain CG (no preconditioner, the default true-residual check) makes 3 reductions per
/// iteration (`pᵀHp`, `‖r‖∞`, `rᵀr`) and 3 more: `‖b‖∞`, the first `rᵀr` and the check's
/// `‖b − H x‖∞` (plus `rᵀr` after a restart and the next check's norm); the starting
/// residual's norm is `‖b‖∞` itself (it used to be reduced again). From an initial guess, 2 more: the guess's finiteness check and `‖b − H x0‖∞`,
/// reused for the convergence test (it used to be reduced a second time), whether or not the
/// guess is far enough to be rescaled by a power of two.
#[test]
fn cg_reduces_each_starting_residual_once() {
    let d = 6;
    let counter = Rc::new(Cell::new(0));
    let batch = |v: &[f64]| Counted {
        m: DMatrix::from_column_slice(d, 1, v),
        reductions: Rc::clone(&counter),
    };
    // H = diag(1, …, 6): distinct eigenvalues, so CG needs several iterations.
    let op = FnOperator::new(|x: &Counted, _: &[bool]| -> Result<Counted, KrylovError> {
        Ok(x.with(DMatrix::from_fn(d, 1, |i, _| (i + 1) as f64 * x.m[(i, 0)])))
    });
    let b = batch(&[1.0, -2.0, 0.5, 3.0, -1.0, 2.0]);
    let params = CgParams::default().with_rtol(1e-12);
    let exact: Vec<f64> = (0..d).map(|i| b.m[(i, 0)] / (i + 1) as f64).collect();
    let cases: [(&str, Option<Vec<f64>>); 3] = [
        ("x0 = 0 implicit", None),
        ("x0 = 0 given", Some(vec![0.0; d])),
        // ‖b − H x0‖∞ ≈ 6e12 > 2³²: rescaled from its residual.
        ("far x0", Some(vec![1e12; d])),
    ];
    for (name, x0) in cases {
        counter.set(0);
        let res = match &x0 {
            None => cg(&op, &b, &params),
            Some(x0) => cg_with_initial_guess(&op, &b, &batch(x0), &params),
        }
        .unwrap();
        assert!(res.all_converged(), "{name}: {res:?}");
        // A far guess costs accuracy ≈ u·‖x0‖ (documented); the others are exact to rtol.
        let accuracy = if name == "far x0" { 1e-2 } else { 1e-10 };
        for (i, e) in exact.iter().enumerate() {
            assert!((res.x.m[(i, 0)] - e).abs() <= accuracy, "{name}");
        }
        // Operator calls: `b − H x0`, one per iteration, one per true-residual check. A check
        // that refutes convergence restarts from the true residual (one `rᵀr` more).
        let (guess_calls, extra) = if x0.is_some() { (1, 2) } else { (0, 0) };
        let k = res.iterations[0];
        let checks = res.operator_calls - k - guess_calls;
        let restarts = checks - 1;
        let expected = 3 * k + 2 + checks + restarts + extra;
        assert_eq!(
            counter.get(),
            expected,
            "{name}: {k} iterations, {checks} checks"
        );
    }
}

/// The system of the two tolerance-0 tests below (`d = 4`, a random SPD `H` of condition
/// number 2, seed 10): `(d, H, the reduction counter, b counted by it)`.
fn underflow_system() -> (usize, DMatrix<f64>, Rc<Cell<usize>>, Counted) {
    use crate::common::{gaussian, random_spd, rng};
    let d = 4;
    let mut r = rng(10);
    let h = random_spd(&mut r, d, 2.0).0;
    let h = DMatrix::from_fn(d, d, |i, j| h[(i, j)]);
    let counter = Rc::new(Cell::new(0));
    let b = Counted {
        m: DMatrix::from_column_slice(d, 1, &gaussian(&mut r, d)),
        reductions: Rc::clone(&counter),
    };
    (d, h, counter, b)
}

/// Re-orthogonalised CG at tolerance 0 on a system whose updated residual collapses until its
/// squares underflow (`cg_underflow.rs`): the stop at the underflow reads the reductions the
/// iteration makes anyway (`‖S r‖₂` of the Gram–Schmidt normalisation and `‖r‖∞`), none more.
/// Iteration `j` (from 0, the basis holding `j + 1` residuals) makes `pᵀHp`, two Gram–Schmidt
/// passes of `j + 1` dots, `‖S r‖₂`, `‖r‖∞` and `rᵀr`: `2j + 6`; before the loop `‖b‖∞`, the
/// first `‖S r‖₂` and `rᵀr`; after it the check's `‖b − Hx‖∞`.
#[test]
fn reorthogonalised_cg_stops_at_the_underflow_without_an_extra_reduction() {
    use krylov::CgTermination;
    let (d, h, counter, b) = underflow_system();
    let op = FnOperator::new(|x: &Counted, _: &[bool]| -> Result<Counted, KrylovError> {
        Ok(x.with(&h * &x.m))
    });
    let params = CgParams::default()
        .with_rtol(0.0)
        .with_reorthogonalize(true);
    let res = cg(&op, &b, &params).unwrap();
    let k = res.iterations[0];
    // It used to end as a breakdown after 14 iterations (`rᵀr` underflowed to 0).
    assert_eq!(res.termination[0], CgTermination::Stagnated, "{res:?}");
    assert!(k < 2 * d + 10, "{k}");
    assert_eq!(
        counter.get(),
        3 + (0..k).map(|j| 2 * j + 6).sum::<usize>() + 1
    );
}

/// Plain CG at tolerance 0 on the same kind of system: its updated residual shrinks until
/// `rᵀr` underflows (`cg_underflow_plain.rs`), which it used to end as a breakdown. The stop
/// there reads the reductions the iteration makes anyway: each pass (one operator call) makes
/// `pᵀHp`, `‖r‖∞` and `rᵀr`; before the loop `‖b‖∞` and the first `rᵀr`; after it the
/// check's `‖b − Hx‖∞` (made for the stopped system even without the true-residual check).
#[test]
fn plain_cg_stops_at_the_underflow_without_an_extra_reduction() {
    use krylov::CgTermination;
    let (d, h, counter, b) = underflow_system();
    let op = FnOperator::new(|x: &Counted, _: &[bool]| -> Result<Counted, KrylovError> {
        Ok(x.with(&h * &x.m))
    });
    for confirm in [true, false] {
        counter.set(0);
        // Plain CG takes longer than re-orthogonalised CG to get there.
        let cap = 12 * d;
        let params = CgParams::default()
            .with_rtol(0.0)
            .with_max_iters(cap)
            .with_confirm_with_true_residual(confirm);
        let res = cg(&op, &b, &params).unwrap();
        assert_eq!(res.termination[0], CgTermination::Stagnated, "{res:?}");
        assert!(res.iterations[0] < cap, "{res:?}");
        let passes = res.operator_calls - 1;
        assert_eq!(counter.get(), 2 + 3 * passes + 1, "{res:?}");
    }
}
