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
///
/// ```
/// use cpflow::datasets::{IdxImages, read_idx_images};
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-idx-images-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("images-idx3-ubyte");
/// // Magic 2051, two images of 2 × 3 pixels, pixel bytes 0..12.
/// let mut bytes: Vec<u8> = [2051u32, 2, 2, 3].iter().flat_map(|v| v.to_be_bytes()).collect();
/// bytes.extend(0..12u8);
/// std::fs::write(&path, bytes).unwrap();
/// let IdxImages { rows, cols, images } = read_idx_images(&path)?;
/// assert_eq!((rows, cols, images.rows()), (2, 3, 2));
/// assert_eq!(images.row(1), &[6, 7, 8, 9, 10, 11]); // one image per row, row-major pixels
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
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
///
/// ```
/// use cpflow::datasets::{DatasetError, read_idx_images};
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-read-idx-images-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("images-idx3-ubyte");
/// let header: Vec<u8> = [2051u32, 2, 2, 2].iter().flat_map(|v| v.to_be_bytes()).collect();
/// std::fs::write(&path, [header.clone(), vec![0, 64, 128, 255, 1, 2, 3, 4]].concat()).unwrap();
/// let imgs = read_idx_images(&path)?;
/// assert_eq!(imgs.images.row(0), &[0, 64, 128, 255]);
/// // The header announces 8 pixel bytes: a file with 5 is truncated.
/// std::fs::write(&path, [header, vec![0; 5]].concat()).unwrap();
/// assert!(matches!(read_idx_images(&path), Err(DatasetError::Truncated { .. })));
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), DatasetError>(())
/// ```
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
    let sizes = rows
        .checked_mul(cols)
        .and_then(|d| Some((d, n.checked_mul(d)?)));
    let Some((d, need)) = sizes else {
        return Err(DatasetError::corrupt(
            path,
            format!(
                "header announces {n} images of {rows}x{cols} pixels: more bytes than can exist"
            ),
        ));
    };
    check_len(path, b.len() - 16, need)?;
    Ok(IdxImages {
        rows,
        cols,
        images: Matrix::new(n, d, b[16..].to_vec())?,
    })
}

/// Reads an IDX1 label file (`.gz` or raw).
///
/// ```
/// use std::io::Write;
/// use cpflow::datasets::read_idx_labels;
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-read-idx-labels-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// // Magic 2049, 3 labels; gzipped, as MNIST is released.
/// let mut bytes: Vec<u8> = [2049u32, 3].iter().flat_map(|v| v.to_be_bytes()).collect();
/// bytes.extend([5, 0, 4]);
/// let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
/// gz.write_all(&bytes).unwrap();
/// let path = dir.join("labels-idx1-ubyte.gz");
/// std::fs::write(&path, gz.finish().unwrap()).unwrap();
/// assert_eq!(read_idx_labels(&path)?, [5, 0, 4]);
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
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
    let labels = &b[8..];
    if let Some(k) = labels.iter().position(|&l| l > 9) {
        return Err(DatasetError::corrupt(
            path,
            format!("label {} at index {k} is not a digit 0–9", labels[k]),
        ));
    }
    Ok(labels.to_vec())
}

/// `root/mnist/<name>.gz` if present, else `root/mnist/<name>`.
fn mnist_path(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(layout::MNIST_DIR);
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() { gz } else { dir.join(name) }
}

/// MNIST images (`(n, 784)` bytes) and labels, split into train / validation / test.
///
/// ```
/// use cpflow::datasets::{MNIST_FILES, load_mnist};
/// // An IDX file: big-endian magic and sizes, then the bytes.
/// let idx = |magic: u32, dims: &[u32], body: Vec<u8>| {
///     let mut b = magic.to_be_bytes().to_vec();
///     dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
///     b.extend(body);
///     b
/// };
/// let root = std::env::temp_dir().join(format!("cpflow-doc-mnist-split-{}", std::process::id()));
/// let dir = root.join("mnist");
/// std::fs::create_dir_all(&dir).unwrap();
/// // 3 training and 2 test images of 28 × 28 (files as in MNIST_FILES, not gzipped).
/// let files = [
///     idx(2051, &[3, 28, 28], vec![7; 3 * 784]),
///     idx(2049, &[3], vec![4, 1, 9]),
///     idx(2051, &[2, 28, 28], vec![0; 2 * 784]),
///     idx(2049, &[2], vec![3, 5]),
/// ];
/// for (name, bytes) in MNIST_FILES.iter().zip(files) {
///     std::fs::write(dir.join(name), bytes).unwrap();
/// }
/// let m = load_mnist(&root, 1)?;
/// assert_eq!((m.train.cols(), m.train_labels, m.val_labels), (784, vec![4, 1], vec![9]));
/// assert_eq!(m.test_labels, [3, 5]);
/// std::fs::remove_dir_all(&root).ok();
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
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
/// With the official files and `n_val = 10_000` the split has (50,000, 10,000, 10,000)
/// images. Here a fabricated set:
///
/// ```
/// use cpflow::datasets::{DatasetError, MNIST_FILES, load_mnist};
/// // An IDX file: big-endian magic and sizes, then the bytes.
/// let idx = |magic: u32, dims: &[u32], body: Vec<u8>| {
///     let mut b = magic.to_be_bytes().to_vec();
///     dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
///     b.extend(body);
///     b
/// };
/// let root = std::env::temp_dir().join(format!("cpflow-doc-load-mnist-{}", std::process::id()));
/// let dir = root.join("mnist");
/// std::fs::create_dir_all(&dir).unwrap();
/// // 3 training and 2 test images of 28 × 28 (files as in MNIST_FILES, not gzipped).
/// let files = [
///     idx(2051, &[3, 28, 28], vec![7; 3 * 784]),
///     idx(2049, &[3], vec![4, 1, 9]),
///     idx(2051, &[2, 28, 28], vec![0; 2 * 784]),
///     idx(2049, &[2], vec![3, 5]),
/// ];
/// for (name, bytes) in MNIST_FILES.iter().zip(files) {
///     std::fs::write(dir.join(name), bytes).unwrap();
/// }
/// let m = load_mnist(&root, 1)?; // the last training image validates
/// assert_eq!((m.train.rows(), m.val.rows(), m.test.rows()), (2, 1, 2));
/// // Images of another size are refused.
/// std::fs::write(dir.join(MNIST_FILES[2]), idx(2051, &[2, 2, 2], vec![0; 8])).unwrap();
/// assert!(matches!(load_mnist(&root, 1), Err(DatasetError::BadShape { .. })));
/// std::fs::remove_dir_all(&root).ok();
/// # Ok::<(), DatasetError>(())
/// ```
pub fn load_mnist(root: &Path, n_val: usize) -> Result<MnistSplit, DatasetError> {
    let (train, train_labels) = read_checked_pair(root, "mnist train", 0)?;
    let (test, test_labels) = read_checked_pair(root, "mnist test", 2)?;
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

/// The official MNIST test split alone (the `t10k-*` files under `root/mnist/`): `(n, 784)`
/// images and their labels, with [`load_mnist`]'s checks; the training files are not read, so
/// scoring a model needs only these two files.
///
/// ```
/// use cpflow::datasets::{DatasetError, MNIST_FILES, load_mnist_test};
/// let idx = |magic: u32, dims: &[u32], body: Vec<u8>| {
///     let mut b = magic.to_be_bytes().to_vec();
///     dims.iter().for_each(|d| b.extend(d.to_be_bytes()));
///     b.extend(body);
///     b
/// };
/// let root = std::env::temp_dir().join(format!("cpflow-doc-mnist-test-{}", std::process::id()));
/// let dir = root.join("mnist");
/// std::fs::create_dir_all(&dir).unwrap();
/// // Only the two test files: 2 images of 28 × 28.
/// std::fs::write(dir.join(MNIST_FILES[2]), idx(2051, &[2, 28, 28], vec![9; 2 * 784])).unwrap();
/// std::fs::write(dir.join(MNIST_FILES[3]), idx(2049, &[2], vec![3, 5])).unwrap();
/// let (images, labels) = load_mnist_test(&root)?;
/// assert_eq!((images.rows(), images.cols(), labels), (2, 784, vec![3, 5]));
/// // A missing test file names the download command.
/// std::fs::remove_file(dir.join(MNIST_FILES[3])).unwrap();
/// match load_mnist_test(&root) {
///     Err(DatasetError::MissingFile { command, .. }) => assert_eq!(command, "mnist"),
///     other => panic!("expected a missing file, got {other:?}"),
/// }
/// std::fs::remove_dir_all(&root).ok();
/// # Ok::<(), DatasetError>(())
/// ```
pub fn load_mnist_test(root: &Path) -> Result<(Matrix<u8>, Vec<u8>), DatasetError> {
    let (test, labels) = read_checked_pair(root, "mnist test", 2)?;
    Ok((test.images, labels))
}

/// The images and labels of `MNIST_FILES[first]` and `[first + 1]`, checked to be as many
/// and of 28 × 28 pixels (`what` names them in errors).
fn read_checked_pair(
    root: &Path,
    what: &str,
    first: usize,
) -> Result<(IdxImages, Vec<u8>), DatasetError> {
    let imgs = read_idx_images(&mnist_path(root, MNIST_FILES[first]))?;
    let labels = read_idx_labels(&mnist_path(root, MNIST_FILES[first + 1]))?;
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
    Ok((imgs, labels))
}

/// Logit-space images and the log-Jacobian of the pixel → logit map, per image.
///
/// ```
/// use cpflow::datasets::{LogitImages, Matrix, dequantize_logit};
/// use cpflow::rand::{SeedableRng, rngs::StdRng};
/// let img = Matrix::new(2, 3, vec![0u8, 128, 255, 10, 20, 30])?;
/// let alpha = 0.05;
/// let LogitImages { data, log_jacobian } = dequantize_logit(&img, alpha, &mut StdRng::seed_from_u64(0))?;
/// assert_eq!((data.rows(), data.cols(), log_jacobian.len()), (2, 3, 2));
/// // log|det ∂y/∂x| = Σ_j [log(1 − 2α) − log s_j − log(1 − s_j)] with s = sigmoid(y).
/// for r in 0..2 {
///     let lj: f64 = data.row(r).iter().map(|&y| {
///         let s = 1.0 / (1.0 + (-f64::from(y)).exp());
///         (1.0f64 - 2.0 * alpha).ln() - s.ln() - (1.0 - s).ln()
///     }).sum();
///     assert!((lj - log_jacobian[r]).abs() < 1e-5, "{lj} vs {}", log_jacobian[r]);
/// }
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
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
/// use cpflow::rand::{SeedableRng, rngs::StdRng};
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
///
/// ```
/// use cpflow::datasets::{MNIST_ALPHA, Matrix, dequantize_logit, logit_to_pixels};
/// use cpflow::rand::{SeedableRng, rngs::StdRng};
/// let img = Matrix::new(1, 5, vec![0u8, 1, 127, 200, 255])?;
/// let y = dequantize_logit(&img, MNIST_ALPHA, &mut StdRng::seed_from_u64(0))?.data;
/// assert_eq!(logit_to_pixels(&y, MNIST_ALPHA), img); // the noise never crosses a level
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
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
///
/// ```
/// use cpflow::datasets::bits_per_dim;
/// // The uniform density on [0, 1]^D (log p(x) = log p(y) + log|det ∂y/∂x| = 0) spends
/// // 8 bits on each 8-bit pixel.
/// let (log_jacobian, d) = (-1234.5, 784);
/// assert!((bits_per_dim(-log_jacobian, log_jacobian, d) - 8.0).abs() < 1e-12);
/// // Each extra nat of density per pixel saves 1/ln 2 bits.
/// let better = bits_per_dim(-log_jacobian + d as f64, log_jacobian, d);
/// assert!((better - (8.0 - 1.0 / std::f64::consts::LN_2)).abs() < 1e-12);
/// ```
pub fn bits_per_dim(log_prob_y: f64, log_jacobian: f64, dim: usize) -> f64 {
    let d = dim as f64;
    (-log_prob_y - log_jacobian + d * 256f64.ln()) / (d * std::f64::consts::LN_2)
}
