//! The `cargo xtask` command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::{Args, Parser, Subcommand, ValueEnum};
use cpflow::CgPreconditioner;
use cpflow::datasets::TabularDataset;

use crate::bench_report::{BENCH_MD, bench_table_markdown};
use crate::bench_resume::{TabularResume, existing_checkpoints};
use crate::bench_tabular::{
    BenchReport, BenchTabularOptions, SkippedDataset, default_fallback_roots, parse_datasets,
    run_bench_tabular,
};
use crate::reproduce::{REPORT_MD, ReproduceOptions, run_reproduce};
use crate::reproduce_image::parse_image_datasets;
use crate::reproduce_resume::remove_reproduction;
use crate::reproduce_vae::parse_vae_datasets;
use crate::tabular_config::{ModelOverrides, TabularBenchConfig, parse_count};

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

/// The candle device named on the command line (`cpu`, `cuda` or `cuda:N`).
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match name.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("bad device {name:?}: use cpu, cuda or cuda:N"))?,
        None => bail!("unknown device {name:?}: use cpu, cuda or cuda:N"),
    };
    Device::new_cuda(ordinal).with_context(|| {
        format!("cannot open CUDA device {ordinal} (build with `--features cuda`?)")
    })
}

/// A training budget of `minutes` (finite, above 0, and small enough for a [`Duration`]).
pub fn budget_from_minutes(minutes: f64) -> Result<Duration> {
    anyhow::ensure!(
        minutes.is_finite() && minutes > 0.0,
        "--minutes must be positive"
    );
    Duration::try_from_secs_f64(minutes * 60.0)
        .map_err(|_| anyhow::anyhow!("--minutes {minutes:e} is too large"))
}

/// The `--mirror` base URL: none when not given or empty (`CPFLOW_DATA_MIRROR=` set to the
/// empty string means no mirror, not a mirror at the empty URL).
pub fn mirror_base(arg: Option<&str>) -> Option<String> {
    arg.map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

/// Runs `bench-tabular`.
pub fn bench_tabular(args: &BenchTabularArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let (preset, budget): (fn(TabularDataset) -> TabularBenchConfig, _) = if args.quick {
        (TabularBenchConfig::quick, None)
    } else {
        (
            TabularBenchConfig::paper,
            Some(budget_from_minutes(args.minutes.unwrap_or(10.0))?),
        )
    };
    let datasets = parse_datasets(&args.datasets)?;
    let existing = existing_checkpoints(&args.out, &datasets);
    if !(existing.is_empty() || args.resume || args.overwrite) {
        let list: Vec<String> = existing.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "{} holds the checkpoints of earlier runs ({}): pass --resume to continue them, \
             --overwrite to start over, or choose another --out",
            args.out.display(),
            list.join(", ")
        );
    }
    let opts = BenchTabularOptions {
        datasets,
        data_dir: args.data_dir.clone(),
        fallback_roots: default_fallback_roots(),
        device,
        budget,
        preset,
        val_every: args.val_every,
        cg_preconditioner: args.cg_preconditioner,
        test_rows: args.test_rows,
        model: args.model,
        out: args.out.clone(),
        progress: !args.no_progress,
        resume: if args.resume {
            TabularResume::Extend
        } else {
            TabularResume::Start
        },
        // Ctrl-C pauses the run after its step in progress, checkpointed (a second one quits).
        // The test NLL is not cut short (seconds, and a finished run's --resume would train
        // on for a new budget before scoring it again).
        interrupt: Some(
            cpflow::cli::Interrupt::install_with_message(
                "interrupted: the dataset in training pauses after its step, checkpointed (one \
                 whose test NLL is being computed finishes it first); the datasets after it do \
                 not start; interrupt again to quit now",
            )?
            .flag(),
        ),
    };
    let report = run_bench_tabular(&opts)?;
    println!("{}", bench_table_markdown(&report));
    for k in &report.skipped {
        println!("skipped: {}", k.message);
    }
    // These messages say "interrupted" and "failed" themselves.
    for k in report.interrupted.iter().chain(&report.failed) {
        println!("{}", k.message);
    }
    println!("wrote {}", args.out.join(BENCH_MD).display());
    bench_outcome(&report, &args.data_dir)
}

/// The end of a `bench-tabular` run, once its report is written: an error naming the
/// datasets that failed or were interrupted (with how to continue those) and what the report
/// holds, or, when every requested dataset was missing, one that points at `--data-dir`.
pub fn bench_outcome(report: &BenchReport, data_dir: &std::path::Path) -> Result<()> {
    let names = |list: &[SkippedDataset]| {
        list.iter()
            .map(|k| k.dataset.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut problems = Vec::new();
    if !report.failed.is_empty() {
        problems.push(format!("{} failed (see above)", names(&report.failed)));
    }
    if !report.interrupted.is_empty() {
        problems.push(format!(
            "{} interrupted, checkpointed: to continue, run the same command again with \
             --resume (in place of --overwrite, if it had that), which also runs the datasets \
             that did not start",
            names(&report.interrupted)
        ));
    }
    if !problems.is_empty() {
        let finished: Vec<&str> = report
            .results
            .iter()
            .chain(&report.earlier)
            .map(|r| r.dataset.as_str())
            .collect();
        let holds = if finished.is_empty() {
            "it has no finished dataset".to_string()
        } else {
            format!("it lists the finished ones ({})", finished.join(", "))
        };
        bail!("{}; {BENCH_MD} is written: {holds}", problems.join("; "));
    }
    if report.results.is_empty() {
        // A mistyped --data-dir skips everything: that is not a benchmark that ran.
        bail!(
            "no dataset ran: every one requested was missing (see the `skipped` lines above for \
             the download commands, or check --data-dir {})",
            data_dir.display()
        );
    }
    Ok(())
}

/// An error naming the tabular datasets of a reproduction that failed (after its report was
/// written).
fn failed_datasets(failed: &[SkippedDataset]) -> Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = failed.iter().map(|k| k.dataset.as_str()).collect();
    bail!(
        "tabular: {} failed (see above); the report lists the others",
        names.join(", ")
    )
}

/// Runs `reproduce`. Every argument is checked before `--overwrite` removes anything.
pub fn reproduce(args: &ReproduceArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let mut opts = if args.quick {
        ReproduceOptions::quick(args.out.clone(), args.data_dir.clone(), device)
    } else {
        budget_from_minutes(args.minutes)?;
        ReproduceOptions::full(
            args.out.clone(),
            args.data_dir.clone(),
            device,
            args.minutes,
        )
    };
    opts.progress = !args.no_progress;
    opts.resume = args.resume;
    opts.images.datasets = if args.no_images {
        Vec::new()
    } else {
        parse_image_datasets(&args.image_datasets)?
    };
    if let Some(dir) = &args.vae_data_dir {
        opts.vae.data_dir = dir.clone();
        opts.vae.fallback_roots = vec![args.data_dir.clone()];
    }
    opts.vae.datasets = if args.no_vae {
        Vec::new()
    } else {
        parse_vae_datasets(&args.vae_datasets)?
    };
    if args.out.exists() && !args.out.is_dir() {
        bail!("--out {} is not a folder", args.out.display());
    }
    // Ctrl-C pauses the run in progress, checkpointed (a second one quits at once).
    opts.interrupt = Some(
        cpflow::cli::Interrupt::install_with_message(
            "interrupted: stopping the reproduction after the training step or evaluation \
             chunk in progress (a toy or OT run finishes first); what is done is kept for \
             --resume; interrupt again to quit now",
        )?
        .flag(),
    );
    // Only now, with the run sure to start: a typo above must not cost the old reproduction.
    if args.overwrite {
        remove_reproduction(&args.out)?;
    }
    let report = run_reproduce(&opts)?;
    println!(
        "wrote {} ({:.0} s)",
        args.out.join(REPORT_MD).display(),
        report.wall_time_s
    );
    failed_datasets(&report.tabular.failed)
}

/// Runs `download` for one dataset or all of them.
pub fn download(args: &DownloadArgs) -> Result<()> {
    let opts = DownloadOptions {
        dir: args.dir.clone(),
        mirror: mirror_base(args.mirror.as_deref()),
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
                // The error names the dataset already.
                tracing::error!("{e:#}");
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
        Command::BenchTabular(args) => bench_tabular(args),
        Command::Reproduce(args) => reproduce(args),
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
            let args = ["xtask", "bench-tabular"].iter().chain(extra).copied();
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::BenchTabular(b) => {
                    let m = b.model;
                    (m.arch, m.blocks, m.width, m.depth)
                }
                _ => panic!("not bench-tabular"),
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

    /// `--resume` and `--overwrite` exclude each other; without either, checkpoints of
    /// earlier runs in `--out` stop the command before it reads any data.
    #[test]
    fn bench_tabular_keeps_earlier_runs_unless_told() {
        let parse = |extra: &[&str]| {
            let args = ["xtask", "bench-tabular"].iter().chain(extra).copied();
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::BenchTabular(b) => b,
                _ => panic!("not bench-tabular"),
            })
        };
        assert!(parse(&["--resume", "--overwrite"]).is_err());
        let out = tempfile::tempdir().unwrap();
        let ckpt = out
            .path()
            .join("power")
            .join(crate::bench_resume::CHECKPOINT_FILE);
        std::fs::create_dir_all(ckpt.parent().unwrap()).unwrap();
        std::fs::write(&ckpt, b"x").unwrap();
        let empty = tempfile::tempdir().unwrap();
        let dirs = [
            "--datasets",
            "power",
            "--out",
            out.path().to_str().unwrap(),
            "--data-dir",
            empty.path().to_str().unwrap(),
            "--no-progress",
        ];
        let refused = bench_tabular(&parse(&dirs).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("--resume") && refused.contains(&ckpt.display().to_string()),
            "{refused}"
        );
        // Told to, it goes on (and fails only because the data are not there).
        for flag in ["--resume", "--overwrite"] {
            let args: Vec<&str> = dirs.iter().copied().chain([flag]).collect();
            let e = bench_tabular(&parse(&args).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("no dataset ran"), "{flag}: {e}");
        }
        // Another dataset's checkpoint does not stop a run of this one.
        let args: Vec<&str> = dirs
            .iter()
            .map(|&a| if a == "power" { "gas" } else { a })
            .collect();
        let e = bench_tabular(&parse(&args).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no dataset ran"), "{e}");
    }

    #[test]
    fn an_empty_mirror_means_no_mirror() {
        // `CPFLOW_DATA_MIRROR=` (set but empty) used to make every URL `/maf/data.tar.gz`.
        assert_eq!(mirror_base(Some("")), None);
        assert_eq!(mirror_base(Some("  ")), None);
        assert_eq!(mirror_base(None), None);
        assert_eq!(
            mirror_base(Some(" http://127.0.0.1:9/m ")).as_deref(),
            Some("http://127.0.0.1:9/m")
        );
    }

    #[test]
    fn bad_device_and_bad_dataset_are_errors() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(parse_device("tpu").is_err());
        assert!(parse_datasets("power,imagenet").is_err());
        assert!(parse_datasets("").is_err());
    }
}
