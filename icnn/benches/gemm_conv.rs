//! candle's CPU `conv2d` / `conv_transpose2d` against `icnn::gemm_conv` (im2col + one large
//! matrix product) on the layers of the Frey-Faces VAE (batch 100, 5×5 kernels, 28×20 images):
//! forward, and forward + backward (gradients w.r.t. input and kernel of `sum(out ⊙ r)`),
//! f64 and f32. Prints a table of median milliseconds per call.
//!
//! Run (2 threads for the matrix products, element-wise ops inline as in cpflow binaries):
//! `cargo bench -p icnn --bench gemm_conv --no-run`, then run the printed binary with
//! `CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=2 target/release/deps/gemm_conv-<hash> [filter]`
//! (or `CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=2 cargo bench -p icnn --bench gemm_conv`).
//! An optional argument keeps only the rows whose label contains it (e.g. `F32`, `(c)`);
//! `--skip-candle` times only the gemm path (for profiling).

use candle_core::{DType, Device, Tensor, Var};
use icnn::gemm_conv::{conv_transpose2d_gemm, conv2d_gemm};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use std::time::{Duration, Instant};

const BATCH: usize = 100;

#[derive(Clone, Copy)]
enum Kind {
    Conv,
    /// Transposed convolution with this output padding.
    Transposed(usize),
}

#[derive(Clone, Copy)]
struct Layer {
    label: &'static str,
    kind: Kind,
    c_in: usize,
    c_out: usize,
    hw: (usize, usize),
    k: usize,
    stride: usize,
    padding: usize,
}

const LAYERS: [Layer; 4] = [
    Layer {
        label: "(a) conv 32→32 s2 28×20",
        kind: Kind::Conv,
        c_in: 32,
        c_out: 32,
        hw: (28, 20),
        k: 5,
        stride: 2,
        padding: 2,
    },
    Layer {
        label: "(b) convT 32→32 s2 op1 14×10",
        kind: Kind::Transposed(1),
        c_in: 32,
        c_out: 32,
        hw: (14, 10),
        k: 5,
        stride: 2,
        padding: 2,
    },
    Layer {
        label: "(c) conv 32→256 s1 28×20",
        kind: Kind::Conv,
        c_in: 32,
        c_out: 256,
        hw: (28, 20),
        k: 5,
        stride: 1,
        padding: 2,
    },
    Layer {
        label: "(d) convT 32→32 s1 28×20",
        kind: Kind::Transposed(0),
        c_in: 32,
        c_out: 32,
        hw: (28, 20),
        k: 5,
        stride: 1,
        padding: 2,
    },
];

fn randn(rng: &mut StdRng, shape: &[usize], dtype: DType) -> candle_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
}

fn run(layer: &Layer, gemm: bool, x: &Tensor, k: &Tensor) -> candle_core::Result<Tensor> {
    let (p, s) = (layer.padding, layer.stride);
    let out = match (layer.kind, gemm) {
        (Kind::Conv, false) => x.conv2d(k, p, s, 1, 1)?,
        (Kind::Conv, true) => conv2d_gemm(x, k, p, s).map_err(candle_core::Error::wrap)?,
        (Kind::Transposed(op), false) => x.conv_transpose2d(k, p, op, s, 1)?,
        (Kind::Transposed(op), true) => {
            conv_transpose2d_gemm(x, k, p, op, s).map_err(candle_core::Error::wrap)?
        }
    };
    Ok(out)
}

/// Median seconds per call of each closure, calling them in turn (so both see the same
/// machine load) for at least 3 rounds and about `budget` of wall time, after one warm-up
/// round. A `None` closure is skipped and reported as NaN.
fn median_times<const N: usize>(
    budget: Duration,
    fs: &mut [Option<&mut dyn FnMut() -> candle_core::Result<()>>; N],
) -> [f64; N] {
    let mut times = [(); N].map(|_| Vec::new());
    let start = Instant::now();
    let mut round = 0;
    while round < 4 || (start.elapsed() < budget && round < 50) {
        for (f, t) in fs.iter_mut().zip(times.iter_mut()) {
            if let Some(f) = f {
                let t0 = Instant::now();
                f().expect("timed call failed");
                if round > 0 {
                    t.push(t0.elapsed().as_secs_f64());
                }
            }
        }
        round += 1;
    }
    times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t.get(t.len() / 2).copied().unwrap_or(f64::NAN)
    })
}

fn main() -> candle_core::Result<()> {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let budget = Duration::from_secs(6);
    // `--skip-candle`: time only the gemm path (for profiling).
    let skip_candle = std::env::args().any(|a| a == "--skip-candle");
    println!(
        "batch {BATCH}, RAYON_NUM_THREADS={:?}, CANDLE_NUM_THREADS={:?}; median ms per call \
         (candle and gemm calls alternate)",
        std::env::var("RAYON_NUM_THREADS").ok(),
        std::env::var("CANDLE_NUM_THREADS").ok()
    );
    println!(
        "| layer | dtype | candle fwd | gemm fwd | speed-up | candle fwd+bwd | gemm fwd+bwd | speed-up |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rng = StdRng::seed_from_u64(0);
    for dtype in [DType::F64, DType::F32] {
        for layer in &LAYERS {
            let label = format!("{} {dtype:?}", layer.label);
            if !label.contains(&filter) {
                continue;
            }
            let (kh, kw) = (layer.k, layer.k);
            let k_shape = match layer.kind {
                Kind::Conv => [layer.c_out, layer.c_in, kh, kw],
                Kind::Transposed(_) => [layer.c_in, layer.c_out, kh, kw],
            };
            let x = Var::from_tensor(&randn(
                &mut rng,
                &[BATCH, layer.c_in, layer.hw.0, layer.hw.1],
                dtype,
            )?)?;
            let k = Var::from_tensor(&randn(&mut rng, &k_shape, dtype)?)?;
            let out_dims = run(layer, false, &x, &k)?.dims().to_vec();
            let r = randn(&mut rng, &out_dims, dtype)?;
            let fwd = |gemm: bool| {
                let (x, k) = (&x, &k);
                move || run(layer, gemm, x, k).map(|_| ())
            };
            let fwd_bwd = |gemm: bool| {
                let (x, k, r) = (&x, &k, &r);
                move || {
                    let grads = (run(layer, gemm, x, k)? * r)?.sum_all()?.backward()?;
                    assert!(grads.get(x).is_some() && grads.get(k).is_some());
                    Ok(())
                }
            };
            let (mut f0, mut f1) = (fwd(false), fwd(true));
            let [candle_fwd, gemm_fwd] = median_times(
                budget,
                &mut [(!skip_candle).then_some(&mut f0 as _), Some(&mut f1 as _)],
            );
            let (mut b0, mut b1) = (fwd_bwd(false), fwd_bwd(true));
            let [candle_bwd, gemm_bwd] = median_times(
                budget,
                &mut [(!skip_candle).then_some(&mut b0 as _), Some(&mut b1 as _)],
            );
            let ms = [candle_fwd, gemm_fwd, candle_bwd, gemm_bwd].map(|t| 1e3 * t);
            println!(
                "| {} | {dtype:?} | {:.1} | {:.1} | {:.1}× | {:.1} | {:.1} | {:.1}× |",
                layer.label,
                ms[0],
                ms[1],
                ms[0] / ms[1],
                ms[2],
                ms[3],
                ms[2] / ms[3]
            );
        }
    }
    Ok(())
}
