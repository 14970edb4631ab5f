//! Shared by the tabular and reproduction tests: a synthetic MINIBOONE file, the `tiny`
//! benchmark options and the `tiny` reproduction on that file.

use std::path::Path;

use candle_core::Device;
use cpflow::datasets::{Matrix, TabularDataset, layout, write_npy_f64};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use xtask::bench_resume::TabularResume;
use xtask::bench_tabular::BenchTabularOptions;
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
