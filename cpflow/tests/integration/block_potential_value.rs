//! The value of a block's potential `Φ(x) = sp(w₁)F(x) + sp(w₀)‖x‖²/2`, which the inverse
//! solvers minimise (`Φ(x) − ⟨x, y⟩`) and whose decrease their line searches test:
//! `CpFlowBlock::potential_and_forward` against central differences along a random direction
//! (`dΦ(x + tv)/dt = ⟨∇Φ(x), v⟩ = ⟨forward(x), v⟩`) and, with `sp(w₁) ≈ 0`, against the closed
//! form `sp(w₀)‖x‖²/2`; `BlockPotential::second_order` (a second copy of the formula, on the
//! host kernels where they apply) against `value_and_gradient`. Random small flows of every
//! built-in potential (`prop_flow_common`), weights perturbed off the initialisation, f64.
//! `cargo test -p cpflow --test integration block_potential_value`.

// The random flows of `prop_flow.rs`, whose `common` module is private to it: loaded again
// here (a second copy in the test binary, a few hundred lines).
#[allow(clippy::duplicate_mod)]
#[path = "prop_flow_common/mod.rs"]
mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::refs::forward_layers;
use common::*;
use convex_opt::BatchedPotential;
use cpflow::{BlockPotential, CpFlowBlock};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// `|a − b| ≤ tol`, as a proptest assertion naming `what`.
macro_rules! assert_close {
    ($a:expr, $b:expr, $tol:expr, $($what:tt)+) => {{
        let (a, b, tol): (f64, f64, f64) = ($a, $b, $tol);
        prop_assert!((a - b).abs() <= tol, "{}: {a} vs {b} (|Δ| = {:e} > tol {tol:e})",
            format!($($what)+), (a - b).abs());
    }};
}

/// `Φ` at the rows of `x` (`(B, d)`), by `potential_and_forward`.
fn phi(block: &CpFlowBlock, x: &Tensor, ctx: Option<&Tensor>) -> Vec<f64> {
    vec1(&block.potential_and_forward(x, ctx).unwrap().0)
}

/// Per row `b`, the derivative of `Φ` at `x_b` along `dirs_b` by the five-point stencil
/// `(−Φ(x+2hv) + 8Φ(x+hv) − 8Φ(x−hv) + Φ(x−2hv)) / 12h` with `h = 1e-3·max(1, |x_b|∞)/|v_b|∞`
/// (truncation `h⁴|Φ⁽⁵⁾|/30`, rounding `1.5·ε/h`), and a bound on its error: the stencil's
/// truncation error is `∝ h⁴`, so `|d(h) − d(2h)|` is 15 times it; rounding is taken as
/// `1.5·ε/h` with `ε = 64·u·max|Φ|` (`Φ` is a sum of O(width) terms of about its size).
fn directional_fd(
    block: &CpFlowBlock,
    x: &[Vec<f64>],
    ctx: Option<&Tensor>,
    dirs: &[Vec<f64>],
) -> Vec<(f64, f64)> {
    let (b, d) = (x.len(), x[0].len());
    let steps: Vec<f64> = x
        .iter()
        .zip(dirs)
        .map(|(r, v)| {
            let xmax = r.iter().fold(1.0f64, |m, t| m.max(t.abs()));
            1e-3 * xmax / v.iter().fold(f64::MIN_POSITIVE, |m, t| m.max(t.abs()))
        })
        .collect();
    let at = |k: f64| -> Vec<f64> {
        let shifted: Vec<f64> = (0..b)
            .flat_map(|r| (0..d).map(move |j| (r, j)))
            .map(|(r, j)| x[r][j] + k * steps[r] * dirs[r][j])
            .collect();
        phi(
            block,
            &Tensor::from_vec(shifted, (b, d), &Device::Cpu).unwrap(),
            ctx,
        )
    };
    let vals: Vec<Vec<f64>> = [4.0, 2.0, 1.0, -1.0, -2.0, -4.0]
        .iter()
        .map(|&k| at(k))
        .collect();
    (0..b)
        .map(|r| {
            let f = |i: usize| vals[i][r];
            let h = steps[r];
            let d1 = (-f(1) + 8.0 * f(2) - 8.0 * f(3) + f(4)) / (12.0 * h);
            let d2 = (-f(0) + 8.0 * f(1) - 8.0 * f(4) + f(5)) / (24.0 * h);
            let fmax = (0..6).fold(0.0f64, |m, i| m.max(f(i).abs()));
            let rounding = 1.5 * 64.0 * U64 * fmax / h;
            (d1, (d1 - d2).abs() + rounding)
        })
        .collect()
}

proptest! {
    #![proptest_config(fixed_config(32, 0x0c9f_1b01))]

    /// At each block's input (points 0.3 and 1.5 data spreads around the data), the
    /// derivative of `Φ` along a random direction `v` is `⟨forward(x), v⟩` (the block's map,
    /// its own tracked path), and `potential_and_forward`'s map is `forward`. Tolerance: the
    /// stencil's error bound ([`directional_fd`]) plus 1e-9·(1 + |⟨z, v⟩|) for the rounding of
    /// the two paths; a missing ½ on `‖x‖²` is off by `sp(w₀)⟨x, v⟩`, swapped weights by
    /// `(sp(w₀) − sp(w₁))⟨∇F − x, v⟩`: O(1).
    ///
    /// `BlockPotential::second_order(x)` (the detached operator's `F`, host kernels where
    /// they apply) has the value and gradient of `value_and_gradient(x)`: the same sums in
    /// another order, 1e-12·(1 + |Φ|) (the largest gap seen is below 1e-14 relative).
    #[test]
    fn potential_value_is_consistent_with_the_forward_map(
        spec in flow_spec(1..=5),
        scale in prop_oneof![Just(0.3), Just(1.5)],
        dir_seed in any::<u64>(),
    ) {
        let mut case = build(&spec, true);
        let n = 3;
        let x = case.points(n, scale);
        let ctx = case.ctx(n);
        let flow = &case.flow;
        let (_, inputs) = forward_layers(flow, &x, ctx.as_ref());
        let mut rng = StdRng::seed_from_u64(dir_seed);
        for (k, (block, h)) in flow.blocks().zip(&inputs).enumerate() {
            let dirs = rows(&randn(&mut rng, n, spec.dim, 1.0));
            let (phi_t, z_t) = block.potential_and_forward(h, ctx.as_ref()).unwrap();
            let z = rows(&z_t);
            let fwd = rows(&block.forward(h, ctx.as_ref()).unwrap());
            let fd = directional_fd(block, &rows(h), ctx.as_ref(), &dirs);
            for b in 0..n {
                for j in 0..spec.dim {
                    assert_close!(z[b][j], fwd[b][j], 1e-12 * (1.0 + fwd[b][j].abs()),
                        "block {k} row {b}: potential_and_forward's map vs forward [{j}]");
                }
                let zv: f64 = z[b].iter().zip(&dirs[b]).map(|(a, c)| a * c).sum();
                let (d, err) = fd[b];
                assert_close!(d, zv, err + 1e-9 * (1.0 + zv.abs()),
                    "block {k} row {b}: dΦ/dt along v vs ⟨∇Φ, v⟩");
            }
            let pot = BlockPotential::new(block, ctx.as_ref());
            let (value, grad) = pot.value_and_gradient(h).unwrap();
            let model = pot.second_order(h).unwrap();
            let (value, so_value) = (vec1(&value), vec1(model.value()));
            let phi_v = vec1(&phi_t);
            let (grad, so_grad) = (rows(&grad), rows(model.gradient()));
            for b in 0..n {
                assert_close!(value[b], phi_v[b], 0.0, "block {k} row {b}: detached Φ");
                assert_close!(so_value[b], value[b], 1e-12 * (1.0 + value[b].abs()),
                    "block {k} row {b}: second_order's Φ vs value_and_gradient's");
                for j in 0..spec.dim {
                    assert_close!(so_grad[b][j], grad[b][j], 1e-12 * (1.0 + grad[b][j].abs()),
                        "block {k} row {b}: second_order's ∇Φ vs value_and_gradient's [{j}]");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(fixed_config(16, 0x0c9f_1b02))]

    /// With `w₁ = −40` (`sp(w₁) = e⁻⁴⁰ ≈ 4e-18`) and a trainable `w₀` set to 0.3, the
    /// potential is the quadratic term alone: `Φ(x) = ln(1 + e^0.3)·‖x‖²/2` (a fixed `w₀` is
    /// `log(e − 1)`: `sp = 1`), from `potential_and_forward` and from `second_order`. This pins
    /// the constant and the scale that the directional check cannot see. Tolerance:
    /// `sp(w₁)|F| ≤ 4e-18·|F|` with `|F| ≲ 1e3` here, plus rounding: 1e-12·(1 + |Φ|).
    #[test]
    fn potential_is_the_quadratic_term_when_the_icnn_weight_vanishes(
        spec in flow_spec(1..=5),
    ) {
        let mut case = build(&spec, true);
        let n = 4;
        let x = case.points(n, 1.5);
        let ctx = case.ctx(n);
        let flow = &case.flow;
        let moved: HashMap<String, Tensor> = flow
            .weight_tensors()
            .into_iter()
            .map(|(name, t)| {
                let t = if name.ends_with(".w1") {
                    t.ones_like().unwrap().affine(0.0, -40.0).unwrap()
                } else if name.ends_with(".w0") {
                    t.ones_like().unwrap().affine(0.0, 0.3).unwrap()
                } else {
                    t
                };
                (name, t)
            })
            .collect();
        flow.set_weights(&moved, "").unwrap();
        let sp0 = if spec.trainable_w0 { 0.3f64.exp().ln_1p() } else { 1.0 };
        let (_, inputs) = forward_layers(flow, &x, ctx.as_ref());
        for (k, (block, h)) in flow.blocks().zip(&inputs).enumerate() {
            let want: Vec<f64> = rows(h)
                .iter()
                .map(|r| sp0 * 0.5 * r.iter().map(|t| t * t).sum::<f64>())
                .collect();
            let got = phi(block, h, ctx.as_ref());
            let so = vec1(BlockPotential::new(block, ctx.as_ref()).second_order(h).unwrap().value());
            for b in 0..n {
                let tol = 1e-12 * (1.0 + want[b].abs());
                assert_close!(got[b], want[b], tol, "block {k} row {b}: Φ vs sp(w₀)‖x‖²/2");
                assert_close!(so[b], want[b], tol,
                    "block {k} row {b}: second_order's Φ vs sp(w₀)‖x‖²/2");
            }
        }
    }
}
