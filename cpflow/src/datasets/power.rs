//! POWER (UCI household electric power consumption, MAF preprocessing), d = 6.
//!
//! `power.py:load_data_normalised` of MAF / CP-Flow, step by step:
//! 1. `data = np.load("power/data.npy")` — 8 columns (MAF's cleaned file: global active
//!    power, global reactive power, voltage, global intensity, sub-meterings 1–3, time);
//! 2. `RandomState(42).shuffle(data)` (rows);
//! 3. delete column 3, then column 1;
//! 4. noise from the same `RandomState`, drawn in this order: `voltage = 0.01·rand(N,1)`,
//!    `gap = 0.001·rand(N,1)`, `sm = rand(N,3)`; added as columns
//!    `[gap, voltage, sm0, sm1, sm2, 0]`;
//! 5. tail split (test = last 10 %, val = last 10 % of the rest);
//! 6. standardise with the mean and std (ddof 0) of train+val; cast to `f32`.
//!
//! The random stream is numpy's own ([`NumpyRandomState`]), so the rows, the noise and hence
//! the splits are the same as MAF's, up to floating-point rounding of the statistics.

use std::path::Path;

use super::matrix::{column_means, column_stds, standardise, tail_split};
use super::npy::read_npy_matrix;
use super::{DatasetError, Matrix, NumpyRandomState, Split, layout};

/// Number of columns of MAF's `power/data.npy`.
pub const POWER_RAW_COLUMNS: usize = 8;

/// Loads POWER from `root/power/data.npy` with the MAF preprocessing.
///
/// On MAF's file the split has (1,659,917, 184,435, 204,928) rows. A small file in a
/// temporary data root:
///
/// ```
/// use cpflow::datasets::{DatasetError, Matrix, POWER_RAW_COLUMNS, load_power, write_npy_f64};
/// let root = std::env::temp_dir().join(format!("cpflow-doc-load-power-{}", std::process::id()));
/// assert!(matches!(load_power(&root), Err(DatasetError::MissingFile { command: "power", .. })));
/// let values: Vec<f64> = (0..160).map(|i| ((i * 7919) % 101) as f64 / 10.0).collect();
/// let raw = Matrix::new(20, POWER_RAW_COLUMNS, values)?;
/// std::fs::create_dir_all(root.join("power")).unwrap();
/// std::fs::write(root.join("power/data.npy"), write_npy_f64(&raw)).unwrap();
/// let split = load_power(&root)?;
/// assert_eq!((split.dim(), split.sizes()), (6, (17, 1, 2)));
/// std::fs::remove_dir_all(&root).ok();
/// # Ok::<(), DatasetError>(())
/// ```
pub fn load_power(root: &Path) -> Result<Split, DatasetError> {
    let path = root.join(layout::POWER);
    let raw = read_npy_matrix(&path, "power", "power")?;
    Ok(preprocess_power(raw)?.to_f32())
}

/// The MAF POWER preprocessing applied to an in-memory copy of `data.npy` (kept in `f64`).
///
/// ```
/// use cpflow::datasets::{Matrix, POWER_RAW_COLUMNS, preprocess_power};
/// let values: Vec<f64> = (0..160).map(|i| ((i * 7919) % 101) as f64 / 10.0).collect();
/// let raw = Matrix::new(20, POWER_RAW_COLUMNS, values)?;
/// let split = preprocess_power(raw)?;
/// assert_eq!(split.dim(), 6); // two of the 8 columns deleted
/// assert_eq!(split.sizes(), (17, 1, 2)); // test: int(0.1·20) = 2, val: int(0.1·18) = 1
/// // Standardised with the statistics of train + val: zero mean over those 18 rows.
/// for c in 0..6 {
///     let sum: f64 = (0..17).map(|r| split.train.row(r)[c]).sum::<f64>() + split.val.row(0)[c];
///     assert!(sum.abs() < 1e-12);
/// }
/// assert!(preprocess_power(Matrix::new(20, 7, vec![0.0; 140])?).is_err()); // 7 columns
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn preprocess_power(raw: Matrix<f64>) -> Result<Split<f64>, DatasetError> {
    if raw.cols() != POWER_RAW_COLUMNS {
        return Err(DatasetError::bad_shape(
            "power/data.npy columns",
            POWER_RAW_COLUMNS.to_string(),
            raw.cols().to_string(),
        ));
    }
    let n = raw.rows();
    let mut rng = NumpyRandomState::new(42);
    let mut data = raw.into_data();
    rng.shuffle_rows(&mut data, POWER_RAW_COLUMNS);
    let shuffled = Matrix::new(n, POWER_RAW_COLUMNS, data)?;
    // np.delete(data, 3, axis=1) then np.delete(data, 1, axis=1)
    let kept = shuffled.select_columns(&[0, 2, 4, 5, 6, 7]);
    let cols = kept.cols();
    let voltage: Vec<f64> = (0..n).map(|_| 0.01 * rng.random_sample()).collect();
    let gap: Vec<f64> = (0..n).map(|_| 0.001 * rng.random_sample()).collect();
    let mut out = kept.into_data();
    for (i, row) in out.chunks_exact_mut(cols).enumerate() {
        row[0] += gap[i];
        row[1] += voltage[i];
        // sm_noise = rng.rand(N, 3), row-major; the time column gets zeros.
        for v in &mut row[2..5] {
            *v += rng.random_sample();
        }
    }
    let data = Matrix::new(n, cols, out)?;
    let Split {
        mut train,
        mut val,
        mut test,
    } = tail_split("power", &data)?;
    let mu = column_means(&[&train, &val]);
    let sd = column_stds(&[&train, &val], &mu, 0);
    for m in [&mut train, &mut val, &mut test] {
        standardise(m, &mu, &sd);
    }
    Ok(Split { train, val, test })
}
