//! `download` of a dataset already installed: the installed files are checked cheaply (their
//! sizes against the record written at install, `.npy` headers against the file's size, text
//! files' heads), not read in full; a file cut short or with a wrong header is installed
//! again, never reported "already present"; `--verify` reads them in full.

use std::path::Path;

use super::download::{maf_archive, serve};
use super::{assert_logged, assert_succeeded, download, download_with, stderr};
use crate::common::tempdir;
use cpflow::datasets::{load_hepmass, load_power};
use xtask::installed_check::PREFIX_BYTES;

/// Cuts the file `rel` of `dir` to `keep` of its bytes.
fn cut(dir: &Path, rel: &str, keep: impl Fn(usize) -> usize) {
    let p = dir.join(rel);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..keep(bytes.len())]).unwrap();
}

/// Asserts that `out` reinstalled `rel` (not "already present"), saying which file and why.
fn assert_reinstalled(out: &std::process::Output, rel: &str, why: &str) {
    assert_succeeded(out);
    let err = stderr(out);
    assert!(
        err.contains(&format!(
            "installed, but {rel} is not what the dataset loader reads"
        )) && err.contains(why)
            && err.contains("installing it again")
            && !err.contains("already present"),
        "{err}"
    );
}

/// POWER's `.npy` cut short, or its header damaged, is installed again from the cached
/// archive (no request); a whole one is "already present".
#[test]
fn a_damaged_npy_is_installed_again() {
    let srv = serve("/maf/data.tar.gz", maf_archive());
    let dir = tempdir();
    assert_succeeded(&download("power", dir.path(), &srv.base));
    let n = srv.requests().len();
    assert_logged(&download("power", dir.path(), &srv.base), "already present");

    cut(dir.path(), "power/data.npy", |n| n - 8);
    let out = download("power", dir.path(), &srv.base);
    assert_reinstalled(&out, "power/data.npy", "cut short or changed since");
    assert_eq!(load_power(dir.path()).unwrap().sizes(), (33, 3, 4));

    // Without the record of sizes (an install by an older xtask), the header and the file's
    // size still disagree.
    std::fs::remove_file(dir.path().join(".downloads/INSTALLED")).unwrap();
    cut(dir.path(), "power/data.npy", |n| n - 8);
    let out = download("power", dir.path(), &srv.base);
    assert_reinstalled(&out, "power/data.npy", "truncated");

    // A wrong header of the same size: the magic.
    let p = dir.path().join("power/data.npy");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[1] = b'X';
    std::fs::write(&p, &bytes).unwrap();
    let out = download("power", dir.path(), &srv.base);
    assert_reinstalled(&out, "power/data.npy", "bad magic");
    assert_eq!(load_power(dir.path()).unwrap().sizes(), (33, 3, 4));
    assert_eq!(srv.requests().len(), n, "the cached archive was used");
}

/// A text file cut short past its head (which alone parses) is found by the size recorded at
/// install: it was "already present" before the record.
#[test]
fn a_text_file_cut_short_is_installed_again() {
    let srv = serve("/maf/data.tar.gz", maf_archive());
    let dir = tempdir();
    assert_succeeded(&download("hepmass", dir.path(), &srv.base));
    let record = std::fs::read_to_string(dir.path().join(".downloads/INSTALLED")).unwrap();
    assert!(
        record.contains("  hepmass/1000_train.csv\n")
            && record.contains("  hepmass/1000_test.csv\n"),
        "{record}"
    );
    // Whole lines cut off the end: what is left parses.
    cut(dir.path(), "hepmass/1000_train.csv", |n| n / 2);
    let text = std::fs::read_to_string(dir.path().join("hepmass/1000_train.csv")).unwrap();
    let whole = text.rfind('\n').unwrap() + 1;
    cut(dir.path(), "hepmass/1000_train.csv", |_| whole);
    let out = download("hepmass", dir.path(), &srv.base);
    assert_reinstalled(&out, "hepmass/1000_train.csv", "cut short or changed since");
    assert_eq!(load_hepmass(dir.path()).unwrap().sizes(), (45, 5, 20));
    assert_logged(
        &download("hepmass", dir.path(), &srv.base),
        "already present",
    );
}

/// Damage past a text file's head with its size unchanged passes the cheap check (it is
/// "already present"); `--verify` reads the files in full and installs it again.
#[test]
fn verify_reads_the_files_in_full() {
    let srv = serve("/maf/data.tar.gz", maf_archive());
    let dir = tempdir();
    assert_succeeded(&download("hepmass", dir.path(), &srv.base));
    // A test file longer than the head that is checked, whose last number is not one, of the
    // size recorded at install.
    let p = dir.path().join("hepmass/1000_test.csv");
    let text = std::fs::read_to_string(&p).unwrap();
    let (header, rows) = text.split_at(text.find('\n').unwrap() + 1);
    let mut long = format!("{header}{}", rows.repeat(PREFIX_BYTES / rows.len() + 2));
    long.replace_range(long.len() - 5..long.len() - 1, "x000");
    std::fs::write(&p, &long).unwrap();
    xtask::installed_sizes::record_installed(dir.path(), &["hepmass/1000_test.csv".into()])
        .unwrap();
    assert_logged(
        &download("hepmass", dir.path(), &srv.base),
        "already present",
    );
    let out = download_with("hepmass", dir.path(), &srv.base, &["--verify"]);
    assert_reinstalled(&out, "hepmass/1000_test.csv", "bad number");
    assert_eq!(load_hepmass(dir.path()).unwrap().sizes(), (45, 5, 20));
    assert_logged(
        &download_with("hepmass", dir.path(), &srv.base, &["--verify"]),
        "already present",
    );
}

/// A measurement, not a check: the loaders' full parse of HEPMASS's and GAS's text files at
/// their real sizes, generated into `$CPFLOW_PARSE_SPEED_DIR` (`hepmass/1000_train.csv`,
/// `gas/ethylene_CO.txt`): `cargo test -p xtask --test integration parse_speed -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a measurement on generated full-size files"]
fn parse_speed() {
    use cpflow::datasets::{GasConfig, read_gas_sensors, read_signal_csv};
    let dir = std::path::PathBuf::from(std::env::var("CPFLOW_PARSE_SPEED_DIR").unwrap());
    let mb = |p: &Path| std::fs::metadata(p).unwrap().len() as f64 / 1e6;
    let train = dir.join("hepmass/1000_train.csv");
    let t = std::time::Instant::now();
    let table = read_signal_csv(&train).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "hepmass/1000_train.csv: {:.0} MB, {} signal rows, {s:.2} s ({:.0} MB/s)",
        mb(&train),
        table.data.rows(),
        mb(&train) / s
    );
    let gas = dir.join("gas/ethylene_CO.txt");
    let t = std::time::Instant::now();
    let m = read_gas_sensors(&gas, &GasConfig::default()).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "gas/ethylene_CO.txt: {:.0} MB, {} sampled rows, {s:.2} s ({:.0} MB/s)",
        mb(&gas),
        m.rows(),
        mb(&gas) / s
    );
}
