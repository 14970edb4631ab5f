//! The four loaders behind [`super::load_vae_data`] (`docs/reference/images-vae.md` §3.2).

use std::path::Path;

use crate::datasets::{DatasetError, Matrix, NumpyRandomState, load_mnist, read_npy_file};

use super::binarize::numpy_binarize;
use super::mat5::read_mat_v5;
use super::{
    CALTECH101_DIR, FREY_FACES_FILE, FREY_SPLIT, MNIST_VALIDATION, OMNIGLOT_FILE,
    OMNIGLOT_VALIDATION, REFERENCE_BINARIZATION_SEED, VaeData, VaeDatasetName, VaeImages,
    VaeLikelihood,
};

/// Side of the square images of Caltech, MNIST and Omniglot.
const SIDE: usize = 28;
const FREY_H: usize = 28;
const FREY_W: usize = 20;

/// The seed of `np.random.seed(seed)` for a `u64` seed: the seed itself below 2³², else the
/// XOR of its two halves (numpy would seed such a value differently, by `init_by_array`).
pub(crate) fn numpy_seed(seed: u64) -> u32 {
    match u32::try_from(seed) {
        Ok(s) => s,
        Err(_) => (seed ^ (seed >> 32)) as u32,
    }
}

/// Frey and Caltech are not downloadable: the error says where the project keeps them.
fn shipped_file_missing(dataset: &'static str, path: &Path, shared: &str) -> DatasetError {
    DatasetError::Unsupported {
        dataset,
        detail: format!(
            "file {} not found; `cargo xtask download` does not fetch this dataset: copy \
             `{shared}` from the project's shared data folder (`../shared/data/{shared}` next \
             to the repository) to that path",
            path.display()
        ),
    }
}

/// Reads a 2-D `.npy` of grey levels (`max` = largest allowed value) with `cols` columns.
fn read_levels(
    path: &Path,
    dataset: &'static str,
    shared: &str,
    cols: usize,
    max: u8,
) -> Result<Matrix<u8>, DatasetError> {
    if !path.is_file() {
        return Err(shipped_file_missing(dataset, path, shared));
    }
    let m = read_npy_file(path)?;
    if m.cols() != cols || m.rows() == 0 {
        return Err(DatasetError::bad_shape(
            format!("{dataset} {}", path.display()),
            format!("(n ≥ 1, {cols})"),
            format!("({}, {})", m.rows(), m.cols()),
        ));
    }
    let mut out = Vec::with_capacity(m.data().len());
    for (i, &v) in m.data().iter().enumerate() {
        if !((0.0..=f64::from(max)).contains(&v) && v.fract() == 0.0) {
            return Err(DatasetError::corrupt(
                path,
                format!(
                    "value {v} at row {}, column {} is not an integer in 0..={max}",
                    i / cols,
                    i % cols
                ),
            ));
        }
        out.push(v as u8);
    }
    Matrix::new(m.rows(), cols, out)
}

/// Row-major `SIDE × SIDE` image from a MATLAB column-major one: pixel `(r, c)` is stored at
/// `c·28 + r` (numpy's `reshape(-1, 28, 28).reshape(-1, 784, order='F')`).
fn fortran_to_row_major<T: Copy>(img: &mut [T], tmp: &mut Vec<T>) {
    tmp.clear();
    tmp.extend_from_slice(img);
    for r in 0..SIDE {
        for c in 0..SIDE {
            img[r * SIDE + c] = tmp[c * SIDE + r];
        }
    }
}

fn images(n: usize, pixels: Vec<u8>) -> VaeImages {
    VaeImages { n, pixels }
}

/// `load_freyfaces`: `np.random.seed(seed); np.random.shuffle(data)`, then 1565/200/200.
pub(crate) fn load_frey(root: &Path, seed: u64) -> Result<VaeData, DatasetError> {
    let path = root.join(FREY_FACES_FILE);
    let m = read_levels(&path, "frey-faces", FREY_FACES_FILE, FREY_H * FREY_W, 255)?;
    let (a, b, c) = FREY_SPLIT;
    if m.rows() != a + b + c {
        return Err(DatasetError::bad_shape(
            "frey-faces images",
            format!("{} rows", a + b + c),
            format!("{} rows", m.rows()),
        ));
    }
    let d = FREY_H * FREY_W;
    let mut px = m.into_data();
    NumpyRandomState::new(numpy_seed(seed)).shuffle_rows(&mut px, d);
    let test = px.split_off((a + b) * d);
    let val = px.split_off(a * d);
    Ok(VaeData {
        name: VaeDatasetName::FreyFaces,
        likelihood: VaeLikelihood::Categorical256,
        height: FREY_H,
        width: FREY_W,
        train: images(a, px),
        val: images(b, val),
        test: images(c, test),
        dynamic_binarization: false,
    })
}

/// `load_caltech101silhouettes`: `x = 1 − data` in row-major order; train then validation
/// shuffled by `np.random.shuffle` after `np.random.seed(seed)`; test in file order.
pub(crate) fn load_caltech(root: &Path, seed: u64) -> Result<VaeData, DatasetError> {
    let mut rng = NumpyRandomState::new(numpy_seed(seed));
    let mut tmp = Vec::new();
    let mut load = |split: &str, shuffle: bool| -> Result<VaeImages, DatasetError> {
        let rel = format!("{CALTECH101_DIR}/{split}_data.npy");
        let m = read_levels(&root.join(&rel), "caltech101", &rel, SIDE * SIDE, 1)?;
        let n = m.rows();
        let mut px = m.into_data();
        for img in px.chunks_exact_mut(SIDE * SIDE) {
            fortran_to_row_major(img, &mut tmp);
            img.iter_mut().for_each(|v| *v = 1 - *v);
        }
        if shuffle {
            rng.shuffle_rows(&mut px, SIDE * SIDE);
        }
        Ok(images(n, px))
    };
    let train = load("train", true)?;
    let val = load("val", true)?;
    let test = load("test", false)?;
    Ok(VaeData {
        name: VaeDatasetName::Caltech101,
        likelihood: VaeLikelihood::Bernoulli,
        height: SIDE,
        width: SIDE,
        train,
        val,
        test,
        dynamic_binarization: false,
    })
}

/// Dynamically binarised MNIST: `perm = np.random.seed(seed); np.random.permutation(60000)`,
/// train = `perm[..50000]`, validation = `perm[50000..]` of the training file, test = t10k;
/// validation then test binarised once by `np.random.seed(777); np.random.binomial(1, x)`
/// with `x = uint8.astype(float32) / 255`.
pub(crate) fn load_mnist_dynamic(root: &Path, seed: u64) -> Result<VaeData, DatasetError> {
    let m = load_mnist(root, 0)?;
    let d = SIDE * SIDE;
    let n = m.train.rows();
    if n <= MNIST_VALIDATION {
        return Err(DatasetError::bad_shape(
            "mnist training images",
            format!("more than {MNIST_VALIDATION}"),
            n.to_string(),
        ));
    }
    let perm = NumpyRandomState::new(numpy_seed(seed)).permutation(n);
    let gather = |idx: &[usize]| -> Vec<u8> {
        idx.iter()
            .flat_map(|&i| m.train.row(i).iter().copied())
            .collect()
    };
    let n_train = n - MNIST_VALIDATION;
    let train = gather(&perm[..n_train]);
    let val_grey = gather(&perm[n_train..]);
    let table: Vec<f32> = (0..=255u8).map(|k| f32::from(k) / 255.0).collect();
    let probs = |g: &[u8]| -> Vec<f32> { g.iter().map(|&k| table[usize::from(k)]).collect() };
    let mut rng = NumpyRandomState::new(REFERENCE_BINARIZATION_SEED);
    let val = numpy_binarize(&mut rng, &probs(&val_grey));
    let test = numpy_binarize(&mut rng, &probs(m.test.data()));
    check_sizes(
        VaeData {
            name: VaeDatasetName::Mnist,
            likelihood: VaeLikelihood::Bernoulli,
            height: SIDE,
            width: SIDE,
            train: images(n_train, train),
            val: images(MNIST_VALIDATION, val),
            test: images(m.test.rows(), test),
            dynamic_binarization: true,
        },
        d,
    )
}

fn check_sizes(v: VaeData, d: usize) -> Result<VaeData, DatasetError> {
    for (what, s) in [("train", &v.train), ("val", &v.val), ("test", &v.test)] {
        if s.pixels.len() != s.n * d {
            return Err(DatasetError::bad_shape(
                format!("{} {what} pixels", v.name),
                format!("{} × {d}", s.n),
                s.pixels.len().to_string(),
            ));
        }
    }
    Ok(v)
}

/// `load_omniglot` on `root/omniglot/chardata.mat`.
pub(crate) fn load_omniglot(root: &Path, seed: u64) -> Result<VaeData, DatasetError> {
    let path = root.join(OMNIGLOT_FILE);
    if !path.is_file() {
        return Err(DatasetError::MissingFile {
            dataset: "omniglot",
            path,
            command: "omniglot",
        });
    }
    let mut vars = read_mat_v5::<f32>(&path, &["data", "testdata"])?;
    let test = vars.pop();
    let train = vars.pop();
    let (Some(train), Some(test)) = (train, test) else {
        return Err(DatasetError::corrupt(&path, "variables missing"));
    };
    let cols = |a: &super::MatArray<f32>| -> Result<usize, DatasetError> {
        match a.dims[..] {
            [rows, n] if rows == SIDE * SIDE && n > 0 => Ok(n),
            _ => Err(DatasetError::bad_shape(
                format!("omniglot `{}` in {}", a.name, path.display()),
                "784 × n (one image per column)",
                crate::vae::shape_text::times_text(&a.dims),
            )),
        }
    };
    let (n_train, n_test) = (cols(&train)?, cols(&test)?);
    for a in [&train, &test] {
        if let Some(i) = a.data.iter().position(|v| !(0.0..=1.0).contains(v)) {
            return Err(DatasetError::corrupt(
                &path,
                format!(
                    "`{}` value {} at pixel {}, image {} is not in [0, 1]",
                    a.name,
                    a.data[i],
                    i % (SIDE * SIDE),
                    i / (SIDE * SIDE)
                ),
            ));
        }
    }
    omniglot_from_columns(
        train.data,
        n_train,
        test.data,
        n_test,
        OMNIGLOT_VALIDATION,
        seed,
    )
}

/// Omniglot from the MAT variables (one column-major 28 × 28 image per 784 values, grey
/// levels in `[0, 1]` as `f32`, as the reference's `.astype('float32')`): Fortran reorder,
/// `np.random.seed(seed); np.random.shuffle(train)`, the last `n_val` become validation,
/// then `np.random.seed(777)` and `np.random.binomial(1, ·)` on validation, then test.
/// Training images keep their grey levels, rounded to `round(255·p)`.
pub(crate) fn omniglot_from_columns(
    mut train: Vec<f32>,
    n_train: usize,
    mut test: Vec<f32>,
    n_test: usize,
    n_val: usize,
    seed: u64,
) -> Result<VaeData, DatasetError> {
    let d = SIDE * SIDE;
    if n_val >= n_train {
        return Err(DatasetError::bad_shape(
            "omniglot training images",
            format!("more than the {n_val} validation images"),
            n_train.to_string(),
        ));
    }
    if train.len() != n_train * d || test.len() != n_test * d {
        return Err(DatasetError::bad_shape(
            "omniglot pixels",
            format!("{n_train} and {n_test} images of {d}"),
            format!("{} and {} values", train.len(), test.len()),
        ));
    }
    let mut tmp = Vec::new();
    for img in train.chunks_exact_mut(d).chain(test.chunks_exact_mut(d)) {
        fortran_to_row_major(img, &mut tmp);
    }
    NumpyRandomState::new(numpy_seed(seed)).shuffle_rows(&mut train, d);
    let cut = (n_train - n_val) * d;
    let val = train.split_off(cut);
    let mut rng = NumpyRandomState::new(REFERENCE_BINARIZATION_SEED);
    let val = numpy_binarize(&mut rng, &val);
    let test = numpy_binarize(&mut rng, &test);
    let train: Vec<u8> = train.iter().map(|&p| (p * 255.0).round() as u8).collect();
    check_sizes(
        VaeData {
            name: VaeDatasetName::Omniglot,
            likelihood: VaeLikelihood::Bernoulli,
            height: SIDE,
            width: SIDE,
            train: images(n_train - n_val, train),
            val: images(n_val, val),
            test: images(n_test, test),
            dynamic_binarization: true,
        },
        d,
    )
}
