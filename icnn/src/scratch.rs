//! Scratch buffers reused across calls on the same thread, for the host convolutions'
//! per-task work space (`winograd_conv`'s transformed tiles and products).
//!
//! A training step of an image flow runs each convolution hundreds of times (the forward
//! pass, every CG iteration's tangent pass, the adjoints), and each call's tasks used to
//! allocate their buffers afresh: `vec![0; n]` on memory the allocator had just freed is a
//! `memset`, about 4% of an MNIST step's samples in `perf`. A [`Scratch`] takes a buffer
//! from the calling thread's pool (or allocates one) and gives it back when dropped, with
//! **unspecified contents**: the values of its previous use. Callers must write every value
//! they read. Debug builds (the tests) fill each buffer taken with NaN, so a value read
//! before it is written shows in the results.

use std::any::Any;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use crate::surrogate_host::Real;

/// Buffers a thread's pool keeps at most (a Winograd task holds five at a time, and rayon
/// may run a second task on a thread that waits inside the first); more are freed.
const POOL_SIZE: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
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
        let pooled = POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let lens = pool
                .iter()
                .enumerate()
                .filter_map(|(i, b)| b.downcast_ref::<Vec<T>>().map(|v| (i, v.len())));
            // The shortest that is long enough, else the longest.
            let best = lens
                .min_by_key(|&(_, n)| (n < len, if n < len { usize::MAX - n } else { n }))
                .map(|(i, _)| i);
            best.and_then(|i| pool.swap_remove(i).downcast::<Vec<T>>().ok())
        });
        let mut buf = pooled.map(|b| *b).unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, T::zero());
        }
        if cfg!(debug_assertions) {
            buf[..len].fill(T::from_f64(f64::NAN));
        }
        Self { buf, len }
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
        let buf = std::mem::take(&mut self.buf);
        // `try_with`: a buffer dropped while the thread's locals are torn down is freed.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL_SIZE {
                pool.push(Box::new(buf));
            }
        });
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
}
