//! Potentials with per-row data (`BatchedPotential::select_rows`): the data follows the row
//! subsets the per-sample solvers evaluate (Newton–CG's compaction and backtracking, batched
//! L-BFGS's compaction and line searches).

use std::cell::RefCell;
use std::rc::Rc;

use candle_core::{Device, Tensor};
use convex_opt::{
    BatchedLbfgsParams, BatchedPotential, ConvexOptError, FlatLbfgsParams, InversionOptions,
    InversionResult, NewtonCgParams, invert_lbfgs_batched, invert_lbfgs_flat, invert_newton_cg,
};

/// `Φ_i(x) = Σ_j cosh(a_i x_j)/a_i² + c_iᵀx`: `∇Φ_i(x) = sinh(a_i x)/a_i + c_i`,
/// `∇²Φ_i(x) = diag(cosh(a_i x)) ⪰ I`, inverse `x_i = asinh(a_i (y_i − c_i))/a_i`. Every row
/// has its own curvature scale `a_i` and shift `c_i`, so a row evaluated with another row's
/// data converges to a wrong point.
struct RowCosh {
    /// `(B, 1)`.
    a: Tensor,
    /// `(B, d)`.
    c: Tensor,
    /// Sizes of the `select_rows` calls (shared with the restrictions).
    log: Rc<RefCell<Vec<usize>>>,
    /// Negative control: restrictions get the requested rows of the data in reverse order.
    misaligned: bool,
}

impl RowCosh {
    fn new(a: &[f64], c: &[[f64; 3]], misaligned: bool) -> Self {
        let dev = Device::Cpu;
        let c_flat: Vec<f64> = c.iter().flatten().copied().collect();
        RowCosh {
            a: Tensor::from_vec(a.to_vec(), (a.len(), 1), &dev).unwrap(),
            c: Tensor::from_vec(c_flat, (c.len(), 3), &dev).unwrap(),
            log: Rc::new(RefCell::new(Vec::new())),
            misaligned,
        }
    }

    fn check_rows(&self, x: &Tensor) -> Result<(), ConvexOptError> {
        if x.dim(0)? != self.c.dim(0)? {
            return Err(ConvexOptError::Shape {
                context: "RowCosh",
                message: format!(
                    "{} rows of x for {} rows of data",
                    x.dim(0)?,
                    self.c.dim(0)?
                ),
            });
        }
        Ok(())
    }
}

impl BatchedPotential for RowCosh {
    fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
        self.check_rows(x)?;
        let ax = x.broadcast_mul(&self.a)?;
        let a2 = self.a.sqr()?;
        let cosh = ((ax.exp()? + ax.neg()?.exp()?)? * 0.5)?;
        let sinh = ((ax.exp()? - ax.neg()?.exp()?)? * 0.5)?;
        let value = (cosh.broadcast_div(&a2)?.sum(1)? + (x * &self.c)?.sum(1)?)?;
        let grad = (sinh.broadcast_div(&self.a)? + &self.c)?;
        Ok((value, grad))
    }

    fn hvp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor, ConvexOptError> {
        self.check_rows(x)?;
        let ax = x.broadcast_mul(&self.a)?;
        let cosh = ((ax.exp()? + ax.neg()?.exp()?)? * 0.5)?;
        Ok((cosh * v)?)
    }

    fn select_rows(
        &self,
        rows: &Tensor,
    ) -> Result<Option<Box<dyn BatchedPotential + '_>>, ConvexOptError> {
        self.log.borrow_mut().push(rows.dim(0)?);
        let rows = if self.misaligned {
            let mut r = rows.to_vec1::<u32>()?;
            r.reverse();
            Tensor::new(r, rows.device())?
        } else {
            rows.clone()
        };
        Ok(Some(Box::new(RowCosh {
            a: self.a.index_select(&rows, 0)?,
            c: self.c.index_select(&rows, 0)?,
            log: Rc::clone(&self.log),
            misaligned: self.misaligned,
        })))
    }
}

/// Eight rows of three kinds, starting from `x₀ = y`:
/// rows 0–2 start at their solution (`c = y − sinh(a y)/a`: 0 iterations);
/// rows 3–4 are nearly linear (`a = 0.05`, `|y − c| ≤ 1`: a few iterations);
/// rows 5–7 are stiff (`a ∈ [0.8, 1.2]`, `|y − c|` up to 6, starting on both sides of the
/// solution: Newton overshoots and backtracks, L-BFGS needs many line searches). (With
/// `a = 2.5`, `|y − c| = 9` the flat solver's shared line search fails; the per-sample solvers
/// still converge.)
/// After rows 3–4 converge, 3 of 8 rows are active: both batched solvers compact.
fn problem(misaligned: bool) -> (RowCosh, Tensor, Vec<[f64; 3]>) {
    let a = [0.7, 1.3, 0.2, 0.05, 0.05, 1.0, 0.8, 1.2];
    let y: [[f64; 3]; 8] = [
        [0.4, -1.1, 2.0],
        [-0.3, 0.9, 0.1],
        [1.5, -2.5, 0.7],
        [0.3, -0.2, 0.5],
        [-0.6, 0.8, 0.0],
        [0.3, -0.2, 0.5],
        [3.0, 0.1, -0.4],
        [0.2, 2.5, -1.0],
    ];
    // y − c for the rows that do not start solved.
    let r: [[f64; 3]; 8] = [
        [0.0; 3],
        [0.0; 3],
        [0.0; 3],
        [0.9, -1.0, 0.4],
        [-0.7, 0.2, 1.0],
        [6.0, -4.0, 3.0],
        [-6.0, 4.0, 0.5],
        [3.0, 5.0, -6.0],
    ];
    let mut c = [[0.0; 3]; 8];
    let mut exact = vec![[0.0; 3]; 8];
    for i in 0..8 {
        for j in 0..3 {
            if i < 3 {
                c[i][j] = y[i][j] - (a[i] * y[i][j]).sinh() / a[i];
                exact[i][j] = y[i][j];
            } else {
                c[i][j] = y[i][j] - r[i][j];
                exact[i][j] = (a[i] * r[i][j]).asinh() / a[i];
            }
        }
    }
    let pot = RowCosh::new(&a, &c, misaligned);
    let y_flat: Vec<f64> = y.iter().flatten().copied().collect();
    let y = Tensor::from_vec(y_flat, (8, 3), &Device::Cpu).unwrap();
    (pot, y, exact)
}

fn run(name: &str, pot: &dyn BatchedPotential, y: &Tensor) -> InversionResult {
    let opts = InversionOptions::default();
    match name {
        "newton" => invert_newton_cg(pot, y, &opts, &NewtonCgParams::default()),
        "batched" => invert_lbfgs_batched(pot, y, &opts, &BatchedLbfgsParams::default()),
        _ => invert_lbfgs_flat(pot, y, &opts, &FlatLbfgsParams::default()),
    }
    .unwrap()
}

/// Largest `|x_ij − x*_ij|` per row.
fn row_errors(x: &Tensor, exact: &[[f64; 3]]) -> Vec<f64> {
    x.to_vec2::<f64>()
        .unwrap()
        .iter()
        .zip(exact)
        .map(|(xi, ei)| {
            xi.iter()
                .zip(ei)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
        })
        .collect()
}

/// All three solvers recover the closed-form inverse of every row, with each row's own data,
/// while the per-sample solvers evaluate subsets (compaction, line-search subsets) through
/// `select_rows`. Since `∇²Φ_i ⪰ I`, `|x − x*|∞ ≤ ‖∇Φ(x) − y‖∞ ≤ 1e-9` (the default f64
/// tolerance), plus rounding of the gradient (`|sinh(a x)/a| ≤ 6` at the solution: ~1e-14);
/// bound 1.1e-9.
#[test]
fn per_row_data_follows_the_row_subsets_of_every_solver() {
    let (pot, y, exact) = problem(false);
    for name in ["newton", "batched", "flat"] {
        pot.log.borrow_mut().clear();
        let res = run(name, &pot, &y);
        assert!(res.all_converged(), "{name}: {res}");
        let err = row_errors(&res.x, &exact);
        assert!(err.iter().all(|&e| e <= 1.1e-9), "{name}: errors {err:?}");
        let log = pot.log.borrow().clone();
        println!(
            "{name}: iterations {:?}, max residual {:.2e}, compactions {}, select_rows sizes {log:?}",
            res.iterations,
            res.max_residual(),
            res.stats.compactions
        );
        if name == "flat" {
            // One problem: the whole batch every time, never a subset.
            assert!(log.is_empty(), "{log:?}");
            continue;
        }
        // Rows finish at different iterations, the working set is compacted, and some
        // evaluations (backtracking / line-search rounds) cover a subset of the working set
        // (more select_rows calls than compactions).
        assert_eq!(&res.iterations[..3], &[0, 0, 0], "{name}");
        let (easy, stiff) = (
            res.iterations[3].max(res.iterations[4]),
            res.iterations[5..].iter().min().copied().unwrap(),
        );
        assert!(easy < stiff, "{name}: {:?}", res.iterations);
        assert!(res.stats.compactions >= 1, "{name}: {:?}", res.stats);
        assert!(log.len() > res.stats.compactions, "{name}: {log:?}");
        assert!(log.iter().all(|&k| 0 < k && k < 8), "{name}: {log:?}");
    }
}

/// Negative control: restrictions that hand the rows' data out in the wrong order make the
/// per-sample solvers converge (to the misaligned problem) far from the closed-form inverse,
/// so the check above detects data that does not follow its rows. The flat solver, which
/// never restricts, is unaffected.
#[test]
fn misaligned_row_data_gives_wrong_answers() {
    let (pot, y, exact) = problem(true);
    for name in ["newton", "batched", "flat"] {
        let res = run(name, &pot, &y);
        let worst = row_errors(&res.x, &exact).into_iter().fold(0.0, f64::max);
        if name == "flat" {
            assert!(worst <= 1.1e-9, "{name}: {worst}");
        } else {
            // The stiff rows' solutions differ by O(1) between rows.
            assert!(
                worst > 1e-2,
                "{name}: misaligned data went unnoticed ({worst})"
            );
        }
    }
}

/// The forwarding impls (`&P`, `Box<P>`, `Box<dyn BatchedPotential>`) pass `select_rows` on:
/// without it, the subsets would reach the full-batch data and `RowCosh` reports a shape error.
#[test]
fn forwarding_impls_pass_select_rows_on() {
    let (pot, y, exact) = problem(false);
    let opts = InversionOptions::default();
    let by_ref = invert_newton_cg(&&pot, &y, &opts, &NewtonCgParams::default()).unwrap();
    let boxed: Box<dyn BatchedPotential> = Box::new(problem(false).0);
    let by_box = invert_lbfgs_batched(&boxed, &y, &opts, &BatchedLbfgsParams::default()).unwrap();
    for res in [by_ref, by_box] {
        assert!(res.all_converged(), "{res}");
        assert!(row_errors(&res.x, &exact).iter().all(|&e| e <= 1.1e-9));
    }
    // A potential with per-row data but no `select_rows` fails loudly on the first subset.
    struct NoSelect(RowCosh);
    impl BatchedPotential for NoSelect {
        fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
            self.0.value_and_gradient(x)
        }
        fn hvp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor, ConvexOptError> {
            self.0.hvp(x, v)
        }
    }
    let err = invert_newton_cg(&NoSelect(pot), &y, &opts, &NewtonCgParams::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ConvexOptError::Shape {
                context: "RowCosh",
                ..
            }
        ),
        "{err}"
    );
}
