//! Small timing helpers for the harness binaries.

use std::time::Instant;

/// Median of a non-empty sample (NaN for an empty one).
///
/// ```
/// assert_eq!(benchmarks::median(&[3.0, 1.0, 2.0]), 2.0);
/// assert_eq!(benchmarks::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
/// ```
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Wall-clock stopwatch returning seconds.
///
/// ```
/// let sw = benchmarks::Stopwatch::start();
/// assert!(sw.seconds() >= 0.0);
/// ```
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// Start now.
    pub fn start() -> Self {
        Stopwatch(Instant::now())
    }

    /// Seconds since start.
    pub fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// CPU time consumed so far by the whole process (all threads, user and system), seconds;
/// `None` where the clock is not available.
///
/// ```
/// let t0 = benchmarks::process_cpu_seconds().unwrap();
/// let mut x = 0u64;
/// for i in 0..20_000_000u64 {
///     x = x.wrapping_mul(31).wrapping_add(i);
/// }
/// std::hint::black_box(x);
/// assert!(benchmarks::process_cpu_seconds().unwrap() > t0);
/// ```
pub fn process_cpu_seconds() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock_gettime` writes one `timespec`, which `ts` is.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Wall time and process CPU time from one start. [`CpuWatch::cores_used`] (CPU seconds per
/// wall second) tells whether a phase kept the cores busy: about 1 means one core did the
/// work while the others waited (how the serial inversion of
/// `docs/results/side-by-side-cpu.md` run 3 showed). rayon's workers spin for a moment after
/// each parallel part, so a value above 1 can include some spinning.
///
/// ```
/// let w = benchmarks::CpuWatch::start();
/// let mut x = 0u64;
/// for i in 0..20_000_000u64 {
///     x = x.wrapping_mul(31).wrapping_add(i);
/// }
/// std::hint::black_box(x);
/// let used = w.cores_used().unwrap();
/// assert!(used > 0.0 && w.seconds() > 0.0);
/// ```
pub struct CpuWatch {
    wall: Instant,
    cpu: Option<f64>,
}

impl CpuWatch {
    /// Start now.
    pub fn start() -> Self {
        CpuWatch {
            cpu: process_cpu_seconds(),
            wall: Instant::now(),
        }
    }

    /// Wall seconds since start.
    pub fn seconds(&self) -> f64 {
        self.wall.elapsed().as_secs_f64()
    }

    /// Process CPU seconds per wall second since start (`None` without the CPU clock).
    pub fn cores_used(&self) -> Option<f64> {
        let wall = self.seconds();
        let cpu = process_cpu_seconds()? - self.cpu?;
        (wall > 0.0).then(|| cpu / wall)
    }
}
