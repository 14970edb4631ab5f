//! HEPMASS (UCI, mass = 1000 files, MAF preprocessing), d = 21.
//!
//! `hepmass.py:load_data_no_discrete_normalised_as_array` of MAF / CP-Flow:
//! 1. read `hepmass/1000_train.csv` and `hepmass/1000_test.csv` (`pd.read_csv(...,
//!    index_col=False)`: a header line; a trailing delimiter on data lines is ignored, and
//!    rows one field shorter than the header get `NaN` in the last column, as in pandas).
//!    Missing values are read as pandas does: an empty field or one of pandas' default NA
//!    strings (`nan`, `NaN`, `NA`, `N/A`, `NULL`, `None`, …) is `NaN`;
//! 2. keep the rows whose first column (the label) is 1 (a missing label is not 1), drop the
//!    label column;
//! 3. drop the **last** column of the test file ("because the data set is messed up");
//! 4. standardise both with the **train** mean and std (pandas: ddof 1, `NaN` skipped, so a
//!    column with a missing value keeps finite statistics). pandas aligns the test columns
//!    to the train columns **by name**, and so does this loader;
//! 5. remove every feature whose smallest (standardised train) value occurs more than 5
//!    times (`Counter` over the column, first key in sorted order; `NaN`s are never counted);
//! 6. validation = last `int(0.1 N)` train rows; cast to `f32`.
//!
//! Where MAF's code would go wrong silently, this loader reports instead (see
//! [`select_hepmass_features`] for the list of removed features and why):
//! - a **constant** train column (std 0) is never divided by zero. Its one value repeats in
//!   every row, so step 5, applied to the raw values, removes it (reported as
//!   [`HepmassRemoval::Constant`]); pandas would produce `0/0 = NaN` and, since `Counter`
//!   never counts `NaN` as repeated, keep an all-`NaN` feature. A constant column with too
//!   few values for step 5 (≤ 5, the rest missing) is an error naming the column;
//! - a kept feature with a missing value (train or test signal row) is an error naming the
//!   column and the file, instead of a `NaN` handed to the model; a feature with no value at
//!   all, or an infinite one, is an error too. Missing values in removed features and in
//!   background rows are harmless and ignored, as in MAF.

use std::path::{Path, PathBuf};

use super::matrix::tenth;
use super::{DatasetError, Matrix, Split, layout};

/// A feature is removed when its smallest value occurs more than this many times.
pub const HEPMASS_MAX_REPEATS: usize = 5;

/// pandas' default `na_values` of `read_csv` (pandas 2.x): these fields read as `NaN`.
const PANDAS_NA: [&str; 19] = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
];

/// Loads HEPMASS from `root/hepmass/1000_{train,test}.csv` with the MAF preprocessing.
///
/// On the UCI files the split has (315,123, 35,013, 174,987) rows. Small files in a
/// temporary data root:
///
/// ```
/// use cpflow::datasets::load_hepmass;
/// // Signal rows (label 1) have distinct features and the constant mass 1000; the test file
/// // has the same columns, its last one is dropped as in MAF.
/// let csv = |n: usize, offset: f64| {
///     let mut text = String::from("# label,f0,f1,mass\n");
///     for i in 0..n {
///         let label = if i % 4 == 3 { 0 } else { 1 }; // every 4th row is background
///         let (f0, f1) = (offset + i as f64 * 0.37, (i * i) as f64 * 0.11);
///         text += &format!("{label},{f0},{f1},1000\n");
///     }
///     text
/// };
/// let root = std::env::temp_dir().join(format!("cpflow-doc-load-hepmass-{}", std::process::id()));
/// std::fs::create_dir_all(root.join("hepmass")).unwrap();
/// std::fs::write(root.join("hepmass/1000_train.csv"), csv(16, 0.0)).unwrap();
/// std::fs::write(root.join("hepmass/1000_test.csv"), csv(8, 0.5)).unwrap();
/// let split = load_hepmass(&root)?;
/// // 12 train and 6 test signal rows; the constant mass column is removed; the validation
/// // set is the last int(0.1 · 12) = 1 train row.
/// assert_eq!((split.dim(), split.sizes()), (2, (11, 1, 6)));
/// std::fs::remove_dir_all(&root).ok();
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn load_hepmass(root: &Path) -> Result<Split, DatasetError> {
    let train = read_signal_csv(&root.join(layout::HEPMASS_TRAIN))?;
    let test = read_signal_csv(&root.join(layout::HEPMASS_TEST))?;
    Ok(preprocess_hepmass(train, test)?.to_f32())
}

/// A CSV table: column names and the rows whose label is 1, label column removed.
///
/// ```
/// use cpflow::datasets::{LabelledTable, Matrix, preprocess_hepmass};
/// // Tables can be built in memory as well as read with `read_signal_csv`.
/// let table = |path: &str, rows: usize| -> Result<LabelledTable, cpflow::datasets::DatasetError> {
///     let values = (0..rows).flat_map(|r| [r as f64, (r * r) as f64, 1000.0]).collect();
///     Ok(LabelledTable {
///         path: path.into(),
///         names: vec!["f0".into(), "f1".into(), "mass".into()],
///         data: Matrix::new(rows, 3, values)?,
///     })
/// };
/// let split = preprocess_hepmass(table("train.csv", 10)?, table("test.csv", 4)?)?;
/// assert_eq!((split.dim(), split.sizes()), (2, (9, 1, 4)));
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledTable {
    /// The file the table was read from (named in error messages).
    pub path: PathBuf,
    /// Names of the columns of `data` (header names without the label's, trimmed).
    pub names: Vec<String>,
    /// Signal rows (label == 1), without the label column; missing values are `NaN`.
    pub data: Matrix<f64>,
}

/// A field as pandas reads it: a number, `NaN` for a missing value, `None` for text.
fn pandas_number(s: &str) -> Option<f64> {
    if PANDAS_NA.contains(&s) {
        Some(f64::NAN)
    } else {
        s.parse::<f64>().ok()
    }
}

/// Reads a HEPMASS CSV file, keeping the signal rows (first column == 1) without the label.
/// Missing values (an empty field or one of pandas' default NA strings: `nan`, `NaN`, `NA`,
/// `N/A`, `NULL`, `None`, …) are `NaN`, as in `pd.read_csv`.
///
/// ```
/// use cpflow::datasets::{DatasetError, read_signal_csv};
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-read-signal-csv-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("1000_train.csv");
/// std::fs::write(&path, "# label, f0, f1\n1, 0.5, 2\n0, 9, 9\n1, -1.5, nan\n").unwrap();
/// let t = read_signal_csv(&path)?;
/// assert_eq!(t.names, ["f0", "f1"]); // trimmed, label column removed
/// assert_eq!(t.data.rows(), 2); // the background row (label 0) is dropped
/// assert_eq!(t.data.row(0), &[0.5, 2.0]);
/// assert!(t.data.row(1)[1].is_nan()); // a missing value, as pandas reads it
/// let missing = read_signal_csv(&dir.join("1000_test.csv"));
/// assert!(matches!(missing, Err(DatasetError::MissingFile { command: "hepmass", .. })));
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), DatasetError>(())
/// ```
pub fn read_signal_csv(path: &Path) -> Result<LabelledTable, DatasetError> {
    read_signal_csv_as(path, path)
}

/// [`read_signal_csv`] of the file at `path` that errors (and the table's
/// [`LabelledTable::path`]) call `shown_as`: e.g. a staged copy checked before it is renamed
/// to `shown_as`.
///
/// ```
/// use cpflow::datasets::read_signal_csv_as;
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-signal-csv-as-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let staged = dir.join("1000_train.csv.tmp");
/// std::fs::write(&staged, "# label, f0\n1, x\n").unwrap();
/// let err = read_signal_csv_as(&staged, "data/hepmass/1000_train.csv".as_ref()).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "data/hepmass/1000_train.csv: corrupt or unsupported file: line 2: bad number \"x\""
/// );
/// std::fs::remove_dir_all(&dir).ok();
/// ```
pub fn read_signal_csv_as(path: &Path, shown_as: &Path) -> Result<LabelledTable, DatasetError> {
    super::error::require_file_as(path, shown_as, "hepmass", "hepmass")?;
    let file =
        std::fs::File::open(path).map_err(|e| DatasetError::corrupt(shown_as, e.to_string()))?;
    signal_csv(shown_as, file)
}

/// [`read_signal_csv`] on CSV text already read (the whole file, or its first lines); `path`
/// is used in error messages only.
///
/// ```
/// use cpflow::datasets::parse_signal_csv;
/// let t = parse_signal_csv("1000_train.csv".as_ref(), b"# label, f0, f1\n1, 0.5, 2\n0, 9, 9\n")?;
/// assert_eq!((t.names.len(), t.data.rows()), (2, 1));
/// // A bad number is named with the line and the file.
/// let err = parse_signal_csv("1000_test.csv".as_ref(), b"# label, f0\n1, x\n").unwrap_err();
/// assert!(err.to_string().contains("1000_test.csv"), "{err}");
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn parse_signal_csv(path: &Path, text: &[u8]) -> Result<LabelledTable, DatasetError> {
    signal_csv(path, text)
}

/// Reads the signal rows of the CSV `source` yields ([`read_signal_csv`]); `path` is named
/// in error messages.
fn signal_csv(path: &Path, source: impl std::io::Read) -> Result<LabelledTable, DatasetError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(source);
    let header = reader
        .headers()
        .map_err(|e| DatasetError::corrupt(path, e.to_string()))?
        .clone();
    let n_cols = header.len();
    if n_cols < 2 {
        return Err(DatasetError::corrupt(
            path,
            format!("expected a header with a label and features, found {n_cols} columns"),
        ));
    }
    let names: Vec<String> = header.iter().skip(1).map(str::to_string).collect();
    let d = n_cols - 1;
    let mut data = Vec::new();
    let mut rows = 0usize;
    // Fields per data row: the header's count, or one less (pandas fills the last column
    // with NaN). Every row must have the same count, so a cut-off last line is detected.
    let mut width: Option<usize> = None;
    let mut records = reader.records();
    while let Some(rec) = records.next() {
        let rec = rec.map_err(|e| DatasetError::corrupt(path, e.to_string()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let mut len = rec.len();
        if len == n_cols + 1 && rec.get(n_cols).is_some_and(str::is_empty) {
            len = n_cols; // trailing delimiter (pandas' index_col=False)
        }
        let expected = *width.get_or_insert(if len == n_cols - 1 { len } else { n_cols });
        if len != expected {
            let detail = format!("line {line} has {len} fields, expected {expected}");
            return Err(if records.next().is_none() {
                DatasetError::truncated(path, format!("last {detail}"))
            } else {
                DatasetError::corrupt(path, detail)
            });
        }
        let parse = |j: usize| -> Result<f64, DatasetError> {
            if j >= len {
                return Ok(f64::NAN);
            }
            let s = rec.get(j).unwrap_or("");
            pandas_number(s).ok_or_else(|| {
                DatasetError::corrupt(path, format!("line {line}: bad number {s:?}"))
            })
        };
        // pandas: `df[label] == 1` is false for a missing label.
        if parse(0)? != 1.0 {
            continue;
        }
        for j in 1..n_cols {
            data.push(parse(j)?);
        }
        rows += 1;
    }
    if rows == 0 {
        // An empty, header-only or cut-short file: no signal row to learn from.
        return Err(DatasetError::truncated(
            path,
            "no signal rows (label 1) after the header",
        ));
    }
    Ok(LabelledTable {
        path: path.to_path_buf(),
        names,
        data: Matrix::new(rows, d, data)?,
    })
}

/// Why [`select_hepmass_features`] removed a feature.
/// See [`select_hepmass_features`] for an example.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HepmassRemoval {
    /// MAF's rule: the smallest standardised train value occurs `count` > 5 times.
    RepeatedMinimum {
        /// How often the smallest value occurs.
        count: usize,
    },
    /// Every (non-missing) train value equals `value`: std 0, so the column is not
    /// standardised; its smallest value repeats `count` > 5 times, so MAF's rule removes it.
    Constant {
        /// The column's only value.
        value: f64,
        /// How many train rows hold it.
        count: usize,
    },
}

/// The feature selection of the HEPMASS preprocessing (steps 4–5), for inspection.
/// See [`select_hepmass_features`] for an example.
#[derive(Debug, Clone, PartialEq)]
pub struct HepmassFeatures {
    /// Names of all train columns (label excluded).
    pub names: Vec<String>,
    /// Train means per column (pandas: missing values skipped).
    pub means: Vec<f64>,
    /// Train standard deviations per column (pandas: ddof 1, missing values skipped).
    pub stds: Vec<f64>,
    /// Indices of the kept columns, in order.
    pub kept: Vec<usize>,
    /// Removed columns (index into `names`) and why.
    pub removed: Vec<(usize, HepmassRemoval)>,
}

/// How often the smallest value of a column occurs (`NaN`s never count, as in `Counter`).
fn smallest_value_count(values: impl Iterator<Item = f64>) -> usize {
    let mut min = f64::INFINITY;
    let mut count = 0usize;
    for v in values {
        if v < min {
            min = v;
            count = 1;
        } else if v == min {
            count += 1;
        }
    }
    count
}

/// Mean and std (ddof 1) of the non-missing values, as pandas' `mean()` / `std()`.
fn pandas_mean_std(values: &[f64]) -> (f64, f64) {
    let present = || values.iter().copied().filter(|v| !v.is_nan());
    let n = present().count();
    let mean = present().sum::<f64>() / n as f64;
    let ss: f64 = present().map(|v| (v - mean) * (v - mean)).sum();
    (mean, (ss / n.saturating_sub(1) as f64).sqrt())
}

/// Steps 4–5 of the HEPMASS preprocessing on the train signal rows: the statistics, and
/// which features MAF's repeated-minimum rule keeps. Errors name the column and the file:
/// a column without any value, with an infinite value, or constant with too few values for
/// the rule to remove it.
///
/// ```
/// use cpflow::datasets::{HepmassRemoval, LabelledTable, Matrix, select_hepmass_features};
///
/// // Column "a" varies; column "b" has its smallest value (0) on 7 of 8 rows, more than
/// // the 5 repeats MAF's rule allows, so it is removed.
/// let a = [0.1, -0.4, 0.9, 1.3, -2.0, 0.5, 0.0, 0.7];
/// let b = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
/// let data: Vec<f64> = a.iter().zip(&b).flat_map(|(&x, &y)| [x, y]).collect();
/// let table = LabelledTable {
///     path: "train.csv".into(),
///     names: vec!["a".into(), "b".into()],
///     data: Matrix::new(8, 2, data)?,
/// };
/// let f = select_hepmass_features(&table)?;
/// assert_eq!(f.kept, vec![0]);
/// assert_eq!(f.removed, vec![(1, HepmassRemoval::RepeatedMinimum { count: 7 })]);
/// assert!((f.means[0] - a.iter().sum::<f64>() / 8.0).abs() < 1e-15);
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn select_hepmass_features(train: &LabelledTable) -> Result<HepmassFeatures, DatasetError> {
    let data = &train.data;
    let d = data.cols();
    let name = |c: usize| train.names.get(c).map_or("?", String::as_str);
    let mut features = HepmassFeatures {
        names: train.names.clone(),
        means: Vec::with_capacity(d),
        stds: Vec::with_capacity(d),
        kept: Vec::new(),
        removed: Vec::new(),
    };
    for c in 0..d {
        let col: Vec<f64> = (0..data.rows()).map(|r| data.row(r)[c]).collect();
        let problem = |what: String| {
            DatasetError::corrupt(&train.path, format!("column {:?}: {what}", name(c)))
        };
        if let Some(v) = col.iter().find(|v| v.is_infinite()) {
            return Err(problem(format!("infinite value {v} in the signal rows")));
        }
        let (mean, std) = pandas_mean_std(&col);
        if mean.is_nan() {
            return Err(problem("no value in any signal row (all missing)".into()));
        }
        features.means.push(mean);
        features.stds.push(std);
        let present = col.iter().filter(|v| !v.is_nan()).count();
        if std.is_nan() || std <= 0.0 {
            // Constant (std 0, or one value: pandas' std is NaN): never standardised.
            if present <= HEPMASS_MAX_REPEATS {
                return Err(problem(format!(
                    "constant ({present} value(s), all {mean}, the rest missing): std 0, it \
                     cannot be standardised and is too short for the repeated-value rule"
                )));
            }
            let removal = HepmassRemoval::Constant {
                value: mean,
                count: present,
            };
            features.removed.push((c, removal));
            continue;
        }
        let count = smallest_value_count(col.iter().map(|v| (v - mean) / std));
        if count > HEPMASS_MAX_REPEATS {
            features
                .removed
                .push((c, HepmassRemoval::RepeatedMinimum { count }));
        } else {
            features.kept.push(c);
        }
    }
    Ok(features)
}

/// The first of `columns` of `m` with a missing (or infinite) value, and how many it has.
fn first_missing(m: &Matrix<f64>, columns: &[usize]) -> Option<(usize, usize)> {
    columns.iter().find_map(|&c| {
        let n = (0..m.rows()).filter(|&r| !m.row(r)[c].is_finite()).count();
        (n > 0).then_some((c, n))
    })
}

/// The MAF HEPMASS preprocessing on the signal rows of both files (kept in `f64`).
///
/// ```
/// use cpflow::datasets::{LabelledTable, Matrix, preprocess_hepmass};
/// let table = |path: &str, names: &[&str], rows: usize| -> Result<LabelledTable, cpflow::datasets::DatasetError> {
///     let values = (0..rows).flat_map(|r| [r as f64, 2.0 * r as f64, 1000.0][..names.len()].to_vec()).collect();
///     Ok(LabelledTable {
///         path: path.into(),
///         names: names.iter().map(|n| n.to_string()).collect(),
///         data: Matrix::new(rows, names.len(), values)?,
///     })
/// };
/// let train = table("train.csv", &["f0", "f1", "mass"], 10)?;
/// let test = table("test.csv", &["f0", "f1", "mass"], 3)?;
/// let split = preprocess_hepmass(train, test)?;
/// // f0 = 0..9 standardised with the train mean 4.5 and std (ddof 1) √(55/6).
/// assert_eq!((split.dim(), split.sizes()), (2, (9, 1, 3)));
/// assert!((split.test.row(0)[0] + 4.5 / (55.0f64 / 6.0).sqrt()).abs() < 1e-12);
/// // A test column the train file does not have is refused.
/// let other = table("test.csv", &["f0", "g1", "mass"], 3)?;
/// assert!(preprocess_hepmass(table("train.csv", &["f0", "f1", "mass"], 10)?, other).is_err());
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn preprocess_hepmass(
    train: LabelledTable,
    test: LabelledTable,
) -> Result<Split<f64>, DatasetError> {
    // Drop the last column of the test file.
    let test_names = &test.names[..test.names.len().saturating_sub(1)];
    let train_names = &train.names;
    for name in test_names {
        if !train_names.contains(name) {
            return Err(DatasetError::bad_shape(
                "hepmass test columns",
                format!("a subset of the train columns {train_names:?}"),
                format!("extra column {name:?}"),
            ));
        }
    }
    let features = select_hepmass_features(&train)?;
    let keep = &features.kept;
    // Align the test columns to the kept train columns by name (pandas semantics).
    let positions: Vec<Option<usize>> = keep
        .iter()
        .map(|&c| test_names.iter().position(|t| *t == train_names[c]))
        .collect();
    if let Some(i) = positions.iter().position(Option::is_none) {
        return Err(DatasetError::bad_shape(
            "hepmass test columns",
            format!(
                "every kept train column present in the test file (missing {:?})",
                train_names[keep[i]]
            ),
            format!("test columns {test_names:?}"),
        ));
    }
    let standardised = |m: &Matrix<f64>, cols: &[usize]| -> Result<Matrix<f64>, DatasetError> {
        let mut out = Vec::with_capacity(m.rows() * keep.len());
        for r in 0..m.rows() {
            let row = m.row(r);
            out.extend(
                cols.iter()
                    .zip(keep)
                    .map(|(&src, &c)| (row[src] - features.means[c]) / features.stds[c]),
            );
        }
        Matrix::new(m.rows(), keep.len(), out)
    };
    let test_cols: Vec<usize> = positions.into_iter().flatten().collect();
    for (table, cols) in [(&train, keep.as_slice()), (&test, test_cols.as_slice())] {
        if let Some((c, n)) = first_missing(&table.data, cols) {
            return Err(DatasetError::corrupt(
                &table.path,
                format!(
                    "column {:?}: {n} missing (empty or NaN) or infinite value(s) in the \
                     signal rows of a kept feature; MAF's preprocessing would pass them to \
                     the model",
                    table.names[c]
                ),
            ));
        }
    }
    let train_data = standardised(&train.data, keep)?;
    let test_data = standardised(&test.data, &test_cols)?;
    let n = train_data.rows();
    let n_val = tenth(n);
    if n_val == 0 {
        return Err(DatasetError::bad_shape(
            "hepmass signal rows in the train file",
            "at least 10",
            n.to_string(),
        ));
    }
    Ok(Split {
        train: train_data.slice_rows(0, n - n_val),
        val: train_data.slice_rows(n - n_val, n),
        test: test_data,
    })
}

#[cfg(test)]
mod tests;
