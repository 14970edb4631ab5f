//! The check shared by the host-linearisation tests (dense and convolutional networks): the
//! host kernels ([`icnn::HostLinearization`]) against the composed candle recursions of
//! [`icnn::Linearization`] — detached gradient and Hessian-vector products, the bilinear form
//! `uᵀ∇²F v`, and the hand-written adjoint: the gradients of
//! `J = Σ ⟨c, ∇F⟩ + Σ w·uᵀ∇²F v` with respect to every parameter and to `x`, which candle's
//! backward computes through the composed graph — plus a central difference of `J` in `x`
//! (candle-independent). f64.
#![allow(dead_code)]

use candle_core::{Tensor, Var};
use icnn::{ConvexPotential, HostLinearization};

/// The inputs of one check: the batch, the CG-like vectors `u`, `v`, the cotangents `c`
/// (of `∇F`) and `w` (of the bilinear form, `(B,)`), and a direction `dx` for the central
/// difference.
pub struct Inputs {
    pub x: Tensor,
    pub u: Tensor,
    pub v: Tensor,
    pub c: Tensor,
    pub w: Tensor,
    pub dx: Tensor,
}

impl Inputs {
    /// Every input drawn from `randn(shape)` (standard normal), for `batch` rows of `d`.
    pub fn draw(batch: usize, d: usize, mut randn: impl FnMut((usize, usize)) -> Tensor) -> Self {
        Self {
            x: randn((batch, d)),
            u: randn((batch, d)),
            v: randn((batch, d)),
            c: randn((batch, d)),
            w: randn((batch, 1)).squeeze(1).unwrap(),
            dx: randn((batch, d)),
        }
    }
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "{what}[{i}]: {x} vs {y} (tol {tol})");
    }
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

/// `(∇F(x), uᵀ∇²F(x) v)` per row, from the composed (candle) recursions or the host kernels.
fn gradient_and_bilinear(
    net: &dyn ConvexPotential,
    i: &Inputs,
    x: &Tensor,
    host: bool,
) -> (Tensor, Tensor) {
    if host {
        let lin = net.host_linearize(x).unwrap().expect("supported");
        return lin.gradient_and_bilinear(&i.u, &i.v).unwrap();
    }
    let lin = net.linearize(x).unwrap();
    let q = (lin.hvp(&i.u).unwrap() * &i.v).unwrap().sum(1).unwrap();
    (lin.gradient(), q)
}

/// `J = Σ ⟨c, ∇F⟩ + Σ w·uᵀ∇²F v`.
fn objective(net: &dyn ConvexPotential, i: &Inputs, x: &Tensor, host: bool) -> Tensor {
    let (g, q) = gradient_and_bilinear(net, i, x, host);
    ((g * &i.c).unwrap().sum_all().unwrap() + (q * &i.w).unwrap().sum_all().unwrap()).unwrap()
}

/// Runs every comparison on `net` (whose host linearisation at `i.x` is `host`) with
/// relative tolerance `tol` on values (gradients of `J`: 100 × `tol`); `vars` are the
/// network's parameters by name. Returns how many gradients of `J` are non-zero.
pub fn check_host_against_composed(
    name: &str,
    net: &dyn ConvexPotential,
    host: &HostLinearization,
    vars: &[(String, Var)],
    i: &Inputs,
    tol: f64,
) -> usize {
    let lin = net.linearize(&i.x).unwrap();
    let rel = |t: &Tensor| tol * flat(t).iter().fold(1.0f64, |m, v| m.max(v.abs()));
    // Detached values.
    let pot = lin.potential();
    assert_close(
        &flat(&host.potential().unwrap()),
        &flat(&pot),
        rel(&pot),
        &format!("{name}: potential"),
    );
    let grad = lin.gradient();
    assert_close(
        &flat(&host.gradient().unwrap()),
        &flat(&grad),
        rel(&grad),
        &format!("{name}: gradient"),
    );
    let hu = lin.hvp(&i.u).unwrap();
    assert_close(
        &flat(&host.hvp(&i.u).unwrap()),
        &flat(&hu),
        rel(&hu),
        &format!("{name}: hvp"),
    );
    let (g, q) = host.gradient_and_bilinear(&i.u, &i.v).unwrap();
    let q_ref = (hu * &i.v).unwrap().sum(1).unwrap();
    assert_close(
        &flat(&g),
        &flat(&grad),
        rel(&grad),
        &format!("{name}: tracked gradient"),
    );
    assert_close(
        &flat(&q),
        &flat(&q_ref),
        rel(&q_ref),
        &format!("{name}: bilinear"),
    );

    // Gradients of J: parameters and x.
    let xv = Var::from_tensor(&i.x).unwrap();
    let jh = objective(net, i, xv.as_tensor(), true);
    let jc = objective(net, i, xv.as_tensor(), false);
    assert!((scalar(&jh) - scalar(&jc)).abs() < 10.0 * tol * scalar(&jc).abs().max(1.0));
    let (gh, gc) = (jh.backward().unwrap(), jc.backward().unwrap());
    let nonzero = compare_gradients(&gh, &gc, vars, &xv, 100.0 * tol, name);

    check_given_tangents(name, net, vars, i, tol);
    check_active_rows(name, host, i, tol);

    // x-gradient against central differences of J (candle-independent).
    let h = 1e-5;
    let jx = |s: f64| {
        let xs = (&i.x + (&i.dx * s).unwrap()).unwrap();
        scalar(&objective(net, i, &xs, true))
    };
    let fd = (jx(h) - jx(-h)) / (2.0 * h);
    let an: f64 = flat(gh.get(&xv).unwrap())
        .iter()
        .zip(flat(&i.dx))
        .map(|(a, b)| a * b)
        .sum();
    assert!(
        (fd - an).abs() < 1e-6 * an.abs().max(1.0),
        "{name}: x FD {fd} vs {an}"
    );
    nonzero
}

/// Products on active rows only (`hvp_and_tangents_active`): each active row as in the
/// full product, every other row zero — the products and the tangents, which enter
/// `uᵀ∇²F v` through the bilinear op (zero tangents of `u`: zero there). Masks in an order
/// that makes the active-set cache switch, return to an earlier set, and see no row at all.
fn check_active_rows(name: &str, host: &HostLinearization, i: &Inputs, tol: f64) {
    let b = i.x.dim(0).unwrap();
    let d = i.x.dim(1).unwrap();
    let full = flat(&host.hvp(&i.u).unwrap());
    let (_, tv) = host.hvp_and_tangents(&i.v).unwrap();
    let (_, q_full) = host.gradient_and_bilinear(&i.u, &i.v).unwrap();
    let q_full = flat(&q_full);
    let alternate: Vec<bool> = (0..b).map(|r| r % 2 == 0).collect();
    let last: Vec<bool> = (0..b).map(|r| r + 1 == b).collect();
    for mask in [
        alternate.clone(),
        last,
        alternate,
        vec![false; b],
        vec![true; b],
    ] {
        let what = format!("{name}: active rows {mask:?}");
        let (hv, tu) = host.hvp_and_tangents_active(&i.u, &mask).unwrap();
        assert_eq!(
            flat(&hv),
            flat(&host.hvp_active(&i.u, &mask).unwrap()),
            "{what}: hvp_active"
        );
        let hv = flat(&hv);
        let (_, q) = host
            .gradient_and_bilinear_given_tangents(&i.u, &i.v, &tu, &tv)
            .unwrap();
        let q = flat(&q);
        let scale = full.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let q_scale = q_full.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for r in 0..b {
            let (got, want) = (&hv[r * d..(r + 1) * d], &full[r * d..(r + 1) * d]);
            if mask[r] {
                assert_close(got, want, tol * scale, &format!("{what}: hvp row {r}"));
                assert_close(&q[r..=r], &q_full[r..=r], tol * q_scale, &what);
            } else {
                assert!(
                    got.iter().all(|v| *v == 0.0),
                    "{what}: hvp row {r} not zero"
                );
                assert_eq!(q[r], 0.0, "{what}: bilinear row {r} not zero");
            }
        }
    }
    let wrong = host.hvp_active(&i.u, &vec![true; b + 1]);
    assert!(wrong.is_err(), "{name}: a mask of the wrong length");
}

/// `J` at `u' = v + α ⊙ u + β ⊙ c` (per-row α, β; `β_0 = 0`), its tangents given as those of
/// `v` plus the scaled tangents of `u` and `c` (what the surrogate's CG does), or computed.
fn objective_at_combination(
    net: &dyn ConvexPotential,
    i: &Inputs,
    x: &Tensor,
    given: bool,
) -> (Tensor, Vec<f64>) {
    let b = i.x.dim(0).unwrap();
    let alpha: Vec<f64> = (0..b).map(|r| 0.5 + 0.1 * r as f64).collect();
    let beta: Vec<f64> = (0..b).map(|r| -0.05 * r as f64).collect();
    let col = |a: &[f64]| Tensor::from_slice(a, (b, 1), x.device()).unwrap();
    let u = (&i.v + i.u.broadcast_mul(&col(&alpha)).unwrap()).unwrap();
    let u = (u + i.c.broadcast_mul(&col(&beta)).unwrap()).unwrap();
    let lin = net.host_linearize(x).unwrap().expect("supported");
    let (g, q) = if given {
        let (hv, tv) = lin.hvp_and_tangents(&i.v).unwrap();
        assert_eq!(flat(&hv), flat(&lin.hvp(&i.v).unwrap()), "hvp_and_tangents");
        let mut tu = tv.clone();
        tu.add_scaled_rows(&alpha, &lin.hvp_and_tangents(&i.u).unwrap().1)
            .unwrap();
        tu.add_scaled_rows(&beta, &lin.hvp_and_tangents(&i.c).unwrap().1)
            .unwrap();
        lin.gradient_and_bilinear_given_tangents(&u, &i.v, &tu, &tv)
            .unwrap()
    } else {
        lin.gradient_and_bilinear(&u, &i.v).unwrap()
    };
    let mut values = flat(&g);
    values.extend(flat(&q));
    let j =
        ((g * &i.c).unwrap().sum_all().unwrap() + (q * &i.w).unwrap().sum_all().unwrap()).unwrap();
    (j, values)
}

/// The bilinear op given accumulated tangents equals the op computing them: values and the
/// gradients of `J` (parameters and `x`), to `tol` relative (only the rounding of the
/// tangents' accumulation differs).
fn check_given_tangents(
    name: &str,
    net: &dyn ConvexPotential,
    vars: &[(String, Var)],
    i: &Inputs,
    tol: f64,
) {
    let xv = Var::from_tensor(&i.x).unwrap();
    let (jg, vg) = objective_at_combination(net, i, xv.as_tensor(), true);
    let (jd, vd) = objective_at_combination(net, i, xv.as_tensor(), false);
    let scale = vd.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    assert_close(
        &vg,
        &vd,
        tol * scale,
        &format!("{name}: given tangents, values"),
    );
    let (gg, gd) = (jg.backward().unwrap(), jd.backward().unwrap());
    compare_gradients(&gg, &gd, vars, &xv, tol, &format!("{name}: given tangents"));
}

/// `got` against `want` for every parameter and `x`, to `tol` relative (one side without an
/// entry: the other must be zero). Returns how many are non-zero in `want`.
fn compare_gradients(
    got: &candle_core::backprop::GradStore,
    want: &candle_core::backprop::GradStore,
    vars: &[(String, Var)],
    xv: &Var,
    tol: f64,
    name: &str,
) -> usize {
    let mut nonzero = 0;
    for (vname, var) in vars.iter().chain([(String::from("x"), xv.clone())].iter()) {
        match (got.get(var).map(flat), want.get(var).map(flat)) {
            (Some(a), Some(b)) => {
                let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                assert_close(&a, &b, tol * scale, &format!("{name}: d J / d {vname}"));
                nonzero += usize::from(b.iter().any(|v| *v != 0.0));
            }
            (None, None) => {}
            (a, b) => {
                let t = a.or(b).unwrap();
                assert!(
                    t.iter().all(|v| v.abs() < 1e-12),
                    "{name}: {vname} only on one side"
                );
            }
        }
    }
    nonzero
}
