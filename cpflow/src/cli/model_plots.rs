//! The figures of a trained 2-D flow (paper Fig. 1 / Fig. 3, reference `train_toy.py`).

use crate::plot::{
    Bounds, Figure, Grid2d, density_heatmap_png, histogram_png, potential_contour_png, quiver_png,
    scatter_colored_png, warped_mesh_png,
};
use crate::toy::{Point2, points_to_tensor, tensor_to_points};
use crate::{Flow, FlowRng, Layer};
use anyhow::{Context, Result, bail};
use candle_core::DType;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cli::data::DataSource;
use crate::cli::output_files::{ensure_dir, write_file_atomic};

/// Rows inverted per call when drawing the samples: the inversion's memory grows with the
/// rows it solves at once, so `--samples` costs only the host copies of the points.
const INVERSE_CHUNK: usize = 4096;

/// The widest plot window (half-width): far beyond any data a flow is trained on, and well
/// inside the range where the squared norms of the window's corners are finite in f32.
pub const MAX_HALF_WIDTH: f64 = 1e6;

/// The reference's plot window for toys and image densities: `[−4, 4]²`.
pub const REFERENCE_HALF_WIDTH: f64 = 4.0;

/// Sizes of the figures.
#[derive(Clone, Debug)]
pub struct PlotOptions {
    /// Window of the data, density, samples and gradient-field figures (reference: `[−4, 4]²`;
    /// [`default_plot_window`] for data of one's own); the potential and its mesh cover its middle
    /// 95%.
    pub window: Bounds,
    /// Density grid resolution (reference: 100).
    pub density_grid: usize,
    /// Potential / mesh grid resolution (reference: 50 over ±3.8).
    pub mesh_grid: usize,
    /// Number of model samples (reference: 2000).
    pub n_samples: usize,
    /// PNG side in pixels.
    pub size: u32,
    /// Set (by the first Ctrl-C of `cpflow plot`) to stop between figures: the figures
    /// written are kept, no other is started, and `plots.json` is not written.
    pub stop: Option<Arc<AtomicBool>>,
}

impl PlotOptions {
    /// Checks the sizes before anything is drawn: a finite positive window and grids and
    /// counts within the CLI's limits ([`crate::cli::MAX_PLOT_GRID`], [`crate::cli::MAX_PLOT_SAMPLES`]).
    pub fn validate(&self) -> Result<()> {
        let w = self.window;
        w.validate()?;
        if [w.x.0, w.x.1, w.y.0, w.y.1]
            .iter()
            .any(|v| v.abs() > MAX_HALF_WIDTH)
        {
            bail!(
                "the plot window must lie within ±{MAX_HALF_WIDTH:e} (the prior's ‖z‖² \
                 overflows f32 beyond ~1e19), got {}",
                window_words(w)
            );
        }
        for (name, v, lo, hi) in [
            (
                "density grid",
                self.density_grid,
                2,
                crate::cli::MAX_PLOT_GRID,
            ),
            ("mesh grid", self.mesh_grid, 2, crate::cli::MAX_PLOT_GRID),
            (
                "sample count",
                self.n_samples,
                1,
                crate::cli::MAX_PLOT_SAMPLES,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                bail!("the {name} must be between {lo} and {hi}, got {v}");
            }
        }
        if !(16..=4096).contains(&self.size) {
            bail!("figures are 16 to 4096 pixels wide, got {}", self.size);
        }
        Ok(())
    }
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            window: Bounds::square(REFERENCE_HALF_WIDTH),
            density_grid: 100,
            mesh_grid: 50,
            n_samples: 2000,
            size: 500,
            stop: None,
        }
    }
}

/// A window in words: `x in [a, b], y in [c, d]`.
fn window_words(w: Bounds) -> String {
    format!("x in [{}, {}], y in [{}, {}]", w.x.0, w.x.1, w.y.0, w.y.1)
}

/// The window a 2-D run's figures are drawn over when none is asked for: the reference's
/// `[−4, 4]²` for toys and image densities (generated inside it), and for data of one's own
/// (a `.npy` or `.csv` file) the box around `points` (the data drawn in `data.png`), enlarged
/// by a tenth of its width and height on every side. That box's width and height follow the
/// data's (a narrow column gets a narrow window, which the density grid can resolve); the
/// figures stay square.
pub fn default_plot_window(source: &DataSource, points: &[Point2]) -> Bounds {
    match source {
        DataSource::Toy(_) | DataSource::Image(_) => Bounds::square(REFERENCE_HALF_WIDTH),
        DataSource::Npy(_) | DataSource::Csv(_) | DataSource::Tabular(_) => {
            Bounds::around(points, 0.1)
        }
    }
}

/// `window` shrunk about its centre by `factor` in width and height.
fn shrunk(window: Bounds, factor: f64) -> Bounds {
    let shrink = |(a, b): (f64, f64)| {
        let (c, h) = (0.5 * (a + b), 0.5 * (b - a) * factor);
        (c - h, c + h)
    };
    Bounds {
        x: shrink(window.x),
        y: shrink(window.y),
    }
}

/// What each figure shows (written to `plots.json` beside the PNGs, since they carry no text).
#[derive(Debug, Serialize)]
pub struct FigureInfo {
    pub file: String,
    pub shows: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    pub value_range: Option<(f64, f64)>,
}

fn info(file: &str, shows: &str, b: Bounds, values: Option<(f64, f64)>) -> FigureInfo {
    FigureInfo {
        file: file.into(),
        shows: shows.into(),
        x_range: b.x,
        y_range: b.y,
        value_range: values,
    }
}

/// Rank of each point's `‖z‖` scaled to `[0, 1]` (the reference colours samples this way).
fn norm_ranks(z: &[Point2]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..z.len()).collect();
    idx.sort_by(|&a, &b| {
        let na = z[a][0].hypot(z[a][1]);
        let nb = z[b][0].hypot(z[b][1]);
        na.total_cmp(&nb)
    });
    let mut ranks = vec![0.0; z.len()];
    let denom = (z.len().max(2) - 1) as f64;
    for (r, &i) in idx.iter().enumerate() {
        ranks[i] = r as f64 / denom;
    }
    ranks
}

/// Writes `data.png` (if `data` is given), `density.png`, `samples.png`, `latent.png` and,
/// when the flow has a CP-Flow block, `potential.png`, `gradient_mesh.png`, `gradient_field.png`;
/// plus `plots.json`. Returns the figure list.
pub fn write_model_plots(
    flow: &Flow,
    data: Option<&[Point2]>,
    dir: &Path,
    opts: &PlotOptions,
    rng: &mut FlowRng,
) -> Result<Vec<FigureInfo>> {
    if flow.dim() != 2 {
        bail!("plots need a 2-D model (this one is {}-D)", flow.dim());
    }
    opts.validate()?;
    ensure_dir(dir, "the plot directory")?;
    let (dtype, device) = (flow.dtype(), flow.device().clone());
    let window = opts.window;
    let mut figures = Vec::new();
    let has_cpf = flow.layers().iter().any(|l| matches!(l, Layer::Cpf(_)));
    let stop = Stop {
        flag: opts.stop.as_deref(),
        dir,
        planned: planned_files(data.is_some(), has_cpf),
    };

    // The density first: a window where the model has no finite density (far outside its
    // data) is an error before any figure is written.
    let n = opts.density_grid;
    let nodes = Grid2d::points(window, n, n);
    let logp = flow
        .log_prob_exact(&points_to_tensor(&nodes, dtype, &device)?)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    let density = Grid2d::from_values(window, n, n, logp.iter().map(|l| l.exp()).collect())?;
    if !density.finite_range().is_some_and(|(_, hi)| hi > 0.0) {
        bail!(
            "the model's density underflows or is not finite everywhere on the {n}×{n} grid \
             of the plot window {} (its largest log-density there is {}): the window misses \
             where the model puts its mass; draw the figures over a window that covers the \
             data (`cpflow plot --center X,Y --half-width H`), or on a finer grid (`--grid`)",
            window_words(window),
            logp.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        );
    }

    stop.check(&figures)?;
    if let Some(points) = data {
        let fig = Figure::new(opts.size).title("data (2-D histogram)");
        histogram_png(dir.join("data.png"), points, window, 200, fig)?;
        figures.push(info(
            "data.png",
            "2-D histogram of the data (200×200 bins, BuPu)",
            window,
            None,
        ));
    }

    stop.check(&figures)?;
    // Model density on a grid (exact log-det), computed above.
    let fig = Figure::new(opts.size).title("model density (exact log-det)");
    density_heatmap_png(dir.join("density.png"), &density, fig)?;
    figures.push(info(
        "density.png",
        "model density exp(log p) (exact log-det), white = min, purple = max",
        window,
        density.finite_range(),
    ));

    stop.check(&figures)?;
    // Samples: z ~ prior, x = f⁻¹(z), coloured by the rank of ‖z‖.
    let z = flow
        .prior()
        .sample(opts.n_samples, 2, dtype, &device, rng)?;
    let zs = tensor_to_points(&z)?;
    let xs = invert_in_chunks(flow, &z, || stop.check(&figures))?;
    let ranks = norm_ranks(&zs);
    let fig = Figure::new(opts.size).title("samples x = f⁻¹(z), coloured by rank of |z|");
    scatter_colored_png(dir.join("samples.png"), &xs, &ranks, window, 2, fig)?;
    figures.push(info(
        "samples.png",
        "model samples x = f^-1(z), coloured by the rank of |z| (rainbow)",
        window,
        None,
    ));
    stop.check(&figures)?;
    let zb = Bounds::around(&zs, 0.05);
    let fig = Figure::new(opts.size)
        .title("prior draws z behind the samples")
        .labels("z₁", "z₂");
    scatter_colored_png(dir.join("latent.png"), &zs, &ranks, zb, 2, fig)?;
    figures.push(info(
        "latent.png",
        "the prior draws z behind samples.png, same colours",
        zb,
        None,
    ));

    stop.check(&figures)?;
    // Potential and gradient map of the first CP-Flow block, on the data-space grid pushed
    // through the layers before it (as the reference does with its leading ActNorm).
    let Some(k) = flow
        .layers()
        .iter()
        .position(|l| matches!(l, Layer::Cpf(_)))
    else {
        return finish(dir, figures);
    };
    let mesh_window = shrunk(window, 0.95);
    let m = opts.mesh_grid;
    let mesh = Grid2d::points(mesh_window, m, m);
    let mut h = points_to_tensor(&mesh, dtype, &device)?;
    for layer in &flow.layers()[..k] {
        if let Layer::ActNorm(a) = layer {
            h = a.forward(&h)?.0.detach();
        }
    }
    let Layer::Cpf(block) = &flow.layers()[k] else {
        unreachable!("position() found a CP-Flow layer")
    };
    let (phi, grad) = block.potential_and_forward(&h, None)?;
    let phi: Vec<f64> = phi.detach().to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let grad = tensor_to_points(&grad.detach())?;
    let potential = Grid2d::from_values(mesh_window, m, m, phi)?;
    let fig = Figure::new(opts.size).title("convex potential Φ of the first block");
    potential_contour_png(dir.join("potential.png"), &potential, 20, fig)?;
    figures.push(info(
        "potential.png",
        "convex potential Phi of the first block over the data grid, 20 levels (Viridis)",
        mesh_window,
        potential.finite_range(),
    ));
    stop.check(&figures)?;
    let mut extent: Vec<Point2> = grad.clone();
    extent.extend([
        [mesh_window.x.0, mesh_window.y.0],
        [mesh_window.x.1, mesh_window.y.1],
    ]);
    let gb = Bounds::around(&extent, 0.05);
    warped_mesh_png(
        dir.join("gradient_mesh.png"),
        &grad,
        m,
        m,
        gb,
        Some(mesh_window),
        Figure::new(opts.size)
            .title("grid lines of the red square pushed through ∇Φ")
            .labels("∇Φ₁", "∇Φ₂"),
    )?;
    figures.push(info(
        "gradient_mesh.png",
        "the grid lines of the red square pushed through grad Phi (rows blue, columns orange)",
        gb,
        None,
    ));
    stop.check(&figures)?;
    let every_other: Vec<usize> = (0..m * m)
        .filter(|i| (i / m).is_multiple_of(2) && (i % m).is_multiple_of(2))
        .collect();
    let origins: Vec<Point2> = every_other.iter().map(|&i| mesh[i]).collect();
    let vectors: Vec<Point2> = every_other.iter().map(|&i| grad[i]).collect();
    quiver_png(
        dir.join("gradient_field.png"),
        &origins,
        &vectors,
        window,
        Figure::new(opts.size).title("gradient field ∇Φ (common scale)"),
    )?;
    figures.push(info(
        "gradient_field.png",
        "grad Phi as arrows (common scale), coloured by length",
        window,
        None,
    ));
    finish(dir, figures)
}

/// `x = f⁻¹(z)` as points, [`INVERSE_CHUNK`] rows at a time (rows are inverted
/// independently), with one warning for the samples that did not converge.
/// `check` runs before every chunk (an error ends the inversion).
fn invert_in_chunks(
    flow: &Flow,
    z: &candle_core::Tensor,
    check: impl Fn() -> Result<()>,
) -> Result<Vec<Point2>> {
    let n = z.dim(0)?;
    let (mut xs, mut failed, mut max_residual) = (Vec::with_capacity(n), 0, 0.0f64);
    for start in (0..n).step_by(INVERSE_CHUNK) {
        check()?;
        let inv = flow.inverse(&z.narrow(0, start, INVERSE_CHUNK.min(n - start))?)?;
        failed += inv.report.num_failed();
        max_residual = max_residual.max(inv.report.max_residual());
        xs.extend(tensor_to_points(&inv.x)?);
    }
    if failed > 0 {
        tracing::warn!(
            failed,
            max_residual,
            "some samples did not converge in the inversion"
        );
    }
    Ok(xs)
}

/// The files [`write_model_plots`] writes, in order: `data.png` with data, the CP-Flow
/// block's three figures when the flow has one, and `plots.json` last.
pub(crate) fn planned_files(data: bool, cp_flow_block: bool) -> Vec<&'static str> {
    let mut files = Vec::new();
    if data {
        files.push("data.png");
    }
    files.extend(["density.png", "samples.png", "latent.png"]);
    if cp_flow_block {
        files.extend(["potential.png", "gradient_mesh.png", "gradient_field.png"]);
    }
    files.push("plots.json");
    files
}

/// Where [`write_model_plots`] stops once its flag is set: between figures (and between
/// the chunks of the samples' inversion).
struct Stop<'a> {
    flag: Option<&'a AtomicBool>,
    dir: &'a Path,
    planned: Vec<&'static str>,
}

impl Stop<'_> {
    /// `Ok` unless the flag is set; then an error naming the figures written so far
    /// (`figures`; each PNG is written whole or not at all) and the files not written.
    fn check(&self, figures: &[FigureInfo]) -> Result<()> {
        if !self.flag.is_some_and(|f| f.load(Ordering::Relaxed)) {
            return Ok(());
        }
        Err(interrupted_plots(self.dir, figures, &self.planned))
    }
}

/// The error of a plot stopped after `figures` of `planned`.
fn interrupted_plots(dir: &Path, figures: &[FigureInfo], planned: &[&str]) -> anyhow::Error {
    let written: Vec<&str> = figures.iter().map(|f| f.file.as_str()).collect();
    let missing: Vec<&str> = planned
        .iter()
        .copied()
        .filter(|f| !written.contains(f))
        .collect();
    let done = if written.is_empty() {
        "no figure was written".to_string()
    } else {
        format!("wrote {} (each whole)", written.join(", "))
    };
    anyhow::anyhow!(
        "interrupted: {done} in {}; not written: {} (any of those in that directory are \
         from an earlier plot); run the command again to draw them all",
        dir.display(),
        missing.join(", ")
    )
}

fn finish(dir: &Path, figures: Vec<FigureInfo>) -> Result<Vec<FigureInfo>> {
    let json = serde_json::to_string_pretty(&figures).context("serialising plots.json")?;
    write_file_atomic(&dir.join("plots.json"), json.as_bytes(), "the figure list")?;
    Ok(figures)
}

/// Converts row-major host rows of a 2-D data set to points (first `max` rows).
pub fn rows_to_points(rows: &[f64], max: usize) -> Vec<Point2> {
    rows.chunks(2).take(max).map(|r| [r[0], r[1]]).collect()
}
