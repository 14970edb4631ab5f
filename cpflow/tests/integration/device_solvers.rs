//! The solvers on a device (`test_device!`: the CPU here, CUDA in a `--features cuda`
//! build, where krylov's host fast path for CPU tensors is skipped): krylov's batched CG and
//! Lanczos on candle tensors against dense solves and eigenvalues on the host (nalgebra),
//! with the per-system convergence flags; logdet's exact log-det of a block Jacobian built
//! on the device, SLQ and Hutchinson against the dense values; and convex-opt's inversion
//! of a block's gradient map (round trip, convergence report). f64 unless said otherwise.

use crate::device_common::host;
use candle_core::{DType, Device, Tensor};
use cpflow::{Flow, FlowConfig, InverseParams, InverseSolver, PotentialConfig};
use icnn::{ActivationKind, Icnn3Config};
use krylov::{
    BatchOperator, CgParams, CgTermination, DenseTensorOperator, FnOperator, KrylovError,
    LanczosParams, Preconditioner, cg, lanczos,
};
use logdet::{HutchinsonParams, SlqParams, exact_logdet_tensor, hutchinson_trace, slq_logdet};
use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

fn gaussian(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| rng.sample::<f64, _>(StandardNormal))
        .collect()
}

/// `Q diag(λ) Qᵀ` with `Q` the orthogonal factor of a Gaussian matrix and `λ` log-spaced
/// in `[1, cond]`: eigenvalues known exactly, condition number `cond`.
fn spd(rng: &mut StdRng, d: usize, cond: f64) -> (DMatrix<f64>, Vec<f64>) {
    let q = DMatrix::from_vec(d, d, gaussian(rng, d * d)).qr().q();
    let lam: Vec<f64> = (0..d)
        .map(|i| cond.powf(i as f64 / (d - 1) as f64))
        .collect();
    let m = &q * DMatrix::from_diagonal(&DVector::from_vec(lam.clone())) * q.transpose();
    ((&m + m.transpose()) * 0.5, lam)
}

/// The matrices as a `(B, d, d)` tensor of `dtype` on `dev`.
fn stacked(mats: &[DMatrix<f64>], dtype: DType, dev: &Device) -> Tensor {
    let d = mats[0].nrows();
    let v: Vec<f64> = mats
        .iter()
        .flat_map(|m| m.transpose().as_slice().to_vec())
        .collect();
    Tensor::from_vec(v, (mats.len(), d, d), dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

const D: usize = 12;
const CONDS: [f64; 5] = [1.0, 10.0, 100.0, 1e3, 1e4];

fn systems(seed: u64) -> (Vec<DMatrix<f64>>, Vec<Vec<f64>>, Vec<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mats, eigs): (Vec<_>, Vec<_>) = CONDS.iter().map(|&c| spd(&mut rng, D, c)).unzip();
    let b = gaussian(&mut rng, CONDS.len() * D);
    (mats, eigs, b)
}

/// Batched CG on `(B, d)` tensors: the dense tensor operator, a closure over the device's
/// matrix product, and Jacobi preconditioning, against nalgebra's LU solves. The error
/// bound: `‖x − x*‖₂ ≤ ‖H⁻¹‖₂‖r‖₂ ≤ √d·rtol·‖b‖∞` (λ_min = 1), plus the host solve's own
/// `cond·u·‖x‖`; f32 with rtol 1e-4 on the systems of cond ≤ 1e3 (attainable: `u₃₂·cond
/// ≈ 1e-4`), checked against `cond·√d·2e-4·‖x‖`.
fn cg_matches_dense_solves(dev: &Device) {
    let (mats, _, b) = systems(1);
    let want: Vec<Vec<f64>> = (0..CONDS.len())
        .map(|i| {
            let bi = DVector::from_column_slice(&b[i * D..(i + 1) * D]);
            mats[i].clone().lu().solve(&bi).unwrap().as_slice().to_vec()
        })
        .collect();
    let h = stacked(&mats, DType::F64, dev);
    let bt = Tensor::from_vec(b.clone(), (CONDS.len(), D), dev).unwrap();
    let params = CgParams::default().with_rtol(1e-12);
    let check = |x: &Tensor, what: &str, tol: f64| {
        assert_eq!(x.device().location(), dev.location(), "{what}: device");
        let x = host(x);
        for (i, w) in want.iter().enumerate() {
            let err = x[i * D..(i + 1) * D]
                .iter()
                .zip(w)
                .map(|(a, c)| (a - c).abs())
                .fold(0.0, f64::max);
            let norm = w.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            assert!(
                err <= tol * CONDS[i].max(1.0) * norm,
                "{what}: system {i}: {err}"
            );
        }
    };
    let dense = DenseTensorOperator::new(h.clone()).unwrap();
    let res = cg(&dense, &bt, &params).unwrap();
    assert!(res.all_converged(), "{:?}", res.residual_norms);
    assert_eq!(res.iterations[0], 1, "the identity system takes one step");
    check(
        &res.x,
        "dense tensor operator",
        1e-12 * (D as f64).sqrt() + 1e-13,
    );

    // A closure over the device's batched product; it sees CG's active mask.
    let calls = std::cell::RefCell::new(vec![0usize; CONDS.len()]);
    let op = FnOperator::new(
        |x: &Tensor, active: &[bool]| -> Result<Tensor, KrylovError> {
            for (c, a) in calls.borrow_mut().iter_mut().zip(active) {
                *c += usize::from(*a);
            }
            Ok(h.matmul(&x.contiguous()?.unsqueeze(2)?)?.squeeze(2)?)
        },
    );
    let res2 = cg(&op, &bt, &params).unwrap();
    assert!(res2.all_converged());
    assert_eq!(res2.iterations, res.iterations);
    assert_eq!(*calls.borrow(), res2.applications);
    check(
        &res2.x,
        "closure operator",
        1e-12 * (D as f64).sqrt() + 1e-13,
    );

    // Jacobi (the dense operator's diagonal).
    let jac = cg(
        &dense,
        &bt,
        &params.clone().with_preconditioner(Preconditioner::Jacobi),
    )
    .unwrap();
    assert!(jac.all_converged());
    check(&jac.x, "Jacobi", 1e-12 * (D as f64).sqrt() + 1e-13);

    // Too few iterations: only the identity system converges, the others say so.
    let short = cg(&dense, &bt, &params.clone().with_max_iters(3)).unwrap();
    assert_eq!(short.converged, vec![true, false, false, false, false]);
    for i in 1..CONDS.len() {
        assert_eq!(
            short.termination[i],
            CgTermination::MaxIterations,
            "system {i}"
        );
        assert!(short.residual_norms[i] > 1e-12, "system {i}");
    }

    // f32 on the systems of condition ≤ 1e3.
    let h32 = h.narrow(0, 0, 4).unwrap().to_dtype(DType::F32).unwrap();
    let b32 = bt.narrow(0, 0, 4).unwrap().to_dtype(DType::F32).unwrap();
    let op32 = DenseTensorOperator::new(h32).unwrap();
    let r32 = cg(&op32, &b32, &CgParams::default().with_rtol(1e-4)).unwrap();
    assert!(r32.all_converged(), "{:?}", r32.residual_norms);
    assert_eq!(r32.x.dtype(), DType::F32);
    let x32 = host(&r32.x);
    for (i, w) in want.iter().take(4).enumerate() {
        let err: f64 = x32[i * D..(i + 1) * D]
            .iter()
            .zip(w)
            .map(|(a, c)| (a - c).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = w.iter().map(|v| v * v).sum::<f64>().sqrt().max(1.0);
        let bound = CONDS[i] * (D as f64).sqrt() * 2e-4 * norm;
        assert!(err <= bound, "f32 system {i}: {err} > {bound}");
    }
}
test_device!(
    cg_matches_dense_solves,
    cg_matches_dense_solves_cpu,
    cg_matches_dense_solves_cuda
);

/// Lanczos on tensors: `d` steps with re-orthogonalisation give every eigenvalue (the Ritz
/// values of a full Krylov space; 1e-8·λ_max covers the loss of orthogonality that the two
/// Gram–Schmidt passes leave at cond 1e4), the identity breaks down after one step, and
/// 4 steps give Ritz values inside the spectrum (interlacing) whose largest is within 5% of
/// λ_max (d = 12, log-spaced spectrum; measured: within 1%).
fn lanczos_matches_eigenvalues(dev: &Device) {
    let (mats, eigs, b) = systems(2);
    let op = DenseTensorOperator::new(stacked(&mats, DType::F64, dev)).unwrap();
    let v0 = Tensor::from_vec(b, (CONDS.len(), D), dev).unwrap();
    let full = lanczos(&op, &v0, &LanczosParams::default().with_steps(D)).unwrap();
    assert_eq!(
        full.sizes[0], 1,
        "the identity's Krylov space has dimension 1"
    );
    assert!(full.breakdown[0] && !full.non_finite.iter().any(|&f| f));
    assert!((full.ritz_values(0).unwrap()[0] - 1.0).abs() < 1e-12);
    for i in 1..CONDS.len() {
        assert_eq!(full.sizes[i], D, "system {i}");
        let got = full.ritz_values(i).unwrap();
        let want = &eigs[i];
        let top = want[D - 1];
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-8 * top,
                "system {i}: Ritz {g} vs eigenvalue {w}"
            );
        }
        // The host eigensolver on the same matrix agrees.
        let mut host_eigs: Vec<f64> = mats[i]
            .clone()
            .symmetric_eigen()
            .eigenvalues
            .as_slice()
            .to_vec();
        host_eigs.sort_by(f64::total_cmp);
        assert!((host_eigs[0] - want[0]).abs() < 1e-10 * top);
    }
    let part = lanczos(&op, &v0, &LanczosParams::default().with_steps(4)).unwrap();
    for (i, e) in eigs.iter().enumerate().skip(1) {
        let r = part.ritz_values(i).unwrap();
        let (lo, hi) = (e[0], e[D - 1]);
        assert_eq!(r.len(), 4);
        assert!(
            r[0] >= lo * (1.0 - 1e-12) && r[3] <= hi * (1.0 + 1e-12),
            "system {i}: {r:?}"
        );
        assert!(
            r[3] >= 0.95 * hi,
            "system {i}: largest Ritz value {} vs {hi}",
            r[3]
        );
    }
}
test_device!(
    lanczos_matches_eigenvalues,
    lanczos_matches_eigenvalues_cpu,
    lanczos_matches_eigenvalues_cuda
);

/// A one-block flow (d = 4, Icnn3, f64) on `dev`, initialised on 6 seeded points.
fn block_flow(dev: &Device) -> (Flow, Tensor) {
    let pot = PotentialConfig::Icnn3(Icnn3Config {
        dim: 4,
        width: 8,
        depth: 3,
        activation: ActivationKind::GaussianSoftplus,
        zero_shift: true,
        symm_act_first: true,
    });
    let flow = Flow::new(FlowConfig::single_block(pot).with_init_seed(5), dev).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let x = Tensor::from_vec(gaussian(&mut rng, 24), (6, 4), dev).unwrap();
    flow.initialize(&x).unwrap();
    (flow, x)
}

/// Log-dets of a block's Jacobian `H = sp(w₁)∇²F + sp(w₀)I`, built on the device:
/// `exact_logdet_tensor` against nalgebra's Cholesky of the same matrices (1e-12: one
/// factorisation each); the dense matrix against `H e_j` products (1e-12: same recursion);
/// SLQ with `d` Lanczos steps (exact quadrature, so only the probes' sampling error) and
/// Hutchinson's trace against the dense values within 4 standard errors (fixed seeds; a
/// 4σ miss has probability ~6e-5 per system, so a failure means a bias, not bad luck).
fn logdet_estimators_match_dense(dev: &Device) {
    let (flow, x) = block_flow(dev);
    let block = flow.blocks().next().unwrap();
    let (_z, op) = block.tracked_operator(&x, None).unwrap();
    let (b, d) = (6, 4);
    let dense = op.dense().unwrap();
    assert_eq!(dense.device().location(), dev.location());
    let hd = host(&dense);
    // Column j of every H_i from the products H e_j.
    for j in 0..d {
        let e: Vec<f64> = (0..b * d)
            .map(|k| f64::from(u8::from(k % d == j)))
            .collect();
        let col = host(
            &op.apply(&Tensor::from_vec(e, (b, d), dev).unwrap())
                .unwrap(),
        );
        for i in 0..b {
            for r in 0..d {
                let (got, want) = (col[i * d + r], hd[i * d * d + r * d + j]);
                assert!(
                    (got - want).abs() < 1e-12 * want.abs().max(1.0),
                    "H[{i}][{r}][{j}]"
                );
            }
        }
    }
    let exact = exact_logdet_tensor(&dense).unwrap();
    let mut traces = Vec::new();
    for i in 0..b {
        let m = DMatrix::from_row_slice(d, d, &hd[i * d * d..(i + 1) * d * d]);
        traces.push(m.trace());
        let chol = m.cholesky().expect("a block Jacobian is positive definite");
        let want: f64 = 2.0 * chol.l().diagonal().iter().map(|v| v.ln()).sum::<f64>();
        assert!(
            (exact[i] - want).abs() < 1e-12 * want.abs().max(1.0),
            "row {i}"
        );
    }
    let mut rng = StdRng::seed_from_u64(12);
    let slq = slq_logdet(
        &op,
        &x,
        &mut rng,
        &SlqParams::default().with_probes(200).with_lanczos_steps(d),
    )
    .unwrap();
    let tr = hutchinson_trace(
        &op,
        &x,
        &mut rng,
        &HutchinsonParams::default().with_probes(200),
    )
    .unwrap();
    for i in 0..b {
        assert!(slq.std_err[i] > 0.0 && tr.std_err[i] > 0.0);
        let e = (slq.estimate[i] - exact[i]).abs();
        assert!(
            e <= 4.0 * slq.std_err[i] + 1e-10,
            "SLQ row {i}: {e} vs {}",
            slq.std_err[i]
        );
        let e = (tr.estimate[i] - traces[i]).abs();
        assert!(
            e <= 4.0 * tr.std_err[i] + 1e-10,
            "trace row {i}: {e} vs {}",
            tr.std_err[i]
        );
    }
    assert!(slq.premature_breakdowns.iter().all(|&c| c == 0));
    // The operator as krylov sees it: all rows active, same products.
    let v = Tensor::from_vec(gaussian(&mut rng, b * d), (b, d), dev).unwrap();
    let a = host(&BatchOperator::apply(&op, &v, &[true; 6]).unwrap());
    let c = host(&op.apply(&v).unwrap());
    assert!(
        a.iter()
            .zip(&c)
            .all(|(p, q)| (p - q).abs() <= 1e-14 * q.abs().max(1.0))
    );
}
test_device!(
    logdet_estimators_match_dense,
    logdet_estimators_match_dense_cpu,
    logdet_estimators_match_dense_cuda
);

/// convex-opt's solvers invert the block's gradient map `y = ∇Φ(x)` on the device: every
/// row converged with residual ≤ 1e-10, and since `H ⪰ sp(w₀)I` the error in `x` is at most
/// `√d·residual / sp(w₀)` (2× slack for the last rounding).
fn inversion_round_trip(dev: &Device) {
    let (flow, x) = block_flow(dev);
    let block = flow.blocks().next().unwrap();
    let y = block.forward(&x, None).unwrap().detach();
    let a0 = block.quadratic_weight().unwrap();
    for solver in [
        InverseSolver::NewtonCg,
        InverseSolver::LbfgsBatched,
        InverseSolver::LbfgsFlat,
    ] {
        let params = InverseParams {
            abs_tolerance: Some(1e-10),
            solver,
            ..Default::default()
        };
        let res = block.inverse(&y, None, &params).unwrap();
        assert!(res.all_converged(), "{solver:?}: {res}");
        assert_eq!(res.x.device().location(), dev.location(), "{solver:?}");
        assert!(res.max_residual() <= 1e-10, "{solver:?}: {res}");
        assert!(
            res.iterations.iter().all(|&k| k > 0),
            "{solver:?}: x0 = y is not x"
        );
        let err = host(&(&res.x - &x).unwrap())
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        let bound = 2.0 * 2.0 * 1e-10 / a0;
        assert!(err <= bound, "{solver:?}: ‖x − x*‖∞ = {err} > {bound}");
        // The reported residuals are the true ones.
        let back = host(&block.forward(&res.x, None).unwrap());
        let yh = host(&y);
        for i in 0..6 {
            let r = (0..4)
                .map(|j| (back[i * 4 + j] - yh[i * 4 + j]).abs())
                .fold(0.0, f64::max);
            assert!(
                (r - res.residual_inf[i]).abs() <= 1e-13,
                "{solver:?} row {i}"
            );
        }
    }
}
test_device!(
    inversion_round_trip,
    inversion_round_trip_cpu,
    inversion_round_trip_cuda
);
