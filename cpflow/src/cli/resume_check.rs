//! `--resume` continues a run as it was made: the requested configuration is compared with
//! the run's (its checkpoint and `config.toml`), and only what may change on a resume may
//! differ. A change that would be ignored (the model, the optimiser) or would silently make
//! another experiment (the data, the schedule, the seeds) is refused with the keys and both
//! values named.

use crate::cli::run_kind::{RunKind, check_run_kind};
use anyhow::{Context, Result, bail};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

use crate::cli::data::{DataSource, LoadedData, Rows};
use crate::cli::run_config::{Overrides, RunConfig, resolve, resolve_image};
use crate::cli::run_dir::{DATA_RECORD, absolute, absolute_run_config, resume_checkpoint};

/// What `cpflow train --resume` may change (tabular and toy runs): the length of the run,
/// the batch size (the trainer starts a new epoch where the old one no longer fits), logging,
/// checkpoint and monitoring periods, the evaluation chunk size, everything under `[run]`
/// (device, output, NLL-curve period, plots, progress bar) and where the data are read
/// (`data.root`). Everything else is refused.
pub const TRAIN_RESUMABLE: &[&str] = &[
    "train.max_iterations",
    "train.batch_size",
    "train.log_every",
    "train.checkpoint_every",
    "train.eval_batch_size",
    "train.train_slq_every",
    "train.train_slq.",
    "run.",
    "data.root",
];

/// What `cpflow train --resume` may change on an image run: the limits (epochs, iterations,
/// minutes), the batch size, logging, checkpoint and monitoring periods, the evaluation
/// chunk size, the final test score's settings and where the data are read.
pub const IMAGE_RESUMABLE: &[&str] = &[
    "train.epochs",
    "train.max_iterations",
    "train.max_minutes",
    "train.batch_size",
    "train.log_every",
    "train.checkpoint_every",
    "train.train_slq_every",
    "train.eval_batch_size",
    "train.test.",
    "data.root",
];

/// What `cpflow vae --resume` may change: the number of epochs, the time budget, the final
/// evaluation (`[eval]`) and where the data are read.
pub const VAE_RESUMABLE: &[&str] = &["train.epochs", "train.max_minutes", "eval.", "data.root"];

/// One key whose value differs: its dotted path, the requested value and the run's.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Dotted key (`train.adam.lr`).
    pub key: String,
    /// The requested value (`absent` when the key is not there).
    pub requested: String,
    /// The run's value.
    pub run: String,
}

/// The keys under `prefix` where `requested` and `run` differ: both serialised, tables
/// compared key by key, anything else as a whole.
pub fn differences<T: Serialize>(prefix: &str, requested: &T, run: &T) -> Result<Vec<Difference>> {
    let (a, b) = (serde_json::to_value(requested)?, serde_json::to_value(run)?);
    let mut out = Vec::new();
    walk(prefix, Some(&a), Some(&b), &mut out);
    Ok(out)
}

fn walk(key: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Difference>) {
    if let (Some(Value::Object(x)), Some(Value::Object(y))) = (a, b) {
        let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
        for k in keys {
            let sub = if key.is_empty() {
                k.clone()
            } else {
                format!("{key}.{k}")
            };
            walk(&sub, x.get(k), y.get(k), out);
        }
    } else if !same(a, b) {
        out.push(Difference {
            key: key.to_string(),
            requested: show(a),
            run: show(b),
        });
    }
}

/// Equal values; numbers to a few ulps (a value read back from a checkpoint's JSON may be
/// one ulp off the one read from TOML).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs(),
                _ => false,
            }
        }
        _ => a == b,
    }
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "absent".into(),
        Some(Value::Null) => "unset".into(),
        Some(v) => v.to_string(),
    }
}

/// Whether `key` is in `allowed` (keys, and tables as prefixes ending in `.`).
pub fn is_resumable(key: &str, allowed: &[&str]) -> bool {
    allowed.iter().any(|a| {
        if let Some(table) = a.strip_suffix('.') {
            key == table || key.starts_with(a)
        } else {
            key == *a
        }
    })
}

/// Refuses the `differences` that are not `allowed`, naming each key with both values; `out`
/// is the run's directory and `command` the subcommand (for the message).
pub fn refuse_changes(
    differences: &[Difference],
    allowed: &[&str],
    out: &Path,
    command: &str,
) -> Result<()> {
    let refused: Vec<&Difference> = differences
        .iter()
        .filter(|d| !is_resumable(&d.key, allowed))
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = refused
        .iter()
        .map(|d| {
            format!(
                "  {}: {} (requested) vs {} (the run)",
                d.key, d.requested, d.run
            )
        })
        .collect();
    let may: Vec<String> = allowed
        .iter()
        .map(|a| match a.strip_suffix('.') {
            Some(t) => format!("{t}.*"),
            None => a.to_string(),
        })
        .collect();
    bail!(
        "--resume continues the run in {} with the settings it was made with, and these \
         differ:\n{}\nA resume may change only {}. Resume with the run's own settings (`cpflow \
         {command} --config {} --out {} --resume`, plus those changes), or start a new run with \
         another --out (or --overwrite)",
        out.display(),
        lines.join("\n"),
        may.join(", "),
        out.join("config.toml").display(),
        out.display()
    )
}

/// Refuses a resume whose new limit is below what the run has already done.
pub fn check_limit(key: &str, requested: usize, done: usize, out: &Path) -> Result<()> {
    if requested < done {
        bail!(
            "--resume: {key} = {requested} is below the {done} the run in {} has already done; \
             give at least {done}",
            out.display()
        );
    }
    Ok(())
}

/// A tabular or toy run to resume: its checkpoint and what the new data must match.
pub struct TrainResume {
    /// `<out>/checkpoint.safetensors`.
    pub checkpoint: PathBuf,
    /// The data dimension of the run's model.
    pub dim: usize,
}

/// `cpflow train --resume` of a tabular or toy run (`requested` with absolute paths): the
/// training settings are compared with the checkpoint's, the model with the checkpoint's
/// flow (keys named from `<out>/config.toml`), the data and `[run]` with `config.toml`; only
/// [`TRAIN_RESUMABLE`] keys may differ, and the run may not be shortened.
pub fn check_train_resume(requested: &RunConfig, out: &Path) -> Result<TrainResume> {
    let checkpoint = resume_checkpoint(out, "train")?;
    check_run_kind(out, &checkpoint, RunKind::Vectors, "train")?;
    let ck = crate::load_checkpoint(&checkpoint, &Device::Cpu)
        .with_context(|| format!("reading {}", checkpoint.display()))?;
    let (Some(train), Some(state)) = (&ck.meta.train, &ck.meta.state) else {
        bail!(
            "{} holds a model but no training state, so it cannot be resumed; start a new run \
             (another --out, or --overwrite)",
            checkpoint.display()
        );
    };
    let mut diffs = differences("train", &requested.train, train)?;
    let saved_path = out.join("config.toml");
    let saved = if saved_path.is_file() {
        let s = resolve(Some(&saved_path), &Overrides::default())?;
        Some(absolute_run_config(&s)?)
    } else {
        tracing::warn!(
            "{} is missing: the data and [run] settings of the resume are not checked",
            saved_path.display()
        );
        None
    };
    if let Some(s) = &saved {
        diffs.extend(differences("data", &requested.data, &s.data)?);
        diffs.extend(differences("run", &requested.run, &s.run)?);
    }
    // The checkpoint's flow is the model: [model] keys are named from config.toml when they
    // explain the difference, else the flows' own keys are.
    let flow = requested.model.flow_config(ck.meta.flow.dim)?;
    if flow != ck.meta.flow {
        let named = match &saved {
            Some(s) => differences("model", &requested.model, &s.model)?,
            None => Vec::new(),
        };
        if named.is_empty() {
            diffs.extend(differences("checkpoint.flow", &flow, &ck.meta.flow)?);
        } else {
            diffs.extend(named);
        }
    }
    refuse_changes(&diffs, TRAIN_RESUMABLE, out, "train")?;
    check_limit(
        "train.max_iterations (--iters)",
        requested.train.max_iterations,
        state.iteration,
        out,
    )?;
    Ok(TrainResume {
        checkpoint,
        dim: ck.meta.flow.dim,
    })
}

/// What identifies the data of a tabular or toy run, kept in `<out>/data_record.json` from
/// its start: `--resume` refuses other data ([`check_data_record`]). A file (`.npy`, `.csv`,
/// the picture of an image density) is identified by its size and sha256; a tabular
/// benchmark by the sha256 of its rows after MAF's preprocessing (its files sit under
/// `data.root`, which a resume may move); a generated toy by its settings (source, seed,
/// sizes), which [`check_train_resume`] compares already.
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
        let file = match &data.source {
            DataSource::Npy(_) | DataSource::Csv(_) | DataSource::Image(_) => {
                let path = source.strip_prefix("image:").unwrap_or(source);
                Some(FileRecord::of(Path::new(path))?)
            }
            DataSource::Toy(_) | DataSource::Tabular(_) => None,
        };
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
        match (&self.file, &now.file) {
            (Some(a), Some(b)) if (a.bytes, &a.sha256) != (b.bytes, &b.sha256) => {
                return Some(format!(
                    "{} has changed since the run started: {} bytes with sha256 {}… then, {} \
                     bytes with sha256 {}… now",
                    b.path.display(),
                    a.bytes,
                    short(&a.sha256),
                    b.bytes,
                    short(&b.sha256)
                ));
            }
            _ => {}
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
    let path = out.join(DATA_RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                "{} is missing (the run was made before cpflow recorded its data): the data of \
                 this resume could not be checked against the run's; they are recorded now, \
                 for later resumes",
                path.display()
            );
            return Ok(false);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let run: DataRecord = serde_json::from_str(&text).with_context(|| {
        format!(
            "reading {} (the record of the run's data; delete it to resume without checking \
             the data)",
            path.display()
        )
    })?;
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

/// Writes `<out>/data_record.json` (once every check has passed).
pub fn write_data_record(out: &Path, record: &DataRecord) -> Result<()> {
    let text = serde_json::to_string_pretty(record)?;
    crate::cli::output_files::write_file_atomic(
        &out.join(DATA_RECORD),
        text.as_bytes(),
        "the record of the run's data",
    )
}

/// `cpflow train --resume` of an image run (`requested` with an absolute data root): the
/// checkpoint must exist, and the configuration may differ from `<out>/config.toml` in
/// [`IMAGE_RESUMABLE`] keys only (the trainer itself refuses another model).
pub fn check_image_resume(
    requested: &crate::image::ImageExperimentConfig,
    out: &Path,
) -> Result<()> {
    let checkpoint = resume_checkpoint(out, "train")?;
    check_run_kind(out, &checkpoint, RunKind::Image, "train")?;
    let saved_path = out.join("config.toml");
    if saved_path.is_file() {
        let mut saved = resolve_image(&saved_path, &Overrides::default())?;
        saved.data.root = absolute(&saved.data.root)?;
        let diffs = differences("", requested, &saved)?;
        refuse_changes(&diffs, IMAGE_RESUMABLE, out, "train")?;
    }
    Ok(())
}

/// `cpflow vae --resume` (`requested` with an absolute data root): the checkpoint must exist
/// and its configuration may differ from the requested one in [`VAE_RESUMABLE`] keys only;
/// the number of epochs may not go below those done.
pub fn check_vae_resume(requested: &crate::vae::VaeConfig, out: &Path) -> Result<()> {
    let checkpoint = resume_checkpoint(out, "vae")?;
    check_run_kind(out, &checkpoint, RunKind::Vae, "vae")?;
    let (meta, _) = crate::vae::load_vae_checkpoint(&checkpoint, &Device::Cpu)
        .with_context(|| format!("reading {}", checkpoint.display()))?;
    let mut run = meta.config;
    run.data.root = absolute(&run.data.root)?;
    refuse_changes(
        &differences("", requested, &run)?,
        VAE_RESUMABLE,
        out,
        "vae",
    )?;
    if let Some(state) = &meta.state {
        check_limit(
            "train.epochs (--epochs)",
            requested.train.epochs,
            state.epoch,
            out,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Cfg {
        a: f64,
        t: Table,
    }
    #[derive(Serialize)]
    struct Table {
        b: Option<usize>,
        s: Schedule,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum Schedule {
        Constant,
        Step { size: usize },
    }

    #[test]
    fn differences_name_dotted_keys_and_allowed_ones_pass() {
        let run = Cfg {
            a: 0.5,
            t: Table {
                b: Some(3),
                s: Schedule::Step { size: 2 },
            },
        };
        let req = Cfg {
            a: 0.25,
            t: Table {
                b: None,
                s: Schedule::Constant,
            },
        };
        let d = differences("x", &req, &run).unwrap();
        let keys: Vec<(&str, &str, &str)> = d
            .iter()
            .map(|d| (d.key.as_str(), d.requested.as_str(), d.run.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("x.a", "0.25", "0.5"),
                ("x.t.b", "unset", "3"),
                ("x.t.s", "\"constant\"", "{\"step\":{\"size\":2}}"),
            ]
        );
        assert!(differences("x", &run, &run).unwrap().is_empty());
        let out = Path::new("/r");
        refuse_changes(&d, &["x.a", "x.t."], out, "train").unwrap();
        let e = refuse_changes(&d, &["x.a"], out, "train")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.t.b: unset (requested) vs 3 (the run)"), "{e}");
        assert!(!e.contains("x.a:") && e.contains("/r/config.toml"), "{e}");
        assert!(is_resumable("run.plots", &["run."]) && !is_resumable("runs", &["run."]));
        assert!(check_limit("train.epochs", 2, 3, out).is_err());
        check_limit("train.epochs", 3, 3, out).unwrap();
    }

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
