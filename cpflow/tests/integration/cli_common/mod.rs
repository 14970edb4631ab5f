//! Running the `cpflow` binary from integration tests (shared by the CLI test crates).
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cpflow` with `args` and `RUST_LOG=level`.
fn run(args: &[&str], level: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(args)
        .env("RUST_LOG", level)
        .output()
        .expect("running cpflow")
}

/// Asserts that `out` is a success, printing both streams otherwise.
fn assert_success(args: &[&str], out: &std::process::Output) {
    assert!(
        out.status.success(),
        "cpflow {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cpflow` with `args`, asserting success; returns stdout.
pub fn cpflow(args: &[&str]) -> String {
    let out = run(args, "warn");
    assert_success(args, &out);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs `cpflow` with `args` and info-level logging, asserting success; returns stderr (the
/// log).
pub fn cpflow_log(args: &[&str]) -> String {
    let out = run(args, "info");
    assert_success(args, &out);
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Runs `cpflow` with `args` and info-level logging, asserting success; returns `(stdout,
/// stderr)` (the final line and the log).
pub fn cpflow_out_and_log(args: &[&str]) -> (String, String) {
    let out = run(args, "info");
    assert_success(args, &out);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cpflow` expecting a failure; returns stderr.
pub fn cpflow_fails(args: &[&str]) -> String {
    let out = run(args, "warn");
    assert!(!out.status.success(), "cpflow {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `cpflow train` arguments for a tiny 2-D model (width 4, depth 2) on the CSV file `csv`,
/// `iters` steps of batch `batch`, into `out`: no test rows, no plots, no progress bar.
pub fn tiny_csv_train_args(csv: &Path, out: &Path, iters: &str, batch: &str) -> Vec<String> {
    let (csv, out) = (csv.to_str().unwrap(), out.to_str().unwrap());
    [
        "train",
        "--data",
        csv,
        "--iters",
        iters,
        "--batch-size",
        batch,
        "--set",
        "model.width=4",
        "--set",
        "model.depth=2",
        "--set",
        "data.test_fraction=0",
        "--set",
        "run.plots=false",
        "--no-progress",
        "--out",
        out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A fresh, empty directory under the system temp dir, unique to this process and `name`,
/// removed when the guard drops, unless the test is failing (then it stays for a look and
/// its path is printed).
pub fn temp_dir(name: &str) -> TestDir {
    let d = std::env::temp_dir().join(format!("cpflow-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TestDir(d)
}

/// A test's scratch directory ([`temp_dir`]): a `PathBuf` that removes its directory on drop.
pub struct TestDir(PathBuf);

impl TestDir {
    /// The path, without removal on drop: for a directory shared by several tests of the
    /// process. It outlives the process (statics are not dropped), so this first removes
    /// the directories of the same name that earlier test processes, no longer running,
    /// kept ([`remove_dirs_of_ended_processes`]).
    pub fn keep(self) -> PathBuf {
        let d = self.0.clone();
        std::mem::forget(self);
        remove_dirs_of_ended_processes(&d);
        d
    }
}

/// Removes the siblings of `dir` (`<prefix>-<pid>`) whose process has ended, so that the
/// directories kept by [`TestDir::keep`] do not pile up in the temp dir run after run.
/// Only on Linux, where `/proc/<pid>` says whether a process runs; elsewhere nothing.
fn remove_dirs_of_ended_processes(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name().and_then(|n| n.to_str()))
    else {
        return;
    };
    let Some((prefix, _)) = name.rsplit_once('-') else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix)?.strip_prefix('-'))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl std::ops::Deref for TestDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TestDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept the failing test's directory {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Asserts that `p` is a non-empty file.
pub fn non_empty(p: &Path) {
    let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    assert!(len > 0, "{} missing or empty", p.display());
}

/// Sends SIGINT to `child` (as Ctrl-C would) and waits for it: `(success, stderr)`.
#[cfg(unix)]
pub fn interrupt_and_wait(child: std::process::Child) -> (bool, String) {
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cpflow` with `args` (info-level log), waits for a log line containing `marker`, lets
/// it run `settle` longer, sends SIGINT (as Ctrl-C would) and waits for it:
/// `(success, stdout, the whole log)`.
#[cfg(unix)]
pub fn interrupt_after_log(
    args: &[&str],
    marker: &str,
    settle: std::time::Duration,
) -> (bool, String, String) {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running cpflow");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut log = String::new();
    while !log.contains(marker) {
        let read = stderr.read_line(&mut log).unwrap();
        assert!(read > 0, "cpflow {args:?} ended before `{marker}`:\n{log}");
    }
    std::thread::sleep(settle);
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    stderr.read_to_string(&mut log).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        log,
    )
}

/// The offline data root holding `mnist/` (see its README).
pub fn shared_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

/// A tiny MNIST image run: one CP-Flow block (ConvICNN width 4, depth 2), f64 (so that the
/// numbers compared in `cli_eval_image` are reproducible to the last digits), 2 steps on 16 training
/// images; the test score: SLQ (2 probes, 10 steps) on the first 8 test images and exact on
/// the first 3, 4 images per pass.
pub fn tiny_mnist_config(root: &Path) -> String {
    format!(
        "[data]\ndataset = \"mnist\"\nroot = {:?}\nn_val = 4\nn_train = 16\n\
         [model]\nwidth = 4\ndepth = 2\nnblocks = [1]\nfloat = \"f64\"\n\
         [train]\nmax_iterations = 2\nbatch_size = 8\neval_batch_size = 4\nseed = 3\n\
         test = {{ images = 8, exact_images = 3, slq = {{ probes = 2, steps = 10 }} }}\n",
        root.display().to_string()
    )
}

/// A tiny Gaussian-posterior VAE on `dataset` (`frey-faces`, `caltech101`) read under `root`:
/// a 2-D latent, 2-channel networks, one epoch of the first 200 training images in batches
/// of 100 (2 steps), importance sampling with 2 samples on 2 test images.
pub fn tiny_vae_config(dataset: &str, root: &Path) -> String {
    format!(
        "[data]\ndataset = \"{dataset}\"\nroot = {root:?}\nn_train = 200\n\
         [model]\nposterior = \"gaussian\"\nlatent_dim = 2\n\
         architecture = {{ channels = 2, feature_dim = 4, head_channels = 4 }}\n\
         [train]\nepochs = 1\nbatch_size = 100\n\
         [eval]\nis_samples = 2\nis_chunk = 2\nis_images = 2\n"
    )
}

/// A 2-D model trained 3 steps (`tiny_csv_train_args`) on a CSV file of 120 rows in `dir`;
/// `scale` multiplies the data, whose columns otherwise have standard deviations near 1.4
/// and 0.7; `extra` adds arguments. Returns the run directory and the command's stdout.
pub fn tiny_trained_run(dir: &Path, scale: f64, extra: &[&str]) -> (PathBuf, String) {
    let csv = dir.join("d.csv");
    let text: String = (0..120)
        .map(|i| {
            let t = i as f64 * 0.37;
            format!("{},{}\n", t.sin() * 2.0 * scale, (t * 1.3).cos() * scale)
        })
        .collect();
    std::fs::write(&csv, text).unwrap();
    let run = dir.join("run");
    let args = tiny_csv_train_args(&csv, &run, "3", "16");
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect();
    let stdout = cpflow(&args);
    (run, stdout)
}

/// The `descr` of a `.npy` file's header.
pub fn npy_descr(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let header = String::from_utf8_lossy(&bytes[10..bytes.len().min(128)]).into_owned();
    header
        .split("'descr': '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap_or_else(|| panic!("no descr in {header}"))
        .to_string()
}

/// The JSON file at `path` (a run's `report.json`).
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every file under `dir` (relative path → bytes).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `cpflow train` arguments for a tiny model (width 4, depth 2) on the 8-Gaussians toy,
/// `iters` steps of `batch` points into `out`, no plots, no progress bar; `sets` are `--set`
/// overrides placed between the model's and `run.plots`.
pub fn tiny_toy_args(out: &Path, iters: &str, batch: &str, sets: &[&str]) -> Vec<String> {
    let head = [
        "train",
        "--data",
        "8gaussians",
        "--iters",
        iters,
        "--batch-size",
        batch,
    ];
    let model = ["--set", "model.width=4", "--set", "model.depth=2"];
    let sets = sets.iter().flat_map(|s| ["--set", s]);
    let tail = ["--set", "run.plots=false", "--no-progress", "--out"];
    head.into_iter()
        .chain(model)
        .chain(sets)
        .chain(tail)
        .chain([out.to_str().unwrap()])
        .map(str::to_string)
        .collect()
}

/// `cpflow train` of a tiny model (width 4, depth 2) on the 8-Gaussians toy, 3 steps of 16
/// points into `out`, no plots ([`tiny_toy_args`]); `sets` are `--set` overrides (the splits'
/// sizes) placed between the model's and `run.plots`. Returns stdout.
pub fn train_tiny_toy(out: &Path, sets: &[&str]) -> String {
    let args = tiny_toy_args(out, "3", "16", sets);
    cpflow(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Starts `cpflow train` of a tiny toy model (8 Gaussians, width 4, depth 2, splits of 256,
/// 32 and 32 points) for a million steps of 16 points into `run`, logging every step; waits
/// until 3 steps are logged, so that the signal comes during training, then sends SIGINT (as
/// Ctrl-C would). Asserts that the command failed; returns its stderr.
#[cfg(unix)]
pub fn interrupt_tiny_toy_training(run: &Path) -> String {
    use std::process::Stdio;
    let child = Command::new(env!("CARGO_BIN_EXE_cpflow"))
        .args(["train", "--data", "8gaussians", "--iters", "1000000"])
        .args(["--batch-size", "16", "--set", "model.width=4"])
        .args(["--set", "model.depth=2", "--set", "data.n_train=256"])
        .args(["--set", "data.n_val=32", "--set", "data.n_test=32"])
        .args(["--set", "run.plots=false", "--set", "train.log_every=1"])
        .args(["--no-progress", "--out"])
        .arg(run)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = run.join("metrics.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |s| s.lines().count()) < 3 {
        assert!(t0.elapsed().as_secs() < 120, "no training steps logged");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (ok, err) = interrupt_and_wait(child);
    assert!(!ok, "{err}");
    err
}

/// The iteration after which the interrupted run of `err` (its stderr) stopped.
pub fn interrupted_iteration(err: &str) -> usize {
    err.split("interrupted after iteration ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no iteration in {err}"))
}
