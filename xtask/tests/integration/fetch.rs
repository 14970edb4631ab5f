//! The resumable, verified download against a local test server (no network).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{Route, TestServer, assert_ranges_and_statuses, bytes, tempdir, unused_port};
use xtask::checksum::{Checksum, Verified, sha256_bytes};
use xtask::fetch::{FetchError, FetchOptions, Fetched, MismatchOrigin, agent, fetch, part_path};

fn opts(retries: u32) -> FetchOptions {
    FetchOptions {
        retries,
        backoff: Duration::from_millis(1),
        progress: false,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
    }
}

fn server(path: &str, route: Route) -> TestServer {
    TestServer::start(HashMap::from([(path.to_string(), route)]))
}

/// Serves `route` at `/f.bin`: the server, the file's URL, and a fresh folder with the
/// destination `f.bin` in it.
fn serve_f_bin(route: Route) -> (TestServer, String, tempfile::TempDir, PathBuf) {
    let srv = server("/f.bin", route);
    let url = format!("{}/f.bin", srv.base);
    let dir = tempdir();
    let dest = dir.path().join("f.bin");
    (srv, url, dir, dest)
}

/// Fetches `url` alone into `dest`.
fn fetch_one(
    url: &str,
    dest: &Path,
    sum: &Checksum,
    o: &FetchOptions,
) -> Result<Fetched, FetchError> {
    fetch(&agent(o), &[url.to_string()], dest, sum, o)
}

/// The sha256 checksum of `body`.
fn sha256_of(body: &[u8]) -> Checksum {
    Checksum::sha256(&sha256_bytes(body))
}

const N: usize = 300_000;

#[test]
fn downloads_verifies_and_renames() {
    let body = bytes(N, 1);
    let (srv, url, dir, _) = serve_f_bin(Route::new(body.clone()));
    let dest = dir.path().join("sub/f.bin");
    let o = opts(0);
    let got = fetch_one(&url, &dest, &sha256_of(&body), &o).unwrap();
    assert!(matches!(
        got,
        Fetched::Downloaded {
            verified: Verified::Match,
            ..
        }
    ));
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!part_path(&dest).exists());
    // A second call finds the verified file and sends no request.
    let n = srv.requests().len();
    let again = fetch_one(&url, &dest, &sha256_of(&body), &o).unwrap();
    assert_eq!(again, Fetched::AlreadyPresent(Verified::Match));
    assert_eq!(srv.requests().len(), n);
}

#[test]
fn checksum_mismatch_keeps_nothing() {
    let body = bytes(N, 2);
    let (srv, url, _dir, dest) = serve_f_bin(Route::new(body));
    let o = opts(2);
    let wrong = sha256_of(b"something else");
    let err = fetch_one(&url, &dest, &wrong, &o).unwrap_err();
    assert!(matches!(err, FetchError::ChecksumMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("checksum mismatch"), "{msg}");
    // Running again would fetch the same bytes: the advice is another source or a copy by
    // hand, not "run the command again".
    assert!(
        msg.contains("does not match the published checksum")
            && msg.contains("--mirror")
            && msg.contains("by hand")
            && msg.contains("would fetch the same bytes"),
        "{msg}"
    );
    assert!(!msg.contains("Run the command again"), "{msg}");
    assert!(!dest.exists() && !part_path(&dest).exists());
    // Not retried: one request only.
    assert_eq!(srv.requests().len(), 1);
}

#[test]
fn truncated_transfer_is_resumed_with_a_range_request() {
    let body = bytes(N, 3);
    let (srv, url, _dir, dest) = serve_f_bin(Route::new(body.clone()).truncated(2, 100_000));
    let o = opts(3);
    fetch_one(&url, &dest, &sha256_of(&body), &o).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let seen = srv.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].range.as_deref(), Some("bytes=100000-"));
    assert_eq!(seen[1].status, 206);
    assert_eq!(seen[2].range.as_deref(), Some("bytes=200000-"));
}

#[test]
fn interrupted_download_resumes_on_the_next_run() {
    let body = bytes(N, 4);
    let (srv, url, _dir, dest) = serve_f_bin(Route::new(body.clone()).truncated(1, 123_456));
    let o = opts(0);
    let sum = sha256_of(&body);
    let err = fetch_one(&url, &dest, &sum, &o).unwrap_err();
    assert!(matches!(err, FetchError::NotDownloaded { .. }), "{err}");
    // The transfer broke off: not "offline", and the next run continues it.
    let msg = err.to_string();
    assert!(
        msg.contains("broke off")
            && msg.contains(&part_path(&dest).display().to_string())
            && !msg.contains("offline"),
        "{msg}"
    );
    // The partial bytes are kept under the .part name only.
    assert!(!dest.exists());
    assert_eq!(std::fs::metadata(part_path(&dest)).unwrap().len(), 123_456);
    fetch_one(&url, &dest, &sum, &o).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let seen = srv.requests();
    assert_eq!(seen[1].range.as_deref(), Some("bytes=123456-"));
}

#[test]
fn server_ignoring_ranges_is_read_from_the_start() {
    let body = bytes(N, 5);
    let mut route = Route::new(body.clone()).truncated(1, 50_000);
    route.ignore_range = true;
    let (srv, url, _dir, dest) = serve_f_bin(route);
    fetch_one(&url, &dest, &sha256_of(&body), &opts(1)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(srv.requests()[1].status, 200);
}

#[test]
fn unknown_checksum_reports_the_computed_sha256() {
    let body = bytes(1000, 6);
    let (_srv, url, _dir, dest) = serve_f_bin(Route::new(body.clone()));
    let got = fetch_one(&url, &dest, &Checksum::Unknown, &opts(0)).unwrap();
    assert_eq!(
        got.verified(),
        &Verified::Unverified {
            sha256: sha256_bytes(&body)
        }
    );
}

/// A file whose content the caller checks ([`Checksum::OfMembers`]) is downloaded and kept
/// as it is, unhashed: verified as deferred, downloaded or found.
#[test]
fn a_file_checked_by_its_members_is_not_hashed() {
    let body = bytes(1000, 15);
    let srv = server("/f.tgz", Route::new(body.clone()));
    let dir = tempdir();
    let dest = dir.path().join("f.tgz");
    let o = opts(0);
    let url = format!("{}/f.tgz", srv.base);
    let got = fetch_one(&url, &dest, &Checksum::OfMembers, &o).unwrap();
    assert_eq!(got.verified(), &Verified::Deferred);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let again = fetch_one(&url, &dest, &Checksum::OfMembers, &o).unwrap();
    assert_eq!(again, Fetched::AlreadyPresent(Verified::Deferred));
}

#[test]
fn falls_back_to_the_next_url_and_reports_unreachable_sources() {
    let body = bytes(1000, 7);
    let srv = server("/good.bin", Route::new(body.clone()));
    let dir = tempdir();
    let dest = dir.path().join("f.bin");
    let o = opts(1);
    let sum = sha256_of(&body);
    let urls = vec![
        format!("{}/missing.bin", srv.base),
        format!("{}/good.bin", srv.base),
    ];
    fetch(&agent(&o), &urls, &dest, &sum, &o).unwrap();
    // 404 is not retried.
    let seen = srv.requests();
    assert_eq!(
        seen.iter().filter(|s| s.status == 404).count(),
        1,
        "{seen:?}"
    );

    // Nothing listens on a port that was just released: the error says what to do by hand.
    let url = format!("http://127.0.0.1:{}/data.tar.gz", unused_port());
    let dest2 = dir.path().join("data.tar.gz");
    let err = fetch_one(&url, &dest2, &sum, &o).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FetchError::NotDownloaded { .. }), "{msg}");
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains(&dest2.display().to_string()), "{msg}");
    assert!(msg.contains("by hand") && msg.contains("offline"), "{msg}");
    assert!(msg.contains(&sha256_bytes(&body)), "{msg}");
}

/// A server that answers 404 was reached: the error says what it answered and advises
/// another source, not "offline" and not to download the missing URL by hand. A 500 is
/// retried, then reported as the server's error.
#[test]
fn an_http_error_is_not_reported_as_offline() {
    let srv = server("/broken.bin", Route::failing(500));
    let dir = tempdir();
    let dest = dir.path().join("f.bin");
    let o = opts(2);
    let sum = sha256_of(b"x");
    let missing = format!("{}/missing.bin", srv.base);
    let err = fetch_one(&missing, &dest, &sum, &o).unwrap_err();
    assert!(matches!(err, FetchError::NotDownloaded { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "{missing}: the server answered HTTP 404 Not Found"
        )) && msg.contains("--mirror"),
        "{msg}"
    );
    assert!(
        !msg.contains("offline") && !msg.contains("No answer"),
        "{msg}"
    );

    let broken = format!("{}/broken.bin", srv.base);
    let err = fetch_one(&broken, &dest, &sum, &o).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("HTTP 500") && msg.contains("try again later") && !msg.contains("offline"),
        "{msg}"
    );
    // Retried: one request and two more.
    let tries = srv
        .requests()
        .iter()
        .filter(|s| s.path == "/broken.bin")
        .count();
    assert_eq!(tries, 3);
}

#[test]
fn a_bad_file_on_disk_is_moved_aside_not_trusted() {
    let dir = tempdir();
    let dest = dir.path().join("f.bin");
    std::fs::write(&dest, b"tampered").unwrap();
    let sum = sha256_of(b"original");
    let err = fetch_one("http://127.0.0.1:9/unused", &dest, &sum, &opts(0)).unwrap_err();
    assert!(matches!(err, FetchError::ChecksumMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("f.bin.bad") && msg.contains("Run the command again to download it"),
        "{msg}"
    );
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read(dir.path().join("f.bin.bad")).unwrap(),
        b"tampered"
    );
}

/// An earlier run's partial file longer than the file: 416 for its range, so the `.part`
/// fails its checksum; it was pieced together, so it is deleted and the whole file
/// downloaded at once (the run used to fail, saying that running again would start afresh).
#[test]
fn a_stale_part_longer_than_the_file_is_discarded() {
    let body = bytes(10_000, 8);
    let (srv, url, _dir, dest) = serve_f_bin(Route::new(body.clone()));
    std::fs::write(part_path(&dest), bytes(20_000, 9)).unwrap();
    fetch_one(&url, &dest, &sha256_of(&body), &opts(0)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!part_path(&dest).exists());
    assert_ranges_and_statuses(&srv, &[(Some("bytes=20000-"), 416), (None, 200)]);
}

/// A whole-file transfer that broke off, then a 416 for its range (the server says the
/// partial file already holds everything, against the length it announced): the bytes were
/// vouched for by a ranged answer, so on a mismatch the file is downloaded whole once more,
/// which matches. (When a flag threaded through the transfers decided, only bytes appended
/// by a 206 counted as pieced: this was an error saying that the source serves other bytes.)
#[test]
fn a_range_refused_after_a_broken_transfer_is_downloaded_whole_once_more() {
    let body = bytes(N, 14);
    let mut route = Route::new(body.clone()).truncated(1, 100_000);
    route.refuse_ranges = true;
    let (srv, url, _dir, dest) = serve_f_bin(route);
    let got = fetch_one(&url, &dest, &sha256_of(&body), &opts(2));
    assert!(matches!(got, Ok(Fetched::Downloaded { .. })), "{got:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_ranges_and_statuses(
        &srv,
        &[(None, 200), (Some("bytes=100000-"), 416), (None, 200)],
    );
}

/// A transfer that broke off is continued with a range request whose answer is corrupt (the
/// server's ranged answers differ from its file): the pieced-together file fails its
/// checksum, so it is deleted and the whole file downloaded once more from the start, which
/// matches (it used to be an error telling the user to run the command again).
#[test]
fn a_corrupt_continued_download_is_downloaded_whole_once_more() {
    let body = bytes(N, 10);
    let mut route = Route::new(body.clone()).truncated(1, 100_000);
    route.corrupt_ranges = true;
    let (srv, url, _dir, dest) = serve_f_bin(route);
    let got = fetch_one(&url, &dest, &sha256_of(&body), &opts(2)).unwrap();
    assert!(matches!(got, Fetched::Downloaded { .. }), "{got:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!part_path(&dest).exists());
    assert_ranges_and_statuses(
        &srv,
        &[(None, 200), (Some("bytes=100000-"), 206), (None, 200)],
    );
}

/// An earlier run's partial file whose bytes differ from the file's (the tail the server
/// sends for its range is right): the whole file is downloaded once more, at once.
#[test]
fn an_earlier_runs_corrupt_part_is_replaced_by_a_whole_download() {
    let body = bytes(N, 11);
    let (srv, url, _dir, dest) = serve_f_bin(Route::new(body.clone()));
    std::fs::write(part_path(&dest), bytes(123_456, 12)).unwrap();
    fetch_one(&url, &dest, &sha256_of(&body), &opts(0)).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_ranges_and_statuses(&srv, &[(Some("bytes=123456-"), 206), (None, 200)]);
}

/// A source that serves other bytes than the published ones: the continued download fails
/// its checksum, the whole file is downloaded once more (once only), fails too, and the
/// error says so: the source is at fault, running again would fetch the same bytes.
#[test]
fn a_source_of_other_bytes_fails_after_one_download_from_scratch() {
    let body = bytes(N, 13);
    let (srv, url, _dir, dest) = serve_f_bin(Route::new(body).truncated(1, 100_000));
    let wrong = sha256_of(b"the published file");
    let err = fetch_one(&url, &dest, &wrong, &opts(2)).unwrap_err();
    match &err {
        FetchError::ChecksumMismatch {
            origin:
                MismatchOrigin::Download {
                    continued_part: false,
                    retried_from_scratch: true,
                    ..
                },
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("downloaded again from the start")
            && msg.contains("serves other bytes")
            && msg.contains("--mirror")
            && !msg.contains("running the command again downloads"),
        "{msg}"
    );
    assert!(!dest.exists() && !part_path(&dest).exists());
    assert_ranges_and_statuses(
        &srv,
        &[(None, 200), (Some("bytes=100000-"), 206), (None, 200)],
    );
}

/// Offline, a download fails at once: a refused connection and a name that does not resolve
/// (`.invalid` is reserved, RFC 2606) move on without the retries' backoff. With 4 retries
/// and a 60 s first pause, one retry would take a minute; both URLs together must take less
/// than 30 s (a DNS lookup that fails is fast, a refused connection immediate).
#[test]
fn unreachable_hosts_are_not_retried() {
    let urls = vec![
        format!("http://127.0.0.1:{}/f.bin", unused_port()),
        "http://cpflow-test-host.invalid/f.bin".to_string(),
    ];
    unreachable_without_waiting(&urls);
}

/// A URL that cannot even be sent (a mirror given with a typo: a space, a missing scheme) is
/// not a transient failure: it is not retried with backoff (it was: 30 s of waiting with the
/// default settings before the error).
#[test]
fn malformed_urls_are_not_retried() {
    let urls = vec![
        "http://127.0.0.1:9/my mirror/f.bin".to_string(),
        "/maf/data.tar.gz".to_string(),
    ];
    unreachable_without_waiting(&urls);
}

/// Fetching from `urls` (4 tries each, 60 s backoff) ends as unreachable in well under the
/// first backoff: nothing was retried with a wait.
fn unreachable_without_waiting(urls: &[String]) {
    let dir = tempdir();
    let mut o = opts(4);
    o.backoff = std::time::Duration::from_secs(60);
    let t = std::time::Instant::now();
    let err = fetch(
        &agent(&o),
        urls,
        &dir.path().join("f.bin"),
        &Checksum::Unknown,
        &o,
    )
    .unwrap_err();
    assert!(matches!(err, FetchError::NotDownloaded { .. }), "{err}");
    assert!(t.elapsed().as_secs() < 30, "took {:?}: {err}", t.elapsed());
}

/// Built without the `tls` feature (as `cargo test --workspace` builds xtask), an `https://`
/// URL fails at once with a message that says how to get TLS, and the next URL is tried.
/// The https URL points at the local plain-HTTP server, so nothing leaves this machine: the
/// TCP connection is made, and ureq refuses to send the request over it.
#[cfg(not(feature = "tls"))]
#[test]
fn an_https_url_without_the_tls_feature_says_how_to_get_it_and_the_next_url_is_tried() {
    use xtask::fetch::UrlFailure;
    let body = bytes(N, 11);
    let (srv, url, _dir, dest) = serve_f_bin(Route::new(body.clone()));
    let https = url.replacen("http://", "https://", 1);
    let o = opts(3);
    let err = fetch_one(&https, &dest, &sha256_of(&body), &o).unwrap_err();
    match &err {
        FetchError::NotDownloaded { failures, .. } => {
            assert_eq!(failures, &[(https.clone(), UrlFailure::NoTls)], "{err}");
        }
        other => panic!("{other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("`tls` feature") && msg.contains("cargo xtask"),
        "{msg}"
    );
    assert!(!err.advises_by_hand(), "{msg}");
    assert!(!dest.exists() && !part_path(&dest).exists());
    // Not retried (no try can work), and no HTTP request was sent.
    assert!(srv.requests().is_empty(), "{:?}", srv.requests());
    // A plain-HTTP URL after it delivers the file.
    let got = fetch(&agent(&o), &[https, url], &dest, &sha256_of(&body), &o).unwrap();
    assert!(matches!(got, Fetched::Downloaded { .. }), "{got:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

/// `cargo xtask` (the alias in .cargo/config.toml) builds xtask with its `tls` feature: the
/// official sources are `https://` URLs, which an xtask without it refuses (above).
#[test]
fn the_cargo_xtask_alias_turns_on_tls() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../.cargo/config.toml");
    let config = std::fs::read_to_string(path).unwrap();
    let alias = config
        .lines()
        .find(|l| l.trim_start().starts_with("xtask ="))
        .expect("the xtask alias");
    assert!(
        alias.contains("--package xtask") && alias.contains("--features tls"),
        "{alias}"
    );
}
