//! CPU threading defaults for candle.
//!
//! candle 0.11 runs element-wise CPU ops on a pool of worker threads that synchronise with a
//! spinning barrier. For the small tensors of a CP-Flow step (batch × width, e.g. 1024 × 64) the
//! parallel split saves little, and when the machine has more runnable threads than cores (a
//! 2-core CI runner, several jobs at once) the caller spins while a descheduled worker holds its
//! chunk: measured on a loaded 2-core machine, one tabular train step (d = 43) took 1.85 s with
//! the default pool and 0.11 s with element-wise ops run inline. Matrix products keep their own
//! (rayon) parallelism either way.

/// The environment variable candle reads (once, at its first element-wise op) for the size of
/// its element-wise worker pool.
pub const CANDLE_NUM_THREADS: &str = "CANDLE_NUM_THREADS";

/// Sets candle's CPU threading for this process: element-wise ops on the calling thread
/// unless the user has chosen a pool size with `CANDLE_NUM_THREADS`, and pins `RAYON_NUM_THREADS` (matrix products) to
/// candle's own default when unset: without it candle re-reads `/proc/cpuinfo` to count
/// physical cores at every matrix product (about 3% of a CPU train step, measured with
/// `perf`). Returns the `CANDLE_NUM_THREADS` value now in effect.
///
/// Call it first thing in `main`, before any other thread exists and before any candle op:
/// it writes the process environment, and candle reads the variable only once.
///
/// ```
/// // At the top of `fn main()`:
/// let threads = cpflow::cpu_threads::configure_cpu_threads();
/// assert!(!threads.is_empty());
/// ```
pub fn configure_cpu_threads() -> String {
    if std::env::var("RAYON_NUM_THREADS").is_err() {
        let n = candle_core::utils::get_num_threads();
        // SAFETY: as below (single-threaded start of `main`).
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
    match std::env::var(CANDLE_NUM_THREADS) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => {
            // SAFETY: documented precondition — called at the start of `main`, while the
            // process is single-threaded, so no other thread reads the environment concurrently.
            unsafe { std::env::set_var(CANDLE_NUM_THREADS, "1") };
            "1".to_string()
        }
    }
}
