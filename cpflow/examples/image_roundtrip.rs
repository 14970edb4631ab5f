//! Inverse of forward on real images through a trained image flow: `x → z = f(x) → f⁻¹(z)`,
//! with the per-sample convergence report of every block (issue 11's acceptance: max error
//! ≤ 1e-4 in f32, ≤ 1e-8 in f64).
//!
//! ```text
//! cargo run --release -p cpflow --example image_roundtrip -- runs/mnist-cpu/model.safetensors 64
//! ```
//! The images are the first `n` MNIST test images of `../shared/data/mnist`, dequantised with
//! a seeded uniform noise (the flow models dequantised pixels).

use anyhow::{Context, Result, bail};
use candle_core::Device;
use cpflow::FlowRng;
use cpflow::image::ImageFlow;
use cpflow::image::train::dequantize_levels;

fn main() -> Result<()> {
    // SAFETY: first thing in `main`, before any thread is spawned: nothing else reads or
    // writes the environment.
    unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .context("usage: image_roundtrip <model.safetensors> [n] [data root]")?;
    let n: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let root = args.next().unwrap_or_else(|| "../shared/data".into());
    let flow = ImageFlow::load(std::path::Path::new(&model), &Device::Cpu)?;
    let mnist = cpflow::datasets::load_mnist(std::path::Path::new(&root), 0)?;
    let d = flow.dim();
    if mnist.test.cols() != d {
        bail!(
            "the model takes {d} pixels, MNIST has {}",
            mnist.test.cols()
        );
    }
    let n = n.clamp(1, mnist.test.rows());
    let levels: Vec<u8> = mnist.test.into_data()[..n * d].to_vec();
    let mut rng = FlowRng::seed_from_u64(0);
    let x = dequantize_levels(&levels, n, d, flow.dtype(), flow.device(), &mut rng)?;
    let t = std::time::Instant::now();
    let z = flow.forward(&x)?;
    let inv = flow.inverse(&z)?;
    let secs = t.elapsed().as_secs_f64();
    let err = inv
        .x
        .to_dtype(candle_core::DType::F64)?
        .sub(&x.to_dtype(candle_core::DType::F64)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    println!(
        "{n} images, {:?}: max |x − f⁻¹(f(x))| = {err:.3e}; {} of {n} samples converged in every \
         block ({} blocks, max residual {:.2e}, max Newton iterations {}); {secs:.1} s",
        flow.float(),
        n - inv.report.num_failed(),
        inv.report.blocks.len(),
        inv.report.max_residual(),
        inv.report.max_iterations()
    );
    Ok(())
}
