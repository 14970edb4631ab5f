//! A scalar line search for the strong Wolfe conditions, written as a state machine so that a
//! batch of independent searches (one per sample) can share each batched evaluation.
//!
//! Bracketing and zoom follow Nocedal & Wright, *Numerical Optimization* (2nd ed.),
//! Algorithms 3.5 and 3.6, with safeguarded cubic interpolation. Near the minimiser the
//! sufficient-decrease test compares function values that differ by less than their rounding
//! error (in `f32` this happens long before the gradient tolerance is reached), so a point is
//! also accepted under the *approximate Wolfe* conditions of Hager & Zhang (2005):
//! `φ(t) ≤ φ(0) + ε` and `σφ'(0) ≤ φ'(t) ≤ (2δ − 1)φ'(0)`, with `ε` the noise level of `φ`.

/// Line-search constants.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WolfeParams {
    /// Sufficient-decrease constant `c₁` (`δ` in Hager–Zhang).
    pub c1: f64,
    /// Curvature constant `c₂` (`σ` in Hager–Zhang).
    pub c2: f64,
    /// Maximum number of function evaluations.
    pub max_evals: usize,
    /// Largest step considered.
    pub t_max: f64,
}

/// What the caller must do next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum WolfeStep {
    /// Evaluate `φ` and `φ'` at this step and call [`WolfeSearch::update`].
    Evaluate(f64),
    /// Accept the step that was just evaluated.
    Accept,
    /// No acceptable step was found.
    Fail,
}

#[derive(Clone, Copy, Debug)]
struct Point {
    t: f64,
    phi: f64,
    dphi: f64,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Bracket {
        prev: Point,
    },
    Zoom {
        lo: Point,
        hi: Point,
    },
    /// Re-evaluating the best sufficient-decrease point after the search ran out of budget.
    Final,
}

/// One line search along a descent direction: `φ(t) = f(x + t p)`, `φ'(t) = ∇f(x + t p)ᵀp`.
#[derive(Clone, Debug)]
pub(crate) struct WolfeSearch {
    params: WolfeParams,
    phi0: f64,
    dphi0: f64,
    noise: f64,
    phase: Phase,
    trial: f64,
    evals: usize,
    /// The best point satisfying sufficient decrease seen so far.
    best: Option<Point>,
}

impl WolfeSearch {
    /// Starts a search from `φ(0) = phi0`, `φ'(0) = dphi0 < 0` with first trial step `t0`;
    /// `noise` is the absolute rounding-error level of `φ` (for the approximate Wolfe test).
    pub(crate) fn new(phi0: f64, dphi0: f64, t0: f64, noise: f64, params: WolfeParams) -> Self {
        let origin = Point {
            t: 0.0,
            phi: phi0,
            dphi: dphi0,
        };
        Self {
            params,
            phi0,
            dphi0,
            noise,
            phase: Phase::Bracket { prev: origin },
            trial: t0.min(params.t_max),
            evals: 0,
            best: None,
        }
    }

    /// The step to evaluate next.
    pub(crate) fn trial(&self) -> f64 {
        self.trial
    }

    fn sufficient_decrease(&self, p: &Point) -> bool {
        p.phi <= self.phi0 + self.params.c1 * p.t * self.dphi0
    }

    fn strong_curvature(&self, p: &Point) -> bool {
        p.dphi.abs() <= -self.params.c2 * self.dphi0
    }

    fn approximate_wolfe(&self, p: &Point) -> bool {
        (self.phi0 - p.phi).abs() <= self.noise
            && self.params.c2 * self.dphi0 <= p.dphi
            && p.dphi <= (2.0 * self.params.c1 - 1.0) * self.dphi0
    }

    /// Reports `φ(t), φ'(t)` at the current trial step and returns what to do next.
    pub(crate) fn update(&mut self, phi: f64, dphi: f64) -> WolfeStep {
        self.evals += 1;
        let cur = Point {
            t: self.trial,
            phi,
            dphi,
        };
        let finite = phi.is_finite() && dphi.is_finite();
        if let Phase::Final = self.phase {
            return if finite && phi <= self.phi0 + self.noise {
                WolfeStep::Accept
            } else {
                WolfeStep::Fail
            };
        }
        if finite && self.sufficient_decrease(&cur) && self.best.is_none_or(|b| cur.phi < b.phi) {
            self.best = Some(cur);
        }
        if finite
            && ((self.sufficient_decrease(&cur) && self.strong_curvature(&cur))
                || self.approximate_wolfe(&cur))
        {
            return WolfeStep::Accept;
        }
        let next = match self.phase {
            Phase::Bracket { prev } => {
                if !finite
                    || !self.sufficient_decrease(&cur)
                    || (prev.t > 0.0 && cur.phi >= prev.phi)
                {
                    self.zoom(prev, cur)
                } else if cur.dphi >= 0.0 {
                    self.zoom(cur, prev)
                } else {
                    // Still descending with sufficient decrease: extrapolate.
                    let lo = cur.t + 0.01 * (cur.t - prev.t);
                    let hi = 10.0 * cur.t;
                    let cand = cubic_minimizer(&prev, &cur)
                        .filter(|c| c.is_finite())
                        .unwrap_or(2.0 * cur.t);
                    let t = cand.clamp(lo, hi).min(self.params.t_max);
                    if t <= cur.t {
                        return self.finish();
                    }
                    self.phase = Phase::Bracket { prev: cur };
                    Some(t)
                }
            }
            Phase::Zoom { lo, hi } => {
                if !finite || !self.sufficient_decrease(&cur) || cur.phi >= lo.phi {
                    self.zoom(lo, cur)
                } else if cur.dphi * (hi.t - lo.t) >= 0.0 {
                    self.zoom(cur, lo)
                } else {
                    self.zoom(cur, hi)
                }
            }
            Phase::Final => None,
        };
        match next {
            Some(t) if self.evals < self.params.max_evals => {
                self.trial = t;
                WolfeStep::Evaluate(t)
            }
            _ => self.finish(),
        }
    }

    /// Enters the zoom phase on the interval with endpoints `lo` (sufficient decrease, lowest
    /// value) and `hi`; returns the next trial, or `None` when the interval has collapsed.
    fn zoom(&mut self, lo: Point, hi: Point) -> Option<f64> {
        self.phase = Phase::Zoom { lo, hi };
        let (a, b) = if lo.t < hi.t {
            (lo.t, hi.t)
        } else {
            (hi.t, lo.t)
        };
        let width = b - a;
        if width <= 1e-12 * b.max(1e-300) {
            return None;
        }
        let cand = if hi.phi.is_finite() && hi.dphi.is_finite() {
            cubic_minimizer(&lo, &hi)
        } else {
            None
        };
        let margin = 0.1 * width;
        Some(match cand {
            Some(t) if t.is_finite() && t >= a + margin && t <= b - margin => t,
            _ => 0.5 * (a + b),
        })
    }

    /// Out of budget: fall back to the best sufficient-decrease point, if any.
    fn finish(&mut self) -> WolfeStep {
        match self.best {
            Some(b) if b.t == self.trial => WolfeStep::Accept,
            Some(b) => {
                self.phase = Phase::Final;
                self.trial = b.t;
                WolfeStep::Evaluate(b.t)
            }
            None => WolfeStep::Fail,
        }
    }
}

/// Minimiser of the cubic interpolating `φ` and `φ'` at two points (Nocedal & Wright, eq. 3.59).
fn cubic_minimizer(a: &Point, b: &Point) -> Option<f64> {
    let d1 = a.dphi + b.dphi - 3.0 * (a.phi - b.phi) / (a.t - b.t);
    let disc = d1 * d1 - a.dphi * b.dphi;
    if disc.is_nan() || disc < 0.0 {
        return None;
    }
    let d2 = (b.t - a.t).signum() * disc.sqrt();
    let denom = b.dphi - a.dphi + 2.0 * d2;
    if denom == 0.0 {
        return None;
    }
    let t = b.t - (b.t - a.t) * (b.dphi + d2 - d1) / denom;
    t.is_finite().then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: WolfeParams = WolfeParams {
        c1: 1e-4,
        c2: 0.9,
        max_evals: 25,
        t_max: 1e10,
    };

    /// Runs a search on a scalar function and returns (accepted step, evaluations).
    fn run(f: impl Fn(f64) -> (f64, f64), t0: f64, params: WolfeParams) -> Option<(f64, usize)> {
        let (phi0, dphi0) = f(0.0);
        let mut s = WolfeSearch::new(phi0, dphi0, t0, 0.0, params);
        let mut evals = 0;
        loop {
            let t = s.trial();
            let (phi, dphi) = f(t);
            evals += 1;
            match s.update(phi, dphi) {
                WolfeStep::Accept => return Some((t, evals)),
                WolfeStep::Fail => return None,
                WolfeStep::Evaluate(_) => {}
            }
        }
    }

    fn assert_strong_wolfe(f: impl Fn(f64) -> (f64, f64), t: f64, p: WolfeParams) {
        let (phi0, dphi0) = f(0.0);
        let (phi, dphi) = f(t);
        assert!(
            phi <= phi0 + p.c1 * t * dphi0,
            "sufficient decrease fails at t = {t}"
        );
        assert!(dphi.abs() <= -p.c2 * dphi0, "curvature fails at t = {t}");
    }

    #[test]
    fn quadratic_accepts_unit_step_at_the_minimum() {
        // φ(t) = (t − 1)², minimum at 1: the first trial is exact.
        let f = |t: f64| ((t - 1.0).powi(2), 2.0 * (t - 1.0));
        let (t, evals) = run(f, 1.0, PARAMS).unwrap();
        assert_eq!((t, evals), (1.0, 1));
    }

    #[test]
    fn too_long_first_step_zooms_back() {
        // Minimum at 0.01; t0 = 1 overshoots by a factor 100.
        let f = |t: f64| ((t - 0.01).powi(2), 2.0 * (t - 0.01));
        let (t, _) = run(f, 1.0, PARAMS).unwrap();
        assert_strong_wolfe(f, t, PARAMS);
    }

    #[test]
    fn too_short_first_step_extrapolates() {
        // Minimum at 50 with t0 = 1: bracketing must extrapolate.
        let f = |t: f64| ((t - 50.0).powi(2), 2.0 * (t - 50.0));
        let p = WolfeParams { c2: 0.1, ..PARAMS };
        let (t, _) = run(f, 1.0, p).unwrap();
        assert_strong_wolfe(f, t, p);
    }

    #[test]
    fn tight_curvature_on_a_non_quadratic() {
        // φ(t) = −t·e^{−t}·… a smooth function with minimum at t = 1; c₂ = 0.01 forces zooming.
        let f = |t: f64| {
            (
                -t * (-t).exp() + 0.1 * t * t,
                (t - 1.0) * (-t).exp() + 0.2 * t,
            )
        };
        let p = WolfeParams { c2: 0.01, ..PARAMS };
        let (t, _) = run(f, 3.0, p).unwrap();
        assert_strong_wolfe(f, t, p);
    }

    #[test]
    fn infinite_values_shrink_the_step() {
        // The function is +∞ beyond t = 0.5.
        let f = |t: f64| {
            if t > 0.5 {
                (f64::INFINITY, f64::NAN)
            } else {
                ((t - 0.3).powi(2), 2.0 * (t - 0.3))
            }
        };
        let (t, _) = run(f, 1.0, PARAMS).unwrap();
        assert!(t <= 0.5);
        assert_strong_wolfe(f, t, PARAMS);
    }

    #[test]
    fn ascent_direction_fails() {
        // φ'(0) > 0 is a caller bug, but the search must still terminate without accepting
        // an increase.
        let f = |t: f64| (t, 1.0);
        assert!(run(f, 1.0, PARAMS).is_none());
    }

    #[test]
    fn noise_level_accepts_by_approximate_wolfe() {
        // Values flat up to 1e-9 (below the noise level) but a good derivative: accepted with
        // noise 1e-6, not with noise 0 (the value did not decrease).
        let f = |t: f64| (1.0 + 1e-9 * t, 0.5 * (t - 1.0));
        let (phi0, dphi0) = f(0.0);
        let mut s = WolfeSearch::new(phi0, dphi0, 1.0, 1e-6, PARAMS);
        let (phi, dphi) = f(1.0);
        assert_eq!(s.update(phi, dphi), WolfeStep::Accept);
        let mut s = WolfeSearch::new(phi0, dphi0, 1.0, 0.0, PARAMS);
        assert_ne!(s.update(phi, dphi), WolfeStep::Accept);
    }
}
