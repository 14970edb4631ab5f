//! Shared by the tabular and reproduction tests: a synthetic MINIBOONE file, the `tiny`
//! benchmark options and the `tiny` reproduction on that file, and the benchmark's report
//! files as a run wrote them.

use std::path::Path;

use candle_core::Device;
use cpflow::datasets::{Matrix, TabularDataset, layout, write_npy_f64};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use xtask::bench_report::{BENCH_JSON, BENCH_MD};
use xtask::bench_resume::TabularResume;
use xtask::bench_tabular::{BenchReport, BenchTabularOptions};
use xtask::reproduce::ReproduceOptions;
use xtask::tabular_config::{ModelOverrides, TabularBenchConfig};

/// Writes a synthetic `miniboone/data.npy` (1,000 × 43, correlated, skewed columns) under
/// `root`: MAF's split gives 810 / 90 / 100 rows.
pub fn write_synthetic_miniboone(root: &Path) {
    let (n, d) = (1000, 43);
    let mut rng = StdRng::seed_from_u64(7);
    let mut data = Vec::with_capacity(n * d);
    for _ in 0..n {
        let common: f64 = rng.random::<f64>() - 0.5;
        for j in 0..d {
            let u: f64 = rng.random();
            data.push(common * (j as f64 / 10.0) + u * u + j as f64);
        }
    }
    let m = Matrix::new(n, d, data).unwrap();
    let path = root.join(layout::MINIBOONE);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, write_npy_f64(&m)).unwrap();
}

pub fn tiny_options(
    data_dir: &Path,
    out: &Path,
    datasets: Vec<TabularDataset>,
) -> BenchTabularOptions {
    BenchTabularOptions {
        datasets,
        data_dir: data_dir.to_path_buf(),
        fallback_roots: Vec::new(),
        device: Device::Cpu,
        budget: None,
        preset: TabularBenchConfig::tiny,
        val_every: None,
        cg_preconditioner: None,
        test_rows: None,
        model: ModelOverrides::default(),
        out: out.to_path_buf(),
        progress: false,
        resume: TabularResume::Start,
        interrupt: None,
    }
}

/// The `tiny` reproduction into `out` with the synthetic MINIBOONE (written under `data`) as
/// its only tabular dataset and no fallback data roots.
pub fn tiny_reproduction(data: &Path, out: &Path) -> ReproduceOptions {
    write_synthetic_miniboone(data);
    let mut opts = ReproduceOptions::tiny(out.to_path_buf(), data.to_path_buf(), Device::Cpu);
    opts.tabular.datasets = vec![TabularDataset::Miniboone];
    opts.tabular.fallback_roots = Vec::new();
    opts
}

/// A fresh data folder holding the synthetic MINIBOONE, a fresh output folder, and the `tiny`
/// options of `datasets` from the one into the other (the folders last as long as the
/// returned handles).
pub fn tiny_bench(datasets: Vec<TabularDataset>) -> (TempDir, TempDir, BenchTabularOptions) {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write_synthetic_miniboone(data.path());
    let opts = tiny_options(data.path(), out.path(), datasets);
    (data, out, opts)
}

/// `bench-tabular.md` as the last run into `out` wrote it.
pub fn bench_markdown(out: &Path) -> String {
    std::fs::read_to_string(out.join(BENCH_MD)).unwrap()
}

/// `bench-tabular.json` as the last run into `out` wrote it.
pub fn bench_json(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join(BENCH_JSON)).unwrap()).unwrap()
}

/// Asserts that no dataset of `report` ran and that the first failure's message contains
/// each of `needles`.
pub fn assert_nothing_ran_and_failure_says(report: &BenchReport, needles: &[&str]) {
    assert!(report.results.is_empty(), "{report:?}");
    let msg = &report.failed[0].message;
    for needle in needles {
        assert!(
            msg.contains(needle),
            "{needle:?} not in {:?}",
            report.failed
        );
    }
}
