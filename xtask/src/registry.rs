//! Where each dataset comes from, how it is verified, and where its files go.
//!
//! | dataset | source | verification | files written (under `--dir`) |
//! |---|---|---|---|
//! | power, hepmass, miniboone | MAF archive, Zenodo record 1161203 (`data.tar.gz`) | none published as sha256 (the record lists an md5 not recorded here): the computed sha256 is recorded on first download and checked afterwards | `power/data.npy`, `hepmass/1000_{train,test}.csv`, `miniboone/data.npy` |
//! | hepmass (fallback) | UCI 00347 `1000_{train,test}.csv.gz` | recorded sha256 (trust on first use) | same |
//! | gas | UCI 00322 `data.zip` → `ethylene_CO.txt` (the loader reads the text, not MAF's pickle) | recorded sha256 | `gas/ethylene_CO.txt` |
//! | bsds300 | Berkeley `BSDS300-images.tgz` | sha256 of each of the 300 JPEGs (verified against an independent copy, see `docs/data/bsds300/README.md`) | `bsds300/BSDS300-images.tgz` |
//! | mnist | `ossci-datasets` S3 mirror of yann.lecun.com (then the original site) | sha256 of each decompressed IDX file (from the official files) | `mnist/*-ubyte.gz` |
//! | cifar10 | `cs.toronto.edu/~kriz/cifar-10-binary.tar.gz` | md5 `c32a1d4ab5d03f1284b67883e8d87530` published on the CIFAR page for the binary version (md5 only: no sha256 is published) | `cifar10/cifar-10-batches-bin/*.bin` |
//! | omniglot | IWAE repository `yburda/iwae`, `datasets/OMNIGLOT/chardata.mat` (the file of the VAE papers' loaders) | git blob id [`OMNIGLOT_CHARDATA_GIT_BLOB`] of the file at a fixed commit of that repository (no sha256 is published), checked on download | `omniglot/chardata.mat` |
//!
//! With `--mirror URL` (or `CPFLOW_DATA_MIRROR`), every file is fetched from
//! `URL/<mirror path>` instead, with the mirror paths listed by [`Artifact::mirror_path`]
//! (e.g. `maf/data.tar.gz`, `mnist/train-images-idx3-ubyte.gz`); a local directory with the
//! same layout (a path or a `file://` URL, [`Mirror::Dir`]) serves an offline machine.
//! [`mirror_layout_help`] lists the layout for `cargo xtask download --help` ([`crate::mirror`]).

use cpflow::datasets::layout;

pub use crate::mirror::{Mirror, MirrorError, mirror_layout, mirror_layout_help};

use crate::checksum::Checksum;

/// One file to download.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    /// Name of the cached download under `<dir>/.downloads/`.
    pub cache_name: String,
    /// Official URLs, tried in order.
    pub urls: Vec<String>,
    /// Path under a `--mirror` base URL.
    pub mirror_path: String,
    /// What is known about its bytes.
    pub checksum: Checksum,
    /// Approximate size, for messages.
    pub approx_size: &'static str,
}

impl Artifact {
    /// The URLs to try: the mirror's alone when one is given, else the official ones. A
    /// mirror directory gives a `file://` URL of the file's path, not percent-encoded
    /// ([`crate::fetch::local_file`] reads it back as it is).
    pub fn urls_with(&self, mirror: Option<&Mirror>) -> Vec<String> {
        match mirror {
            Some(Mirror::Url(m)) => {
                vec![format!("{}/{}", m.trim_end_matches('/'), self.mirror_path)]
            }
            Some(Mirror::Dir(d)) => {
                vec![format!("file://{}", d.join(&self.mirror_path).display())]
            }
            None => self.urls.clone(),
        }
    }
}

/// What to do with a downloaded artifact.
#[derive(Debug, Clone, PartialEq)]
pub enum Extract {
    /// Copy the members of a `.tar.gz` whose path ends with `.0` to `.1` (relative to the
    /// data dir). The archive stays in the cache.
    TarMembers(Vec<(String, String)>),
    /// Copy every file under the archive directory `prefix` into `dest_dir`.
    TarDir {
        /// Directory inside the archive (matched anywhere in the member path).
        prefix: String,
        /// Destination directory.
        dest_dir: String,
        /// Files that must be present.
        required: Vec<String>,
    },
    /// Copy the member of a `.zip` whose path ends with `member` (searching nested zips).
    ZipMember {
        /// Member name suffix.
        member: String,
        /// Destination.
        dest: String,
    },
    /// Decompress a `.gz` to `dest`.
    Gunzip(String),
    /// Move the download to `dest` as it is.
    Place(String),
    /// Move a `.tar.gz` to `dest` after checking each member listed in `sums`
    /// (`<sha256>  <path relative to images/>` lines).
    PlaceVerifyingMembers {
        /// Destination.
        dest: String,
        /// The expected member checksums.
        sums: &'static str,
    },
}

impl Extract {
    /// Whether extracting checks every member against published checksums (then the
    /// archive's own bytes need none: its content is verified).
    pub fn verifies_members(&self) -> bool {
        matches!(self, Extract::PlaceVerifyingMembers { .. })
    }
}

/// An artifact and what to do with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The download.
    pub artifact: Artifact,
    /// Its extraction.
    pub extract: Extract,
}

/// One way of obtaining a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Short description for messages.
    pub source: &'static str,
    /// Downloads and extractions, in order.
    pub steps: Vec<Step>,
}

/// A downloadable dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    /// Name on the command line.
    pub name: &'static str,
    /// Files (relative to the data dir) whose presence means the dataset is installed.
    pub outputs: Vec<String>,
    /// Ways to obtain it, tried in order while a source does not deliver its files.
    pub plans: Vec<Plan>,
}

/// Names accepted by `cargo xtask download` (besides `all`).
pub const DATASETS: [&str; 8] = [
    "power",
    "gas",
    "hepmass",
    "miniboone",
    "bsds300",
    "mnist",
    "cifar10",
    "omniglot",
];

/// sha256 of each BSDS300 JPEG, paths relative to `images/`.
pub const BSDS300_JPEG_SHA256SUMS: &str = include_str!("bsds300_sha256sums.txt");

/// sha256 of the decompressed official MNIST IDX files (`docs/data/mnist/README.md`).
pub const MNIST_IDX_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// md5 of `cifar-10-binary.tar.gz` as published on the CIFAR-10 page.
pub const CIFAR10_BINARY_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

/// Where Omniglot goes under the data dir (`cpflow::vae::OMNIGLOT_FILE`, which this crate
/// cannot name without cpflow's `vae` feature).
pub const OMNIGLOT_CHARDATA: &str = "omniglot/chardata.mat";

/// Git blob id (SHA-1 of `"blob <size>\0" + content`) of `datasets/OMNIGLOT/chardata.mat` at
/// `yburda/iwae` commit `78a6075484bd7dd6f47a4bb9880d2295bc7a5220` (`git hash-object
/// chardata.mat` prints it), the download's [`Checksum::GitBlob`]. No sha256 of the file is
/// published.
pub const OMNIGLOT_CHARDATA_GIT_BLOB: &str = "016a3536ffe5e1d38e42563a18d7a78bfaf643ec";

fn maf_archive() -> Artifact {
    Artifact {
        cache_name: "maf-data.tar.gz".into(),
        urls: vec![
            "https://zenodo.org/records/1161203/files/data.tar.gz?download=1".into(),
            "https://zenodo.org/record/1161203/files/data.tar.gz".into(),
        ],
        mirror_path: "maf/data.tar.gz".into(),
        checksum: Checksum::Unknown,
        approx_size: "about 1 GB",
    }
}

fn maf_members(members: &[&str]) -> Vec<Step> {
    vec![Step {
        artifact: maf_archive(),
        extract: Extract::TarMembers(
            members
                .iter()
                .map(|m| (format!("data/{m}"), (*m).to_string()))
                .collect(),
        ),
    }]
}

fn uci_hepmass(file: &str, dest: &str) -> Step {
    Step {
        artifact: Artifact {
            cache_name: format!("hepmass-{file}.gz"),
            urls: vec![format!(
                "https://archive.ics.uci.edu/ml/machine-learning-databases/00347/{file}.gz"
            )],
            mirror_path: format!("uci/hepmass/{file}.gz"),
            checksum: Checksum::Unknown,
            approx_size: "about 300 MB",
        },
        extract: Extract::Gunzip(dest.into()),
    }
}

fn mnist_steps() -> Vec<Step> {
    MNIST_IDX_SHA256
        .iter()
        .map(|(name, sha)| Step {
            artifact: Artifact {
                cache_name: format!("{name}.gz"),
                urls: vec![
                    format!("https://ossci-datasets.s3.amazonaws.com/mnist/{name}.gz"),
                    format!("http://yann.lecun.com/exdb/mnist/{name}.gz"),
                ],
                mirror_path: format!("mnist/{name}.gz"),
                checksum: Checksum::Sha256Gunzipped((*sha).into()),
                approx_size: "up to 10 MB",
            },
            extract: Extract::Place(format!("{}/{name}.gz", layout::MNIST_DIR)),
        })
        .collect()
}

/// The dataset table.
pub fn registry() -> Vec<DatasetSpec> {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_string()).collect::<Vec<_>>();
    vec![
        DatasetSpec {
            name: "power",
            outputs: s(&[layout::POWER]),
            plans: vec![Plan {
                source: "MAF archive (Zenodo 1161203)",
                steps: maf_members(&[layout::POWER]),
            }],
        },
        DatasetSpec {
            name: "gas",
            outputs: s(&[layout::GAS_TXT]),
            plans: vec![Plan {
                source: "UCI gas sensor array under dynamic gas mixtures",
                steps: vec![Step {
                    artifact: Artifact {
                        cache_name: "uci-gas-data.zip".into(),
                        urls: vec![
                            "https://archive.ics.uci.edu/ml/machine-learning-databases/00322/data.zip".into(),
                            "https://archive.ics.uci.edu/static/public/322/gas+sensor+array+under+dynamic+gas+mixtures.zip".into(),
                        ],
                        mirror_path: "uci/gas/data.zip".into(),
                        checksum: Checksum::Unknown,
                        approx_size: "about 250 MB",
                    },
                    extract: Extract::ZipMember {
                        member: "ethylene_CO.txt".into(),
                        dest: layout::GAS_TXT.into(),
                    },
                }],
            }],
        },
        DatasetSpec {
            name: "hepmass",
            outputs: s(&[layout::HEPMASS_TRAIN, layout::HEPMASS_TEST]),
            plans: vec![
                Plan {
                    source: "MAF archive (Zenodo 1161203)",
                    steps: maf_members(&[layout::HEPMASS_TRAIN, layout::HEPMASS_TEST]),
                },
                Plan {
                    source: "UCI HEPMASS",
                    steps: vec![
                        uci_hepmass("1000_train.csv", layout::HEPMASS_TRAIN),
                        uci_hepmass("1000_test.csv", layout::HEPMASS_TEST),
                    ],
                },
            ],
        },
        DatasetSpec {
            name: "miniboone",
            outputs: s(&[layout::MINIBOONE]),
            plans: vec![Plan {
                source: "MAF archive (Zenodo 1161203)",
                steps: maf_members(&[layout::MINIBOONE]),
            }],
        },
        DatasetSpec {
            name: "bsds300",
            outputs: s(&[layout::BSDS300_IMAGES[0]]),
            plans: vec![Plan {
                source: "Berkeley BSDS300 images",
                steps: vec![Step {
                    artifact: Artifact {
                        cache_name: "BSDS300-images.tgz".into(),
                        urls: vec![
                            "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/bsds/BSDS300-images.tgz".into(),
                        ],
                        mirror_path: "bsds300/BSDS300-images.tgz".into(),
                        checksum: Checksum::Unknown,
                        approx_size: "about 22 MB",
                    },
                    extract: Extract::PlaceVerifyingMembers {
                        dest: layout::BSDS300_IMAGES[0].into(),
                        sums: BSDS300_JPEG_SHA256SUMS,
                    },
                }],
            }],
        },
        DatasetSpec {
            name: "mnist",
            outputs: MNIST_IDX_SHA256
                .iter()
                .map(|(n, _)| format!("{}/{n}.gz", layout::MNIST_DIR))
                .collect(),
            plans: vec![Plan {
                source: "MNIST (LeCun et al.)",
                steps: mnist_steps(),
            }],
        },
        DatasetSpec {
            name: "cifar10",
            outputs: vec![format!("{}/test_batch.bin", layout::CIFAR10_DIR)],
            plans: vec![Plan {
                source: "CIFAR-10 binary version (Krizhevsky)",
                steps: vec![Step {
                    artifact: Artifact {
                        cache_name: "cifar-10-binary.tar.gz".into(),
                        urls: vec!["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz".into()],
                        mirror_path: "cifar10/cifar-10-binary.tar.gz".into(),
                        checksum: Checksum::Md5(CIFAR10_BINARY_MD5.into()),
                        approx_size: "about 170 MB",
                    },
                    extract: Extract::TarDir {
                        prefix: "cifar-10-batches-bin/".into(),
                        dest_dir: layout::CIFAR10_DIR.into(),
                        required: (1..=5)
                            .map(|i| format!("data_batch_{i}.bin"))
                            .chain(["test_batch.bin".to_string()])
                            .collect(),
                    },
                }],
            }],
        },
        DatasetSpec {
            name: "omniglot",
            outputs: s(&[OMNIGLOT_CHARDATA]),
            plans: vec![Plan {
                source: "Omniglot 28x28 of the IWAE paper (Burda et al.)",
                steps: vec![Step {
                    artifact: Artifact {
                        cache_name: "omniglot-chardata.mat".into(),
                        // The commit the git blob id was taken at, then the branch head.
                        urls: vec![
                            "https://raw.githubusercontent.com/yburda/iwae/78a6075484bd7dd6f47a4bb9880d2295bc7a5220/datasets/OMNIGLOT/chardata.mat".into(),
                            "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat".into(),
                            "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat".into(),
                        ],
                        mirror_path: "omniglot/chardata.mat".into(),
                        checksum: Checksum::GitBlob(OMNIGLOT_CHARDATA_GIT_BLOB.into()),
                        approx_size: "about 30 MB",
                    },
                    extract: Extract::Place(OMNIGLOT_CHARDATA.into()),
                }],
            }],
        },
    ]
}

/// The spec of one dataset by name.
pub fn find(name: &str) -> Option<DatasetSpec> {
    registry().into_iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_a_spec_and_mirror_paths_are_unique() {
        let reg = registry();
        assert_eq!(reg.len(), DATASETS.len());
        for n in DATASETS {
            assert!(find(n).is_some(), "{n}");
        }
        let mut paths: Vec<(String, String)> = reg
            .iter()
            .flat_map(|d| d.plans.iter().flat_map(|p| p.steps.iter()))
            .map(|s| {
                (
                    s.artifact.mirror_path.clone(),
                    s.artifact.cache_name.clone(),
                )
            })
            .collect();
        paths.sort();
        paths.dedup();
        // Same mirror path must mean the same cache file (the MAF archive is shared).
        let mut mp: Vec<&String> = paths.iter().map(|(m, _)| m).collect();
        mp.dedup();
        assert_eq!(mp.len(), paths.len());
    }

    #[test]
    fn bsds300_sums_cover_300_images() {
        let lines: Vec<&str> = BSDS300_JPEG_SHA256SUMS.lines().collect();
        assert_eq!(lines.len(), 300);
        assert_eq!(lines.iter().filter(|l| l.contains("  train/")).count(), 200);
        assert!(lines.iter().all(|l| l.len() == 64 + 2 + l[66..].len()));
    }

    #[test]
    fn mirror_replaces_official_urls() {
        let a = maf_archive();
        assert_eq!(
            a.urls_with(Some(&Mirror::Url("http://127.0.0.1:9/".into()))),
            vec!["http://127.0.0.1:9/maf/data.tar.gz".to_string()]
        );
        assert_eq!(
            a.urls_with(Some(&Mirror::Dir("/srv/m".into()))),
            vec!["file:///srv/m/maf/data.tar.gz".to_string()]
        );
        assert_eq!(a.urls_with(None), a.urls);
    }
}
