//! Time VAE training steps on Frey Faces (batch 100) for a given width and float type:
//! `cargo run --release -p cpflow --example vae_step_time -- <channels> <head> <f32|f64> <gaussian|cp-flow> [steps]`.
use std::time::Instant;

use candle_core::Device;
use cpflow::config::FloatType;
use cpflow::vae::{
    PosteriorKind, Vae, VaeArchitecture, VaeModelConfig, VaeSplit, load_vae_data, make_batch,
};
use rand::SeedableRng;

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in `main`, before any thread is spawned: nothing else reads or
    // writes the environment.
    unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    let a: Vec<String> = std::env::args().collect();
    let channels: usize = a.get(1).map_or(Ok(32), |s| s.parse())?;
    let head: usize = a.get(2).map_or(Ok(256), |s| s.parse())?;
    let float = if a.get(3).is_some_and(|s| s == "f32") {
        FloatType::F32
    } else {
        FloatType::F64
    };
    let posterior = if a.get(4).is_some_and(|s| s == "gaussian") {
        PosteriorKind::Gaussian
    } else {
        PosteriorKind::CpFlow
    };
    let steps: usize = a.get(5).map_or(Ok(3), |s| s.parse())?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let data = load_vae_data(cpflow::vae::VaeDatasetName::FreyFaces, &root, 123)?;
    let cfg = VaeModelConfig {
        architecture: VaeArchitecture {
            channels,
            feature_dim: 256,
            head_channels: head,
        },
        posterior,
        network_float: float,
        ..Default::default()
    };
    let vae = Vae::new(
        &cfg,
        data.likelihood,
        (data.height, data.width),
        &Device::Cpu,
    )?;
    println!("parameters: {}", vae.num_parameters());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let idx: Vec<usize> = (0..100).collect();
    let b = make_batch(&vae, &data, VaeSplit::Train, &idx, &mut rng)?;
    vae.initialize(&b, &mut rng)?;
    let mut opt = cpflow::vae::Adamax::new(vae.trainable_named_vars(), Default::default())?;
    let cg = cpflow::posterior::reference_vae_surrogate_params();
    for s in 0..steps + 1 {
        let t0 = Instant::now();
        let terms = vae.train_terms(&b, 0.01, &cg, &mut rng)?;
        let t1 = Instant::now();
        let g = terms.loss.backward()?;
        let t2 = Instant::now();
        opt.step(&g)?;
        let t3 = Instant::now();
        println!(
            "step {s}: loss {:.2} fwd {:.3}s bwd {:.3}s opt {:.3}s CG {:.2}",
            terms
                .loss
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?,
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            terms.cg.mean_iterations()
        );
    }
    {
        let e = vae.encode(&b.x)?;
        let (mu, ls, h) = (e.mu.detach(), e.log_sigma.detach(), e.feature.detach());
        for (n, t) in [("mu", &mu), ("ls", &ls), ("h", &h)] {
            let v = t.flatten_all()?.to_vec1::<f64>()?;
            let mx = v.iter().fold(0f64, |a, b| a.max(b.abs()));
            println!("{n}: max |.| {mx:.3e}");
        }
        let t0 = Instant::now();
        let _ = vae
            .posterior()
            .sample_with_log_q_exact(&mu, &ls, &h, &mut rng)?;
        println!(
            "posterior on encoder outputs: {:.3}s",
            t0.elapsed().as_secs_f64()
        );
        let r =
            |t: &candle_core::Tensor| candle_core::Tensor::randn(0f64, 1.0, t.dims(), t.device());
        let t0 = Instant::now();
        let _ = vae.posterior().sample_with_log_q_exact(
            &r(&mu)?,
            &(r(&ls)? * 0.0)?,
            &r(&h)?,
            &mut rng,
        )?;
        println!(
            "posterior on random inputs: {:.3}s",
            t0.elapsed().as_secs_f64()
        );
    }
    for _ in 0..2 {
        let t0 = Instant::now();
        let e = vae.neg_elbo_exact(&b, &mut rng)?;
        println!(
            "neg_elbo_exact on 100: {:.3}s (mean {:.2})",
            t0.elapsed().as_secs_f64(),
            e.neg_elbo.iter().sum::<f64>() / 100.0
        );
    }
    Ok(())
}
