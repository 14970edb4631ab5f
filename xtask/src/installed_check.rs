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
//! | `hepmass/1000_{train,test}.csv` | [`cpflow::datasets::read_signal_csv`] on the first [`PREFIX_BYTES`] (whole lines), at least one data row |
//! | `gas/ethylene_CO.txt` | [`cpflow::datasets::read_gas_sensors`] on the first [`PREFIX_BYTES`] (whole lines), at least one row |
//!
//! The text files are read in part (the loaders take seconds on the full files; a wrong file
//! shows in its first lines). Files held to a published checksum (MNIST, CIFAR-10, Omniglot,
//! BSDS300's images) are not checked again.

use std::io::Read;
use std::path::{Path, PathBuf};

use cpflow::datasets::{
    DatasetError, GasConfig, MINIBOONE_COLUMNS, POWER_RAW_COLUMNS, layout, read_gas_sensors,
    read_npy_file, read_signal_csv,
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
    let not = |detail: String| NotLoadable {
        rel: rel.to_string(),
        detail,
    };
    match loader_format(rel) {
        None => Ok(()),
        Some(LoaderFormat::NpyMatrix { columns }) => {
            let m = read_npy_file(path).map_err(|e| not(e.to_string()))?;
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
            let head = TextHead::read(path).map_err(|e| not(format!("cannot read it: {e}")))?;
            if !head.has_data_line() {
                return Err(not("it has no data line".into()));
            }
            let checked = head
                .file(path)
                .map_err(|e| not(format!("cannot check it: {e}")))?;
            let result = match format {
                LoaderFormat::GasText => {
                    let all_rows = GasConfig {
                        sample_fraction: None,
                        seed: 0,
                    };
                    read_gas_sensors(&checked, &all_rows).map(|_| ())
                }
                _ => read_signal_csv(&checked).map(|_| ()),
            };
            if checked != path {
                let _ = std::fs::remove_file(&checked);
            }
            result.map_err(|e| not(loader_message(&e, &checked, path)))
        }
    }
}

/// The loader's message, naming `path` where it named the copy of its first lines.
fn loader_message(e: &DatasetError, checked: &Path, path: &Path) -> String {
    e.to_string()
        .replace(&checked.display().to_string(), &path.display().to_string())
}

/// The first [`PREFIX_BYTES`] of a text file, cut after its last whole line (all of it when
/// the file is shorter).
struct TextHead {
    text: Vec<u8>,
    whole_file: bool,
}

impl TextHead {
    fn read(path: &Path) -> std::io::Result<Self> {
        let mut text = Vec::with_capacity(PREFIX_BYTES + 1);
        std::fs::File::open(path)?
            .take(PREFIX_BYTES as u64 + 1)
            .read_to_end(&mut text)?;
        let whole_file = text.len() <= PREFIX_BYTES;
        if !whole_file {
            let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            text.truncate(end);
        }
        Ok(Self { text, whole_file })
    }

    /// Whether a non-empty line follows the first one.
    fn has_data_line(&self) -> bool {
        String::from_utf8_lossy(&self.text)
            .lines()
            .skip(1)
            .any(|l| !l.trim().is_empty())
    }

    /// The file the loader reads: `path` itself when it is short, else a copy of the head
    /// beside it (`<path>.head`, removed by the caller).
    fn file(&self, path: &Path) -> std::io::Result<PathBuf> {
        if self.whole_file {
            return Ok(path.to_path_buf());
        }
        let mut head = path.as_os_str().to_owned();
        head.push(".head");
        let head = PathBuf::from(head);
        std::fs::write(&head, &self.text)?;
        Ok(head)
    }
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
}
