//! The runners of `cargo xtask download`, `bench-tabular` and `reproduce`: each turns its
//! parsed arguments into the library's options, runs it and reports the outcome.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use cpflow::datasets::TabularDataset;

use super::{BenchTabularArgs, DownloadArgs, DownloadName, ReproduceArgs};
use super::{budget_from_minutes, mirror_base, parse_device};
use crate::bench_report::{BENCH_MD, bench_table_markdown};
use crate::bench_resume::{TabularResume, existing_checkpoints};
use crate::bench_tabular::{
    BenchReport, BenchTabularOptions, SkipReason, SkippedDataset, default_fallback_roots,
    locate_dataset, parse_datasets, run_bench_tabular,
};
use crate::fetch::FetchOptions;
use crate::install::{DownloadOptions, Outcome, download_datasets};
use crate::registry::{DATASETS, find};
use crate::reproduce::{REPORT_MD, ReproduceOptions, run_reproduce};
use crate::reproduce_image::parse_image_datasets;
use crate::reproduce_resume::remove_reproduction;
use crate::reproduce_vae::parse_vae_datasets;
use crate::tabular_config::TabularBenchConfig;

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
    let fallback_roots = default_fallback_roots();
    refuse_when_no_dataset_is_on_disk(&datasets, &args.data_dir, &fallback_roots, &args.out)?;
    let opts = BenchTabularOptions {
        datasets,
        data_dir: args.data_dir.clone(),
        fallback_roots,
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

/// Refuses a `bench-tabular` run none of whose datasets is on disk, before anything is written:
/// it wrote an empty `bench-tabular.md` (and `.json`) and then failed. The error names each
/// dataset's `cargo xtask download` command and the folders searched. (A run with some of
/// them on disk goes on and skips the others with the same messages.)
fn refuse_when_no_dataset_is_on_disk(
    datasets: &[TabularDataset],
    data_dir: &std::path::Path,
    fallback_roots: &[std::path::PathBuf],
    out: &std::path::Path,
) -> Result<()> {
    let mut missing = Vec::new();
    for &ds in datasets {
        match locate_dataset(ds, data_dir, fallback_roots) {
            Ok(_) => return Ok(()),
            Err(message) => missing.push(message),
        }
    }
    bail!(
        "no dataset ran: none of the requested datasets is on disk, and nothing was written to \
         {}. {} (check --data-dir {})",
        out.display(),
        missing.join("; "),
        data_dir.display()
    )
}

/// The end of a `bench-tabular` run, once its report is written: an error naming the
/// datasets that failed or were interrupted (with how to continue those) and what the report
/// holds, or, when none ran, one that says the run was interrupted before its first dataset
/// on disk started, or, when every requested dataset was missing (a run of
/// [`run_bench_tabular`]; the command refuses it up front), one that points at `--data-dir`.
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
        // The command refuses a run with no dataset on disk before it starts, so there it
        // ends here only when an interrupt came before its first dataset on disk started.
        if report
            .skipped
            .iter()
            .any(|k| k.reason == SkipReason::NotStarted)
        {
            bail!(
                "no dataset ran: the run was interrupted before its first dataset on disk \
                 started (see the `skipped` lines above); nothing was trained or checkpointed"
            );
        }
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
        mirror: mirror_base(args.mirror.as_deref())?,
        fetch: FetchOptions {
            retries: args.retries,
            backoff: Duration::from_millis(args.retry_delay_ms),
            progress: !args.no_progress,
            ..FetchOptions::default()
        },
        force: args.force,
        verify: args.verify,
    };
    let names: Vec<&str> = match args.dataset {
        DownloadName::All => DATASETS.to_vec(),
        one => vec![DATASETS[one as usize]],
    };
    let specs = names
        .iter()
        .map(|name| find(name).with_context(|| format!("unknown dataset {name}")))
        .collect::<Result<Vec<_>>>()?;
    let mut failed = Vec::new();
    for (name, result) in names.iter().zip(download_datasets(&specs, &opts)) {
        match result {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_bench_tabular;

    /// `--resume` and `--overwrite` exclude each other; without either, checkpoints of
    /// earlier runs in `--out` stop the command before it reads any data.
    #[test]
    fn bench_tabular_keeps_earlier_runs_unless_told() {
        let parse = parse_bench_tabular;
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

    /// A run that an interrupt stopped before its first dataset on disk started says so; one
    /// whose every dataset was missing points at `--data-dir`. The outcomes are told apart by
    /// the skip's [`SkipReason`], not by its message: a missing dataset whose message reads
    /// like the interrupt's (a folder so named) is missing, and a dataset not started is so
    /// whatever its message says.
    #[test]
    fn bench_outcome_tells_an_interrupt_from_missing_data() {
        let mut report = BenchReport {
            results: Vec::new(),
            earlier: Vec::new(),
            skipped: vec![
                SkippedDataset::not_on_disk("power", "power: not found".into()),
                SkippedDataset::not_started("gas"),
            ],
            interrupted: Vec::new(),
            failed: Vec::new(),
            device: "cpu".into(),
            budget_minutes: None,
            wall_time_s: 0.0,
        };
        let dir = std::path::Path::new("/data");
        let interrupted = |report: &BenchReport| {
            let e = bench_outcome(report, dir).unwrap_err().to_string();
            e.starts_with("no dataset ran: the run was interrupted before")
                && !e.contains("missing")
        };
        let missing = |report: &BenchReport| {
            let e = bench_outcome(report, dir).unwrap_err().to_string();
            e.contains("every one requested was missing") && e.contains("--data-dir /data")
        };
        assert!(interrupted(&report));
        report.skipped[1].message = "gas: waited".into();
        assert!(interrupted(&report));
        report.skipped.pop();
        assert!(missing(&report));
        let lookalike = SkippedDataset::not_started("gas").message;
        report.skipped[0].message = format!("power: not found in /data/{lookalike}");
        assert!(missing(&report));
    }
}
