//! The `cpflow` command line as a library (feature `cli`): train, evaluate, sample and plot
//! Convex Potential Flows, and run the optimal-transport, VAE and import experiments.
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
//! cpflow import-reference --state-dict W.safetensors --config C.toml --out runs/imported
//! ```
//!
//! The `cpflow` binary is [`main`]. A program of your own that registers a network with
//! [`crate::register_potential`] and then calls [`main`] is the same command line with that
//! network available: a `[model]` table with `arch = "custom"` and a `[model.custom]` table
//! (`name`, and `settings` for the builder) trains, evaluates, samples and plots flows of it,
//! with checkpoints and resume (example `custom_potential_cli`).
//!
//! Logging goes through `tracing` (`RUST_LOG=debug` for more).

mod arg_values;
mod commands;
mod data;
mod data_record;
mod divergence;
#[cfg(fuzzing)]
mod fuzz_config;
mod interrupt;
mod memory;
mod model_file;
mod model_plots;
mod output_files;
mod process_ids;
mod resume_check;
mod run_config;
mod run_dir;
mod run_kind;
mod shell_words;

#[cfg(fuzzing)]
#[doc(hidden)]
pub use fuzz_config::read_config_file;
pub use interrupt::Interrupt;

use anyhow::{Context, Result, bail};
use arg_values::{
    count_at_least, count_in, parse_grid, parse_posterior, plot_center, plot_half_width,
    seed_value, set_assignment, utf8_path_parser,
};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Convex Potential Flows (Huang et al., ICLR 2021).
#[derive(Parser, Debug)]
#[command(name = "cpflow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Every command takes negative numbers as option values (`--lr -0.01`), so that their
/// checks, not the argument parser's "unexpected argument '-0'", say what is wrong.
#[derive(Subcommand, Debug)]
enum Command {
    /// Train a flow (TOML config + overrides); writes model, checkpoint, metrics, report, plots.
    #[command(allow_negative_numbers = true)]
    Train(TrainArgs),
    /// Negative log-likelihood (exact or SLQ) of a trained model on the run's held-out split,
    /// a toy, a file or a tabular benchmark's test split; bits per dimension of an image flow
    /// on its dataset's test split; a VAE's test −ELBO and importance-sampled NLL.
    #[command(allow_negative_numbers = true)]
    Eval(EvalArgs),
    /// Draw samples from a trained model into a .npy or .csv file (image models and VAEs: a
    /// PNG grid with --grid).
    #[command(allow_negative_numbers = true)]
    Sample(SampleArgs),
    /// Write the PNG figures of a trained 2-D model.
    #[command(allow_negative_numbers = true)]
    Plot(PlotArgs),
    /// The optimal-transport experiment (paper Fig. 4): transport cost vs closed-form W2².
    #[command(allow_negative_numbers = true)]
    Ot(OtArgs),
    /// The VAE experiment (paper Table 3): Gaussian or CP-Flow posterior on Frey Faces,
    /// Caltech 101 Silhouettes, MNIST or Omniglot; writes checkpoints, metrics and report.json.
    #[command(allow_negative_numbers = true)]
    Vae(VaeArgs),
    /// Import a tabular, toy or image flow, or with --vae a VAE, trained by the authors'
    /// PyTorch code (its state_dict as safetensors, the architecture from a `train` or `vae`
    /// config) as a model directory.
    #[command(allow_negative_numbers = true)]
    ImportReference(commands::ImportReferenceArgs),
}

/// Options shared by every command that builds tensors.
#[derive(Args, Debug, Clone)]
pub(crate) struct DeviceArgs {
    /// `cpu` or `cuda` (cuda needs a build with `--features cuda`).
    #[arg(long)]
    pub device: Option<String>,
    /// The model's float type (train, ot: the model is built in it; eval, sample, plot: the
    /// loaded model is converted to it; `sample` keeps an image model's).
    #[arg(long, value_enum)]
    pub dtype: Option<crate::FloatType>,
    /// Seed of every RNG of the command: an integer from 0 to 2^63 − 1
    /// (9223372036854775807; a run keeps its seeds in config.toml as TOML integers).
    #[arg(long, value_parser = seed_value)]
    pub seed: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct TrainArgs {
    /// TOML run configuration (see configs/); defaults are the reference toy run, or with
    /// `--resume` the run's own `<out>/config.toml`.
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
    /// Output directory (UTF-8: the run keeps it in config.toml).
    #[arg(long, short, value_parser = utf8_path_parser())]
    pub out: Option<PathBuf>,
    /// Continue from `<out>/checkpoint.safetensors` (only the run's length, the batch size,
    /// logging and checkpoint periods, evaluation sizes, [run] settings and data.root may
    /// change; image runs: the limits, batch size, periods, [train.test] and data.root). The
    /// data must be the run's: a data file whose contents changed is refused.
    #[arg(long)]
    pub resume: bool,
    /// Replace the run already in `--out` (its files and plots are removed). The old run is
    /// removed only once the new one has passed every check made before training (settings,
    /// data, model); a failure during training (e.g. a non-finite loss) comes after it is gone.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Any other config key: `--set train.clip_grad_norm=10 --set model.width=64`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = set_assignment)]
    pub set: Vec<String>,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub dev: DeviceArgs,
}

#[derive(Args, Debug)]
pub(crate) struct EvalArgs {
    /// A run directory (uses model.safetensors and config.toml) or a .safetensors file.
    /// Image flows (`train` on configs/mnist*.toml, or `import-reference`) are scored in bits
    /// per dimension on the test split of their dataset (`data.dataset`, read under the run's
    /// `data.root`); the run's own test settings (seed, batch, SLQ probes and steps, image
    /// counts) are the defaults, so `eval` repeats report.json's test numbers. A VAE run of
    /// `cpflow vae` (its best weights) is scored on its dataset's test split by the
    /// single-sample −ELBO and the importance-sampled NLL, with the run's `[eval]` settings as
    /// the defaults (`-n` first test images, `--is-samples`, `--batch-size`, `--seed`).
    #[arg(long, short)]
    pub model: PathBuf,
    /// Data to score (default: the held-out split of the run's data); a tabular benchmark's
    /// name scores its test split, read under the run's `data.root`. Image flows: only their
    /// own dataset's name (`mnist` or `cifar10`, which the model's image shape must match);
    /// VAEs: only their own dataset's name.
    #[arg(long)]
    pub data: Option<String>,
    /// Where the datasets are (the folder `cargo xtask download` fills; default: the run's
    /// `data.root`, or `data/` for a model file without its run directory).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Points drawn when the data are a toy or an image (default: without `--data`, the run's
    /// `data.n_test`, as many as its test score used; with `--data`, 10,000; at most
    /// 1,000,000: they are held in memory; the standard error of the mean NLL is then about
    /// 0.001 nats). Refused for rows scored as they are (a file, a benchmark's test split).
    /// Image flows: the first `n` test images; default the run's `train.test.exact_images`
    /// (16) with `--estimator exact` and `train.test.images` (all 10,000 of MNIST's) with
    /// `slq`. Measured on 2 CPU cores (release): the configs/mnist-cpu.toml model takes about
    /// 0.2-0.3 s per image exact (the default 16: ~4 s) and 3-6 ms per image by SLQ (10,000:
    /// ~35-55 s); the 2.8M-parameter configs/mnist.toml model about 110 s per image exact
    /// (16: ~30 min) and 0.16 s per image by SLQ (10,000: ~27 min). VAEs: the first `n` test
    /// images for both scores (default every test image for the −ELBO and the run's
    /// `eval.is_images` for importance sampling).
    #[arg(long, short = 'n', value_parser = count_in::<1, MAX_EVAL_POINTS>)]
    pub n: Option<usize>,
    /// Log-det estimator.
    #[arg(long, value_enum, default_value_t = Estimator::Exact)]
    pub estimator: Estimator,
    /// SLQ probes per point (default 1; image flows: the run's `train.test.slq.probes`).
    #[arg(long, value_parser = count_at_least::<1>)]
    pub probes: Option<usize>,
    /// SLQ Lanczos steps (default 10; image flows: the run's `train.test.slq.steps`). Too
    /// few steps bias the estimate (the quadrature has not converged; it is exact at steps ≥
    /// the dimension), and `nll_std_err` does not include that bias: it covers the probes
    /// and the points only, so it shrinks with more points while the bias stays. E.g. with 4
    /// probes a MINIBOONE model scored 10.53 ± 0.55 at 1 step and 17.17 ± 0.54 at 2, where
    /// the exact NLL is 18.47; from 10 steps on its estimates agreed to 3e-6. Check that a
    /// larger `--steps` gives the same number.
    #[arg(long, value_parser = count_at_least::<1>)]
    pub steps: Option<usize>,
    /// Points per evaluation chunk (default 1024; image flows: images per pass, default the
    /// run's `train.eval_batch_size`, 200: the SLQ probes are drawn per pass, so another
    /// batch draws other probes; VAEs: images per −ELBO batch, default the run's
    /// `train.batch_size`). Vector flows with `--estimator slq`: the probes come from one seed
    /// per group of 256 consecutive points of a chunk, so every multiple of 256 (the default
    /// 1024 too) gives the same probes, and another size regroups the points and changes the
    /// estimate within its standard error (the exact score does not depend on it).
    #[arg(long, value_parser = count_at_least::<1>)]
    pub batch_size: Option<usize>,
    /// VAEs (of `cpflow vae`): importance samples per test image for the NLL (default the
    /// run's `eval.is_samples`; 0: the −ELBO alone).
    #[arg(long, value_parser = count_in::<0, 1_000_000>)]
    pub is_samples: Option<usize>,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub dev: DeviceArgs,
}

/// What `sample` writes of a VAE's decoder distribution `p(x | z)`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VaePixels {
    /// The mean of every pixel (`σ(l)` for binary images, `Σ_k p_k·k/255` for 256 levels).
    Mean,
    /// One draw of every pixel (binary, or one of the 256 levels).
    Draw,
}

/// Log-det estimator of `eval`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Estimator {
    /// Dense Hessian log-det.
    Exact,
    /// Stochastic Lanczos quadrature.
    Slq,
}

impl Estimator {
    /// The name on the command line and in the JSON summary: `exact` or `slq`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Estimator::Exact => "exact",
            Estimator::Slq => "slq",
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct SampleArgs {
    /// A run directory or a .safetensors file.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Number of samples (an image grid draws rows × cols instead; at most 100,000,000).
    /// Drawn and written in chunks, so memory does not grow with `n`; a progress bar shows
    /// beyond one chunk, and an interrupt stops between chunks, writing nothing.
    #[arg(short = 'n', long, default_value_t = 1000, value_parser = count_in::<1, MAX_SAMPLES>)]
    pub n: usize,
    /// Output file (.npy or .csv; a PNG with `--grid`), written atomically. A `.npy` file
    /// holds the float type the samples were computed in: `<f4` for an f32 model or
    /// `--dtype f32`, else `<f8` (image models: pixel values `k/255` as `<f8`; VAEs: pixel
    /// means or draws in `[0, 1]` as `<f8`).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Image models and VAEs: write a `ROWSxCOLS` grid of samples as a PNG (e.g. `8x8`; at most
    /// 4096 cells).
    #[arg(long, value_parser = parse_grid)]
    pub grid: Option<(usize, usize)>,
    /// Image models and VAEs: scale of the prior draw (`z = T·ε`; 1 = the model, < 1 sharper).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// VAEs: what an image shows of `p(x | z)`: its pixel means (default) or one draw of
    /// every pixel.
    #[arg(long, value_enum)]
    pub pixels: Option<VaePixels>,
    /// VAEs: reconstructions of test images instead of prior samples (pixel means of
    /// `p(x | z)` for one posterior sample `z` of each image). With `--grid RxC` (R even) the
    /// first R/2·C test images fill rows 1, 3, … with their reconstructions below them;
    /// without it, the reconstructions of the first `-n` test images are written as rows.
    #[arg(long)]
    pub reconstruct: bool,
    /// VAEs, with `--reconstruct`: where the datasets are (the folder `cargo xtask download`
    /// fills; default: the run's `data.root`, or `data/` for a model file without its run
    /// directory).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Flows: also write the exact log-density `log p(x)` of every sample, in nats, one per
    /// row in the order of the samples (a `--grid`'s cells row by row) to this file (.npy or
    /// .csv, not the `--output` file; `<f8`: an f32 model's values widened exactly), written
    /// atomically with the samples (a failed command leaves the previous pair of files, or
    /// neither), which are the same, byte for byte, as without it. Vector
    /// flows: the density (`log_prob_exact`) at the written row. Image flows: the model's
    /// density on `[0, 1)^D` (logit and ActNorm terms included, as `eval` computes it; its
    /// 8-bit-scale `nll` is `D·ln 256` minus this) at the continuous sample, before its
    /// quantisation to the written `k/255`, whatever `--temperature` drew it. A sample whose
    /// inversion did not converge gets the density of the point written (its last iterate).
    /// Refused for VAEs (their density has no closed form: `cpflow eval` estimates their
    /// test NLL by importance sampling); conditional flows are not sampled at all.
    #[arg(long, value_name = "FILE")]
    pub log_prob: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub dev: DeviceArgs,
}

/// Most points `eval` draws from a toy or an image density: they are held in memory (about
/// 64 bytes each with their tensor copies: 64 MB here), and the standard error of a mean NLL
/// over 10⁶ points is already about 10⁻³ nats.
pub(crate) const MAX_EVAL_POINTS: usize = 1_000_000;

/// Most samples `cpflow sample -n` draws (1.6 GB of f64 rows at d = 2): a count beyond it is a
/// typo, not a request (`-n 18446744073709551615` ran until killed).
pub(crate) const MAX_SAMPLES: usize = 100_000_000;

/// Side of `plot`'s density grid at most: `density.png` is 500 pixels wide, so its heat map
/// (interpolated at the pixels of a plot area of under 500 × 500) shows nothing of a finer
/// grid. The grid's points, their tensor, log-densities and values take about 50 bytes each
/// on the host (50 MB at 1000², the exact log-det pass works on row chunks); the unbounded
/// `--grid 100000` (10¹⁰ points) grew to 22 GB before the kernel killed it.
pub(crate) const MAX_PLOT_GRID: usize = 1000;

/// Most model samples `plot` draws: `samples.png` is a 500-pixel scatter plot, saturated
/// long before this. The inversion runs on chunks of rows, so each sample costs only its
/// host copies (prior draw, sample, colour rank: about 100 bytes, 100 MB here).
pub(crate) const MAX_PLOT_SAMPLES: usize = 1_000_000;

/// Most cells of `sample --grid` (e.g. 64x64): the images of the grid are held together
/// (as f64 pixels, 4096 CIFAR-10 images are 100 MB) and drawn into one PNG.
pub(crate) const MAX_GRID_CELLS: usize = 4096;

#[derive(Args, Debug)]
pub(crate) struct PlotArgs {
    /// A run directory or a .safetensors file.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Output directory (default: `<run dir>/plots`).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Data for `data.png` (default: the run's training data).
    #[arg(long)]
    pub data: Option<String>,
    /// Half-width of a square plotting window around `--center` (a finite number above 0,
    /// at most 1e6). Without `--half-width` and `--center`: the reference's `[−4, 4]²` for a
    /// toy or an image density, the box around the data (a tenth wider on every side) for a
    /// `.npy` or `.csv` file, `[−4, 4]²` without data.
    #[arg(long, value_parser = plot_half_width)]
    pub half_width: Option<f64>,
    /// Centre `X,Y` of the square window of `--half-width` (default `0,0`; half-width 4 when
    /// only the centre is given).
    #[arg(long, value_parser = plot_center, allow_hyphen_values = true)]
    pub center: Option<[f64; 2]>,
    /// Density grid resolution (points per side, 2 to 1000: the figure is 500 pixels wide).
    #[arg(long, default_value_t = 100, value_parser = count_in::<2, MAX_PLOT_GRID>)]
    pub grid: usize,
    /// Number of model samples drawn (at most 1,000,000).
    #[arg(long, default_value_t = 2000, value_parser = count_in::<1, MAX_PLOT_SAMPLES>)]
    pub samples: usize,
    #[command(flatten)]
    pub dev: DeviceArgs,
}

#[derive(Args, Debug)]
pub(crate) struct OtArgs {
    /// TOML file with `cpflow::ot::OtConfig` keys, overlaid on the reference settings
    /// (applied to every dimension; `dim` and the potential's `dim` are set per run).
    /// Unknown keys are errors; a `train.lr_schedule` of another kind or a `[potential]` of
    /// another `arch` replaces the reference's instead of being merged into it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Dimensions, comma separated, each once (one whose exact-log-det training would not fit
    /// in the memory this process may use, about 200 bytes × batch × d², is refused before
    /// anything runs; the limit is the machine's memory, or a smaller cgroup or `ulimit -v`
    /// limit).
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16", value_parser = count_at_least::<1>)]
    pub dims: Vec<usize>,
    /// Total optimiser steps (the cosine schedule is stretched to match).
    #[arg(long)]
    pub iters: Option<usize>,
    /// Use the paper's fixed 2-D target for d = 2 (m = (1.5, 1), C = [[.9, -.75], [-.75, .9]]).
    #[arg(long)]
    pub paper_2d: bool,
    /// Output directory (table, curves, figures); refused while another cpflow process (a
    /// running `train` or `vae`) holds it.
    #[arg(long, short, default_value = "runs/ot")]
    pub out: PathBuf,
    /// Replace the files of an earlier OT run in `--out`, or the `train` / `vae` run there
    /// (refused without it).
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub dev: DeviceArgs,
}

#[derive(Args, Debug)]
pub(crate) struct VaeArgs {
    /// TOML configuration (`cpflow::vae::VaeConfig`; see configs/vae-*.toml); with `--resume`
    /// the default is the run's own `<out>/config.toml`.
    #[arg(long, short, required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Output directory.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Override the posterior (`gaussian` or `cp-flow`).
    #[arg(long, value_parser = parse_posterior)]
    pub posterior: Option<crate::vae::PosteriorKind>,
    /// Override the number of epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Continue from `<out>/checkpoint.safetensors` (only the epochs, the time budget, `[eval]`
    /// and data.root may change).
    #[arg(long)]
    pub resume: bool,
    /// Replace the run already in `--out` (its files are removed). The old run is removed only
    /// once the new one has passed every check made before training (settings, data, model);
    /// a failure during training comes after it is gone.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Any other config key: `--set train.batch_size=50 --set eval.is_samples=100`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = set_assignment)]
    pub set: Vec<String>,
    /// Hide the progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// The candle device named `name`.
pub(crate) fn device(name: Option<&str>) -> Result<Device> {
    match name.unwrap_or("cpu") {
        "cpu" => Ok(Device::Cpu),
        "cuda" => crate::open_cuda_device(0).context(
            "CUDA device unavailable (build with `--features cuda` on a machine with a GPU)",
        ),
        other => bail!("unknown device `{other}` (cpu or cuda)"),
    }
}

/// The `cpflow` binary: configures the CPU threads
/// ([`crate::cpu_threads::configure_cpu_threads_except_env`]) and logging to stderr
/// (`RUST_LOG`, default `info`), parses the process's arguments (printing help or an argument
/// error and exiting, as a command line does) and runs the command.
///
/// It does not write the environment (no precondition). Candle reads its thread settings
/// from there: call `unsafe { cpflow::cpu_threads::configure_cpu_threads() }` first thing in
/// `main` (its `# Safety`), as `cpflow`'s binary does; without it this warns, naming the
/// variables missing ([`crate::cpu_threads`]: a loaded 2-core train step took 1.85 s instead
/// of 0.11 s). A binary should also install the allocator:
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: cpflow::allocator::MiMalloc = cpflow::allocator::MiMalloc;
///
/// fn main() -> std::process::ExitCode {
///     // SAFETY: first thing in `main`: no other thread exists to read or write the
///     // environment.
///     unsafe { cpflow::cpu_threads::configure_cpu_threads() };
///     // cpflow::register_potential("my_icnn", …); // networks of your own, if any
///     // An error prints as `cpflow`'s do: its message and causes, no backtrace.
///     cpflow::exit_report::exit_code(cpflow::cli::main())
/// }
/// ```
pub fn main() -> Result<()> {
    let missing = crate::cpu_threads::configure_cpu_threads_except_env();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log redirected to a file or a pipe stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|(k, v)| format!("{k}={v}")).collect();
        tracing::warn!(
            "the environment lacks {} (candle's CPU threading is slower without): call `unsafe \
             {{ cpflow::cpu_threads::configure_cpu_threads() }}` first in `main`",
            names.join(" ")
        );
    }
    execute(Cli::parse())
}

/// Runs the command line `args` (the program name first, as `std::env::args_os` gives it)
/// in this process, without touching the logging or the thread settings ([`main`] does
/// both). A bad argument, `--help` and `--version` are errors here (a [`clap::Error`] whose
/// text is what the binary prints).
///
/// ```
/// // `eval` of a model that is not there: the command's error, not a panic or an exit.
/// let err = cpflow::cli::run(["cpflow", "eval", "--model", "/no/such/run"]).unwrap_err();
/// assert!(err.to_string().contains("/no/such/run"), "{err}");
/// // An unknown command is clap's error.
/// assert!(cpflow::cli::run(["cpflow", "bake"]).unwrap_err().is::<clap::Error>());
/// ```
pub fn run<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    execute(Cli::try_parse_from(args)?)
}

/// Runs a parsed command on the CPU pool ([`crate::cpu_threads::run_on_pool`]).
fn execute(cli: Cli) -> Result<()> {
    crate::cpu_threads::run_on_pool(move || match cli.command {
        Command::Train(a) => commands::train(a),
        Command::Eval(a) => commands::eval(a),
        Command::Sample(a) => commands::sample(a),
        Command::Plot(a) => commands::plot(a),
        Command::Ot(a) => commands::ot(a),
        Command::Vae(a) => commands::vae(a),
        Command::ImportReference(a) => commands::import_reference(a),
    })
}

#[cfg(test)]
mod tests;
