//! HEPMASS (UCI, mass = 1000 files, MAF preprocessing), d = 21.
//!
//! `hepmass.py:load_data_no_discrete_normalised_as_array` of MAF / CP-Flow:
//! 1. read `hepmass/1000_train.csv` and `hepmass/1000_test.csv` (`pd.read_csv(...,
//!    index_col=False)`: a header line; a trailing delimiter on data lines is ignored, and
//!    rows one field shorter than the header get `NaN` in the last column, as in pandas);
//! 2. keep the rows whose first column (the label) is 1, drop the label column;
//! 3. drop the **last** column of the test file ("because the data set is messed up");
//! 4. standardise both with the **train** mean and std (pandas, ddof 1). pandas aligns the
//!    test columns to the train columns **by name**, and so does this loader; a train column
//!    missing from the test file becomes `NaN` there, as in pandas;
//! 5. remove every feature whose smallest (normalised train) value occurs more than 5 times
//!    (`Counter` over the column, first key in sorted order). One deliberate difference: a
//!    **constant** train column (std 0) is removed too. pandas would turn it into `NaN`
//!    (0/0), which `Counter` never counts as repeated, and keep it; such a column carries no
//!    information, and MAF's published d = 21 with finite results shows that none survived
//!    in MAF's data;
//! 6. validation = last `int(0.1 N)` train rows; cast to `f32`.

use std::path::Path;

use super::matrix::{column_means, column_stds, standardise, tenth};
use super::{DatasetError, Matrix, Split, layout};

/// A feature is removed when its smallest value occurs more than this many times.
pub const HEPMASS_MAX_REPEATS: usize = 5;

/// Loads HEPMASS from `root/hepmass/1000_{train,test}.csv` with the MAF preprocessing.
///
/// ```no_run
/// let split = cpflow::datasets::load_hepmass("data".as_ref())?;
/// assert_eq!(split.sizes(), (315_123, 35_013, 174_987));
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn load_hepmass(root: &Path) -> Result<Split, DatasetError> {
    let train = read_signal_csv(&root.join(layout::HEPMASS_TRAIN))?;
    let test = read_signal_csv(&root.join(layout::HEPMASS_TEST))?;
    Ok(preprocess_hepmass(train, test)?.to_f32())
}

/// A CSV table: column names and the rows whose label is 1, label column removed.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledTable {
    /// Names of the columns of `data` (header names without the label's, trimmed).
    pub names: Vec<String>,
    /// Signal rows (label == 1), without the label column.
    pub data: Matrix<f64>,
}

/// Reads a HEPMASS CSV file, keeping the signal rows (first column == 1) without the label.
pub fn read_signal_csv(path: &Path) -> Result<LabelledTable, DatasetError> {
    super::error::require_file(path, "hepmass", "hepmass")?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| DatasetError::corrupt(path, e.to_string()))?;
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
            s.parse::<f64>()
                .map_err(|_| DatasetError::corrupt(path, format!("line {line}: bad number {s:?}")))
        };
        if parse(0)? != 1.0 {
            continue;
        }
        for j in 1..n_cols {
            data.push(parse(j)?);
        }
        rows += 1;
    }
    Ok(LabelledTable {
        names,
        data: Matrix::new(rows, d, data)?,
    })
}

/// How often the smallest value of a column occurs.
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

/// The MAF HEPMASS preprocessing on the signal rows of both files (kept in `f64`).
pub fn preprocess_hepmass(
    train: LabelledTable,
    test: LabelledTable,
) -> Result<Split<f64>, DatasetError> {
    let LabelledTable {
        names: train_names,
        data: mut train_data,
    } = train;
    // Drop the last column of the test file.
    let test_names = &test.names[..test.names.len().saturating_sub(1)];
    for name in test_names {
        if !train_names.contains(name) {
            return Err(DatasetError::bad_shape(
                "hepmass test columns",
                format!("a subset of the train columns {train_names:?}"),
                format!("extra column {name:?}"),
            ));
        }
    }
    // Align the test columns to the train columns by name (pandas semantics).
    let d = train_names.len();
    let positions: Vec<Option<usize>> = train_names
        .iter()
        .map(|n| test_names.iter().position(|t| t == n))
        .collect();
    let mut test_aligned = Vec::with_capacity(test.data.rows() * d);
    for r in 0..test.data.rows() {
        let row = test.data.row(r);
        test_aligned.extend(positions.iter().map(|p| p.map_or(f64::NAN, |c| row[c])));
    }
    let mut test_data = Matrix::new(test.data.rows(), d, test_aligned)?;

    let mu = column_means(&[&train_data]);
    let sd = column_stds(&[&train_data], &mu, 1);
    standardise(&mut train_data, &mu, &sd);
    standardise(&mut test_data, &mu, &sd);

    let keep: Vec<usize> = (0..d)
        .filter(|&c| {
            let col = (0..train_data.rows()).map(|r| train_data.row(r)[c]);
            sd[c] > 0.0 && smallest_value_count(col) <= HEPMASS_MAX_REPEATS
        })
        .collect();
    let train_data = train_data.select_columns(&keep);
    let test_data = test_data.select_columns(&keep);
    if test_data.data().iter().any(|v| v.is_nan()) {
        return Err(DatasetError::bad_shape(
            "hepmass test columns",
            format!("every kept train column {keep:?} present in the test file"),
            format!("test columns {test_names:?}"),
        ));
    }
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
