//! The surrogate's CG at tolerances the float type resolves: confirming convergence on the
//! true residual below 1e3 unit roundoffs (`surrogate_cg.rs`, which also tests the
//! unattainable ones) still lets every system of a flow's surrogate step converge.

use crate::flow_common::{data, icnn3};
use candle_core::Device;
use cpflow::{CgReport, FloatType, Flow, FlowConfig, SurrogateParams};
use rand::SeedableRng;

/// One surrogate step of a small tabular flow (d = 8, one Icnn3 block) in `float` on 64
/// fixed rows: CG's report of its 64 systems.
fn surrogate_cg_report(float: FloatType, params: &SurrogateParams) -> CgReport {
    let cfg = FlowConfig::tabular(8, 1, icnn3(8, 16, 3)).with_float(float);
    let flow = Flow::new(cfg, &Device::Cpu).unwrap();
    let x = data(64, 8, 5).to_dtype(float.dtype()).unwrap();
    flow.initialize(&x).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    flow.surrogate_loss(&x, params, &mut rng).unwrap().cg
}

fn tolerance(cg_atol: f64) -> SurrogateParams {
    SurrogateParams {
        cg_atol,
        cg_rtol: 0.0,
        ..Default::default()
    }
}

/// Attainable tolerances still converge: f32 at the default 1e-3 (judged on the updated
/// residual, as before) and at 1e-5 (below 1e3·f32::EPSILON: confirmed on the true residual),
/// f64 at 1e-10.
#[test]
fn attainable_tolerances_still_converge_in_f32_and_f64() {
    for (float, atol) in [
        (FloatType::F32, 1e-3),
        (FloatType::F32, 1e-5),
        (FloatType::F64, 1e-10),
    ] {
        let r = surrogate_cg_report(float, &tolerance(atol));
        assert_eq!(r.converged, 64, "{float:?}, cg_atol = {atol:e}: {r:?}");
    }
}
