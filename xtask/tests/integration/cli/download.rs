//! `cargo xtask download` against a local test server: fabricated MAF, UCI, CIFAR-10 and
//! Omniglot files, and the real MNIST and BSDS300 files from ../shared/data.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use super::{assert_failed_saying, assert_logged, assert_succeeded, download, failed_log, stderr};
use crate::common::{Route, TestServer, shared_data, tempdir, unused_port};
use cpflow::datasets::{Matrix, load_hepmass, load_mnist, load_power, write_npy_f64};
use xtask::registry::OMNIGLOT_CHARDATA_GIT_BLOB;

pub(super) fn tar_gz(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, &bytes[..]).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn power_npy() -> Vec<u8> {
    let data = (0..40 * 8).map(|i| ((i * 37) % 101) as f64 / 4.0).collect();
    write_npy_f64(&Matrix::new(40, 8, data).unwrap())
}

fn hepmass_csv(n: usize) -> String {
    let mut s = String::from("# label, f0, f1, mass\n");
    for i in 0..n {
        s.push_str(&format!(
            "1, {}, {}, {}\n",
            (i * 7 % 13) as f64 / 3.0,
            (i * 5 % 11) as f64,
            1000
        ));
    }
    s
}

/// A header and two rows of the 19 numbers of UCI's `ethylene_CO.txt`.
const GAS_TEXT: &str = "Time (seconds), CO conc (ppm), Ethylene conc (ppm), sensor readings (16 channels)\n\
    0.00 0.00 0.00 -50.85 -1.95 -41.82 1.30 -4.07 -28.73 -13.49 -3.25 55139.95 50669.50 9626.26 9762.62 24544.02 21420.68 7650.61 6928.42\n\
    0.01 0.00 0.00 -49.40 -5.53 -42.78 0.49 3.58 -34.55 -9.59 5.37 54395.77 50046.91 9433.20 9591.21 24137.13 20930.33 7498.79 6800.66\n";

pub(super) fn maf_archive() -> Vec<u8> {
    tar_gz(&[
        ("data/power/data.npy", power_npy()),
        (
            "data/miniboone/data.npy",
            write_npy_f64(&Matrix::new(30, 43, vec![1.0; 30 * 43]).unwrap()),
        ),
        ("data/hepmass/1000_train.csv", hepmass_csv(50).into_bytes()),
        (
            "data/hepmass/1000_test.csv",
            hepmass_csv(20).replace("mass\n", "mass, x\n").into_bytes(),
        ),
    ])
}

/// A server of the one file `body` at `path`.
pub(super) fn serve(path: &str, body: Vec<u8>) -> TestServer {
    TestServer::start(HashMap::from([(path.to_string(), Route::new(body))]))
}

/// The sha256 sums recorded (trusted on first use) in the data folder `dir`; empty when there
/// are none.
pub(super) fn recorded_sums(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(".downloads/SHA256SUMS")).unwrap_or_default()
}

#[test]
fn maf_datasets_download_extract_and_load() {
    let srv = serve("/maf/data.tar.gz", maf_archive());
    let dir = tempdir();
    let out = download("power", dir.path(), &srv.base);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // No sha256 is published for the Zenodo archive: warned about, and recorded. The log is
    // plain text when stderr is a pipe (no colour escape codes).
    assert!(err.contains("no published checksum"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "escape codes in a piped log: {err:?}"
    );
    let recorded = recorded_sums(dir.path());
    assert!(recorded.contains("maf-data.tar.gz"), "{recorded}");
    assert_eq!(load_power(dir.path()).unwrap().sizes(), (33, 3, 4));
    assert!(!dir.path().join("miniboone/data.npy").exists());

    // Already installed: nothing is requested.
    let n = srv.requests().len();
    let again = download("power", dir.path(), &srv.base);
    assert!(again.status.success());
    assert_logged(&again, "already present");
    // HEPMASS reuses the cached archive, verified against the recorded sha256.
    let hep = download("hepmass", dir.path(), &srv.base);
    assert_succeeded(&hep);
    assert_eq!(srv.requests().len(), n);
    assert!(
        !stderr(&hep).contains("no published checksum"),
        "{}",
        stderr(&hep)
    );
    assert_eq!(load_hepmass(dir.path()).unwrap().sizes(), (45, 5, 20));

    // The cached archive is tampered with: its recorded sha256 catches it.
    std::fs::write(dir.path().join(".downloads/maf-data.tar.gz"), b"corrupt").unwrap();
    let bad = download("miniboone", dir.path(), &srv.base);
    assert_failed_saying(&bad, "checksum mismatch");
    assert!(!dir.path().join("miniboone/data.npy").exists());
}

/// A server that delivers a broken archive (here cut to a third, with a matching
/// `Content-Length`, so the transfer itself looks complete) for a file without a published
/// checksum: nothing may be extracted from it, and it must not stay pinned in the cache by a
/// recorded sha256 (it was, and every later run failed the same way even against a good
/// server). The next run downloads it afresh and installs.
#[test]
fn a_broken_archive_is_not_kept_and_the_next_run_downloads_it_afresh() {
    let good = maf_archive();
    let srv = serve("/maf/data.tar.gz", good[..good.len() / 3].to_vec());
    let dir = tempdir();
    let bad = download("power", dir.path(), &srv.base);
    assert_failed_saying(&bad, "Run the command again");
    assert!(!dir.path().join("power/data.npy").exists());
    assert!(!dir.path().join(".downloads/maf-data.tar.gz").exists());
    let recorded = recorded_sums(dir.path());
    assert!(!recorded.contains("maf-data.tar.gz"), "{recorded}");

    srv.set_route("/maf/data.tar.gz", Route::new(good.clone()));
    let out = download("power", dir.path(), &srv.base);
    assert_succeeded(&out);
    assert_eq!(load_power(dir.path()).unwrap().sizes(), (33, 3, 4));
    assert_eq!(
        recorded_sums(dir.path()),
        format!(
            "{}  maf-data.tar.gz\n",
            xtask::checksum::sha256_bytes(&good)
        )
    );

    // A broken archive already in the cache (e.g. pinned by an earlier version, its sha256
    // recorded) is moved aside, not trusted, and its record forgotten.
    let dir2 = tempdir();
    let cut = &good[..good.len() / 3];
    std::fs::create_dir_all(dir2.path().join(".downloads")).unwrap();
    std::fs::write(dir2.path().join(".downloads/maf-data.tar.gz"), cut).unwrap();
    std::fs::write(
        dir2.path().join(".downloads/SHA256SUMS"),
        format!("{}  maf-data.tar.gz\n", xtask::checksum::sha256_bytes(cut)),
    )
    .unwrap();
    let bad = download("miniboone", dir2.path(), &srv.base);
    assert!(!bad.status.success());
    assert_eq!(
        std::fs::read(dir2.path().join(".downloads/maf-data.tar.gz.bad")).unwrap(),
        cut
    );
    let out = download("miniboone", dir2.path(), &srv.base);
    assert_succeeded(&out);
    assert!(dir2.path().join("miniboone/data.npy").is_file());
}

/// A zip that is not one (UCI GAS) is not kept either.
#[test]
fn a_broken_zip_is_not_kept() {
    let srv = serve("/uci/gas/data.zip", b"PK\x03\x04 not really a zip".to_vec());
    let dir = tempdir();
    let bad = download("gas", dir.path(), &srv.base);
    assert!(!bad.status.success());
    assert!(!dir.path().join(".downloads/uci-gas-data.zip").exists());
}

#[test]
fn hepmass_falls_back_to_uci_and_gas_comes_from_the_uci_zip() {
    let train = hepmass_csv(50);
    let test = hepmass_csv(20).replace("mass\n", "mass, x\n");
    let mut zip_bytes = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut zip_bytes);
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("ethylene_methane.txt", o).unwrap();
        z.write_all(b"other\n").unwrap();
        z.start_file("data/ethylene_CO.txt", o).unwrap();
        z.write_all(GAS_TEXT.as_bytes()).unwrap();
        z.finish().unwrap();
    }
    let srv = TestServer::start(HashMap::from([
        (
            "/uci/hepmass/1000_train.csv.gz".into(),
            Route::new(gz(train.as_bytes())),
        ),
        (
            "/uci/hepmass/1000_test.csv.gz".into(),
            Route::new(gz(test.as_bytes())),
        ),
        (
            "/uci/gas/data.zip".into(),
            Route::new(zip_bytes.into_inner()),
        ),
    ]));
    let dir = tempdir();
    let out = download("hepmass", dir.path(), &srv.base);
    assert_succeeded(&out);
    assert_logged(&out, "did not deliver its files: trying the next source");
    let got = std::fs::read_to_string(dir.path().join("hepmass/1000_train.csv")).unwrap();
    assert_eq!(got, train);

    let out = download("gas", dir.path(), &srv.base);
    assert_succeeded(&out);
    let got = std::fs::read_to_string(dir.path().join("gas/ethylene_CO.txt")).unwrap();
    assert_eq!(got, GAS_TEXT);
}

#[test]
fn mnist_is_verified_by_content_and_rejected_when_wrong() {
    let names = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ];
    let routes: HashMap<String, Route> = names
        .iter()
        .map(|n| {
            let body = std::fs::read(shared_data().join(format!("mnist/{n}.gz"))).unwrap();
            (format!("/mnist/{n}.gz"), Route::new(body))
        })
        .collect();
    let srv = TestServer::start(routes);
    let dir = tempdir();
    let out = download("mnist", dir.path(), &srv.base);
    assert_succeeded(&out);
    assert!(!stderr(&out).contains("no published checksum"));
    let m = load_mnist(dir.path(), 10_000).unwrap();
    assert_eq!(m.test.rows(), 10_000);

    // A mirror serving other bytes: checksum mismatch, nothing installed.
    srv.set_route(
        "/mnist/t10k-labels-idx1-ubyte.gz",
        Route::new(gz(b"\x00\x00\x08\x01\x00\x00\x00\x00")),
    );
    let dir2 = tempdir();
    let out = download("mnist", dir2.path(), &srv.base);
    let err = failed_log(&out);
    assert!(
        err.contains("checksum mismatch") && err.contains("t10k-labels-idx1-ubyte.gz"),
        "{err}"
    );
    assert!(!dir2.path().join("mnist/t10k-labels-idx1-ubyte.gz").exists());
}

#[test]
fn bsds300_images_are_checked_one_by_one() {
    let real = std::fs::read(shared_data().join("bsds300/BSDS300-images.tar.gz")).unwrap();
    let srv = serve("/bsds300/BSDS300-images.tgz", real.clone());
    let dir = tempdir();
    let out = download("bsds300", dir.path(), &srv.base);
    assert_succeeded(&out);
    assert_logged(&out, "all 300 images match");
    // Every image is checked against its sha256: no "unverified" warning for the archive,
    // and no trust-on-first-use record of its bytes.
    let err = stderr(&out);
    assert!(
        !err.contains("no published checksum") && !err.contains("WARN"),
        "{err}"
    );
    let recorded = recorded_sums(dir.path());
    assert!(!recorded.contains("BSDS300"), "{recorded}");
    assert_eq!(
        std::fs::read(dir.path().join("bsds300/BSDS300-images.tgz")).unwrap(),
        real
    );

    let fake = tar_gz(&[("BSDS300/images/train/100075.jpg", b"not a jpeg".to_vec())]);
    srv.set_route("/bsds300/BSDS300-images.tgz", Route::new(fake));
    let dir2 = tempdir();
    let out = download("bsds300", dir2.path(), &srv.base);
    assert_failed_saying(&out, "not the official images");
    assert!(!dir2.path().join("bsds300/BSDS300-images.tgz").exists());
}

#[test]
fn cifar10_md5_mismatch_and_offline_message() {
    let fake = tar_gz(&[("cifar-10-batches-bin/test_batch.bin", vec![0u8; 100])]);
    let srv = serve("/cifar10/cifar-10-binary.tar.gz", fake);
    let dir = tempdir();
    let out = download("cifar10", dir.path(), &srv.base);
    assert_failed_saying(&out, "md5");

    let mirror = format!("http://127.0.0.1:{}", unused_port());
    let out = download("miniboone", dir.path(), &mirror);
    let err = failed_log(&out);
    assert!(err.contains(&format!("{mirror}/maf/data.tar.gz")), "{err}");
    assert!(
        err.contains("maf-data.tar.gz") && err.contains("by hand"),
        "{err}"
    );
}

/// A MAT-file header followed by filler (not IWAE's `chardata.mat`).
fn fake_chardata(fill: u8) -> Vec<u8> {
    let mut b = b"MATLAB 5.0 MAT-file, fabricated for the xtask tests".to_vec();
    b.resize(116, b' ');
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&[0x00, 0x01, b'I', b'M']);
    b.extend(std::iter::repeat_n(fill, 1000));
    b
}

/// Omniglot's file is held to its git blob id in the IWAE repository (no sha256 is
/// published): a different file, even one served in two parts (resumed), is refused with
/// both ids named, nothing is installed and nothing is recorded as trusted.
#[test]
fn omniglot_is_held_to_its_git_blob_id() {
    let srv = TestServer::start(HashMap::from([(
        "/omniglot/chardata.mat".into(),
        Route::new(fake_chardata(7)).truncated(1, 300),
    )]));
    let dir = tempdir();
    let out = download("omniglot", dir.path(), &srv.base);
    let err = failed_log(&out);
    assert!(
        err.contains("checksum mismatch")
            && err.contains("omniglot")
            && err.contains(&format!("git blob {OMNIGLOT_CHARDATA_GIT_BLOB}")),
        "{err}"
    );
    assert!(!err.contains("no published checksum"), "{err}");
    // The first response was cut short: the transfer was resumed, not restarted.
    assert!(
        srv.requests()
            .iter()
            .any(|s| s.path == "/omniglot/chardata.mat" && s.range.is_some()),
        "{:?}",
        srv.requests()
    );
    assert!(!dir.path().join("omniglot/chardata.mat").exists());
    let recorded = recorded_sums(dir.path());
    assert!(!recorded.contains("omniglot"), "{recorded}");
}

/// A mirror that answers 404 was reached: the error names the status and advises another
/// source, not "offline" or a download by hand of the 404 URL. `download all` names each
/// dataset once per error line (it printed `ERROR power: power: ...`).
#[test]
fn an_http_404_is_reported_as_such() {
    let srv = TestServer::start(HashMap::new());
    let dir = tempdir();
    let out = download("mnist", dir.path(), &srv.base);
    let err = failed_log(&out);
    assert!(
        err.contains("mnist: no source delivered it")
            && err.contains("HTTP 404 Not Found")
            && err.contains("--mirror"),
        "{err}"
    );
    assert!(
        !err.contains("offline") && !err.contains("could be reached"),
        "{err}"
    );
    // MNIST has four files: the message says so.
    assert!(err.contains("This source has 4 files"), "{err}");

    let out = download("all", dir.path(), &srv.base);
    let err = failed_log(&out);
    assert!(err.contains("failed to install: power, gas"), "{err}");
    for name in ["power", "gas", "hepmass", "omniglot"] {
        assert!(!err.contains(&format!("{name}: {name}:")), "{err}");
        assert!(
            err.contains(&format!("{name}: no source delivered it")),
            "{err}"
        );
    }
}
