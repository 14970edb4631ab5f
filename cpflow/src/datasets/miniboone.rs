//! MINIBOONE (UCI MiniBooNE particle identification, MAF preprocessing), d = 43.
//!
//! `miniboone.py:load_data_normalised`: `np.load("miniboone/data.npy")` (MAF's cleaned
//! 36,488 × 43 file), tail split (test = last 10 %, val = last 10 % of the rest, no
//! shuffling), standardise with the mean and std (ddof 0) of train+val, cast to `f32`.

use std::path::Path;

use super::matrix::{column_means, column_stds, standardise, tail_split};
use super::npy::read_npy_matrix;
use super::{DatasetError, Matrix, Split, layout};

/// Number of columns of MAF's `miniboone/data.npy`.
pub const MINIBOONE_COLUMNS: usize = 43;

/// Loads MINIBOONE from `root/miniboone/data.npy` with the MAF preprocessing.
///
/// On MAF's file the split has (29,556, 3,284, 3,648) rows. A small file in a temporary
/// data root:
///
/// ```
/// use cpflow::datasets::{DatasetError, MINIBOONE_COLUMNS, Matrix, load_miniboone, write_npy_f64};
/// let root = std::env::temp_dir().join(format!("cpflow-doc-load-miniboone-{}", std::process::id()));
/// assert!(matches!(load_miniboone(&root), Err(DatasetError::MissingFile { .. })));
/// let values: Vec<f64> = (0..20 * 43).map(|i| ((i * 7919) % 101) as f64).collect();
/// let raw = Matrix::new(20, MINIBOONE_COLUMNS, values)?;
/// std::fs::create_dir_all(root.join("miniboone")).unwrap();
/// std::fs::write(root.join("miniboone/data.npy"), write_npy_f64(&raw)).unwrap();
/// let split = load_miniboone(&root)?;
/// assert_eq!((split.dim(), split.sizes()), (43, (17, 1, 2)));
/// std::fs::remove_dir_all(&root).ok();
/// # Ok::<(), DatasetError>(())
/// ```
pub fn load_miniboone(root: &Path) -> Result<Split, DatasetError> {
    load_miniboone_file(&root.join(layout::MINIBOONE))
}

/// Loads MINIBOONE from an explicit `.npy` path (e.g. the 1,523-row fragment of MAF's file
/// described in `docs/data/miniboone/README.md`).
///
/// ```
/// use cpflow::datasets::{MINIBOONE_COLUMNS, Matrix, load_miniboone_file, write_npy_f64};
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-miniboone-file-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let values: Vec<f64> = (0..20 * 43).map(|i| ((i * 7919) % 101) as f64).collect();
/// let raw = Matrix::new(20, MINIBOONE_COLUMNS, values)?;
/// let path = dir.join("fragment.npy");
/// std::fs::write(&path, write_npy_f64(&raw)).unwrap();
/// let split = load_miniboone_file(&path)?;
/// // The tail split, in file order: the last 2 rows are the test set.
/// assert_eq!(split.sizes(), (17, 1, 2));
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn load_miniboone_file(path: &Path) -> Result<Split, DatasetError> {
    let raw = read_npy_matrix(path, "miniboone", "miniboone")?;
    Ok(preprocess_miniboone(raw)?.to_f32())
}

/// The MAF MINIBOONE preprocessing on an in-memory copy of `data.npy` (kept in `f64`).
///
/// ```
/// use cpflow::datasets::{MINIBOONE_COLUMNS, Matrix, preprocess_miniboone};
/// let values: Vec<f64> = (0..20 * 43).map(|i| ((i * 7919) % 101) as f64).collect();
/// let raw = Matrix::new(20, MINIBOONE_COLUMNS, values)?;
/// let split = preprocess_miniboone(raw.clone())?;
/// // Standardised with the mean and std (ddof 0) of train + val: each column of those 18
/// // rows has mean 0 and variance 1.
/// let s = &split;
/// let col = |c: usize| (0..17).map(move |r| s.train.row(r)[c]).chain([s.val.row(0)[c]]);
/// for c in [0, 42] {
///     let mean = col(c).sum::<f64>() / 18.0;
///     let var = col(c).map(|v| (v - mean).powi(2)).sum::<f64>() / 18.0;
///     assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-12);
/// }
/// assert!(preprocess_miniboone(raw.select_columns(&[0, 1])).is_err()); // 2 columns, not 43
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn preprocess_miniboone(raw: Matrix<f64>) -> Result<Split<f64>, DatasetError> {
    if raw.cols() != MINIBOONE_COLUMNS {
        return Err(DatasetError::bad_shape(
            "miniboone/data.npy columns",
            MINIBOONE_COLUMNS.to_string(),
            raw.cols().to_string(),
        ));
    }
    let Split {
        mut train,
        mut val,
        mut test,
    } = tail_split("miniboone", &raw)?;
    let mu = column_means(&[&train, &val]);
    let sd = column_stds(&[&train, &val], &mu, 0);
    for m in [&mut train, &mut val, &mut test] {
        standardise(m, &mu, &sd);
    }
    Ok(Split { train, val, test })
}
