//! Peak-memory measurement for the harness binaries: a counting global allocator over mimalloc
//! (the allocator of the `cpflow` binary too; live heap
//! bytes and their high-water mark) and the process's resident-set high-water mark, which
//! Linux lets a process reset (`/proc/self/clear_refs`, value 5).
//!
//! A binary opts in to the allocator count with
//! ```ignore
//! #[global_allocator]
//! static ALLOC: benchmarks::memory::CountingAlloc = benchmarks::memory::CountingAlloc;
//! ```

use std::alloc::{GlobalAlloc, Layout};

use cpflow::allocator::MiMalloc as System;
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// mimalloc, counting live bytes and their peak (two relaxed atomics per call).
pub struct CountingAlloc;

fn grow(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call forwards to mimalloc with the caller's layout; the counters do not
// affect the returned memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// Live heap bytes now (0 unless [`CountingAlloc`] is the global allocator).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Peak live heap bytes since the last [`reset_peak`].
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Sets the peak to the live bytes now and returns them (the baseline of a measurement).
pub fn reset_peak() -> usize {
    let now = LIVE.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident set size now, bytes (Linux; `None` elsewhere).
pub fn rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

/// Resident-set high-water mark, bytes (Linux; `None` elsewhere).
pub fn rss_peak_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// Resets the resident-set high-water mark to the current RSS (writes 5 to
/// `/proc/self/clear_refs`) and returns the RSS; `None` where that is not possible.
pub fn reset_rss_peak() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    rss_bytes()
}

/// A running measurement of peak memory above a baseline.
///
/// ```
/// let m = benchmarks::memory::PeakMeter::start();
/// let v = vec![1u8; 1 << 20];
/// assert_eq!(v.len(), 1 << 20);
/// // Without `CountingAlloc` installed the allocator figure is 0.
/// assert!(m.alloc_mib() >= 0.0);
/// ```
pub struct PeakMeter {
    alloc_base: usize,
    rss_base: Option<u64>,
}

impl PeakMeter {
    /// Resets both high-water marks and records the baselines.
    pub fn start() -> Self {
        Self {
            alloc_base: reset_peak(),
            rss_base: reset_rss_peak(),
        }
    }

    /// Peak live heap above the baseline, MiB.
    pub fn alloc_mib(&self) -> f64 {
        peak_bytes().saturating_sub(self.alloc_base) as f64 / (1u64 << 20) as f64
    }

    /// Peak resident set above the baseline, MiB (`None` without `/proc`).
    pub fn rss_mib(&self) -> Option<f64> {
        let base = self.rss_base?;
        Some(rss_peak_bytes()?.saturating_sub(base) as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_peak_tracks_a_touched_allocation() {
        let Some(base) = reset_rss_peak() else {
            return; // not Linux / no clear_refs: nothing to check
        };
        let mut v = vec![0u8; 64 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        let peak = rss_peak_bytes().unwrap();
        drop(v);
        // 64 MiB touched: the high-water mark rose by most of it (other test threads may add).
        assert!(peak >= base + (48 << 20), "base {base} peak {peak}");
    }
}
