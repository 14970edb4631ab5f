//! `Flow::sample_and_log_prob_given_with`: a conditional flow's samples, drawn with the
//! caller's solver parameters, and their exact conditional log-densities `log p(x | c)`.

use crate::flow_common::*;
use candle_core::{DType, Device, Tensor};
use cpflow::{FloatType, Flow, FlowConfig, FlowRng, InverseParams, InverseSolver, PotentialConfig};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// A conditional f64 flow `[ActNorm, (CPF, ActNorm) × 2]` on a PICNN with 2 inputs and 2
/// context features, its context-gate weights (zero at initialisation) randomised so that
/// the context changes every block's map.
fn conditional_flow(seed: u64) -> Flow {
    let pot = PotentialConfig::Picnn(icnn::PicnnConfig {
        dim: 2,
        context_dim: 2,
        width: 8,
        depth: 2,
        ..Default::default()
    });
    let cfg = FlowConfig::tabular(2, 2, pot)
        .with_float(FloatType::F64)
        .with_init_seed(seed);
    let flow = Flow::new(cfg, &Device::Cpu).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 1000);
    for (name, var) in flow.named_vars() {
        if name.contains("Wczs") || name.contains("Wcxs") {
            let v: Vec<f64> = (0..var.elem_count())
                .map(|_| 0.4 * rng.sample::<f64, _>(StandardNormal))
                .collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    flow.initialize_given(&data(64, 2, seed + 1), &data(64, 2, seed + 2))
        .unwrap();
    flow
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_vec2::<f64>().unwrap()
}

/// With batched L-BFGS (not the default Newton–CG): the returned log-densities are
/// `log_prob_exact_given` of the returned samples under their own context rows, bit for bit;
/// the samples are those `sample_given_with` draws from the same stream with the same
/// parameters, and they invert the prior draw `z` of that stream: `|f(x; c) − z|∞ ≤ 1e-7`
/// (solver tolerance 1e-9 on each block's `∇Φ(x) = y`, times the Lipschitz constants of the
/// later blocks and ActNorms, O(10) at initialisation), so `log N(z) + log|det J(x)|` agrees
/// with the returned value to `|z|·1e-7` (1e-6). The parameters are the caller's: no
/// Hessian-vector product is used (Newton–CG would), and one iteration leaves the samples
/// unconverged.
#[test]
fn sample_and_log_prob_given_with_returns_the_log_density_of_its_samples() {
    let flow = conditional_flow(11);
    let n = 6;
    let c = data(n, 2, 21);
    let params = InverseParams {
        solver: InverseSolver::LbfgsBatched,
        ..Default::default()
    };
    let (s, lp) = flow
        .sample_and_log_prob_given_with(&c, &params, &mut FlowRng::seed_from_u64(5))
        .unwrap();
    assert_eq!((s.x.dims(), lp.dims()), (&[n, 2][..], &[n][..]));
    assert_eq!(lp.dtype(), DType::F64);
    assert!(s.report.all_converged(), "{:?}", s.report.converged);
    for block in &s.report.blocks {
        assert_eq!(block.stats.hvp_calls, 0, "not L-BFGS: {:?}", block.stats);
    }
    let lp = lp.to_vec1::<f64>().unwrap();
    assert_eq!(
        lp,
        flow.log_prob_exact_given(&s.x, &c)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    );
    let again = flow
        .sample_given_with(&c, &params, &mut FlowRng::seed_from_u64(5))
        .unwrap();
    assert_eq!(rows(&s.x), rows(&again.x));

    // The prior draw of the same stream, and the forward map of the samples.
    let z = flow
        .prior()
        .sample(
            n,
            2,
            DType::F64,
            &Device::Cpu,
            &mut FlowRng::seed_from_u64(5),
        )
        .unwrap();
    let (fx, ld) = flow.transform_given(&s.x, &c).unwrap();
    let log_n = flow.prior().log_prob(&z).unwrap().to_vec1::<f64>().unwrap();
    let ld = ld.to_vec1::<f64>().unwrap();
    for (i, (z_row, f_row)) in rows(&z).iter().zip(rows(&fx)).enumerate() {
        for (a, b) in z_row.iter().zip(&f_row) {
            assert!(
                (a - b).abs() <= 1e-7,
                "row {i}: f(x) = {f_row:?}, z = {z_row:?}"
            );
        }
        assert!(
            (lp[i] - (log_n[i] + ld[i])).abs() <= 1e-6,
            "row {i}: {} vs {} + {}",
            lp[i],
            log_n[i],
            ld[i]
        );
    }
    // The context is used: other context rows give other densities at these points.
    let other = data(n, 2, 22);
    let lp_other = flow.log_prob_exact_given(&s.x, &other).unwrap();
    for (a, b) in lp.iter().zip(lp_other.to_vec1::<f64>().unwrap()) {
        assert!((a - b).abs() > 1e-6, "{a} vs {b}");
    }

    // One iteration per block: the caller's cap, so not converged.
    let capped = InverseParams {
        max_iterations: 1,
        ..params.clone()
    };
    let (s1, lp1) = flow
        .sample_and_log_prob_given_with(&c, &capped, &mut FlowRng::seed_from_u64(5))
        .unwrap();
    assert!(!s1.report.all_converged(), "{:?}", s1.report.converged);
    assert_eq!(
        lp1.to_vec1::<f64>().unwrap(),
        flow.log_prob_exact_given(&s1.x, &c)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    );
}
