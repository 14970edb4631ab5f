//! The `cargo xtask` command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::fetch::FetchOptions;
use crate::install::{DownloadOptions, Outcome, download_dataset};
use crate::registry::{DATASETS, find};

/// Project automation for the CP-Flow workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download, verify (sha256 / md5) and unpack a dataset into the data directory.
    Download(DownloadArgs),
    /// Train and evaluate CP-Flow on the MAF tabular benchmarks (not implemented yet).
    BenchTabular(BenchTabularArgs),
    /// Reproduce the paper's experiments and tables (not implemented yet).
    Reproduce(ReproduceArgs),
}

/// Datasets that `download` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DownloadName {
    /// POWER (MAF archive).
    Power,
    /// GAS (UCI ethylene_CO.txt).
    Gas,
    /// HEPMASS (MAF archive, UCI fallback).
    Hepmass,
    /// MINIBOONE (MAF archive).
    Miniboone,
    /// BSDS300 source images (Berkeley).
    Bsds300,
    /// MNIST IDX files.
    Mnist,
    /// CIFAR-10 binary batches.
    Cifar10,
    /// Every dataset above.
    All,
}

/// Arguments of `cargo xtask download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Dataset to fetch.
    #[arg(value_enum)]
    pub dataset: DownloadName,
    /// Data directory (the loaders' root).
    #[arg(long, default_value = cpflow::datasets::layout::DEFAULT_ROOT)]
    pub dir: PathBuf,
    /// Fetch every file from this base URL instead of the official sources
    /// (`<URL>/maf/data.tar.gz`, `<URL>/mnist/<file>.gz`, ...; see `xtask::registry`).
    #[arg(long, env = "CPFLOW_DATA_MIRROR")]
    pub mirror: Option<String>,
    /// Extra attempts per URL after an interrupted transfer (each resumes where it stopped).
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// Pause before the first retry, in milliseconds (doubled after each retry).
    #[arg(long, default_value_t = 2000)]
    pub retry_delay_ms: u64,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Unpack again even if the dataset's files are already present.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `cargo xtask bench-tabular`.
#[derive(Debug, Args)]
pub struct BenchTabularArgs {
    /// Benchmark to run: power, gas, hepmass, miniboone, bsds300 or all.
    #[arg(long, default_value = "all")]
    pub dataset: String,
    /// Data directory (filled by `cargo xtask download`).
    #[arg(long, default_value = cpflow::datasets::layout::DEFAULT_ROOT)]
    pub data_dir: PathBuf,
    /// Hyperparameter file (TOML); default: the versioned per-dataset configuration.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Independent runs (seeds `seed..seed+runs`); mean ± std is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop each run after this many iterations (smoke runs).
    #[arg(long)]
    pub max_iters: Option<u64>,
    /// Compute device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Train in float64 instead of float32.
    #[arg(long)]
    pub fp64: bool,
    /// Output directory for checkpoints and results.
    #[arg(long, default_value = "target/bench-tabular")]
    pub out: PathBuf,
}

/// Arguments of `cargo xtask reproduce`.
#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// Data directory (filled by `cargo xtask download all`).
    #[arg(long, default_value = cpflow::datasets::layout::DEFAULT_ROOT)]
    pub data_dir: PathBuf,
    /// Independent runs per experiment; mean ± std is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Small budgets that check the pipeline end to end instead of the paper's numbers.
    #[arg(long)]
    pub quick: bool,
    /// Compute device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output directory for checkpoints, tables and plots.
    #[arg(long, default_value = "target/reproduce")]
    pub out: PathBuf,
}

/// Runs `download` for one dataset or all of them.
pub fn download(args: &DownloadArgs) -> Result<()> {
    let opts = DownloadOptions {
        dir: args.dir.clone(),
        mirror: args.mirror.clone(),
        fetch: FetchOptions {
            retries: args.retries,
            backoff: Duration::from_millis(args.retry_delay_ms),
            progress: !args.no_progress,
            ..FetchOptions::default()
        },
        force: args.force,
    };
    let names: Vec<&str> = match args.dataset {
        DownloadName::All => DATASETS.to_vec(),
        one => vec![DATASETS[one as usize]],
    };
    let mut failed = Vec::new();
    for name in &names {
        let Some(spec) = find(name) else {
            bail!("unknown dataset {name}");
        };
        match download_dataset(&spec, &opts) {
            Ok(Outcome::AlreadyInstalled) => {
                tracing::info!("{name}: already present in {}", opts.dir.display());
            }
            Ok(Outcome::Installed { source, unverified }) => {
                tracing::info!(
                    "{name}: installed in {} from {source}{}",
                    opts.dir.display(),
                    if unverified.is_empty() {
                        String::new()
                    } else {
                        " (some files had no published checksum, see the warnings)".into()
                    }
                );
            }
            Err(e) if names.len() > 1 => {
                tracing::error!("{name}: {e:#}");
                failed.push(*name);
            }
            Err(e) => return Err(e),
        }
    }
    if !failed.is_empty() {
        bail!("failed to install: {}", failed.join(", "));
    }
    Ok(())
}

/// Dispatches a parsed command line.
pub fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Download(args) => download(args),
        Command::BenchTabular(_) => bail!(
            "`cargo xtask bench-tabular` is not implemented yet: it needs the CP-Flow trainer \
             and evaluation in the cpflow crate, which are not written yet. Datasets can \
             already be fetched with `cargo xtask download <name>`."
        ),
        Command::Reproduce(_) => bail!(
            "`cargo xtask reproduce` is not implemented yet: it needs the CP-Flow trainer and \
             evaluation in the cpflow crate, which are not written yet. Datasets can already \
             be fetched with `cargo xtask download all`."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_enum_order_matches_registry() {
        for (i, v) in DownloadName::value_variants().iter().enumerate() {
            if *v != DownloadName::All {
                let name = v.to_possible_value().map(|p| p.get_name().to_string());
                assert_eq!(name.as_deref(), Some(DATASETS[i]));
            }
        }
    }

    #[test]
    fn parses_flags() {
        let cli = Cli::try_parse_from([
            "xtask", "download", "mnist", "--dir", "/tmp/d", "--mirror", "http://x", "--force",
        ])
        .unwrap();
        let Command::Download(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.dataset, DownloadName::Mnist);
        assert_eq!(a.mirror.as_deref(), Some("http://x"));
        assert!(Cli::try_parse_from(["xtask", "download", "imagenet"]).is_err());
        let cli = Cli::try_parse_from(["xtask", "bench-tabular", "--dataset", "power"]).unwrap();
        assert!(
            run(&cli)
                .unwrap_err()
                .to_string()
                .contains("not implemented yet")
        );
        let cli = Cli::try_parse_from(["xtask", "reproduce", "--quick"]).unwrap();
        assert!(
            run(&cli)
                .unwrap_err()
                .to_string()
                .contains("not implemented yet")
        );
    }
}
