//! [`CpuTrace`]: the process CPU clock sampled by a background thread, so that the cores used
//! over a stretch of a run can be read afterwards, when the stretch is known only from the
//! run's own log (the timed steps of a training run, whose metrics lines give each step's end
//! in seconds since the run started).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process_cpu_seconds;

/// A running sampler of [`process_cpu_seconds`]; [`CpuTrace::finish`] stops it and returns
/// the [`CpuSamples`]. The sampler wakes once per period and reads one clock, so it adds
/// nothing measurable at periods of milliseconds.
///
/// ```
/// use std::time::Duration;
/// let trace = benchmarks::CpuTrace::start(Duration::from_millis(5));
/// let mut x = 0u64;
/// for i in 0..200_000_000u64 {
///     x = x.wrapping_mul(31).wrapping_add(i);
/// }
/// std::hint::black_box(x);
/// let samples = trace.finish();
/// let end = samples.last_seconds().unwrap();
/// // One thread spun the whole time: at most about one core (the sampler's own wake-ups add
/// // little; less than one where other processes share the cores).
/// let used = samples.cores_used(0.0, end).unwrap();
/// assert!(used > 0.05 && used < 1.5, "{used}");
/// ```
pub struct CpuTrace {
    start: Instant,
    samples: Arc<Mutex<Vec<(f64, f64)>>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl CpuTrace {
    /// Start sampling now, every `period`; seconds of the samples count from now (the first
    /// sample is at 0).
    pub fn start(period: Duration) -> Self {
        // The first sample is time 0 itself: the clock read just before the trace's start.
        let first = process_cpu_seconds().map(|cpu| (0.0, cpu));
        let start = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::from_iter(first)));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (Arc::clone(&samples), Arc::clone(&stop));
        let record = move || {
            if let Some(cpu) = process_cpu_seconds() {
                let t = start.elapsed().as_secs_f64();
                s.lock().unwrap_or_else(|e| e.into_inner()).push((t, cpu));
            }
        };
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                std::thread::sleep(period);
                record();
            }
        });
        CpuTrace {
            start,
            samples,
            stop,
            thread,
        }
    }

    /// Seconds since the trace started.
    pub fn seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Stop the sampler (after one last sample) and return the samples.
    pub fn finish(self) -> CpuSamples {
        self.stop.store(true, Ordering::Relaxed);
        // A panic of the sampler thread loses no sample taken before it.
        let _ = self.thread.join();
        let samples = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()));
        CpuSamples { samples }
    }
}

/// `(wall seconds since the trace started, process CPU seconds)` pairs in time order.
#[derive(Clone, Debug, Default)]
pub struct CpuSamples {
    samples: Vec<(f64, f64)>,
}

impl CpuSamples {
    /// From `(wall seconds, CPU seconds)` pairs in increasing wall time.
    ///
    /// ```
    /// let s = benchmarks::CpuSamples::new(vec![(0.0, 0.0), (1.0, 2.0), (3.0, 3.0)]);
    /// assert_eq!(s.cpu_at(0.5), Some(1.0)); // linear between samples
    /// assert_eq!(s.cores_used(1.0, 3.0), Some(0.5));
    /// assert_eq!(s.cores_used(0.0, 4.0), None); // past the last sample
    /// assert_eq!(s.cpu_at(-1.0), None); // before the first
    /// assert_eq!(s.cpu_at(3.0), Some(3.0));
    /// ```
    pub fn new(samples: Vec<(f64, f64)>) -> Self {
        CpuSamples { samples }
    }

    /// Wall time of the last sample.
    pub fn last_seconds(&self) -> Option<f64> {
        self.samples.last().map(|s| s.0)
    }

    /// CPU seconds at wall second `t`, linear between the samples around it; `None` outside
    /// the samples' span.
    pub fn cpu_at(&self, t: f64) -> Option<f64> {
        let i = self.samples.partition_point(|s| s.0 < t);
        let &(t1, c1) = self.samples.get(i)?;
        if t1 == t {
            return Some(c1);
        }
        let &(t0, c0) = self.samples.get(i.checked_sub(1)?)?;
        Some(c0 + (c1 - c0) * (t - t0) / (t1 - t0))
    }

    /// CPU seconds per wall second between wall seconds `t0 < t1`: about 1 when one core
    /// did the work, about the core count when every core was busy.
    pub fn cores_used(&self, t0: f64, t1: f64) -> Option<f64> {
        (t1 > t0).then_some(())?;
        Some((self.cpu_at(t1)? - self.cpu_at(t0)?) / (t1 - t0))
    }
}
