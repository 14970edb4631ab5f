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
//! | `hepmass/1000_{train,test}.csv` | [`cpflow::datasets::parse_signal_csv`] on the first [`PREFIX_BYTES`] (whole lines), at least one data row |
//! | `gas/ethylene_CO.txt` | [`cpflow::datasets::parse_gas_sensors`] on the first [`PREFIX_BYTES`] (whole lines), at least one row |
//!
//! The text files are read in part (the loaders take seconds on the full files; a wrong file
//! shows in its first lines). Files held to a published checksum (MNIST, CIFAR-10, Omniglot,
//! BSDS300's images) are not checked again.

use std::io::Read;
use std::path::Path;

use cpflow::datasets::{
    DatasetError, GasConfig, MINIBOONE_COLUMNS, POWER_RAW_COLUMNS, layout, parse_gas_sensors,
    parse_npy_matrix, parse_signal_csv,
};

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
            let bytes = std::fs::read(path).map_err(|cause| {
                loader(DatasetError::Io {
                    path: named.to_path_buf(),
                    cause,
                })
            })?;
            let m = parse_npy_matrix(named, &bytes).map_err(loader)?;
            if m.cols() != columns || m.rows() == 0 {
                return Err(not(format!(
                    "a {}x{} array, the loader needs {columns} columns and at least one row",
                    m.rows(),
                    m.cols()
                )));
            }
            Ok(())
        }
        Some(format) => {
            let head = read_head(path).map_err(|e| not(format!("cannot read it: {e}")))?;
            if !has_data_line(&head) {
                return Err(not("it has no data line".into()));
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
            .map_err(loader)
        }
    }
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

    /// A long text file is checked on its first lines: a bad number there is found (and named
    /// with the file's own path), one past [`PREFIX_BYTES`] is not.
    #[test]
    fn text_files_are_checked_on_their_head() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ethylene_CO.txt");
        let row = format!("{}\n", vec!["1.5"; 19].join(" "));
        let rows = PREFIX_BYTES / row.len() + 10;
        let mut text = format!("Time (seconds), CO conc (ppm) ...\n{}", row.repeat(rows));
        text.push_str("not numbers\n");
        std::fs::write(&p, &text).unwrap();
        check_loadable(&p, layout::GAS_TXT).unwrap();
        text.insert_str(text.find('\n').unwrap() + 1, "1 2 x\n");
        std::fs::write(&p, &text).unwrap();
        let e = check_loadable(&p, layout::GAS_TXT).unwrap_err().to_string();
        assert!(
            e.contains(&p.display().to_string()) && !e.contains(".head"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

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
        for (path, rel) in [(&npy, layout::MINIBOONE), (&csv, layout::HEPMASS_TRAIN)] {
            let e = check_loadable_as(path, rel, named).unwrap_err().to_string();
            assert!(
                e.contains("/data/installed") && !e.contains(&dir.path().display().to_string()),
                "{e}"
            );
        }
        let missing = dir.path().join("gone.npy");
        let e = check_loadable_as(&missing, layout::POWER, named).unwrap_err();
        assert!(
            e.to_string().contains("I/O error on /data/installed"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
