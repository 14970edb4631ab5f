//! Parameter gradients of `uᵀ H(x) v` and of `‖∇ₓF(x)‖²`, computed by candle's first-order
//! backward through the explicit formulas, against central differences in the parameters.

use crate::common::{BATCH, all_cases, named_vars, randn};
use candle_core::{Tensor, Var};
use icnn::ConvexPotential;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 3;

fn surrogate(net: &dyn ConvexPotential, x: &Tensor, u: &Tensor, v: &Tensor) -> Tensor {
    let lin = net.linearize(x).unwrap();
    (lin.hvp(v).unwrap() * u).unwrap().sum_all().unwrap()
}

fn grad_norm2(net: &dyn ConvexPotential, x: &Tensor) -> Tensor {
    net.linearize(x)
        .unwrap()
        .gradient()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

/// Sets entry `i` of `var` to `value`.
fn set_entry(var: &Var, i: usize, value: f64) {
    let t = var.as_tensor();
    let mut data = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    data[i] = value;
    let new = Tensor::from_vec(data, t.shape(), t.device()).unwrap();
    var.set(&new).unwrap();
}

fn check_functional<F: Fn() -> Tensor>(
    name: &str,
    varmap: &candle_nn::VarMap,
    f: F,
    rng: &mut StdRng,
) {
    let value = f();
    let grads = value.backward().unwrap();
    let scale = scalar(&value).abs().max(1.0);
    let h = 1e-5;
    let mut checked = 0;
    for (vname, var) in named_vars(varmap) {
        let n = var.as_tensor().elem_count();
        let g = grads
            .get(&var)
            .map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap())
            .unwrap_or_else(|| vec![0.0; n]);
        let picks: Vec<usize> = if n <= 4 {
            (0..n).collect()
        } else {
            (0..4).map(|_| rng.random_range(0..n)).collect()
        };
        for i in picks {
            let orig = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()[i];
            set_entry(&var, i, orig + h);
            let fp = scalar(&f());
            set_entry(&var, i, orig - h);
            let fm = scalar(&f());
            set_entry(&var, i, orig);
            let fd = (fp - fm) / (2.0 * h);
            // Central differences: truncation ~h²·|∂³S| ≲ 1e-9, rounding ~1e-16·S/h ≲ 1e-10.
            assert!(
                (fd - g[i]).abs() <= 1e-6 * scale.max(fd.abs()),
                "{name}: ∂/∂{vname}[{i}]: backward {} vs central difference {fd}",
                g[i]
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "{name}: too few parameters checked");
}

#[test]
fn surrogate_parameter_gradient_matches_central_differences() {
    let mut rng = StdRng::seed_from_u64(20);
    for case in all_cases(DIM, 21) {
        let x = randn(&mut rng, (BATCH, DIM), 1.0);
        let u = randn(&mut rng, (BATCH, DIM), 1.0);
        let v = randn(&mut rng, (BATCH, DIM), 1.0);
        let net = case.net.as_ref();
        check_functional(
            &format!("{} uᵀHv", case.name),
            &case.varmap,
            || surrogate(net, &x, &u, &v),
            &mut rng,
        );
    }
}

#[test]
fn gradient_norm_parameter_gradient_matches_central_differences() {
    let mut rng = StdRng::seed_from_u64(22);
    for case in all_cases(DIM, 23) {
        let x = randn(&mut rng, (BATCH, DIM), 1.0);
        let net = case.net.as_ref();
        check_functional(
            &format!("{} ‖∇F‖²", case.name),
            &case.varmap,
            || grad_norm2(net, &x),
            &mut rng,
        );
    }
}
