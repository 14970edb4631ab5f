//! Output files of `sample`, `plot` and `ot`: directories checked before anything is
//! computed, whole files written atomically (`crate::checkpoint::write_atomic`), and sample
//! rows streamed chunk by chunk into a temporary file that is renamed into place at the end.
//! Files written together (`sample --output S --log-prob L`) are renamed as one unit
//! ([`finish_together`]): a failure leaves the old pair (or none), never a new S beside an
//! old L, and no temporary or backup file. Every I/O error names the path and what was
//! being written.

mod together;

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub use together::{PendingFile, StagedFile, finish_together};

/// Creates `dir` (and its parents) for `purpose` (e.g. "the plot directory"). A path one of
/// whose components is an existing file is refused with that file named (the bare OS error
/// was `File exists (os error 17)`).
pub fn ensure_dir(dir: &Path, purpose: &str) -> Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    if let Some(file) = dir
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .find(|a| a.exists() && !a.is_dir())
    {
        bail!(
            "cannot use {} as {purpose}: {} exists and is not a directory (choose another path)",
            dir.display(),
            file.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {} ({purpose})", dir.display()))
}

/// Writes `bytes` to `path` atomically (temporary file beside it, then a rename), with the
/// path and `what` the file is in the error.
pub fn write_file_atomic(path: &Path, bytes: &[u8], what: &str) -> Result<()> {
    crate::checkpoint::write_atomic(path, bytes)
        .with_context(|| format!("writing {what} to {}", path.display()))
}

/// Row values in the float type they were computed in.
#[derive(Clone, Copy, Debug)]
pub enum RowValues<'a> {
    /// Single precision (`.npy` dtype `<f4`).
    F32(&'a [f32]),
    /// Double precision (`.npy` dtype `<f8`).
    F64(&'a [f64]),
}

impl RowValues<'_> {
    fn len(&self) -> usize {
        match self {
            RowValues::F32(v) => v.len(),
            RowValues::F64(v) => v.len(),
        }
    }
}

/// Float type of the values of a [`RowsWriter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowType {
    /// `f32`, `.npy` dtype `<f4`.
    F32,
    /// `f64`, `.npy` dtype `<f8`.
    F64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Npy,
    Csv,
}

/// An `(n, d)` array written in chunks of rows: `.npy` (version 1.0, little-endian, C order,
/// `<f4` or `<f8`) or `.csv` (one row per line, shortest round-trip decimals), chosen by the
/// extension. The rows go to a temporary file beside `path`; [`RowsWriter::stage`] checks
/// that exactly `n` rows came, and [`finish_together`] renames it into place (with other files
/// as one unit). Dropped unfinished (an error on the way), it removes the temporary file,
/// leaving no partial output.
pub struct RowsWriter {
    path: PathBuf,
    tmp: PathBuf,
    /// What the rows are, for the error messages ("samples", "log-densities").
    what: &'static str,
    out: Option<BufWriter<File>>,
    format: Format,
    row_type: RowType,
    dim: usize,
    rows: usize,
    written: usize,
}

impl RowsWriter {
    /// Opens the temporary file for `rows` rows of `dim` values of `row_type` to be written
    /// to `path` (`.npy` or `.csv`; the directory is created). Call it before the rows are
    /// computed: a bad path fails at once. Its errors say it writes samples.
    pub fn create(path: &Path, dim: usize, rows: usize, row_type: RowType) -> Result<Self> {
        Self::create_labelled(path, dim, rows, row_type, "samples")
    }

    /// As [`RowsWriter::create`], for rows that are `what` (e.g. "log-densities": a write
    /// error then reads "writing log-densities to …").
    pub fn create_labelled(
        path: &Path,
        dim: usize,
        rows: usize,
        row_type: RowType,
        what: &'static str,
    ) -> Result<Self> {
        let lower = path.to_string_lossy().to_ascii_lowercase();
        let format = if lower.ends_with(".npy") {
            Format::Npy
        } else if lower.ends_with(".csv") {
            Format::Csv
        } else {
            bail!("{}: the output must end in .npy or .csv", path.display());
        };
        if dim == 0 {
            bail!("{}: rows of no value cannot be written", path.display());
        }
        if path.is_dir() {
            bail!(
                "{} is a directory: give a file name ending in .npy or .csv",
                path.display()
            );
        }
        let dir = crate::checkpoint::dir_of(path);
        ensure_dir(dir, &format!("the directory of {}", path.display()))?;
        let tmp = crate::checkpoint::hidden_file_beside(path, "tmp");
        let file = File::create(&tmp).with_context(|| {
            format!(
                "creating {} (the temporary file of {})",
                tmp.display(),
                path.display()
            )
        })?;
        let mut w = RowsWriter {
            path: path.to_path_buf(),
            tmp,
            what,
            out: Some(BufWriter::new(file)),
            format,
            row_type,
            dim,
            rows,
            written: 0,
        };
        if format == Format::Npy {
            let header = npy_header(row_type, rows, dim);
            w.put(&header)?;
        }
        Ok(w)
    }

    /// What an I/O error on the temporary file was doing.
    fn writing(&self) -> String {
        format!(
            "writing {} to {} (the temporary file of {})",
            self.what,
            self.tmp.display(),
            self.path.display()
        )
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let written = self
            .out
            .as_mut()
            .context("the rows file is already finished")?
            .write_all(bytes);
        written.with_context(|| self.writing())
    }

    /// Appends whole rows (`values.len()` a multiple of the dimension, of the writer's float
    /// type).
    pub fn write(&mut self, values: RowValues<'_>) -> Result<()> {
        let n = values.len() / self.dim;
        if !values.len().is_multiple_of(self.dim) || self.written + n > self.rows {
            bail!(
                "{}: {} values are not whole rows of {} within the {} announced",
                self.path.display(),
                values.len(),
                self.dim,
                self.rows
            );
        }
        let mut bytes = Vec::with_capacity(values.len() * 12);
        match (self.format, values) {
            (Format::Npy, RowValues::F32(v)) if self.row_type == RowType::F32 => {
                v.iter().for_each(|x| bytes.extend(x.to_le_bytes()));
            }
            (Format::Npy, RowValues::F64(v)) if self.row_type == RowType::F64 => {
                v.iter().for_each(|x| bytes.extend(x.to_le_bytes()));
            }
            (Format::Csv, RowValues::F32(v)) => csv_lines(&mut bytes, v, self.dim),
            (Format::Csv, RowValues::F64(v)) => csv_lines(&mut bytes, v, self.dim),
            (Format::Npy, _) => bail!(
                "{}: values of another float type than the header's {:?}",
                self.path.display(),
                self.row_type
            ),
        }
        self.put(&bytes)?;
        self.written += n;
        Ok(())
    }

    /// Flushes, syncs and renames the temporary file onto the path (alone: the commands
    /// finish their files with [`finish_together`]).
    #[cfg(test)]
    pub fn finish(self) -> Result<()> {
        finish_together(vec![Box::new(move || self.stage())])
    }

    /// Checks that every row came, flushes and syncs the temporary file: the file is ready
    /// to be renamed into place by [`finish_together`] (with others as one unit).
    pub fn stage(mut self) -> Result<StagedFile> {
        if self.written != self.rows {
            bail!(
                "{}: {} rows written of the {} announced",
                self.path.display(),
                self.written,
                self.rows
            );
        }
        let out = self
            .out
            .take()
            .context("the rows file is already finished")?;
        // The staged file owns the temporary from here (removing it on an error); the file
        // handles below are dropped before it.
        let staged = StagedFile::new(self.path.clone(), self.tmp.clone(), self.what);
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| self.writing())?;
        file.sync_all()
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        Ok(staged)
    }
}

impl Drop for RowsWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn csv_lines<T: std::fmt::Display>(out: &mut Vec<u8>, values: &[T], dim: usize) {
    for row in values.chunks(dim) {
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            // `Display` of f32/f64 is the shortest decimal that reads back to the same value.
            let _ = write!(out, "{v}");
        }
        out.push(b'\n');
    }
}

/// The `.npy` version 1.0 header of a C-order `(rows, dim)` little-endian array, padded with
/// spaces to a multiple of 64 bytes as numpy writes it.
fn npy_header(row_type: RowType, rows: usize, dim: usize) -> Vec<u8> {
    let descr = match row_type {
        RowType::F32 => "<f4",
        RowType::F64 => "<f8",
    };
    let mut dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    // The dictionary is under 200 bytes: the u16 length cannot overflow.
    out.extend((dict.len() as u16).to_le_bytes());
    out.extend(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cpflow-out-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// f32 rows are written as `<f4` and f64 rows as `<f8`, in chunks; the library's reader
    /// gets the values back; no temporary file is left.
    #[test]
    fn npy_rows_keep_their_float_type() {
        let dir = temp("npy");
        let p = dir.join("s.npy");
        let mut w = RowsWriter::create(&p, 2, 3, RowType::F32).unwrap();
        w.write(RowValues::F32(&[0.1, -2.0, 3.5, 4.0])).unwrap();
        w.write(RowValues::F32(&[5.0, 6.25])).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let header = 10 + usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        assert_eq!(header % 64, 0);
        assert!(String::from_utf8_lossy(&bytes[..header]).contains("'<f4'"));
        assert_eq!(bytes.len(), header + 6 * 4);
        let m = crate::datasets::read_npy_file(&p).unwrap();
        assert_eq!(m.cols(), 2);
        assert_eq!(m.into_data()[0], f64::from(0.1f32));
        let p8 = dir.join("t.npy");
        let mut w = RowsWriter::create(&p8, 1, 2, RowType::F64).unwrap();
        w.write(RowValues::F64(&[0.1, 0.2])).unwrap();
        w.finish().unwrap();
        let m = crate::datasets::read_npy_file(&p8).unwrap();
        assert_eq!(m.into_data(), vec![0.1, 0.2]);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 2, "{names:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A write error (a full disk: the temporary file is `/dev/full`) names what was being
    /// written: samples or log-densities, both in a chunk too large for the buffer (the error
    /// comes from `write`) and in one the buffer holds (it comes when `stage` flushes). The
    /// log-prob file's errors said "writing samples" before. Nothing is left behind.
    #[cfg(target_os = "linux")]
    #[test]
    fn write_errors_name_what_is_written() {
        let dir = temp("full");
        // 2048 f64 values in `.npy`: 16 KiB, more than `BufWriter`'s 8 KiB buffer.
        let big = vec![0.5f64; 2048];
        for what in ["samples", "log-densities"] {
            let p = dir.join(format!("{what}.npy"));
            let err = |e: anyhow::Error| format!("{e:#}");
            std::os::unix::fs::symlink(
                "/dev/full",
                crate::checkpoint::hidden_file_beside(&p, "tmp"),
            )
            .unwrap();
            let mut w = RowsWriter::create_labelled(&p, 1, big.len(), RowType::F64, what).unwrap();
            let e = err(w.write(RowValues::F64(&big)).unwrap_err());
            assert!(e.starts_with(&format!("writing {what} to ")), "{e}");
            assert!(e.contains(&p.display().to_string()), "{e}");
            drop(w);
            std::os::unix::fs::symlink(
                "/dev/full",
                crate::checkpoint::hidden_file_beside(&p, "tmp"),
            )
            .unwrap();
            let mut w = RowsWriter::create_labelled(&p, 1, 2, RowType::F64, what).unwrap();
            w.write(RowValues::F64(&[1.0, 2.0])).unwrap();
            let e = err(w.stage().err().unwrap());
            assert!(e.starts_with(&format!("writing {what} to ")), "{e}");
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A writer dropped before `finish` (an error while sampling) leaves nothing; too few
    /// rows, a wrong extension and a file in the way are errors naming the path.
    #[test]
    fn unfinished_or_bad_outputs_leave_nothing() {
        let dir = temp("bad");
        let p = dir.join("s.csv");
        let mut w = RowsWriter::create(&p, 2, 2, RowType::F64).unwrap();
        w.write(RowValues::F64(&[1.0, 2.0])).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let w = RowsWriter::create(&p, 2, 2, RowType::F64).unwrap();
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains("0 rows written of the 2"), "{err}");
        assert!(!p.exists());
        let err = RowsWriter::create(&dir.join("s.txt"), 2, 1, RowType::F64)
            .err()
            .unwrap();
        assert!(err.to_string().contains("s.txt"), "{err}");
        let afile = dir.join("afile");
        std::fs::write(&afile, b"x").unwrap();
        let err = RowsWriter::create(&afile.join("x.npy"), 2, 1, RowType::F64)
            .err()
            .unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("afile") && msg.contains("not a directory"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
