//! Where a tabular train step's time goes, on any device: the reference's model (`Icnn2`
//! width 64 depth 10, one block between ActNorms, f32, batch 1,024), timed piece by piece
//! with a device synchronisation around each (median of `--reps`): the floor of one small
//! kernel and of one host round trip, a matrix product of the layer size, the ICNN
//! linearisation (forward pass and `∇ₓF`), one Hessian-vector product, the surrogate loss
//! (forward, Rademacher probes, CG) with its CG iterations, its backward pass, and a whole
//! train step (loss, backward, Adam). On a GPU the pieces say whether a step is bound by
//! kernel launches (time ≈ kernels × the one-kernel floor) or by arithmetic. Prints JSON.
//!
//! ```text
//! target/release/step_profile --device cuda --dims 6,43,63 --reps 20
//! ```

use anyhow::{Context, Result};
use benchmarks::{Stopwatch, gaussian_mixture, median};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use cpflow::{
    Adam, AdamParams, Flow, FlowConfig, FlowRng, Layer, PotentialConfig, SurrogateParams,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: cpflow::allocator::MiMalloc = cpflow::allocator::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Per-piece timings of a CP-Flow tabular train step (prints JSON)")]
struct Args {
    /// Data dimensions.
    #[arg(long, value_delimiter = ',', default_value = "6,43,63")]
    dims: Vec<usize>,
    /// cpu, cuda (cpflow::open_cuda_device) or cuda-plain (candle's Device::new_cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Timed repetitions of each piece (the median is reported).
    #[arg(long, default_value_t = 20)]
    reps: usize,
}

/// Median seconds of `reps` runs of `f`, each between device synchronisations, after two
/// untimed runs.
fn time<T>(dev: &Device, reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    for _ in 0..2 {
        f()?;
    }
    dev.synchronize()?;
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let sw = Stopwatch::start();
        f()?;
        dev.synchronize()?;
        ts.push(sw.seconds());
    }
    Ok(median(&ts))
}

fn profile(d: usize, dev: &Device, reps: usize) -> Result<Value> {
    let b = 1024;
    let mut rng = StdRng::seed_from_u64(d as u64);
    let x = Tensor::from_vec(gaussian_mixture(b, d, 8, &mut rng), (b, d), &Device::Cpu)?
        .to_dtype(DType::F32)?
        .to_device(dev)?;
    let pot = PotentialConfig::Icnn2(icnn::Icnn2Config {
        dim: d,
        width: 64,
        depth: 10,
        ..Default::default()
    });
    let flow = Flow::new(FlowConfig::tabular(d, 1, pot).with_init_seed(0), dev)?;
    flow.initialize(&x)?;
    let block = flow
        .layers()
        .iter()
        .find_map(|l| match l {
            Layer::Cpf(b) => Some(b),
            Layer::ActNorm(_) => None,
        })
        .context("the flow has no CP-Flow block")?;

    let h = Tensor::from_vec(vec![0.5f32; b * 64], (b, 64), dev)?;
    let w = Tensor::from_vec(vec![0.01f32; 64 * 64], (64, 64), dev)?;
    let one_kernel = time(dev, reps, || Ok((&h + 1.0)?))?;
    let matmul = time(dev, reps, || Ok(h.matmul(&w)?))?;
    let round_trip = time(dev, reps, || Ok(h.sum_all()?.to_scalar::<f32>()?))?;

    let linearize = time(dev, reps, || Ok(block.tracked_operator(&x, None)?))?;
    let (_, op) = block.tracked_operator(&x, None)?;
    let v = Tensor::from_vec(vec![1.0f32; b * d], (b, d), dev)?;
    let hvp = time(dev, reps, || Ok(op.apply(&v)?.detach()))?;

    let params = SurrogateParams::default();
    let mut frng = FlowRng::seed_from_u64(1);
    let mut cg_iters = Vec::new();
    let surrogate = time(dev, reps, || {
        let out = flow.surrogate_loss(&x, &params, &mut frng)?;
        cg_iters.push(out.cg.mean_iterations());
        Ok(out)
    })?;
    let out = flow.surrogate_loss(&x, &params, &mut frng)?;
    let backward = time(dev, reps, || Ok(out.loss.backward()?))?;

    let vars = flow.named_vars();
    let mut adam = Adam::new(vars, AdamParams::default())?;
    let step = time(dev, reps, || {
        let out = flow.surrogate_loss(&x, &params, &mut frng)?;
        let grads = out.loss.backward()?;
        adam.step(&grads)?;
        Ok(())
    })?;
    let grads = out.loss.backward()?;
    let adam_only = time(dev, reps, || Ok(adam.step(&grads)?))?;

    Ok(json!({
        "d": d,
        "seconds": {
            "one_small_kernel": one_kernel,
            "matmul_1024x64x64": matmul,
            "host_round_trip": round_trip,
            "linearize": linearize,
            "hessian_vector_product": hvp,
            "surrogate_loss": surrogate,
            "surrogate_backward": backward,
            "adam_step": adam_only,
            "train_step": step,
        },
        "cg_iterations_mean": cg_iters.iter().sum::<f64>() / cg_iters.len().max(1) as f64,
    }))
}

fn main() -> Result<()> {
    // SAFETY: first thing in `main`, before any thread is spawned.
    unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    cpflow::cpu_threads::run_on_pool(move || -> Result<()> {
        let args = Args::parse();
        let dev = benchmarks::open_device(&args.device)?;
        let sw = Stopwatch::start();
        let warm = (Tensor::ones((4, 4), DType::F32, &dev)? + 1.0)?.sum_all()?;
        warm.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let first_op_s = sw.seconds();
        let mut rows = Vec::new();
        for &d in &args.dims {
            let sw = Stopwatch::start();
            let row = profile(d, &dev, args.reps)?;
            eprintln!("d = {d}: {:.1} s", sw.seconds());
            rows.push(row);
        }
        let out = json!({
            "benchmark": "cpflow tabular train step, piece by piece (Icnn2 64x10, f32, batch 1024)",
            "device": args.device,
            "first_op_s": first_op_s,
            "reps": args.reps,
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(())
    })
}
