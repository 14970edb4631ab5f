//! Data of the VAE experiment (paper Table 3): Frey Faces, Caltech 101 Silhouettes, MNIST and
//! Omniglot, loaded as in the reference's `lib/sylvester/utils/load_data.py`
//! (`docs/reference/images-vae.md` §3.2), as host `u8` images ([`VaeData`]) turned into
//! candle batches by [`VaeData::batch_inputs`] / [`VaeData::batch_targets`].
//!
//! | dataset | file(s) under the data root | H×W | likelihood | train / val / test |
//! |---|---|---|---|---|
//! | Frey Faces | `frey-faces/frey_faces_uint8.npy` (shipped in `../shared/data`) | 28×20 | 256-way categorical | shuffled, then 1,565 / 200 / 200 |
//! | Caltech 101 Sil. | `caltech101-silhouettes/{train,val,test}_data.npy` (shipped) | 28×28 | Bernoulli | the file's split (4,100 / 2,264 / 2,307) |
//! | MNIST | `mnist/*-ubyte.gz` (`cargo xtask download mnist`) | 28×28 | Bernoulli, dynamic | 50,000 / 10,000 from the training file, seeded; test = t10k |
//! | Omniglot | `omniglot/chardata.mat` (`cargo xtask download omniglot`) | 28×28 | Bernoulli, dynamic | shuffled, last 1,345 = val (23,000 / 1,345); test 8,070 |
//!
//! Randomness follows the reference's numpy calls, reproduced bit for bit by
//! [`NumpyRandomState`] with `np.random.seed(seed)` where `seed` is the argument of
//! [`load_vae_data`] (below 2³²; larger values are folded, see `load_vae_data`):
//! * Frey: `np.random.seed(freyseed); np.random.shuffle(data)`; the reference's default
//!   `--freyseed` is [`FREY_REFERENCE_SEED`] (123), so pass that seed to get its split.
//! * Caltech: `np.random.shuffle` of train, then of validation (order only).
//! * Omniglot: `np.random.shuffle(train)` before the validation cut, then
//!   `np.random.seed(777)` ([`REFERENCE_BINARIZATION_SEED`]) and `np.random.binomial(1, ·)` on
//!   validation, then test ([`numpy_binarize`]). Identical to the reference for the same
//!   seed when nothing else drew from numpy's global RNG before `load_omniglot`.
//! * MNIST: the reference trains on *statically* binarised MNIST (`binarized_mnist_*.amat`,
//!   not available here). This port uses dynamic binarisation, Omniglot's procedure:
//!   `np.random.permutation(60000)` of the training file (train = first 50,000, validation =
//!   the rest), then validation and test binarised once with seed 777 from `float32(g)/255`.
//! * Dynamically binarised training images are drawn afresh on every
//!   [`VaeData::batch_inputs`] call from the caller's `rand` generator.
//!
//! Omniglot grey levels are stored as `round(255·p)` (`u8`); the validation and test bits are
//! drawn from the exact `f32` values of the file before that rounding.

mod binarize;
mod loaders;
mod mat5;
#[cfg(test)]
mod tests;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

pub use binarize::numpy_binarize;
pub use mat5::{MatArray, MatValue, parse_mat_v5, read_mat_v5};

use crate::datasets::DatasetError;
#[cfg(doc)]
use crate::datasets::NumpyRandomState;

/// The reference's default `--freyseed`: the Frey Faces shuffle seed.
pub const FREY_REFERENCE_SEED: u64 = 123;
/// `np.random.seed(777)` of the reference: binarises the validation and test sets once.
pub const REFERENCE_BINARIZATION_SEED: u32 = 777;
/// Frey Faces train / validation / test sizes (of 1,965 images).
pub const FREY_SPLIT: (usize, usize, usize) = (1565, 200, 200);
/// Omniglot validation images (the last ones of the shuffled training set).
pub const OMNIGLOT_VALIDATION: usize = 1345;
/// MNIST validation images (drawn from the 60,000 training images).
pub const MNIST_VALIDATION: usize = 10_000;
/// Frey Faces under the data root: `(1965, 560)` `uint8`, one row-major 28×20 image per row.
pub const FREY_FACES_FILE: &str = "frey-faces/frey_faces_uint8.npy";
/// Caltech 101 Silhouettes folder under the data root (`{train,val,test}_data.npy`).
pub const CALTECH101_DIR: &str = "caltech101-silhouettes";
/// Omniglot under the data root (IWAE's `chardata.mat`, written by `cargo xtask download
/// omniglot`).
pub const OMNIGLOT_FILE: &str = "omniglot/chardata.mat";

/// Which VAE dataset. serde names: "frey-faces", "caltech101", "mnist", "omniglot".
///
/// ```
/// use cpflow::vae::{VaeDatasetName, VaeLikelihood};
/// let frey = VaeDatasetName::from_name("frey-faces").unwrap();
/// assert_eq!((frey.image_size(), frey.likelihood()), ((28, 20), VaeLikelihood::Categorical256));
/// assert!(VaeDatasetName::Omniglot.dynamic_binarization() && !frey.dynamic_binarization());
/// for d in VaeDatasetName::ALL {
///     assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
/// }
/// assert_eq!(VaeDatasetName::from_name("cifar10"), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VaeDatasetName {
    /// Frey Faces, 28×20 grey levels, 256-way categorical likelihood.
    FreyFaces,
    /// Caltech 101 Silhouettes, 28×28 binary.
    Caltech101,
    /// MNIST, 28×28, dynamically binarised.
    Mnist,
    /// Omniglot (IWAE's 28×28 version), dynamically binarised.
    Omniglot,
}

impl VaeDatasetName {
    /// All four, in the paper's order.
    pub const ALL: [VaeDatasetName; 4] = [
        VaeDatasetName::Mnist,
        VaeDatasetName::Omniglot,
        VaeDatasetName::FreyFaces,
        VaeDatasetName::Caltech101,
    ];

    /// The serde / command-line name.
    pub fn name(self) -> &'static str {
        match self {
            VaeDatasetName::FreyFaces => "frey-faces",
            VaeDatasetName::Caltech101 => "caltech101",
            VaeDatasetName::Mnist => "mnist",
            VaeDatasetName::Omniglot => "omniglot",
        }
    }

    /// Parses [`VaeDatasetName::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The decoder's output distribution for this dataset.
    pub fn likelihood(self) -> VaeLikelihood {
        match self {
            VaeDatasetName::FreyFaces => VaeLikelihood::Categorical256,
            _ => VaeLikelihood::Bernoulli,
        }
    }

    /// `(height, width)` of one image.
    pub fn image_size(self) -> (usize, usize) {
        match self {
            VaeDatasetName::FreyFaces => (28, 20),
            _ => (28, 28),
        }
    }

    /// Whether the training images are binarised afresh for every batch.
    pub fn dynamic_binarization(self) -> bool {
        matches!(self, VaeDatasetName::Mnist | VaeDatasetName::Omniglot)
    }
}

impl std::fmt::Display for VaeDatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Output distribution of the decoder.
///
/// ```
/// use cpflow::vae::{VaeDatasetName, VaeLikelihood};
/// assert_eq!(VaeDatasetName::Mnist.likelihood(), VaeLikelihood::Bernoulli);
/// assert_eq!(VaeDatasetName::FreyFaces.likelihood(), VaeLikelihood::Categorical256);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VaeLikelihood {
    /// One Bernoulli per pixel (binary data).
    Bernoulli,
    /// A 256-way categorical per pixel over the 8-bit grey level (Frey Faces).
    Categorical256,
}

/// The likelihood's name in messages: `Bernoulli`, `256-way categorical`.
///
/// ```
/// use cpflow::vae::VaeLikelihood;
/// assert_eq!(VaeLikelihood::Categorical256.to_string(), "256-way categorical");
/// ```
impl std::fmt::Display for VaeLikelihood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VaeLikelihood::Bernoulli => "Bernoulli",
            VaeLikelihood::Categorical256 => "256-way categorical",
        })
    }
}

/// One of the three splits.
///
/// ```
/// use cpflow::candle::{DType, Device};
/// use cpflow::vae::{VaeData, VaeDatasetName, VaeImages, VaeLikelihood, VaeSplit};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // Grey-level training images (binarised per batch) and binary test images, 28×28.
/// let image = |g: u8| VaeImages { n: 1, pixels: vec![g; 784] };
/// let data = VaeData {
///     name: VaeDatasetName::Mnist,
///     likelihood: VaeLikelihood::Bernoulli,
///     height: 28,
///     width: 28,
///     train: VaeImages { n: 2, pixels: [vec![0; 784], vec![255; 784]].concat() },
///     val: image(1),
///     test: image(0),
///     dynamic_binarization: true,
/// };
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// assert_eq!(data.split(VaeSplit::Train).n, 2);
/// // Only the training split is binarised afresh.
/// assert!(data.is_dynamic(VaeSplit::Train) && !data.is_dynamic(VaeSplit::Test));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaeSplit {
    /// Training set.
    Train,
    /// Validation set (early stopping).
    Val,
    /// Test set.
    Test,
}

impl std::fmt::Display for VaeSplit {
    /// `training`, `validation` or `test`, as in "the validation split".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VaeSplit::Train => "training",
            VaeSplit::Val => "validation",
            VaeSplit::Test => "test",
        })
    }
}

/// `n` images, row-major H×W each, one channel, `u8` pixels: for Frey Faces the 8-bit grey
/// level (0..=255); for binary data 0/1; for dynamically binarised training data the grey
/// level 0..=255 (probability = p/255).
///
/// ```
/// use cpflow::vae::VaeImages;
/// let imgs = VaeImages { n: 2, pixels: vec![0, 1, 2, 3, 4, 5, 6, 7] }; // two 2×2 images
/// assert_eq!(imgs.image(1), &[4, 5, 6, 7]);
/// ```
#[derive(Clone, Debug)]
pub struct VaeImages {
    /// Number of images.
    pub n: usize,
    /// `n · H · W` pixels, image after image.
    pub pixels: Vec<u8>,
}

impl VaeImages {
    /// The pixels of image `i` (`H · W` values); panics if `i ≥ n`.
    pub fn image(&self, i: usize) -> &[u8] {
        let d = self.image_len();
        &self.pixels[i * d..(i + 1) * d]
    }

    /// Pixels per image, `H · W` (0 without images).
    fn image_len(&self) -> usize {
        self.pixels.len() / self.n.max(1)
    }

    /// The first `n` images (all of them when there are fewer).
    ///
    /// ```
    /// use cpflow::vae::VaeImages;
    /// let imgs = VaeImages { n: 3, pixels: vec![0, 1, 2, 3, 4, 5] }; // three 1×2 images
    /// assert_eq!(imgs.head(2).pixels, [0, 1, 2, 3]);
    /// assert_eq!(imgs.head(5).n, 3);
    /// ```
    pub fn head(&self, n: usize) -> VaeImages {
        let n = n.min(self.n);
        VaeImages {
            n,
            pixels: self.pixels[..n * self.image_len()].to_vec(),
        }
    }
}

/// A loaded VAE dataset: host images of the three splits and how to turn them into batches.
///
/// ```
/// use cpflow::candle::{DType, Device};
/// use cpflow::vae::{VaeData, VaeDatasetName, VaeImages, VaeLikelihood, VaeSplit};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // Grey-level training images (binarised per batch) and binary test images, 28×28.
/// let image = |g: u8| VaeImages { n: 1, pixels: vec![g; 784] };
/// let data = VaeData {
///     name: VaeDatasetName::Mnist,
///     likelihood: VaeLikelihood::Bernoulli,
///     height: 28,
///     width: 28,
///     train: VaeImages { n: 2, pixels: [vec![0; 784], vec![255; 784]].concat() },
///     val: image(1),
///     test: image(0),
///     dynamic_binarization: true,
/// };
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = data.batch_inputs(VaeSplit::Train, &[1, 0], DType::F64, &Device::Cpu, &mut rng)?;
/// assert_eq!(x.dims(), &[2, 1, 28, 28]);
/// // Grey level 255 is a sure 1, grey level 0 a sure 0.
/// let sums = x.sum((1, 2, 3))?.to_vec1::<f64>()?;
/// assert_eq!(sums, vec![784.0, 0.0]);
/// assert_eq!(data.batch_targets(VaeSplit::Val, &[0], &Device::Cpu)?.dims(), &[1, 784]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct VaeData {
    /// Which dataset.
    pub name: VaeDatasetName,
    /// The decoder likelihood it is modelled with.
    pub likelihood: VaeLikelihood,
    /// Image height (28).
    pub height: usize,
    /// Image width (20 for Frey Faces, else 28).
    pub width: usize,
    /// Training images.
    pub train: VaeImages,
    /// Validation images (binary for the dynamically binarised datasets).
    pub val: VaeImages,
    /// Test images (binary for the dynamically binarised datasets).
    pub test: VaeImages,
    /// MNIST and Omniglot: the training images are grey levels, binarised per batch.
    pub dynamic_binarization: bool,
}

impl VaeData {
    /// The images of split `s`.
    pub fn split(&self, s: VaeSplit) -> &VaeImages {
        match s {
            VaeSplit::Train => &self.train,
            VaeSplit::Val => &self.val,
            VaeSplit::Test => &self.test,
        }
    }

    /// Pixels per image, `H · W`.
    pub fn image_dim(&self) -> usize {
        self.height * self.width
    }

    /// Whether the images of split `s` are binarised per batch.
    pub fn is_dynamic(&self, s: VaeSplit) -> bool {
        self.dynamic_binarization && s == VaeSplit::Train
    }

    /// Check data built in memory (the loaders' data pass): positive `height`/`width`; each
    /// split holds `n · H · W` pixels; the pixels of a split the Bernoulli decoder reads as
    /// they are (every split but a dynamically binarised training split) are 0 or 1; dynamic
    /// binarisation only with the Bernoulli likelihood. Errors name the split and the first
    /// bad image ([`DatasetError::InvalidConfig`]); [`super::run_vae_on`] and
    /// [`super::score_vae_test`] run it first.
    ///
    /// ```
    /// use cpflow::vae::{VaeData, VaeDatasetName, VaeImages, VaeLikelihood};
    /// let binary = VaeImages { n: 1, pixels: vec![1; 784] };
    /// let mut data = VaeData {
    ///     name: VaeDatasetName::Caltech101,
    ///     likelihood: VaeLikelihood::Bernoulli,
    ///     height: 28,
    ///     width: 28,
    ///     train: binary.clone(),
    ///     val: binary.clone(),
    ///     test: binary,
    ///     dynamic_binarization: false,
    /// };
    /// data.check()?;
    /// // A grey level in static binary data would be read as a Bernoulli target of 200.
    /// data.val.pixels[5] = 200;
    /// let e = data.check().unwrap_err().to_string();
    /// assert!(e.contains("validation split") && e.contains("image 0"), "{e}");
    /// # Ok::<(), cpflow::datasets::DatasetError>(())
    /// ```
    pub fn check(&self) -> Result<(), DatasetError> {
        let bad = |m: String| Err(DatasetError::InvalidConfig(format!("{}: {m}", self.name)));
        let d = self.image_dim();
        if d == 0 {
            return bad(format!(
                "images of {}×{} pixels: height and width must be ≥ 1",
                self.height, self.width
            ));
        }
        if self.dynamic_binarization && self.likelihood != VaeLikelihood::Bernoulli {
            return bad(
                "dynamic binarisation draws binary images: it needs the Bernoulli likelihood"
                    .into(),
            );
        }
        for s in [VaeSplit::Train, VaeSplit::Val, VaeSplit::Test] {
            let imgs = self.split(s);
            if imgs.n.checked_mul(d) != Some(imgs.pixels.len()) {
                return bad(format!(
                    "the {s} split holds {} pixels, but {} images of {}×{} need {}",
                    imgs.pixels.len(),
                    imgs.n,
                    self.height,
                    self.width,
                    imgs.n.saturating_mul(d)
                ));
            }
            if self.likelihood == VaeLikelihood::Bernoulli
                && !self.is_dynamic(s)
                && let Some(i) = imgs.pixels.iter().position(|&p| p > 1)
            {
                return bad(format!(
                    "image {} of the {s} split holds the value {}: the Bernoulli likelihood \
                     reads static images as 0/1 (grey-level training images need \
                     `dynamic_binarization = true`)",
                    i / d,
                    imgs.pixels[i]
                ));
            }
        }
        Ok(())
    }

    /// The pixels of the images `idx` of split `s`, checked.
    fn gather(&self, s: VaeSplit, idx: &[usize]) -> Result<Vec<&[u8]>, DatasetError> {
        let imgs = self.split(s);
        if idx.is_empty() {
            return Err(DatasetError::InvalidConfig(format!(
                "{}: empty batch of the {s} split",
                self.name
            )));
        }
        idx.iter()
            .map(|&i| {
                if i < imgs.n {
                    Ok(imgs.image(i))
                } else {
                    Err(DatasetError::InvalidConfig(format!(
                        "{}: image {i} requested from the {s} split of {} images",
                        self.name, imgs.n
                    )))
                }
            })
            .collect()
    }

    /// Inputs for a batch as `(B, 1, H, W)` in `dtype` on `device`: Frey `pixel/255`
    /// (computed in `f32`, as the reference's `.float()`, then cast); binary data 0/1;
    /// dynamically binarised training data: Bernoulli(`p/255`) drawn from `rng`, a fresh
    /// draw on every call.
    ///
    /// Errors: an empty `idx` or an index out of range ([`DatasetError::InvalidConfig`]), or
    /// a candle error.
    ///
    /// ```
    /// use cpflow::candle::{DType, Device};
    /// use cpflow::vae::{VaeData, VaeDatasetName, VaeImages, VaeLikelihood, VaeSplit};
    /// use cpflow::rand::SeedableRng;
    /// # fn main() -> cpflow::Result<()> {
    /// // Grey-level training images (binarised per batch) and binary test images, 28×28.
    /// let image = |g: u8| VaeImages { n: 1, pixels: vec![g; 784] };
    /// let data = VaeData {
    ///     name: VaeDatasetName::Mnist,
    ///     likelihood: VaeLikelihood::Bernoulli,
    ///     height: 28,
    ///     width: 28,
    ///     train: VaeImages { n: 2, pixels: [vec![0; 784], vec![255; 784]].concat() },
    ///     val: image(1),
    ///     test: image(0),
    ///     dynamic_binarization: true,
    /// };
    /// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
    /// // Grey levels 0 and 255 binarise to sure 0s and 1s; binary splits are read as stored.
    /// let x = data.batch_inputs(VaeSplit::Train, &[0, 1], DType::F32, &Device::Cpu, &mut rng)?;
    /// assert_eq!(x.dims(), &[2, 1, 28, 28]);
    /// assert_eq!(x.sum_all()?.to_scalar::<f32>()?, 784.0);
    /// let val = data.batch_inputs(VaeSplit::Val, &[0], DType::F32, &Device::Cpu, &mut rng)?;
    /// assert_eq!(val.sum_all()?.to_scalar::<f32>()?, 784.0);
    /// let dev = &Device::Cpu;
    /// assert!(data.batch_inputs(VaeSplit::Test, &[1], DType::F32, dev, &mut rng).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn batch_inputs<R: Rng + ?Sized>(
        &self,
        s: VaeSplit,
        idx: &[usize],
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Tensor, DatasetError> {
        let images = self.gather(s, idx)?;
        let mut x = Vec::with_capacity(idx.len() * self.image_dim());
        if self.is_dynamic(s) {
            for img in images {
                x.extend(img.iter().map(|&g| {
                    if binarize::bernoulli_grey(rng, g) {
                        1.0f32
                    } else {
                        0.0
                    }
                }));
            }
        } else if self.likelihood == VaeLikelihood::Categorical256 {
            for img in images {
                x.extend(img.iter().map(|&g| f32::from(g) / 255.0));
            }
        } else {
            for img in images {
                x.extend(img.iter().map(|&g| f32::from(g)));
            }
        }
        let t = Tensor::from_vec(x, (idx.len(), 1, self.height, self.width), device)?;
        Ok(t.to_dtype(dtype)?)
    }

    /// The pixel values of a batch as class targets, `(B, H·W)` `U32`: for Frey Faces the
    /// grey levels 0..=255 (targets of the 256-way categorical decoder), for static binary
    /// images their 0/1 values.
    ///
    /// Errors: the training split of a dynamically binarised dataset (its targets are the
    /// binarised inputs of [`VaeData::batch_inputs`]), an empty `idx` or an index out of
    /// range ([`DatasetError::InvalidConfig`]).
    pub fn batch_targets(
        &self,
        s: VaeSplit,
        idx: &[usize],
        device: &Device,
    ) -> Result<Tensor, DatasetError> {
        if self.is_dynamic(s) {
            return Err(DatasetError::InvalidConfig(format!(
                "{}: training images are binarised per batch; use the binarised inputs of \
                 batch_inputs as targets",
                self.name
            )));
        }
        let images = self.gather(s, idx)?;
        let t: Vec<u32> = images
            .iter()
            .flat_map(|img| img.iter().map(|&g| u32::from(g)))
            .collect();
        Ok(Tensor::from_vec(t, (idx.len(), self.image_dim()), device)?)
    }
}

/// Loads a VAE dataset from a data root laid out like the project's `../shared/data` (see the
/// module table: [`FREY_FACES_FILE`], [`CALTECH101_DIR`], `mnist/*-ubyte.gz`,
/// [`OMNIGLOT_FILE`]).
///
/// `seed` is the reference's numpy seed: it drives the shuffles (and with them which images
/// are binarised how); a `seed ≥ 2³²` is folded to `(seed ^ seed >> 32) as u32`. For the
/// reference's Frey Faces split pass [`FREY_REFERENCE_SEED`].
///
/// Errors: a missing MNIST / Omniglot file is [`DatasetError::MissingFile`] naming
/// `cargo xtask download mnist|omniglot`; a missing Frey / Caltech file is
/// [`DatasetError::Unsupported`] saying to copy it from `../shared/data` (no download
/// exists); wrong shapes are [`DatasetError::BadShape`]; out-of-range values, bad or
/// truncated files are [`DatasetError::Corrupt`] / [`DatasetError::Truncated`].
///
/// ```
/// use cpflow::datasets::DatasetError;
/// use cpflow::vae::{FREY_REFERENCE_SEED, VaeDatasetName, load_vae_data};
/// // With the shared data folder as root, `load_vae_data(VaeDatasetName::FreyFaces, root,
/// // FREY_REFERENCE_SEED)` gives 1565 / 200 / 200 images. Where the files are missing, the
/// // error says how to get them.
/// let root = std::env::temp_dir().join("cpflow-doc-no-such-vae-data");
/// let frey = load_vae_data(VaeDatasetName::FreyFaces, &root, FREY_REFERENCE_SEED);
/// assert!(matches!(frey, Err(DatasetError::Unsupported { .. }))); // no download: copy it
/// let mnist = load_vae_data(VaeDatasetName::Mnist, &root, 1);
/// assert!(matches!(mnist, Err(DatasetError::MissingFile { command: "mnist", .. })));
/// ```
pub fn load_vae_data(
    name: VaeDatasetName,
    root: &Path,
    seed: u64,
) -> Result<VaeData, DatasetError> {
    match name {
        VaeDatasetName::FreyFaces => loaders::load_frey(root, seed),
        VaeDatasetName::Caltech101 => loaders::load_caltech(root, seed),
        VaeDatasetName::Mnist => loaders::load_mnist_dynamic(root, seed),
        VaeDatasetName::Omniglot => loaders::load_omniglot(root, seed),
    }
}
