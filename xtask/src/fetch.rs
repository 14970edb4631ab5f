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
//! * A checksum mismatch deletes the `.part` file (it cannot be resumed into a good file).
//!   When the bytes were pieced together (a ranged request continued a partial file, this
//!   run's or an earlier one's, or was answered 416, nothing after it: the joint, or a
//!   server's ranged answer, may be what differs),
//!   the whole file is downloaded once more from the start, by itself; a mismatch of a whole
//!   download is an error, never retried from another URL. Its message says that the source
//!   serves other bytes (running again fetches the same: use another source).
//! * When no URL delivered the file, the error says what each URL did (no answer, an HTTP
//!   status, a transfer that kept breaking off) and what to do about it: where to place the
//!   file by hand when offline, another source when a server does not serve it. A file placed
//!   by hand is verified like a downloaded one.
//! * A `file://` URL (a local mirror directory, [`crate::registry::Mirror::Dir`]) is copied
//!   into the `.part` file from its start, then verified and renamed like a download; a file
//!   missing there is [`UrlFailure::NoLocalFile`], and the next URL is tried.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::checksum::{Checksum, Verified, verify};
use crate::fetch_error::file_name;
pub use crate::fetch_error::{FetchError, MismatchOrigin, UrlFailure};

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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |cause| FetchError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The file was already there and verified (or its checksum is unknown, or it is not
    /// checked here: [`Checksum::OfMembers`]).
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
                    recorded: checksum.is_recorded(),
                    mismatch,
                })
            }
        };
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let part = part_path(dest);
    match download(agent, urls, &part, dest, checksum, opts, false) {
        Err(FetchError::ChecksumMismatch {
            origin:
                MismatchOrigin::Download {
                    url,
                    continued_part: true,
                    ..
                },
            mismatch,
            ..
        }) => {
            // `finish` deleted the pieced-together file: download the whole file once more.
            tracing::warn!(
                "{}: {mismatch} after {url} continued a partial download; downloading the \
                 whole file again from the start",
                file_name(dest)
            );
            download(agent, urls, &part, dest, checksum, opts, true)
        }
        other => other,
    }
}

/// [`fetch`]'s transfers into `part` (first URL that works, each retried with ranged
/// requests) and its verification. The file is pieced together when the transfer that
/// completed it continued bytes already in `part` (this run's or an earlier one's): its
/// response started at an offset past 0. `retried_from_scratch`: this is the download from
/// the start that follows a mismatch of a continued one (told in a mismatch's message).
fn download(
    agent: &ureq::Agent,
    urls: &[String],
    part: &Path,
    dest: &Path,
    checksum: &Checksum,
    opts: &FetchOptions,
    retried_from_scratch: bool,
) -> Result<Fetched, FetchError> {
    let mut failures = Vec::new();
    for url in urls {
        if let Some(src) = local_file(url) {
            match copy_local(src, part) {
                Ok(()) => {
                    return finish(url, part, dest, checksum, false, retried_from_scratch);
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e) | Attempt::GiveUpUrl(e)) => {
                    tracing::warn!("{url}: {e}");
                    failures.push((url.clone(), e));
                    continue;
                }
            }
        }
        let mut delay = opts.backoff;
        let mut last = None;
        for attempt in 0..=opts.retries {
            if attempt > 0 {
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
            }
            match transfer(agent, url, part, opts) {
                Ok(start) => {
                    return finish(url, part, dest, checksum, start > 0, retried_from_scratch);
                }
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

/// The local file a `file://` URL names: the rest of the URL, taken as it is (such URLs are
/// built from a mirror directory's path by [`crate::registry::Artifact::urls_with`], which does
/// not percent-encode).
pub fn local_file(url: &str) -> Option<&Path> {
    url.strip_prefix("file://").map(Path::new)
}

/// Copies a file of a mirror directory to `part`, from its start (a copy is not resumed).
fn copy_local(src: &Path, part: &Path) -> Result<(), Attempt> {
    let mut from = match File::open(src) {
        Ok(f) if src.is_file() => f,
        Ok(_) => {
            return Err(Attempt::GiveUpUrl(UrlFailure::NoLocalFile(format!(
                "{} is not a file",
                src.display()
            ))));
        }
        Err(e) => {
            return Err(Attempt::GiveUpUrl(UrlFailure::NoLocalFile(format!(
                "{}: {e}",
                src.display()
            ))));
        }
    };
    let cannot_write = |cause| {
        Attempt::Fatal(FetchError::Io {
            path: part.to_path_buf(),
            cause,
        })
    };
    let mut to = File::create(part).map_err(cannot_write)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                return Err(Attempt::GiveUpUrl(UrlFailure::NoLocalFile(format!(
                    "reading {}: {e}",
                    src.display()
                ))));
            }
        };
        to.write_all(&buf[..n]).map_err(cannot_write)?;
    }
    to.sync_all().map_err(cannot_write)
}

/// Verifies the complete `.part` file and renames it into place; a mismatch is told with
/// `continued_part` and `retried_from_scratch` ([`MismatchOrigin::Download`]).
fn finish(
    url: &str,
    part: &Path,
    dest: &Path,
    checksum: &Checksum,
    continued_part: bool,
    retried_from_scratch: bool,
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
                    retried_from_scratch,
                },
                dest: dest.to_path_buf(),
                recorded: checksum.is_recorded(),
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
/// resets, TLS or protocol errors mid-way) is retried. An `https://` URL in an xtask built
/// without its `tls` feature ([`UrlFailure::NoTls`]) is not retried either.
fn request_error(e: ureq::Error) -> Attempt {
    use std::io::ErrorKind;
    if matches!(e, ureq::Error::TlsRequired) {
        // No TLS compiled in (the `tls` feature): no try of an https URL can work.
        return Attempt::GiveUpUrl(UrlFailure::NoTls);
    }
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
/// to its end, with the offset in `part` at which this response's bytes begin: 0 when it
/// sent the whole file (`part` started over), the length `part` had when a ranged response
/// continued it (206, or 416: nothing more to append, the bytes before are all there is).
fn transfer(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    opts: &FetchOptions,
) -> Result<u64, Attempt> {
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
                return Err(Attempt::Retry(UrlFailure::BrokeOff(
                    "the server sent an unexpected byte range".into(),
                )));
            }
        },
        416 => {
            // The .part file is at least as long as the file: let the checksum decide.
            return Ok(offset);
        }
        _ => {
            let failure = UrlFailure::Status(status);
            return Err(if failure.is_transient_status() {
                Attempt::Retry(failure)
            } else {
                Attempt::GiveUpUrl(failure)
            });
        }
    };
    let cannot_write = |cause| {
        Attempt::Fatal(FetchError::Io {
            path: part.to_path_buf(),
            cause,
        })
    };
    let mut file = if start == 0 {
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
    Ok(start)
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
