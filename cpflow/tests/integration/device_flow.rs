//! A tabular flow on a device (`test_device!`: the CPU here, CUDA in a `--features cuda`
//! build, where the flow's host kernels and parallel row chunks are skipped):
//! `[AN, CPF, AN, CPF, AN]` on d = 3 (Icnn3, f64 and f32). `log_prob_exact` against the
//! change-of-variables formula computed on the host from `transform` and a central-difference
//! Jacobian, and against a closed form where the blocks are affine; `log_prob_slq` against
//! the exact value; samples against their log-density; the inverse round trip with its
//! convergence report; and the device's results against the same flow on the CPU (copied
//! with `Flow::to_device` and through a safetensors file).

use std::collections::HashMap;
use std::f64::consts::PI;

use candle_core::{DType, Device, Tensor};
use cpflow::{FloatType, Flow, FlowConfig, InverseParams, Layer, SlqConfig};
use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::device_common::{host, max_rel_diff};
use crate::flow_common::{data, icnn3};

const D: usize = 3;

fn config(float: FloatType) -> FlowConfig {
    FlowConfig::tabular(D, 2, icnn3(D, 8, 3))
        .with_float(float)
        .with_init_seed(21)
}

/// The f64 flow on the CPU: initialised on 64 points, then every weight but the flags moved
/// by `N(0, 0.1²)` (no check at the initialisation's special point).
fn cpu_flow() -> Flow {
    let flow = Flow::new(config(FloatType::F64), &Device::Cpu).unwrap();
    flow.initialize(&data(64, D, 1)).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let moved: HashMap<String, Tensor> = flow
        .weight_tensors()
        .into_iter()
        .map(|(name, t)| {
            let mut v = host(&t);
            if !name.ends_with("initialized") {
                v.iter_mut()
                    .for_each(|w| *w += 0.1 * rng.sample::<f64, _>(StandardNormal));
            }
            (name, Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap())
        })
        .collect();
    flow.set_weights(&moved, "").unwrap();
    flow
}

/// `log N(z; 0, I)` per row of host values.
fn std_normal_log_prob(z: &[f64]) -> Vec<f64> {
    z.chunks(D)
        .map(|r| -0.5 * r.iter().map(|v| v * v).sum::<f64>() - 0.5 * D as f64 * (2.0 * PI).ln())
        .collect()
}

/// `log N(f(x)) + log|det ∂f/∂x|` per row, with `f = transform(·).0` evaluated on the device
/// and its Jacobian by central differences (rows are independent: column `j` of every row's
/// Jacobian from one pair of batched evaluations).
fn change_of_variables(flow: &Flow, x: &Tensor) -> Vec<f64> {
    let (n, h) = (x.dim(0).unwrap(), 1e-5);
    let xs = host(x);
    let z = host(&flow.transform(x).unwrap().0);
    let mut jac = vec![DMatrix::<f64>::zeros(D, D); n];
    for j in 0..D {
        let shifted = |s: f64| {
            let mut v = xs.clone();
            v.iter_mut().skip(j).step_by(D).for_each(|w| *w += s);
            let t = Tensor::from_vec(v, (n, D), x.device()).unwrap();
            host(&flow.transform(&t.to_dtype(x.dtype()).unwrap()).unwrap().0)
        };
        let (p, m) = (shifted(h), shifted(-h));
        for (i, ji) in jac.iter_mut().enumerate() {
            for r in 0..D {
                ji[(r, j)] = (p[i * D + r] - m[i * D + r]) / (2.0 * h);
            }
        }
    }
    std_normal_log_prob(&z)
        .into_iter()
        .zip(jac)
        .map(|(lp, j)| lp + j.lu().determinant().abs().ln())
        .collect()
}

/// `log_prob_exact` on the device against the change-of-variables formula on the host: the
/// central-difference Jacobian is good to ~1e-10 (h = 1e-5, O(1) third derivatives), its
/// log-det to ~1e-9 at these condition numbers (< 100), so 1e-7. The f32 flow with the same
/// weights agrees with the f64 one to 1e-4 relative (a log-density of O(1–10) from a few
/// hundred f32 roundings amplified by the Cholesky; measured on the CPU: 7e-8).
fn log_prob_exact_matches_change_of_variables(dev: &Device) {
    let flow = cpu_flow().to_device(dev).unwrap();
    let x = data(6, D, 3).to_device(dev).unwrap();
    let lp = flow.log_prob_exact(&x).unwrap();
    assert_eq!(lp.device().location(), dev.location());
    let want = change_of_variables(&flow, &x);
    let got = host(&lp);
    assert!(max_rel_diff(&got, &want) < 1e-7, "{got:?} vs {want:?}");
    assert_eq!(host(&flow.log_prob(&x).unwrap()), got);
    let (z, ld) = flow.transform(&x).unwrap();
    let sum: Vec<f64> = std_normal_log_prob(&host(&z))
        .iter()
        .zip(host(&ld))
        .map(|(a, b)| a + b)
        .collect();
    assert!(max_rel_diff(&sum, &got) < 1e-13);

    let flow32 = Flow::new(config(FloatType::F32), dev).unwrap();
    let weights: HashMap<String, Tensor> = flow.weight_tensors().into_iter().collect();
    flow32.set_weights(&weights, "").unwrap();
    let x32 = x.to_dtype(DType::F32).unwrap();
    let lp32 = flow32.log_prob_exact(&x32).unwrap();
    assert_eq!(lp32.dtype(), DType::F32);
    let lp64 = host(
        &flow
            .log_prob_exact(&x32.to_dtype(DType::F64).unwrap())
            .unwrap(),
    );
    let err = max_rel_diff(&host(&lp32), &lp64);
    assert!(err < 1e-4, "f32 vs f64: {err}");
}
test_device!(
    log_prob_exact_matches_change_of_variables,
    log_prob_exact_cpu,
    log_prob_exact_cuda
);

/// With every block's ICNN weight `sp(w₁)` underflowing to 0 (`w₁ = −800`) the flow is
/// affine: ActNorm `y = (x + b)·(e^{logs} + 0.001)`, block `y = sp(w₀)·x`. Its log-density
/// in closed form from the weights (read on the host) equals `log_prob_exact` to rounding.
fn affine_flow_log_prob_closed_form(dev: &Device) {
    let flow = cpu_flow().to_device(dev).unwrap();
    let mut w: HashMap<String, Tensor> = flow.weight_tensors().into_iter().collect();
    for (name, t) in w.iter_mut() {
        if name.ends_with(".w1") {
            *t = (t.ones_like().unwrap() * -800.0).unwrap();
        }
    }
    flow.set_weights(&w, "").unwrap();
    let x = data(5, D, 4).to_device(dev).unwrap();
    let mut h = host(&x);
    let mut logdet = 0.0;
    for (i, layer) in flow.layers().iter().enumerate() {
        match layer {
            Layer::ActNorm(_) => {
                let b = host(&w[&format!("layers.{i}.bias")]);
                let s: Vec<f64> = host(&w[&format!("layers.{i}.logs")])
                    .iter()
                    .map(|l| l.exp() + 0.001)
                    .collect();
                logdet += s.iter().map(|v| v.ln()).sum::<f64>();
                h.iter_mut()
                    .enumerate()
                    .for_each(|(k, v)| *v = (*v + b[k % D]) * s[k % D]);
            }
            Layer::Cpf(block) => {
                let w0 = host(&w[&format!("layers.{i}.w0")])[0];
                let a0 = w0.exp().ln_1p();
                assert!((block.quadratic_weight().unwrap() - a0).abs() < 1e-15);
                logdet += D as f64 * a0.ln();
                h.iter_mut().for_each(|v| *v *= a0);
            }
        }
    }
    let want: Vec<f64> = std_normal_log_prob(&h).iter().map(|l| l + logdet).collect();
    let got = host(&flow.log_prob_exact(&x).unwrap());
    assert!(max_rel_diff(&got, &want) < 1e-12, "{got:?} vs {want:?}");
}
test_device!(
    affine_flow_log_prob_closed_form,
    affine_flow_cpu,
    affine_flow_cuda
);

/// SLQ with `d` Lanczos steps is exact quadrature, so its error is the probes' sampling error:
/// within 4 standard errors of the exact value (fixed seed; a 4σ miss has probability
/// ~6e-5 per row). In f32 too, against the f32 exact value.
fn log_prob_slq_matches_exact(dev: &Device) {
    let flow = cpu_flow().to_device(dev).unwrap();
    let x = data(8, D, 5).to_device(dev).unwrap();
    let exact = host(&flow.log_prob_exact(&x).unwrap());
    let mut rng = StdRng::seed_from_u64(6);
    let slq = flow
        .log_prob_slq(
            &x,
            &SlqConfig {
                probes: 64,
                steps: D,
            },
            &mut rng,
        )
        .unwrap();
    assert_eq!(slq.log_prob.device().location(), dev.location());
    for (i, (s, e)) in host(&slq.log_prob).iter().zip(&exact).enumerate() {
        let se = slq.std_err[i];
        assert!(
            se > 0.0 && (s - e).abs() <= 4.0 * se + 1e-10,
            "row {i}: {s} vs {e} ± {se}"
        );
    }
    assert!(slq.bias_counts().is_zero());

    let flow32 = Flow::new(config(FloatType::F32), dev).unwrap();
    flow32
        .set_weights(&flow.weight_tensors().into_iter().collect(), "")
        .unwrap();
    let x32 = x.to_dtype(DType::F32).unwrap();
    let exact32 = host(&flow32.log_prob_exact(&x32).unwrap());
    let slq32 = flow32
        .log_prob_slq(
            &x32,
            &SlqConfig {
                probes: 64,
                steps: D,
            },
            &mut rng,
        )
        .unwrap();
    for (i, (s, e)) in host(&slq32.log_prob).iter().zip(&exact32).enumerate() {
        // 4σ plus the f32 rounding of an O(1–10) log-density (exact f32 vs f64: 7e-8).
        let se = slq32.std_err[i];
        assert!(
            (s - e).abs() <= 4.0 * se + 1e-3,
            "f32 row {i}: {s} vs {e} ± {se}"
        );
    }
}
test_device!(
    log_prob_slq_matches_exact,
    log_prob_slq_cpu,
    log_prob_slq_cuda
);

/// Samples and their log-densities agree with `log_prob_exact` of the samples (the same
/// dense log-dets at points reached by inversion to 1e-10: 1e-8); the inverse of
/// `transform` returns the points with a converged report whose residuals are at most the
/// tolerance, and the Jacobians ⪰ sp(w₀)I bound the error in `x` by the residual times the
/// inverse ActNorm scales (1e-8; measured 4e-11). f32: the default per-dtype tolerances
/// (2e-5 absolute + relative), error ≤ 1e-3 relative (measured 5e-5).
fn sample_and_inverse_round_trip(dev: &Device) {
    let flow = cpu_flow().to_device(dev).unwrap();
    let params = InverseParams {
        abs_tolerance: Some(1e-10),
        ..Default::default()
    };
    let mut rng = StdRng::seed_from_u64(7);
    let (s, lp) = flow.sample_and_log_prob_with(8, &params, &mut rng).unwrap();
    assert!(s.report.all_converged(), "{:?}", s.report.blocks);
    assert_eq!(s.x.device().location(), dev.location());
    let again = host(&flow.log_prob_exact(&s.x).unwrap());
    assert!(max_rel_diff(&host(&lp), &again) < 1e-8);

    let x = data(8, D, 8).to_device(dev).unwrap();
    let (z, _) = flow.transform(&x).unwrap();
    let inv = flow.inverse_with(&z, &params).unwrap();
    assert!(inv.report.all_converged(), "{:?}", inv.report.blocks);
    assert!(inv.report.max_residual() <= 1e-10);
    assert_eq!(inv.report.blocks.len(), 2);
    let err = max_rel_diff(&host(&inv.x), &host(&x));
    assert!(err < 1e-8, "round trip {err}");

    let flow32 = Flow::new(config(FloatType::F32), dev).unwrap();
    flow32
        .set_weights(&flow.weight_tensors().into_iter().collect(), "")
        .unwrap();
    let x32 = x.to_dtype(DType::F32).unwrap();
    let (z32, _) = flow32.transform(&x32).unwrap();
    let inv32 = flow32.inverse(&z32).unwrap();
    assert!(inv32.report.all_converged(), "{:?}", inv32.report.blocks);
    let err = max_rel_diff(&host(&inv32.x), &host(&x32));
    assert!(err < 1e-3, "f32 round trip {err}");
}
test_device!(
    sample_and_inverse_round_trip,
    sample_and_inverse_cpu,
    sample_and_inverse_cuda
);

/// Empty batches on the device, f32 and f64: `log_prob_exact` (also of data in the other
/// float type), `transform`, `sample` and `sample_and_log_prob` of 0 rows give empty results
/// of the right shape (on CUDA, candle's
/// sum over 0 rows divides by zero and a cast of an empty tensor launches a kernel on 0
/// threads, which the prior and krylov avoid).
fn empty_batches(dev: &Device) {
    for float in [FloatType::F64, FloatType::F32] {
        let flow = Flow::new(config(float), dev).unwrap();
        flow.initialize(
            &data(16, D, 3)
                .to_device(dev)
                .unwrap()
                .to_dtype(flow.dtype())
                .unwrap(),
        )
        .unwrap();
        let x = Tensor::zeros((0, D), flow.dtype(), dev).unwrap();
        assert_eq!(flow.log_prob_exact(&x).unwrap().dims(), &[0]);
        // Data of the other float type: converted to the flow's without a cast kernel.
        let other = match flow.dtype() {
            DType::F64 => DType::F32,
            _ => DType::F64,
        };
        let lp = flow
            .log_prob_exact(&Tensor::zeros((0, D), other, dev).unwrap())
            .unwrap();
        assert_eq!((lp.dims(), lp.dtype()), (&[0][..], flow.dtype()));
        let (z, ld) = flow.transform(&x).unwrap();
        assert_eq!((z.dims(), ld.dims()), (&[0, D][..], &[0][..]));
        let mut rng = StdRng::seed_from_u64(4);
        let s = flow.sample(0, &mut rng).unwrap();
        assert_eq!(s.x.dims(), &[0, D]);
        let (s, lp) = flow
            .sample_and_log_prob_with(0, &InverseParams::default(), &mut rng)
            .unwrap();
        assert_eq!((s.x.dims(), lp.dims()), (&[0, D][..], &[0][..]));
    }
}
test_device!(empty_batches, empty_batches_cpu, empty_batches_cuda);

/// The flow moved to the device (`Flow::to_device`) and loaded there from a safetensors
/// file equal the CPU flow: the weights bit for bit, and every pass to 1e-10 relative
/// (f64; the device runs candle's ops where the CPU runs host kernels, so the sums differ
/// in order: a few ulps per op, ~1e-14 through these small networks). SLQ draws its probes
/// on the host from the same seed, so it compares at the same tolerance. The inverses stop
/// at tolerance 1e-10 by possibly different iterations: 1e-9.
fn moved_flow_equals_the_host_flow(dev: &Device) {
    let cpu = cpu_flow();
    let path = std::env::temp_dir().join(format!(
        "cpflow-device-flow-{}.safetensors",
        std::process::id()
    ));
    cpu.save(&path).unwrap();
    let loaded = Flow::load(&path, dev).unwrap();
    std::fs::remove_file(&path).ok();
    let moved = cpu.to_device(dev).unwrap();
    let x = data(10, D, 9);
    let want_lp = host(&cpu.log_prob_exact(&x).unwrap());
    let (want_z, _) = cpu.transform(&x).unwrap();
    let slq = SlqConfig {
        probes: 4,
        steps: D,
    };
    let want_slq = host(
        &cpu.log_prob_slq(&x, &slq, &mut StdRng::seed_from_u64(10))
            .unwrap()
            .log_prob,
    );
    let params = InverseParams {
        abs_tolerance: Some(1e-10),
        ..Default::default()
    };
    let want_inv = host(&cpu.inverse_with(&want_z, &params).unwrap().x);
    for (what, flow) in [("loaded", &loaded), ("moved", &moved)] {
        assert_eq!(flow.device().location(), dev.location());
        for ((ka, a), (kb, b)) in cpu
            .weight_tensors()
            .iter()
            .zip(flow.weight_tensors().iter())
        {
            assert_eq!(ka, kb);
            assert_eq!(host(a), host(b), "{what}: {ka}");
        }
        let xd = x.to_device(dev).unwrap();
        let lp = host(&flow.log_prob_exact(&xd).unwrap());
        assert!(
            max_rel_diff(&lp, &want_lp) < 1e-10,
            "{what}: log_prob_exact"
        );
        let (z, _) = flow.transform(&xd).unwrap();
        assert!(
            max_rel_diff(&host(&z), &host(&want_z)) < 1e-10,
            "{what}: transform"
        );
        let s = flow
            .log_prob_slq(&xd, &slq, &mut StdRng::seed_from_u64(10))
            .unwrap();
        assert!(
            max_rel_diff(&host(&s.log_prob), &want_slq) < 1e-10,
            "{what}: SLQ"
        );
        let inv = flow.inverse_with(&z, &params).unwrap();
        assert!(inv.report.all_converged());
        assert!(
            max_rel_diff(&host(&inv.x), &want_inv) < 1e-9,
            "{what}: inverse"
        );
    }
}
test_device!(
    moved_flow_equals_the_host_flow,
    moved_flow_equals_the_host_flow_cpu,
    moved_flow_equals_the_host_flow_cuda
);
