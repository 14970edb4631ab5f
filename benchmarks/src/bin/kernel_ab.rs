//! A/B timings of the derivative kernels changed for issue 13, on one `Icnn2` linearisation
//! (width 64, depth 10, f32), interleaved and reported as the minimum over repetitions so a
//! busy machine biases both sides alike:
//! - Hessian: `Linearization::hessian` (per-layer Jacobians, `Σ_j J_jᵀ diag(c_j) J_j`) against
//!   `hvp_many` with the identity (the former `d` forward + reverse tangent passes);
//! - HVP: the detached cache's `hvp` (host-fused element-wise kernels) against the tracked
//!   cache's `hvp` (composed candle ops; same arithmetic).
//!
//! ```text
//! target/release/kernel_ab --dim 43 --batch 1024 --hessian-rows 64 --reps 20
//! ```

use anyhow::Result;
use benchmarks::Stopwatch;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::Parser;
use icnn::{ConvexPotential, Icnn2, Icnn2Config};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// The `cpflow` binary's allocator (`cpflow::allocator`), so both measure the same code.
#[global_allocator]
static GLOBAL: cpflow::allocator::MiMalloc = cpflow::allocator::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 43)]
    dim: usize,
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Rows of the Hessian comparison (the exact evaluation uses chunks of ~2752/d rows).
    #[arg(long, default_value_t = 64)]
    hessian_rows: usize,
    #[arg(long, default_value_t = 20)]
    reps: usize,
}

fn randn(rng: &mut StdRng, r: usize, c: usize) -> Result<Tensor> {
    let v: Vec<f32> = (0..r * c).map(|_| StandardNormal.sample(rng)).collect();
    Ok(Tensor::from_vec(v, (r, c), &Device::Cpu)?)
}

fn min_time(reps: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let sw = Stopwatch::start();
        let out = f()?;
        drop(out);
        best = best.min(sw.seconds());
    }
    Ok(best)
}

fn main() -> Result<()> {
    // SAFETY: first thing in `main`, before any thread is spawned: nothing else reads or
    // writes the environment.
    let threads = unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    // The measured work runs on rayon's pool, as in the `cpflow` binary.
    cpflow::cpu_threads::run_on_pool(move || -> Result<()> {
        let args = Args::parse();
        let (d, b) = (args.dim, args.batch);
        let mut rng = StdRng::seed_from_u64(0);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = Icnn2Config {
            dim: d,
            ..Default::default()
        };
        let net = Icnn2::new(vb.pp("icnn"), &cfg, &mut rng)?;
        let x = randn(&mut rng, b, d)?;
        net.initialize(&x)?;
        let v = randn(&mut rng, b, d)?;
        let lin = net.linearize(&x)?;
        let det = lin.detach();
        let xh = x.narrow(0, 0, args.hessian_rows.min(b))?;
        let lin_h = net.linearize(&xh)?.detach();
        let rows = xh.dim(0)?;
        let eye = Tensor::eye(d, DType::F32, &Device::Cpu)?
            .unsqueeze(0)?
            .broadcast_as((rows, d, d))?
            .contiguous()?;

        // Same numbers first.
        let diff = |a: &Tensor, b: &Tensor| -> Result<f64> {
            Ok((a - b)?
                .abs()?
                .max_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?)
        };
        let hv_err = diff(&det.hvp(&v)?, &lin.hvp(&v)?)?;
        let h_err = diff(&lin_h.hessian()?, &lin_h.hvp_many(&eye)?)?;

        let (mut t_fused, mut t_composed) = (f64::MAX, f64::MAX);
        let (mut t_jac, mut t_tangent) = (f64::MAX, f64::MAX);
        for _ in 0..args.reps {
            t_fused = t_fused.min(min_time(1, || Ok(det.hvp(&v)?))?);
            t_composed = t_composed.min(min_time(1, || Ok(lin.hvp(&v)?))?);
            t_jac = t_jac.min(min_time(1, || Ok(lin_h.hessian()?))?);
            t_tangent = t_tangent.min(min_time(1, || Ok(lin_h.hvp_many(&eye)?))?);
        }
        let out = serde_json::json!({
            "dim": d, "batch": b, "hessian_rows": rows, "reps": args.reps,
            "candle_elementwise_threads": threads,
            "rayon_threads": std::env::var("RAYON_NUM_THREADS").ok(),
            "hvp_detached_fused_s": t_fused,
            "hvp_tracked_composed_s": t_composed,
            "hvp_speedup": t_composed / t_fused,
            "hvp_max_abs_diff": hv_err,
            "hessian_jacobians_s": t_jac,
            "hessian_tangent_passes_s": t_tangent,
            "hessian_speedup": t_tangent / t_jac,
            "hessian_max_abs_diff": h_err,
            "load_avg": std::fs::read_to_string("/proc/loadavg").ok(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(())
    })
}
