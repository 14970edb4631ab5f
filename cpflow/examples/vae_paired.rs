//! Paired comparison of two finished VAE runs on the same test images: recomputes each run's
//! test −ELBO (and, with `K > 0`, the importance-sampled NLL on the first `n` images) exactly
//! as `run_vae` scored it (same seeds, so the means equal the runs' `report.json`), then
//! prints the mean per-image difference (b − a) with its paired standard error.
//!
//! `cargo run --release -p cpflow --example vae_paired -- runs/a runs/b [K n]`
use candle_core::Device;
use cpflow::vae::{MeanWithError, VaeTestParams, load_vae, load_vae_data, score_vae_test};

/// The run's test scores per image: its own settings, with `k` importance samples on the
/// first `n` images.
fn scores(dir: &str, k: usize, n: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (vae, cfg) = load_vae(dir.as_ref(), &Device::Cpu)?;
    let data = load_vae_data(cfg.data.dataset, &cfg.data.root, cfg.data.seed)?;
    let params = VaeTestParams {
        is_samples: k,
        is_images: Some(n),
        ..VaeTestParams::of_run(&cfg)
    };
    let s = score_vae_test(&vae, &data, &params, |_| Ok(()))?;
    Ok((s.neg_elbo_per_image, s.is_nll_per_image))
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in `main`, before any thread is spawned: nothing else reads or
    // writes the environment.
    unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(a.len() >= 3, "usage: vae_paired DIR_A DIR_B [K n]");
    let k: usize = a.get(3).map_or(Ok(0), |s| s.parse())?;
    let n: usize = a.get(4).map_or(Ok(200), |s| s.parse())?;
    let (ea, ia) = scores(&a[1], k, n)?;
    let (eb, ib) = scores(&a[2], k, n)?;
    for (what, x, y) in [("test −ELBO", &ea, &eb), ("test IS-NLL", &ia, &ib)] {
        if x.is_empty() {
            continue;
        }
        let d: Vec<f64> = x.iter().zip(y).map(|(p, q)| q - p).collect();
        let (ma, mb, md) = (
            MeanWithError::of(x),
            MeanWithError::of(y),
            MeanWithError::of(&d),
        );
        println!(
            "{what} over {} images (nats): a {:.3} ± {:.3}, b {:.3} ± {:.3}, b − a {:.3} ± {:.3} (paired), b better on {:.1}% of images",
            d.len(),
            ma.mean,
            ma.std_err,
            mb.mean,
            mb.std_err,
            md.mean,
            md.std_err,
            100.0 * d.iter().filter(|v| **v < 0.0).count() as f64 / d.len() as f64
        );
    }
    Ok(())
}
