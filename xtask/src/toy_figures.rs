//! Paper Fig. 3: CP-Flow on 2-D toy densities, with data / density / sample figures.
//!
//! Each toy is trained with [`cpflow::run_toy_experiment`]; then three PNGs are written with
//! [`cpflow::plot`] over `[−4, 4]²`: `<toy>_data.png` (2-D histogram of fresh data),
//! `<toy>_density.png` (the model's exact density on a grid) and `<toy>_samples.png` (model
//! samples `x = f⁻¹(z)`, `z` from the prior).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use cpflow::plot::{Bounds, Grid2d, density_heatmap_png, histogram_png, scatter_png};
use cpflow::toy::{Toy, points_to_tensor, tensor_to_points};
use cpflow::{
    FlowConfig, FlowRng, LayerConfig, LrSchedule, PotentialConfig, RunOptions, ToyExperimentConfig,
    run_toy_experiment,
};
use icnn::{ActivationKind, Icnn3Config};
use serde::{Deserialize, Serialize};

/// Drawing settings of the toy figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ToyPlotSettings {
    /// Grid nodes per axis of the density figure.
    pub grid: usize,
    /// Model samples drawn for the sample figure (and data points for the histogram × 10).
    pub samples: usize,
    /// PNG side in pixels.
    pub size: u32,
}

/// One toy's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToyFigureResult {
    /// Toy name.
    pub toy: String,
    /// Held-out exact NLL (nats).
    pub test_nll: f64,
    /// Monte-Carlo entropy of the data where the toy has a closed-form density.
    pub data_entropy: Option<f64>,
    /// Training iterations.
    pub iterations: usize,
    /// Training seconds.
    pub train_time_s: f64,
    /// Model samples whose inversion did not converge.
    pub failed_inversions: usize,
    /// Figure files, relative to the output directory: data, density, samples.
    pub figures: [String; 3],
}

/// The toys of the reproduction (Fig. 3 shows mixtures of Gaussians, rings and
/// checkerboard-like densities).
pub const FIG3_TOYS: [Toy; 3] = [Toy::EightGaussians, Toy::Checkerboard, Toy::Rings];

/// The reference toy run ([`ToyExperimentConfig::reference_8gaussians`]) on `toy`.
pub fn toy_reference_config(toy: Toy) -> ToyExperimentConfig {
    ToyExperimentConfig {
        toy: toy.name().into(),
        ..ToyExperimentConfig::reference_8gaussians()
    }
}

/// A reduced toy run for `--quick`: `Icnn3(2, 32, 5)` (the fast README configuration), 1,000
/// iterations with StepLR(500, 0.5), 10,000 training and 2,000 test points (about 12 s per
/// toy on one CPU core in release).
pub fn toy_quick_config(toy: Toy) -> ToyExperimentConfig {
    let mut cfg = toy_reference_config(toy);
    cfg.flow = with_icnn3(cfg.flow, 32, 5);
    cfg.train.max_iterations = 1000;
    cfg.train.lr_schedule = LrSchedule::Step {
        step_size: 500,
        gamma: 0.5,
    };
    cfg.train.log_every = 100;
    cfg.n_train = 10_000;
    cfg.n_test = 2_000;
    cfg.eval_every = 0;
    cfg
}

/// A toy run for tests: `Icnn3(2, 8, 2)`, 10 iterations on 300 points.
pub fn toy_tiny_config(toy: Toy) -> ToyExperimentConfig {
    let mut cfg = toy_quick_config(toy);
    cfg.flow = with_icnn3(cfg.flow, 8, 2);
    cfg.train.max_iterations = 10;
    cfg.train.batch_size = 64;
    cfg.n_train = 300;
    cfg.n_test = 200;
    cfg
}

/// Replaces the width and depth of every block's `Icnn3` potential.
fn with_icnn3(mut flow: FlowConfig, width: usize, depth: usize) -> FlowConfig {
    for layer in &mut flow.layers {
        if let LayerConfig::Cpf(block) = layer {
            block.potential = PotentialConfig::Icnn3(Icnn3Config {
                dim: 2,
                width,
                depth,
                activation: ActivationKind::GaussianSoftplus,
                zero_shift: true,
                symm_act_first: true,
            });
        }
    }
    flow
}

/// Trains one toy and writes its three figures into `dir`.
pub fn run_toy_figure(
    cfg: &ToyExperimentConfig,
    plot: &ToyPlotSettings,
    dir: &Path,
    device: &Device,
    progress: bool,
) -> Result<ToyFigureResult> {
    let toy: Toy = cfg
        .toy
        .parse()
        .map_err(|e| anyhow::anyhow!("unknown toy {:?}: {e}", cfg.toy))?;
    let name = toy.name();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    tracing::info!(
        "toy {name}: training {} iterations",
        cfg.train.max_iterations
    );
    let options = RunOptions {
        progress_bar: progress,
        ..RunOptions::default()
    };
    let (flow, rep) = run_toy_experiment(cfg, device, options)?;
    let window = Bounds::square(4.0);
    let mut rng = FlowRng::seed_from_u64(cfg.data_seed ^ 0xF163);
    let files = [
        format!("{name}_data.png"),
        format!("{name}_density.png"),
        format!("{name}_samples.png"),
    ];

    let data = toy.sample(plot.samples.max(1) * 10, &mut rng);
    histogram_png(dir.join(&files[0]), &data, window, 200, plot.size)?;

    let n = plot.grid.max(2);
    let nodes = Grid2d::points(window, n, n);
    let logp = flow
        .log_prob_exact(&points_to_tensor(&nodes, flow.dtype(), device)?)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    let density = Grid2d::from_values(window, n, n, logp.iter().map(|l| l.exp()).collect())?;
    density_heatmap_png(dir.join(&files[1]), &density, plot.size)?;

    let inv = flow.sample(plot.samples.max(1), &mut rng)?;
    let failed = inv.report.num_failed();
    if failed > 0 {
        tracing::warn!("toy {name}: {failed} samples did not converge in the inversion");
    }
    let xs = tensor_to_points(&inv.x)?;
    scatter_png(dir.join(&files[2]), &xs, window, 1, plot.size)?;

    let entropy = rep
        .data_entropy
        .map_or_else(|| "unknown".to_string(), |e| format!("{e:.3}"));
    tracing::info!(
        "toy {name}: test NLL {:.3} (data entropy {entropy}) in {:.0} s",
        rep.test_nll,
        rep.train_time_s
    );
    Ok(ToyFigureResult {
        toy: name.into(),
        test_nll: rep.test_nll,
        data_entropy: rep.data_entropy,
        iterations: rep.train.iterations,
        train_time_s: rep.train_time_s,
        failed_inversions: failed,
        figures: files,
    })
}
