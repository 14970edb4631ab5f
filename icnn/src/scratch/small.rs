//! The array pool of the host kernels' **small** arrays (below [`crate::host_par::is_large`]):
//! the tangents, adjoints and element-wise results of the dense networks' row chunks (256
//! rows × 64 units: 16,384 values), which the training step and the SLQ evaluation make
//! and drop a few dozen times per Hessian-vector product.
//!
//! Made with `vec![0; n]`, each was zero-filled by the allocator (`calloc` on memory it had
//! just freed is a `memset`) and then overwritten in full: 7–8% of the samples of a tabular
//! train step and of an SLQ evaluation (d = 63, Icnn2 width 64 depth 10, `perf`). This pool
//! hands such an array out again with its previous contents instead, as the large-array
//! pool of the parent module does, and is built for their number and size: one pool per
//! element type and thread (no `dyn Any`, no boxing), taken last-in first-out (the array
//! freed last is the one most likely still in cache), an array serving a request of `len`
//! values only when it has room for at most a quarter more (a short request does not take
//! a long array that the next long request would then miss, nor hold memory it does not
//! use; the room counts, not the length the array was given back with), at most
//! [`SMALL_POOL_SIZE`] arrays and [`SMALL_POOL_BYTES`] a thread, the ones given back longest
//! ago dropped for a new one. Arrays of fewer than [`SMALL_MIN`] values are cheaper to zero
//! than to pool, and arrays of more than [`SMALL_MAX`] are not pooled either (release
//! builds; debug builds pool every size below the large pool's, so that the tests' small
//! networks run every array under the NaN fill of the contract).

use std::cell::RefCell;
use std::thread::LocalKey;

/// Values below which release builds make a fresh zeroed array instead (4 KiB of `f32`).
pub(super) const SMALL_MIN: usize = 1 << 10;

/// Values above which release builds make a fresh zeroed array instead: the arrays of the
/// 256-row chunks of the training step and the SLQ evaluation at width 64 are pooled, the
/// larger ones of the exact evaluation's chunks at small `d` (d = 6: 458 rows, 29,312
/// values) are not: pooled, they added about 15 MB (13%) to the peak memory of
/// `side_by_side` at d = 6 for no measurable gain.
pub(super) const SMALL_MAX: usize = 1 << 14;

/// Arrays a thread's small pool keeps at most: a Hessian-vector product of a 10-group
/// network holds about 40 at once (tangents, their scaled copies, adjoints); more are
/// freed.
const SMALL_POOL_SIZE: usize = 64;

/// Bytes a thread's small pool keeps at most (a pool of 64 arrays of the 117 KB of a d = 6
/// exact-evaluation chunk added 20 MB to the peak memory of `side_by_side` at d = 6, a
/// process of 110 MB; at 4 MiB the arrays of 256-row chunks of 64 units all fit).
const SMALL_POOL_BYTES: usize = 4 << 20;

type SmallPool<T> = RefCell<Vec<Vec<T>>>;

thread_local! {
    static SMALL_F32: SmallPool<f32> = const { RefCell::new(Vec::new()) };
    static SMALL_F64: SmallPool<f64> = const { RefCell::new(Vec::new()) };
}

/// Element types with a small-array pool per thread.
pub(crate) trait SmallPooled: Sized + Copy + Default + 'static {
    /// The calling thread's pool of this type.
    fn small_pool() -> &'static LocalKey<SmallPool<Self>>;
}

impl SmallPooled for f32 {
    fn small_pool() -> &'static LocalKey<SmallPool<f32>> {
        &SMALL_F32
    }
}

impl SmallPooled for f64 {
    fn small_pool() -> &'static LocalKey<SmallPool<f64>> {
        &SMALL_F64
    }
}

/// The most values an array may have room for to serve a request of `len`: `len + len/4`.
/// With twice `len`, the 117 KB arrays of a d = 6 exact evaluation (458-row chunks) went on
/// to serve the 64 KB requests of the 256-row training chunks after it, and the training
/// step's arrays took up to twice their memory (+15–20 MB of peak memory on a process of
/// 115 MB).
fn room_for(len: usize) -> usize {
    len.saturating_add(len / 4)
}

/// A pooled array of exactly `len` values (unspecified contents), the last one given back
/// with room for `len` to [`room_for`]`(len)` values; `None` when none has. An array given
/// back shorter than its room (a pass over fewer rows: CG's running systems shrink over a
/// solve) serves longer requests again, its new values zero.
pub(super) fn take<T: SmallPooled>(len: usize) -> Option<Vec<T>> {
    let mut buf = T::small_pool()
        .try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let i = pool
                .iter()
                .rposition(|v| v.capacity() >= len && v.capacity() <= room_for(len))?;
            Some(pool.remove(i))
        })
        .ok()
        .flatten()?;
    if buf.len() >= len {
        buf.truncate(len);
    } else {
        buf.resize(len, T::default());
    }
    Some(buf)
}

/// `buf` into the calling thread's small pool, in place of the array given back longest ago
/// when it is full (a pool that kept its first arrays filled up with the sizes nobody asked
/// for again: the shrinking passes of a CG solve); dropped while the thread's locals are
/// torn down.
pub(super) fn give_back<T: SmallPooled>(buf: Vec<T>) {
    let bytes = |v: &Vec<T>| v.capacity() * std::mem::size_of::<T>();
    if bytes(&buf) > SMALL_POOL_BYTES {
        return;
    }
    let _ = T::small_pool().try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let mut held: usize = pool.iter().map(bytes).sum::<usize>() + bytes(&buf);
        let mut oldest = 0;
        while pool.len() - oldest >= SMALL_POOL_SIZE || held > SMALL_POOL_BYTES {
            held -= bytes(&pool[oldest]);
            oldest += 1;
        }
        pool.drain(..oldest);
        pool.push(buf);
    });
}

/// Frees what the calling thread's small pools hold.
pub(super) fn clear() {
    let _ = SMALL_F32.try_with(|pool| pool.borrow_mut().clear());
    let _ = SMALL_F64.try_with(|pool| pool.borrow_mut().clear());
}

/// Values of `T` the calling thread's small pool holds (for tests).
#[cfg(test)]
pub(super) fn pooled_values<T: SmallPooled>() -> usize {
    T::small_pool().with(|pool| pool.borrow().iter().map(Vec::len).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Last in, first out among the arrays that fit; not more than a quarter above the request; a
    /// full pool drops its oldest array; `clear` empties it.
    #[test]
    fn takes_the_last_fitting_array_and_keeps_at_most_the_pool_size() {
        clear();
        let (a, b, c) = (vec![1.0f32; 2000], vec![2.0f32; 2000], vec![3.0f32; 5000]);
        let (pa, pb, pc) = (a.as_ptr(), b.as_ptr(), c.as_ptr());
        give_back(a);
        give_back(b);
        give_back(c);
        let t = take::<f32>(1700).unwrap();
        assert_eq!(
            (t.as_ptr(), t.len()),
            (pb, 1700),
            "the last given back that fits"
        );
        assert!(
            t.iter().all(|&v| v == 2.0),
            "contents are the previous ones"
        );
        let t2 = take::<f32>(1900).unwrap();
        assert_eq!(t2.as_ptr(), pa);
        // 5,000 values are more than 2,400 and a quarter: not handed out for it; nor are
        // 2,000 for 1,500.
        assert!(take::<f32>(1500).is_none());
        assert!(take::<f32>(2400).is_none());
        let t3 = take::<f32>(4000).unwrap();
        assert_eq!(t3.as_ptr(), pc);
        // Another type has its own pool.
        give_back(vec![0.0f64; 3000]);
        assert!(take::<f32>(3000).is_none());
        assert_eq!(pooled_values::<f64>(), 3000);
        for _ in 0..SMALL_POOL_SIZE + 5 {
            give_back(vec![0.0f64; 1024]);
        }
        assert_eq!(
            pooled_values::<f64>(),
            SMALL_POOL_SIZE * 1024,
            "at most SMALL_POOL_SIZE arrays, the oldest (3,000 values) dropped first"
        );
        clear();
        assert_eq!(pooled_values::<f64>() + pooled_values::<f32>(), 0);
        drop((t, t2, t3));
        // At most SMALL_POOL_BYTES: the oldest go first; a larger array is not kept.
        let n = SMALL_POOL_BYTES / 8 / 4;
        for _ in 0..6 {
            give_back(vec![0.0f64; n]);
        }
        assert_eq!(pooled_values::<f64>(), 4 * n);
        give_back(vec![0.0f64; SMALL_POOL_BYTES / 8 + 1]);
        assert_eq!(pooled_values::<f64>(), 4 * n);
        clear();
    }

    /// An array given back shorter than its room serves a request up to that room, with
    /// its old values first and zeros after them.
    #[test]
    fn a_shortened_array_serves_longer_requests_again() {
        clear();
        let mut a = vec![4.0f32; 3000];
        a.truncate(1200);
        let p = a.as_ptr();
        give_back(a);
        // Only requests of at least 2,400 values (3,000 is a quarter above) take it.
        assert!(take::<f32>(1400).is_none());
        let b = take::<f32>(2800).unwrap();
        assert_eq!((b.as_ptr(), b.len()), (p, 2800));
        assert!(b[..1200].iter().all(|&v| v == 4.0) && b[1200..].iter().all(|&v| v == 0.0));
        clear();
    }
}
