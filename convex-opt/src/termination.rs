//! Why a solver stopped.

use std::fmt;

/// Why a solver stopped working on a sample (per row of [`crate::InversionResult::termination`])
/// or on a whole problem ([`crate::MinimizeResult::reason`]).
///
/// Only [`Termination::Converged`] means that the tolerance was met; every other reason comes
/// with `converged == false` and says whether more iterations could help
/// ([`MaxIterations`](Self::MaxIterations), [`EvaluationBudget`](Self::EvaluationBudget)) or
/// not ([`LineSearchFailed`](Self::LineSearchFailed), [`NonFinite`](Self::NonFinite),
/// [`BelowResolution`](Self::BelowResolution): a looser tolerance, or `f64`, would).
///
/// | reason | [`invert_newton_cg`](crate::invert_newton_cg) | [`invert_lbfgs_batched`](crate::invert_lbfgs_batched) | [`invert_lbfgs_flat`](crate::invert_lbfgs_flat) / [`minimize_lbfgs`](crate::minimize_lbfgs) |
/// |---|---|---|---|
/// | `Converged` | yes | yes | yes |
/// | `MaxIterations` | yes | yes | yes |
/// | `LineSearchFailed` | backtracking exhausted | Wolfe search failed from steepest descent | argmin's line search failed (Hager–Zhang: and its Moré–Thuente redo); with either line search also on a NaN/±∞ trial step (an interpolation's or secant's 0/0 at the rounding floor, or an overflowing step) |
/// | `EvaluationBudget` | – | – | gradient-evaluation budget spent (tested between iterations; it also ends, or leaves no room for, a failed Hager–Zhang search's Moré–Thuente redo) |
/// | `CostTolerance` | – | – | only with a positive cost tolerance |
/// | `NonFinite` | a non-finite objective or gradient at the initial point; a non-finite Hessian-vector product, or an overflowing curvature, at the first CG step | a non-finite objective or gradient at the initial point | Moré–Thuente: a non-finite cost or gradient at a finite trial point; Hager–Zhang: a failed search and Moré–Thuente redo without a finite trial point (a non-finite initial point is an error naming the row) |
/// | `NotConvex` | finite non-positive curvature at the first CG step | – | – |
/// | `BelowResolution` | yes | yes | `invert_lbfgs_flat` (per sample; not `minimize_lbfgs`) |
///
/// The batched solvers and the Hager–Zhang search treat a non-finite trial point as a step that
/// is too long and shrink it (the Moré–Thuente redo of a failed Hager–Zhang search ends on
/// one instead, as a Moré–Thuente run does); the batched solvers report a potential that is non-finite all
/// along the search direction as `LineSearchFailed`. A trial point that is itself not finite
/// (the step overflowed) counts the same way and is never passed to the potential, so a
/// potential may refuse non-finite input.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use convex_opt::{invert_newton_cg, FnPotential, InversionOptions, NewtonCgParams, Termination};
/// // Φ(x) = −½‖x‖² is concave: Newton–CG meets negative curvature and stops the row.
/// let pot = FnPotential::new(|x: &Tensor| Ok(((x.sqr()?.sum(1)? * -0.5)?, x.neg()?)))
///     .with_hvp(|_x: &Tensor, v: &Tensor| v.neg());
/// let y = Tensor::new(&[[1.0f64, 2.0]], &Device::Cpu)?;
/// let res = invert_newton_cg(&pot, &y, &InversionOptions::default(), &NewtonCgParams::default())?;
/// assert_eq!(res.termination, vec![Termination::NotConvex]);
/// assert!(!res.converged[0]);
/// assert_eq!(Termination::NotConvex.to_string(), "not convex (non-positive curvature)");
/// // Φ(x) = ‖x‖² with a NaN Hessian-vector product: the row stops on the non-finite value.
/// let nan = FnPotential::new(|x: &Tensor| Ok((x.sqr()?.sum(1)?, (x * 2.0)?)))
///     .with_hvp(|_x: &Tensor, v: &Tensor| v * f64::NAN);
/// let res = invert_newton_cg(&nan, &y, &InversionOptions::default(), &NewtonCgParams::default())?;
/// assert_eq!(res.termination, vec![Termination::NonFinite]);
/// assert!(res.to_string().ends_with("1: non-finite cost, gradient or Hessian-vector product"));
/// assert_eq!(Termination::ALL.len(), 8);
/// # Ok::<(), convex_opt::ConvexOptError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Termination {
    /// The residual (or gradient) reached its tolerance.
    Converged,
    /// The iteration limit was reached first.
    MaxIterations,
    /// No acceptable step was found: the line search (or backtracking) gave up, typically because
    /// the objective no longer resolves the decrease (rounding floor), or because argmin's line
    /// search failed or spent its evaluation cap (a Hager–Zhang search: after the Moré–Thuente
    /// redo failed too).
    LineSearchFailed,
    /// The gradient-evaluation budget of argmin's L-BFGS was spent
    /// ([`LbfgsParams::max_evaluations`](crate::LbfgsParams::max_evaluations); for the flat
    /// solver [`FlatLbfgsParams::max_evaluations`](crate::FlatLbfgsParams::max_evaluations),
    /// by default `1.25·max_iterations`): tested after each iteration, and, with Hager–Zhang,
    /// before each evaluation of a failed search's Moré–Thuente redo, which stops where the
    /// budget is spent (or is not started when none is left).
    EvaluationBudget,
    /// The cost changed by less than the cost tolerance between two iterations
    /// ([`LbfgsParams::cost_tolerance`](crate::LbfgsParams::cost_tolerance); off by default).
    CostTolerance,
    /// The run ended on a non-finite value: with the Moré–Thuente line search a non-finite
    /// cost or gradient at a finite trial point ends the run (it cannot backtrack from one; a
    /// NaN or infinite step of the search itself is [`LineSearchFailed`](Self::LineSearchFailed)); with Hager–Zhang a line search
    /// and its Moré–Thuente redo failed without finding any finite trial point; in Newton–CG the Hessian-vector product
    /// along the gradient (the first CG step) held NaN or ±∞, or the curvature along it
    /// overflowed, so no Newton step exists (the row stops there, at its last iterate). In both per-row solvers a row whose objective or
    /// gradient is not finite at the initial point (e.g. a huge target the potential overflows
    /// on) stops before the first iteration, its solution left at the initial point; the other
    /// rows are solved as without it.
    NonFinite,
    /// Newton–CG's first CG step met finite non-positive curvature `pᵀ∇²Φ p ≤ 0` along the
    /// gradient: the potential is not (strictly) convex at that point, against the solvers'
    /// precondition. The row stops there instead of wandering (a concave potential ran 525
    /// iterations to a residual of 1e154). A non-finite product is [`NonFinite`](Self::NonFinite).
    NotConvex,
    /// The computed residual met the tolerance, but the tolerance is below what a residual
    /// computed in the dtype resolves, `RESIDUAL_RESOLUTION_ROUNDOFFS·u·max(1, ‖y_i‖∞)`
    /// ([`crate::options::RESIDUAL_RESOLUTION_ROUNDOFFS`]; f32 with `|y| ≈ 10`: below about
    /// `2.4e-6`), so meeting it certifies nothing: in `f32` with `abs_tolerance = 1e-6` such
    /// samples were reported converged with an `f64` residual up to 2.5× the tolerance. The
    /// row stops there, at the point that met it (as accurate as the dtype allows); the
    /// defaults never get here (f32 `2e-5 + 2e-5·‖y‖∞`, f64 `1e-9` unless `‖y_i‖∞ > 2.2e6`).
    BelowResolution,
}

impl Termination {
    /// A short lower-case description, as printed by `Display`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Converged => "converged",
            Self::MaxIterations => "iteration limit reached",
            Self::LineSearchFailed => "line search failed",
            Self::EvaluationBudget => "evaluation budget spent",
            Self::CostTolerance => "cost change below tolerance",
            Self::NonFinite => "non-finite cost, gradient or Hessian-vector product",
            Self::NotConvex => "not convex (non-positive curvature)",
            Self::BelowResolution => "tolerance below the residual's resolution in this dtype",
        }
    }

    /// All reasons, in the order used by summaries.
    pub const ALL: [Termination; 8] = [
        Self::Converged,
        Self::MaxIterations,
        Self::LineSearchFailed,
        Self::EvaluationBudget,
        Self::CostTolerance,
        Self::NonFinite,
        Self::NotConvex,
        Self::BelowResolution,
    ];
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}
