//! candle's CPU thread count, fixed once for the process.
//!
//! candle sizes the parallelism of each CPU matrix product by
//! `candle_core::utils::get_num_threads()`: `RAYON_NUM_THREADS` when it holds a positive
//! count, otherwise the number of physical cores, which on Linux (without `CANDLE_CPU_MASK`)
//! it counts again at every product by reading `/proc/cpuinfo`. Where many small products go
//! through candle (the composed, GPU-shaped path on a CPU; dense layers of a few units) that
//! re-count dominates: on 2 cores it was 13–80% of the run time of this workspace's
//! integration test binaries (icnn's 11.4 s → 3.8 s, convex-opt's 8.1 s → 1.7 s, cpflow's
//! 153 s → 118 s). [`export_candle_thread_count`] sets the variable, once, to the count
//! candle would use anyway, so the products and their results stay the same.
//!
//! The `cpflow` CLI does the same at start-up (`cpflow::cpu_threads::configure_cpu_threads`).

/// The environment variable candle (and rayon, for its global pool) reads for the thread
/// count.
pub const RAYON_NUM_THREADS: &str = "RAYON_NUM_THREADS";

/// Sets [`RAYON_NUM_THREADS`] to candle's own default count (its physical-core count) unless
/// the variable already holds a positive count, and returns the count now in effect.
///
/// Call it before rayon's global pool is built: the pool then has the same size as candle's
/// products assume (rayon alone would take the logical-CPU count).
///
/// # Safety
/// It may write the process environment (`std::env::set_var`): no other thread may read or
/// write the environment while it runs. Call it first thing in `main`, before any thread is
/// spawned, or from a constructor that runs before `main` (test binaries).
///
/// ```rust,standalone_crate
/// // SAFETY: a doctest's `main`, before any thread is spawned.
/// let n = unsafe { icnn::export_candle_thread_count() };
/// assert!(n >= 1);
/// assert_eq!(std::env::var(icnn::RAYON_NUM_THREADS).unwrap(), n.to_string());
/// assert_eq!(candle_core::utils::get_num_threads(), n);
/// ```
pub unsafe fn export_candle_thread_count() -> usize {
    let set = std::env::var(RAYON_NUM_THREADS)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0);
    if let Some(n) = set {
        return n;
    }
    let n = candle_core::utils::get_num_threads();
    // SAFETY: the caller guarantees that no other thread uses the environment meanwhile.
    unsafe { std::env::set_var(RAYON_NUM_THREADS, n.to_string()) };
    n
}
