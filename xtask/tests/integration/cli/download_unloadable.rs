//! Files without a published checksum whose content the loaders cannot read: a valid MAF
//! archive whose `power/data.npy` is random bytes (the audit's mirror) was installed, its
//! sha256 recorded as trusted, and the dataset stuck: `download` said "already present",
//! `--force` reinstalled the same junk from the cache, and a good download was refused as not
//! matching "the published checksum" (there is none: it was recorded locally).

use std::path::Path;

use super::download::{maf_archive, recorded_sums, serve, tar_gz};
use super::{assert_logged, assert_succeeded, download, download_with, failed_log, stderr};
use crate::common::{Route, bytes, tempdir};
use cpflow::datasets::load_power;
use xtask::checksum::sha256_bytes;

/// The audit's bad archive: a valid tar.gz whose `data/power/data.npy` is random bytes.
fn junk_maf_archive() -> Vec<u8> {
    tar_gz(&[("data/power/data.npy", bytes(4096, 7))])
}

/// The state the audited build left: the junk archive cached and its sha256 recorded, its
/// `power/data.npy` installed.
fn stuck(dir: &Path) {
    let junk = junk_maf_archive();
    std::fs::create_dir_all(dir.join(".downloads")).unwrap();
    std::fs::create_dir_all(dir.join("power")).unwrap();
    std::fs::write(dir.join(".downloads/maf-data.tar.gz"), &junk).unwrap();
    std::fs::write(
        dir.join(".downloads/SHA256SUMS"),
        format!("{}  maf-data.tar.gz\n", sha256_bytes(&junk)),
    )
    .unwrap();
    std::fs::write(dir.join("power/data.npy"), bytes(4096, 7)).unwrap();
}

/// Item 1a: the extracted file is read as the loader reads it before anything is installed
/// or recorded; the junk archive is not kept, and the error says what was wrong.
#[test]
fn an_archive_whose_files_the_loader_cannot_read_is_neither_installed_nor_recorded() {
    let srv = serve("/maf/data.tar.gz", junk_maf_archive());
    let dir = tempdir();
    let out = download("power", dir.path(), &srv.base);
    let err = failed_log(&out);
    assert!(
        err.contains("power/data.npy is not what the dataset loader reads")
            && err.contains("bad magic")
            && err.contains("no published checksum")
            && err.contains("nothing was installed"),
        "{err}"
    );
    // Not the staging copy's path.
    assert!(!err.contains(".staging"), "{err}");
    assert!(!err.contains("installed in"), "{err}");
    assert!(!dir.path().join("power/data.npy").exists());
    assert!(!dir.path().join(".downloads/maf-data.tar.gz").exists());
    assert!(!dir.path().join(".downloads/power.staging").exists());
    assert_eq!(recorded_sums(dir.path()), "");

    // A good source then installs, and only then is the sha256 recorded.
    let good = maf_archive();
    srv.set_route("/maf/data.tar.gz", Route::new(good.clone()));
    let out = download("power", dir.path(), &srv.base);
    assert_succeeded(&out);
    assert_eq!(load_power(dir.path()).unwrap().sizes(), (33, 3, 4));
    assert_eq!(
        recorded_sums(dir.path()),
        format!("{}  maf-data.tar.gz\n", sha256_bytes(&good))
    );

    // An archive with a npy of the wrong shape is refused too (the loader needs 8 columns).
    let six = cpflow::datasets::write_npy_f64(
        &cpflow::datasets::Matrix::new(10, 6, vec![0.5; 60]).unwrap(),
    );
    let srv2 = serve("/maf/data.tar.gz", tar_gz(&[("data/power/data.npy", six)]));
    let dir2 = tempdir();
    let out = download("power", dir2.path(), &srv2.base);
    let err = failed_log(&out);
    assert!(
        err.contains("10x6 array") && err.contains("8 columns"),
        "{err}"
    );
}

/// Item 1b: `--force` starts over for a file whose checksum was only recorded locally: the
/// cached archive and its record are dropped and it is downloaded anew.
#[test]
fn force_drops_a_cached_archive_that_only_has_a_recorded_checksum() {
    let good = maf_archive();
    let srv = serve("/maf/data.tar.gz", good.clone());
    let dir = tempdir();
    stuck(dir.path());
    let out = download_with("power", dir.path(), &srv.base, &["--force"]);
    assert_succeeded(&out);
    assert_logged(&out, "--force: deleted the cached maf-data.tar.gz");
    assert_eq!(load_power(dir.path()).unwrap().sizes(), (33, 3, 4));
    assert_eq!(
        recorded_sums(dir.path()),
        format!("{}  maf-data.tar.gz\n", sha256_bytes(&good))
    );
    assert_eq!(srv.requests().len(), 1);

    // `download all --force` downloads the shared MAF archive once, not once per dataset.
    let n = srv.requests().len();
    let out = download_with("all", dir.path(), &srv.base, &["--force"]);
    assert!(!out.status.success());
    let maf = srv.requests()[n..]
        .iter()
        .filter(|s| s.path == "/maf/data.tar.gz")
        .count();
    assert_eq!(maf, 1, "{}", stderr(&out));
    assert!(dir.path().join("miniboone/data.npy").is_file());
}

/// With a published checksum, `--force` keeps verifying against it: a bad cached copy is
/// caught (moved aside), not deleted and trusted anew.
#[test]
fn force_keeps_verifying_a_published_checksum() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join(".downloads")).unwrap();
    std::fs::write(dir.path().join(".downloads/cifar-10-binary.tar.gz"), b"x").unwrap();
    let srv = serve("/nothing", Vec::new());
    let out = download_with("cifar10", dir.path(), &srv.base, &["--force"]);
    let err = failed_log(&out);
    assert!(err.contains("checksum mismatch: expected md5"), "{err}");
    assert!(
        dir.path()
            .join(".downloads/cifar-10-binary.tar.gz.bad")
            .is_file()
    );
    assert!(srv.requests().is_empty(), "{:?}", srv.requests());
}

/// Without `--force`, an installed file that its loader cannot read is not "already present":
/// it is installed again, and a bad cached copy (only recorded, not published) is dropped and
/// downloaded afresh in the same run.
#[test]
fn an_unloadable_installed_file_is_installed_again() {
    let srv = serve("/maf/data.tar.gz", maf_archive());
    let dir = tempdir();
    stuck(dir.path());
    let out = download("power", dir.path(), &srv.base);
    assert_succeeded(&out);
    assert_logged(
        &out,
        "installed, but power/data.npy is not what the dataset loader reads",
    );
    assert_logged(&out, "downloading it afresh");
    assert_eq!(load_power(dir.path()).unwrap().sizes(), (33, 3, 4));
    assert!(!stderr(&out).contains("already present"));
}

/// Item 1c: a mismatch against a sha256 recorded on first download says so, names
/// `.downloads/SHA256SUMS` and `--force`, and does not call it published nor advise a copy
/// by hand (which the record would refuse too).
#[test]
fn a_mismatch_with_a_recorded_checksum_is_not_called_published() {
    let srv = serve("/maf/data.tar.gz", maf_archive());
    let dir = tempdir();
    stuck(dir.path());
    std::fs::remove_file(dir.path().join(".downloads/maf-data.tar.gz")).unwrap();
    let out = download("power", dir.path(), &srv.base);
    let err = failed_log(&out);
    assert!(
        err.contains("recorded on first download")
            && err.contains(".downloads/SHA256SUMS")
            && err.contains("--force")
            && err.contains("No checksum is published"),
        "{err}"
    );
    assert!(
        !err.contains("does not match the published checksum")
            && !err.contains("place a good copy"),
        "{err}"
    );
    // The way out it names works.
    let out = download_with("power", dir.path(), &srv.base, &["--force"]);
    assert_succeeded(&out);
    assert_eq!(load_power(dir.path()).unwrap().sizes(), (33, 3, 4));
}
