//! The record of a run's data, `<out>/data_record.json`, kept from the run's start: a
//! resume refuses other data ([`check_data_record`]) and `eval` of the run's own split
//! refuses a changed data file ([`check_scored_data`]).

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::cli::data::{DataSource, LoadedData, Rows, SourceName};
use crate::cli::run_dir::{DATA_RECORD, absolute};

/// What identifies the data of a tabular or toy run, kept in `<out>/data_record.json` from
/// its start: `--resume` refuses other data ([`check_data_record`]). A file (`.npy`, `.csv`,
/// the picture of an image density) is identified by its size and sha256; a tabular
/// benchmark by the sha256 of its rows after MAF's preprocessing (its files sit under
/// `data.root`, which a resume may move); a generated toy by its settings (source, seed,
/// sizes), which [`crate::cli::resume_check::check_train_resume`] compares already.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    /// `data.source` (a file's path absolute).
    pub source: String,
    /// Columns.
    pub dim: usize,
    /// Rows of the three parts.
    pub n_train: usize,
    pub n_val: usize,
    pub n_test: usize,
    /// The file read (data files and image densities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRecord>,
    /// Tabular benchmarks: sha256 of the training, validation and test rows (each part's
    /// row count, then its values as little-endian f32, in that order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_sha256: Option<String>,
}

/// A data file: its path, size and sha256 (lower-case hex).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

impl FileRecord {
    /// How the file `now` differs from this record (the run's), in words; `None` when its
    /// size and sha256 are the same.
    fn change(&self, now: &FileRecord) -> Option<String> {
        let short = |h: &str| h.chars().take(16).collect::<String>();
        ((self.bytes, &self.sha256) != (now.bytes, &now.sha256)).then(|| {
            format!(
                "{} has changed since the run started: {} bytes with sha256 {}… then, {} bytes \
                 with sha256 {}… now",
                now.path.display(),
                self.bytes,
                short(&self.sha256),
                now.bytes,
                short(&now.sha256)
            )
        })
    }

    /// Reads `path` through.
    pub fn of(path: &Path) -> Result<Self> {
        use sha2::{Digest, Sha256};
        use std::io::Read;
        let mut file = std::fs::File::open(path)
            .with_context(|| format!("opening {} to record its sha256", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {} to record its sha256", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(FileRecord {
            path: absolute(path)?,
            bytes,
            sha256: hex::encode(hasher.finalize()),
        })
    }
}

/// sha256 of the parts' rows: each part's value count (u64), then its values (little-endian).
fn rows_sha256(parts: &[&Rows]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        match part {
            Rows::F32(v) => v.chunks(1 << 14).for_each(|c| {
                hasher.update(c.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
            }),
            Rows::F64(v) => v.chunks(1 << 14).for_each(|c| {
                hasher.update(c.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
            }),
        }
    }
    hex::encode(hasher.finalize())
}

impl DataRecord {
    /// The record of `data`, read from `source` (`data.source` as `config.toml` keeps it).
    pub fn of(source: &str, data: &LoadedData) -> Result<Self> {
        let file = SourceName::of(source)
            .file()
            .map(FileRecord::of)
            .transpose()?;
        let rows_sha256 = matches!(data.source, DataSource::Tabular(_))
            .then(|| rows_sha256(&[&data.train, &data.val, &data.test]));
        Ok(DataRecord {
            source: source.to_string(),
            dim: data.dim,
            n_train: data.n_train(),
            n_val: data.n_val(),
            n_test: data.n_test(),
            file,
            rows_sha256,
        })
    }

    /// How `now` differs from this record (the run's), in words; `None` when it does not.
    fn difference(&self, now: &DataRecord) -> Option<String> {
        let short = |h: &str| h.chars().take(16).collect::<String>();
        let sizes = |r: &DataRecord| {
            format!(
                "{} + {} + {} rows (training + validation + test) of {} columns",
                r.n_train, r.n_val, r.n_test, r.dim
            )
        };
        if let (Some(a), Some(b)) = (&self.file, &now.file)
            && let Some(why) = a.change(b)
        {
            return Some(why);
        }
        if self.rows_sha256 != now.rows_sha256 {
            return Some(format!(
                "the rows of `{}` (read under data.root) are not the run's: sha256 of the rows \
                 {}… then, {}… now ({} then, {} now)",
                now.source,
                short(self.rows_sha256.as_deref().unwrap_or("none")),
                short(now.rows_sha256.as_deref().unwrap_or("none")),
                sizes(self),
                sizes(now)
            ));
        }
        if self != now {
            return Some(format!(
                "`{}` gives {} now, the run was made with `{}`: {}",
                now.source,
                sizes(now),
                self.source,
                sizes(self)
            ));
        }
        None
    }
}

/// `--resume` of a tabular or toy run: refuses data that differ from `<out>/data_record.json`,
/// naming the file and what to do. A run made before cpflow kept the record resumes, with a
/// warning that its data could not be checked; returns whether there was a record.
pub fn check_data_record(out: &Path, now: &DataRecord) -> Result<bool> {
    let Some(run) = read_data_record(out, "resume")? else {
        tracing::warn!(
            "{} is missing (the run was made before cpflow recorded its data): the data of \
             this resume could not be checked against the run's; they are recorded now, for \
             later resumes",
            out.join(DATA_RECORD).display()
        );
        return Ok(false);
    };
    if let Some(why) = run.difference(now) {
        let restore = match &run.file {
            Some(f) => format!("restore {} as it was", f.path.display()),
            None => format!("restore the data `{}` as they were", run.source),
        };
        bail!(
            "--resume: the data differ from those the run in {} was trained on: {why}. A \
             resume continues with the run's rows and scores its test split, so it needs the \
             same data: {restore} and resume again, or start the run anew on the new data \
             with `--overwrite` (or another --out)",
            out.display()
        );
    }
    Ok(true)
}

/// A command that reads a run's own data file (`source`, its `data.source`: a `.npy`, a
/// `.csv`, the picture of an image density) from `<run_dir>/config.toml`: refuses a file that
/// is no longer there, naming the run's setting and what to do (`what_to_do`), before the
/// data's reader says only "No such file or directory". A toy or a benchmark passes
/// (`None`); a data file that is there is returned.
pub fn require_run_data_file<'a>(
    run_dir: &Path,
    source: &'a str,
    what_to_do: &str,
) -> Result<Option<&'a Path>> {
    let Some(path) = SourceName::of(source).file() else {
        return Ok(None);
    };
    if path.exists() {
        return Ok(Some(path));
    }
    bail!(
        "the run's data file {} (data.source in {}) is not there any more: {what_to_do}",
        path.display(),
        run_dir.join("config.toml").display()
    )
}

/// `cpflow eval` of a run on its own data (no `--data`), before the data are read: the
/// file the run was trained on (`data.source` = `source`: a `.npy`, a `.csv`, the picture
/// of an image density) must be as `<run>/data_record.json` recorded it, or the score would
/// not be the run's test split (the rows are split again from whatever the file holds now).
/// Toys are generated from the run's settings and tabular benchmarks are checked by
/// `cargo xtask download`; a run made before cpflow kept the record is scored unchecked,
/// and a missing file is refused ([`require_run_data_file`]).
pub fn check_scored_data(run_dir: &Path, source: &str) -> Result<()> {
    let Some(path) = require_run_data_file(
        run_dir,
        source,
        "restore it to score the run's test split, or score other data with `--data \
         <file.npy|file.csv|toy|benchmark>`",
    )?
    else {
        return Ok(());
    };
    let Some(run) = read_data_record(run_dir, "score")? else {
        return Ok(());
    };
    let now = FileRecord::of(path)?;
    if let Some(why) = run.file.as_ref().and_then(|then| then.change(&now)) {
        bail!(
            "the run's data differ from those it was trained on: {why}. Its test split cannot \
             be drawn from them again; restore the file to score the run's test split, or \
             score every row of the file as it is now with `--data {source}`"
        );
    }
    Ok(())
}

/// `<out>/data_record.json`, or `None` for a run made before cpflow kept it; `what` (the
/// command's purpose: "resume", "score") completes the advice of an unreadable file.
fn read_data_record(out: &Path, what: &str) -> Result<Option<DataRecord>> {
    let path = out.join(DATA_RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let run = serde_json::from_str(&text).with_context(|| {
        format!(
            "reading {} (the record of the run's data; delete it to {what} without checking \
             the data)",
            path.display()
        )
    })?;
    Ok(Some(run))
}

/// Writes `<out>/data_record.json` (once every check has passed).
pub fn write_data_record(out: &Path, record: &DataRecord) -> Result<()> {
    let text = serde_json::to_string_pretty(record)?;
    crate::cli::output_files::write_file_atomic(
        &out.join(DATA_RECORD),
        text.as_bytes(),
        "the record of the run's data",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file is identified by its size and sha256 (the FIPS 180-2 value of "abc"); a
    /// tabular benchmark by its rows, so that rows moved between the parts or changed count;
    /// the message of a changed file names it.
    #[test]
    fn data_records_tell_changed_data() {
        let dir = std::env::temp_dir().join(format!("cpflow-data-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("abc.csv");
        std::fs::write(&p, "abc").unwrap();
        let f = FileRecord::of(&p).unwrap();
        assert_eq!(f.bytes, 3);
        assert_eq!(
            f.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let tabular = |train: Vec<f32>, val: Vec<f32>| LoadedData {
            dim: 2,
            train: Rows::F32(train),
            val: Rows::F32(val),
            test: Rows::F32(vec![5.0, 6.0]),
            source: DataSource::Tabular(crate::datasets::TabularDataset::Power),
        };
        let record = |d: &LoadedData| DataRecord::of("power", d).unwrap();
        let run = record(&tabular(vec![1.0, 2.0, 3.0, 4.0], vec![]));
        assert_eq!(run.difference(&run.clone()), None);
        assert!(run.rows_sha256.is_some() && run.file.is_none());
        // The same values, one row moved to the validation part.
        let moved = record(&tabular(vec![1.0, 2.0], vec![3.0, 4.0]));
        let why = run.difference(&moved).unwrap();
        assert!(
            why.contains("power") && why.contains("2 + 0 + 1 rows"),
            "{why}"
        );
        assert!(why.contains("1 + 1 + 1 rows"), "{why}");
        let changed = record(&tabular(vec![1.0, 2.0, 3.0, 4.5], vec![]));
        assert!(run.difference(&changed).is_some());
        // A file changed in place.
        let csv = |text: &str| {
            std::fs::write(&p, text).unwrap();
            let d = LoadedData {
                dim: 1,
                train: Rows::F64(vec![1.0, 2.0]),
                val: Rows::F64(vec![]),
                test: Rows::F64(vec![]),
                source: DataSource::Csv(p.clone()),
            };
            DataRecord::of(p.to_str().unwrap(), &d).unwrap()
        };
        let (a, b) = (csv("1\n2\n"), csv("1\n3\n"));
        let why = a.difference(&b).unwrap();
        assert!(why.contains("abc.csv") && why.contains("changed"), "{why}");
        assert_eq!(a.difference(&csv("1\n2\n")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
