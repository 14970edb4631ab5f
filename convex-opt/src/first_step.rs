//! PyTorch's first L-BFGS step, `min(1, 1/‖g₀‖₁)·(−g₀)`, for argmin's L-BFGS.

use argmin::core::{ArgminFloat, Error, KV, Problem, Solver, State, TerminationStatus};
use argmin::solver::linesearch::LineSearch;
use nalgebra::{DVector, RealField};

/// A line search whose first search direction is scaled to `ℓ₁` norm at most 1.
///
/// argmin's L-BFGS has no curvature pair at its first iteration and searches along `d = −g₀`
/// with its line search's usual unit-step scale: Moré–Thuente tries `x₀ + d` first and
/// Hager–Zhang brackets `α ∈ [ε, 1e5]` along `d`. PyTorch's `LBFGS` (the reference
/// implementation's solver) instead takes `t = min(1, 1/‖g₀‖₁)` as its first step length
/// (`lr = 1`), so that the first trial point is at most a unit `ℓ₁` distance away. This wrapper
/// does the same by handing the line search `t·d` instead of `d` at the first iteration, and
/// `d` untouched afterwards (PyTorch's later step length is `lr = 1`); scaling the direction
/// rather than the initial step length also scales Hager–Zhang's bracket and Moré–Thuente's
/// step bounds (`α ≥ √ε`), which an initial step alone would not. When `‖g₀‖₁ ≤ 1` nothing
/// changes, bit for bit. The curvature pairs argmin stores are the actual steps and gradient
/// changes, so they do not depend on the scaling.
///
/// The first call of [`LineSearch::search_direction`] is the first iteration's: argmin's
/// L-BFGS sets the direction on the line search it owns, then runs a clone of it.
#[derive(Clone, Debug)]
pub(crate) struct FirstStepScaled<L> {
    inner: L,
    first: bool,
}

impl<L> FirstStepScaled<L> {
    pub(crate) fn new(inner: L) -> Self {
        Self { inner, first: true }
    }
}

/// `d·min(1, 1/‖d‖₁)` as PyTorch computes it (`t = 1/‖d‖₁`, then `t·d`), with the sum taken
/// in two steps when it overflows (`‖d‖₁ = ∞` would make `t = 0`).
fn scaled_first_direction<F: RealField + Copy>(d: DVector<F>) -> DVector<F> {
    let l1 = d.iter().fold(F::zero(), |s, v| s + v.abs());
    if l1 <= F::one() {
        // Also a NaN sum: left to the line search, which reports it.
        return d;
    }
    if l1.is_finite() {
        let t = F::one() / l1;
        return d * t;
    }
    // Every entry is finite (checked at the starting point), so `amax > 0` and the scaled
    // sum is at most the length of `d`.
    let m = d.amax();
    let u = d / m;
    let s = u.iter().fold(F::zero(), |s, v| s + v.abs());
    u / s
}

impl<L, F> LineSearch<DVector<F>, F> for FirstStepScaled<L>
where
    L: LineSearch<DVector<F>, F>,
    F: ArgminFloat + RealField + Copy,
{
    fn search_direction(&mut self, direction: DVector<F>) {
        let direction = if std::mem::take(&mut self.first) {
            scaled_first_direction(direction)
        } else {
            direction
        };
        self.inner.search_direction(direction);
    }

    fn initial_step_length(&mut self, step_length: F) -> Result<(), Error> {
        self.inner.initial_step_length(step_length)
    }
}

impl<O, I, L> Solver<O, I> for FirstStepScaled<L>
where
    I: State,
    L: Solver<O, I>,
{
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn init(&mut self, problem: &mut Problem<O>, state: I) -> Result<(I, Option<KV>), Error> {
        self.inner.init(problem, state)
    }

    fn next_iter(&mut self, problem: &mut Problem<O>, state: I) -> Result<(I, Option<KV>), Error> {
        self.inner.next_iter(problem, state)
    }

    fn terminate_internal(&mut self, state: &I) -> TerminationStatus {
        self.inner.terminate_internal(state)
    }

    fn terminate(&mut self, state: &I) -> TerminationStatus {
        self.inner.terminate(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_directions_are_untouched_large_ones_get_unit_l1_norm() {
        let d = DVector::from_vec(vec![0.25f64, -0.5, 0.25]);
        assert_eq!(scaled_first_direction(d.clone()), d);
        let d = DVector::from_vec(vec![3.0f64, -1.0]);
        assert_eq!(scaled_first_direction(d).as_slice(), &[0.75, -0.25]);
        // ‖d‖₁ overflows: still unit ℓ₁ norm, direction kept.
        let d = DVector::from_vec(vec![f64::MAX, f64::MAX, -f64::MAX / 2.0]);
        assert_eq!(scaled_first_direction(d).as_slice(), &[0.4, 0.4, -0.2]);
        let d = DVector::from_vec(vec![3e38f32, 3e38]);
        assert_eq!(scaled_first_direction(d).as_slice(), &[0.5, 0.5]);
    }

    #[test]
    fn only_the_first_direction_is_scaled() {
        #[derive(Clone)]
        struct Record(Vec<DVector<f64>>);
        impl LineSearch<DVector<f64>, f64> for Record {
            fn search_direction(&mut self, d: DVector<f64>) {
                self.0.push(d);
            }
            fn initial_step_length(&mut self, _: f64) -> Result<(), Error> {
                Ok(())
            }
        }
        let mut ls = FirstStepScaled::new(Record(Vec::new()));
        let d = DVector::from_vec(vec![-8.0, 2.0]);
        ls.search_direction(d.clone());
        ls.search_direction(d.clone());
        assert_eq!(ls.inner.0[0].as_slice(), &[-0.8, 0.2]);
        assert_eq!(ls.inner.0[1], d);
    }
}
