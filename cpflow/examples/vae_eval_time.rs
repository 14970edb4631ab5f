//! Time the posterior's exact and SLQ `log q` at the reference size (d = 64, PICNN(64, 5) × 4,
//! f64) on `n` rows: `cargo run --release -p cpflow --example vae_eval_time -- [n]`.
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use cpflow::SlqConfig;
use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
use rand::SeedableRng;

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in `main`, before any thread is spawned: nothing else reads or
    // writes the environment.
    unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    let n: usize = std::env::args().nth(1).map_or(Ok(200), |s| s.parse())?;
    let dev = Device::Cpu;
    let q = AmortizedPosterior::new(
        &VarMap::new(),
        "q",
        &PosteriorConfig::reference_vae(64, 256),
        &dev,
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mu = Tensor::randn(0f64, 1.0, (n, 64), &dev)?;
    let ls = Tensor::zeros((n, 64), DType::F64, &dev)?;
    let scale: f64 = std::env::var("HSCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let h = Tensor::randn(0f64, scale, (n, 256), &dev)?;
    q.initialize(&mu, &ls, &h, &mut rng)?;
    if std::env::var("SURR").is_ok() {
        let ls2 = candle_core::Var::from_tensor(&ls)?;
        let s = q.sample_with_surrogate(
            &mu,
            ls2.as_tensor(),
            &h,
            &cpflow::posterior::reference_vae_surrogate_params(),
            &mut rng,
        )?;
        let _ = s.log_q_surrogate.sum_all()?.backward()?;
        println!("surrogate step done");
    }
    for _ in 0..2 {
        let t = Instant::now();
        let s = q.sample_with_log_q_exact(&mu, &ls, &h, &mut rng)?;
        let _ = s.log_q.sum_all()?.to_scalar::<f64>()?;
        println!("exact log q, {n} rows: {:.3} s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        let s = q.sample_with_log_q_slq(&mu, &ls, &h, &SlqConfig::default(), &mut rng)?;
        let _ = s.log_q.sum_all()?.to_scalar::<f64>()?;
        println!("SLQ log q, {n} rows: {:.3} s", t.elapsed().as_secs_f64());
    }
    Ok(())
}
