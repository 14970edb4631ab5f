//! The up-front memory checks see the process's address-space limit (`ulimit -v`), not only
//! the machine's memory: a model that needs more than the limit, and far less than the
//! machine, is refused naming the limit, before anything is built or written. It passed the
//! check and aborted in an allocation ("memory allocation of 75497472 bytes failed", exit
//! 134, after 25 s of `cpflow ot --dims 384`).

use std::path::Path;
use std::process::Command;

use crate::cli_common::temp_dir;

/// The address-space limit of the runs, in KiB (`ulimit -v`): 4.1 GB. The binary itself
/// starts and trains a small model within it (checked below).
const ULIMIT_KB: u64 = 4_000_000;

/// Runs `cpflow args` under `ulimit -v ULIMIT_KB`: `(exit code, stderr)`.
fn cpflow_under_ulimit(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -v {ULIMIT_KB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_cpflow"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running bash");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The machine's memory in bytes (`MemTotal`), on Linux.
fn machine_memory() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

/// Under `ulimit -v` of 4.1 GB: a tiny flow trains (the limit leaves the binary room); a
/// dense flow of 5.5 GB (57 million f64 weights in 12 copies) and an OT run of 5.6 GB
/// (d = 384) are refused naming the address-space limit, with exit code 1, before anything
/// is written. Where the machine has less than 6 GB the refusal names the machine (and is
/// not checked here); elsewhere than Linux nothing reads the limits.
#[test]
fn refusals_under_ulimit_name_the_address_space_limit() {
    if !Path::new("/proc/self/limits").exists() || machine_memory().is_none_or(|m| m < 6e9) {
        return;
    }
    let dir = temp_dir("memory-ulimit");
    let csv = dir.join("points.csv");
    let rows: String = (0..64)
        .map(|i| {
            let t = i as f64 * 0.1;
            format!("{},{}\n", t.cos(), t.sin() + 0.01 * i as f64)
        })
        .collect();
    std::fs::write(&csv, rows).unwrap();
    let train = |width: &str, out: &Path| {
        let width = format!("model.width={width}");
        cpflow_under_ulimit(&[
            "train",
            "--data",
            csv.to_str().unwrap(),
            "--iters",
            "1",
            "--batch-size",
            "16",
            "--set",
            &width,
            "--set",
            "model.depth=4",
            "--set",
            "data.test_fraction=0",
            "--set",
            "run.plots=false",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    // The address-space limit, or a cgroup's where the test runs under one below 4.1 GB (a
    // CI container): the smallest limit is the one named.
    let names_the_limit = |err: &str| {
        err.contains(
            "more than the 4.1 GB this process may use (its address-space limit, ulimit -v)",
        ) || err.contains("this process may use (its cgroup's memory.")
    };

    let small = dir.join("small");
    let (code, err) = train("4", &small);
    assert_eq!(code, Some(0), "a tiny flow failed under the limit: {err}");

    let big = dir.join("big");
    let (code, err) = train("6144", &big);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the flow has 56730634 parameters")
            && err.contains("needs at least 5.5 GB")
            && names_the_limit(&err),
        "{err}"
    );
    assert!(!big.exists(), "the refused run wrote {}", big.display());

    let ot = dir.join("ot");
    let (code, err) = cpflow_under_ulimit(&["ot", "--dims", "384", "--out", ot.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("d = 384") && names_the_limit(&err), "{err}");
    assert!(!ot.exists(), "the refused run wrote {}", ot.display());
}
