//! `cpflow sample`.

use anyhow::Result;
use candle_core::DType;
use cpflow::FlowRng;

use super::{float_type, load_flow, locate_model};
use crate::SampleArgs;
use crate::data::write_rows;

pub fn sample(a: SampleArgs) -> Result<()> {
    let device = crate::device(a.dev.device.as_deref())?;
    let loc = locate_model(&a.model)?;
    let float = a.dev.dtype.as_deref().map(float_type).transpose()?;
    let flow = load_flow(&loc.file, &device, float)?;
    let mut rng = FlowRng::seed_from_u64(a.dev.seed.unwrap_or(0));
    let inv = flow.sample(a.n, &mut rng)?;
    if !inv.report.all_converged() {
        tracing::warn!(
            failed = inv.report.num_failed(),
            max_residual = inv.report.max_residual(),
            "some samples did not converge in the inversion (their rows are the last iterates)"
        );
    }
    let d = flow.dim();
    let rows = inv
        .x
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    write_rows(&a.output, d, &rows)?;
    println!(
        "wrote {} samples of dimension {d} to {} (inversion: max residual {:.2e}, {} not converged)",
        a.n,
        a.output.display(),
        inv.report.max_residual(),
        inv.report.num_failed()
    );
    Ok(())
}
