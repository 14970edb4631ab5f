//! How the flow's evaluation passes split a batch into row chunks: the chunk size of the
//! exact (dense-Hessian) passes, and running the chunks in parallel on the CPU.

use candle_core::Tensor;

use super::EVAL_CHUNK;
use crate::error::Result;

/// Tangent elements (`rows · d · hidden units`) that one chunk of the exact (dense-Hessian)
/// passes may carry when its network is large (2²³: 64 MiB in f64).
const EXACT_CHUNK_TANGENTS: usize = 1 << 23;

/// Rows per chunk of the exact (dense-Hessian) passes for data dimension `d` and a network of
/// `hidden_units` units per row (`None`: not known). The Hessian recursion carries
/// `(rows, d, units)` tangents, so chunks are sized to keep those tensors cache-resident
/// rather than streaming them through memory: `2,752 / d` rows, and fewer when the tangents
/// would pass [`EXACT_CHUNK_TANGENTS`].
/// Measured (2-core CPU, f32, Icnn2 width 64 depth 10, per 1,000 points): d = 43 went from
/// 0.90 s with 1,024-row chunks to 0.47 s with 64 rows; d = 6 from 0.116 s to 0.059 s with 256.
/// Larger networks (f64, d = 2, `cpflow eval -n`, 2 threads; time, peak RSS of the process):
/// Icnn3 width 1,024 depth 40 (40,960 units), 2,048 points, two runs each: 1,024-row chunks
/// 20.8 and 12.6 s, 4.1 GB; this rule's 102 rows 9.8 and 9.4 s, 2.6 GB. Width 512 depth 20,
/// 8,192 points: 1,024 rows 5.8 s, 0.92 GB; this rule's 409 rows 4.7 s, 0.87 GB. The bound
/// changes nothing for networks of up to 3,048 units (Icnn2 width 64 depth 10 has 640, the
/// reference toy flow's Icnn3 640).
pub(crate) fn exact_chunk_rows(d: usize, hidden_units: Option<usize>) -> usize {
    let d = d.max(1);
    let by_dim = 2752 / d;
    let by_size = EXACT_CHUNK_TANGENTS / d.saturating_mul(hidden_units.unwrap_or(1).max(1));
    by_dim.min(by_size).clamp(16, EVAL_CHUNK)
}

/// Tangent elements one chunk of the exact passes may carry off the host kernels (a GPU):
/// 2²⁶ (256 MiB in f32). There the chunks run one after the other as launch-bound kernels,
/// so a batch takes as few chunks as this memory bound allows instead of cache-sized ones:
/// the reference's tabular network (640 units) at d = 63 scores 1,024 rows in one chunk
/// where the CPU takes 24.
const DEVICE_EXACT_CHUNK_TANGENTS: usize = 1 << 26;

/// Rows per chunk of the exact passes over `x`: [`exact_chunk_rows`] where the host kernels
/// run, else chunks of at most [`DEVICE_EXACT_CHUNK_TANGENTS`] tangents (16 to
/// [`EVAL_CHUNK`] rows). The results do not depend on the chunks (rows are independent).
pub(crate) fn exact_chunk_rows_for(x: &Tensor, d: usize, hidden_units: Option<usize>) -> usize {
    if icnn::takes_host_kernels(x.device()) {
        return exact_chunk_rows(d, hidden_units);
    }
    let per_row = d.max(1).saturating_mul(hidden_units.unwrap_or(1).max(1));
    (DEVICE_EXACT_CHUNK_TANGENTS / per_row).clamp(16, EVAL_CHUNK)
}

/// Rows per chunk for a pass whose results do not depend on its chunks (each row computed on
/// its own, no per-chunk randomness): `rows` when `x` is on the CPU, where
/// [`map_row_chunks`] runs the chunks in parallel; all of `x`'s rows (at least 1) elsewhere,
/// where it would run them one after the other.
pub(crate) fn parallel_chunk_rows(x: &Tensor, rows: usize) -> Result<usize> {
    Ok(if icnn::takes_host_kernels(x.device()) {
        rows
    } else {
        x.dim(0)?.max(1)
    })
}

/// `f(i, x_i, ctx_i)` for the `i`-th chunk of `rows` rows of `x` (and of `ctx`), the last
/// chunk possibly shorter; the outcomes in chunk order. Rows are independent, so on the CPU
/// the chunks run in parallel on rayon's pool (the matrix products of one chunk are below
/// [`crate::cpu_threads::GEMM_THREADING_THRESHOLD`] and stay on their thread): the second
/// core does a second chunk instead of half of every small product. `f` gets the chunk's
/// index, so per-chunk randomness can be seeded in chunk order and results do not depend on
/// the thread count.
pub(crate) fn map_row_chunks<T, F>(
    x: &Tensor,
    ctx: Option<&Tensor>,
    rows: usize,
    f: F,
) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize, &Tensor, Option<&Tensor>) -> Result<T> + Sync,
{
    let n = x.dim(0)?;
    let rows = rows.max(1);
    let starts: Vec<usize> = (0..n).step_by(rows).collect();
    let run = |i: usize| -> Result<T> {
        let (start, len) = (starts[i], rows.min(n - starts[i]));
        let xc = x.narrow(0, start, len)?;
        let cc = ctx.map(|c| c.narrow(0, start, len)).transpose()?;
        f(i, &xc, cc.as_ref())
    };
    if starts.len() > 1 && icnn::takes_host_kernels(x.device()) {
        use rayon::prelude::*;
        (0..starts.len()).into_par_iter().map(run).collect()
    } else {
        (0..starts.len()).map(run).collect()
    }
}
