//! A tiny HTTP/1.1 file server on 127.0.0.1 for download tests: serves fabricated bytes,
//! honours `Range: bytes=N-`, and can cut responses short, ignore ranges or corrupt what it
//! sends for them. It answers with
//! `Connection: close`, handles one connection at a time, and stops when dropped or after
//! 120 s, whichever comes first. It never touches any other address.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a path is served.
#[derive(Clone, Debug)]
pub struct Route {
    pub body: Vec<u8>,
    /// The first `n` responses announce the full length but send only `at` bytes.
    pub truncate_first: usize,
    pub truncate_at: usize,
    /// Answer range requests with the whole file (status 200).
    pub ignore_range: bool,
    /// Answer range requests (206) with the requested tail's bytes inverted: a server whose
    /// ranged answers differ from its file, the right file to a request without a range.
    pub corrupt_ranges: bool,
    /// Answer every range request with 416 Range Not Satisfiable, as if the partial file
    /// already held the whole file (whatever its length).
    pub refuse_ranges: bool,
    /// Answer every request with this status and an empty body instead (e.g. 500).
    pub status: Option<u16>,
}

impl Route {
    pub fn new(body: Vec<u8>) -> Self {
        Self {
            body,
            truncate_first: 0,
            truncate_at: 0,
            ignore_range: false,
            corrupt_ranges: false,
            refuse_ranges: false,
            status: None,
        }
    }
    /// A route that answers `status` (with an empty body) to every request.
    pub fn failing(status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::new(Vec::new())
        }
    }
    pub fn truncated(mut self, times: usize, at: usize) -> Self {
        self.truncate_first = times;
        self.truncate_at = at;
        self
    }
}

/// One request seen by the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
}

pub struct TestServer {
    pub base: String,
    pub log: Arc<Mutex<Vec<Seen>>>,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(routes: HashMap<String, Route>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let routes = Arc::new(Mutex::new(routes));
        let stop = Arc::new(AtomicBool::new(false));
        let (l2, r2, s2) = (log.clone(), routes.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = handle(stream, &r2, &l2);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            base,
            log,
            routes,
            stop,
            handle: Some(handle),
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    pub fn set_route(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_string(), route);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn handle(
    stream: TcpStream,
    routes: &Mutex<HashMap<String, Route>>,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    let mut out = stream;
    let route = {
        let mut routes = routes.lock().unwrap();
        routes.get_mut(&path).map(|r| {
            let snapshot = r.clone();
            if r.truncate_first > 0 {
                r.truncate_first -= 1;
            }
            snapshot
        })
    };
    let Some(route) = route else {
        log.lock().unwrap().push(Seen {
            path,
            range,
            status: 404,
        });
        out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    };
    if let Some(status) = route.status {
        log.lock().unwrap().push(Seen {
            path,
            range,
            status,
        });
        out.write_all(
            format!("HTTP/1.1 {status} Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )?;
        return Ok(());
    }
    let len = route.body.len();
    let start = match (&range, route.ignore_range) {
        (Some(r), false) => r
            .strip_prefix("bytes=")
            .and_then(|s| s.strip_suffix('-'))
            .and_then(|s| s.parse::<usize>().ok()),
        _ => None,
    };
    let corrupt: Vec<u8>;
    let (status, head, body): (u16, String, &[u8]) = match start {
        Some(s) if s >= len || route.refuse_ranges => (
            416,
            format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n"
            ),
            &[],
        ),
        Some(s) => (
            206,
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\nContent-Length: {}\r\n",
                len - 1,
                len - s
            ),
            if route.corrupt_ranges {
                corrupt = route.body[s..].iter().map(|b| !b).collect();
                &corrupt
            } else {
                &route.body[s..]
            },
        ),
        None => (
            200,
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n"),
            &route.body[..],
        ),
    };
    log.lock().unwrap().push(Seen {
        path,
        range,
        status,
    });
    out.write_all(head.as_bytes())?;
    out.write_all(b"Accept-Ranges: bytes\r\nConnection: close\r\n\r\n")?;
    if route.truncate_first > 0 {
        out.write_all(&body[..route.truncate_at.min(body.len())])?;
    } else {
        out.write_all(body)?;
    }
    out.flush()?;
    let _ = out.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// The `Range` header and the status of each request of `seen`, in order.
pub fn ranges_and_statuses(seen: &[Seen]) -> Vec<(Option<&str>, u16)> {
    seen.iter()
        .map(|r| (r.range.as_deref(), r.status))
        .collect()
}

/// Asserts that the requests `srv` saw had these `Range` headers and statuses, in order.
pub fn assert_ranges_and_statuses(srv: &TestServer, expected: &[(Option<&str>, u16)]) {
    let seen = srv.requests();
    assert_eq!(ranges_and_statuses(&seen), expected);
}

/// A port on 127.0.0.1 that was just released: nothing listens on it.
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The project's shared, read-only data folder (`<repository>/../shared/data`).
pub fn shared_data() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}
