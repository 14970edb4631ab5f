//! The loaders' `_as` entry points ([`read_signal_csv_as`], [`read_gas_sensors_as`],
//! [`read_npy_file_as`]) read a file at one path and name it at another (a staged copy
//! checked before it is renamed into place): each error is the plain loader's error, word for
//! word, for the same bytes at the shown path, and never names the path read.

use std::path::{Path, PathBuf};

use super::super::*;
use super::TempDir;

/// The same `bytes` at a staged path and at the path shown (`data/<name>`), as
/// `(staged, shown)`; `None` leaves both paths without a file.
fn staged_and_shown(dir: &TempDir, name: &str, bytes: Option<&[u8]>) -> (PathBuf, PathBuf) {
    let staged = format!("staging/{name}.tmp");
    let shown = format!("data/{name}");
    match bytes {
        Some(b) => (dir.write(&staged, b), dir.write(&shown, b)),
        None => (dir.path().join(staged), dir.path().join(shown)),
    }
}

/// `named` (the `_as` loader's error) is a `kind` error (its variant's name), the same as
/// `plain` (the plain loader's at the shown path), and does not name the staged path.
fn same_error(named: DatasetError, plain: DatasetError, staged: &Path, kind: &str) {
    assert!(format!("{named:?}").starts_with(kind), "{named:?}");
    let (named, plain) = (named.to_string(), plain.to_string());
    assert_eq!(named, plain);
    assert!(!named.contains(&staged.display().to_string()), "{named}");
    assert!(!named.contains("staging"), "{named}");
}

#[test]
fn a_signal_csv_read_as_another_path_is_named_there() {
    let dir = TempDir::new("shown-as-hepmass");
    let good = "# label, f0, f1\n1, 0.5, 2\n0, 9, 9\n";
    let (staged, shown) = staged_and_shown(&dir, "1000_train.csv", Some(good.as_bytes()));
    assert_eq!(read_signal_csv_as(&staged, &shown).unwrap().path, shown);
    let cases: [(&str, Option<&[u8]>, &str); 3] = [
        (
            "bad.csv",
            Some(b"# label, f0, f1\n1, x, 2\n0, 9, 9\n"),
            "Corrupt",
        ),
        (
            "cut.csv",
            Some(b"# label, f0, f1\n1, 0.5, 2\n0, 9"),
            "Truncated",
        ),
        ("gone.csv", None, "MissingFile"),
    ];
    for (name, bytes, kind) in cases {
        let (staged, shown) = staged_and_shown(&dir, name, bytes);
        let named = read_signal_csv_as(&staged, &shown).unwrap_err();
        same_error(named, read_signal_csv(&shown).unwrap_err(), &staged, kind);
    }
}

#[test]
fn gas_text_read_as_another_path_is_named_there() {
    let dir = TempDir::new("shown-as-gas");
    let row = vec!["1.5"; 19].join(" ");
    let all = GasConfig {
        sample_fraction: None,
        seed: 0,
    };
    let (staged, shown) =
        staged_and_shown(&dir, "ok.txt", Some(format!("Time CO\n{row}\n").as_bytes()));
    assert_eq!(
        read_gas_sensors_as(&staged, &shown, &all).unwrap().rows(),
        1
    );
    let bad = format!("Time CO\n{row}\n{}\n{row}\n", row.replacen("1.5", "x", 1));
    let cut = format!("Time CO\n{row}\n1.5 1.5");
    let cases: [(&str, Option<&[u8]>, &str); 3] = [
        ("bad.txt", Some(bad.as_bytes()), "Corrupt"), // line 3
        ("cut.txt", Some(cut.as_bytes()), "Truncated"),
        ("gone.txt", None, "MissingFile"),
    ];
    for (name, bytes, kind) in cases {
        let (staged, shown) = staged_and_shown(&dir, name, bytes);
        let named = read_gas_sensors_as(&staged, &shown, &all).unwrap_err();
        same_error(
            named,
            read_gas_sensors(&shown, &all).unwrap_err(),
            &staged,
            kind,
        );
    }
}

#[test]
fn an_npy_file_read_as_another_path_is_named_there() {
    let dir = TempDir::new("shown-as-npy");
    let m = Matrix::new(2, 3, vec![0.5; 6]).unwrap();
    let bytes = write_npy_f64(&m);
    let (staged, shown) = staged_and_shown(&dir, "ok.npy", Some(&bytes));
    assert_eq!(read_npy_file_as(&staged, &shown).unwrap(), m);
    let cases: [(&str, Option<&[u8]>, &str); 3] = [
        ("text.npy", Some(b"plain text, not a numpy file"), "Corrupt"),
        ("cut.npy", Some(&bytes[..bytes.len() - 1]), "Truncated"),
        ("gone.npy", None, "Io"), // not found
    ];
    for (name, bytes, kind) in cases {
        let (staged, shown) = staged_and_shown(&dir, name, bytes);
        let named = read_npy_file_as(&staged, &shown).unwrap_err();
        same_error(named, read_npy_file(&shown).unwrap_err(), &staged, kind);
    }
}
