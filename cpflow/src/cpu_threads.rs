//! CPU threading defaults for candle.
//!
//! candle 0.11 runs element-wise CPU ops on a pool of worker threads that synchronise with a
//! spinning barrier. For the small tensors of a CP-Flow step (batch × width, e.g. 1024 × 64) the
//! parallel split saves little, and when the machine has more runnable threads than cores (a
//! 2-core CI runner, several jobs at once) the caller spins while a descheduled worker holds its
//! chunk: measured on a loaded 2-core machine, one tabular train step (d = 43) took 1.85 s with
//! the default pool and 0.11 s with element-wise ops run inline. Matrix products keep their own
//! (rayon) parallelism either way.

/// Makes the calling thread flush subnormal floating-point results to zero and treat
/// subnormal inputs as zero (x86-64: the FTZ and DAZ bits of MXCSR; a no-op elsewhere).
/// Returns whether the mode was set.
///
/// Why: the Gaussian-softplus curvature `φ(a) = e^{−a²/2}` and the products of small
/// derivatives in the Hessian-vector recursions underflow gradually, and arithmetic on
/// subnormals is one to two orders of magnitude slower on x86. Measured on the VAE posterior
/// (`images-vae.md` §3.4; 4 PICNN blocks, d = 64, f64, 100 rows, encoder outputs of
/// magnitude 0.02–0.2): the exact `log q` took 4.93 s with subnormals and 0.58 s flushed. The
/// values lost are below 2.2e-308 (f64) / 1.2e-38 (f32), far under every tolerance here.
///
/// ```
/// let on = cpflow::cpu_threads::flush_denormals_to_zero();
/// if on {
///     let tiny = std::hint::black_box(1e-300f64);
///     assert_eq!(tiny * 1e-10, 0.0); // would be the subnormal 1e-310 without the flag
/// }
/// ```
pub fn flush_denormals_to_zero() -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    {
        #[allow(deprecated)]
        // SAFETY: reads and writes this thread's SSE control register only; bits 15 (FTZ) and
        // 6 (DAZ) change how subnormals are handled and nothing else.
        unsafe {
            use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
            _mm_setcsr(_mm_getcsr() | 0x8040);
        }
        true
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    {
        false
    }
}

/// Set this environment variable (to anything) to keep IEEE subnormals in
/// [`configure_cpu_threads`] (for A/B measurements of [`flush_denormals_to_zero`]).
pub const KEEP_SUBNORMALS: &str = "CPFLOW_KEEP_SUBNORMALS";

/// Matrix products with fewer than this many multiply-adds per cache block (`m·n_c·k_c` in
/// the `gemm` crate's terms) run on the calling thread; larger ones split over rayon's pool.
/// `gemm`'s own default is `48·48·256` ≈ 0.6 M, which parallelises the `(1024 × 64)·(64 × 64)`
/// products of a tabular CP-Flow step: each then pays a wake-up of a sleeping rayon worker and
/// a futex wait, ~20% of a step in the kernel's scheduler (`perf`, d = 43, 2 threads). Measured
/// side by side on 2 cores (docs/results/side-by-side-cpu.md): the d = 43 train step took
/// 0.21 s with gemm's default and 0.15 s with one thread for everything. With `2²⁴` the
/// tabular and posterior products run serially (the second core is used by running row chunks
/// in parallel instead, [`crate::Flow`]'s evaluation passes) while the convolutions of the
/// image flows and the VAE (`(B·H·W) × 9C × C`, ≥ 10⁸) stay parallel. Override with the
/// environment variable [`GEMM_THRESHOLD_ENV`].
pub const GEMM_THREADING_THRESHOLD: usize = 1 << 24;

/// Environment variable overriding [`GEMM_THREADING_THRESHOLD`] (an integer; `0` parallelises
/// every product).
pub const GEMM_THRESHOLD_ENV: &str = "CPFLOW_GEMM_THREADING_THRESHOLD";

/// The threshold [`configure_cpu_threads`] sets: [`GEMM_THRESHOLD_ENV`] when it holds an
/// integer, else [`GEMM_THREADING_THRESHOLD`].
///
/// ```
/// // Without the variable, the documented default.
/// if std::env::var_os(cpflow::cpu_threads::GEMM_THRESHOLD_ENV).is_none() {
///     assert_eq!(
///         cpflow::cpu_threads::gemm_threading_threshold(),
///         cpflow::cpu_threads::GEMM_THREADING_THRESHOLD
///     );
/// }
/// ```
pub fn gemm_threading_threshold() -> usize {
    std::env::var(GEMM_THRESHOLD_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(GEMM_THREADING_THRESHOLD)
}

/// Stack size of the rayon pool threads that [`configure_cpu_threads`] builds: a main
/// thread's usual 8 MiB rather than a spawned thread's 2 MiB, since [`run_on_pool`] runs a
/// program's whole work there (candle's backward walks its graph recursively).
pub const POOL_STACK_BYTES: usize = 8 << 20;

/// Runs `f` on a thread of rayon's global pool and returns its result; the calling thread
/// sleeps until then. Called from a pool thread, runs `f` in place.
///
/// Why: between the parallel parts of a step (row chunks, convolutions split by image, large
/// products) the driver runs serial work (candle ops, CG's scalars, Adam). On the calling
/// thread that work competed with rayon's workers, which spin and yield for a while after
/// each parallel part before they sleep: with `RAYON_NUM_THREADS` = cores, three threads
/// wanted two cores. On a pool thread the driver is one of the two, and a parallel part runs
/// its first half in place. Measured on the small MNIST flow late in training
/// (`configs/mnist-cpu.toml`, 2 threads, 15 mean CG iterations): 0.098 → 0.074 s per step,
/// bit-identical losses.
///
/// ```
/// cpflow::cpu_threads::configure_cpu_threads_except_env();
/// let on_pool = cpflow::cpu_threads::run_on_pool(|| rayon::current_thread_index().is_some());
/// assert!(on_pool);
/// ```
pub fn run_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    // `scope` called from outside the pool injects its body into the pool and blocks.
    rayon::scope(|_| f())
}

/// The environment variable candle reads (once, at its first element-wise op) for the size of
/// its element-wise worker pool.
pub const CANDLE_NUM_THREADS: &str = "CANDLE_NUM_THREADS";

/// The environment variables [`configure_cpu_threads`] exports, `(name, value)`, of those that
/// `lookup` (the environment's `var_os`) does not give a usable value: `RAYON_NUM_THREADS`
/// when unset or not Unicode, as candle's default count (`candle_core::utils::get_num_threads`:
/// without the variable candle re-reads `/proc/cpuinfo` at every matrix product, about 3% of
/// a CPU train step, measured with `perf`), and [`CANDLE_NUM_THREADS`] when unset, blank or
/// not Unicode, as `1` (element-wise ops on the calling thread; see the module docs).
fn missing_thread_env(
    lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<(&'static str, String)> {
    let unicode = |name: &str| lookup(name).and_then(|v| v.into_string().ok());
    let mut exports = Vec::new();
    if unicode("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        exports.push(("RAYON_NUM_THREADS", n.to_string()));
    }
    if unicode(CANDLE_NUM_THREADS).is_none_or(|v| v.trim().is_empty()) {
        exports.push((CANDLE_NUM_THREADS, "1".to_string()));
    }
    exports
}

/// Everything [`configure_cpu_threads`] does but write the environment, which needs no
/// precondition: it returns the variables, `(name, value)`, that the process should still
/// export for candle (empty when they are set, e.g. by [`configure_cpu_threads`] before).
/// A program that cannot write its environment safely (other threads exist) can set them
/// for its child processes, or in the environment it is started with.
///
/// Its effects are process-wide and stay (see [`configure_cpu_threads`] for each):
/// - the calling thread flushes subnormals to zero ([`flush_denormals_to_zero`]), unless
///   [`KEEP_SUBNORMALS`] is set;
/// - rayon's global pool is built, if nothing built it before, with candle's thread count,
///   [`POOL_STACK_BYTES`] stacks and a start handler that flushes subnormals on each of its
///   threads (unless [`KEEP_SUBNORMALS`]); a pool built earlier is kept as it is;
/// - `gemm`'s threading threshold becomes [`gemm_threading_threshold`];
/// - faer's global parallelism becomes `Par::Seq`;
/// - with the `mimalloc` feature, mimalloc's purge delay becomes `-1`
///   (`crate::allocator::keep_freed_memory`).
///
/// Threads that exist before the call (but the caller and a pool built here) keep their
/// floating-point mode: MXCSR is per thread, and a thread starts with its creator's.
///
/// ```
/// use cpflow::cpu_threads::{CANDLE_NUM_THREADS, configure_cpu_threads_except_env};
/// let before = std::env::var_os(CANDLE_NUM_THREADS);
/// let exports = configure_cpu_threads_except_env();
/// // The environment is untouched; what it lacks is returned.
/// assert_eq!(std::env::var_os(CANDLE_NUM_THREADS), before);
/// assert_eq!(
///     exports.iter().any(|(name, _)| *name == CANDLE_NUM_THREADS),
///     before.is_none_or(|v| v.to_string_lossy().trim().is_empty())
/// );
/// assert_eq!(faer::get_global_parallelism(), faer::Par::Seq);
/// ```
pub fn configure_cpu_threads_except_env() -> Vec<(&'static str, String)> {
    let exports = missing_thread_env(|name| std::env::var_os(name));
    let flush = std::env::var_os(KEEP_SUBNORMALS).is_none();
    if flush {
        flush_denormals_to_zero();
    }
    // The matrix products run on rayon's global pool, and so does the caller's work under
    // [`run_on_pool`]: its threads flush subnormals too, with a main thread's stack. Its size
    // is candle's count, the `RAYON_NUM_THREADS` that [`configure_cpu_threads`] exports. An
    // error means the pool exists already (built by the caller): keep it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(candle_core::utils::get_num_threads())
        .stack_size(POOL_STACK_BYTES)
        .start_handler(move |_| {
            if flush {
                flush_denormals_to_zero();
            }
        })
        .build_global();
    gemm::set_threading_threshold(gemm_threading_threshold());
    // faer's solvers (the per-sample Cholesky factorisations of exact evaluation) run inside
    // parallel row chunks: keep them on the calling thread. With its `rayon` feature (which
    // icnn enables for its parallel products) faer's default would be all of rayon's threads.
    faer::set_global_parallelism(faer::Par::Seq);
    #[cfg(feature = "mimalloc")]
    crate::allocator::keep_freed_memory();
    exports
}

/// Sets candle's CPU threading for this process: exports `RAYON_NUM_THREADS` (candle's own
/// default count, when unset: candle otherwise re-reads `/proc/cpuinfo` to count cores at
/// every matrix product) and [`CANDLE_NUM_THREADS`] = `1` (when unset: element-wise ops on
/// the calling thread; a value the user set is kept), then does
/// [`configure_cpu_threads_except_env`]. Returns the `CANDLE_NUM_THREADS` value now in effect.
///
/// Process-wide effects, all lasting (none is undone):
/// - the environment variables above;
/// - subnormals flushed to zero on the calling thread ([`flush_denormals_to_zero`]; skipped
///   when [`KEEP_SUBNORMALS`] is set);
/// - rayon's global pool built with `RAYON_NUM_THREADS` threads, [`POOL_STACK_BYTES`]
///   stacks and a start handler that flushes subnormals on each pool thread (unless
///   [`KEEP_SUBNORMALS`]); if a pool was built before, it is kept as it is;
/// - `gemm`'s threading threshold ([`gemm_threading_threshold`]: products below it on one
///   thread);
/// - faer's global parallelism `Par::Seq` (its solvers on the calling thread);
/// - with the `mimalloc` feature, mimalloc's purge delay `-1`: freed memory stays in the
///   process (`crate::allocator::keep_freed_memory`).
///
/// Threads created before the call, other than the caller, keep their MXCSR (subnormals
/// are not flushed there: results there may differ in values below 2.2e-308 / 1.2e-38 and
/// run slower); threads they create later inherit it. Call it first, before spawning.
///
/// # Safety
/// It writes the process environment (`std::env::set_var`): no other thread may read or
/// write the environment while it runs, and that includes reads inside libraries (`getenv`
/// in C code, candle's reads of `CANDLE_NUM_THREADS`, a logger reading `RUST_LOG`). The
/// usual way to meet this is to call it first thing in `main`, before any thread is spawned.
/// A program that cannot promise it uses [`configure_cpu_threads_except_env`] and sets the
/// variables it returns in the environment it is started with.
///
/// ```standalone_crate
/// // At the top of `fn main()` (this example runs as a program of its own):
/// // SAFETY: no other thread exists yet, so none reads or writes the environment.
/// let threads = unsafe { cpflow::cpu_threads::configure_cpu_threads() };
/// assert!(!threads.is_empty());
/// assert_eq!(std::env::var(cpflow::cpu_threads::CANDLE_NUM_THREADS).as_deref(), Ok(&*threads));
/// assert!(std::env::var_os("RAYON_NUM_THREADS").is_some());
/// ```
///
/// Without `unsafe` a call does not compile:
///
/// ```compile_fail,E0133
/// let threads = cpflow::cpu_threads::configure_cpu_threads();
/// ```
pub unsafe fn configure_cpu_threads() -> String {
    for (name, value) in missing_thread_env(|name| std::env::var_os(name)) {
        // SAFETY: the caller's contract: no other thread reads or writes the environment.
        unsafe { std::env::set_var(name, value) };
    }
    configure_cpu_threads_except_env();
    std::env::var(CANDLE_NUM_THREADS).unwrap_or_else(|_| "1".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    /// The exports for an environment given as a map (nothing global is read or written).
    fn exports(env: &[(&str, OsString)]) -> Vec<(&'static str, String)> {
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        missing_thread_env(|name| env.get(name).cloned())
    }

    /// What is unset, blank or not Unicode is exported (`CANDLE_NUM_THREADS` as 1,
    /// `RAYON_NUM_THREADS` as candle's count); values the user set are kept.
    #[test]
    fn only_missing_variables_are_exported() {
        let candle = candle_core::utils::get_num_threads().to_string();
        assert_eq!(
            exports(&[]),
            [
                ("RAYON_NUM_THREADS", candle),
                (CANDLE_NUM_THREADS, "1".into())
            ]
        );
        let set = [
            ("RAYON_NUM_THREADS", OsString::from("3")),
            (CANDLE_NUM_THREADS, OsString::from("2")),
        ];
        assert_eq!(exports(&set), []);
        let blank = [
            ("RAYON_NUM_THREADS", OsString::from("3")),
            (CANDLE_NUM_THREADS, OsString::from("  ")),
        ];
        assert_eq!(exports(&blank), [(CANDLE_NUM_THREADS, "1".to_string())]);
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let not_unicode = OsString::from_vec(vec![0xff, 0xfe]);
            let odd = [
                ("RAYON_NUM_THREADS", OsString::from("3")),
                (CANDLE_NUM_THREADS, not_unicode),
            ];
            assert_eq!(exports(&odd), [(CANDLE_NUM_THREADS, "1".to_string())]);
        }
    }
}
