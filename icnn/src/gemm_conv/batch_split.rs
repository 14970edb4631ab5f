//! How the CPU convolutions split a batch of images among rayon's tasks.
//!
//! - Image by image maps (a convolution, its adjoint): [`split_batch`], one task per thread.
//!   Each image's output is computed by the same arithmetic whatever task holds it, so the
//!   split, which follows the thread count, decides only who computes what.
//! - Sums over the batch (the kernel gradients): [`reduce_over_batch`], a fixed number of
//!   tasks ([`REDUCTION_TASKS`], fewer for smaller batches), each with its own partial sum,
//!   the partials added in task order ([`sum_in_order`]). The tasks, so the rounding of the
//!   sum, depend on the batch size only, never on the thread count; the threads only pick
//!   the tasks up. (With one task per thread, as before, a kernel gradient changed in its
//!   last bits with `RAYON_NUM_THREADS`, and a training run's weights with it.)
//!
//! Inside a task the matrix products run on rayon's threads as well where there are fewer
//! tasks than threads: faer splits a product among threads by its output only
//! ([`crate::host_gemm::matmul_into`] keeps the one shape whose inner dimension faer would
//! split, a matrix–vector product, on the calling thread), so that does not change a value
//! either.

use std::ops::Range;

use crate::host_gemm::{GemmFloat, Par};
use rayon::prelude::*;

/// The most tasks a sum over a batch is split into. A batch of `b ≥ 8` images makes 8 tasks
/// of `⌊b/8⌋` or `⌈b/8⌉` images: even work for 1, 2, 4 or 8 threads. Each task costs a
/// partial sum (a kernel's worth of values, added once) and its products are smaller.
pub(crate) const REDUCTION_TASKS: usize = 8;

/// How a batch of `b` images is split for an image-by-image map: `(images per task,
/// parallelism inside each product)`. One task per thread; with fewer images than threads
/// the products run in parallel instead.
pub(crate) fn split_batch(b: usize) -> (usize, Par) {
    let threads = rayon::current_num_threads().max(1);
    let per_task = b.div_ceil(threads).max(1);
    (per_task, product_parallelism(b.div_ceil(per_task)))
}

/// Parallelism inside the products of `tasks` concurrent tasks: rayon's threads when there
/// are fewer tasks than threads, else the calling thread.
pub(crate) fn product_parallelism(tasks: usize) -> Par {
    let threads = rayon::current_num_threads().max(1);
    if tasks < threads && threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    }
}

/// The image ranges of the tasks of a sum over `b` images: `min(b, REDUCTION_TASKS)`
/// consecutive ranges, in order, whose sizes differ by at most one (none for `b = 0`).
pub(crate) fn reduction_tasks(b: usize) -> Vec<Range<usize>> {
    let tasks = b.min(REDUCTION_TASKS);
    (0..tasks)
        .map(|t| t * b / tasks..(t + 1) * b / tasks)
        .collect()
}

/// Runs `task(images, parallelism)` for each of the [`reduction_tasks`] of `b` images on
/// rayon's pool and returns the tasks' results in task order.
pub(crate) fn reduce_over_batch<R: Send>(
    b: usize,
    task: impl Fn(Range<usize>, Par) -> candle_core::Result<R> + Sync + Send,
) -> candle_core::Result<Vec<R>> {
    let tasks = reduction_tasks(b);
    let par = product_parallelism(tasks.len());
    tasks.into_par_iter().map(|r| task(r, par)).collect()
}

/// `Σ parts` added in the order given (`len` zeros for none).
pub(crate) fn sum_in_order<T: GemmFloat>(parts: Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut parts = parts.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![T::zero(); len]);
    for part in parts {
        for (t, p) in total.iter_mut().zip(part) {
            *t += p;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tasks cover `0..b` in order, at most `REDUCTION_TASKS` of them, sizes within one,
    /// and the same ranges on any pool.
    #[test]
    fn reduction_tasks_cover_the_batch_in_even_ranges_whatever_the_pool() {
        for b in [0, 1, 5, 8, 11, 16, 64, 100, 1001] {
            let tasks = reduction_tasks(b);
            assert_eq!(tasks.len(), b.min(REDUCTION_TASKS), "b = {b}");
            let mut next = 0;
            for r in &tasks {
                assert_eq!(r.start, next, "b = {b}: {tasks:?}");
                assert!(r.len() == b / tasks.len() || r.len() == b.div_ceil(tasks.len()));
                next = r.end;
            }
            assert_eq!(next, b, "b = {b}: {tasks:?}");
            for threads in [2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                assert_eq!(pool.install(|| reduction_tasks(b)), tasks);
            }
        }
    }
}
