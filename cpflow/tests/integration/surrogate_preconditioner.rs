//! `train.surrogate.preconditioner = "mean-hessian"`: the surrogate's CG solves
//! preconditioned by the mean of the block Jacobians at a few rows. The solutions meet the
//! same tolerance (so the surrogate gradients equal plain CG's when both solve tightly), an
//! exact `M` needs one iteration, on the host kernels (one probe) and on the composed candle
//! path (several probes).

use crate::flow_common::*;
use candle_core::Tensor;
use cpflow::{CgPreconditioner, Flow, FlowRng, SurrogateParams};

fn params(probes: usize, atol: f64, pre: CgPreconditioner, rows: usize) -> SurrogateParams {
    SurrogateParams {
        probes,
        cg_atol: atol,
        cg_rtol: 0.0,
        cg_max_iters: Some(100),
        preconditioner: pre,
        preconditioner_rows: rows,
    }
}

/// The loss and every parameter's gradient of one surrogate pass.
fn loss_and_grads(flow: &Flow, x: &Tensor, p: &SurrogateParams) -> (f64, Vec<Tensor>, Vec<usize>) {
    let out = flow
        .surrogate_loss(x, p, &mut FlowRng::seed_from_u64(5))
        .unwrap();
    let grads = out.loss.backward().unwrap();
    let g = flow
        .named_vars()
        .iter()
        .filter_map(|(_, v)| grads.get(v.as_tensor()).cloned())
        .collect();
    (out.loss.to_scalar::<f64>().unwrap(), g, out.cg.iterations)
}

/// Solved to 1e-12, the preconditioned and plain surrogates have the same value and the same
/// gradients (to 1e-9 relative: both are the exact `u = H⁻¹v` up to the tolerance), on both
/// paths; the preconditioned solves take fewer iterations in all.
#[test]
fn tight_solves_give_the_plain_gradients() {
    let (n, d) = (48, 6);
    let flow = two_block_flow(d, 3);
    let x = data(n, d, 4);
    flow.initialize(&x).unwrap();
    for probes in [1, 2] {
        let plain = params(probes, 1e-12, CgPreconditioner::None, 8);
        let pcg = params(probes, 1e-12, CgPreconditioner::MeanHessian, 8);
        let (la, ga, ia) = loss_and_grads(&flow, &x, &plain);
        let (lb, gb, ib) = loss_and_grads(&flow, &x, &pcg);
        assert!(
            (la - lb).abs() <= 1e-9 * la.abs(),
            "probes {probes}: {la} vs {lb}"
        );
        assert_eq!(ga.len(), gb.len());
        for (a, b) in ga.iter().zip(&gb) {
            let scale = max_abs_diff(a, &a.zeros_like().unwrap()).max(1e-3);
            let diff = max_abs_diff(a, b);
            assert!(
                diff <= 1e-9 * scale,
                "probes {probes}: {diff} vs scale {scale}"
            );
        }
        let (sa, sb): (usize, usize) = (ia.iter().sum(), ib.iter().sum());
        assert!(
            sb < sa,
            "probes {probes}: {sb} preconditioned vs {sa} plain iterations"
        );
    }
}

/// A batch of copies of one point, every row in `M`: `M = H`, so each solve takes one
/// iteration; plain CG needs several (the test can fail).
#[test]
fn the_exact_jacobian_solves_in_one_iteration() {
    let d = 6;
    let flow = two_block_flow(d, 7);
    flow.initialize(&data(64, d, 8)).unwrap();
    let row = data(1, d, 9);
    let x = row.broadcast_as((16, d)).unwrap().contiguous().unwrap();
    for probes in [1, 2] {
        let exact = params(probes, 1e-10, CgPreconditioner::MeanHessian, 16);
        let plain = params(probes, 1e-10, CgPreconditioner::None, 16);
        let (_, _, its) = loss_and_grads(&flow, &x, &exact);
        assert!(its.iter().all(|&k| k == 1), "probes {probes}: {its:?}");
        let (_, _, its) = loss_and_grads(&flow, &x, &plain);
        assert!(its.iter().all(|&k| k >= 3), "probes {probes}: {its:?}");
    }
}

/// Configuration: the TOML names, the validation of `preconditioner_rows`, and a value that
/// is not a preconditioner.
#[test]
fn preconditioner_settings_are_read_and_checked() {
    let p: SurrogateParams =
        toml::from_str("preconditioner = \"mean-hessian\"\npreconditioner_rows = 4").unwrap();
    assert_eq!(
        (p.preconditioner, p.preconditioner_rows),
        (CgPreconditioner::MeanHessian, 4)
    );
    let p: SurrogateParams = toml::from_str("cg_atol = 1e-4").unwrap();
    assert_eq!(
        (p.preconditioner, p.preconditioner_rows),
        (CgPreconditioner::None, 8)
    );
    let err = toml::from_str::<SurrogateParams>("preconditioner = \"jacobi\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("mean-hessian"), "{err}");
    let zero = params(1, 1e-3, CgPreconditioner::MeanHessian, 0);
    let err = zero.validate("train.surrogate").unwrap_err().to_string();
    assert!(err.contains("train.surrogate.preconditioner_rows"), "{err}");
    // Zero rows do not matter without the preconditioner.
    params(1, 1e-3, CgPreconditioner::None, 0)
        .validate("train.surrogate")
        .unwrap();
}
