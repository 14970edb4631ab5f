//! Small helpers of the side-by-side binaries: paths given with `~/`, the load average, the
//! device named on the command line.

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

/// A command running the Python at `python` (`~/` expanded) with `threads` OpenMP and MKL
/// threads: how every side-by-side binary starts the authors' code.
///
/// ```
/// let c = benchmarks::python_command("~/venv/bin/python", 2);
/// let envs: Vec<_> = c.get_envs().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned()))).collect();
/// assert!(envs.iter().any(|(k, v)| k == "OMP_NUM_THREADS" && v.as_deref() == Some("2".as_ref())));
/// ```
pub fn python_command(python: &str, threads: usize) -> std::process::Command {
    let mut c = std::process::Command::new(expand_home(python));
    let t = threads.to_string();
    c.env("OMP_NUM_THREADS", &t).env("MKL_NUM_THREADS", &t);
    c
}

/// Runs `command` and parses its standard output as one JSON value; a failing exit status
/// is an error carrying the command's standard error.
pub fn stdout_json(mut command: std::process::Command) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let out = command.output().context("running the reference script")?;
    if !out.status.success() {
        anyhow::bail!("reference failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("parsing the reference JSON")
}

/// The device a benchmark's `--device` names: `cpu`; `cuda`, GPU 0 as the CLI opens it
/// ([`cpflow::open_cuda_device`]); or `cuda-plain`, GPU 0 with candle's defaults
/// (`Device::new_cuda`), to measure what the former changes.
///
/// ```
/// assert!(benchmarks::open_device("cpu").unwrap().is_cpu());
/// assert!(benchmarks::open_device("gpu").is_err());
/// ```
pub fn open_device(name: &str) -> anyhow::Result<candle_core::Device> {
    use anyhow::Context;
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => cpflow::open_cuda_device(0)
            .context("--device cuda needs a build with `--features cuda` and a GPU"),
        "cuda-plain" => candle_core::Device::new_cuda(0)
            .context("--device cuda-plain needs a build with `--features cuda` and a GPU"),
        other => anyhow::bail!("unknown device {other:?} (cpu, cuda or cuda-plain)"),
    }
}
