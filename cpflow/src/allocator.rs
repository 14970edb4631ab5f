//! mimalloc, the global allocator of the project's binaries (`cpflow`, `cargo xtask`, the
//! benchmarks), and the one option they set on it (feature `mimalloc`, part of `cli`).
//!
//! A CP-Flow step allocates and frees many large tensors (an image flow's `(64, 64, 28, 28)`
//! activations are 12.8 MB each) from several threads. glibc's allocator returns such blocks
//! to the kernel and faults fresh zeroed pages back in on the next step; so does mimalloc
//! with its default purge delay (1 s in the mimalloc v3 that the crate builds). Measured with
//! `perf` on the MNIST flow of `configs/mnist.toml` (blocks 1-1-1, batch 64, 2 threads): 27%
//! of a step in the kernel's `clear_page_erms`; the step took 6.5 s with glibc, 8.3 s with
//! mimalloc's defaults and 5.2 s with [`keep_freed_memory`]. The binaries declare
//! `#[global_allocator] static GLOBAL: cpflow::allocator::MiMalloc = cpflow::allocator::MiMalloc;`
//! and [`crate::cpu_threads::configure_cpu_threads`] calls [`keep_freed_memory`].
//!
//! ```
//! use std::alloc::{GlobalAlloc, Layout};
//! use cpflow::allocator::MiMalloc;
//! // What the global allocator does for a 1 MiB zeroed, 64-byte aligned buffer.
//! let layout = Layout::from_size_align(1 << 20, 64).unwrap();
//! unsafe {
//!     let p = MiMalloc.alloc_zeroed(layout);
//!     assert!(!p.is_null() && p as usize % 64 == 0);
//!     assert_eq!(*p.add(12_345), 0);
//!     MiMalloc.dealloc(p, layout);
//! }
//! ```

pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v2 and v3 headers: the 16th option,
/// after `mi_option_eager_commit_delay = 14`; the sys crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Set this environment variable to keep mimalloc's own purge delay (for A/B measurements;
/// mimalloc itself also reads `MIMALLOC_PURGE_DELAY`).
pub const KEEP_PURGE_DELAY: &str = "CPFLOW_KEEP_PURGE_DELAY";

// `c_long` is `i64` on Linux and macOS but `i32` on Windows: the conversion in
// `purge_delay_ms` is not useless there.
/// mimalloc's purge delay in milliseconds (`-1`: freed memory is never returned to the OS).
///
/// ```
/// // mimalloc v3's default is 1,000 ms (unless MIMALLOC_PURGE_DELAY says otherwise); a
/// // wrong option index would read another option's value.
/// if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
///     assert_eq!(cpflow::allocator::purge_delay_ms(), 1000);
/// }
/// cpflow::allocator::keep_freed_memory();
/// assert_eq!(cpflow::allocator::purge_delay_ms(), -1);
/// ```
#[allow(clippy::useless_conversion)]
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one of mimalloc's global options; any option index is valid to query.
    i64::from(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) })
}

/// Keep memory freed to mimalloc in the process (purge delay `-1`) instead of returning it
/// to the OS after a second of disuse, so the next step reuses resident pages. The process's resident
/// size stays at its peak. A no-op on the allocation path when mimalloc is not the global
/// allocator. Skipped when [`KEEP_PURGE_DELAY`] is set.
///
/// ```
/// use cpflow::allocator::{KEEP_PURGE_DELAY, keep_freed_memory, purge_delay_ms};
/// keep_freed_memory();
/// if std::env::var_os(KEEP_PURGE_DELAY).is_none() {
///     assert_eq!(purge_delay_ms(), -1); // freed pages stay with the process
/// }
/// ```
pub fn keep_freed_memory() {
    if std::env::var_os(KEEP_PURGE_DELAY).is_some() {
        return;
    }
    // SAFETY: sets one of mimalloc's global options (an atomic store); mimalloc documents
    // purge_delay as settable at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
