//! Agreement with candle's own higher-order autodiff (`CANDLE_GRAD_DO_NOT_DETACH=1`).
//!
//! This is a separate test binary because candle reads the switch once per thread: every
//! test here sets it (once per process, before any candle op) at its very beginning.

#[path = "integration/common/mod.rs"]
mod common;

use std::sync::Once;

use candle_core::{Tensor, Var};
use common::{BATCH, all_cases, flat, named_vars, randn};
use icnn::ConvexPotential;
use rand::SeedableRng;
use rand::rngs::StdRng;

const DIM: usize = 3;

fn enable_higher_order_autodiff() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: called before any other thread of this test binary reads the environment
        // (every test calls this first, and `Once` blocks the others until it returns).
        unsafe { std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1") };
    });
}

/// Autodiff route: `∇ₓF` by backward of `Σ F`, `Hv` by backward of `Σ ∇F ⊙ v`.
fn autodiff_grad_and_hvp(net: &dyn ConvexPotential, x: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
    let xv = Var::from_tensor(x).unwrap();
    let f = net.potential(xv.as_tensor()).unwrap().sum_all().unwrap();
    let g = f.backward().unwrap().get(xv.as_tensor()).unwrap().clone();
    let hv = (&g * v)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
        .get(xv.as_tensor())
        .unwrap()
        .clone();
    (g, hv)
}

/// Relative agreement `|a − b| ≤ tol · max(|b|_∞, 1e-3)` entrywise.
fn assert_rel(a: &[f64], b: &[f64], tol: f64, what: &str) {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}: entry {i}: {x} vs {y} (scale {scale})"
        );
    }
}

fn compare_param_grads(
    varmap: &candle_nn::VarMap,
    explicit: &candle_core::backprop::GradStore,
    autodiff: &candle_core::backprop::GradStore,
    what: &str,
) {
    let with_grad = named_vars(varmap)
        .iter()
        .filter(|(_, v)| explicit.get(v).is_some())
        .count();
    assert!(
        with_grad >= 5,
        "{what}: only {with_grad} parameters have gradients"
    );
    for (name, var) in named_vars(varmap) {
        let n = var.as_tensor().elem_count();
        let get = |g: &candle_core::backprop::GradStore| {
            g.get(&var).map(flat).unwrap_or_else(|| vec![0.0; n])
        };
        // Both routes compute the same expression with different rounding: 1e-8 relative.
        assert_rel(
            &get(explicit),
            &get(autodiff),
            1e-8,
            &format!("{what} ∂/∂{name}"),
        );
    }
}

#[test]
fn gradient_and_hvp_match_double_backward() {
    enable_higher_order_autodiff();
    let mut rng = StdRng::seed_from_u64(30);
    for case in all_cases(DIM, 31) {
        let x = randn(&mut rng, (BATCH, DIM), 1.0);
        let v = randn(&mut rng, (BATCH, DIM), 1.0);
        let (g_ad, hv_ad) = autodiff_grad_and_hvp(case.net.as_ref(), &x, &v);
        let lin = case.net.linearize(&x).unwrap();
        assert_rel(
            &flat(&lin.gradient()),
            &flat(&g_ad),
            1e-12,
            &format!("{} ∇F", case.name),
        );
        assert_rel(
            &flat(&lin.hvp(&v).unwrap()),
            &flat(&hv_ad),
            1e-12,
            &format!("{} Hv", case.name),
        );
    }
}

#[test]
fn surrogate_parameter_gradient_matches_triple_backward() {
    enable_higher_order_autodiff();
    let mut rng = StdRng::seed_from_u64(32);
    for case in all_cases(DIM, 33) {
        let x = randn(&mut rng, (BATCH, DIM), 1.0);
        let u = randn(&mut rng, (BATCH, DIM), 1.0);
        let v = randn(&mut rng, (BATCH, DIM), 1.0);
        let lin = case.net.linearize(&x).unwrap();
        let explicit = (lin.hvp(&v).unwrap() * &u).unwrap().sum_all().unwrap();
        let (_, hv_ad) = autodiff_grad_and_hvp(case.net.as_ref(), &x, &v);
        let autodiff = (hv_ad * &u).unwrap().sum_all().unwrap();
        let ge = explicit.backward().unwrap();
        let ga = autodiff.backward().unwrap();
        compare_param_grads(&case.varmap, &ge, &ga, &format!("{} uᵀHv", case.name));
    }
}

#[test]
fn gradient_norm_parameter_gradient_matches_double_backward() {
    enable_higher_order_autodiff();
    let mut rng = StdRng::seed_from_u64(34);
    for case in all_cases(DIM, 35) {
        let x = randn(&mut rng, (BATCH, DIM), 1.0);
        let v = x.zeros_like().unwrap();
        let explicit = case
            .net
            .linearize(&x)
            .unwrap()
            .gradient()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let (g_ad, _) = autodiff_grad_and_hvp(case.net.as_ref(), &x, &v);
        let autodiff = g_ad.sqr().unwrap().sum_all().unwrap();
        let ge = explicit.backward().unwrap();
        let ga = autodiff.backward().unwrap();
        compare_param_grads(&case.varmap, &ge, &ga, &format!("{} ‖∇F‖²", case.name));
    }
}

/// Autodiff applied to the explicit gradient (the fused activation op's backward re-enters
/// itself): `∂/∂x (∇F·v)` is `Hv`, and its parameter gradient matches the explicit one.
#[test]
fn autodiff_of_explicit_gradient_matches_explicit_hvp() {
    enable_higher_order_autodiff();
    let mut rng = StdRng::seed_from_u64(36);
    for case in all_cases(DIM, 37) {
        let x = randn(&mut rng, (BATCH, DIM), 1.0);
        let u = randn(&mut rng, (BATCH, DIM), 1.0);
        let v = randn(&mut rng, (BATCH, DIM), 1.0);
        let xv = Var::from_tensor(&x).unwrap();
        let g = case.net.linearize(xv.as_tensor()).unwrap().gradient();
        let hv_ad = (&g * &v)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(xv.as_tensor())
            .unwrap()
            .clone();
        let lin = case.net.linearize(&x).unwrap();
        let hv = lin.hvp(&v).unwrap();
        assert_rel(
            &flat(&hv),
            &flat(&hv_ad),
            1e-12,
            &format!("{} Hv", case.name),
        );
        let ga = (hv_ad * &u).unwrap().sum_all().unwrap().backward().unwrap();
        let ge = (hv * &u).unwrap().sum_all().unwrap().backward().unwrap();
        compare_param_grads(
            &case.varmap,
            &ge,
            &ga,
            &format!("{} uᵀHv (mixed)", case.name),
        );
    }
}
