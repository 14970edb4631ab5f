//! `cargo xtask download`: fetch, verify and lay out one dataset under the data directory.
//!
//! Downloads are cached in `<dir>/.downloads/` (the MAF archive serves three datasets). A
//! file without a published checksum is accepted with a warning and its sha256 is appended
//! to `<dir>/.downloads/SHA256SUMS`; later runs verify against that record. An archive whose
//! every member is checked against published sums (BSDS300's images,
//! [`crate::registry::Extract::verifies_members`]) is verified by that check instead: no
//! warning, and no sha256 of the archive is computed or recorded
//! ([`crate::checksum::Checksum::OfMembers`]).
//!
//! Every archive is read to its end before anything is extracted from it. One that cannot be
//! (truncated, corrupt, or without the expected members) is not kept: a fresh download is
//! deleted, a file that was already in the cache is moved to `<file>.bad`, and any sha256
//! recorded for it is forgotten, so that the next run downloads it afresh instead of
//! trusting it again.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use crate::checksum::{Checksum, Verified};
use crate::extract::{self, Output};
use crate::fetch::{FetchError, FetchOptions, Fetched, agent, fetch};
use crate::registry::{DatasetSpec, Plan, Step};

/// Options of [`download_dataset`].
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// The data directory (loaders' root).
    pub dir: PathBuf,
    /// Base URL replacing every official URL (see [`crate::registry`]).
    pub mirror: Option<String>,
    /// Transfer options.
    pub fetch: FetchOptions,
    /// Extract again even if the dataset's files are present.
    pub force: bool,
}

/// What [`download_dataset`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every output file was already there; nothing was fetched.
    AlreadyInstalled,
    /// Fetched (or taken from the cache) and extracted.
    Installed {
        /// The source that worked.
        source: &'static str,
        /// Files accepted without a published checksum: `(cache name, computed sha256)`.
        unverified: Vec<(String, String)>,
    },
}

/// `<dir>/.downloads`.
pub fn cache_dir(dir: &Path) -> PathBuf {
    dir.join(".downloads")
}

const RECORD: &str = "SHA256SUMS";

/// The sha256 recorded for `name` by an earlier unverified download.
pub fn recorded_sha256(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(cache_dir(dir).join(RECORD)).ok()?;
    text.lines()
        .filter_map(|l| l.split_once("  "))
        .filter(|(_, n)| n.trim() == name)
        .map(|(h, _)| h.trim().to_string())
        .next_back()
}

fn record_sha256(dir: &Path, name: &str, sha: &str) -> Result<()> {
    let path = cache_dir(dir).join(RECORD);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{sha}  {name}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Removes every sha256 recorded for `name` (one that was recorded for an unusable file).
fn forget_sha256(dir: &Path, name: &str) -> Result<bool> {
    let path = cache_dir(dir).join(RECORD);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(false);
    };
    let names = |l: &str| l.split_once("  ").is_some_and(|(_, n)| n.trim() == name);
    if !text.lines().any(names) {
        return Ok(false);
    }
    let kept: String = text
        .lines()
        .filter(|l| !names(l))
        .map(|l| format!("{l}\n"))
        .collect();
    extract::write_atomic(&path, kept.as_bytes())?;
    Ok(true)
}

/// Whether every output of `spec` exists under `dir`.
pub fn is_installed(spec: &DatasetSpec, dir: &Path) -> bool {
    spec.outputs.iter().all(|o| dir.join(o).is_file())
}

fn run_step(
    step: &Step,
    opts: &DownloadOptions,
    agent: &ureq::Agent,
    unverified: &mut Vec<(String, String)>,
) -> Result<(), StepError> {
    let a = &step.artifact;
    let cache = cache_dir(&opts.dir).join(&a.cache_name);
    // An archive whose members are each checked against published sums is verified by its
    // content: no sha256 of the archive itself is computed, recorded or required (a copy
    // compressed otherwise holds the same members).
    let checksum = match (&a.checksum, recorded_sha256(&opts.dir, &a.cache_name)) {
        (Checksum::Unknown, _) if step.extract.verifies_members() => Checksum::OfMembers,
        (Checksum::Unknown, Some(sha)) => Checksum::Sha256(sha),
        (c, _) => c.clone(),
    };
    tracing::info!("{}: {} ({})", a.cache_name, checksum, a.approx_size);
    let fetched = fetch(
        agent,
        &a.urls_with(opts.mirror.as_deref()),
        &cache,
        &checksum,
        &opts.fetch,
    )
    .map_err(StepError::Fetch)?;
    // Read the whole archive before extracting anything from it: a truncated or corrupt one
    // must neither leave some of its members installed nor stay in the cache.
    if let Err(e) = extract::extract(&cache, &step.extract, Output::Discard) {
        return Err(StepError::Other(discard_unusable(
            e,
            &fetched,
            &cache,
            opts,
            &a.cache_name,
        )));
    }
    if let Verified::Unverified { sha256 } = fetched.verified() {
        tracing::warn!(
            "{}: no published checksum to verify against; computed sha256 {sha256} \
             (recorded in {})",
            a.cache_name,
            cache_dir(&opts.dir).join(RECORD).display()
        );
        record_sha256(&opts.dir, &a.cache_name, sha256).map_err(StepError::Other)?;
        unverified.push((a.cache_name.clone(), sha256.clone()));
    }
    extract::extract(&cache, &step.extract, Output::Dir(&opts.dir)).map_err(StepError::Other)
}

/// An archive that cannot be read to its end: deletes a fresh download, moves a file that was
/// already in the cache (downloaded earlier, or placed by hand) to `<file>.bad`, forgets its
/// recorded sha256, and says to run the command again.
fn discard_unusable(
    e: anyhow::Error,
    fetched: &Fetched,
    cache: &Path,
    opts: &DownloadOptions,
    name: &str,
) -> anyhow::Error {
    let what = match fetched {
        Fetched::Downloaded { url, .. } => {
            let _ = std::fs::remove_file(cache);
            format!("the file downloaded from {url} was deleted")
        }
        Fetched::AlreadyPresent(_) => {
            let mut bad = cache.as_os_str().to_owned();
            bad.push(".bad");
            match std::fs::rename(cache, &bad) {
                Ok(()) => format!(
                    "the file in the cache was moved to {}",
                    Path::new(&bad).display()
                ),
                Err(err) => format!(
                    "the file in the cache could not be moved aside ({err}): delete {}",
                    cache.display()
                ),
            }
        }
    };
    let forgot = match forget_sha256(&opts.dir, name) {
        Ok(true) => " and the sha256 recorded for it forgotten".to_string(),
        Ok(false) => String::new(),
        Err(err) => format!(
            " (its recorded sha256 could not be removed from {}: {err:#})",
            cache_dir(&opts.dir).join(RECORD).display()
        ),
    };
    e.context(format!(
        "{name} is truncated or corrupt: nothing was extracted from it; {what}{forgot}. \
         Run the command again to download it afresh"
    ))
}

enum StepError {
    Fetch(FetchError),
    Other(anyhow::Error),
}

fn run_plan(
    plan: &Plan,
    opts: &DownloadOptions,
    agent: &ureq::Agent,
) -> Result<Outcome, StepError> {
    let mut unverified = Vec::new();
    for step in &plan.steps {
        run_step(step, opts, agent, &mut unverified)?;
    }
    Ok(Outcome::Installed {
        source: plan.source,
        unverified,
    })
}

/// Fetches, verifies and extracts one dataset into `opts.dir`. Every error names the
/// dataset.
///
/// Sources are tried in order while they do not deliver a file (no answer, an HTTP error, a
/// transfer that keeps breaking off); a checksum mismatch or a bad archive stops at once.
pub fn download_dataset(spec: &DatasetSpec, opts: &DownloadOptions) -> Result<Outcome> {
    if !opts.force && is_installed(spec, &opts.dir) {
        return Ok(Outcome::AlreadyInstalled);
    }
    std::fs::create_dir_all(cache_dir(&opts.dir)).with_context(|| {
        format!(
            "{}: cannot create {}",
            spec.name,
            cache_dir(&opts.dir).display()
        )
    })?;
    let agent = agent(&opts.fetch);
    let mut not_delivered = Vec::new();
    for (k, plan) in spec.plans.iter().enumerate() {
        match run_plan(plan, opts, &agent) {
            Ok(outcome) => return Ok(outcome),
            Err(StepError::Fetch(e @ FetchError::NotDownloaded { .. })) => {
                if k + 1 < spec.plans.len() {
                    tracing::warn!(
                        "{}: source {} did not deliver its files: trying the next source",
                        spec.name,
                        plan.source
                    );
                }
                // Placing files by hand is advised when a URL gave no answer or does not serve
                // the file: then say how many files the source has.
                let mut entry = format!("[{}] {e}", plan.source);
                if e.advises_by_hand() && plan.steps.len() > 1 {
                    let names: Vec<&str> = plan
                        .steps
                        .iter()
                        .map(|s| s.artifact.cache_name.as_str())
                        .collect();
                    let _ = write!(
                        entry,
                        "\n  This source has {} files ({}); placed by hand, each goes into {}.",
                        names.len(),
                        names.join(", "),
                        cache_dir(&opts.dir).display()
                    );
                }
                not_delivered.push(entry);
            }
            Err(StepError::Fetch(e)) => {
                return Err(anyhow!(e).context(format!("downloading {}", spec.name)));
            }
            Err(StepError::Other(e)) => return Err(e.context(format!("installing {}", spec.name))),
        }
    }
    Err(anyhow!(
        "{}: no source delivered it\n{}",
        spec.name,
        not_delivered.join("\n")
    ))
}
