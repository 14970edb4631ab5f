//! `cpflow`: train, evaluate, sample and plot Convex Potential Flows, and run the
//! optimal-transport experiment.
//!
//! ```text
//! cpflow train  --config configs/toy-8gaussians-fast.toml --out runs/8g
//! cpflow eval   --model runs/8g
//! cpflow sample --model runs/8g -n 1000 --output runs/8g/samples.npy
//! cpflow train  --config configs/mnist-cpu.toml --out runs/mnist-cpu
//! cpflow sample --model runs/mnist-cpu --grid 8x8 --temperature 0.8 --output samples.png
//! cpflow plot   --model runs/8g
//! cpflow ot     --dims 2,4,8,16 --out runs/ot
//! cpflow vae    --config configs/vae-frey-cpu.toml --out runs/vae-frey
//! ```
//!
//! Logging goes through `tracing` (`RUST_LOG=debug` for more).

mod commands;
mod data;
mod interrupt;
mod model_plots;
mod run_config;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// mimalloc, keeping freed memory (`cpflow::allocator`): glibc returned the pages of freed
/// tensors to the kernel and faulted fresh zeroed ones back in at the next use.
#[global_allocator]
static GLOBAL: cpflow::allocator::MiMalloc = cpflow::allocator::MiMalloc;

/// Convex Potential Flows (Huang et al., ICLR 2021).
#[derive(Parser, Debug)]
#[command(name = "cpflow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a flow (TOML config + overrides); writes model, checkpoint, metrics, report, plots.
    Train(TrainArgs),
    /// Negative log-likelihood (exact or SLQ) of a trained model on a toy or a file.
    Eval(EvalArgs),
    /// Draw samples from a trained model into a .npy or .csv file.
    Sample(SampleArgs),
    /// Write the PNG figures of a trained 2-D model.
    Plot(PlotArgs),
    /// The optimal-transport experiment (paper Fig. 4): transport cost vs closed-form W2².
    Ot(OtArgs),
    /// The VAE experiment (paper Table 3): Gaussian or CP-Flow posterior on Frey Faces,
    /// Caltech 101 Silhouettes, MNIST or Omniglot; writes checkpoints, metrics and report.json.
    Vae(VaeArgs),
}

/// Options shared by every command that builds tensors.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// `cpu` or `cuda` (cuda needs a build with `--features cuda`).
    #[arg(long)]
    pub device: Option<String>,
    /// `f32` or `f64` (train: the model's float type; others: the data's).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Seed of every RNG of the command.
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML run configuration (see configs/); defaults are the reference toy run.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Data: toy name (8gaussians, swissroll, 2spirals, rings, moons, checkerboard, pinwheel,
    /// circles, mafmoon), an image (.png), a .npy/.csv file, or a tabular benchmark (power,
    /// gas, hepmass, miniboone, bsds300; read under `data.root`, MAF's splits).
    #[arg(long)]
    pub data: Option<String>,
    /// Total optimiser steps.
    #[arg(long)]
    pub iters: Option<usize>,
    /// Mini-batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Adam learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Output directory.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Continue from `<out>/checkpoint.safetensors`.
    #[arg(long)]
    pub resume: bool,
    /// Any other config key: `--set train.clip_grad_norm=10 --set model.width=64`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub dev: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run directory (uses model.safetensors and config.toml) or a .safetensors file.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Data to score (default: the held-out split of the run's data); a tabular benchmark's
    /// name scores its test split, read under the run's `data.root`.
    #[arg(long)]
    pub data: Option<String>,
    /// Points drawn when the data are a toy or an image.
    #[arg(long, short = 'n', default_value_t = 10_000, value_parser = count_at_least::<1>)]
    pub n: usize,
    /// Log-det estimator.
    #[arg(long, value_enum, default_value_t = Estimator::Exact)]
    pub estimator: Estimator,
    /// SLQ probes per point.
    #[arg(long, default_value_t = 1, value_parser = count_at_least::<1>)]
    pub probes: usize,
    /// SLQ Lanczos steps.
    #[arg(long, default_value_t = 10, value_parser = count_at_least::<1>)]
    pub steps: usize,
    /// Points per evaluation chunk.
    #[arg(long, default_value_t = 1024, value_parser = count_at_least::<1>)]
    pub batch_size: usize,
    #[command(flatten)]
    pub dev: DeviceArgs,
}

/// Log-det estimator of `eval`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Estimator {
    /// Dense Hessian log-det.
    Exact,
    /// Stochastic Lanczos quadrature.
    Slq,
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// A run directory or a .safetensors file.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Number of samples (an image grid draws rows × cols instead).
    #[arg(short = 'n', long, default_value_t = 1000, value_parser = count_at_least::<1>)]
    pub n: usize,
    /// Output file (.npy or .csv; a PNG with `--grid`).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Image models: write a `ROWSxCOLS` grid of samples as a PNG (e.g. `8x8`).
    #[arg(long, value_parser = parse_grid)]
    pub grid: Option<(usize, usize)>,
    /// Image models: scale of the prior draw (`z = T·ε`; 1 = the model, < 1 sharper).
    #[arg(long)]
    pub temperature: Option<f64>,
    #[command(flatten)]
    pub dev: DeviceArgs,
}

/// A count of at least `MIN` (points, probes, steps, grid cells): `0` is refused when the
/// arguments are read instead of failing, or doing nothing, later.
fn count_at_least<const MIN: usize>(s: &str) -> std::result::Result<usize, String> {
    let n = s
        .trim()
        .parse::<usize>()
        .map_err(|e| format!("`{s}` is not a count: {e}"))?;
    if n < MIN {
        return Err(format!("must be at least {MIN}, got {n}"));
    }
    Ok(n)
}

fn parse_grid(s: &str) -> std::result::Result<(usize, usize), String> {
    let (r, c) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("grid `{s}` is not ROWSxCOLS (e.g. 8x8)"))?;
    let p = |v: &str| {
        count_at_least::<1>(v).map_err(|_| format!("grid `{s}`: `{v}` is not a positive integer"))
    };
    Ok((p(r)?, p(c)?))
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// A run directory or a .safetensors file.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Output directory (default: `<run dir>/plots`).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Data for `data.png` (default: the run's training data).
    #[arg(long)]
    pub data: Option<String>,
    /// Half-width of the plotting window.
    #[arg(long, default_value_t = 4.0)]
    pub half_width: f64,
    /// Density grid resolution.
    #[arg(long, default_value_t = 100, value_parser = count_at_least::<2>)]
    pub grid: usize,
    /// Number of model samples drawn.
    #[arg(long, default_value_t = 2000, value_parser = count_at_least::<1>)]
    pub samples: usize,
    #[command(flatten)]
    pub dev: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct OtArgs {
    /// TOML file with `cpflow::ot::OtConfig` keys (applied to every dimension; `dim` and the
    /// potential's `dim` are set per run).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Dimensions, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16")]
    pub dims: Vec<usize>,
    /// Total optimiser steps (the cosine schedule is stretched to match).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Use the paper's fixed 2-D target for d = 2 (m = (1.5, 1), C = [[.9, -.75], [-.75, .9]]).
    #[arg(long)]
    pub paper_2d: bool,
    /// Output directory (table, curves, figures).
    #[arg(long, short, default_value = "runs/ot")]
    pub out: PathBuf,
    #[command(flatten)]
    pub dev: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct VaeArgs {
    /// TOML configuration (`cpflow::vae::VaeConfig`; see configs/vae-*.toml).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Output directory.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Override the posterior (`gaussian` or `cp-flow`).
    #[arg(long, value_parser = parse_posterior)]
    pub posterior: Option<cpflow::vae::PosteriorKind>,
    /// Override the number of epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Continue from `<out>/checkpoint.safetensors`.
    #[arg(long)]
    pub resume: bool,
    /// Any other config key: `--set train.batch_size=50 --set eval.is_samples=100`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Hide the progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

fn parse_posterior(s: &str) -> std::result::Result<cpflow::vae::PosteriorKind, String> {
    match s {
        "gaussian" => Ok(cpflow::vae::PosteriorKind::Gaussian),
        "cp-flow" | "cpflow" => Ok(cpflow::vae::PosteriorKind::CpFlow),
        o => Err(format!("unknown posterior `{o}` (gaussian or cp-flow)")),
    }
}

/// The candle device named `name`.
pub fn device(name: Option<&str>) -> Result<Device> {
    match name.unwrap_or("cpu") {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).context(
            "CUDA device unavailable (build with `--features cuda` on a machine with a GPU)",
        ),
        other => bail!("unknown device `{other}` (cpu or cuda)"),
    }
}

fn main() -> Result<()> {
    cpflow::cpu_threads::configure_cpu_threads();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log redirected to a file or a pipe stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    cpflow::cpu_threads::run_on_pool(move || match cli.command {
        Command::Train(a) => commands::train(a),
        Command::Eval(a) => commands::eval(a),
        Command::Sample(a) => commands::sample(a),
        Command::Plot(a) => commands::plot(a),
        Command::Ot(a) => commands::ot(a),
        Command::Vae(a) => commands::vae(a),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["cpflow", "ot", "--dims", "2,4", "--paper-2d"]).unwrap();
        match cli.command {
            Command::Ot(a) => {
                assert_eq!(a.dims, vec![2, 4]);
                assert!(a.paper_2d);
            }
            _ => panic!("expected ot"),
        }
        assert!(device(Some("tpu")).is_err());
        let args = "cpflow sample --model m --grid 3x4 --temperature 0.8 -o s.png";
        let cli = Cli::try_parse_from(args.split(' ')).unwrap();
        match cli.command {
            Command::Sample(a) => assert_eq!((a.grid, a.temperature), (Some((3, 4)), Some(0.8))),
            _ => panic!("expected sample"),
        }
        assert!(parse_grid("8").is_err() && parse_grid("0x2").is_err());
    }
}
