//! Where the tabular benchmarks' data are and how they are read: the requested datasets
//! ([`parse_datasets`]), the roots searched for them ([`default_fallback_roots`],
//! [`locate_dataset`]) and the seeded subsets of a configuration's sizes ([`load_split`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cpflow::datasets::{
    Bsds300Config, Matrix, Split, TabularDataset, find_images_archive, layout, load_bsds300,
    load_tabular,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index::sample;

use crate::tabular_config::TabularBenchConfig;

/// `<repository>/../shared/data` (the project's read-only data, which holds the BSDS300
/// images) and `../shared/data` relative to the working directory, when they exist, each
/// once, as absolute paths without `..` (run from the repository's root, they are the same
/// folder).
pub fn default_fallback_roots() -> Vec<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut roots: Vec<PathBuf> = Vec::new();
    for p in [
        repo.join("..").join("shared").join("data"),
        PathBuf::from("../shared/data"),
    ] {
        if let Ok(p) = p.canonicalize()
            && p.is_dir()
            && !roots.contains(&p)
        {
            roots.push(p);
        }
    }
    roots
}

/// Parses a comma-separated list of dataset names (`all` = the five).
pub fn parse_datasets(list: &str) -> Result<Vec<TabularDataset>> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name.eq_ignore_ascii_case("all") {
            out.extend(TabularDataset::ALL);
            continue;
        }
        let ds = TabularDataset::from_name(&name.to_ascii_lowercase()).with_context(|| {
            format!("unknown dataset {name:?}: use power, gas, hepmass, miniboone, bsds300 or all")
        })?;
        out.push(ds);
    }
    out.dedup();
    anyhow::ensure!(!out.is_empty(), "no dataset requested");
    Ok(out)
}

/// Whether `root` holds the files the loader of `ds` reads.
pub fn dataset_present(ds: TabularDataset, root: &Path) -> bool {
    match ds {
        TabularDataset::Power => root.join(layout::POWER).is_file(),
        TabularDataset::Gas => root.join(layout::GAS_TXT).is_file(),
        TabularDataset::Hepmass => {
            root.join(layout::HEPMASS_TRAIN).is_file() && root.join(layout::HEPMASS_TEST).is_file()
        }
        TabularDataset::Miniboone => root.join(layout::MINIBOONE).is_file(),
        TabularDataset::Bsds300 => find_images_archive(root).is_some(),
    }
}

/// The first root (the data directory, then the fallbacks) that holds `ds`, or the message
/// telling the user how to fetch it.
pub fn locate_dataset(
    ds: TabularDataset,
    data_dir: &Path,
    fallbacks: &[PathBuf],
) -> std::result::Result<PathBuf, String> {
    std::iter::once(data_dir)
        .chain(fallbacks.iter().map(PathBuf::as_path))
        .find(|r| dataset_present(ds, r))
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            // Each folder once (the data directory may be one of the fallbacks).
            let same = |a: &Path, b: &Path| {
                a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
            };
            let mut roots: Vec<&Path> = vec![data_dir];
            for p in fallbacks {
                if !roots.iter().any(|r| same(r, p)) {
                    roots.push(p);
                }
            }
            let searched: Vec<String> = roots.iter().map(|p| p.display().to_string()).collect();
            format!(
                "{ds}: not found (searched {}); fetch it with `cargo xtask download {ds}` \
                 (or pass --data-dir)",
                searched.join(", ")
            )
        })
}

/// A seeded random subset of at most `max` rows (all rows, in order, when `max` is `None` or
/// not smaller than the row count).
pub fn subsample_rows(m: &Matrix<f32>, max: Option<usize>, seed: u64) -> Result<Matrix<f32>> {
    let n = m.rows();
    let Some(k) = max.filter(|&k| k < n) else {
        return Ok(m.clone());
    };
    let mut idx = sample(&mut StdRng::seed_from_u64(seed), n, k).into_vec();
    idx.sort_unstable();
    let data: Vec<f32> = idx.iter().flat_map(|&i| m.row(i).iter().copied()).collect();
    Ok(Matrix::new(k, m.cols(), data)?)
}

/// Loads `ds` from `root` with the sizes of `cfg` (BSDS300 is rebuilt from the images with
/// exactly those sizes; the others are loaded whole and subsampled).
pub fn load_split(ds: TabularDataset, root: &Path, cfg: &TabularBenchConfig) -> Result<Split> {
    let split = match ds {
        TabularDataset::Bsds300 => {
            let (tr, va, te) = ds.maf_sizes();
            let bcfg = Bsds300Config {
                n_train: cfg.max_train.unwrap_or(tr).min(tr),
                n_val: cfg.max_val.unwrap_or(va).min(va),
                n_test: cfg.max_test.unwrap_or(te).min(te),
                max_train_images: cfg.bsds300_max_images,
                max_test_images: cfg.bsds300_max_images,
                seed: cfg.seed,
            };
            load_bsds300(root, &bcfg)?
        }
        other => load_tabular(other, root)?,
    };
    Ok(Split {
        train: subsample_rows(&split.train, cfg.max_train, cfg.seed ^ 0x11)?,
        val: subsample_rows(&split.val, cfg.max_val, cfg.seed ^ 0x22)?,
        test: subsample_rows(&split.test, cfg.max_test, cfg.seed ^ 0x33)?,
    })
}
