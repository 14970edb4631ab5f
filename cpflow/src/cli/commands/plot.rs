//! `cpflow plot`.

use crate::FlowRng;
use crate::toy::Point2;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

use super::run_files::refuse_run_file;
use super::{data_root, load_flow, locate_model, saved_run_config};
use crate::cli::PlotArgs;
use crate::cli::data::{LoadedData, Rows, load, load_all};
use crate::cli::data_record::require_run_data_file;
use crate::cli::interrupt::Interrupt;
use crate::cli::model_file::{model_kind, require_flow};
use crate::cli::model_plots::{
    PlotOptions, REFERENCE_HALF_WIDTH, default_plot_window, planned_files, rows_to_points,
    write_model_plots,
};
use crate::cli::run_dir::{lock_run_dir, resolved};
use crate::plot::Bounds;

/// What the first Ctrl-C logs.
const INTERRUPT_MESSAGE: &str = "interrupted: stopping after the figure in progress (the \
     figures written are whole, plots.json is not written); interrupt again to quit now";

/// Points of data drawn in `data.png` (toys and images draw this many; files show their
/// first rows).
const MAX_DATA_POINTS: usize = 100_000;

/// Data shown in `data.png` as points, refused unless 2-D like the model (`what` names them).
fn data_points(d: &LoadedData, rows: &Rows, what: &str) -> Result<Vec<Point2>> {
    if d.dim != 2 {
        bail!(
            "the data are {}-D, the model 2-D: {what} cannot be drawn in data.png (pass \
             `--data` with 2-column data, or a toy)",
            d.dim
        );
    }
    Ok(rows_to_points(&rows.to_f64(), MAX_DATA_POINTS))
}

/// Writes the PNG figures of a 2-D model (and `plots.json`) into `--out`.
pub fn plot(a: PlotArgs) -> Result<()> {
    let device = crate::cli::device(a.dev.device.as_deref())?;
    let loc = locate_model(&a.model)?;
    require_flow(&loc.file, model_kind(&loc.file)?, "plot", false)?;
    let out = match (&a.out, &loc.run_dir) {
        (Some(o), _) => o.clone(),
        (None, Some(d)) => d.join("plots"),
        (None, None) => PathBuf::from("plots"),
    };
    // No figure replaces a file of the run (a run trained on `density.png` plotted into
    // the image's folder).
    for name in planned_files(true, true) {
        refuse_run_file(
            "--out",
            &out.join(name),
            &loc.file,
            "plotted",
            loc.run_dir.as_deref(),
        )?;
    }
    // Figures drawn into the model's run directory (`plots/` by default) are written under
    // the run's lock, taken before the model is read: a `train` going on there (a resume or
    // an --overwrite, which rewrites or removes those figures) refuses to start, and this is
    // refused while one runs, as a second `plot` there is.
    let _lock = match &loc.run_dir {
        Some(d) if writes_into(&out, d)? => Some(
            lock_run_dir(non_empty_dir(d))
                .with_context(|| format!("drawing the figures into {}", out.display()))?,
        ),
        _ => None,
    };
    let flow = load_flow(&loc.file, &device, a.dev.dtype)?;
    if flow.dim() != 2 {
        bail!("plots need a 2-D model (this one is {}-D)", flow.dim());
    }
    let seed = a.dev.seed.unwrap_or(0);
    let saved = saved_run_config(loc.run_dir.as_deref())?;
    // Data for data.png: --data, else the run's training data, else none.
    let data = match (&a.data, &saved) {
        (Some(src), _) => {
            let d = load_all(src, &data_root(saved.as_ref()), MAX_DATA_POINTS, seed)?;
            let pts = data_points(&d, &d.test, &format!("`--data {src}`"))?;
            Some((d.source, pts))
        }
        (None, Some(cfg)) => {
            if let Some(run_dir) = &loc.run_dir {
                require_run_data_file(
                    run_dir,
                    &cfg.data.source,
                    "restore it to draw the run's training data in data.png, or draw other \
                     data with `--data <file.npy|file.csv|toy>`",
                )?;
            }
            let d = load(&cfg.data)?;
            let what = format!("the run's training data `{}`", cfg.data.source);
            let pts = data_points(&d, &d.train, &what)?;
            Some((d.source, pts))
        }
        (None, None) => None,
    };
    // The window asked for, else the data's default window (computed only then).
    let window = match (a.half_width, a.center, &data) {
        (None, None, Some((source, pts))) => default_plot_window(source, pts),
        (h, c, _) => {
            let h = h.unwrap_or(REFERENCE_HALF_WIDTH);
            let [x, y] = c.unwrap_or([0.0, 0.0]);
            Bounds {
                x: (x - h, x + h),
                y: (y - h, y + h),
            }
        }
    };
    check_grid_resolution(&window, a.grid, flow.float())?;
    let points = data.map(|(_, pts)| pts);
    // The first Ctrl-C stops between figures (each PNG is written whole or not at all).
    let interrupt = Interrupt::install_with_message(INTERRUPT_MESSAGE)?;
    let opts = PlotOptions {
        window,
        density_grid: a.grid,
        n_samples: a.samples,
        stop: Some(interrupt.flag()),
        ..PlotOptions::default()
    };
    tracing::info!("drawing the figures into {}", out.display());
    let mut rng = FlowRng::seed_from_u64(seed);
    let figs = write_model_plots(&flow, points.as_deref(), &out, &opts, &mut rng)?;
    for f in &figs {
        println!("{}: {}", out.join(&f.file).display(), f.shows);
    }
    Ok(())
}

/// `dir`, or `.` for the empty parent of a bare file name (`--model model.safetensors`).
fn non_empty_dir(dir: &Path) -> &Path {
    if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }
}

/// Whether `out` lies in the run directory `run_dir` (however either is spelt: both are
/// resolved, symlinks and `..` included).
fn writes_into(out: &Path, run_dir: &Path) -> Result<bool> {
    Ok(resolved(out)?.starts_with(resolved(non_empty_dir(run_dir))?))
}

/// Units in the last place that neighbouring points of the density grid must be apart, at
/// least, in the model's float type.
///
/// The grid's points enter the network through sums with values of order
/// `max(1, |centre|)` (ActNorm shifts, the layers' biases, the centre itself), so that is
/// the scale whose rounding decides what the model sees: points closer than a few units in
/// its last place become the same input, or inputs that differ by rounding alone, and the
/// figure shows a constant (`--half-width 1e-300` drew one value, 0.00452, everywhere) or
/// rounding noise. 16 units leave the 100 cells of the default grid 1600 units of the
/// scale apart end to end: the density's change over the window stands above the few units
/// of rounding in each log-density.
const MIN_ULPS_PER_CELL: f64 = 16.0;

/// Refuses a window whose `grid` points per side the model's float type `float` cannot tell
/// apart around the window's centre ([`MIN_ULPS_PER_CELL`]), naming the smallest
/// half-width it can draw.
fn check_grid_resolution(window: &Bounds, grid: usize, float: crate::FloatType) -> Result<()> {
    let eps = krylov::unit_roundoff_of(float.dtype());
    let scale = [window.x.0, window.x.1, window.y.0, window.y.1]
        .iter()
        .fold(1.0_f64, |m, v| m.max(v.abs()));
    let cells = grid.saturating_sub(1).max(1) as f64;
    let min_step = MIN_ULPS_PER_CELL * eps * scale;
    let step = (window.x.1 - window.x.0).min(window.y.1 - window.y.0) / cells;
    if step < min_step {
        let half = (window.x.1 - window.x.0).min(window.y.1 - window.y.0) / 2.0;
        bail!(
            "the plot window's half-width {half:e} is too small for the model's {} grid of \
             {grid} points per side around its centre: neighbouring points would be {step:e} \
             apart, under {MIN_ULPS_PER_CELL} units in the last place ({min_step:.3e}) of the \
             values of order {scale:e} they are added to, so the figure would show one value \
             or rounding noise; give --half-width at least {:.3e} (or fewer --grid points)",
            float.dtype().as_str(),
            min_step * cells / 2.0
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Bounds, check_grid_resolution};
    use crate::FloatType;

    fn square(c: f64, h: f64) -> Bounds {
        Bounds {
            x: (c - h, c + h),
            y: (c - h, c + h),
        }
    }

    /// The bound is 16 units in the last place per cell of max(1, |centre|): f64 at centre 0
    /// and 100 points takes 1e-12 and refuses 1e-13 and 1e-300; f32 needs about 1e-4; a far
    /// centre raises it in proportion.
    #[test]
    fn a_window_the_float_cannot_resolve_is_refused() {
        let ok = |c, h, g, f| check_grid_resolution(&square(c, h), g, f).is_ok();
        assert!(ok(0.0, 4.0, 100, FloatType::F32));
        assert!(ok(0.0, 1e-12, 100, FloatType::F64));
        assert!(!ok(0.0, 1e-13, 100, FloatType::F64));
        assert!(!ok(0.0, 1e-300, 100, FloatType::F64));
        // f32: 16 · 1.19e-7 · 99 / 2 = 9.4e-5.
        assert!(ok(0.0, 1e-4, 100, FloatType::F32));
        assert!(!ok(0.0, 9e-5, 100, FloatType::F32));
        // A centre at 1e3 scales the bound by 1e3.
        assert!(!ok(1e3, 1e-10, 100, FloatType::F64));
        assert!(ok(1e3, 1e-9, 100, FloatType::F64));
        let e = check_grid_resolution(&square(0.0, 1e-300), 100, FloatType::F64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--half-width at least 1.759e-13"), "{e}");
    }
}
