//! The fused scaled kernel against the candle ops it replaces (values and gradients) and
//! against central differences.

use super::*;
use candle_core::{DType, Device, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `(C_o, C, 3, 3)` kernel values in `[−3, 3]` (softplus's both regimes) and log-scales in
/// `[−1, 1]`, as variables of `dtype`.
fn inputs(rng: &mut StdRng, (co, c): (usize, usize), dtype: DType) -> (Var, Var) {
    let w: Vec<f64> = (0..co * c * 9)
        .map(|_| rng.random_range(-3.0..3.0))
        .collect();
    let logs: Vec<f64> = (0..co).map(|_| rng.random_range(-1.0..1.0)).collect();
    let dev = Device::Cpu;
    let w = Tensor::from_vec(w, (co, c, 3, 3), &dev).unwrap();
    let logs = Tensor::from_vec(logs, co, &dev).unwrap();
    (
        Var::from_tensor(&w.to_dtype(dtype).unwrap()).unwrap(),
        Var::from_tensor(&logs.to_dtype(dtype).unwrap()).unwrap(),
    )
}

/// The ActNorm scale `exp(logs) + 0.001`, as `ActNorm::scale` computes it.
fn scale(logs: &Var) -> Tensor {
    logs.as_tensor().exp().unwrap().affine(1.0, 1e-3).unwrap()
}

/// What `prepare_node` composed before: `map(W)` by candle ops, times the broadcast scale.
fn composed(w: &Var, gamma: &Tensor, map: KernelMap) -> Tensor {
    let k = match map {
        KernelMap::Identity => w.as_tensor().clone(),
        KernelMap::Softplus { inv_fan_in } => crate::activation::softplus(w.as_tensor())
            .unwrap()
            .affine(inv_fan_in, 0.0)
            .unwrap(),
    };
    let c = gamma.dim(0).unwrap();
    k.broadcast_mul(&gamma.reshape((c, 1, 1, 1)).unwrap())
        .unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `⟨r, kernel(w, γ)⟩` and its gradients with respect to `w` and `logs`.
fn loss_and_grads(
    w: &Var,
    logs: &Var,
    r: &Tensor,
    kernel: impl Fn(&Var, &Tensor) -> Tensor,
) -> (f64, Vec<f64>, Vec<f64>) {
    let loss = (kernel(w, &scale(logs)) * r).unwrap().sum_all().unwrap();
    let grads = crate::detached_backward(&loss).unwrap();
    (
        values(&loss)[0],
        values(grads.get(w.as_tensor()).unwrap()),
        values(grads.get(logs.as_tensor()).unwrap()),
    )
}

/// A cotangent of `w`'s shape and dtype, from the seeded `rng` (candle's CPU RNG cannot be
/// seeded).
fn cotangent(rng: &mut StdRng, w: &Var) -> Tensor {
    let v: Vec<f64> = (0..w.elem_count())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(v, w.shape(), &Device::Cpu)
        .unwrap()
        .to_dtype(w.dtype())
        .unwrap()
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

const MAPS: [KernelMap; 2] = [
    KernelMap::Identity,
    KernelMap::Softplus {
        inv_fan_in: 1.0 / 45.0,
    },
];

/// Values and the kernel's gradient equal the composed ops' bit for bit (the same
/// arithmetic in the same order); the scale's gradient sums in another order: within a few
/// ulps of the sums (1e-12 relative in f64, 1e-5 in f32).
#[test]
fn matches_the_composed_ops() {
    let mut rng = StdRng::seed_from_u64(7);
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
        for map in MAPS {
            for shape in [(1, 1), (5, 3), (16, 7)] {
                let (w, logs) = inputs(&mut rng, shape, dtype);
                let gamma = scale(&logs);
                assert_eq!(
                    values(&scaled_kernel(&w, &gamma, map).unwrap()),
                    values(&composed(&w, &gamma, map)),
                    "{dtype:?} {map:?} {shape:?}"
                );
                let r = cotangent(&mut rng, &w);
                let fused = loss_and_grads(&w, &logs, &r, |w, g| {
                    scaled_kernel(w.as_tensor(), g, map).unwrap()
                });
                let want = loss_and_grads(&w, &logs, &r, |w, g| composed(w, g, map));
                assert_eq!(fused.1, want.1, "∂w {dtype:?} {map:?} {shape:?}");
                let e = max_rel(&fused.2, &want.2);
                assert!(e < tol, "∂logs {dtype:?} {map:?} {shape:?}: {e:e}");
            }
        }
    }
}

/// The gradients against central differences of the loss (f64, step 1e-5: truncation
/// ~1e-10 relative, rounding ~1e-11), to 1e-7.
#[test]
fn gradients_match_central_differences() {
    let mut rng = StdRng::seed_from_u64(11);
    for map in MAPS {
        let (w, logs) = inputs(&mut rng, (4, 3), DType::F64);
        let r = cotangent(&mut rng, &w);
        let kernel = |w: &Var, g: &Tensor| scaled_kernel(w.as_tensor(), g, map).unwrap();
        let (_, dw, dlogs) = loss_and_grads(&w, &logs, &r, kernel);
        let h = 1e-5;
        for (var, grad) in [(&w, &dw), (&logs, &dlogs)] {
            let x0 = values(var.as_tensor());
            let fd: Vec<f64> = (0..x0.len())
                .map(|i| {
                    let at = |d: f64| {
                        let mut x = x0.clone();
                        x[i] += d;
                        var.set(&Tensor::from_vec(x, var.shape(), &Device::Cpu).unwrap())
                            .unwrap();
                        loss_and_grads(&w, &logs, &r, kernel).0
                    };
                    (at(h) - at(-h)) / (2.0 * h)
                })
                .collect();
            var.set(&Tensor::from_vec(x0, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let e = max_rel(grad, &fd);
            assert!(e < 1e-7, "{map:?}: {e:e}");
        }
    }
}

/// A scale whose length does not divide the kernel, and mixed dtypes, are errors; the
/// scale's gradient of a constant kernel is its row sums.
#[test]
fn mismatched_inputs_are_refused_and_row_sums_hold() {
    let dev = Device::Cpu;
    let w = Tensor::ones((4, 3, 3, 3), DType::F64, &dev).unwrap();
    let five = Tensor::ones(5, DType::F64, &dev).unwrap();
    assert!(scaled_kernel(&w, &five, KernelMap::Identity).is_err());
    let f32_scale = Tensor::ones(4, DType::F32, &dev).unwrap();
    assert!(scaled_kernel(&w, &f32_scale, KernelMap::Identity).is_err());
    // The row sums of a constant kernel: ∂γ[o] = Σ ḡ·w over the row.
    let ones = Tensor::ones(4, DType::F64, &dev).unwrap();
    let v = Var::from_tensor(&ones).unwrap();
    let loss = scaled_kernel(&w, v.as_tensor(), KernelMap::Identity)
        .unwrap()
        .sum_all()
        .unwrap();
    let g = crate::detached_backward(&loss).unwrap();
    let dg = g.get(v.as_tensor()).unwrap();
    assert_eq!(dg.to_vec1::<f64>().unwrap(), [27.0; 4]);
}

/// The gradients hold no graph even from candle's own backward (which leaves a variable's
/// gradient on the graph of the sum it was added into): one that tracked would keep that
/// sum's zeros and the backward pass's whole output alive, for every layer.
#[test]
fn gradients_hold_no_graph() {
    let mut rng = StdRng::seed_from_u64(3);
    for map in MAPS {
        let (w, logs) = inputs(&mut rng, (4, 2), DType::F32);
        let loss = scaled_kernel(w.as_tensor(), &scale(&logs), map)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        assert!(!grads.get(w.as_tensor()).unwrap().track_op(), "{map:?}");
    }
}
