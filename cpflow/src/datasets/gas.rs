//! GAS (UCI "gas sensor array under dynamic gas mixtures", ethylene + CO), d = 8.
//!
//! # Source file: the UCI text, not MAF's pickle
//! MAF's archive ships `gas/ethylene_CO.pickle`, a pandas `DataFrame` pickle that cannot be
//! read reliably without Python. This loader instead reads the UCI source
//! `gas/ethylene_CO.txt` (whitespace separated, one header line, 19 columns: time, CO
//! concentration, ethylene concentration, 16 sensor readings; `cargo xtask download gas`
//! fetches it) and rebuilds the pickle's content:
//!
//! * MAF's `gas.py` contains the line that made the pickle,
//!   `pd.read_pickle(file).sample(frac=0.25)`: a random 25 % of the rows, in random order.
//!   The UCI file has 4,208,261 rows and `round(0.25 · 4,208,261) = 1,052,065`, exactly the
//!   MAF total (852,174 + 94,685 + 105,206). pandas' `sample` is
//!   `RandomState.permutation(N)[:n]`; it is reproduced exactly for a given seed
//!   ([`GasConfig::seed`]), but MAF's own draw was unseeded, so **which** rows are in each
//!   split differs from MAF's file (same sizes, same distribution).
//! * The pickle's first three columns are named `Time`, `Meth`, `Eth`; all three are dropped
//!   by MAF, so the naming of the two concentration columns does not matter.
//!
//! # Preprocessing (`gas.py:load_data_and_clean_and_split`)
//! 1. keep the 16 sensor columns;
//! 2. while some column has another column with Pearson correlation `> 0.98`, drop the first
//!    such column (correlations between the remaining columns do not change when one is
//!    dropped, so the matrix is computed once);
//! 3. standardise with the mean and std (ddof 1) of the **whole** data;
//! 4. tail split (test = last 10 %, val = last 10 % of the rest); cast to `f32`.

use std::io::{BufRead, BufReader};
use std::path::Path;

use super::matrix::{column_means, column_stds, standardise, tail_split};
use super::{DatasetError, Matrix, NumpyRandomState, Split, layout};

/// Columns of the UCI `ethylene_CO.txt`.
pub const GAS_RAW_COLUMNS: usize = 19;
/// Columns dropped before the correlation step (time and the two concentrations).
const GAS_DROPPED_LEADING: usize = 3;
/// MAF's correlation threshold.
pub const GAS_CORRELATION_THRESHOLD: f64 = 0.98;

/// How the MAF pickle is rebuilt from the UCI text file.
///
/// ```
/// use cpflow::datasets::{GasConfig, read_gas_sensors};
/// # use cpflow::rand::{Rng, SeedableRng, rngs::StdRng};
/// // A UCI-format file: a header line, then 20 rows of 19 columns (time, CO, ethylene,
/// // 16 sensors), here random numbers.
/// let mut rng = StdRng::seed_from_u64(0);
/// let mut text = String::from("Time (seconds), CO conc (ppm), Ethylene conc (ppm), Sensor readings (16 channels)\n");
/// for _ in 0..20 {
///     let row: Vec<String> = (0..19).map(|_| format!("{:.6}", rng.random::<f64>())).collect();
///     text += &row.join(" ");
///     text.push('\n');
/// }
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-gas-config-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("ethylene_CO.txt");
/// std::fs::write(&path, &text).unwrap();
/// assert_eq!(GasConfig::default(), GasConfig { sample_fraction: Some(0.25), seed: 0 });
/// // round(0.5 · 20) = 10 rows, in an order drawn from the seed.
/// let half = GasConfig { sample_fraction: Some(0.5), seed: 1 };
/// let a = read_gas_sensors(&path, &half)?;
/// assert_eq!((a.rows(), a.cols()), (10, 16));
/// assert_eq!(read_gas_sensors(&path, &half)?, a); // same seed, same rows
/// assert_ne!(read_gas_sensors(&path, &GasConfig { seed: 2, ..half })?, a);
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GasConfig {
    /// `Some(f)`: keep a random `round(f · N)` rows in random order, as pandas'
    /// `sample(frac=f)` (MAF used 0.25). `None`: every row, in file order.
    pub sample_fraction: Option<f64>,
    /// Seed of the numpy `RandomState` used for the sample.
    pub seed: u32,
}

impl Default for GasConfig {
    /// MAF's fraction (0.25) with seed 0.
    fn default() -> Self {
        Self {
            sample_fraction: Some(0.25),
            seed: 0,
        }
    }
}

/// Loads GAS from `root/gas/ethylene_CO.txt` (see the module docs for the choice of file).
///
/// On the UCI file the split has (852,174, 94,685, 105,206) rows. Without it, the error
/// says what to fetch, and MAF's pickle alone is refused:
///
/// ```
/// use cpflow::datasets::{DatasetError, GasConfig, load_gas};
/// let root = std::env::temp_dir().join(format!("cpflow-doc-load-gas-{}", std::process::id()));
/// let err = load_gas(&root, &GasConfig::default()).unwrap_err();
/// assert!(matches!(err, DatasetError::MissingFile { command: "gas", .. }), "{err}");
/// std::fs::create_dir_all(root.join("gas")).unwrap();
/// std::fs::write(root.join("gas/ethylene_CO.pickle"), b"pandas pickle").unwrap();
/// let err = load_gas(&root, &GasConfig::default()).unwrap_err();
/// assert!(matches!(err, DatasetError::Unsupported { dataset: "gas", .. }), "{err}");
/// std::fs::remove_dir_all(&root).ok();
/// ```
pub fn load_gas(root: &Path, config: &GasConfig) -> Result<Split, DatasetError> {
    let txt = root.join(layout::GAS_TXT);
    if !txt.is_file() && root.join(layout::GAS_PICKLE).is_file() {
        return Err(DatasetError::Unsupported {
            dataset: "gas",
            detail: format!(
                "found MAF's pandas pickle {} but it cannot be read without Python; this \
                 crate reads the UCI source {} instead: fetch it with `cargo xtask download gas`",
                root.join(layout::GAS_PICKLE).display(),
                txt.display()
            ),
        });
    }
    load_gas_file(&txt, config)
}

/// Loads GAS from an explicit UCI-format text file.
///
/// ```
/// use cpflow::datasets::{GasConfig, load_gas_file};
/// # use cpflow::rand::{Rng, SeedableRng, rngs::StdRng};
/// // A UCI-format file: a header line, then 20 rows of 19 columns (time, CO, ethylene,
/// // 16 sensors), here random numbers.
/// let mut rng = StdRng::seed_from_u64(0);
/// let mut text = String::from("Time (seconds), CO conc (ppm), Ethylene conc (ppm), Sensor readings (16 channels)\n");
/// for _ in 0..20 {
///     let row: Vec<String> = (0..19).map(|_| format!("{:.6}", rng.random::<f64>())).collect();
///     text += &row.join(" ");
///     text.push('\n');
/// }
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-load-gas-file-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("ethylene_CO.txt");
/// std::fs::write(&path, &text).unwrap();
/// // Every row, in file order: 20 rows → (17, 1, 2); no two random sensors are correlated
/// // above 0.98, so all 16 are kept.
/// let split = load_gas_file(&path, &GasConfig { sample_fraction: None, seed: 0 })?;
/// assert_eq!((split.dim(), split.sizes()), (16, (17, 1, 2)));
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn load_gas_file(path: &Path, config: &GasConfig) -> Result<Split, DatasetError> {
    let sensors = read_gas_sensors(path, config)?;
    Ok(preprocess_gas(sensors)?.to_f32())
}

/// Opens the file at `path`, named `shown_as` in errors.
fn open(path: &Path, shown_as: &Path) -> Result<BufReader<std::fs::File>, DatasetError> {
    super::error::require_file_as(path, shown_as, "gas", "gas")?;
    std::fs::File::open(path)
        .map(|f| BufReader::with_capacity(1 << 20, f))
        .map_err(|e| DatasetError::io(shown_as, e))
}

/// Calls `f(line_index, line)` for each data line of `reader` (the header and blank lines
/// skipped); `path` is named in error messages.
fn for_each_data_line(
    path: &Path,
    mut reader: impl BufRead,
    mut f: impl FnMut(usize, &str) -> Result<(), DatasetError>,
) -> Result<usize, DatasetError> {
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    let mut count = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| DatasetError::io(path, e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let line = std::str::from_utf8(&buf).map_err(|_| {
            DatasetError::corrupt(path, format!("line {line_no} is not UTF-8 text"))
        })?;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if line_no == 1
            && trimmed
                .split_whitespace()
                .next()
                .is_some_and(|t| t.parse::<f64>().is_err())
        {
            continue; // header line
        }
        f(count, trimmed).map_err(|e| match e {
            DatasetError::Corrupt {
                path,
                detail,
                source,
            } if buf.last() != Some(&b'\n') => DatasetError::Truncated {
                path,
                detail: format!("last line {line_no} is incomplete: {detail}"),
                source,
            },
            DatasetError::Corrupt {
                path,
                detail,
                source,
            } => DatasetError::Corrupt {
                path,
                detail: format!("line {line_no}: {detail}"),
                source,
            },
            other => other,
        })?;
        count += 1;
    }
    Ok(count)
}

/// Reads the 16 sensor columns of the rows selected by `config` (in sample order).
///
/// ```
/// use cpflow::datasets::{DatasetError, GasConfig, read_gas_sensors};
/// # use cpflow::rand::{Rng, SeedableRng, rngs::StdRng};
/// // A UCI-format file: a header line, then 20 rows of 19 columns (time, CO, ethylene,
/// // 16 sensors), here random numbers.
/// let mut rng = StdRng::seed_from_u64(0);
/// let mut text = String::from("Time (seconds), CO conc (ppm), Ethylene conc (ppm), Sensor readings (16 channels)\n");
/// for _ in 0..20 {
///     let row: Vec<String> = (0..19).map(|_| format!("{:.6}", rng.random::<f64>())).collect();
///     text += &row.join(" ");
///     text.push('\n');
/// }
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-read-gas-sensors-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("ethylene_CO.txt");
/// std::fs::write(&path, &text).unwrap();
/// let all = read_gas_sensors(&path, &GasConfig { sample_fraction: None, seed: 0 })?;
/// assert_eq!((all.rows(), all.cols()), (20, 16));
/// // Row 0 holds the last 16 numbers of the first data line.
/// let first: Vec<f64> = text.lines().nth(1).unwrap().split(' ').skip(3).map(|v| v.parse().unwrap()).collect();
/// assert_eq!(all.row(0), &first[..]);
/// // A line with a missing column is reported with its number.
/// std::fs::write(&path, "Time CO Eth\n1 2 3\n").unwrap();
/// let err = read_gas_sensors(&path, &GasConfig::default()).unwrap_err();
/// assert!(matches!(err, DatasetError::Corrupt { .. }) && err.to_string().contains("line 2"), "{err}");
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), DatasetError>(())
/// ```
pub fn read_gas_sensors(path: &Path, config: &GasConfig) -> Result<Matrix<f64>, DatasetError> {
    read_gas_sensors_as(path, path, config)
}

/// [`read_gas_sensors`] of the file at `path` that errors call `shown_as`: e.g. a staged copy
/// checked before it is renamed to `shown_as`.
///
/// ```
/// use cpflow::datasets::{GasConfig, read_gas_sensors_as};
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-gas-sensors-as-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let staged = dir.join("ethylene_CO.txt.tmp");
/// std::fs::write(&staged, "Time CO Eth\n1 2 3\n").unwrap();
/// let shown = std::path::Path::new("data/gas/ethylene_CO.txt");
/// let err = read_gas_sensors_as(&staged, shown, &GasConfig::default()).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "data/gas/ethylene_CO.txt: corrupt or unsupported file: line 2: expected 19 columns, found 3"
/// );
/// std::fs::remove_dir_all(&dir).ok();
/// ```
pub fn read_gas_sensors_as(
    path: &Path,
    shown_as: &Path,
    config: &GasConfig,
) -> Result<Matrix<f64>, DatasetError> {
    gas_sensors(shown_as, || open(path, shown_as), config)
}

/// [`read_gas_sensors`] on text already read (the whole file, or its first lines); `path` is
/// used in error messages only.
///
/// ```
/// use cpflow::datasets::{GasConfig, parse_gas_sensors};
/// let all_rows = GasConfig { sample_fraction: None, seed: 0 };
/// let row = vec!["1.5"; 19].join(" ");
/// let text = format!("Time CO Eth sensors\n{row}\n{row}\n");
/// let m = parse_gas_sensors("ethylene_CO.txt".as_ref(), text.as_bytes(), &all_rows)?;
/// assert_eq!((m.rows(), m.cols()), (2, 16));
/// // A line with a missing column is named with its number and the file.
/// let err = parse_gas_sensors("ethylene_CO.txt".as_ref(), b"Time\n1 2 3\n", &all_rows).unwrap_err();
/// assert!(err.to_string().contains("line 2") && err.to_string().contains("ethylene_CO.txt"), "{err}");
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn parse_gas_sensors(
    path: &Path,
    text: &[u8],
    config: &GasConfig,
) -> Result<Matrix<f64>, DatasetError> {
    gas_sensors(path, || Ok(text), config)
}

/// Reads the sensor columns as [`read_gas_sensors`] does, in two passes over the text that
/// `open` yields (rows are counted first, then the sample is drawn and stored); `path` is
/// named in error messages.
fn gas_sensors<R: BufRead>(
    path: &Path,
    open: impl Fn() -> Result<R, DatasetError>,
    config: &GasConfig,
) -> Result<Matrix<f64>, DatasetError> {
    let n_rows = for_each_data_line(path, open()?, |_, _| Ok(()))?;
    if n_rows == 0 {
        return Err(DatasetError::truncated(
            path,
            "no data lines after the header",
        ));
    }
    let (dest, n_out) = match config.sample_fraction {
        Some(frac) => {
            if !(frac > 0.0 && frac <= 1.0) {
                return Err(DatasetError::InvalidConfig(format!(
                    "gas sample_fraction must be in (0, 1], got {frac}"
                )));
            }
            let n = (frac * n_rows as f64).round_ties_even() as usize;
            let perm = NumpyRandomState::new(config.seed).permutation(n_rows);
            let mut dest = vec![usize::MAX; n_rows];
            for (k, &row) in perm[..n].iter().enumerate() {
                dest[row] = k;
            }
            (dest, n)
        }
        None => ((0..n_rows).collect(), n_rows),
    };
    let d = GAS_RAW_COLUMNS - GAS_DROPPED_LEADING;
    let mut out = vec![0.0f64; n_out * d];
    let seen = for_each_data_line(path, open()?, |i, line| {
        let Some(&k) = dest.get(i) else {
            return Err(DatasetError::corrupt(path, "file changed while reading"));
        };
        // Every line is parsed (a corrupt value is reported even in a row left out of the
        // sample); only the sampled rows are stored.
        let mut row = [0.0f64; GAS_RAW_COLUMNS];
        let mut n_tok = 0usize;
        for tok in line.split_whitespace() {
            let v: f64 = tok
                .parse()
                .map_err(|_| DatasetError::corrupt(path, format!("bad number {tok:?}")))?;
            if n_tok < GAS_RAW_COLUMNS {
                row[n_tok] = v;
            }
            n_tok += 1;
        }
        if n_tok != GAS_RAW_COLUMNS {
            return Err(DatasetError::corrupt(
                path,
                format!("expected {GAS_RAW_COLUMNS} columns, found {n_tok}"),
            ));
        }
        if k != usize::MAX {
            out[k * d..(k + 1) * d].copy_from_slice(&row[GAS_DROPPED_LEADING..]);
        }
        Ok(())
    })?;
    if seen != n_rows {
        return Err(DatasetError::corrupt(path, "file changed while reading"));
    }
    Matrix::new(n_out, d, out)
}

/// Pearson correlation matrix of the columns (pandas `DataFrame.corr()`); `NaN` for a
/// constant column.
pub(crate) fn correlation_matrix(m: &Matrix<f64>) -> Vec<Vec<f64>> {
    let d = m.cols();
    let mu = column_means(&[m]);
    let mut cov = vec![vec![0.0f64; d]; d];
    for r in 0..m.rows() {
        let row = m.row(r);
        for i in 0..d {
            let a = row[i] - mu[i];
            for j in i..d {
                cov[i][j] += a * (row[j] - mu[j]);
            }
        }
    }
    let mut c = vec![vec![0.0f64; d]; d];
    for i in 0..d {
        for j in i..d {
            let v = cov[i][j] / (cov[i][i] * cov[j][j]).sqrt();
            c[i][j] = v;
            c[j][i] = v;
        }
    }
    c
}

/// MAF's column-removal loop: the indices (into the input columns) of the columns kept.
pub(crate) fn uncorrelated_columns(corr: &[Vec<f64>], threshold: f64) -> Vec<usize> {
    let mut kept: Vec<usize> = (0..corr.len()).collect();
    loop {
        let counts: Vec<usize> = kept
            .iter()
            .map(|&i| kept.iter().filter(|&&j| corr[i][j] > threshold).count())
            .collect();
        match counts.iter().position(|&b| b > 1) {
            Some(pos) => {
                kept.remove(pos);
            }
            None => return kept,
        }
    }
}

/// The MAF GAS preprocessing on the sensor columns (kept in `f64`).
///
/// ```
/// use cpflow::datasets::{Matrix, preprocess_gas};
/// # use cpflow::rand::{Rng, SeedableRng, rngs::StdRng};
/// let mut rng = StdRng::seed_from_u64(0);
/// // Three independent random columns, then a fourth that is 2 × the first + 1.
/// let mut values = Vec::new();
/// for _ in 0..20 {
///     let row: [f64; 3] = [rng.random(), rng.random(), rng.random()];
///     values.extend(row);
///     values.push(2.0 * row[0] + 1.0);
/// }
/// let split = preprocess_gas(Matrix::new(20, 4, values)?)?;
/// // Columns 0 and 3 are correlated above 0.98: MAF drops the first of them.
/// assert_eq!((split.dim(), split.sizes()), (3, (17, 1, 2)));
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn preprocess_gas(sensors: Matrix<f64>) -> Result<Split<f64>, DatasetError> {
    let corr = correlation_matrix(&sensors);
    let keep = uncorrelated_columns(&corr, GAS_CORRELATION_THRESHOLD);
    let mut data = sensors.select_columns(&keep);
    let mu = column_means(&[&data]);
    let sd = column_stds(&[&data], &mu, 1);
    standardise(&mut data, &mu, &sd);
    tail_split("gas", &data)
}
