//! Mirrors: a local directory (a path or a `file://` URL) serves an offline machine, verified
//! and installed exactly like a download; values that cannot be a mirror are refused before
//! anything is fetched; and the layout a mirror must have is documented in `download --help`
//! and in the README, both matching the registry.

use std::path::Path;

use super::download::{maf_archive, recorded_sums, tar_gz};
use super::{assert_succeeded, download, failed_log, stderr, xtask};
use crate::common::{bytes, shared_data, tempdir};
use cpflow::datasets::{load_miniboone, load_mnist, load_power};
use xtask::checksum::sha256_bytes;
use xtask::registry::registry;

/// A mirror directory holding `files` at their mirror paths.
fn mirror_dir(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempdir();
    for (path, body) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    dir
}

#[test]
fn a_local_directory_mirror_is_installed_like_a_download() {
    let good = maf_archive();
    let m = mirror_dir(&[("maf/data.tar.gz", good.clone())]);
    // As a path.
    let dir = tempdir();
    let out = download("power", dir.path(), m.path().to_str().unwrap());
    assert_succeeded(&out);
    assert_eq!(load_power(dir.path()).unwrap().sizes(), (33, 3, 4));
    // Copied, not moved: the mirror keeps its file.
    assert_eq!(
        std::fs::read(m.path().join("maf/data.tar.gz")).unwrap(),
        good
    );
    assert_eq!(
        recorded_sums(dir.path()),
        format!("{}  maf-data.tar.gz\n", sha256_bytes(&good))
    );
    // As a file:// URL (with a trailing slash).
    let dir = tempdir();
    let url = format!("file://{}/", m.path().display());
    let out = download("miniboone", dir.path(), &url);
    assert_succeeded(&out);
    assert_eq!(load_miniboone(dir.path()).unwrap().dim(), 43);

    // Verified exactly as a download: a junk archive is refused and not kept; a file that
    // does not match its published checksum (MNIST) is refused.
    let bad = mirror_dir(&[
        (
            "maf/data.tar.gz",
            tar_gz(&[("data/power/data.npy", bytes(512, 3))]),
        ),
        ("mnist/train-images-idx3-ubyte.gz", bytes(512, 4)),
    ]);
    let dir = tempdir();
    let out = download("power", dir.path(), bad.path().to_str().unwrap());
    let err = failed_log(&out);
    assert!(
        err.contains("is not what the dataset loader reads"),
        "{err}"
    );
    assert!(!dir.path().join(".downloads/maf-data.tar.gz").exists());
    let out = download("mnist", dir.path(), bad.path().to_str().unwrap());
    let err = failed_log(&out);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!dir.path().join("mnist/train-images-idx3-ubyte.gz").exists());
}

/// A file the directory lacks is reported as such, with where it belongs in the mirror.
#[test]
fn a_file_missing_from_a_mirror_directory_says_where_it_belongs() {
    let m = mirror_dir(&[]);
    let dir = tempdir();
    let out = download("gas", dir.path(), m.path().to_str().unwrap());
    let err = failed_log(&out);
    let want = m.path().join("uci/gas/data.zip");
    assert!(
        err.contains("not in the mirror directory")
            && err.contains(&format!("put it at {}", want.display())),
        "{err}"
    );
    assert!(
        !err.contains("invalid format") && !err.contains("offline"),
        "{err}"
    );
}

/// MNIST from a directory holding the real files (../shared/data has the same layout).
#[test]
fn mnist_installs_from_a_directory_with_the_mirror_layout() {
    let dir = tempdir();
    let out = download("mnist", dir.path(), shared_data().to_str().unwrap());
    assert_succeeded(&out);
    assert_eq!(load_mnist(dir.path(), 10_000).unwrap().test.rows(), 10_000);
    assert!(
        shared_data()
            .join("mnist/train-images-idx3-ubyte.gz")
            .is_file()
    );
}

/// Values that cannot be a mirror are refused up front, in words (`file:///dir` and paths
/// were accepted, then failed with "no answer (http: invalid format) … offline").
#[test]
fn unusable_mirror_values_are_refused_up_front() {
    let dir = tempdir();
    let missing = dir.path().join("no-such-mirror");
    for (mirror, says) in [
        (missing.to_str().unwrap().to_string(), "is not a directory"),
        (
            format!("file://{}", missing.display()),
            "is not a directory",
        ),
        ("ftp://127.0.0.1/m".to_string(), "unsupported URL scheme"),
    ] {
        let out = download("power", dir.path(), &mirror);
        let err = failed_log(&out);
        assert!(
            err.contains(says) && !err.contains("offline"),
            "{mirror}: {err}"
        );
        assert!(!dir.path().join(".downloads").exists(), "{mirror}");
    }
}

/// Every mirror path of the registry, sorted.
fn registry_mirror_paths() -> Vec<String> {
    let mut paths: Vec<String> = registry()
        .iter()
        .flat_map(|d| d.plans.iter().flat_map(|p| p.steps.iter()))
        .map(|s| s.artifact.mirror_path.clone())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The mirror paths a text lists: the first word of each line after the line of `start`, up
/// to the first blank line (code fences skipped).
fn listed_paths(text: &str, start: &str) -> Vec<String> {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in\n{text}"));
    let mut paths: Vec<String> = text[from..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("```"))
        .filter_map(|l| l.split_whitespace().next())
        .map(|p| p.trim_matches('`').to_string())
        .collect();
    paths.sort();
    paths
}

/// Item 2: `download --help` lists the layout a mirror must have, exactly the registry's
/// paths (it referred to a source module), and says a directory is accepted.
#[test]
fn the_help_lists_the_mirror_layout_of_the_registry() {
    for flag in ["--help", "-h"] {
        let out = xtask(&["download", flag]);
        assert!(out.status.success(), "{}", stderr(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            listed_paths(&help, "Either holds the files at these paths:"),
            registry_mirror_paths(),
            "{help}"
        );
        assert!(
            help.contains("CPFLOW_DATA_MIRROR")
                && help.contains("local directory")
                && help.contains("SHA256SUMS")
                && !help.contains("xtask::registry"),
            "{help}"
        );
    }
}

/// The README's Datasets section documents `--mirror`, `CPFLOW_DATA_MIRROR`, a directory
/// mirror, `--force` and the same layout.
#[test]
fn the_readme_lists_the_mirror_layout_of_the_registry() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme.find("## Datasets").unwrap();
    let end = readme[start + 3..]
        .find("\n## ")
        .map_or(readme.len(), |e| start + 3 + e);
    let section = &readme[start..end];
    for needle in [
        "--mirror",
        "CPFLOW_DATA_MIRROR",
        "file://",
        "--force",
        ".downloads/SHA256SUMS",
    ] {
        assert!(section.contains(needle), "{needle} not in\n{section}");
    }
    let intro = section
        .find("A mirror holds the files at these paths")
        .unwrap_or_else(|| panic!("no layout in\n{section}"));
    assert_eq!(
        listed_paths(&section[intro..], "```text"),
        registry_mirror_paths(),
        "{section}"
    );
}
