//! What a transport cost says about `W₂²` given the KL of the trained map: bounds on
//! `W₂²(p, N(0, I))` that hold for any map of this experiment, converged or not, and the
//! verdict whether the cost is already an estimate of `W₂²`.
//!
//! The argument (all quantities are expectations under the data law `p`):
//! * `f = ∇Φ` with `Φ` convex, so by Brenier's theorem `f` is the optimal map from `p` to its
//!   push-forward `f#p`: the cost `c = E‖x − f(x)‖²` is exactly `W₂²(p, f#p)`;
//! * the model density is `q = f⁻¹#N(0, I)` with `f` a bijection, so
//!   `KL(p‖q) = KL(f#p‖N(0, I))`, the KL the experiment estimates;
//! * Talagrand's transport inequality for the standard Gaussian:
//!   `W₂²(ν, N(0, I)) ≤ 2·KL(ν‖N(0, I))`;
//! * the triangle inequality of `W₂`: `|W₂(p, N(0, I)) − √c| ≤ W₂(f#p, N(0, I)) ≤ √(2·KL)`.
//!
//! Hence `W₂² ∈ [(√c − √(2·KL))₊², (√c + √(2·KL))²]` whatever the training did. A short run
//! has a cost far from `W₂²` (the map is still near the identity, `c` near 0) and a KL that
//! says so: the bracket is wide. The values used are Monte-Carlo estimates on the test points,
//! so the bracket holds up to their sampling error (a KL estimate below 0 is noise around a
//! KL of 0 and counts as 0).

use serde::{Deserialize, Serialize};

/// Largest `√(2·KL)/√cost` at which the cost counts as an estimate of `W₂²`: the KL then
/// pins `W₂` to within 10% of `√cost` (`W₂²` within `[0.81, 1.21]·cost`). The paper-sized
/// runs of `docs/results/ot` reach it (d = 2, 4, 8, 16: 2.0%, 1.9%, 6.0% and 7.8%), while the
/// first tens of steps leave the bracket unbounded below (`√(2·KL) > √cost`, e.g. 20 steps
/// at d = 2: KL 1.4, cost 2.2 against `W₂²` = 6.4).
pub const W2_BOUND_TOLERANCE: f64 = 0.1;

/// Bounds on `W₂²(p, N(0, I))` from a map's transport cost and KL (see the module
/// documentation), and whether they make the cost an estimate of `W₂²`.
///
/// ```
/// use cpflow::ot::W2Bounds;
/// // 20 steps at d = 2: the KL leaves W₂² anywhere in [0, 10.21]; the closed form is 6.44.
/// let short = W2Bounds::from_cost_and_kl(2.2354, 1.4450);
/// assert!(!short.converged && short.lower == 0.0);
/// assert!((short.upper - 10.2088).abs() < 1e-3);
/// // A trained map (d = 16 of docs/results/ot): W₂² = 193.82 lies in the bracket.
/// let trained = W2Bounds::from_cost_and_kl(192.9254, 0.5843);
/// assert!(trained.converged && trained.lower < 193.82 && 193.82 < trained.upper);
/// // A KL estimate below 0 is noise around 0: the bracket closes on the cost.
/// assert_eq!(W2Bounds::from_cost_and_kl(4.0, -1e-3).upper, 4.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct W2Bounds {
    /// `(√cost − √(2·KL))₊²`.
    pub lower: f64,
    /// `(√cost + √(2·KL))²`.
    pub upper: f64,
    /// `√(2·KL) ≤` [`W2_BOUND_TOLERANCE`]` · √cost`: the cost is an estimate of `W₂²` (the
    /// map has converged as far as the KL can tell). `false` also when the cost or the KL is
    /// not finite.
    pub converged: bool,
}

impl W2Bounds {
    /// The bounds of a map with transport cost `cost` and KL estimate `kl`.
    pub fn from_cost_and_kl(cost: f64, kl: f64) -> Self {
        let root_cost = cost.max(0.0).sqrt();
        let slack = (2.0 * kl.max(0.0)).sqrt();
        let finite = cost.is_finite() && kl.is_finite();
        W2Bounds {
            lower: (root_cost - slack).max(0.0).powi(2),
            upper: (root_cost + slack).powi(2),
            converged: finite && slack <= W2_BOUND_TOLERANCE * root_cost,
        }
    }

    /// One sentence for a person: the bracket and what it means for the cost.
    ///
    /// ```
    /// use cpflow::ot::W2Bounds;
    /// let s = W2Bounds::from_cost_and_kl(2.2354, 1.4450).verdict();
    /// assert!(s.starts_with("NOT CONVERGED") && s.contains("[0.0000, 10.2088]"), "{s}");
    /// let s = W2Bounds::from_cost_and_kl(192.9254, 0.5843).verdict();
    /// assert!(s.starts_with("converged"), "{s}");
    /// ```
    pub fn verdict(&self) -> String {
        let bracket = format!("[{:.4}, {:.4}]", self.lower, self.upper);
        if self.converged {
            format!(
                "converged: the KL bounds W2² to {bracket} (W2 within {:.0}% of √cost), so the \
                 transport cost estimates W2²",
                100.0 * W2_BOUND_TOLERANCE
            )
        } else {
            format!(
                "NOT CONVERGED: the KL only bounds W2² to {bracket}, so the transport cost is \
                 not yet an estimate of W2² (train longer, e.g. more --iters)"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bracket holds for maps whose cost, KL and `W₂²` are all closed forms: in 1-D,
    /// `p = N(m, s²)` and the increasing (hence optimal, Brenier) map `f(x) = a·x + b`, `a > 0`:
    /// `x − f(x) ~ N((1 − a)m − b, (1 − a)²s²)` gives the cost, `f#p = N(a·m + b, a²s²)` the
    /// KL, and `W₂²(p, N(0, 1)) = m² + (s − 1)²`. Every such map's bracket holds `W₂²`; the
    /// optimal map (KL 0) closes it on its cost.
    #[test]
    fn the_bracket_holds_for_affine_maps_of_a_gaussian() {
        let (m, s) = (1.5f64, 2.0f64);
        let w2 = m * m + (s - 1.0).powi(2);
        for a in [0.05, 0.2, 0.5, 1.0, 2.0] {
            for b in [-2.0, -0.75, 0.0, 1.0] {
                // x − f(x) = (1 − a)x − b ~ N((1 − a)m − b, (1 − a)²s²).
                let mean = (1.0 - a) * m - b;
                let cost = mean * mean + (1.0 - a).powi(2) * s * s;
                // KL(N(μ, σ²)‖N(0, 1)) = (σ² + μ² − 1)/2 − ln σ.
                let (mu, sd) = (a * m + b, a * s);
                let kl = (sd * sd + mu * mu - 1.0) / 2.0 - sd.ln();
                let bounds = W2Bounds::from_cost_and_kl(cost, kl);
                // Rounding only (the bracket is exact for exact inputs).
                assert!(
                    bounds.lower <= w2 * (1.0 + 1e-12) && w2 <= bounds.upper * (1.0 + 1e-12),
                    "a = {a}, b = {b}: {bounds:?} vs {w2}"
                );
            }
        }
        let opt = W2Bounds::from_cost_and_kl(w2, 0.0);
        // √ then ²: equal to rounding.
        let closed = (opt.lower - w2).abs().max((opt.upper - w2).abs());
        assert!(opt.converged && closed < 1e-12 * w2, "{opt:?} vs {w2}");
        // The identity map (cost 0) of a far-off Gaussian is not converged.
        let kl_identity = (s * s + m * m - 1.0) / 2.0 - s.ln();
        assert!(!W2Bounds::from_cost_and_kl(0.0, kl_identity).converged);
        assert!(!W2Bounds::from_cost_and_kl(f64::NAN, 0.0).converged);
        assert!(!W2Bounds::from_cost_and_kl(1.0, f64::INFINITY).converged);
    }
}
