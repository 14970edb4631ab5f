//! `cpflow sample`: rows from a tabular/toy model, or images (a PNG grid with `--grid`) from
//! an image model.

use anyhow::{Context, Result, bail};
use candle_core::DType;
use cpflow::FlowRng;
use cpflow::image::{IMAGE_METADATA_KEY, ImageFlow, quantize_pixels, write_sample_grid};
use std::path::Path;

use super::{float_type, load_flow, locate_model};
use crate::SampleArgs;
use crate::data::write_rows;

/// Whether `file` holds an image flow (its safetensors metadata has the image key).
fn is_image_model(file: &Path) -> Result<bool> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("reading the safetensors header of {}", file.display()))?;
    Ok(md
        .metadata()
        .as_ref()
        .is_some_and(|m| m.contains_key(IMAGE_METADATA_KEY)))
}

pub fn sample(a: SampleArgs) -> Result<()> {
    let loc = locate_model(&a.model)?;
    if is_image_model(&loc.file)? {
        return sample_images(&a, &loc.file);
    }
    if a.grid.is_some() || a.temperature.is_some() {
        bail!(
            "--grid and --temperature apply to image models; {} is not one",
            loc.file.display()
        );
    }
    let device = crate::device(a.dev.device.as_deref())?;
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

/// Images from the prior at a temperature, inverted through the flow (per-sample convergence
/// report), as 8-bit pixels: a PNG grid with `--grid`, else rows of `k/255` values.
fn sample_images(a: &SampleArgs, file: &Path) -> Result<()> {
    if a.dev.dtype.is_some() {
        bail!("--dtype does not apply to image models (they keep their float type)");
    }
    let device = crate::device(a.dev.device.as_deref())?;
    let flow =
        ImageFlow::load(file, &device).with_context(|| format!("loading {}", file.display()))?;
    let n = a.grid.map_or(a.n, |(r, c)| r * c);
    let temperature = a.temperature.unwrap_or(1.0);
    let mut rng = FlowRng::seed_from_u64(a.dev.seed.unwrap_or(0));
    let t = std::time::Instant::now();
    let inv = flow.sample(n, temperature, &mut rng)?;
    let secs = t.elapsed().as_secs_f64();
    let pixels = quantize_pixels(&inv.x)?;
    if let Some((r, c)) = a.grid {
        write_sample_grid(&flow.to_images(&pixels)?, r, c, &a.output)?;
    } else {
        let rows = pixels.flatten_all()?.to_vec1::<f64>()?;
        write_rows(&a.output, flow.dim(), &rows)?;
    }
    println!(
        "wrote {n} image samples at temperature {temperature} to {} in {secs:.1} s (inversion: \
         {} of {n} converged, max residual {:.2e})",
        a.output.display(),
        n - inv.report.num_failed(),
        inv.report.max_residual()
    );
    Ok(())
}
