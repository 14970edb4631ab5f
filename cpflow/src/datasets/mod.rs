//! Datasets: the MAF tabular benchmarks, BSDS300 patches rebuilt from the source images,
//! MNIST and CIFAR-10.
//!
//! Loaders read files under a data root (CP-Flow's default is `data/`; `cargo xtask download
//! <name> --dir DIR` fills one) laid out as in [`layout`], apply the MAF preprocessing
//! (`lib/datasets/*.py` of MAF / CP-Flow) and return host data: a [`Split`] of row-major
//! [`Matrix`] values (`f32`, as MAF casts to `float32`), convertible to candle tensors with
//! [`Split::to_tensors`]. A missing file is a [`DatasetError::MissingFile`] whose message
//! names the file and the `cargo xtask download` command that fetches it.
//!
//! | dataset | file(s) under the root | d | loader |
//! |---|---|---|---|
//! | POWER | `power/data.npy` | 6 | [`load_power`] (exact MAF procedure, numpy's RNG reproduced) |
//! | GAS | `gas/ethylene_CO.txt` (UCI; MAF's pandas pickle is not read) | 8 | [`load_gas`] |
//! | HEPMASS | `hepmass/1000_{train,test}.csv` | 21 | [`load_hepmass`] |
//! | MINIBOONE | `miniboone/data.npy` | 43 | [`load_miniboone`] |
//! | BSDS300 | `bsds300/BSDS300-images.tgz` (images; MAF's HDF5 is not read) | 63 | [`load_bsds300`] |
//! | MNIST | `mnist/*-ubyte[.gz]` | 784 | [`load_mnist`], [`dequantize_logit`] |
//! | CIFAR-10 | `cifar10/cifar-10-batches-bin/*.bin` | 3072 | [`load_cifar10`] |
//!
//! Generic readers (also used by the `cpflow` CLI for `--data file.npy|file.csv`):
//! [`read_npy_file`] / [`parse_npy_matrix`] (1-D or 2-D, float/int/bool dtypes, C or Fortran
//! order, either byte order; built on `npyz`) and [`read_csv_file`] / [`parse_csv_matrix`]
//! (numeric rows separated by `,`, `;`, tabs or spaces, `#` comment lines skipped, an
//! optional header only if it is a plausible one; [`read_csv_rows`] also gives each row's
//! file line). Both return a row-major `f64` [`Matrix`].
//!
//! Randomness: the numpy draws of the MAF code (POWER's `RandomState(42)`, GAS's
//! `DataFrame.sample`) are reproduced bit for bit by [`NumpyRandomState`]; what MAF drew
//! without a seed (the GAS sample, the BSDS300 patches) is redrawn with a documented seed.
//!
//! ```
//! use cpflow::candle::{DType, Device};
//! use cpflow::datasets::{Matrix, TabularDataset, layout, load_tabular, write_npy_f64};
//! // A data root as `cargo xtask download miniboone --dir <root>` lays it out, with a small
//! // stand-in for MAF's 36,488-row file.
//! let root = std::env::temp_dir().join(format!("cpflow-doc-datasets-{}", std::process::id()));
//! let path = root.join(layout::MINIBOONE);
//! std::fs::create_dir_all(path.parent().unwrap()).unwrap();
//! let raw = Matrix::new(40, 43, (0..40 * 43).map(|i| ((i * 7919) % 101) as f64).collect())?;
//! std::fs::write(&path, write_npy_f64(&raw)).unwrap();
//! let split = load_tabular(TabularDataset::Miniboone, &root)?;
//! let t = split.to_tensors(DType::F32, &Device::Cpu)?;
//! assert_eq!(t.train.dims(), &[33, 43]); // 40 rows: 4 test, 3 validation, 33 training
//! std::fs::remove_dir_all(&root).ok();
//! # Ok::<(), cpflow::datasets::DatasetError>(())
//! ```

mod bsds300;
mod cifar10;
mod csv_rows;
mod error;
mod gas;
mod gaussian_baseline;
mod hepmass;
mod matrix;
mod miniboone;
mod mnist;
mod npy;
mod numpy_rng;
mod power;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use bsds300::{
    BSDS300_DIM, Bsds300Config, Bsds300Images, GrayImage, PATCH_SIZE, decode_gray,
    find_images_archive, load_bsds300, load_bsds300_from_archive, patches_from_images, pil_luma,
    read_images_archive, sample_patches,
};
pub use cifar10::{
    CIFAR10_IMAGE_BYTES, CIFAR10_RECORD_BYTES, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES,
    Cifar10Split, load_cifar10, load_cifar10_test, read_cifar10_batch,
};
pub use csv_rows::{CsvRows, parse_csv_matrix, parse_csv_rows, read_csv_file, read_csv_rows};
pub use error::{DatasetError, download_command_into, relative_path_note};
pub use gas::{
    GAS_CORRELATION_THRESHOLD, GAS_RAW_COLUMNS, GasConfig, load_gas, load_gas_file,
    parse_gas_sensors, preprocess_gas, read_gas_sensors, read_gas_sensors_as,
};
pub use gaussian_baseline::{GaussianBaseline, GaussianBaselineError};
pub use hepmass::{
    HEPMASS_MAX_REPEATS, HepmassFeatures, HepmassRemoval, LabelledTable, load_hepmass,
    parse_signal_csv, preprocess_hepmass, read_signal_csv, read_signal_csv_as,
    select_hepmass_features,
};
pub use matrix::{Matrix, Split, TensorSplit};
pub use miniboone::{MINIBOONE_COLUMNS, load_miniboone, load_miniboone_file, preprocess_miniboone};
pub use mnist::{
    IdxImages, LogitImages, MNIST_ALPHA, MNIST_FILES, MnistSplit, bits_per_dim, dequantize_logit,
    load_mnist, load_mnist_test, logit_to_pixels, read_idx_images, read_idx_labels,
};
pub use npy::{parse_npy_matrix, read_npy_file, read_npy_file_as, read_npy_shape, write_npy_f64};
pub use numpy_rng::NumpyRandomState;
pub use power::{POWER_RAW_COLUMNS, load_power, preprocess_power};

/// Where each dataset lives under the data root (relative paths). `cargo xtask download`
/// writes exactly these.
pub mod layout {
    /// CP-Flow's default data root.
    pub const DEFAULT_ROOT: &str = "data";
    /// POWER, MAF's cleaned array (8 columns).
    pub const POWER: &str = "power/data.npy";
    /// GAS, the UCI source text (read by [`super::load_gas`]).
    pub const GAS_TXT: &str = "gas/ethylene_CO.txt";
    /// GAS, MAF's pandas pickle (detected, not read).
    pub const GAS_PICKLE: &str = "gas/ethylene_CO.pickle";
    /// HEPMASS train CSV.
    pub const HEPMASS_TRAIN: &str = "hepmass/1000_train.csv";
    /// HEPMASS test CSV.
    pub const HEPMASS_TEST: &str = "hepmass/1000_test.csv";
    /// MINIBOONE, MAF's cleaned array.
    pub const MINIBOONE: &str = "miniboone/data.npy";
    /// BSDS300, MAF's patch file (detected, not read).
    pub const BSDS300_HDF5: &str = "BSDS300/BSDS300.hdf5";
    /// BSDS300 source images, the official name first.
    pub const BSDS300_IMAGES: [&str; 2] = [
        "bsds300/BSDS300-images.tgz",
        "bsds300/BSDS300-images.tar.gz",
    ];
    /// MNIST IDX files (see [`super::MNIST_FILES`]).
    pub const MNIST_DIR: &str = "mnist";
    /// CIFAR-10 binary batches (`data_batch_{1..5}.bin`, `test_batch.bin`).
    pub const CIFAR10_DIR: &str = "cifar10/cifar-10-batches-bin";
}

/// The five MAF tabular benchmarks.
///
/// ```
/// use cpflow::datasets::TabularDataset;
/// let names: Vec<&str> = TabularDataset::ALL.iter().map(|d| d.name()).collect();
/// assert_eq!(names, ["power", "gas", "hepmass", "miniboone", "bsds300"]);
/// assert_eq!(TabularDataset::from_name("gas"), Some(TabularDataset::Gas));
/// assert_eq!(TabularDataset::from_name("GAS"), None); // lower case only
/// assert_eq!(TabularDataset::Hepmass.dim(), 21);
/// let (train, val, test) = TabularDataset::Miniboone.maf_sizes();
/// assert_eq!(train + val + test, 36_488);
/// assert_eq!(TabularDataset::Bsds300.to_string(), "bsds300");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TabularDataset {
    /// POWER, d = 6.
    Power,
    /// GAS, d = 8.
    Gas,
    /// HEPMASS, d = 21.
    Hepmass,
    /// MINIBOONE, d = 43.
    Miniboone,
    /// BSDS300, d = 63.
    Bsds300,
}

impl TabularDataset {
    /// All five, in the paper's order.
    pub const ALL: [TabularDataset; 5] = [
        TabularDataset::Power,
        TabularDataset::Gas,
        TabularDataset::Hepmass,
        TabularDataset::Miniboone,
        TabularDataset::Bsds300,
    ];

    /// Lower-case name, as used by `cargo xtask download`.
    pub fn name(self) -> &'static str {
        match self {
            TabularDataset::Power => "power",
            TabularDataset::Gas => "gas",
            TabularDataset::Hepmass => "hepmass",
            TabularDataset::Miniboone => "miniboone",
            TabularDataset::Bsds300 => "bsds300",
        }
    }

    /// Parses a lower-case name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Data dimension after preprocessing.
    pub fn dim(self) -> usize {
        match self {
            TabularDataset::Power => 6,
            TabularDataset::Gas => 8,
            TabularDataset::Hepmass => 21,
            TabularDataset::Miniboone => 43,
            TabularDataset::Bsds300 => 63,
        }
    }

    /// Test NLL (nats) of the full-covariance Gaussian on MAF's files and MAF's error bar
    /// (two standard errors): the "Gaussian" row of MAF's Table 1 (Papamakarios et al.,
    /// 2017), negated. [`GaussianBaseline`] scores the same model on data loaded here, which
    /// checks the data against MAF's files (BSDS300 is rebuilt, not read from them).
    ///
    /// ```
    /// use cpflow::datasets::TabularDataset;
    /// assert_eq!(TabularDataset::Bsds300.maf_gaussian_test_nll(), (-96.67, 0.25));
    /// ```
    pub fn maf_gaussian_test_nll(self) -> (f64, f64) {
        match self {
            TabularDataset::Power => (7.74, 0.02),
            TabularDataset::Gas => (3.58, 0.75),
            TabularDataset::Hepmass => (27.93, 0.02),
            TabularDataset::Miniboone => (37.24, 1.07),
            TabularDataset::Bsds300 => (-96.67, 0.25),
        }
    }

    /// `(train, val, test)` sizes of MAF's files (from the MAF paper).
    pub fn maf_sizes(self) -> (usize, usize, usize) {
        match self {
            TabularDataset::Power => (1_659_917, 184_435, 204_928),
            TabularDataset::Gas => (852_174, 94_685, 105_206),
            TabularDataset::Hepmass => (315_123, 35_013, 174_987),
            TabularDataset::Miniboone => (29_556, 3_284, 3_648),
            TabularDataset::Bsds300 => (1_000_000, 50_000, 250_000),
        }
    }
}

impl std::fmt::Display for TabularDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Loads one tabular benchmark with MAF's preprocessing and sizes (GAS with
/// [`GasConfig::default`], BSDS300 rebuilt with [`Bsds300Config::maf`]).
///
/// ```
/// use cpflow::datasets::{DatasetError, TabularDataset, load_tabular};
/// let root = std::env::temp_dir().join(format!("cpflow-doc-load-tabular-{}", std::process::id()));
/// // Each benchmark names the file it needs and the download that fetches it.
/// for which in TabularDataset::ALL {
///     match load_tabular(which, &root) {
///         Err(DatasetError::MissingFile { command, .. }) => assert_eq!(command, which.name()),
///         other => panic!("{which}: expected a missing file, got {:?}", other.err()),
///     }
/// }
/// ```
pub fn load_tabular(which: TabularDataset, root: &Path) -> Result<Split, DatasetError> {
    match which {
        TabularDataset::Power => load_power(root),
        TabularDataset::Gas => load_gas(root, &GasConfig::default()),
        TabularDataset::Hepmass => load_hepmass(root),
        TabularDataset::Miniboone => load_miniboone(root),
        TabularDataset::Bsds300 => load_bsds300(root, &Bsds300Config::maf()),
    }
}
