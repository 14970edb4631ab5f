//! The extension API: a potential defined outside the crate (`Linearization::from_parts` with
//! a user `HessianVectorProducts`) behaves like the built-in ones, and `check_derivatives`
//! accepts every built-in architecture and rejects wrong derivatives.

use std::sync::Arc;

use crate::common::{BATCH, all_cases, assert_close, flat, randn};
use candle_core::{DType, Device, Tensor, Var};
use icnn::{
    ConvexPotential, HessianVectorProducts, IcnnError, Linearization, check_derivatives, softplus,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// `F(x) = Σ_i softplus(c_i)·x_i⁴/12 + ‖x‖²/2`: `∇F = s ⊙ x³/3 + x`,
/// `∇²F = diag(s ⊙ x² + 1)` with `s = softplus(c)`, `c` a parameter. `bug` scales the
/// Hessian's data-dependent part (1 = correct) or, when negative, makes the products
/// asymmetric, to show that the checks catch both.
#[derive(Debug)]
struct DiagonalQuartic {
    c: Tensor,
    bug: f64,
}

#[derive(Debug, Clone)]
struct QuarticHvp {
    diag: Tensor,
    shift: Option<Tensor>,
}

impl HessianVectorProducts for QuarticHvp {
    fn hvp(&self, v: &Tensor) -> icnn::Result<Tensor> {
        let hv = (v * &self.diag)?;
        Ok(match &self.shift {
            // Adds x₀-dependent mass to the first coordinate from the second: not symmetric.
            Some(s) => {
                let d = v.dim(1)?;
                let from_second = v.narrow(1, 1, 1)?.broadcast_mul(s)?;
                let pad = Tensor::zeros((v.dim(0)?, d - 1), v.dtype(), v.device())?;
                (hv + Tensor::cat(&[from_second, pad], 1)?)?
            }
            None => hv,
        })
    }
    fn detach(&self) -> Arc<dyn HessianVectorProducts> {
        Arc::new(QuarticHvp {
            diag: self.diag.detach(),
            shift: self.shift.as_ref().map(Tensor::detach),
        })
    }
}

impl ConvexPotential for DiagonalQuartic {
    fn potential(&self, x: &Tensor) -> icnn::Result<Tensor> {
        Ok(self.linearize(x)?.potential())
    }
    fn linearize(&self, x: &Tensor) -> icnn::Result<Linearization> {
        let s = softplus(&self.c)?;
        let x2 = x.sqr()?;
        let potential = ((x2.sqr()?.broadcast_mul(&s)? / 12.0)? + (&x2 / 2.0)?)?.sum(1)?;
        let gradient = ((x2.broadcast_mul(&s)? * x)? / 3.0)?.add(x)?;
        let curvature = (x2.broadcast_mul(&s)? * self.bug.abs())?;
        let diag = (curvature + 1.0)?;
        let shift = (self.bug < 0.0).then(|| x.narrow(1, 0, 1)).transpose()?;
        Linearization::from_parts(potential, gradient, Arc::new(QuarticHvp { diag, shift }))
    }
    fn dim(&self) -> usize {
        self.c.dim(0).unwrap_or(0)
    }
}

fn quartic(bug: f64) -> (DiagonalQuartic, Var) {
    let c = Var::from_vec(vec![0.3f64, -1.0, 2.0], 3, &Device::Cpu).unwrap();
    (
        DiagonalQuartic {
            c: c.as_tensor().clone(),
            bug,
        },
        c,
    )
}

/// The custom linearisation against the closed form: Hessian (assembled from products),
/// `hvp_many` (the trait's default loop), and the finite-difference check passing at 1e-7
/// (central differences with h = 1e-5 in f64: truncation ≈ h²·|F'''| ≈ 1e-9, rounding ≈
/// 1e-16/h ≈ 1e-11).
#[test]
fn custom_linearization_matches_closed_form() {
    let (net, _) = quartic(1.0);
    let mut rng = StdRng::seed_from_u64(5);
    let x = randn(&mut rng, (BATCH, 3), 1.0);
    let lin = net.linearize(&x).unwrap();
    let s: Vec<f64> = flat(&softplus(&net.c).unwrap());
    let xs = flat(&x);
    let h = flat(&lin.hessian().unwrap());
    let mut expected = vec![0.0; BATCH * 9];
    for b in 0..BATCH {
        for i in 0..3 {
            expected[b * 9 + i * 3 + i] = s[i] * xs[b * 3 + i].powi(2) + 1.0;
        }
    }
    assert_close(&h, &expected, 1e-14, "Hessian of the custom potential");

    let v = randn(&mut rng, (BATCH, 2 * 3), 1.0)
        .reshape((BATCH, 2, 3))
        .unwrap();
    let many = flat(&lin.hvp_many(&v).unwrap());
    for k in 0..2 {
        let vk = v.narrow(1, k, 1).unwrap().squeeze(1).unwrap();
        let one = flat(&lin.hvp(&vk).unwrap());
        let got: Vec<f64> = (0..BATCH)
            .flat_map(|b| many[b * 6 + k * 3..b * 6 + k * 3 + 3].to_vec())
            .collect();
        assert_close(&got, &one, 1e-15, "hvp_many column");
    }
    let dir = randn(&mut rng, (BATCH, 3), 1.0);
    let check = check_derivatives(&net, &x, &dir, 1e-5).unwrap();
    assert!(check.passes(1e-7), "{check:?}");
}

/// `check_derivatives` accepts every built-in architecture (with each activation) and rejects
/// a Hessian that misses half of its data-dependent part (error O(1)) and one that is not
/// symmetric, each on the error it is meant to catch.
#[test]
fn check_derivatives_accepts_built_ins_and_rejects_wrong_hessians() {
    let mut rng = StdRng::seed_from_u64(6);
    for case in all_cases(3, 7) {
        let x = randn(&mut rng, (BATCH, 3), 1.0);
        let v = randn(&mut rng, (BATCH, 3), 1.0);
        let check = check_derivatives(case.net.as_ref(), &x, &v, 1e-5).unwrap();
        assert!(check.passes(1e-7), "{}: {check:?}", case.name);
    }
    let x = randn(&mut rng, (BATCH, 3), 1.0);
    let v = randn(&mut rng, (BATCH, 3), 1.0);
    let (half, _) = quartic(0.5);
    let check = check_derivatives(&half, &x, &v, 1e-5).unwrap();
    assert!(
        check.hvp_error > 1e-2 && check.gradient_error < 1e-7,
        "{check:?}"
    );
    let (asymmetric, _) = quartic(-1.0);
    let check = check_derivatives(&asymmetric, &x, &v, 1e-5).unwrap();
    assert!(check.symmetry_error > 1e-2, "{check:?}");
    // Also when every row of v is the same and its coordinates are equal (the second
    // direction was v itself there).
    let same = Tensor::full(0.5f64, (BATCH, 3), &Device::Cpu).unwrap();
    let check = check_derivatives(&asymmetric, &x, &same, 1e-5).unwrap();
    assert!(check.symmetry_error > 1e-2, "{check:?}");
    // A step that does not move x is refused.
    let err = check_derivatives(&half, &x, &v, 1e-300)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rounds to x"), "{err}");
}

/// The surrogate's parameter gradient flows through a custom product: the backward of
/// `uᵀ(∇²F v)` w.r.t. `c` equals its central difference in `c` (no second-order autodiff
/// involved: the products are ordinary tensor ops in `c`).
#[test]
fn parameter_gradient_through_custom_products() {
    let (net, c) = quartic(1.0);
    let mut rng = StdRng::seed_from_u64(8);
    let x = randn(&mut rng, (BATCH, 3), 1.0);
    let u = randn(&mut rng, (BATCH, 3), 1.0);
    let v = randn(&mut rng, (BATCH, 3), 1.0);
    let surrogate = |net: &DiagonalQuartic| -> Tensor {
        let lin = net.linearize(&x).unwrap();
        (lin.hvp(&v).unwrap() * &u).unwrap().sum_all().unwrap()
    };
    let grads = surrogate(&net).backward().unwrap();
    let analytic = flat(grads.get(&c).unwrap());
    let base = flat(c.as_tensor());
    let h = 1e-6;
    let mut numeric = Vec::new();
    for i in 0..3 {
        let at = |delta: f64| {
            let mut p = base.clone();
            p[i] += delta;
            let net = DiagonalQuartic {
                c: Tensor::from_vec(p, 3, &Device::Cpu).unwrap(),
                bug: 1.0,
            };
            surrogate(&net).to_scalar::<f64>().unwrap()
        };
        numeric.push((at(h) - at(-h)) / (2.0 * h));
    }
    assert_close(&analytic, &numeric, 1e-7, "∂(uᵀHv)/∂c");
}

/// Inconsistent parts are refused by name: a gradient that is not `(B, d)`, a potential of
/// the wrong length, products of the wrong shape.
#[test]
fn from_parts_refuses_inconsistent_shapes() {
    let g = Tensor::zeros((4, 3), DType::F64, &Device::Cpu).unwrap();
    let p = Tensor::zeros(4, DType::F64, &Device::Cpu).unwrap();
    let hvp = Arc::new(QuarticHvp {
        diag: Tensor::ones((4, 3), DType::F64, &Device::Cpu).unwrap(),
        shift: None,
    });
    let err = |r: icnn::Result<Linearization>| match r {
        Err(IcnnError::Shape(m)) => m,
        other => panic!("{other:?}"),
    };
    let m = err(Linearization::from_parts(
        p.clone(),
        g.flatten_all().unwrap(),
        hvp.clone(),
    ));
    assert!(m.contains("gradient must be (B, d)"), "{m}");
    let m = err(Linearization::from_parts(
        p.narrow(0, 0, 3).unwrap(),
        g.clone(),
        hvp.clone(),
    ));
    assert!(m.contains("potential must be (4,)"), "{m}");
    let lin = Linearization::from_parts(p, g.clone(), Arc::new(WrongShape)).unwrap();
    let m = lin.hvp(&g).unwrap_err().to_string();
    assert!(m.contains("returned [4, 2]"), "{m}");
}

/// Products that drop the last coordinate.
#[derive(Debug)]
struct WrongShape;

impl HessianVectorProducts for WrongShape {
    fn hvp(&self, v: &Tensor) -> icnn::Result<Tensor> {
        Ok(v.narrow(1, 0, 2)?)
    }
    fn detach(&self) -> Arc<dyn HessianVectorProducts> {
        Arc::new(WrongShape)
    }
}
