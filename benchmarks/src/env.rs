//! Small helpers of the side-by-side binaries: paths given with `~/`, the load average.

use std::path::{Path, PathBuf};

/// `~/rest` → `$HOME/rest`; any other path unchanged.
///
/// ```
/// use std::path::PathBuf;
/// assert_eq!(benchmarks::expand_home("/opt/x"), PathBuf::from("/opt/x"));
/// if let Some(h) = std::env::var_os("HOME") {
///     assert_eq!(benchmarks::expand_home("~/a/b"), std::path::Path::new(&h).join("a/b"));
/// }
/// ```
pub fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The 1-minute load average from `/proc/loadavg` (NaN where it cannot be read).
///
/// ```
/// let l = benchmarks::load_average();
/// assert!(l.is_nan() || l >= 0.0);
/// ```
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
