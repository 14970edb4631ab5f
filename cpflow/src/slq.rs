//! Stochastic Lanczos quadrature of `log det H` for a block's detached Jacobian
//! (`docs/reference/cpflow-reference.md` §2.4), through `logdet::slq_logdet`: Rademacher probes,
//! `m = min(steps, d)` Lanczos steps with full re-orthogonalisation (krylov), Gauss quadrature
//! `‖v‖² · e₁ᵀ log(T) e₁`, averaged over the probes.

use candle_core::Tensor;
use krylov::{FnOperator, KrylovError};
use rand::Rng;

use crate::block::HessianOperator;
use crate::config::SlqParams;
use crate::error::{CpflowError, Result};

/// SLQ estimate of `log det H_b` per sample `b` (`(B,)` host values); `like` is the `(B, d)`
/// point batch (gives shape, dtype, device).
pub(crate) fn slq_logdet_block<R: Rng + ?Sized>(
    op: &HessianOperator,
    like: &Tensor,
    params: &SlqParams,
    rng: &mut R,
) -> Result<Vec<f64>> {
    if params.steps == 0 || params.probes == 0 {
        return Err(CpflowError::InvalidConfig(
            "SLQ needs at least one probe and one Lanczos step".into(),
        ));
    }
    let kop = FnOperator::new(
        |w: &Tensor, _active: &[bool]| -> std::result::Result<Tensor, KrylovError> {
            op.apply(w).map_err(KrylovError::operator)
        },
    );
    let lp = logdet::SlqParams::default()
        .with_probes(params.probes)
        .with_lanczos_steps(params.steps);
    let mut r = rng;
    let est = logdet::slq_logdet(&kop, &like.detach(), &mut r, &lp)?;
    Ok(est.estimate)
}
