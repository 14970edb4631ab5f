//! Whether an extracted file is what its `cpflow::datasets` loader reads, checked before
//! `cargo xtask download` installs it ([`crate::install`]).
//!
//! The files of the MAF archive and of UCI have no published checksum: a source that serves
//! other bytes (a bad mirror, an HTML error page inside a valid archive, random bytes) passes
//! every download check. Each such file is therefore read as its loader reads it:
//!
//! | file | check |
//! |---|---|
//! | `power/data.npy`, `miniboone/data.npy` | [`cpflow::datasets::read_npy_file`]: a `.npy` matrix with the loader's column count and at least one row |
//! | `hepmass/1000_{train,test}.csv` | [`cpflow::datasets::parse_signal_csv`] on the first [`PREFIX_BYTES`] (whole lines), at least one data row; then [`cpflow::datasets::read_signal_csv`] on the whole file |
//! | `gas/ethylene_CO.txt` | [`cpflow::datasets::parse_gas_sensors`] on the first [`PREFIX_BYTES`] (whole lines), at least one row; then [`cpflow::datasets::read_gas_sensors`] on the whole file |
//!
//! The text files are read in full once, at install: a source file cut short, or damaged past
//! its first lines, is refused before its archive's sha256 is recorded as trusted, not found at
//! the first training. At the real sizes that costs seconds against minutes of download
//! (measured in the dev profile, our crates at opt-level 1, on generated files of the real
//! sizes: HEPMASS's `1000_train.csv`, 369 MB, 5.7 s; GAS's `ethylene_CO.txt`, 4,208,261 rows,
//! 672 MB, 6.5 s; `cargo xtask` runs the release build, faster). Files held to a published
//! checksum (MNIST, CIFAR-10, Omniglot, BSDS300's images) are not checked again.
//!
//! A dataset already installed is checked more cheaply ([`check_installed`]): each file's size
//! against the size recorded when it was installed ([`crate::installed_sizes`]), a `.npy`
//! file by its header and size alone ([`cpflow::datasets::read_npy_shape`]: shape, dtype, no
//! byte missing or extra; POWER's 130 MB array is not read), a text file by its head as above.
//! `download --verify` reads them in full instead ([`check_loadable`]).

use std::io::Read;
use std::path::Path;

use cpflow::datasets::{
    DatasetError, GasConfig, MINIBOONE_COLUMNS, POWER_RAW_COLUMNS, layout, parse_gas_sensors,
    parse_signal_csv, read_gas_sensors_as, read_npy_file_as, read_npy_shape, read_signal_csv_as,
};

use crate::installed_sizes::recorded_size;

/// How many leading bytes of a text file are read ([`LoaderFormat::HepmassCsv`],
/// [`LoaderFormat::GasText`]): a few hundred rows.
pub const PREFIX_BYTES: usize = 64 * 1024;

/// What a loader reads, as far as it is checked here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoaderFormat {
    /// A 2-D `.npy` array with this many columns.
    NpyMatrix {
        /// The column count the loader requires.
        columns: usize,
    },
    /// A HEPMASS CSV: a header, then numeric rows whose first field is the label.
    HepmassCsv,
    /// UCI's GAS text: an optional header, then rows of 19 numbers.
    GasText,
}

/// The format of the installed file `rel` (a path of [`layout`]), when it is checked.
pub fn loader_format(rel: &str) -> Option<LoaderFormat> {
    match rel {
        layout::POWER => Some(LoaderFormat::NpyMatrix {
            columns: POWER_RAW_COLUMNS,
        }),
        layout::MINIBOONE => Some(LoaderFormat::NpyMatrix {
            columns: MINIBOONE_COLUMNS,
        }),
        layout::HEPMASS_TRAIN | layout::HEPMASS_TEST => Some(LoaderFormat::HepmassCsv),
        layout::GAS_TXT => Some(LoaderFormat::GasText),
        _ => None,
    }
}

/// An extracted file that its loader cannot read.
#[derive(Debug, thiserror::Error)]
#[error("{rel} is not what the dataset loader reads: {detail}")]
pub struct NotLoadable {
    /// The file, relative to the data directory.
    pub rel: String,
    /// What is wrong with it.
    pub detail: String,
}

/// Checks the file at `path`, installed (or about to be) as `rel`, against
/// [`loader_format`]`(rel)`; files without a format pass.
pub fn check_loadable(path: &Path, rel: &str) -> Result<(), NotLoadable> {
    check_loadable_as(path, rel, path)
}

/// [`check_loadable`] of the file read at `path` that messages call `named`: a staged copy of
/// the file to be installed at `named`.
pub fn check_loadable_as(path: &Path, rel: &str, named: &Path) -> Result<(), NotLoadable> {
    let not = |detail: String| NotLoadable {
        rel: rel.to_string(),
        detail,
    };
    let loader = |e: DatasetError| not(e.to_string());
    match loader_format(rel) {
        None => Ok(()),
        Some(LoaderFormat::NpyMatrix { columns }) => {
            let m = read_npy_file_as(path, named).map_err(loader)?;
            check_shape(m.rows(), m.cols(), columns).map_err(not)
        }
        Some(format) => {
            // The head first: a wrong file is told in milliseconds.
            check_text_head(path, named, format).map_err(not)?;
            read_text_in_full(path, named, format).map_err(loader)
        }
    }
}

/// Reads the text file at `path` (named `named` in errors) in full as its loader does (every
/// line is parsed: GAS's rows left out of the loader's sample too), storing what the loader
/// stores: at the real sizes a few seconds, measured in the module's docs.
fn read_text_in_full(path: &Path, named: &Path, format: LoaderFormat) -> Result<(), DatasetError> {
    match format {
        LoaderFormat::GasText => {
            read_gas_sensors_as(path, named, &GasConfig::default()).map(|_| ())
        }
        _ => read_signal_csv_as(path, named).map(|_| ()),
    }
}

/// The cheap check of the file `rel` installed in `dir`, for `download` of a dataset already
/// installed: its size is the one recorded when it was installed (when one was), a `.npy`
/// file's header announces the loader's columns and exactly the bytes the file has (its data
/// are not read), and a text file's head parses ([`check_loadable`]'s check of text files).
/// Damage inside a `.npy` file's data, or past a text file's head, with the size unchanged,
/// is found by [`check_loadable`] only (`download --verify`).
pub fn check_installed(dir: &Path, rel: &str) -> Result<(), NotLoadable> {
    let not = |detail: String| NotLoadable {
        rel: rel.to_string(),
        detail,
    };
    let path = dir.join(rel);
    let len = std::fs::metadata(&path)
        .map_err(|e| not(format!("cannot read it: {e}")))?
        .len();
    if let Some(installed) = recorded_size(dir, rel).filter(|&n| n != len) {
        return Err(not(format!(
            "it has {len} bytes, {installed} when it was installed (cut short or changed since)"
        )));
    }
    match loader_format(rel) {
        None => Ok(()),
        Some(LoaderFormat::NpyMatrix { columns }) => {
            let (rows, cols) = read_npy_shape(&path).map_err(|e| not(e.to_string()))?;
            check_shape(rows, cols, columns).map_err(not)
        }
        Some(format) => check_text_head(&path, &path, format).map_err(not),
    }
}

/// A `rows`x`cols` array is what a loader of `columns` columns reads.
fn check_shape(rows: usize, cols: usize, columns: usize) -> Result<(), String> {
    if cols != columns || rows == 0 {
        return Err(format!(
            "a {rows}x{cols} array, the loader needs {columns} columns and at least one row"
        ));
    }
    Ok(())
}

/// Parses the head of the text file at `path` (named `named` in messages) as `format`.
fn check_text_head(path: &Path, named: &Path, format: LoaderFormat) -> Result<(), String> {
    let head = read_head(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !has_data_line(&head) {
        return Err("it has no data line".into());
    }
    match format {
        LoaderFormat::GasText => {
            let all_rows = GasConfig {
                sample_fraction: None,
                seed: 0,
            };
            parse_gas_sensors(named, &head, &all_rows).map(|_| ())
        }
        _ => parse_signal_csv(named, &head).map(|_| ()),
    }
    .map_err(|e| e.to_string())
}

/// The first [`PREFIX_BYTES`] of a text file, cut after its last whole line (all of it when
/// the file is shorter).
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::with_capacity(PREFIX_BYTES + 1);
    std::fs::File::open(path)?
        .take(PREFIX_BYTES as u64 + 1)
        .read_to_end(&mut text)?;
    if text.len() > PREFIX_BYTES {
        let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        text.truncate(end);
    }
    Ok(text)
}

/// Whether a non-empty line follows the first one.
fn has_data_line(text: &[u8]) -> bool {
    String::from_utf8_lossy(text)
        .lines()
        .skip(1)
        .any(|l| !l.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpflow::datasets::{Matrix, write_npy_f64};

    #[test]
    fn npy_files_need_the_loaders_columns() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data.npy");
        std::fs::write(&p, b"\x93NUMPY junk").unwrap();
        let e = check_loadable(&p, layout::POWER).unwrap_err();
        assert!(
            e.to_string().starts_with("power/data.npy is not what"),
            "{e}"
        );
        let m = Matrix::new(3, 5, vec![0.5; 15]).unwrap();
        std::fs::write(&p, write_npy_f64(&m)).unwrap();
        let e = check_loadable(&p, layout::POWER).unwrap_err();
        assert!(e.to_string().contains("3x5 array"), "{e}");
        let m = Matrix::new(3, POWER_RAW_COLUMNS, vec![0.5; 3 * POWER_RAW_COLUMNS]).unwrap();
        std::fs::write(&p, write_npy_f64(&m)).unwrap();
        check_loadable(&p, layout::POWER).unwrap();
        // Files without a format are not read.
        check_loadable(&dir.path().join("missing"), "mnist/x.gz").unwrap();
    }

    /// A long text file is read in full by [`check_loadable`] (install, `--verify`): a bad
    /// number past [`PREFIX_BYTES`] is found, named with the file and its line; the cheap
    /// [`check_installed`] reads the head only and misses it. A bad number in the head is
    /// found (and named with the file's own path) by both.
    #[test]
    fn text_files_are_read_in_full_at_install_and_by_their_head_when_installed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(layout::GAS_TXT);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let row = format!("{}\n", vec!["1.5"; 19].join(" "));
        let rows = PREFIX_BYTES / row.len() + 10;
        let mut text = format!("Time (seconds), CO conc (ppm) ...\n{}", row.repeat(rows));
        std::fs::write(&p, &text).unwrap();
        check_loadable(&p, layout::GAS_TXT).unwrap();
        text.push_str("not numbers\n");
        std::fs::write(&p, &text).unwrap();
        check_installed(dir.path(), layout::GAS_TXT).unwrap();
        let e = check_loadable(&p, layout::GAS_TXT).unwrap_err().to_string();
        assert!(
            e.contains(&p.display().to_string())
                && e.contains(&format!("line {}", rows + 2))
                && e.contains("bad number"),
            "{e}"
        );
        text.insert_str(text.find('\n').unwrap() + 1, "1 2 x\n");
        std::fs::write(&p, &text).unwrap();
        for e in [
            check_loadable(&p, layout::GAS_TXT).unwrap_err(),
            check_installed(dir.path(), layout::GAS_TXT).unwrap_err(),
        ] {
            let e = e.to_string();
            assert!(
                e.contains(&p.display().to_string())
                    && e.contains("line 2")
                    && !e.contains(".head"),
                "{e}"
            );
        }
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);

        let csv = dir.path().join("1000_train.csv");
        std::fs::write(&csv, "# label, f0, f1\n1, 0.5, 2\n0, 9, 9\n").unwrap();
        check_loadable(&csv, layout::HEPMASS_TRAIN).unwrap();
        std::fs::write(&csv, "# label, f0, f1\n").unwrap();
        let e = check_loadable(&csv, layout::HEPMASS_TRAIN).unwrap_err();
        assert!(e.to_string().contains("no data line"), "{e}");
        std::fs::write(&csv, "<html><body>Not found</body></html>\n<p>x</p>\n").unwrap();
        assert!(check_loadable(&csv, layout::HEPMASS_TEST).is_err());
    }

    /// A staged copy is read where it is and named where it will be installed, for every
    /// format, and nothing is written beside it.
    #[test]
    fn a_staged_file_is_named_where_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let named = Path::new("/data/installed");
        let npy = dir.path().join("data.npy");
        std::fs::write(&npy, b"\x93NUMPY junk").unwrap();
        let csv = dir.path().join("1000_train.csv");
        let row = "1, 0.5, 2\n".repeat(PREFIX_BYTES / 10 + 10);
        std::fs::write(&csv, format!("# label, f0, f1\n1, x, 2\n{row}")).unwrap();
        // Past the head: found by the full read, which names the file it reads.
        let late = dir.path().join("1000_test.csv");
        std::fs::write(&late, format!("# label, f0, f1\n{row}1, x, 2\n")).unwrap();
        let late_line = row.lines().count() + 2;
        let gas_row = format!("{}\n", vec!["1.5"; 19].join(" "));
        let gas_rows = PREFIX_BYTES / gas_row.len() + 10;
        let late_gas = dir.path().join("ethylene_CO.txt");
        let gas = format!("Time CO\n{}1.5 x\n", gas_row.repeat(gas_rows));
        std::fs::write(&late_gas, gas).unwrap();
        for (path, rel) in [
            (&npy, layout::MINIBOONE),
            (&csv, layout::HEPMASS_TRAIN),
            (&late, layout::HEPMASS_TEST),
            (&late_gas, layout::GAS_TXT),
        ] {
            let e = check_loadable_as(path, rel, named).unwrap_err().to_string();
            assert!(
                e.contains("/data/installed") && !e.contains(&dir.path().display().to_string()),
                "{e}"
            );
        }
        // The full reads' messages, word for word.
        let e = check_loadable_as(&late, layout::HEPMASS_TEST, named).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "hepmass/1000_test.csv is not what the dataset loader reads: /data/installed: \
                 corrupt or unsupported file: line {late_line}: bad number \"x\""
            )
        );
        let e = check_loadable_as(&late_gas, layout::GAS_TXT, named).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "gas/ethylene_CO.txt is not what the dataset loader reads: /data/installed: \
                 corrupt or unsupported file: line {}: bad number \"x\"",
                gas_rows + 2
            )
        );
        let missing = dir.path().join("gone.npy");
        let e = check_loadable_as(&missing, layout::POWER, named).unwrap_err();
        assert!(
            e.to_string().contains("I/O error on /data/installed"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
    }

    /// The cheap check of an installed `.npy` reads its header and size: a file cut short, one
    /// with bytes appended, one of the wrong shape and one whose size differs from the record
    /// are each refused with what is wrong.
    #[test]
    fn an_installed_npy_is_checked_by_its_header_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(layout::POWER);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::create_dir_all(dir.path().join(".downloads")).unwrap();
        let m = Matrix::new(3, POWER_RAW_COLUMNS, vec![0.5; 3 * POWER_RAW_COLUMNS]).unwrap();
        let good = write_npy_f64(&m);
        std::fs::write(&p, &good).unwrap();
        check_installed(dir.path(), layout::POWER).unwrap();
        let refused = |bytes: &[u8], why: &str| {
            std::fs::write(&p, bytes).unwrap();
            let e = check_installed(dir.path(), layout::POWER)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("power/data.npy is not what") && e.contains(why),
                "{e}"
            );
        };
        refused(&good[..good.len() - 1], "truncated file");
        refused(
            &[&good[..], b"x"].concat(),
            "1 bytes after the announced data",
        );
        refused(&good[..20], "truncated file");
        let six = write_npy_f64(&Matrix::new(4, 6, vec![0.5; 24]).unwrap());
        refused(&six, "4x6 array");
        // The size recorded at install is checked first.
        std::fs::write(&p, &good).unwrap();
        crate::installed_sizes::record_installed(dir.path(), &[layout::POWER.to_string()]).unwrap();
        check_installed(dir.path(), layout::POWER).unwrap();
        refused(&good[..good.len() - 8], "when it was installed");
        std::fs::remove_file(&p).unwrap();
        let e = check_installed(dir.path(), layout::POWER).unwrap_err();
        assert!(e.to_string().contains("cannot read it"), "{e}");
    }
}
