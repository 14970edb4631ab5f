//! Paper Fig. 2 on CPU: peak memory of one train step (forward + backward) against the number
//! of CG iterations, forced with `atol = rtol = 0` and `max_iters = k`, for
//! - the CG surrogate (`Flow::surrogate_loss`: CG on detached Hessian-vector products, one
//!   tracked product at the end): memory should not grow with `k`;
//! - back-propagation through the estimator: the same surrogate with `u = CG_k(H, v)` computed
//!   by an unrolled CG on **tracked** products (`CpFlowBlock::tracked_operator`, step sizes
//!   as tensors), so the graph of every iteration is kept for the backward pass.
//!
//! Memory is the peak of live heap bytes (counting global allocator) above the bytes live
//! before the step. Writes `<out>.json`, `<out>.md` and `<out>.png`.
//!
//! ```text
//! target/release/memory_figure --dim 43 --out docs/results/memory-cg-iterations
//! ```

use std::path::PathBuf;

use anyhow::Result;
use benchmarks::gaussian_mixture;
use benchmarks::memory::PeakMeter;
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use cpflow::plot::{Figure, LineSeries, line_chart_png};
use cpflow::{
    FloatType, Flow, FlowConfig, HessianOperator, Layer, PotentialConfig, SurrogateParams,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

#[global_allocator]
static ALLOC: benchmarks::memory::CountingAlloc = benchmarks::memory::CountingAlloc;

#[derive(Parser, Debug)]
#[command(about = "Peak train-step memory against forced CG iterations (paper Fig. 2)")]
struct Args {
    /// Data dimension.
    #[arg(long, default_value_t = 43)]
    dim: usize,
    /// Batch size.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Forced CG iteration counts.
    #[arg(long, value_delimiter = ',', default_value = "5,10,20,40")]
    iters: Vec<usize>,
    /// Use f32 (CG on an untrained model then meets f32 round-off after ~10 iterations and
    /// cannot be forced further; the default f64 can).
    #[arg(long)]
    f32: bool,
    /// Output path without extension (the results page `docs/results/memory-cg-iterations` is
    /// written only when named here).
    #[arg(long, default_value = "target/memory-cg-iterations")]
    out: PathBuf,
}

/// Unrolled CG from 0 on a tracked operator: `k` iterations, step sizes as `(B, 1)` tensors.
fn unrolled_cg(op: &HessianOperator, v: &Tensor, k: usize) -> Result<Tensor> {
    let mut x = v.zeros_like()?;
    let mut r = v.clone();
    let mut p = v.clone();
    let mut rr = r.sqr()?.sum_keepdim(1)?;
    for _ in 0..k {
        let hp = op.apply(&p)?;
        // A tiny shift keeps 0/0 out of converged rows (memory is what is measured here).
        let php = (&p * &hp)?.sum_keepdim(1)?.affine(1.0, 1e-30)?;
        let alpha = (&rr / php)?;
        x = (x + p.broadcast_mul(&alpha)?)?;
        r = (r - hp.broadcast_mul(&alpha)?)?;
        let rr_new = r.sqr()?.sum_keepdim(1)?;
        let beta = (&rr_new / rr.affine(1.0, 1e-30)?)?;
        p = (&r + p.broadcast_mul(&beta)?)?;
        rr = rr_new;
    }
    Ok(x)
}

/// One forward + backward of the surrogate with back-propagation through `k` CG iterations.
fn unrolled_step(flow: &Flow, x: &Tensor, k: usize, rng: &mut StdRng) -> Result<()> {
    let mut h = x.clone();
    let mut ld: Option<Tensor> = None;
    let add = |a: Option<Tensor>, t: Tensor| -> Result<Option<Tensor>> {
        Ok(Some(match a {
            Some(a) => a.broadcast_add(&t)?,
            None => t,
        }))
    };
    for l in flow.layers() {
        h = match l {
            Layer::ActNorm(a) => {
                let (y, l) = a.forward(&h)?;
                ld = add(ld, l)?;
                y
            }
            Layer::Cpf(b) => {
                let (z, op) = b.tracked_operator(&h, None)?;
                let (n, d) = h.dims2()?;
                let v: Vec<f32> = (0..n * d)
                    .map(|_| {
                        if rand::Rng::random::<bool>(rng) {
                            1.0
                        } else {
                            -1.0
                        }
                    })
                    .collect();
                let v = Tensor::from_vec(v, (n, d), h.device())?.to_dtype(h.dtype())?;
                let u = unrolled_cg(&op, &v, k)?;
                let s = (op.apply(&u)? * &v)?.sum(1)?;
                ld = add(ld, s)?;
                z
            }
        };
    }
    let mut lp = flow.prior().log_prob(&h)?;
    if let Some(ld) = ld {
        lp = lp.broadcast_add(&ld)?;
    }
    let loss = lp.mean_all()?.neg()?;
    let grads = loss.backward()?;
    drop(grads);
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    // SAFETY: no thread has been spawned yet (argument parsing spawns none): nothing
    // else reads or writes the environment.
    unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    // The measured work runs on rayon's pool, as in the `cpflow` binary.
    cpflow::cpu_threads::run_on_pool(move || -> Result<()> {
        let dev = Device::Cpu;
        let (b, d) = (args.batch, args.dim);
        let mut rng = StdRng::seed_from_u64(0);
        let xs = gaussian_mixture(b, d, 8, &mut rng);
        let (dtype, float) = if args.f32 {
            (DType::F32, FloatType::F32)
        } else {
            (DType::F64, FloatType::F64)
        };
        let x = Tensor::from_vec(xs, (b, d), &dev)?.to_dtype(dtype)?;
        let pot = PotentialConfig::Icnn2(icnn::Icnn2Config {
            dim: d,
            ..Default::default()
        });
        let flow = Flow::new(FlowConfig::tabular(d, 1, pot).with_float(float), &dev)?;
        flow.initialize(&x)?;
        // Warm-up of both paths (lazy allocations, thread pools).
        let warm = SurrogateParams {
            cg_atol: 0.0,
            cg_rtol: 0.0,
            cg_max_iters: Some(2),
            ..Default::default()
        };
        drop(flow.surrogate_loss(&x, &warm, &mut rng)?.loss.backward()?);
        unrolled_step(&flow, &x, 2, &mut rng)?;

        let mut rows = Vec::new();
        for &k in &args.iters {
            let params = SurrogateParams {
                cg_atol: 0.0,
                cg_rtol: 0.0,
                cg_max_iters: Some(k),
                ..Default::default()
            };
            let meter = PeakMeter::start();
            let out = flow.surrogate_loss(&x, &params, &mut rng)?;
            let cg_mean = out.cg.mean_iterations();
            drop(out.loss.backward()?);
            drop(out);
            let surrogate_mib = meter.alloc_mib();

            let meter = PeakMeter::start();
            unrolled_step(&flow, &x, k, &mut rng)?;
            let unrolled_mib = meter.alloc_mib();
            eprintln!(
                "k = {k}: surrogate {surrogate_mib:.1} MiB (CG its {cg_mean:.1}), unrolled {unrolled_mib:.1} MiB"
            );
            rows.push(json!({
                "cg_iterations": k,
                "surrogate_cg_iterations_mean": cg_mean,
                "surrogate_peak_mib": surrogate_mib,
                "backprop_through_cg_peak_mib": unrolled_mib,
            }));
        }
        let get = |r: &serde_json::Value, key: &str| r[key].as_f64().unwrap_or(f64::NAN);
        let sur: Vec<[f64; 2]> = rows
            .iter()
            .map(|r| [get(r, "cg_iterations"), get(r, "surrogate_peak_mib")])
            .collect();
        let unr: Vec<[f64; 2]> = rows
            .iter()
            .map(|r| {
                [
                    get(r, "cg_iterations"),
                    get(r, "backprop_through_cg_peak_mib"),
                ]
            })
            .collect();
        let (smin, smax) = sur.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| {
            (a.min(p[1]), b.max(p[1]))
        });
        let spread = (smax - smin) / smin;
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        if let Some(dir) = args.out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let doc = json!({
            "command": command,
            "config": {"dim": d, "batch": b, "model": "Icnn2 width 64 depth 10, [AN, CPF, AN]", "dtype": format!("{dtype:?}")},
            "rows": rows,
            "surrogate_relative_spread": spread,
        });
        std::fs::write(
            args.out.with_extension("json"),
            serde_json::to_string_pretty(&doc)?,
        )?;
        let png = args.out.with_extension("png");
        line_chart_png(
            &png,
            &[
                LineSeries::solid(sur.clone(), (31, 119, 180)),
                LineSeries::dashed(unr.clone(), (214, 39, 40)),
            ],
            None,
            Figure::new(640)
                .title(format!(
                    "Train step, d = {d}: surrogate (solid), backprop thru CG (dashed)"
                ))
                .labels("CG iterations", "peak MiB above baseline"),
        )?;
        let mut md = format!(
            "# Peak memory of a train step against CG iterations (paper Fig. 2, CPU)\n\n\
         Command: `{command}`  \nModel: Icnn2 width 64 depth 10, `[AN, CPF, AN]`, {dtype:?}, \
         d = {d}, batch {b}; CG forced to k iterations (atol = rtol = 0, max_iters = k). Peak \
         live heap bytes (counting allocator) above the bytes live before the step, forward + \
         backward.\n\n| CG iterations | CG surrogate MiB | backprop through CG MiB |\n|---|---|---|\n"
        );
        for (s, u) in sur.iter().zip(&unr) {
            md.push_str(&format!("| {} | {:.1} | {:.1} |\n", s[0], s[1], u[1]));
        }
        md.push_str(&format!(
            "\nSurrogate spread (max − min)/min = {:.1}% (target ≤ 10%). Figure: `{}`.\n",
            100.0 * spread,
            png.display()
        ));
        std::fs::write(args.out.with_extension("md"), &md)?;
        println!("{md}");
        Ok(())
    })
}
