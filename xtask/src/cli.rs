//! The `cargo xtask` command line: its arguments ([`Cli`]) and their dispatch ([`run`]); the
//! subcommands' runners are in `cli/commands.rs`, the parsers of argument values in
//! `cli/arg_values.rs`.

mod arg_values;
mod commands;

pub use arg_values::{budget_from_minutes, mirror_base, parse_device};
pub use commands::{bench_outcome, bench_tabular, download, reproduce};

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use cpflow::CgPreconditioner;

use crate::tabular_config::{ModelOverrides, parse_count};

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
    /// Download, verify (sha256 / md5) and unpack a dataset into the data directory, from
    /// the official sources or a mirror (a server or a local directory).
    #[command(after_help = crate::registry::mirror_layout_help())]
    Download(DownloadArgs),
    /// Train and evaluate CP-Flow on the MAF tabular benchmarks found on disk.
    BenchTabular(BenchTabularArgs),
    /// Reproduce the paper's toys (Fig. 3), OT (Fig. 4), tabular table (Table 1), image flows
    /// (Table 2) and VAE table (Table 3).
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
    /// Omniglot 28x28 (IWAE's `chardata.mat`) for the VAE experiment.
    Omniglot,
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
    /// Take every file from this mirror instead of the official sources: a base URL
    /// (http:// or https://), or a local directory (a path or file:// URL), holding the files
    /// at the paths listed below.
    #[arg(long, env = "CPFLOW_DATA_MIRROR", value_name = "URL|DIR")]
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
    /// Start over: delete the cached files that have no published checksum (the MAF archive,
    /// UCI's files) and forget the sha256 recorded for them on first download, download them
    /// afresh, and install again even if the dataset's files are present.
    #[arg(long)]
    pub force: bool,
    /// Read an installed dataset's files in full as the loaders do before calling it already
    /// present (by default only their sizes, `.npy` headers and text files' first lines are
    /// checked); a file that fails is installed again.
    #[arg(long)]
    pub verify: bool,
}

/// Arguments of `cargo xtask bench-tabular`.
#[derive(Debug, Args)]
pub struct BenchTabularArgs {
    /// Comma-separated benchmarks: power, gas, hepmass, miniboone, bsds300 or all.
    #[arg(long, alias = "dataset", default_value = "all")]
    pub datasets: String,
    /// Data directory (filled by `cargo xtask download`). Datasets not found there are
    /// looked up in `<repository>/../shared/data` (which holds the BSDS300 images).
    #[arg(long, default_value = cpflow::datasets::layout::DEFAULT_ROOT)]
    pub data_dir: PathBuf,
    /// Wall-clock training budget per dataset, in minutes (default: 10; ignored with --quick).
    #[arg(long)]
    pub minutes: Option<f64>,
    /// CI smoke run: small subsets, a small ICNN and 200 iterations per dataset (all five
    /// datasets in well under 2 minutes on 2 CPU cores in release).
    #[arg(long)]
    pub quick: bool,
    /// Compute device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Iterations between validations (default: the preset's, 100 for the 10-minute budget;
    /// the reference validates every 500). Early stopping (20 validations without
    /// improvement) and the plateau learning-rate rule count validations, so at 100 they act
    /// 5× sooner in iterations than the reference's: use 500 with budgets of an hour or more.
    #[arg(long, value_parser = parse_count)]
    pub val_every: Option<usize>,
    /// Preconditioner of the training surrogate's CG solves: `none` (the reference) or
    /// `mean-hessian` (the mean block Jacobian at 8 rows of each batch: about 40% fewer CG
    /// iterations on BSDS300 at the same tolerance).
    #[arg(long, value_parser = str::parse::<CgPreconditioner>)]
    pub cg_preconditioner: Option<CgPreconditioner>,
    /// Score the test NLL on a seeded subset of at most N test rows (default: the whole test
    /// split, as the paper does; BSDS300's 250,000 patches took 85 s for 4 blocks on one
    /// CPU core). The test rows never reach training: a --resume may change them.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub test_rows: Option<usize>,
    /// The model: `--arch`, `--blocks`, `--width`, `--depth` (default: the preset's).
    #[command(flatten)]
    pub model: ModelOverrides,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Output directory (`bench-tabular.md`, `bench-tabular.json`, one folder per dataset
    /// with the model, the metrics and a resumable checkpoint written at every validation).
    #[arg(long, default_value = "target/bench-tabular")]
    pub out: PathBuf,
    /// Continue the runs checkpointed in --out (same data, model and seed; the budget,
    /// validation period, preconditioner and learning rate may change): a long run in several
    /// sittings, or one that was killed (it loses at most one validation period). Datasets
    /// without a checkpoint start.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start over runs whose checkpoints are in --out (without it, or --resume, the command
    /// refuses to).
    #[arg(long)]
    pub overwrite: bool,
}

/// Arguments of `cargo xtask reproduce`.
#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// Data directory (filled by `cargo xtask download all`); BSDS300 is also found in
    /// `<repository>/../shared/data`.
    #[arg(long, default_value = cpflow::datasets::layout::DEFAULT_ROOT)]
    pub data_dir: PathBuf,
    /// Small budgets that check the pipeline end to end (a few minutes on 2 CPU cores)
    /// instead of the paper's settings.
    #[arg(long)]
    pub quick: bool,
    /// Training budget in minutes per tabular dataset, per image-flow run on the CPU (on a
    /// CUDA device the image flows train their full 100 epochs) and per VAE run (dataset ×
    /// posterior); ignored with --quick.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Data root of the VAE datasets (default: the project's shared data folder
    /// `<repository>/../shared/data`, where Frey Faces and Caltech 101 Silhouettes are
    /// shipped, found from any working directory); datasets not found there are looked up in
    /// --data-dir (where `cargo xtask download mnist|omniglot` puts them).
    #[arg(long)]
    pub vae_data_dir: Option<PathBuf>,
    /// Comma-separated VAE datasets of Table 3: frey-faces, caltech101, mnist, omniglot or
    /// all. Each runs twice (Gaussian and CP-Flow posterior); missing ones are skipped.
    #[arg(long, default_value = "all")]
    pub vae_datasets: String,
    /// Skip the VAE part (Table 3).
    #[arg(long)]
    pub no_vae: bool,
    /// Comma-separated image datasets of Table 2: mnist, cifar10 or all (missing ones are
    /// skipped with the command that downloads them).
    #[arg(long, default_value = "all")]
    pub image_datasets: String,
    /// Skip the image part (Table 2).
    #[arg(long)]
    pub no_images: bool,
    /// Compute device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Output directory for figures, tables and models.
    #[arg(long, default_value = "target/reproduce")]
    pub out: PathBuf,
    /// Continue the reproduction in --out (one that was interrupted or killed): its finished
    /// runs are kept, the others continue from their checkpoints for what is left of their
    /// budgets. The preset, --minutes and --device must be the ones it started with.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Remove the reproduction in --out first and start over (without it, or --resume, the
    /// command refuses an --out that holds one).
    #[arg(long)]
    pub overwrite: bool,
}

/// Dispatches a parsed command line.
pub fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Download(args) => download(args),
        Command::BenchTabular(args) => bench_tabular(args),
        Command::Reproduce(args) => reproduce(args),
    }
}

/// `cargo xtask bench-tabular` followed by `extra`, parsed (for the tests).
#[cfg(test)]
pub(crate) fn parse_bench_tabular(extra: &[&str]) -> Result<BenchTabularArgs, clap::Error> {
    let args = ["xtask", "bench-tabular"].iter().chain(extra).copied();
    Cli::try_parse_from(args).map(|cli| match cli.command {
        Command::BenchTabular(b) => b,
        _ => panic!("not bench-tabular"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_tabular::parse_datasets;
    use crate::registry::DATASETS;
    use crate::reproduce_image::parse_image_datasets;
    use crate::reproduce_vae::parse_vae_datasets;

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
        let cli = Cli::try_parse_from(["xtask", "download", "omniglot"]).unwrap();
        let Command::Download(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.dataset, DownloadName::Omniglot);
        assert!(Cli::try_parse_from(["xtask", "download", "imagenet"]).is_err());
        let cli = Cli::try_parse_from([
            "xtask",
            "bench-tabular",
            "--datasets",
            "power,bsds300",
            "--minutes",
            "2.5",
        ])
        .unwrap();
        let Command::BenchTabular(b) = cli.command else {
            panic!()
        };
        assert_eq!(b.minutes, Some(2.5));
        assert_eq!(parse_datasets(&b.datasets).unwrap().len(), 2);
        let cli = Cli::try_parse_from(["xtask", "reproduce", "--quick"]).unwrap();
        let Command::Reproduce(r) = cli.command else {
            panic!()
        };
        assert!(r.quick && !r.no_vae);
        assert_eq!(r.vae_data_dir, None);
        assert_eq!(parse_vae_datasets(&r.vae_datasets).unwrap().len(), 4);
        let cli = Cli::try_parse_from([
            "xtask",
            "reproduce",
            "--vae-datasets",
            "frey-faces,caltech101",
            "--vae-data-dir",
            "/v",
            "--no-vae",
            "--image-datasets",
            "mnist",
            "--no-images",
        ])
        .unwrap();
        let Command::Reproduce(r) = cli.command else {
            panic!()
        };
        assert!(r.no_vae && r.no_images);
        assert_eq!(
            parse_image_datasets(&r.image_datasets).unwrap(),
            [cpflow::image::ImageDataset::Mnist]
        );
        assert_eq!(r.vae_data_dir, Some(PathBuf::from("/v")));
        assert!(!r.resume && !r.overwrite);
        let cli = Cli::try_parse_from(["xtask", "reproduce", "--resume"]).unwrap();
        let Command::Reproduce(resumed) = cli.command else {
            panic!()
        };
        assert!(resumed.resume && !resumed.overwrite);
        // Continuing a reproduction and replacing it are exclusive.
        assert!(Cli::try_parse_from(["xtask", "reproduce", "--resume", "--overwrite"]).is_err());
        assert_eq!(
            parse_vae_datasets(&r.vae_datasets).unwrap(),
            [
                cpflow::vae::VaeDatasetName::FreyFaces,
                cpflow::vae::VaeDatasetName::Caltech101
            ]
        );
    }

    #[test]
    fn bench_tabular_takes_a_grid_point() {
        use crate::tabular_config::TabularArch;
        let parse = |extra: &[&str]| {
            parse_bench_tabular(extra).map(|b| {
                let m = b.model;
                (m.arch, m.blocks, m.width, m.depth)
            })
        };
        assert_eq!(parse(&[]).unwrap(), (None, None, None, None));
        assert_eq!(
            parse(&[
                "--arch", "icnn3", "--blocks", "2", "--width", "128", "--depth", "4"
            ])
            .unwrap(),
            (Some(TabularArch::Icnn3), Some(2), Some(128), Some(4))
        );
        for bad in [
            ["--arch", "resnet"],
            ["--blocks", "0"],
            ["--width", "0"],
            ["--depth", "-1"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} accepted");
        }
    }
}
