//! MNIST from the official IDX files, with the dequantisation and logit transform of flow
//! papers (RealNVP, MAF, Residual Flows).
//!
//! Files: `root/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte`, gzipped (`.gz`, as
//! released) or not. Split: the last `n_val` (default 10,000) of the 60,000 training images
//! form the validation set (MAF's 50,000 / 10,000 / 10,000).
//!
//! # Transform
//! A pixel `v ∈ {0..255}` becomes `x = (v + u) / 256`, `u ~ U(0, 1)` (uniform
//! dequantisation), then `y = logit(α + (1 − 2α) x)` with `α = 10⁻⁶` for MNIST (MAF's
//! choice; RealNVP used 0.05 on CIFAR-10). The flow models `y`; the density of the
//! dequantised data follows from the per-image log-Jacobian
//! `log|det ∂y/∂x| = Σ_j [log(1 − 2α) − log s_j − log(1 − s_j)]`, `s = α + (1 − 2α) x`,
//! returned by [`dequantize_logit`]. [`bits_per_dim`] turns a log-density of `y` into the
//! bits per dimension of the discrete pixels:
//! `bpd = (−log p(y) − log|det ∂y/∂x| + D ln 256) / (D ln 2)`.

use std::io::Read;
use std::path::Path;

use rand::Rng;

use super::{DatasetError, Matrix, layout};

/// MAF's logit offset for MNIST.
pub const MNIST_ALPHA: f64 = 1e-6;

const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;

/// File names of the four MNIST files (without `.gz`).
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Images from an IDX file: `n` images of `rows × cols` bytes, one image per matrix row.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// `(n, rows·cols)` grey levels, row-major pixels within an image.
    pub images: Matrix<u8>,
}

/// Reads a file, transparently gunzipping it when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let raw = super::error::read_file(path, "mnist", "mnist")?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DatasetError::decoding(path, "gzip stream", e))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(path: &Path, b: &[u8], at: usize) -> Result<usize, DatasetError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
        .ok_or_else(|| DatasetError::truncated(path, "IDX header cut short"))
}

fn check_len(path: &Path, body: usize, need: usize) -> Result<(), DatasetError> {
    match body.cmp(&need) {
        std::cmp::Ordering::Less => Err(DatasetError::truncated(
            path,
            format!("header announces {need} data bytes, file has {body}"),
        )),
        std::cmp::Ordering::Greater => Err(DatasetError::corrupt(
            path,
            format!("{} bytes after the announced data", body - need),
        )),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Reads an IDX3 image file (`.gz` or raw).
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DatasetError> {
    let b = read_maybe_gz(path)?;
    let magic = be_u32(path, &b, 0)?;
    if magic != IMAGES_MAGIC as usize {
        return Err(DatasetError::corrupt(
            path,
            format!("bad IDX image magic {magic} (expected {IMAGES_MAGIC})"),
        ));
    }
    let (n, rows, cols) = (
        be_u32(path, &b, 4)?,
        be_u32(path, &b, 8)?,
        be_u32(path, &b, 12)?,
    );
    let d = rows * cols;
    check_len(path, b.len() - 16, n * d)?;
    Ok(IdxImages {
        rows,
        cols,
        images: Matrix::new(n, d, b[16..].to_vec())?,
    })
}

/// Reads an IDX1 label file (`.gz` or raw).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let b = read_maybe_gz(path)?;
    let magic = be_u32(path, &b, 0)?;
    if magic != LABELS_MAGIC as usize {
        return Err(DatasetError::corrupt(
            path,
            format!("bad IDX label magic {magic} (expected {LABELS_MAGIC})"),
        ));
    }
    let n = be_u32(path, &b, 4)?;
    check_len(path, b.len() - 8, n)?;
    Ok(b[8..].to_vec())
}

/// `root/mnist/<name>.gz` if present, else `root/mnist/<name>`.
fn mnist_path(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(layout::MNIST_DIR);
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() { gz } else { dir.join(name) }
}

/// MNIST images (`(n, 784)` bytes) and labels, split into train / validation / test.
#[derive(Debug, Clone, PartialEq)]
pub struct MnistSplit {
    /// Training images.
    pub train: Matrix<u8>,
    /// Training labels.
    pub train_labels: Vec<u8>,
    /// Validation images (the last `n_val` of the official training file).
    pub val: Matrix<u8>,
    /// Validation labels.
    pub val_labels: Vec<u8>,
    /// Test images (the official test file).
    pub test: Matrix<u8>,
    /// Test labels.
    pub test_labels: Vec<u8>,
}

/// Loads the raw MNIST bytes from `root/mnist/` and holds out the last `n_val` training
/// images for validation.
///
/// ```no_run
/// let m = cpflow::datasets::load_mnist("data".as_ref(), 10_000)?;
/// assert_eq!((m.train.rows(), m.val.rows(), m.test.rows()), (50_000, 10_000, 10_000));
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn load_mnist(root: &Path, n_val: usize) -> Result<MnistSplit, DatasetError> {
    let train = read_idx_images(&mnist_path(root, MNIST_FILES[0]))?;
    let train_labels = read_idx_labels(&mnist_path(root, MNIST_FILES[1]))?;
    let test = read_idx_images(&mnist_path(root, MNIST_FILES[2]))?;
    let test_labels = read_idx_labels(&mnist_path(root, MNIST_FILES[3]))?;
    for (what, imgs, labels) in [
        ("mnist train", &train, &train_labels),
        ("mnist test", &test, &test_labels),
    ] {
        if imgs.images.rows() != labels.len() {
            return Err(DatasetError::bad_shape(
                format!("{what} labels"),
                imgs.images.rows().to_string(),
                labels.len().to_string(),
            ));
        }
        if (imgs.rows, imgs.cols) != (28, 28) {
            return Err(DatasetError::bad_shape(
                format!("{what} image size"),
                "28x28",
                format!("{}x{}", imgs.rows, imgs.cols),
            ));
        }
    }
    let n = train.images.rows();
    if n_val >= n {
        return Err(DatasetError::InvalidConfig(format!(
            "mnist n_val = {n_val} leaves no training image out of {n}"
        )));
    }
    let cut = n - n_val;
    Ok(MnistSplit {
        val: train.images.slice_rows(cut, n),
        val_labels: train_labels[cut..].to_vec(),
        train: train.images.slice_rows(0, cut),
        train_labels: train_labels[..cut].to_vec(),
        test: test.images,
        test_labels,
    })
}

/// Logit-space images and the log-Jacobian of the pixel → logit map, per image.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitImages {
    /// `(n, d)` values `y = logit(α + (1 − 2α) x)`.
    pub data: Matrix<f32>,
    /// `log|det ∂y/∂x|` per image (`x = (v + u)/256 ∈ [0, 1]`).
    pub log_jacobian: Vec<f64>,
}

/// Dequantises 8-bit images with uniform noise and applies the logit transform (module docs).
///
/// ```
/// use cpflow::datasets::{Matrix, MNIST_ALPHA, dequantize_logit};
/// use rand::{SeedableRng, rngs::StdRng};
/// let img = Matrix::new(1, 2, vec![0u8, 255]).unwrap();
/// let out = dequantize_logit(&img, MNIST_ALPHA, &mut StdRng::seed_from_u64(0)).unwrap();
/// assert!(out.data.data()[0] < 0.0 && out.data.data()[1] > 0.0);
/// ```
pub fn dequantize_logit(
    images: &Matrix<u8>,
    alpha: f64,
    rng: &mut impl Rng,
) -> Result<LogitImages, DatasetError> {
    if !(0.0..0.5).contains(&alpha) {
        return Err(DatasetError::InvalidConfig(format!(
            "logit alpha must be in [0, 0.5), got {alpha}"
        )));
    }
    let d = images.cols();
    let scale = 1.0 - 2.0 * alpha;
    let mut data = Vec::with_capacity(images.data().len());
    let mut log_jacobian = Vec::with_capacity(images.rows());
    for r in 0..images.rows() {
        let mut lj = d as f64 * scale.ln();
        for &v in images.row(r) {
            let x = (f64::from(v) + rng.random::<f64>()) / 256.0;
            let s = alpha + scale * x;
            lj -= s.ln() + (1.0 - s).ln();
            data.push((s.ln() - (1.0 - s).ln()) as f32);
        }
        log_jacobian.push(lj);
    }
    Ok(LogitImages {
        data: Matrix::new(images.rows(), d, data)?,
        log_jacobian,
    })
}

/// Inverse of the logit transform, quantised back to 8-bit pixels (for samples).
pub fn logit_to_pixels(y: &Matrix<f32>, alpha: f64) -> Matrix<u8> {
    let scale = 1.0 - 2.0 * alpha;
    y.map(|v| {
        let s = 1.0 / (1.0 + (-f64::from(v)).exp());
        let x = (s - alpha) / scale;
        (x * 256.0).floor().clamp(0.0, 255.0) as u8
    })
}

/// Bits per dimension of the discrete pixels from a log-density of the logit-space data
/// (`log_prob_y`, nats) and the per-image `log_jacobian` of [`dequantize_logit`].
pub fn bits_per_dim(log_prob_y: f64, log_jacobian: f64, dim: usize) -> f64 {
    let d = dim as f64;
    (-log_prob_y - log_jacobian + d * 256f64.ln()) / (d * std::f64::consts::LN_2)
}
