//! CIFAR-10 from the official binary batches (`cifar-10-binary.tar.gz`, unpacked by
//! `cargo xtask download cifar10` into `root/cifar10/cifar-10-batches-bin/`).
//!
//! Each file is a sequence of 3,073-byte records: one label byte (0–9), then the 32×32 image
//! channel-major (1,024 red, 1,024 green, 1,024 blue bytes, each plane row-major), which is
//! already the `(C, H, W)` order of the image flows. The official files hold 10,000 records
//! each (`data_batch_1..5.bin`: 50,000 training images, `test_batch.bin`: 10,000); the loader
//! accepts any whole number of records.
//!
//! Validation images are taken from the training files (a seeded random subset of `n_val`);
//! the test file is kept for the final score.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::{DatasetError, Matrix, layout};

/// Bytes per image (3 × 32 × 32).
pub const CIFAR10_IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes per record (label + image).
pub const CIFAR10_RECORD_BYTES: usize = 1 + CIFAR10_IMAGE_BYTES;
/// The training files, in order.
pub const CIFAR10_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file.
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";

/// CIFAR-10 images (`(n, 3072)` bytes in `(C, H, W)` order) and labels, split into
/// train / validation / test.
///
/// ```
/// use cpflow::datasets::{CIFAR10_IMAGE_BYTES, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, load_cifar10};
/// let root = std::env::temp_dir().join(format!("cpflow-doc-cifar10-split-{}", std::process::id()));
/// let dir = root.join("cifar10/cifar-10-batches-bin");
/// std::fs::create_dir_all(&dir).unwrap();
/// // One record per file: label i, then 3,072 pixels of value i.
/// for (i, name) in CIFAR10_TRAIN_FILES.iter().chain([&CIFAR10_TEST_FILE]).enumerate() {
///     let mut record = vec![i as u8];
///     record.extend(std::iter::repeat_n(i as u8, CIFAR10_IMAGE_BYTES));
///     std::fs::write(dir.join(name), record).unwrap();
/// }
/// let c = load_cifar10(&root, 1, 0)?; // one training image held out for validation
/// assert_eq!((c.train.rows(), c.val.rows(), c.test.rows()), (4, 1, 1));
/// assert_eq!(c.test_labels, [5]);
/// // Train and validation share out the 5 training images, each with its label.
/// let mut labels: Vec<u8> = c.train_labels.iter().chain(&c.val_labels).copied().collect();
/// labels.sort();
/// assert_eq!(labels, [0, 1, 2, 3, 4]);
/// assert!(c.val.row(0).iter().all(|&p| p == c.val_labels[0]));
/// std::fs::remove_dir_all(&root).ok();
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Cifar10Split {
    /// Training images (the training files minus the validation subset, in file order).
    pub train: Matrix<u8>,
    /// Training labels.
    pub train_labels: Vec<u8>,
    /// Validation images (a seeded random subset of the training files).
    pub val: Matrix<u8>,
    /// Validation labels.
    pub val_labels: Vec<u8>,
    /// Test images (`test_batch.bin`).
    pub test: Matrix<u8>,
    /// Test labels.
    pub test_labels: Vec<u8>,
}

/// Images and labels of one binary batch file.
///
/// ```
/// use cpflow::datasets::{CIFAR10_IMAGE_BYTES, CIFAR10_RECORD_BYTES, DatasetError, read_cifar10_batch};
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-cifar10-batch-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("data_batch_1.bin");
/// // Two records: label 3 with red = 255, green = blue = 0; label 7, all 128.
/// let mut bytes = vec![3u8];
/// bytes.extend([vec![255u8; 1024], vec![0; 2048]].concat());
/// bytes.push(7);
/// bytes.extend(vec![128u8; CIFAR10_IMAGE_BYTES]);
/// std::fs::write(&path, &bytes).unwrap();
/// let (images, labels) = read_cifar10_batch(&path)?;
/// assert_eq!((images.rows(), images.cols(), labels), (2, 3072, vec![3, 7]));
/// assert_eq!((images.row(0)[0], images.row(0)[1024]), (255, 0)); // (C, H, W) order
/// // A cut-off last record is reported.
/// std::fs::write(&path, &bytes[..CIFAR10_RECORD_BYTES + 10]).unwrap();
/// assert!(matches!(read_cifar10_batch(&path), Err(DatasetError::Truncated { .. })));
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), DatasetError>(())
/// ```
pub fn read_cifar10_batch(path: &Path) -> Result<(Matrix<u8>, Vec<u8>), DatasetError> {
    let b = super::error::read_file(path, "cifar10", "cifar10")?;
    if b.is_empty() {
        return Err(DatasetError::truncated(path, "empty file"));
    }
    if !b.len().is_multiple_of(CIFAR10_RECORD_BYTES) {
        return Err(DatasetError::truncated(
            path,
            format!(
                "{} bytes is not a whole number of {CIFAR10_RECORD_BYTES}-byte records \
                 (the last record is cut short after {} bytes)",
                b.len(),
                b.len() % CIFAR10_RECORD_BYTES
            ),
        ));
    }
    let n = b.len() / CIFAR10_RECORD_BYTES;
    let mut labels = Vec::with_capacity(n);
    let mut pixels = Vec::with_capacity(n * CIFAR10_IMAGE_BYTES);
    for (i, rec) in b.chunks_exact(CIFAR10_RECORD_BYTES).enumerate() {
        if rec[0] > 9 {
            return Err(DatasetError::corrupt(
                path,
                format!(
                    "record {i} has label {} (CIFAR-10 labels are 0..=9)",
                    rec[0]
                ),
            ));
        }
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok((Matrix::new(n, CIFAR10_IMAGE_BYTES, pixels)?, labels))
}

fn cifar_path(root: &Path, name: &str) -> PathBuf {
    root.join(layout::CIFAR10_DIR).join(name)
}

/// Loads CIFAR-10 from `root/cifar10/cifar-10-batches-bin/` and holds out `n_val` training
/// images, chosen by a shuffle seeded with `seed`, for validation. A missing file is a
/// [`DatasetError::MissingFile`] naming `cargo xtask download cifar10`; a file that is not a
/// whole number of records is [`DatasetError::Truncated`].
///
/// With the official files and `n_val = 5_000` the split has (45,000, 5,000, 10,000) images.
/// Here a fabricated set of one image per file:
///
/// ```
/// use cpflow::datasets::{
///     CIFAR10_IMAGE_BYTES, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, DatasetError, load_cifar10,
/// };
/// let empty = std::env::temp_dir().join(format!("cpflow-doc-cifar10-none-{}", std::process::id()));
/// let err = load_cifar10(&empty, 1, 0).unwrap_err();
/// assert!(err.to_string().contains("cargo xtask download cifar10"), "{err}");
/// let root = std::env::temp_dir().join(format!("cpflow-doc-load-cifar10-{}", std::process::id()));
/// let dir = root.join("cifar10/cifar-10-batches-bin");
/// std::fs::create_dir_all(&dir).unwrap();
/// // One record per file: label i, then 3,072 pixels of value i.
/// for (i, name) in CIFAR10_TRAIN_FILES.iter().chain([&CIFAR10_TEST_FILE]).enumerate() {
///     let mut record = vec![i as u8];
///     record.extend(std::iter::repeat_n(i as u8, CIFAR10_IMAGE_BYTES));
///     std::fs::write(dir.join(name), record).unwrap();
/// }
/// let c = load_cifar10(&root, 1, 0)?; // one training image held out for validation
/// assert_eq!((c.train.rows(), c.val.rows(), c.test.rows()), (4, 1, 1));
/// // The same seed holds out the same image.
/// assert_eq!(load_cifar10(&root, 1, 0)?, c);
/// // Holding out every training image is refused.
/// assert!(matches!(load_cifar10(&root, 5, 0), Err(DatasetError::InvalidConfig(_))));
/// std::fs::remove_dir_all(&root).ok();
/// # Ok::<(), DatasetError>(())
/// ```
pub fn load_cifar10(root: &Path, n_val: usize, seed: u64) -> Result<Cifar10Split, DatasetError> {
    // Check every file first so that a partial download names the first missing file.
    for name in CIFAR10_TRAIN_FILES.iter().chain([&CIFAR10_TEST_FILE]) {
        super::error::require_file(&cifar_path(root, name), "cifar10", "cifar10")?;
    }
    let mut all = Vec::new();
    let mut all_labels = Vec::new();
    for name in CIFAR10_TRAIN_FILES {
        let (m, l) = read_cifar10_batch(&cifar_path(root, name))?;
        all.extend_from_slice(m.data());
        all_labels.extend(l);
    }
    let (test, test_labels) = read_cifar10_batch(&cifar_path(root, CIFAR10_TEST_FILE))?;
    let n = all_labels.len();
    if n_val >= n {
        return Err(DatasetError::InvalidConfig(format!(
            "cifar10 n_val = {n_val} leaves no training image out of {n}"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut is_val = vec![false; n];
    for &i in &order[..n_val] {
        is_val[i] = true;
    }
    let d = CIFAR10_IMAGE_BYTES;
    let (mut train, mut train_labels, mut val, mut val_labels) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Validation images in shuffle order, training images in file order.
    for &i in &order[..n_val] {
        val.extend_from_slice(&all[i * d..(i + 1) * d]);
        val_labels.push(all_labels[i]);
    }
    for i in (0..n).filter(|&i| !is_val[i]) {
        train.extend_from_slice(&all[i * d..(i + 1) * d]);
        train_labels.push(all_labels[i]);
    }
    Ok(Cifar10Split {
        train: Matrix::new(n - n_val, d, train)?,
        train_labels,
        val: Matrix::new(n_val, d, val)?,
        val_labels,
        test,
        test_labels,
    })
}

/// The CIFAR-10 test batch alone (`test_batch.bin` under `root/cifar10/cifar-10-batches-bin/`):
/// `(n, 3072)` images in `(C, H, W)` order and their labels. The training batches are not
/// read, so scoring a model needs only this file; a missing file is a
/// [`DatasetError::MissingFile`] naming `cargo xtask download cifar10`.
///
/// ```
/// use cpflow::datasets::{CIFAR10_IMAGE_BYTES, CIFAR10_TEST_FILE, DatasetError, load_cifar10_test};
/// let root = std::env::temp_dir().join(format!("cpflow-doc-cifar10-test-{}", std::process::id()));
/// let err = load_cifar10_test(&root).unwrap_err();
/// assert!(err.to_string().contains("cargo xtask download cifar10"), "{err}");
/// let dir = root.join("cifar10/cifar-10-batches-bin");
/// std::fs::create_dir_all(&dir).unwrap();
/// let mut record = vec![4u8];
/// record.extend(std::iter::repeat_n(200u8, CIFAR10_IMAGE_BYTES));
/// std::fs::write(dir.join(CIFAR10_TEST_FILE), record).unwrap();
/// let (images, labels) = load_cifar10_test(&root)?;
/// assert_eq!((images.rows(), labels), (1, vec![4]));
/// std::fs::remove_dir_all(&root).ok();
/// # Ok::<(), DatasetError>(())
/// ```
pub fn load_cifar10_test(root: &Path) -> Result<(Matrix<u8>, Vec<u8>), DatasetError> {
    let path = cifar_path(root, CIFAR10_TEST_FILE);
    super::error::require_file(&path, "cifar10", "cifar10")?;
    read_cifar10_batch(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose label is `label` and whose pixel `(c, y, x)` is `(seed + 7c + 3y + x) mod 256`.
    fn record(label: u8, seed: usize) -> Vec<u8> {
        let mut r = vec![label];
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    r.push(((seed + 7 * c + 3 * y + x) % 256) as u8);
                }
            }
        }
        r
    }

    /// Writes the six files with `per_file` records each; record `j` of file `f` has label
    /// `(f + j) % 10` and pixel seed `100·f + j`.
    fn fabricate(root: &Path, per_file: usize) {
        let dir = root.join(layout::CIFAR10_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        for (f, name) in CIFAR10_TRAIN_FILES
            .iter()
            .chain([&CIFAR10_TEST_FILE])
            .enumerate()
        {
            let bytes: Vec<u8> = (0..per_file)
                .flat_map(|j| record(((f + j) % 10) as u8, 100 * f + j))
                .collect();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cpflow-cifar-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn cifar10_layout_labels_and_split() {
        let root = tmp("layout");
        fabricate(&root, 3);
        let s = load_cifar10(&root, 4, 7).unwrap();
        assert_eq!((s.train.rows(), s.val.rows(), s.test.rows()), (11, 4, 3));
        assert_eq!(s.train.cols(), 3072);
        // Test file = file index 5: labels (5 + j) % 10, pixel (c, y, x) of record j at
        // c·1024 + y·32 + x.
        assert_eq!(s.test_labels, vec![5, 6, 7]);
        let img = s.test.row(2);
        for (c, y, x) in [(0, 0, 0), (1, 5, 9), (2, 31, 31)] {
            assert_eq!(
                img[c * 1024 + y * 32 + x] as usize,
                (502 + 7 * c + 3 * y + x) % 256
            );
        }
        // Every training record lands in exactly one of train / val, labels kept with images.
        let mut seen: Vec<(u8, u8)> = s
            .train
            .data()
            .chunks(3072)
            .zip(&s.train_labels)
            .chain(s.val.data().chunks(3072).zip(&s.val_labels))
            .map(|(img, &l)| (l, img[0]))
            .collect();
        seen.sort();
        let mut want: Vec<(u8, u8)> = (0..5)
            .flat_map(|f| (0..3).map(move |j| (((f + j) % 10) as u8, ((100 * f + j) % 256) as u8)))
            .collect();
        want.sort();
        assert_eq!(seen, want);
        // The validation subset depends on the seed.
        let other = load_cifar10(&root, 4, 8).unwrap();
        assert_ne!(other.val, s.val);
        assert!(load_cifar10(&root, 15, 0).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cifar10_missing_and_truncated_files() {
        let root = tmp("errors");
        let e = load_cifar10(&root, 1, 0).unwrap_err();
        assert!(matches!(e, DatasetError::MissingFile { .. }), "{e}");
        assert!(
            e.to_string().contains("cargo xtask download cifar10"),
            "{e}"
        );
        fabricate(&root, 2);
        let p = root.join(layout::CIFAR10_DIR).join("data_batch_3.bin");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(CIFAR10_RECORD_BYTES + 100);
        std::fs::write(&p, &bytes).unwrap();
        let e = load_cifar10(&root, 1, 0).unwrap_err();
        assert!(matches!(e, DatasetError::Truncated { .. }), "{e}");
        assert!(e.to_string().contains("data_batch_3.bin"), "{e}");
        // A label out of range is corrupt.
        let mut bad = record(11, 0);
        bad.extend(record(1, 1));
        std::fs::write(&p, &bad).unwrap();
        let e = load_cifar10(&root, 1, 0).unwrap_err();
        assert!(matches!(e, DatasetError::Corrupt { .. }), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
