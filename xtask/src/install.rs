//! `cargo xtask download`: fetch, verify and lay out one dataset under the data directory.
//!
//! Downloads are cached in `<dir>/.downloads/` (the MAF archive serves three datasets). A
//! file without a published checksum is accepted with a warning once the files extracted from
//! it pass their loader's check (below), and its sha256 is then appended to
//! `<dir>/.downloads/SHA256SUMS`; later runs verify against that record
//! ([`Checksum::RecordedSha256`], whose mismatch messages say it was recorded, not published). An archive whose
//! every member is checked against published sums (BSDS300's images,
//! [`crate::registry::Extract::verifies_members`]) is verified by that check instead: no
//! warning, and no sha256 of the archive is computed or recorded
//! ([`crate::checksum::Checksum::OfMembers`]).
//!
//! Nothing is installed from an archive that cannot be read to its end. One that cannot be
//! (truncated, corrupt, or without the expected members) is not kept either: a fresh
//! download is deleted, a file that was already in the cache is moved to `<file>.bad`, and
//! any sha256 recorded for it is forgotten, so that the next run downloads it afresh instead
//! of trusting it again.
//!
//! A plan's files are extracted into `<dir>/.downloads/<dataset>.staging/` and read as their
//! loaders read them ([`crate::installed_check`]) before anything is installed or recorded:
//! an archive without a published checksum whose files fail is deleted from the cache and its
//! recorded sha256 forgotten (it was never vouched for), and nothing is installed. Only then
//! is a first download's sha256 recorded and are the files moved into place, and their sizes
//! recorded ([`crate::installed_sizes`]). An installed dataset is "already present" when its
//! files pass a cheap check ([`damaged_outputs`]: sizes as recorded, `.npy` headers that
//! announce the loader's shape and the file's size, text files' heads); `--verify` reads them
//! in full instead ([`unloadable_outputs`]). One whose files fail is installed again.
//!
//! `--force` starts over: the cached archives that have no published checksum are deleted and
//! their recorded sha256 forgotten ([`forget_unpublished`]), so they are downloaded afresh;
//! files with a published checksum stay cached and are verified against it.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use crate::checksum::{Checksum, Verified};
use crate::extract::{self, ExtractError};
use crate::fetch::{FetchError, FetchOptions, Fetched, agent, fetch, part_path};
pub use crate::fetch_error::SHA256_RECORD;
use crate::installed_check::{check_installed, check_loadable, check_loadable_as, loader_format};
use crate::installed_sizes::record_installed;
use crate::name_record::{recorded_values, without_names};
use crate::registry::{DatasetSpec, Mirror, Plan, Step};

/// Options of [`download_datasets`].
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// The data directory (loaders' root).
    pub dir: PathBuf,
    /// Mirror replacing every official URL: a base URL or a local directory (see
    /// [`crate::registry`]).
    pub mirror: Option<Mirror>,
    /// Transfer options.
    pub fetch: FetchOptions,
    /// Start over: forget the cached archives without a published checksum and their
    /// recorded sha256 ([`forget_unpublished`]), download them afresh and install again even
    /// if the dataset's files are present.
    pub force: bool,
    /// Read an installed dataset's files in full as its loaders do ([`unloadable_outputs`])
    /// before calling it installed, instead of the cheap check of their sizes and headers
    /// ([`damaged_outputs`]).
    pub verify: bool,
}

/// What [`download_datasets`] did for one dataset.
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

/// The sha256 recorded for `name` by an earlier unverified download.
pub fn recorded_sha256(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(cache_dir(dir).join(SHA256_RECORD)).ok()?;
    recorded_values(&text, name).next_back().map(str::to_string)
}

fn record_sha256(dir: &Path, name: &str, sha: &str) -> Result<()> {
    let path = cache_dir(dir).join(SHA256_RECORD);
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
    let path = cache_dir(dir).join(SHA256_RECORD);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(false);
    };
    let (kept, dropped) = without_names(&text, |n| n == name);
    if !dropped {
        return Ok(false);
    }
    extract::write_atomic(&path, kept.as_bytes())?;
    Ok(true)
}

/// Whether every output of `spec` exists under `dir`.
pub fn is_installed(spec: &DatasetSpec, dir: &Path) -> bool {
    spec.outputs.iter().all(|o| dir.join(o).is_file())
}

/// The installed outputs of `spec` that their loader cannot read, each read in full
/// ([`check_loadable`]), with what is wrong.
pub fn unloadable_outputs(spec: &DatasetSpec, dir: &Path) -> Vec<String> {
    spec.outputs
        .iter()
        .filter_map(|o| check_loadable(&dir.join(o), o).err())
        .map(|e| e.to_string())
        .collect()
}

/// The installed outputs of `spec` that fail the cheap check ([`check_installed`]: the size
/// recorded at install, a `.npy` file's header and size, a text file's head), with what is
/// wrong.
pub fn damaged_outputs(spec: &DatasetSpec, dir: &Path) -> Vec<String> {
    spec.outputs
        .iter()
        .filter_map(|o| check_installed(dir, o).err())
        .map(|e| e.to_string())
        .collect()
}

/// `--force`'s start over: deletes from the cache every archive of `spec` that has no
/// published checksum (and its `.part`), and forgets the sha256 recorded for it, so that it is
/// downloaded afresh. Archives held to a published checksum, or whose members are (BSDS300),
/// are kept: they are verified again anyway. Returns the names of the files deleted or
/// forgotten.
pub fn forget_unpublished(spec: &DatasetSpec, dir: &Path) -> Result<Vec<String>> {
    let mut dropped = Vec::new();
    for step in spec.plans.iter().flat_map(|p| &p.steps) {
        let a = &step.artifact;
        if published_checksum(step).is_some() {
            continue;
        }
        let cache = cache_dir(dir).join(&a.cache_name);
        let mut any = forget_sha256(dir, &a.cache_name)?;
        for f in [cache.clone(), part_path(&cache)] {
            match std::fs::remove_file(&f) {
                Ok(()) => any = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot delete {}", f.display())),
            }
        }
        if any && !dropped.contains(&a.cache_name) {
            dropped.push(a.cache_name.clone());
        }
    }
    Ok(dropped)
}

/// What one step delivered into the staging directory.
struct StepDone {
    /// The cached download.
    cache_name: String,
    /// Where it came from, and how it was verified.
    fetched: Fetched,
    /// What it was held to.
    checksum: Checksum,
    /// The files it extracted, relative to the data directory.
    files: Vec<String>,
}

/// The checksum published for `step`'s download: its own, or [`Checksum::OfMembers`] for an
/// archive whose members are each checked against published sums; `None` when nothing is
/// published (it is then held to the sha256 recorded on its first download, if any).
fn published_checksum(step: &Step) -> Option<Checksum> {
    match &step.artifact.checksum {
        // Verified by its content: no sha256 of the archive itself is computed, recorded or
        // required (a copy compressed otherwise holds the same members).
        Checksum::Unknown if step.extract.verifies_members() => Some(Checksum::OfMembers),
        Checksum::Unknown => None,
        c => Some(c.clone()),
    }
}

/// Fetches (or takes from the cache) and verifies one artifact, and extracts it into
/// `staging`.
fn run_step(
    step: &Step,
    opts: &DownloadOptions,
    agent: &ureq::Agent,
    staging: &Path,
) -> Result<StepDone, StepError> {
    let a = &step.artifact;
    let cache = cache_dir(&opts.dir).join(&a.cache_name);
    let checksum = published_checksum(step).unwrap_or_else(|| {
        recorded_sha256(&opts.dir, &a.cache_name)
            .map_or(Checksum::Unknown, Checksum::RecordedSha256)
    });
    tracing::info!("{}: {} ({})", a.cache_name, checksum, a.approx_size);
    let fetched = fetch(
        agent,
        &a.urls_with(opts.mirror.as_ref()),
        &cache,
        &checksum,
        &opts.fetch,
    )
    .map_err(StepError::Fetch)?;
    // A truncated or corrupt archive must neither stay in the cache nor have any of its
    // members installed (the staging directory is removed on every error); a file that
    // cannot be written is not the archive's fault.
    let files = extract::extract(&cache, &step.extract, staging).map_err(|e| match e {
        ExtractError::Unusable(e) => {
            StepError::Other(discard_unusable(e, &fetched, &cache, opts, &a.cache_name))
        }
        ExtractError::Unwritten(e) => StepError::Other(e),
    })?;
    Ok(StepDone {
        cache_name: a.cache_name.clone(),
        fetched,
        checksum,
        files,
    })
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
            cache_dir(&opts.dir).join(SHA256_RECORD).display()
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
    /// A file without a published checksum that was taken from the cache (an earlier
    /// download) held files its loader cannot read: it was deleted and its record forgotten,
    /// so running the plan again downloads it afresh.
    DroppedCached(anyhow::Error),
}

fn run_plan(
    spec: &DatasetSpec,
    plan: &Plan,
    opts: &DownloadOptions,
    agent: &ureq::Agent,
) -> Result<Outcome, StepError> {
    let staging = cache_dir(&opts.dir).join(format!("{}.staging", spec.name));
    let fresh_staging = || -> Result<()> {
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .with_context(|| format!("cannot remove {}", staging.display()))?;
        }
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("cannot create {}", staging.display()))
    };
    fresh_staging().map_err(StepError::Other)?;
    let result = stage_plan(plan, opts, agent, &staging).and_then(|done| {
        check_staged(&done, opts, &staging)?;
        install_staged(&done, opts, &staging).map_err(StepError::Other)?;
        Ok(done)
    });
    let _ = std::fs::remove_dir_all(&staging);
    let done = result?;
    Ok(Outcome::Installed {
        source: plan.source,
        unverified: done
            .into_iter()
            .filter_map(|d| match d.fetched.verified() {
                Verified::Unverified { sha256 } => Some((d.cache_name, sha256.clone())),
                _ => None,
            })
            .collect(),
    })
}

/// Runs every step of `plan` into `staging`.
fn stage_plan(
    plan: &Plan,
    opts: &DownloadOptions,
    agent: &ureq::Agent,
    staging: &Path,
) -> Result<Vec<StepDone>, StepError> {
    plan.steps
        .iter()
        .map(|step| run_step(step, opts, agent, staging))
        .collect()
}

/// Reads each staged file as its loader does. A file that fails means its archive is not the
/// dataset: one without a published checksum is deleted from the cache and its recorded sha256
/// forgotten (nothing vouched for it); one with a published checksum is kept (the check, or
/// the publisher's file, is then what is wrong).
fn check_staged(
    done: &[StepDone],
    opts: &DownloadOptions,
    staging: &Path,
) -> Result<(), StepError> {
    for d in done {
        for rel in &d.files {
            // Named where it belongs, not as its staging copy.
            let reading = reading_spinner(opts.fetch.progress, rel, &staging.join(rel));
            let checked = check_loadable_as(&staging.join(rel), rel, &opts.dir.join(rel));
            reading.finish_and_clear();
            let Err(bad) = checked else {
                continue;
            };
            let from = match &d.fetched {
                Fetched::Downloaded { url, .. } => format!("downloaded from {url}"),
                Fetched::AlreadyPresent(_) => "found in the cache".to_string(),
            };
            if d.checksum.is_published() {
                return Err(StepError::Other(anyhow!(
                    "{bad}. It was extracted from {} ({from}), which matches its published \
                     checksum ({}), so it was kept; nothing was installed. Please report it",
                    d.cache_name,
                    d.checksum
                )));
            }
            let cache = cache_dir(&opts.dir).join(&d.cache_name);
            let deleted = match std::fs::remove_file(&cache) {
                Ok(()) => format!("{} was deleted from the cache", d.cache_name),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => format!("{} could not be deleted ({e}): delete it", cache.display()),
            };
            let record = cache_dir(&opts.dir).join(SHA256_RECORD);
            let forgot = match (&d.checksum, forget_sha256(&opts.dir, &d.cache_name)) {
                (_, Err(e)) => format!(
                    "; its sha256 could not be removed from {} ({e:#}): remove its line",
                    record.display()
                ),
                (Checksum::RecordedSha256(_), Ok(_)) => format!(
                    " and the sha256 recorded for it on first download forgotten (in {})",
                    record.display()
                ),
                _ => " (its sha256 was not recorded)".to_string(),
            };
            let e = anyhow!(
                "{bad}. It was extracted from {} ({from}), which has no published checksum: \
                 nothing was installed, {deleted}{forgot}",
                d.cache_name
            );
            return Err(match d.fetched {
                Fetched::AlreadyPresent(_) => StepError::DroppedCached(e),
                Fetched::Downloaded { .. } => StepError::Other(anyhow!(
                    "{e}. The source served a file that is not the dataset: use another source \
                     (`--mirror`), or run the command again if the download may have been \
                     altered on the way"
                )),
            });
        }
    }
    Ok(())
}

/// A spinner saying that `rel` (its staged copy at `path`) is read in full as its loader reads
/// it (seconds for the large text files); hidden without `progress`.
fn reading_spinner(progress: bool, rel: &str, path: &Path) -> indicatif::ProgressBar {
    if !progress || loader_format(rel).is_none() {
        return indicatif::ProgressBar::hidden();
    }
    let mb = std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1e6);
    let bar = indicatif::ProgressBar::new_spinner()
        .with_message(format!("reading {rel} ({mb:.0} MB) as its loader does"));
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Records the sha256 of first downloads, then moves the staged files into the data
/// directory (each rename is atomic).
fn install_staged(done: &[StepDone], opts: &DownloadOptions, staging: &Path) -> Result<()> {
    for d in done {
        if let Verified::Unverified { sha256 } = d.fetched.verified() {
            tracing::warn!(
                "{}: no published checksum to verify against; its files pass their loader's \
                 check; computed sha256 {sha256} (recorded in {}; `--force` forgets it)",
                d.cache_name,
                cache_dir(&opts.dir).join(SHA256_RECORD).display()
            );
            record_sha256(&opts.dir, &d.cache_name, sha256)?;
        }
    }
    let files: Vec<String> = done.iter().flat_map(|d| d.files.clone()).collect();
    for rel in &files {
        let to = opts.dir.join(rel);
        extract::place(&staging.join(rel), &to)
            .with_context(|| format!("cannot install {}", to.display()))?;
    }
    // What a later `download` compares the installed files with.
    record_installed(&opts.dir, &files)
}

/// Fetches, verifies and extracts each of `specs` into `opts.dir`, in order. Every error
/// names its dataset. With `force`, the start over ([`forget_unpublished`]) is done once for
/// all of them first (the MAF archive, shared by three datasets, is downloaded once).
///
/// Sources are tried in order while they do not deliver a file (no answer, an HTTP error, a
/// transfer that keeps breaking off); a checksum mismatch or a bad archive stops at once.
pub fn download_datasets(specs: &[DatasetSpec], opts: &DownloadOptions) -> Vec<Result<Outcome>> {
    let started_over: Vec<Result<()>> = specs
        .iter()
        .map(|spec| {
            if !opts.force {
                return Ok(());
            }
            let dropped = forget_unpublished(spec, &opts.dir)
                .with_context(|| format!("{}: --force could not start over", spec.name))?;
            if !dropped.is_empty() {
                tracing::info!(
                    "{}: --force: deleted the cached {} and forgot any sha256 recorded for it \
                     (no checksum is published): downloading afresh",
                    spec.name,
                    dropped.join(", ")
                );
            }
            Ok(())
        })
        .collect();
    specs
        .iter()
        .zip(started_over)
        .map(|(spec, ok)| ok.and_then(|()| install_dataset(spec, opts)))
        .collect()
}

fn install_dataset(spec: &DatasetSpec, opts: &DownloadOptions) -> Result<Outcome> {
    if !opts.force && is_installed(spec, &opts.dir) {
        let bad = if opts.verify {
            unloadable_outputs(spec, &opts.dir)
        } else {
            damaged_outputs(spec, &opts.dir)
        };
        if bad.is_empty() {
            return Ok(Outcome::AlreadyInstalled);
        }
        tracing::warn!(
            "{}: installed, but {}: installing it again",
            spec.name,
            bad.join("; ")
        );
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
        let mut result = run_plan(spec, plan, opts, &agent);
        if let Err(StepError::DroppedCached(e)) = &result {
            // The bad copy came from the cache, and is gone: download it afresh, once.
            tracing::warn!("{}: {e}: downloading it afresh", spec.name);
            result = run_plan(spec, plan, opts, &agent);
        }
        match result {
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
            Err(StepError::Other(e) | StepError::DroppedCached(e)) => {
                return Err(e.context(format!("installing {}", spec.name)));
            }
        }
    }
    Err(anyhow!(
        "{}: no source delivered it\n{}",
        spec.name,
        not_delivered.join("\n")
    ))
}
