//! Resumable, verified, atomic download of one file.
//!
//! * Bytes go to `<dest>.part`; only a file that passed its checksum is renamed to `<dest>`
//!   (a rename within one directory is atomic), so a partial or corrupt download is never
//!   mistaken for a complete one.
//! * An interrupted transfer (connection closed before `Content-Length` bytes, timeout, 5xx)
//!   is retried with `Range: bytes=<len(.part)>-`, and so is a later run: the `.part` file
//!   survives. A server that ignores the range (answers 200) is read from the start again.
//!   A host that does not resolve or refuses the connection is not retried, nor is an HTTP
//!   status that says the file is not there (404, 403, ...): the next URL is tried at once.
//! * A checksum mismatch deletes the `.part` file (it cannot be resumed into a good file) and
//!   is an error; it is never retried from another URL. Its message tells a source that
//!   served other bytes (running again fetches the same: use another source) from a
//!   download that continued a partial file of an earlier run (running again starts afresh).
//! * When no URL delivered the file, the error says what each URL did (no answer, an HTTP
//!   status, a transfer that kept breaking off) and what to do about it: where to place the
//!   file by hand when offline, another source when a server does not serve it. A file placed
//!   by hand is verified like a downloaded one.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::checksum::{Checksum, Mismatch, Verified, verify};

/// Knobs of [`fetch`].
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Extra attempts per URL after a failed or interrupted transfer.
    pub retries: u32,
    /// Pause before the first retry; doubled after each further one.
    pub backoff: Duration,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for any single read.
    pub read_timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            retries: 4,
            backoff: Duration::from_secs(2),
            progress: true,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
        }
    }
}

/// Why one URL did not deliver the file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlFailure {
    /// No HTTP answer: the host did not resolve, refused the connection, or the URL cannot be
    /// sent (malformed).
    NoAnswer(String),
    /// The server answered with this HTTP error status (after the retries for 408, 429 and
    /// 5xx).
    Status(u16),
    /// The transfer kept breaking off (after the retries); the bytes received are kept in the
    /// `.part` file, which the next run continues.
    BrokeOff(String),
}

impl fmt::Display for UrlFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlFailure::NoAnswer(e) => write!(f, "no answer ({e})"),
            UrlFailure::Status(s) => {
                let reason = ureq::http::StatusCode::from_u16(*s)
                    .ok()
                    .and_then(|c| c.canonical_reason());
                match reason {
                    Some(r) => write!(f, "the server answered HTTP {s} {r}"),
                    None => write!(f, "the server answered HTTP {s}"),
                }
            }
            UrlFailure::BrokeOff(e) => write!(f, "the transfer broke off ({e})"),
        }
    }
}

impl UrlFailure {
    /// A status a later try may not get (rate limits, timeouts, server errors).
    fn is_transient_status(&self) -> bool {
        matches!(self, UrlFailure::Status(408 | 429 | 500..=599))
    }
}

/// Where the bytes that failed their checksum came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MismatchOrigin {
    /// Downloaded from `url` by this run; `continued_part`: the download continued a `.part`
    /// file that an earlier run left (its bytes may be what differs).
    Download {
        /// The URL.
        url: String,
        /// Whether an earlier run's partial file is part of the bytes.
        continued_part: bool,
    },
    /// The file that was already at the destination (placed by hand, or an earlier
    /// download), now moved aside to `moved_to`.
    OnDisk {
        /// Where it was moved (kept for inspection).
        moved_to: PathBuf,
    },
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No URL delivered the file (offline, a server that answers 404 or keeps failing, a
    /// transfer that keeps breaking off): what each URL did, and what to do about it.
    #[error("{}", not_downloaded_message(failures, dest, checksum))]
    NotDownloaded {
        /// Each URL tried, in order, with its last failure.
        failures: Vec<(String, UrlFailure)>,
        /// Where the file belongs.
        dest: PathBuf,
        /// The expected checksum.
        checksum: Checksum,
    },
    /// The downloaded (or hand-placed) file does not match its checksum.
    #[error("{}", mismatch_message(origin, dest, mismatch))]
    ChecksumMismatch {
        /// Where the bytes came from.
        origin: MismatchOrigin,
        /// Where the file belongs.
        dest: PathBuf,
        /// Expected vs computed.
        mismatch: Mismatch,
    },
    /// A local file could not be written or read.
    /// The OS's reason is part of the message; the field is not named `source`, which
    /// would make it `source()` too and print it twice in a chain.
    #[error("I/O error on {}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        cause: std::io::Error,
    },
}

impl FetchError {
    /// Whether the message advises placing the file by hand: a URL gave no answer (offline?)
    /// or answered that it does not serve the file.
    pub fn advises_by_hand(&self) -> bool {
        match self {
            FetchError::NotDownloaded { failures, .. } => failures.iter().any(|(_, f)| {
                matches!(f, UrlFailure::NoAnswer(_))
                    || matches!(f, UrlFailure::Status(_)) && !f.is_transient_status()
            }),
            _ => false,
        }
    }
}

/// The message of [`FetchError::NotDownloaded`]: one line per URL, then the advice that fits
/// what happened (a server's answer is not "offline").
fn not_downloaded_message(
    failures: &[(String, UrlFailure)],
    dest: &Path,
    checksum: &Checksum,
) -> String {
    let mut s = format!("could not download {} ({checksum})", file_name(dest));
    if failures.is_empty() {
        s.push_str(": no URL to try");
    }
    for (url, failure) in failures {
        let _ = write!(s, "\n  {url}: {failure}");
    }
    let no_answer: Vec<&str> = failures
        .iter()
        .filter(|(_, f)| matches!(f, UrlFailure::NoAnswer(_)))
        .map(|(u, _)| u.as_str())
        .collect();
    let refused: Vec<String> = failures
        .iter()
        .filter_map(|(_, f)| match f {
            UrlFailure::Status(s) if !f.is_transient_status() => Some(format!("HTTP {s}")),
            _ => None,
        })
        .collect();
    let transient = failures.iter().any(|(_, f)| f.is_transient_status());
    let broke_off = failures
        .iter()
        .any(|(_, f)| matches!(f, UrlFailure::BrokeOff(_)));
    let by_hand = format!(
        "place it at {} by hand (it is verified like a download), then run the command again",
        dest.display()
    );
    if !no_answer.is_empty() {
        let _ = write!(
            s,
            "\n  No answer from {}: if this machine is offline, download it on another machine \
             and {by_hand}.",
            no_answer.join(" or ")
        );
    }
    if !refused.is_empty() {
        let _ = write!(
            s,
            "\n  The server was reached but does not serve this file at that URL ({}): it may \
             have moved. Use another source (`--mirror URL`), or get the file elsewhere and \
             {by_hand}.",
            refused.join("; ")
        );
    }
    if transient {
        s.push_str(
            "\n  The server answered with an error on every attempt: try again later, or use \
             another source (`--mirror URL`).",
        );
    }
    if broke_off {
        let _ = write!(
            s,
            "\n  The bytes received are kept in {}: running the command again continues the \
             download where it stopped.",
            part_path(dest).display()
        );
    }
    s
}

/// The message of [`FetchError::ChecksumMismatch`]: what running the command again would do
/// depends on where the bytes came from.
fn mismatch_message(origin: &MismatchOrigin, dest: &Path, mismatch: &Mismatch) -> String {
    let file = file_name(dest);
    match origin {
        MismatchOrigin::Download {
            url,
            continued_part: false,
        } => format!(
            "{file} from {url}: {mismatch}. The source served a file that does not match the \
             published checksum, so nothing was kept at {}; running the command again would \
             fetch the same bytes. Use another source (`--mirror URL`), or place a good copy \
             at {} by hand (it is verified like a download); if {url} is the official source, \
             its file may have changed: please report it",
            dest.display(),
            dest.display()
        ),
        MismatchOrigin::Download {
            url,
            continued_part: true,
        } => format!(
            "{file} from {url}: {mismatch}. The download continued a partial file that an \
             earlier run left, which may be what differs: it was deleted and nothing was kept \
             at {}, so running the command again downloads the whole file afresh. If that \
             fails the same way, the source serves other bytes than the published ones: use \
             another source (`--mirror URL`), or place a good copy at {} by hand",
            dest.display(),
            dest.display()
        ),
        MismatchOrigin::OnDisk { moved_to } => format!(
            "{file} at {}: {mismatch}; it was moved to {} (kept for inspection) and nothing \
             was installed from it. Run the command again to download it, or place a good \
             copy at {} by hand",
            dest.display(),
            moved_to.display(),
            dest.display()
        ),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |cause| FetchError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The file was already there and verified (or its checksum is unknown).
    AlreadyPresent(Verified),
    /// Downloaded now from this URL.
    Downloaded {
        /// The URL that delivered the file.
        url: String,
        /// The checksum outcome.
        verified: Verified,
    },
}

impl Fetched {
    /// The checksum outcome.
    pub fn verified(&self) -> &Verified {
        match self {
            Fetched::AlreadyPresent(v) | Fetched::Downloaded { verified: v, .. } => v,
        }
    }
}

/// `<dest>.part`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// A blocking HTTP agent for [`fetch`]: status codes are handled by the caller, and no
/// content encoding is requested (so byte ranges refer to the file itself).
pub fn agent(opts: &FetchOptions) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .accept_encoding("identity")
        .user_agent(concat!("cpflow-xtask/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_per_read(Some(opts.read_timeout))
        .build()
        .into()
}

/// One attempt's failure: whether trying again (same URL) can help, or nothing can (a local
/// file that cannot be written).
enum Attempt {
    Retry(UrlFailure),
    GiveUpUrl(UrlFailure),
    Fatal(FetchError),
}

/// Downloads `urls` (first that works) to `dest`, verifying `checksum`.
///
/// ```no_run
/// use xtask::checksum::Checksum;
/// use xtask::fetch::{FetchOptions, agent, fetch};
/// let opts = FetchOptions::default();
/// fetch(&agent(&opts), &["https://example.org/f.bin".to_string()],
///       "data/f.bin".as_ref(), &Checksum::Unknown, &opts)?;
/// # Ok::<(), xtask::fetch::FetchError>(())
/// ```
pub fn fetch(
    agent: &ureq::Agent,
    urls: &[String],
    dest: &Path,
    checksum: &Checksum,
    opts: &FetchOptions,
) -> Result<Fetched, FetchError> {
    if dest.is_file() {
        return match verify(dest, checksum).map_err(io_err(dest))? {
            Ok(v) => Ok(Fetched::AlreadyPresent(v)),
            Err(mismatch) => {
                // Keep a hand-placed file for inspection: move it aside, do not delete it.
                let mut bad = dest.as_os_str().to_owned();
                bad.push(".bad");
                std::fs::rename(dest, &bad).map_err(io_err(dest))?;
                Err(FetchError::ChecksumMismatch {
                    origin: MismatchOrigin::OnDisk {
                        moved_to: PathBuf::from(bad),
                    },
                    dest: dest.to_path_buf(),
                    mismatch,
                })
            }
        };
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let part = part_path(dest);
    // Whether the bytes in `.part` include some that an earlier run left (until a transfer
    // starts the file over).
    let mut earlier_bytes = std::fs::metadata(&part).is_ok_and(|m| m.len() > 0);
    let mut failures = Vec::new();
    for url in urls {
        let mut delay = opts.backoff;
        let mut last = None;
        for attempt in 0..=opts.retries {
            if attempt > 0 {
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
            }
            match transfer(agent, url, &part, opts, &mut earlier_bytes) {
                Ok(()) => return finish(url, &part, dest, checksum, earlier_bytes),
                Err(Attempt::Retry(e)) => {
                    tracing::warn!(
                        "{url}: {e} (attempt {} of {})",
                        attempt + 1,
                        opts.retries + 1
                    );
                    last = Some(e);
                }
                Err(Attempt::GiveUpUrl(e)) => {
                    tracing::warn!("{url}: {e}");
                    last = Some(e);
                    break;
                }
                Err(Attempt::Fatal(e)) => return Err(e),
            }
        }
        if let Some(e) = last {
            failures.push((url.clone(), e));
        }
    }
    Err(FetchError::NotDownloaded {
        failures,
        dest: dest.to_path_buf(),
        checksum: checksum.clone(),
    })
}

/// Verifies the complete `.part` file and renames it into place.
fn finish(
    url: &str,
    part: &Path,
    dest: &Path,
    checksum: &Checksum,
    continued_part: bool,
) -> Result<Fetched, FetchError> {
    match verify(part, checksum).map_err(io_err(part))? {
        Ok(verified) => {
            std::fs::rename(part, dest).map_err(io_err(dest))?;
            Ok(Fetched::Downloaded {
                url: url.to_string(),
                verified,
            })
        }
        Err(mismatch) => {
            let _ = std::fs::remove_file(part);
            Err(FetchError::ChecksumMismatch {
                origin: MismatchOrigin::Download {
                    url: url.to_string(),
                    continued_part,
                },
                dest: dest.to_path_buf(),
                mismatch,
            })
        }
    }
}

/// Parses `Content-Range: bytes START-END/TOTAL` into `(START, TOTAL?)`.
fn content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// A request that got no response. A malformed URL, a host that does not resolve or refuses
/// the connection is not an interrupted transfer: it moves on to the next URL at once (offline, retrying with
/// backoff made every download wait ~30 s per URL before failing). Anything else (timeouts,
/// resets, TLS or protocol errors mid-way) is retried.
fn request_error(e: ureq::Error) -> Attempt {
    use std::io::ErrorKind;
    let unreachable = match &e {
        // `Http`: the request could not even be built (e.g. a space in the URL).
        ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::BadUri(_)
        | ureq::Error::Http(_) => true,
        ureq::Error::Io(io) => {
            matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::AddrNotAvailable
            ) || io.to_string().contains("failed to lookup address")
        }
        _ => false,
    };
    if unreachable {
        Attempt::GiveUpUrl(UrlFailure::NoAnswer(e.to_string()))
    } else {
        Attempt::Retry(UrlFailure::NoAnswer(e.to_string()))
    }
}

/// One HTTP exchange appending to (or restarting) `part`. `Ok` when the body was read
/// to its end. `earlier_bytes` is cleared when `part` is started over.
fn transfer(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    opts: &FetchOptions,
    earlier_bytes: &mut bool,
) -> Result<(), Attempt> {
    let offset = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = agent.get(url);
    if offset > 0 {
        req = req.header("Range", format!("bytes={offset}-"));
    }
    let resp = req.call().map_err(request_error)?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (start, total) = match status {
        200 => (0, header("content-length").and_then(|v| v.parse().ok())),
        206 => match header("content-range").as_deref().and_then(content_range) {
            Some((s, total)) if s == offset => (offset, total),
            _ => {
                // An unexpected range: start over without one.
                let _ = std::fs::remove_file(part);
                *earlier_bytes = false;
                return Err(Attempt::Retry(UrlFailure::BrokeOff(
                    "the server sent an unexpected byte range".into(),
                )));
            }
        },
        416 => {
            // The .part file is at least as long as the file: let the checksum decide.
            return Ok(());
        }
        408 | 429 | 500..=599 => return Err(Attempt::Retry(UrlFailure::Status(status))),
        _ => return Err(Attempt::GiveUpUrl(UrlFailure::Status(status))),
    };
    let cannot_write = |cause| {
        Attempt::Fatal(FetchError::Io {
            path: part.to_path_buf(),
            cause,
        })
    };
    let mut file = if start == 0 {
        *earlier_bytes = false;
        File::create(part)
    } else {
        OpenOptions::new().append(true).open(part)
    }
    .map_err(cannot_write)?;

    let bar = if opts.progress {
        match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner(),
        }
    } else {
        ProgressBar::hidden()
    };
    bar.set_message(file_name(part).trim_end_matches(".part").to_string());
    bar.set_position(start);

    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = file.flush();
                bar.abandon();
                return Err(Attempt::Retry(UrlFailure::BrokeOff(format!(
                    "after {} bytes: {e}",
                    bar.position()
                ))));
            }
        };
        file.write_all(&buf[..n]).map_err(cannot_write)?;
        bar.inc(n as u64);
    }
    file.sync_all().map_err(cannot_write)?;
    bar.finish_and_clear();
    if let Some(t) = total {
        let got = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if got < t {
            return Err(Attempt::Retry(UrlFailure::BrokeOff(format!(
                "it ended at {got} of {t} bytes"
            ))));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("items 1-2/3"), None);
    }

    #[test]
    fn part_path_appends_suffix() {
        assert_eq!(
            part_path(Path::new("/a/b.tar.gz")),
            PathBuf::from("/a/b.tar.gz.part")
        );
    }
}
