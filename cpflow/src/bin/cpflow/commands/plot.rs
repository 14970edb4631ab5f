//! `cpflow plot`.

use anyhow::{Result, bail};
use cpflow::FlowRng;
use std::path::PathBuf;

use super::{data_root, float_type, load_flow, locate_model, saved_run_config};
use crate::PlotArgs;
use crate::data::{load, load_all};
use crate::model_plots::{PlotOptions, rows_to_points, write_model_plots};

pub fn plot(a: PlotArgs) -> Result<()> {
    let device = crate::device(a.dev.device.as_deref())?;
    let loc = locate_model(&a.model)?;
    let float = a.dev.dtype.as_deref().map(float_type).transpose()?;
    let flow = load_flow(&loc.file, &device, float)?;
    if flow.dim() != 2 {
        bail!("plots need a 2-D model (this one is {}-D)", flow.dim());
    }
    let seed = a.dev.seed.unwrap_or(0);
    let saved = saved_run_config(loc.run_dir.as_deref())?;
    // Data for data.png: --data, else the run's training data, else none.
    let points = match (&a.data, &saved) {
        (Some(src), _) => {
            let d = load_all(src, &data_root(saved.as_ref()), 100_000, seed)?;
            (d.dim == 2).then(|| rows_to_points(&d.test.to_f64(), 100_000))
        }
        (None, Some(cfg)) => {
            let d = load(&cfg.data)?;
            (d.dim == 2).then(|| rows_to_points(&d.train.to_f64(), 100_000))
        }
        (None, None) => None,
    };
    let out = match (&a.out, &loc.run_dir) {
        (Some(o), _) => o.clone(),
        (None, Some(d)) => d.join("plots"),
        (None, None) => PathBuf::from("plots"),
    };
    let opts = PlotOptions {
        half_width: a.half_width,
        density_grid: a.grid,
        n_samples: a.samples,
        ..PlotOptions::default()
    };
    let mut rng = FlowRng::seed_from_u64(seed);
    let figs = write_model_plots(&flow, points.as_deref(), &out, &opts, &mut rng)?;
    for f in &figs {
        println!("{}: {}", out.join(&f.file).display(), f.shows);
    }
    Ok(())
}
