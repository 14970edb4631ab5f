//! 8-bit image sets on the host, their batches (shuffled epochs, optional flips) and their
//! dequantisation, and (feature `datasets`) loading MNIST / CIFAR-10 for a run.

use candle_core::{DType, Device, Tensor};
use icnn::ImageShape;
use rand::Rng;
use rand::seq::SliceRandom;

use crate::error::{CpflowError, Result};
use crate::rng::FlowRng;

/// A set of 8-bit images of one shape, `(C, H, W)` order, one image after another.
///
/// ```
/// use cpflow::icnn::ImageShape;
/// use cpflow::image::ImageSet;
/// # fn main() -> cpflow::Result<()> {
/// let set = ImageSet::new(ImageShape::new(1, 2, 2), vec![0, 1, 2, 3, 10, 11, 12, 13])?;
/// assert_eq!(set.len(), 2);
/// assert_eq!(set.image(1), &[10, 11, 12, 13]);
/// assert_eq!(set.head(1).len(), 1);
/// // Seven values are not a whole number of 2×2 images.
/// assert!(ImageSet::new(ImageShape::new(1, 2, 2), vec![0; 7]).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    shape: ImageShape,
    levels: Vec<u8>,
}

impl ImageSet {
    /// Wrap `levels` (`n·C·H·W` grey levels; `n` may be 0).
    pub fn new(shape: ImageShape, levels: Vec<u8>) -> Result<Self> {
        let d = shape.dim();
        if d == 0 || !levels.len().is_multiple_of(d) {
            return Err(CpflowError::InvalidInput(format!(
                "{} values are not a whole number of {:?} images",
                levels.len(),
                shape
            )));
        }
        Ok(ImageSet { shape, levels })
    }

    /// The image shape.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.levels.len() / self.shape.dim()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Image `i` (panics if `i >= len()`, like slice indexing).
    pub fn image(&self, i: usize) -> &[u8] {
        let d = self.shape.dim();
        &self.levels[i * d..(i + 1) * d]
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn head(&self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        ImageSet {
            shape: self.shape,
            levels: self.levels[..n * self.shape.dim()].to_vec(),
        }
    }

    /// Images `start..end` dequantised with `rng` (see [`dequantize_levels`]), `(n, D)` rows;
    /// a range outside the set is an [`CpflowError::InvalidInput`].
    pub fn dequantized_range<R: Rng + ?Sized>(
        &self,
        start: usize,
        end: usize,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Tensor> {
        if start > end || end > self.len() {
            return Err(CpflowError::InvalidInput(format!(
                "image range {start}..{end} is outside 0..{}",
                self.len()
            )));
        }
        let d = self.shape.dim();
        dequantize_levels(
            &self.levels[start * d..end * d],
            end - start,
            d,
            dtype,
            device,
            rng,
        )
    }
}

/// Uniform dequantisation on the host, as [`crate::image::dequantize`]: level `k` becomes
/// `(k + u)/256`, `u ~ U[0, 1)` drawn in order from `rng`; `(n, d)` rows in `dtype`.
///
/// ```
/// use cpflow::candle::{DType, Device};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let levels = [0, 7, 255, 128];
/// let (dt, dev) = (DType::F64, &Device::Cpu);
/// let x = cpflow::image::train::dequantize_levels(&levels, 2, 2, dt, dev, &mut rng)?;
/// assert_eq!(x.dims(), &[2, 2]);
/// // ⌊256·x⌋ gives the levels back.
/// let x = x.flatten_all()?.to_vec1::<f64>()?;
/// let k: Vec<f64> = x.iter().map(|v| (v * 256.0).floor()).collect();
/// assert_eq!(k, vec![0.0, 7.0, 255.0, 128.0]);
/// # Ok(())
/// # }
/// ```
pub fn dequantize_levels<R: Rng + ?Sized>(
    levels: &[u8],
    n: usize,
    d: usize,
    dtype: DType,
    device: &Device,
    rng: &mut R,
) -> Result<Tensor> {
    let v: Vec<f64> = levels
        .iter()
        .map(|&k| (f64::from(k) + rng.random::<f64>()) / 256.0)
        .collect();
    Ok(Tensor::from_vec(v, (n, d), device)?.to_dtype(dtype)?)
}

/// Train, validation and test images of a run (validation taken from the training images).
///
/// ```
/// use cpflow::icnn::ImageShape;
/// use cpflow::image::{ImageData, ImageSet};
/// # fn main() -> cpflow::Result<()> {
/// let s = ImageShape::new(1, 2, 2);
/// let train = ImageSet::new(s, vec![7; 12])?;
/// let empty = ImageSet::new(s, vec![])?;
/// let data = ImageData::new(train.clone(), empty.clone(), empty.clone())?;
/// assert_eq!((data.shape(), data.train.len(), data.test.len()), (s, 3, 0));
/// // The sets must share one shape, and there must be training images.
/// let other = ImageSet::new(ImageShape::new(1, 1, 2), vec![1, 2])?;
/// assert!(ImageData::new(train, empty.clone(), other).is_err());
/// assert!(ImageData::new(empty.clone(), empty.clone(), empty).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ImageData {
    /// Training images.
    pub train: ImageSet,
    /// Validation images (may be empty: no validation).
    pub val: ImageSet,
    /// Test images (may be empty: no test score).
    pub test: ImageSet,
}

impl ImageData {
    /// Check that the three sets share one shape and that there are training images.
    pub fn new(train: ImageSet, val: ImageSet, test: ImageSet) -> Result<Self> {
        if train.is_empty() {
            return Err(CpflowError::InvalidInput("no training images".into()));
        }
        for (what, s) in [("validation", &val), ("test", &test)] {
            if s.shape != train.shape {
                return Err(CpflowError::InvalidInput(format!(
                    "{what} images are {:?}, training images {:?}",
                    s.shape, train.shape
                )));
            }
        }
        Ok(ImageData { train, val, test })
    }

    /// The image shape.
    pub fn shape(&self) -> ImageShape {
        self.train.shape
    }
}

/// The order of the training images in `epoch`: a shuffle seeded by `(seed, epoch)` only, so
/// that a resumed run sees the same batches as an uninterrupted one.
pub(crate) fn epoch_permutation(n: usize, seed: u64, epoch: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    let mix = 0xD1B5_4A32_D192_ED03u64.wrapping_mul(epoch as u64 + 1);
    p.shuffle(&mut FlowRng::seed_from_u64(seed ^ mix));
    p
}

/// Gather images `idx` of `set`, flipping each horizontally with probability ½ when `hflip`
/// (one `rng` draw per image), then dequantise with `rng`.
pub(crate) fn training_batch<R: Rng + ?Sized>(
    set: &ImageSet,
    idx: &[u32],
    hflip: bool,
    dtype: DType,
    device: &Device,
    rng: &mut R,
) -> Result<Tensor> {
    let s = set.shape;
    let mut levels = Vec::with_capacity(idx.len() * s.dim());
    for &i in idx {
        let img = set.image(i as usize);
        if hflip && rng.random::<bool>() {
            for row in img.chunks_exact(s.width) {
                levels.extend(row.iter().rev());
            }
        } else {
            levels.extend_from_slice(img);
        }
    }
    dequantize_levels(&levels, idx.len(), s.dim(), dtype, device, rng)
}

/// Load the dataset of `cfg` (MNIST: the last `n_val` training images are the validation
/// set; CIFAR-10: a random subset seeded by `cfg.seed`), keeping the first `n_train`
/// remaining training images when set.
///
/// ```
/// use cpflow::datasets::DatasetError;
/// use cpflow::image::{ImageDataConfig, ImageDataset, load_image_data};
/// // A data root without MNIST: the error names the file and the download command.
/// let cfg = ImageDataConfig {
///     dataset: ImageDataset::Mnist,
///     root: std::env::temp_dir().join("cpflow-doc-no-such-data-root"),
///     n_val: 100,
///     n_train: None,
///     seed: 0,
/// };
/// match load_image_data(&cfg) {
///     Err(cpflow::CpflowError::Dataset(DatasetError::MissingFile { command, .. })) => {
///         assert_eq!(command, "mnist")
///     }
///     other => panic!("expected a missing file, got {:?}", other.map(|d| d.train.len())),
/// }
/// ```
#[cfg(feature = "datasets")]
pub fn load_image_data(cfg: &super::config::ImageDataConfig) -> Result<ImageData> {
    use super::config::ImageDataset;
    let shape = cfg.dataset.image_shape();
    let (train, val, test) = match cfg.dataset {
        ImageDataset::Mnist => {
            let m = crate::datasets::load_mnist(&cfg.root, cfg.n_val)?;
            (m.train, m.val, m.test)
        }
        ImageDataset::Cifar10 => {
            let c = crate::datasets::load_cifar10(&cfg.root, cfg.n_val, cfg.seed)?;
            (c.train, c.val, c.test)
        }
    };
    let set = |m: crate::datasets::Matrix<u8>| ImageSet::new(shape, m.into_data());
    let mut train = set(train)?;
    if let Some(n) = cfg.n_train {
        if n > train.len() {
            tracing::warn!(
                n_train = n,
                available = train.len(),
                "data.n_train is larger than the training split: every training image is used"
            );
        }
        train = train.head(n);
    }
    ImageData::new(train, set(val)?, set(test)?)
}

/// The test split of `dataset` under `root` alone, as an [`ImageSet`] (MNIST's `t10k-*` files,
/// CIFAR-10's `test_batch.bin`): the training files are not read, so scoring a model needs
/// only these. Same images as [`load_image_data`]'s `test`.
///
/// ```
/// use cpflow::datasets::DatasetError;
/// use cpflow::image::{ImageDataset, load_image_test_set};
/// let root = std::env::temp_dir().join("cpflow-doc-no-such-test-split");
/// match load_image_test_set(ImageDataset::Cifar10, &root) {
///     Err(cpflow::CpflowError::Dataset(DatasetError::MissingFile { command, .. })) => {
///         assert_eq!(command, "cifar10")
///     }
///     other => panic!("expected a missing file, got {:?}", other.map(|s| s.len())),
/// }
/// ```
#[cfg(feature = "datasets")]
pub fn load_image_test_set(
    dataset: super::config::ImageDataset,
    root: &std::path::Path,
) -> Result<ImageSet> {
    use super::config::ImageDataset;
    let test = match dataset {
        ImageDataset::Mnist => crate::datasets::load_mnist_test(root)?.0,
        ImageDataset::Cifar10 => crate::datasets::load_cifar10_test(root)?.0,
    };
    ImageSet::new(dataset.image_shape(), test.into_data())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn flips_reverse_rows_and_permutations_depend_on_epoch() {
        let shape = ImageShape::new(1, 2, 3);
        let set = ImageSet::new(shape, vec![0, 1, 2, 3, 4, 5]).unwrap();
        // Find a seed whose first bool is `true` (flip), then check the flipped levels.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let x = loop {
            let mut probe = rng.clone();
            if probe.random::<bool>() {
                break training_batch(&set, &[0], true, DType::F64, &Device::Cpu, &mut rng)
                    .unwrap();
            }
            let _: bool = rng.random();
        };
        let k: Vec<f64> = x
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|v| (v * 256.0).floor())
            .collect();
        assert_eq!(k, vec![2.0, 1.0, 0.0, 5.0, 4.0, 3.0]);
        let a = epoch_permutation(50, 3, 0);
        assert_eq!(a, epoch_permutation(50, 3, 0));
        assert_ne!(a, epoch_permutation(50, 3, 1));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<u32>>());
        assert!(ImageSet::new(shape, vec![0; 7]).is_err());
    }
}
