//! Why a download failed ([`crate::fetch::fetch`]), and messages that say what to do about it.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::checksum::{Checksum, Mismatch};
use crate::fetch::{local_file, part_path};

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
    /// A `file://` URL (a mirror directory) names no file that can be read; the detail says
    /// why.
    NoLocalFile(String),
    /// An `https://` URL (or a redirect to one), and this build of xtask has no TLS: it was
    /// built without its `tls` feature, which the `cargo xtask` alias turns on.
    NoTls,
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
            UrlFailure::NoLocalFile(e) => write!(f, "not in the mirror directory ({e})"),
            UrlFailure::NoTls => f.write_str(
                "HTTPS needs TLS, and this xtask was built without its `tls` feature: run it as \
                 `cargo xtask ...` (the alias turns the feature on) or build it with \
                 `--features tls`",
            ),
        }
    }
}

impl UrlFailure {
    /// A status a later try may not get (rate limits, timeouts, server errors).
    pub(crate) fn is_transient_status(&self) -> bool {
        matches!(self, UrlFailure::Status(408 | 429 | 500..=599))
    }
}

/// Where the bytes that failed their checksum came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MismatchOrigin {
    /// Downloaded from `url` by this run; `continued_part`: the download continued a `.part`
    /// file (an earlier run's, or one of this run's transfers that broke off), so its bytes
    /// came from more than one response and the joint may be what differs;
    /// `retried_from_scratch`: a first download that continued a partial file did not match
    /// either, and these bytes are those of the whole file downloaded again from the start.
    Download {
        /// The URL.
        url: String,
        /// Whether the bytes were pieced together from a partial file and a ranged response.
        continued_part: bool,
        /// Whether this is the download from scratch that followed a mismatching continued
        /// one ([`crate::fetch::fetch`] tries it once, by itself).
        retried_from_scratch: bool,
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
    #[error("{}", mismatch_message(origin, dest, *recorded, mismatch))]
    ChecksumMismatch {
        /// Where the bytes came from.
        origin: MismatchOrigin,
        /// Where the file belongs.
        dest: PathBuf,
        /// Whether the checksum it was held to was only recorded locally on first download
        /// ([`Checksum::RecordedSha256`]), not published: the message tells them apart.
        recorded: bool,
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
                matches!(f, UrlFailure::NoAnswer(_) | UrlFailure::NoLocalFile(_))
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
    let not_in_dir: Vec<String> = failures
        .iter()
        .filter(|(_, f)| matches!(f, UrlFailure::NoLocalFile(_)))
        .filter_map(|(u, _)| local_file(u))
        .map(|p| p.display().to_string())
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
    if !not_in_dir.is_empty() {
        let _ = write!(
            s,
            "\n  A mirror directory holds each file at the path `cargo xtask download --help` \
             lists: put it at {}, or {by_hand}.",
            not_in_dir.join(" or ")
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
/// depends on where the bytes came from, and on whether the checksum is published.
fn mismatch_message(
    origin: &MismatchOrigin,
    dest: &Path,
    recorded: bool,
    mismatch: &Mismatch,
) -> String {
    if recorded {
        return recorded_mismatch_message(origin, dest, mismatch);
    }
    let file = file_name(dest);
    match origin {
        MismatchOrigin::Download {
            url,
            continued_part: false,
            retried_from_scratch: false,
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
            continued_part,
            retried_from_scratch: true,
        } => format!(
            "{file} from {url}: {mismatch}. A download that continued a partial file did not \
             match the published checksum, so the partial file was deleted and the whole file \
             downloaded again from the start{}: that does not match either, so the source \
             serves other bytes than the published ones and nothing was kept at {}. Use \
             another source (`--mirror URL`), or place a good copy at {} by hand (it is \
             verified like a download); if {url} is the official source, its file may have \
             changed: please report it",
            if *continued_part {
                " (it broke off and was continued too)"
            } else {
                ""
            },
            dest.display(),
            dest.display()
        ),
        MismatchOrigin::Download {
            url,
            continued_part: true,
            retried_from_scratch: false,
        } => format!(
            "{file} from {url}: {mismatch}. The download continued a partial file, which may \
             be what differs: it was deleted and nothing was kept at {}, so running the \
             command again downloads the whole file afresh. If that fails the same way, the \
             source serves other bytes than the published ones: use another source (`--mirror \
             URL`), or place a good copy at {} by hand",
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

/// [`mismatch_message`] for a checksum that nobody published: the sha256 recorded in
/// `.downloads/SHA256SUMS` when the file was first downloaded. Either side may be the bad one,
/// and placing a copy by hand does not help while the record stands: the way out is `--force`.
fn recorded_mismatch_message(origin: &MismatchOrigin, dest: &Path, mismatch: &Mismatch) -> String {
    let file = file_name(dest);
    let record = dest.with_file_name(SHA256_RECORD);
    let why = format!(
        "No checksum is published for {file}: the sha256 it was checked against was recorded \
         in {} when it was first downloaded, so it vouches only for what that download \
         delivered",
        record.display()
    );
    let force = "If that first download was bad (e.g. a loader cannot read the files installed \
                 from it), run the download again with `--force`: it forgets the recorded \
                 sha256 and the cached copy and downloads afresh (a copy placed by hand after \
                 that is accepted, checked, and recorded in its place)";
    match origin {
        MismatchOrigin::Download {
            url,
            continued_part,
            retried_from_scratch,
        } => format!(
            "{file} from {url}: {mismatch}. {why}; nothing was kept at {}{}. {force}",
            dest.display(),
            if *continued_part && !*retried_from_scratch {
                " (the download continued a partial file, which may be what differs: running \
                 the command again downloads the whole file afresh)"
            } else {
                ""
            }
        ),
        MismatchOrigin::OnDisk { moved_to } => format!(
            "{file} at {}: {mismatch}; it was moved to {} (kept for inspection) and nothing \
             was installed from it. {why}. Run the command again to download it (it is \
             checked against that record). {force}",
            dest.display(),
            moved_to.display()
        ),
    }
}

/// Name of the file in `<dir>/.downloads/` that records the sha256 of each download that had
/// no published checksum (`<sha256>  <name>` lines).
pub const SHA256_RECORD: &str = "SHA256SUMS";

pub(crate) fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
