//! The composed activations (the candle ops a GPU runs, `Activation::eval_composed`) against
//! the fused CPU kernels: the same limits at `x = ±∞` (the value and derivatives were `NaN`
//! there: `∞ − ∞` in σ and in the symmetric variants, `−∞·0` in the Gaussian softplus), and
//! candle's gradient of each composed output is the next derivative, at 0 (where `abs` and
//! `relu` take one side) and far out (where `e^{−x}` overflows).

use candle_core::{DType, Device, Tensor, Var};
use icnn::{Activation, ActivationKind};

fn variants() -> Vec<Activation> {
    let mut out = Vec::new();
    for kind in [ActivationKind::Softplus, ActivationKind::GaussianSoftplus] {
        for (symmetric, zero_shift) in [(false, false), (false, true), (true, false), (true, true)]
        {
            out.push(
                Activation::new(kind)
                    .with_symmetric(symmetric)
                    .with_zero_shift(zero_shift),
            );
        }
    }
    out
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
}

/// Value, σ-like first and second derivative of `act` at `x`, composed and fused.
fn both(act: &Activation, x: &Tensor) -> [(Vec<f64>, Vec<f64>); 3] {
    let c = act.eval_composed(x, true).unwrap();
    let f = act.eval(x, true).unwrap();
    [
        (values(&c.value), values(&f.value)),
        (values(&c.d1.unwrap()), values(&f.d1.unwrap())),
        (values(&c.d2.unwrap()), values(&f.d2.unwrap())),
    ]
}

#[test]
fn composed_activations_take_the_fused_limits_at_infinity_and_agree_far_out() {
    let inf = f64::INFINITY;
    // f32: 1e30 and 100 are far out (e^{−100} underflows f32; 1e30² overflows it).
    for (dtype, far, tol) in [(DType::F64, 1e200, 1e-14), (DType::F32, 1e30, 1e-6)] {
        let xs = [
            -inf, -far, -800.0, -100.0, -3.0, 0.0, 3.0, 100.0, 800.0, far, inf,
        ];
        let x = Tensor::new(&xs, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        for act in variants() {
            for (order, (composed, fused)) in both(&act, &x).into_iter().enumerate() {
                for ((&xi, c), f) in xs.iter().zip(composed).zip(fused) {
                    let ok = if f.is_finite() {
                        (c - f).abs() <= tol * (1.0 + f.abs())
                    } else {
                        c == f
                    };
                    assert!(
                        ok,
                        "{act:?} {dtype:?} order {order} at {xi}: composed {c}, fused {f}"
                    );
                }
            }
        }
    }
}

/// The third derivative: softplus σ(1 − σ)(1 − 2σ), the Gaussian softplus −xφ(x).
fn third(kind: ActivationKind, x: f64) -> f64 {
    match kind {
        ActivationKind::Softplus => {
            let e = (-x.abs()).exp();
            // σ(1 − σ) = e/(1 + e)², 1 − 2σ = −sign(x)(1 − e)/(1 + e).
            -x.signum() * e * (1.0 - e) / (1.0 + e).powi(3)
        }
        ActivationKind::GaussianSoftplus => {
            -x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }
    }
}

#[test]
fn candle_differentiates_each_composed_output_into_the_next_derivative() {
    let xs = [-800.0, -40.0, -3.0, -0.5, 0.0, 0.5, 3.0, 40.0, 800.0];
    for act in variants() {
        let x = Var::new(&xs, &Device::Cpu).unwrap();
        let c = act.eval_composed(x.as_tensor(), true).unwrap();
        let f = act.eval(x.as_tensor(), true).unwrap();
        let (d1, d2) = (values(&f.d1.unwrap()), values(&f.d2.unwrap()));
        let d3: Vec<f64> = xs.iter().map(|&t| third(act.kind, t)).collect();
        let outputs = [c.value, c.d1.unwrap(), c.d2.unwrap()];
        for (order, (out, want)) in outputs.iter().zip([d1, d2, d3]).enumerate() {
            let grads = out.sum_all().unwrap().backward().unwrap();
            let got = values(grads.get(x.as_tensor()).unwrap());
            for ((&xi, g), w) in xs.iter().zip(got).zip(want) {
                // Rounding of O(1) terms (the symmetric variants' ±1/2, the Gaussian's
                // x·φ − x·φ).
                assert!(
                    (g - w).abs() <= 1e-14 * (1.0 + w.abs()),
                    "{act:?}: d/dx of order {order} at {xi}: {g}, want {w}"
                );
            }
        }
    }
}
