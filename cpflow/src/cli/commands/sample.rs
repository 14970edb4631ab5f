//! `cpflow sample`: rows from a tabular/toy model, or images (a PNG grid with `--grid`) from
//! an image model or a VAE; with `--log-prob`, a flow's exact log-density of every sample
//! beside them (`log_prob.rs`).

mod log_prob;
mod reconstruct;

use crate::image::grid::encode_sample_grid_png;
use crate::image::{ImageFlow, quantize_pixels};
use crate::{FlowRng, InverseParams, InverseReport};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Tensor};
use std::path::Path;

use super::run_files::refuse_run_file;
use super::{ModelLocation, load_flow, locate_model};
use crate::cli::interrupt::Interrupt;
use crate::cli::model_file::{ModelKind, model_kind, require_flow};
use crate::cli::output_files::{
    PendingFile, RowType, RowValues, RowsWriter, StagedFile, ensure_dir, finish_together,
};
use crate::cli::{SampleArgs, VaePixels};
use log_prob::{LogProbFile, finish_with_samples};

/// Samples drawn, inverted and written per chunk of a vector flow: the inversion's memory
/// grows with the rows it solves at once, so `-n` is streamed in chunks instead of being
/// capped. Each chunk draws its prior rows from the same RNG stream in order, so the samples
/// are those of one call for `n ≤ SAMPLE_CHUNK` and depend only on the seed and `n`.
const SAMPLE_CHUNK: usize = 4096;

/// Images sampled per chunk: the convolutional inversion keeps every layer's activations of
/// every image it solves (megabytes per image).
const IMAGE_SAMPLE_CHUNK: usize = 64;

/// What the first Ctrl-C / SIGTERM logs.
const INTERRUPT_MESSAGE: &str = "interrupted: stopping after the chunk of samples in progress (nothing is written); \
     interrupt again to quit now";

/// After an interrupt: an error saying how far sampling got; the unfinished output files
/// (`--output`, and `--log-prob` if given) are removed when their writers are dropped.
fn stop_if_interrupted(interrupt: &Interrupt, done: usize, n: usize, a: &SampleArgs) -> Result<()> {
    if interrupt.is_set() {
        let log_prob = a
            .log_prob
            .as_ref()
            .map_or(String::new(), |p| format!(" nor to {}", p.display()));
        bail!(
            "interrupted after {done} of {n} samples: nothing written to {}{log_prob} (run the \
             command again; the samples depend only on the seed and -n)",
            a.output.display()
        );
    }
    Ok(())
}

/// Convergence of the inversions over all chunks, and the tolerances they were judged by.
struct Convergence {
    failed: usize,
    max_residual: f64,
    /// The solver's tolerance rule: a sample converged in a block when
    /// `‖∇Φ(x) − y‖∞ ≤ abs + rel·‖y‖∞` (`y` its target in that block).
    abs_tolerance: f64,
    rel_tolerance: f64,
    /// The largest of those per-sample, per-block tolerances.
    max_tolerance: f64,
}

impl Convergence {
    /// No inversion yet, under the tolerances of `params` in `dtype`.
    fn new(params: &InverseParams, dtype: DType) -> Result<Self> {
        let (abs_tolerance, rel_tolerance) = params
            .options()
            .tolerances(dtype)
            .context("the inversion's tolerances")?;
        Ok(Convergence {
            failed: 0,
            max_residual: 0.0,
            abs_tolerance,
            rel_tolerance,
            max_tolerance: 0.0,
        })
    }

    fn add(&mut self, report: &InverseReport) {
        self.failed += report.num_failed();
        self.max_residual = self.max_residual.max(report.max_residual());
        let tolerances = report.blocks.iter().flat_map(|b| b.tolerance.iter());
        self.max_tolerance = tolerances.fold(self.max_tolerance, |m, &t| m.max(t));
    }

    /// The tolerance the residuals were judged by: `tolerance 1e-9` (f64, no relative
    /// part), or `tolerance 2e-5 + 2e-5·‖y‖∞, at most 3.05e-4` (f32).
    fn tolerance_text(&self) -> String {
        if self.rel_tolerance == 0.0 {
            format!("tolerance {:e}", self.abs_tolerance)
        } else {
            format!(
                "tolerance {:e} + {:e}·‖y‖∞, at most {:.2e}",
                self.abs_tolerance, self.rel_tolerance, self.max_tolerance
            )
        }
    }
}

/// Draws `-n` samples of a vector flow (or images of an image flow) into `--output`.
pub fn sample(a: SampleArgs) -> Result<()> {
    let loc = locate_model(&a.model)?;
    // An output that is a file of the model's run (its data, weights, configuration…) is
    // refused before anything is read or written.
    let run_dir = loc.run_dir.as_deref();
    refuse_run_file("--output", &a.output, &loc.file, "sampled", run_dir)?;
    if let Some(lp) = &a.log_prob {
        refuse_run_file("--log-prob", lp, &loc.file, "sampled", run_dir)?;
    }
    let kind = model_kind(&loc.file)?;
    if kind == ModelKind::Vae {
        log_prob::refuse_for_vae(&a, &loc.file)?;
        return sample_vae(&a, &loc);
    }
    // A bad `--log-prob` path is refused before the model is loaded.
    log_prob::check_args(&a)?;
    if a.pixels.is_some() || a.reconstruct || a.data_root.is_some() {
        bail!(
            "--pixels, --reconstruct and --data-root apply to VAEs (of `cpflow vae`); {} is a flow",
            loc.file.display()
        );
    }
    require_flow(&loc.file, kind, "sample", true)?;
    if kind == ModelKind::Image {
        return sample_images(&a, &loc.file);
    }
    if a.grid.is_some() || a.temperature.is_some() {
        bail!(
            "--grid and --temperature apply to image models and VAEs; {} is neither",
            loc.file.display()
        );
    }
    let device = crate::cli::device(a.dev.device.as_deref())?;
    let flow = load_flow(&loc.file, &device, a.dev.dtype)?;
    if let Some(c) = flow.context_dim() {
        bail!(
            "{} is a conditional flow (a context of {c} values per sample): `cpflow sample` \
             has no context to give it, so it can draw no sample (nor log-density); the \
             library draws them with `Flow::sample_given` / `Flow::sample_and_log_prob_given`",
            loc.file.display()
        );
    }
    let d = flow.dim();
    let row_type = match flow.dtype() {
        DType::F32 => RowType::F32,
        _ => RowType::F64,
    };
    // Opened before anything is computed: a bad path fails at once.
    let mut out = RowsWriter::create(&a.output, d, a.n, row_type)?;
    let mut lp_out = LogProbFile::open(&a, a.n)?;
    let mut rng = FlowRng::seed_from_u64(a.dev.seed.unwrap_or(0));
    // `Flow::sample` and `Flow::sample_and_log_prob` invert with the default parameters.
    let mut conv = Convergence::new(&InverseParams::default(), flow.dtype())?;
    let interrupt = Interrupt::install_with_message(INTERRUPT_MESSAGE)?;
    let bar = super::chunk_progress_bar(a.no_progress, a.n, SAMPLE_CHUNK, "sampling", "");
    let mut done = 0;
    while done < a.n {
        stop_if_interrupted(&interrupt, done, a.n, &a)?;
        let len = SAMPLE_CHUNK.min(a.n - done);
        // `sample_and_log_prob` draws the samples of `sample` from the same stream, bit for
        // bit: the rows do not depend on `--log-prob`.
        let inv = match lp_out.as_mut() {
            Some(lp_file) => {
                let (inv, lp) = flow.sample_and_log_prob(len, &mut rng)?;
                lp_file.write(&lp)?;
                inv
            }
            None => flow.sample(len, &mut rng)?,
        };
        conv.add(&inv.report);
        write_tensor_rows(&mut out, &inv.x, row_type)?;
        done += len;
        bar.set_position(done as u64);
    }
    bar.finish_and_clear();
    let lp_written = finish_with_samples(Box::new(move || out.stage()), lp_out)?;
    if conv.failed > 0 {
        tracing::warn!(
            failed = conv.failed,
            max_residual = conv.max_residual,
            "some samples did not converge in the inversion (their rows are the last iterates)"
        );
    }
    println!(
        "wrote {} samples of dimension {d} to {}{lp_written} (inversion: max residual {:.2e}, \
         {} not converged; {})",
        a.n,
        a.output.display(),
        conv.max_residual,
        conv.failed,
        conv.tolerance_text()
    );
    Ok(())
}

/// Appends the rows of `x` in `row_type`.
fn write_tensor_rows(out: &mut RowsWriter, x: &Tensor, row_type: RowType) -> Result<()> {
    let flat = x.flatten_all()?;
    match row_type {
        RowType::F32 => out.write(RowValues::F32(&flat.to_dtype(DType::F32)?.to_vec1()?)),
        RowType::F64 => out.write(RowValues::F64(&flat.to_dtype(DType::F64)?.to_vec1()?)),
    }
}

/// Where image samples go: rows streamed to a file, or the chunks of a PNG grid.
enum ImageTarget {
    Rows(RowsWriter),
    Grid(usize, usize, Vec<Tensor>),
}

impl ImageTarget {
    /// Adds a chunk of images (rows of pixel values, or `(B, C, H, W)`).
    fn push(&mut self, pixels: Tensor) -> Result<()> {
        match self {
            ImageTarget::Rows(out) => write_tensor_rows(out, &pixels, RowType::F64),
            ImageTarget::Grid(_, _, chunks) => {
                chunks.push(pixels);
                Ok(())
            }
        }
    }

    /// Finishes the rows file, or draws the grid of the chunks (as images by `to_images`) into
    /// `output`.
    fn finish(self, output: &Path, to_images: impl Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
        finish_together(vec![self.into_pending(output, to_images)])
    }

    /// The output to finish, with others as one unit ([`finish_together`]): the rows file,
    /// or the grid of the chunks (as images by `to_images`), drawn into a temporary file
    /// beside `output`.
    fn into_pending<'a>(
        self,
        output: &'a Path,
        to_images: impl Fn(&Tensor) -> Result<Tensor> + 'a,
    ) -> PendingFile<'a> {
        match self {
            ImageTarget::Rows(out) => Box::new(move || out.stage()),
            ImageTarget::Grid(r, c, chunks) => Box::new(move || {
                let pixels = Tensor::cat(&chunks, 0)?;
                let png = encode_sample_grid_png(&to_images(&pixels)?, r, c)
                    .with_context(|| format!("drawing the sample grid {}", output.display()))?;
                StagedFile::write_bytes(output, "sample grid", &png)
            }),
        }
    }
}

/// The output of image samples: a PNG grid with `--grid` (its directory made), else rows of
/// `dim` pixel values. Opened before anything is computed: a bad path fails at once.
fn image_target(a: &SampleArgs, dim: usize, n: usize) -> Result<ImageTarget> {
    Ok(match a.grid {
        Some((r, c)) => {
            let png = a
                .output
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"));
            if !png {
                bail!(
                    "--grid writes a PNG image: name the output `….png`, not {} (without \
                     --grid, samples are written as rows to .npy or .csv)",
                    a.output.display()
                );
            }
            let dir = a.output.parent().unwrap_or(Path::new(""));
            ensure_dir(dir, &format!("the directory of {}", a.output.display()))?;
            ImageTarget::Grid(r, c, Vec::new())
        }
        None => {
            let png = a
                .output
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"));
            if png {
                bail!(
                    "{}: a PNG is written with --grid ROWSxCOLS (e.g. `--grid 8x8`, a grid of \
                     images); without --grid, samples are written as rows to .npy or .csv",
                    a.output.display()
                );
            }
            ImageTarget::Rows(RowsWriter::create(&a.output, dim, n, RowType::F64)?)
        }
    })
}

/// Draws `n` images, `chunk` at a time by `draw(len)`, into `target` under a
/// progress bar; an interrupt stops between chunks (nothing is written).
fn draw_image_chunks(
    a: &SampleArgs,
    n: usize,
    target: &mut ImageTarget,
    chunk: usize,
    mut draw: impl FnMut(usize) -> Result<Tensor>,
) -> Result<()> {
    let interrupt = Interrupt::install_with_message(INTERRUPT_MESSAGE)?;
    let bar = super::chunk_progress_bar(a.no_progress, n, chunk, "sampling", "");
    let mut done = 0;
    while done < n {
        stop_if_interrupted(&interrupt, done, n, a)?;
        let len = chunk.min(n - done);
        target.push(draw(len)?)?;
        done += len;
        bar.set_position(done as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Images from the prior at a temperature, inverted through the flow (per-sample convergence
/// report), as 8-bit pixels: a PNG grid with `--grid`, else rows of `k/255` values.
fn sample_images(a: &SampleArgs, file: &Path) -> Result<()> {
    if a.dev.dtype.is_some() {
        bail!("--dtype does not apply to image models (they keep their float type)");
    }
    let device = crate::cli::device(a.dev.device.as_deref())?;
    let flow =
        ImageFlow::load(file, &device).with_context(|| format!("loading {}", file.display()))?;
    let n = a.grid.map_or(a.n, |(r, c)| r * c);
    let temperature = a.temperature.unwrap_or(1.0);
    let mut rng = FlowRng::seed_from_u64(a.dev.seed.unwrap_or(0));
    let t = std::time::Instant::now();
    let mut target = image_target(a, flow.dim(), n)?;
    let mut lp_out = LogProbFile::open(a, n)?;
    let mut conv = Convergence::new(&flow.default_inverse_params(), flow.dtype())?;
    draw_image_chunks(a, n, &mut target, IMAGE_SAMPLE_CHUNK, |len| {
        // The samples of `sample` bit for bit, and the density of each continuous sample
        // (before its quantisation to `k/255`).
        let inv = match lp_out.as_mut() {
            Some(lp_file) => {
                let (inv, lp) = flow.sample_and_log_prob(len, temperature, &mut rng)?;
                lp_file.write(&lp)?;
                inv
            }
            None => flow.sample(len, temperature, &mut rng)?,
        };
        conv.add(&inv.report);
        Ok(quantize_pixels(&inv.x)?)
    })?;
    let secs = t.elapsed().as_secs_f64();
    let grid = target.into_pending(&a.output, |rows| Ok(flow.to_images(rows)?));
    let lp_written = finish_with_samples(grid, lp_out)?;
    println!(
        "wrote {n} image samples at temperature {} to {}{lp_written} in {secs:.1} s \
         (inversion: {} of {n} converged, max residual {:.2e}; {})",
        short(temperature),
        a.output.display(),
        n - conv.failed,
        conv.max_residual,
        conv.tolerance_text()
    );
    Ok(())
}

/// Images from a VAE: latents from the prior at a temperature, decoded into the pixel means of
/// `p(x | z)` (`--pixels mean`, the default) or draws from it (`--pixels draw`): a PNG grid
/// with `--grid`, else rows of `H·W` pixel values in `[0, 1]`.
fn sample_vae(a: &SampleArgs, loc: &ModelLocation) -> Result<()> {
    if a.dev.dtype.is_some() || a.dev.device.as_deref().is_some_and(|d| d != "cpu") {
        bail!(
            "--dtype and --device do not apply to a VAE (it runs on the CPU in the float types of its config)"
        );
    }
    let (file, weights) = (
        loc.file.as_path(),
        super::eval_vae::vae_weights_name(&loc.file),
    );
    if weights == "best" {
        crate::vae::check_best_weights_against_checkpoint(file)?;
    }
    let (vae, saved) = crate::vae::load_vae_file(file, &candle_core::Device::Cpu)
        .with_context(|| format!("loading {}", file.display()))?;
    // The run's data root (a resume may move it), as `eval` reads it.
    let mut cfg = super::eval_vae::vae_run_config(loc, saved)?;
    match (&a.data_root, a.reconstruct) {
        (Some(root), true) => cfg.data.root = root.clone(),
        (Some(_), false) => {
            bail!("--data-root applies to --reconstruct (prior samples read no data)")
        }
        (None, _) => {}
    }
    if a.reconstruct {
        let t = std::time::Instant::now();
        let (n, what) = reconstruct::reconstruct(a, &vae, &cfg)?;
        println!(
            "wrote {n} images ({what}; {weights} weights) to {} in {:.1} s",
            a.output.display(),
            t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let n = a.grid.map_or(a.n, |(r, c)| r * c);
    let temperature = a.temperature.unwrap_or(1.0);
    let pixels = a.pixels.unwrap_or(VaePixels::Mean);
    let mut rng = FlowRng::seed_from_u64(a.dev.seed.unwrap_or(0));
    let t = std::time::Instant::now();
    let (h, w) = vae.image_hw();
    let mut target = image_target(a, h * w, n)?;
    draw_image_chunks(a, n, &mut target, IMAGE_SAMPLE_CHUNK, |len| {
        let z = vae.prior_latents(len, temperature, &mut rng)?;
        Ok(match pixels {
            VaePixels::Mean => vae.decoded_means(&z)?,
            VaePixels::Draw => vae.decoded_samples(&z, &mut rng)?,
        })
    })?;
    target.finish(&a.output, |x| Ok(x.clone()))?;
    println!(
        "wrote {n} VAE samples ({h}×{w} images; {} of p(x|z), z from the prior at temperature \
         {}, {weights} weights) to {} in {:.1} s",
        match pixels {
            VaePixels::Mean => "pixel means",
            VaePixels::Draw => "pixel draws",
        },
        short(temperature),
        a.output.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `x` as written for a person: plainly in `[1e-4, 1e6)` (`0.7`, `1`), else in scientific
/// notation (`1e-300`: the plain form of a tiny temperature ran to 300 digits).
fn short(x: f64) -> String {
    if x == 0.0 || (1e-4..1e6).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_short() {
        assert_eq!(super::short(0.7), "0.7");
        assert_eq!(super::short(1.0), "1");
        assert_eq!(super::short(1e-300), "1e-300");
        assert_eq!(super::short(2.5e7), "2.5e7");
    }
}
