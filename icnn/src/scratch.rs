//! Buffers reused across calls on the same thread: the host convolutions' per-task work
//! space ([`Scratch`]) and the host kernels' large intermediate arrays ([`reused`] and
//! [`recycle`]).
//!
//! A training step of an image flow runs each convolution hundreds of times (the forward
//! pass, every CG iteration's tangent pass, the adjoints), and each call's tasks used to
//! allocate their buffers afresh: `vec![0; n]` on memory the allocator had just freed is a
//! `memset`, about 4% of an MNIST step's samples in `perf`. A [`Scratch`] takes a buffer
//! from the calling thread's pool (or allocates one) and gives it back when dropped, with
//! **unspecified contents**: the values of its previous use. Callers must write every value
//! they read. Debug builds (the tests) fill each buffer taken with NaN, so a value read
//! before it is written shows in the results.
//!
//! The recursions' arrays (tangents, adjoints: several MB each on MNIST) were zero-filled
//! when made and most were then overwritten in full: the fills were about a tenth of an
//! MNIST step's samples. [`reused`] hands out such an array from a second pool, with the
//! same unspecified contents, [`zeroed`] one zero-filled for accumulators, and [`recycle`]
//! puts one back where it dies (the `Drop` of tangents and primal values, the end of the
//! HVP and adjoint passes). The MNIST step became 4–6% faster; the process's peak resident
//! memory grew about 5% (the pool keeps up to [`ARRAY_POOL_SIZE`] arrays a thread between
//! uses; with 1,024 it kept 8 GB instead of 5 and ran slower). Only arrays of at least
//! [`host_par::is_large`] values go through that pool (pooling smaller ones there, from 4,096
//! values, made the tabular train step 6% slower: its best-fit search over up to 256 boxed
//! arrays per request). Smaller arrays go through a pool of their own, per element type
//! and last-in first-out ([`small`]; release builds: from [`small::SMALL_MIN`] values; debug
//! builds: every size, so the tests' small networks run the same contract under the NaN
//! fill).
//!
//! Evaluation passes pause the array pool ([`pause_array_pool`]): an image flow's
//! evaluation chunks are large, and the pool held their arrays on top of the live ones
//! (and kept them for the training steps after a validation): a 400-image validation batch
//! of `configs/mnist-cpu.toml` at width 256 peaked at 9.57 GB with the pool and 4.47 GB
//! without, in the same time (71 and 73 s).

use std::any::Any;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::LocalKey;

use crate::host_par;
use crate::surrogate_host::Real;

mod small;
pub(crate) use small::SmallPooled;

/// Buffers a thread's task pool keeps at most (a Winograd task holds five at a time, and
/// rayon may run a second task on a thread that waits inside the first); more are freed.
const POOL_SIZE: usize = 16;

/// Arrays a thread's array pool keeps at most (a linearization's tangents and adjoints
/// across its layers); more are freed.
const ARRAY_POOL_SIZE: usize = 256;

type Pool = RefCell<Vec<Box<dyn Any>>>;

/// The [`ArrayPoolPause`]s alive in the process: while any is, arrays bypass the pool.
static ARRAY_POOL_PAUSES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static POOL: Pool = const { RefCell::new(Vec::new()) };
    static ARRAYS: Pool = const { RefCell::new(Vec::new()) };
}

/// How [`take_from`] serves a request that no pooled buffer holds.
#[derive(Clone, Copy)]
enum Miss {
    /// Grow the longest pooled buffer (serially: small task buffers).
    Grow,
    /// Free the longest pooled buffer and allocate zeros in parallel (large arrays: growing
    /// would copy its stale values and zero the rest on one thread).
    Replace,
}

/// A buffer of `len` values from `pool`: the pooled buffer of `T` with the least capacity
/// that holds `len` values, else one made as `miss` says; NaN-filled in debug builds.
fn take_from<T: Real + 'static>(pool: &'static LocalKey<Pool>, len: usize, miss: Miss) -> Vec<T> {
    let pooled = pool.with(|pool| {
        let mut pool = pool.borrow_mut();
        let lens = pool
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.downcast_ref::<Vec<T>>().map(|v| (i, v.capacity())));
        // The shortest that is long enough, else the longest.
        let best = lens
            .min_by_key(|&(_, n)| (n < len, if n < len { usize::MAX - n } else { n }))
            .map(|(i, _)| i);
        best.and_then(|i| pool.swap_remove(i).downcast::<Vec<T>>().ok())
    });
    let mut buf = pooled.map(|b| *b).unwrap_or_default();
    if buf.capacity() < len
        && let Miss::Replace = miss
    {
        buf = host_par::zeros(len);
    }
    if buf.len() < len {
        buf.resize(len, T::zero());
    }
    if cfg!(debug_assertions) {
        buf[..len].fill(T::from_f64(f64::NAN));
    }
    buf
}

/// `buf` back into `pool` (freed when the pool holds `max` buffers already, or while the
/// thread's locals are torn down).
fn give_back_to<T: Real + 'static>(pool: &'static LocalKey<Pool>, buf: Vec<T>, max: usize) {
    let _ = pool.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < max {
            pool.push(Box::new(buf));
        }
    });
}

/// Whether an array of `len` values goes through the array pool (see the module docs): not
/// while the pool is paused.
fn pooled_array(len: usize) -> bool {
    host_par::is_large(len) && ARRAY_POOL_PAUSES.load(Ordering::Acquire) == 0
}

/// An array of `len` values of **unspecified contents** (see the module docs): the caller
/// writes every value before reading it. From the calling thread's array pool when
/// pooled, else new (NaN in debug builds, zeros in release builds).
pub(crate) fn reused<T: Real + 'static>(len: usize) -> Vec<T> {
    let fill = if cfg!(debug_assertions) {
        T::from_f64(f64::NAN)
    } else {
        T::zero()
    };
    if !pooled_array(len) {
        if small_array(len)
            && let Some(mut buf) = small::take(len)
        {
            if cfg!(debug_assertions) {
                buf.fill(fill);
            }
            return buf;
        }
        return vec![fill; len];
    }
    let mut buf = take_from(&ARRAYS, len, Miss::Replace);
    buf.truncate(len);
    buf
}

/// Whether an array of `len` values goes through the small pool ([`small`]): from
/// [`small::SMALL_MIN`] to [`small::SMALL_MAX`] values (debug builds: every size below
/// the large pool's), not while the pools are paused.
fn small_array(len: usize) -> bool {
    let sized = if cfg!(debug_assertions) {
        !host_par::is_large(len)
    } else {
        (small::SMALL_MIN..=small::SMALL_MAX).contains(&len)
    };
    sized && ARRAY_POOL_PAUSES.load(Ordering::Acquire) == 0
}

/// An array of `len` zeros: [`reused`], zero-filled (in parallel when large). Accumulators
/// take their memory from the pool too, so that the pool's arrays are what the recursions
/// run on rather than memory held beside it.
pub(crate) fn zeroed<T: Real + 'static>(len: usize) -> Vec<T> {
    if !pooled_array(len) {
        if small_array(len)
            && let Some(mut buf) = small::take(len)
        {
            buf.fill(T::zero());
            return buf;
        }
        return vec![T::zero(); len];
    }
    let mut buf = reused(len);
    host_par::rows1(1, &mut buf, |_, chunk| chunk.fill(T::zero()));
    buf
}

/// `buf` back into the calling thread's array pool for [`reused`] (dropped when not pooled;
/// empty vectors are ignored).
pub(crate) fn recycle<T: Real + 'static>(buf: Vec<T>) {
    if buf.is_empty() {
        return;
    }
    if pooled_array(buf.len()) {
        give_back_to(&ARRAYS, buf, ARRAY_POOL_SIZE);
    } else if small_array(buf.len()) {
        small::give_back(buf);
    }
}

/// Pauses the host kernels' array pool until the returned guard is dropped: the arrays of
/// tangents, adjoints and primal values are then allocated for each use and freed after
/// it. Pausing frees what the pools hold (the calling thread's and those of every thread of
/// the current rayon pool). For evaluation passes over large batches, whose arrays the pool
/// would otherwise keep beside the live ones: `cpflow`'s image flows pause it for their
/// evaluation chunks. Pauses nest and may overlap across threads; the pool resumes when the
/// last guard is dropped. Results do not depend on it.
///
/// ```
/// let pause = icnn::pause_array_pool();
/// // ... an evaluation pass ...
/// drop(pause);
/// ```
pub fn pause_array_pool() -> ArrayPoolPause {
    ARRAY_POOL_PAUSES.fetch_add(1, Ordering::AcqRel);
    let clear = || {
        let _ = ARRAYS.try_with(|pool| pool.borrow_mut().clear());
        small::clear();
    };
    clear();
    rayon::broadcast(|_| clear());
    ArrayPoolPause { _private: () }
}

/// The guard of [`pause_array_pool`]: the array pool stays paused while it lives.
#[must_use = "the array pool resumes when the guard is dropped"]
#[derive(Debug)]
pub struct ArrayPoolPause {
    _private: (),
}

impl Drop for ArrayPoolPause {
    fn drop(&mut self) {
        ARRAY_POOL_PAUSES.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A buffer of `len` values of unspecified contents, returned to the calling thread's pool
/// when dropped (see the module docs).
pub(crate) struct Scratch<T: Real + 'static> {
    buf: Vec<T>,
    len: usize,
}

impl<T: Real + 'static> Scratch<T> {
    /// A buffer of `len` values from this thread's pool: the shortest pooled buffer of `T`
    /// that holds `len` values, else the longest (grown), else a new one.
    pub(crate) fn take(len: usize) -> Self {
        Self {
            buf: take_from(&POOL, len, Miss::Grow),
            len,
        }
    }
}

impl<T: Real + 'static> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[..self.len]
    }
}

impl<T: Real + 'static> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[..self.len]
    }
}

impl<T: Real + 'static> Drop for Scratch<T> {
    fn drop(&mut self) {
        give_back_to(&POOL, std::mem::take(&mut self.buf), POOL_SIZE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_on_the_same_thread() {
        let (p, q);
        {
            let mut a = Scratch::<f64>::take(1000);
            a.fill(2.0);
            p = a.as_ptr();
            let b = Scratch::<f64>::take(10);
            assert_ne!(b.as_ptr(), p, "a buffer in use is not handed out twice");
            assert_eq!(b.len(), 10);
            q = b.as_ptr();
        }
        // The shortest pooled buffer long enough serves a request.
        let c = Scratch::<f64>::take(500);
        assert_eq!(c.len(), 500);
        assert_eq!(c.as_ptr(), p);
        let c2 = Scratch::<f64>::take(8);
        assert_eq!(c2.as_ptr(), q);
        drop(c2);
        // Debug builds poison what they hand out.
        if cfg!(debug_assertions) {
            assert!(c.iter().all(|v| v.is_nan()));
        }
        // Another type does not take a buffer of f64.
        let d = Scratch::<f32>::take(10);
        assert_ne!(d.as_ptr() as usize, q as usize);
        let e = Scratch::<f64>::take(10);
        assert_eq!(e.as_ptr(), q);
        // A longer request than any pooled buffer grows one.
        drop((c, e));
        let f = Scratch::<f64>::take(5000);
        assert_eq!(f.len(), 5000);
    }

    /// The array pool is process-wide state (its pause): its tests run one at a time.
    static ARRAY_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn array_pool_lock() -> std::sync::MutexGuard<'static, ()> {
        ARRAY_TESTS.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of `f32` arrays in the calling thread's array pools (large and small).
    fn pooled_f32_bytes() -> usize {
        ARRAYS.with(|pool| {
            pool.borrow()
                .iter()
                .filter_map(|b| b.downcast_ref::<Vec<f32>>())
                .map(|v| v.capacity() * 4)
                .sum::<usize>()
        }) + small::pooled_values::<f32>() * 4
    }

    /// A pause frees the pooled arrays and keeps the pool empty until its guard (the last of
    /// nested ones) is dropped; arrays handed out meanwhile are fresh (NaN in debug builds).
    #[test]
    fn a_paused_pool_holds_nothing() {
        let _lock = array_pool_lock();
        let len = if cfg!(debug_assertions) { 300 } else { 1 << 18 };
        recycle(reused::<f32>(len));
        assert!(pooled_f32_bytes() >= 4 * len, "pooled before the pause");
        let outer = pause_array_pool();
        assert_eq!(pooled_f32_bytes(), 0, "freed by the pause");
        let inner = pause_array_pool();
        let a = reused::<f32>(len);
        if cfg!(debug_assertions) {
            assert!(a.iter().all(|v| v.is_nan()));
        }
        recycle(a);
        drop(inner);
        recycle(reused::<f32>(len));
        assert_eq!(pooled_f32_bytes(), 0, "still paused by the outer guard");
        drop(outer);
        recycle(reused::<f32>(len));
        assert!(pooled_f32_bytes() >= 4 * len, "pooled again");
    }

    /// Large arrays given back are handed out again (the one with the least room that
    /// fits), poisoned in debug builds; `zeroed` zeroes them; the two pools are separate.
    #[test]
    fn recycled_arrays_are_reused() {
        let _lock = array_pool_lock();
        // Large arrays (the small ones have their own pool, `small.rs`).
        let len = 1 << 18;
        let mut big = reused::<f32>(4 * len);
        big.fill(1.0);
        let mut small = reused::<f32>(len);
        small.fill(2.0);
        let (pb, ps) = (big.as_ptr(), small.as_ptr());
        recycle(big);
        recycle(small);
        recycle(Vec::<f32>::new());
        let a = reused::<f32>(len - 1);
        assert_eq!(
            (a.len(), a.as_ptr()),
            (len - 1, ps),
            "the smallest that fits"
        );
        if cfg!(debug_assertions) {
            assert!(a.iter().all(|v| v.is_nan()));
        }
        let z = zeroed::<f32>(2 * len);
        assert_eq!(z.as_ptr(), pb);
        assert!(z.iter().all(|&v| v == 0.0));
        // A task buffer is not served from the arrays, nor an f64 array from f32 ones.
        recycle(z);
        let task = Scratch::<f32>::take(len);
        assert_ne!(task.as_ptr(), pb);
        let other = reused::<f64>(len);
        assert_ne!(other.as_ptr() as usize, pb as usize);
        let again = reused::<f32>(len);
        assert_eq!(again.as_ptr(), pb);
    }
}
