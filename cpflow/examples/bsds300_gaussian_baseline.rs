//! The full-covariance Gaussian fitted to the rebuilt BSDS300 training patches
//! ([`GaussianBaseline`]), scored on every split: a check of the rebuilt data against MAF's
//! file, on which the same model scores a test NLL of −96.67 ± 0.25 nats (MAF, Table 1;
//! [`TabularDataset::maf_gaussian_test_nll`]), and a measure of how far the test images sit
//! from the train images that the validation patches come from.
//!
//! ```text
//! cargo run --release -p cpflow --example bsds300_gaussian_baseline -- [ROOT] [seed ...]
//! ```
//! `ROOT`: the data root holding `bsds300/BSDS300-images.tar.gz` (default `../shared/data`);
//! `seed`s: patch draws (default 0, the benchmarks'). Prints a markdown table of the mean
//! `−log N(x; μ, Σ)` per split ± 2 standard errors, at MAF's sizes (1,000,000 / 50,000 /
//! 250,000 patches).
use std::path::PathBuf;

use cpflow::datasets::{Bsds300Config, GaussianBaseline, TabularDataset, load_bsds300};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let root = a
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let mut seeds = a[2.min(a.len())..]
        .iter()
        .map(|s| s.parse::<u64>())
        .collect::<Result<Vec<_>, _>>()?;
    if seeds.is_empty() {
        seeds.push(0);
    }
    println!(
        "| seed | train NLL ± 2 s.e. | validation NLL ± 2 s.e. | test NLL ± 2 s.e. |\n|---|---|---|---|"
    );
    for seed in seeds {
        let split = load_bsds300(
            &root,
            &Bsds300Config {
                seed,
                ..Bsds300Config::maf()
            },
        )?;
        let g = GaussianBaseline::fit(&split.train)?;
        let mut cells = Vec::new();
        for rows in [&split.train, &split.val, &split.test] {
            let s = g.mean_nll(rows)?;
            cells.push(format!(
                "{:.3} ± {:.3}",
                s.mean,
                2.0 * s.std_err.unwrap_or(0.0)
            ));
        }
        println!("| {seed} | {} |", cells.join(" | "));
    }
    let (maf, maf_2se) = TabularDataset::Bsds300.maf_gaussian_test_nll();
    println!("\nMAF's file (MAF, Table 1): test {maf:.2} ± {maf_2se:.2} (2 s.e.).");
    Ok(())
}
