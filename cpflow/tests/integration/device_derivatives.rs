//! Derivatives of the ICNN potentials on a device (`test_device!`: the CPU here, CUDA in a
//! `--features cuda` build, where the host kernels are skipped and candle's ops run): the
//! gradient and Hessian-vector products of `Icnn`, `Icnn2`, `Icnn3`, `DenseIcnn2` and the
//! image flows' `ConvIcnn` against central differences of the potential (and of the
//! gradient), the ICNN and flow ActNorms' initialisation and log-det against statistics
//! computed on the host, the parameter gradient of the HVP-based CG surrogate (candle's
//! backward) against central differences in one parameter, and an f32 network against the
//! same weights in f64. Everything is f64 unless said otherwise; seeds are fixed.

use std::collections::HashMap;

use crate::device_common::host;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use cpflow::{Flow, FlowConfig, PotentialConfig};
use icnn::{
    ActivationKind, ConvIcnn, ConvIcnnConfig, ConvexPotential, DenseIcnn2, DenseIcnn2Config, Icnn,
    Icnn2, Icnn2Config, Icnn3, Icnn3Config, IcnnConfig, ImageShape,
};
use krylov::CgParams;
use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// Central-difference step: truncation error `h²|F'''|/6 ≈ 2e-11` and rounding error
/// `u·|F|/h ≈ 1e-11` for the O(1) potentials here, so 1e-7 (relative to max(1, |value|))
/// leaves a factor of ~1e3 of margin while a wrong derivative (an O(1) error) fails.
const H: f64 = 1e-5;
const FD_TOL: f64 = 1e-7;

/// `N(0, scale²)` values as an f64 tensor of `shape` on `dev`.
fn randn(rng: &mut StdRng, shape: (usize, usize), scale: f64, dev: &Device) -> Tensor {
    let v: Vec<f64> = (0..shape.0 * shape.1)
        .map(|_| scale * rng.sample::<f64, _>(StandardNormal))
        .collect();
    Tensor::from_vec(v, shape, dev).unwrap()
}

/// `|a − b| ≤ tol · max(1, max|b|)` entry by entry.
fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}: entry {i}: {x} vs {y} (tol {tol} × {scale})"
        );
    }
}

/// Adds `N(0, scale²)` to every variable but the `initialized` flags (on the variables'
/// device), so that no check runs at the initialisation's special point.
fn perturb(varmap: &VarMap, rng: &mut StdRng, scale: f64) {
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        if name.ends_with("initialized") {
            continue;
        }
        let t = data[name].as_tensor();
        let noise: Vec<f64> = (0..t.elem_count())
            .map(|_| scale * rng.sample::<f64, _>(StandardNormal))
            .collect();
        let noise = Tensor::from_vec(noise, t.shape(), t.device())
            .unwrap()
            .to_dtype(t.dtype())
            .unwrap();
        data[name].set(&(t + noise).unwrap()).unwrap();
    }
}

/// The dense potentials (d = 3, small), built on `dev` in f64, initialised on a batch and
/// perturbed.
fn dense_networks(dev: &Device, dim: usize) -> Vec<(&'static str, Box<dyn ConvexPotential>)> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut out: Vec<(&'static str, Box<dyn ConvexPotential>)> = Vec::new();
    let mut add = |name, build: &dyn Fn(VarBuilder, &mut StdRng) -> Box<dyn ConvexPotential>| {
        let vm = VarMap::new();
        let net = build(VarBuilder::from_varmap(&vm, DType::F64, dev), &mut rng);
        net.potential(&randn(&mut rng, (6, dim), 1.5, dev)).unwrap(); // ActNorm init
        perturb(&vm, &mut rng, 0.3);
        out.push((name, net));
    };
    add("Icnn", &|vb, r| {
        let c = IcnnConfig {
            dim,
            width: 6,
            depth: 3,
        };
        Box::new(Icnn::new(vb, &c, r).unwrap())
    });
    add("Icnn2", &|vb, r| {
        let c = Icnn2Config {
            dim,
            width: 6,
            depth: 3,
            activation: ActivationKind::Softplus,
            zero_shift: false,
            symm_act_first: false,
        };
        Box::new(Icnn2::new(vb, &c, r).unwrap())
    });
    add("Icnn3", &|vb, r| {
        let c = Icnn3Config {
            dim,
            width: 6,
            depth: 3,
            activation: ActivationKind::GaussianSoftplus,
            zero_shift: true,
            symm_act_first: true,
        };
        Box::new(Icnn3::new(vb, &c, r).unwrap())
    });
    add("DenseIcnn2", &|vb, r| {
        let c = DenseIcnn2Config {
            dim,
            width: 4,
            depth: 3,
            activation: ActivationKind::GaussianSoftplus,
            zero_shift: false,
            symm_act_first: true,
        };
        Box::new(DenseIcnn2::new(vb, &c, r).unwrap())
    });
    out
}

/// Checks `net` at a random batch along `dirs` random directions: `vᵀ∇F` against central
/// differences of `F`, `Hv` against central differences of `∇F`, `hessian()·v = hvp(v)`,
/// the detached cache and `hvp_many`, and `value_and_gradient` against `linearize`.
fn check_input_derivatives(name: &str, net: &dyn ConvexPotential, dev: &Device, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (b, d) = (3, net.dim());
    let x = randn(&mut rng, (b, d), 1.0, dev);
    let lin = net.linearize(&x).unwrap();
    let (g, hv_all) = (lin.gradient(), lin.hessian().unwrap());
    assert_eq!(
        g.device().location(),
        dev.location(),
        "{name}: gradient device"
    );
    let (f, g2) = net.value_and_gradient(&x).unwrap();
    // Same recursion, maybe another order of the sums: a few ulps.
    assert_close(&host(&f), &host(&lin.potential()), 1e-12, name);
    assert_close(&host(&g2), &host(&g), 1e-12, name);
    for k in 0..3 {
        let v = randn(&mut rng, (b, d), 1.0, dev);
        let (xp, xm) = (
            (&x + (&v * H).unwrap()).unwrap(),
            (&x - (&v * H).unwrap()).unwrap(),
        );
        let fd = host(&((net.potential(&xp).unwrap() - net.potential(&xm).unwrap()).unwrap()))
            .into_iter()
            .map(|t| t / (2.0 * H))
            .collect::<Vec<_>>();
        let gv = host(&(&g * &v).unwrap().sum(1).unwrap());
        assert_close(&gv, &fd, FD_TOL, &format!("{name}: vᵀ∇F, direction {k}"));
        let hv = lin.hvp(&v).unwrap();
        let gp = net.linearize(&xp).unwrap().gradient();
        let gm = net.linearize(&xm).unwrap().gradient();
        let fd = host(&((gp - gm).unwrap() / (2.0 * H)).unwrap());
        assert_close(
            &host(&hv),
            &fd,
            FD_TOL,
            &format!("{name}: Hv, direction {k}"),
        );
        // The dense Hessian and the products are the same recursion: rounding only.
        let hv2 = hv_all
            .contiguous()
            .unwrap()
            .matmul(&v.unsqueeze(2).unwrap())
            .unwrap();
        assert_close(&host(&hv2), &host(&hv), 1e-12, &format!("{name}: H·v"));
        let hvd = lin.detach().hvp(&v).unwrap();
        assert_close(&host(&hvd), &host(&hv), 1e-13, &format!("{name}: detached"));
        let vv = Tensor::stack(&[&v, &x], 1).unwrap();
        let many = lin.hvp_many(&vv).unwrap().narrow(1, 0, 1).unwrap();
        assert_close(
            &host(&many),
            &host(&hv),
            1e-12,
            &format!("{name}: hvp_many"),
        );
    }
    // Symmetric and positive semi-definite (convexity) on the host.
    let h = host(&hv_all);
    for i in 0..b {
        let m = DMatrix::from_row_slice(d, d, &h[i * d * d..(i + 1) * d * d]);
        let asym = (&m - m.transpose()).abs().max();
        assert!(
            asym <= 1e-12 * m.abs().max().max(1.0),
            "{name}: asymmetry {asym}"
        );
        let low = m.symmetric_eigen().eigenvalues.min();
        assert!(low >= -1e-10, "{name}: eigenvalue {low}");
    }
}

fn dense_potential_derivatives(dev: &Device) {
    for (i, (name, net)) in dense_networks(dev, 3).into_iter().enumerate() {
        check_input_derivatives(name, net.as_ref(), dev, 100 + i as u64);
    }
}
test_device!(
    dense_potential_derivatives,
    dense_potential_derivatives_cpu,
    dense_potential_derivatives_cuda
);

/// The image flows' convolutional potential on a 1×6×6 image with one pooling stage
/// (d = 36; strided and "same" convolutions and their adjoints).
fn conv_potential_derivatives(dev: &Device) {
    let mut rng = StdRng::seed_from_u64(8);
    let vm = VarMap::new();
    let cfg = ConvIcnnConfig {
        image: ImageShape::new(1, 6, 6),
        width: 4,
        depth: 2,
        num_pooling: 1,
    };
    let net = ConvIcnn::new(
        VarBuilder::from_varmap(&vm, DType::F64, dev),
        &cfg,
        &mut rng,
    )
    .unwrap();
    net.potential(&randn(&mut rng, (4, 36), 1.0, dev)).unwrap();
    perturb(&vm, &mut rng, 0.1);
    check_input_derivatives("ConvIcnn", &net, dev, 200);
}
test_device!(
    conv_potential_derivatives,
    conv_potential_derivatives_cpu,
    conv_potential_derivatives_cuda
);

/// Rows with per-feature means `5, −3, 0.1` and spreads `2, 0.5, 10` (drawn on the host).
fn skewed_rows(rng: &mut StdRng, n: usize, dev: &Device) -> (Tensor, Vec<f64>) {
    let (mu, sd) = ([5.0, -3.0, 0.1], [2.0, 0.5, 10.0]);
    let v: Vec<f64> = (0..n * 3)
        .map(|k| mu[k % 3] + sd[k % 3] * rng.sample::<f64, _>(StandardNormal))
        .collect();
    (Tensor::from_vec(v.clone(), (n, 3), dev).unwrap(), v)
}

/// Biased mean and standard deviation of each of the 3 columns of row-major `v`.
fn column_stats(v: &[f64]) -> Vec<(f64, f64)> {
    let n = v.len() / 3;
    (0..3)
        .map(|j| {
            let m = (0..n).map(|i| v[i * 3 + j]).sum::<f64>() / n as f64;
            let s = (0..n).map(|i| (v[i * 3 + j] - m).powi(2)).sum::<f64>() / n as f64;
            (m, s.sqrt())
        })
        .collect()
}

/// ActNorm initialisation on the device: icnn's layer (`b = −mean`, `logs = −log(std +
/// 1e-6)`) and cpflow's flow layer (its log-det `Σ log(1/(std + 1e-6) + 0.001)` and its
/// inverse), against the statistics computed here on the host. Both sides compute the same
/// f64 sums in possibly other orders: 1e-12 relative.
fn actnorm_initialisation_and_logdet(dev: &Device) {
    let mut rng = StdRng::seed_from_u64(9);
    let (x, v) = skewed_rows(&mut rng, 50, dev);
    let stats = column_stats(&v);
    let vm = VarMap::new();
    let an =
        icnn::ActNorm::new(&VarBuilder::from_varmap(&vm, DType::F64, dev).pp("an"), 3).unwrap();
    an.initialize(&x).unwrap();
    let want_b: Vec<f64> = stats.iter().map(|s| -s.0).collect();
    let want_logs: Vec<f64> = stats.iter().map(|s| -(s.1 + 1e-6).ln()).collect();
    assert_close(&host(&an.b), &want_b, 1e-12, "icnn ActNorm b");
    assert_close(&host(&an.logs), &want_logs, 1e-12, "icnn ActNorm logs");
    let y = an.forward(&x).unwrap();
    assert_eq!(y.device().location(), dev.location());
    for (j, (m, s)) in column_stats(&host(&y)).into_iter().enumerate() {
        // Mean 0; std = std·(1/(std + 1e-6) + 0.001) = 1 + 0.001·std + O(1e-6).
        assert!(m.abs() < 1e-12, "column {j}: mean {m}");
        let want = stats[j].1 * (1.0 / (stats[j].1 + 1e-6) + 0.001);
        assert!(
            (s - want).abs() < 1e-12 * want,
            "column {j}: std {s} vs {want}"
        );
    }

    let an = cpflow::ActNorm::new(&VarMap::new(), "norm", 3, DType::F64, dev).unwrap();
    an.initialize(&x).unwrap();
    let (y, logdet) = an.forward(&x).unwrap();
    let want: f64 = stats
        .iter()
        .map(|s| (1.0 / (s.1 + 1e-6) + 0.001).ln())
        .sum();
    let got = host(&logdet)[0];
    assert!(
        (got - want).abs() < 1e-12 * want.abs().max(1.0),
        "log-det {got} vs {want}"
    );
    let back = an.inverse(&y).unwrap();
    assert_close(&host(&back), &v, 1e-12, "ActNorm inverse");
}
test_device!(
    actnorm_initialisation_and_logdet,
    actnorm_initialisation_and_logdet_cpu,
    actnorm_initialisation_and_logdet_cuda
);

/// `Σ_i u_iᵀ H_i v_i` on the host from the dense Jacobians `(B, d, d)` of a block.
fn bilinear(h: &[f64], u: &[f64], v: &[f64], d: usize) -> f64 {
    let b = u.len() / d;
    (0..b)
        .map(|i| {
            let m = DMatrix::from_row_slice(d, d, &h[i * d * d..(i + 1) * d * d]);
            let (ui, vi) = (
                DVector::from_column_slice(&u[i * d..(i + 1) * d]),
                DVector::from_column_slice(&v[i * d..(i + 1) * d]),
            );
            ui.dot(&(m * vi))
        })
        .sum()
}

/// The CG surrogate `S = Σ_i u_iᵀ H_i v_i`, `u = H⁻¹v` by krylov's CG on the device
/// (detached, `logdet::cg_surrogate`), `H v` by the block's tracked Hessian-vector products:
/// candle's backward gives `∂S/∂θ = Σ uᵀ(∂H/∂θ)v`, which must equal the central difference
/// of `θ ↦ Σ uᵀH(θ)v` with `u` held fixed (H from the dense Jacobians, read on the host).
/// Checked for the first weight entry of a few ICNN parameters.
fn surrogate_parameter_gradient(dev: &Device) {
    let d = 3;
    let pot = PotentialConfig::Icnn3(Icnn3Config {
        dim: d,
        width: 8,
        depth: 3,
        activation: ActivationKind::GaussianSoftplus,
        zero_shift: true,
        symm_act_first: true,
    });
    let cfg = FlowConfig::single_block(pot).with_init_seed(4);
    let flow = Flow::new(cfg, dev).unwrap();
    let mut rng = StdRng::seed_from_u64(10);
    let x = randn(&mut rng, (5, d), 1.0, dev);
    flow.initialize(&x).unwrap();
    perturb(flow.varmap(), &mut rng, 0.2);
    let block = flow.blocks().next().unwrap();
    let signs: Vec<f64> = (0..5 * d)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect();
    let v = Tensor::from_vec(signs.clone(), (5, d), dev).unwrap();
    let (_z, op) = block.tracked_operator(&x, None).unwrap();
    let sur = logdet::cg_surrogate(&op, &v, &CgParams::default().with_rtol(1e-13)).unwrap();
    assert!(
        sur.report.all_converged(),
        "{:?}",
        sur.report.residual_norms
    );
    let u = host(&sur.u);
    let s = (&sur.u * op.apply(&v).unwrap()).unwrap().sum_all().unwrap();
    let grads = s.backward().unwrap();
    // u solves H u = v: compare with the dense solve on the host (cond ≤ ~10 here).
    let hd = host(&block.forward_and_hessian(&x, None).unwrap().1);
    for i in 0..5 {
        let m = DMatrix::from_row_slice(d, d, &hd[i * d * d..(i + 1) * d * d]);
        let want = m
            .lu()
            .solve(&DVector::from_column_slice(&signs[i * d..(i + 1) * d]))
            .unwrap();
        assert_close(
            &u[i * d..(i + 1) * d],
            want.as_slice(),
            1e-10,
            "CG solution",
        );
    }
    let vars: HashMap<String, Var> = flow.named_vars().into_iter().collect();
    let mut checked = 0;
    for name in [
        "icnn.Wzs.0.weight",
        "icnn.Wzs.1.weight",
        "icnn.Wxs.1.weight",
        "icnn.Wx2s.0.bias",
    ] {
        let name = vars.keys().find(|k| k.ends_with(name)).unwrap().clone();
        let var = &vars[&name];
        let analytic = host(grads.get(var.as_tensor()).unwrap())[0];
        let orig = var.as_tensor().copy().unwrap();
        let at = |delta: f64| -> f64 {
            let mut w = host(&orig);
            w[0] += delta;
            var.set(&Tensor::from_vec(w, orig.shape(), dev).unwrap())
                .unwrap();
            let h = host(&block.forward_and_hessian(&x, None).unwrap().1);
            bilinear(&h, &u, &signs, d)
        };
        let fd = (at(H) - at(-H)) / (2.0 * H);
        var.set(&orig).unwrap();
        // S is O(10) and smooth in θ: the central difference is good to ~1e-9.
        assert!(
            (analytic - fd).abs() <= 1e-6 * fd.abs().max(1.0),
            "{name}: backward {analytic} vs central difference {fd}"
        );
        checked += usize::from(fd.abs() > 1e-6);
    }
    assert!(checked >= 3, "the checked gradients are mostly zero");
}
test_device!(
    surrogate_parameter_gradient,
    surrogate_parameter_gradient_cpu,
    surrogate_parameter_gradient_cuda
);

/// An `Icnn2` in f32 on the device with the weights of an f64 one (every variable rounded):
/// potential, gradient and Hessian-vector products agree to the f32 resolution. The error
/// of a depth-3, width-16 evaluation is a few dozen roundings of `u = 6e-8` amplified by
/// the O(1) weights: 1e-5 relative to max(1, |value|) leaves a ~100× margin (measured on
/// the CPU: 1e-7), while an f32 path computing something else is off by O(1).
fn f32_network_matches_f64(dev: &Device) {
    let cfg = Icnn2Config {
        dim: 4,
        width: 16,
        depth: 3,
        activation: ActivationKind::GaussianSoftplus,
        zero_shift: true,
        symm_act_first: true,
    };
    let mut rng = StdRng::seed_from_u64(11);
    let vm64 = VarMap::new();
    let net64 = Icnn2::new(
        VarBuilder::from_varmap(&vm64, DType::F64, dev),
        &cfg,
        &mut rng,
    )
    .unwrap();
    let x64 = randn(&mut rng, (8, 4), 1.0, dev);
    net64.potential(&x64).unwrap();
    perturb(&vm64, &mut rng, 0.2);
    let vm32 = VarMap::new();
    let net32 = Icnn2::new(
        VarBuilder::from_varmap(&vm32, DType::F32, dev),
        &cfg,
        &mut rng,
    )
    .unwrap();
    {
        let (src, dst) = (vm64.data().lock().unwrap(), vm32.data().lock().unwrap());
        assert_eq!(src.len(), dst.len());
        for (k, var) in dst.iter() {
            var.set(&src[k].as_tensor().to_dtype(DType::F32).unwrap())
                .unwrap();
        }
    }
    let x32 = x64.to_dtype(DType::F32).unwrap();
    let x64 = x32.to_dtype(DType::F64).unwrap(); // the same points in both
    let v64 = randn(&mut rng, (8, 4), 1.0, dev);
    let v32 = v64.to_dtype(DType::F32).unwrap();
    let v64 = v32.to_dtype(DType::F64).unwrap();
    let (l32, l64) = (
        net32.linearize(&x32).unwrap(),
        net64.linearize(&x64).unwrap(),
    );
    assert_eq!(l32.gradient().dtype(), DType::F32);
    assert_close(
        &host(&l32.potential()),
        &host(&l64.potential()),
        1e-5,
        "f32 F",
    );
    assert_close(
        &host(&l32.gradient()),
        &host(&l64.gradient()),
        1e-5,
        "f32 ∇F",
    );
    let (h32, h64) = (l32.hvp(&v32).unwrap(), l64.hvp(&v64).unwrap());
    assert_close(&host(&h32), &host(&h64), 1e-5, "f32 Hv");
    let (_, g32) = net32.value_and_gradient(&x32).unwrap();
    assert_close(
        &host(&g32),
        &host(&l64.gradient()),
        1e-5,
        "f32 value_and_gradient",
    );
}
test_device!(
    f32_network_matches_f64,
    f32_network_matches_f64_cpu,
    f32_network_matches_f64_cuda
);
