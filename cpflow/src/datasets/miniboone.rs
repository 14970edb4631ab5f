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
/// ```no_run
/// let split = cpflow::datasets::load_miniboone("data".as_ref())?;
/// assert_eq!(split.sizes(), (29_556, 3_284, 3_648));
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn load_miniboone(root: &Path) -> Result<Split, DatasetError> {
    load_miniboone_file(&root.join(layout::MINIBOONE))
}

/// Loads MINIBOONE from an explicit `.npy` path (e.g. the 1,523-row fragment of MAF's file
/// described in `docs/data/miniboone/README.md`).
pub fn load_miniboone_file(path: &Path) -> Result<Split, DatasetError> {
    let raw = read_npy_matrix(path, "miniboone", "miniboone")?;
    Ok(preprocess_miniboone(raw)?.to_f32())
}

/// The MAF MINIBOONE preprocessing on an in-memory copy of `data.npy` (kept in `f64`).
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
