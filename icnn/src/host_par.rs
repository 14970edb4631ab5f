//! Row-parallel element-wise passes of the host kernels.
//!
//! The host kernels' products split the batch over rayon's threads; their element-wise steps
//! (activations and their derivatives, the recursions' Hadamard products) ran on the calling
//! thread, with the other threads idle: on the MNIST flow (2 threads) they were about a tenth
//! of the step's CPU samples and so close to a fifth of its wall time. These helpers split
//! such a pass into chunks of whole rows when it is large enough to pay for the split, and
//! run it on the calling thread otherwise (the dense networks' training step already runs
//! row chunks in parallel, so its passes stay below the threshold). Each output value is
//! computed by the same expression either way: the results do not depend on the split.

use rayon::prelude::*;

use crate::surrogate_host::Real;

/// Values per parallel task.
const CHUNK: usize = 1 << 15;

/// Passes over fewer values than this run on the calling thread.
const PAR_MIN: usize = 1 << 17;

/// Whether a pass over `len` values is split over threads.
pub(crate) fn is_large(len: usize) -> bool {
    len >= PAR_MIN
}

/// Values per chunk: whole rows of `m`, about [`CHUNK`] values.
fn chunk_len(m: usize) -> usize {
    let m = m.max(1);
    m * (CHUNK / m).max(1)
}

/// `f(first row, chunk of out)` over chunks of whole rows of `m` values (`out.len()` a
/// multiple of `m`), in parallel when `out` is large.
pub(crate) fn rows1<T: Send>(m: usize, out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    if !is_large(out.len()) {
        return f(0, out);
    }
    let c = chunk_len(m);
    out.par_chunks_mut(c)
        .enumerate()
        .for_each(|(i, o)| f(i * c / m.max(1), o));
}

/// [`rows1`] with two outputs of the same length.
pub(crate) fn rows2<T: Send>(
    m: usize,
    a: &mut [T],
    b: &mut [T],
    f: impl Fn(usize, &mut [T], &mut [T]) + Sync,
) {
    if !is_large(a.len()) {
        return f(0, a, b);
    }
    let c = chunk_len(m);
    a.par_chunks_mut(c)
        .zip(b.par_chunks_mut(c))
        .enumerate()
        .for_each(|(i, (a, b))| f(i * c / m.max(1), a, b));
}

/// [`rows1`] with three outputs of the same length.
pub(crate) fn rows3<T: Send>(
    m: usize,
    a: &mut [T],
    b: &mut [T],
    c3: &mut [T],
    f: impl Fn(usize, &mut [T], &mut [T], &mut [T]) + Sync,
) {
    if !is_large(a.len()) {
        return f(0, a, b, c3);
    }
    let c = chunk_len(m);
    a.par_chunks_mut(c)
        .zip(b.par_chunks_mut(c))
        .zip(c3.par_chunks_mut(c))
        .enumerate()
        .for_each(|(i, ((a, b), c3))| f(i * c / m.max(1), a, b, c3));
}

/// `len` default values (zeros), written in parallel when many (a fresh buffer's zero fill
/// is otherwise a serial `memset` on the calling thread).
pub(crate) fn zeros<T: Send + Sync + Copy + Default>(len: usize) -> Vec<T> {
    if !is_large(len) {
        return vec![T::default(); len];
    }
    let mut out = Vec::with_capacity(len);
    out.par_extend(rayon::iter::repeat_n(T::default(), len).with_min_len(CHUNK));
    out
}

/// `pattern` repeated to `len` values (`len` a multiple of its length).
pub(crate) fn repeated<T: Real>(pattern: &[T], len: usize) -> Vec<T> {
    if pattern.is_empty() {
        return zeros(len);
    }
    let n = pattern.len();
    if !is_large(len) && len.is_multiple_of(n) {
        return pattern.repeat(len / n);
    }
    filled(len, |start, out| {
        let (mut k, mut o) = (start, 0);
        while o < out.len() {
            let j = k % n;
            let run = (n - j).min(out.len() - o);
            out[o..o + run].copy_from_slice(&pattern[j..j + run]);
            k += run;
            o += run;
        }
    })
}

/// A new vector of `len` values, `f(first index, chunk)` filling it (see [`rows1`]): `f`
/// writes every value of its chunk (the vector comes from [`crate::scratch::reused`], of
/// unspecified contents).
pub(crate) fn filled<T: Real>(len: usize, f: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    let mut out = crate::scratch::reused(len);
    rows1(1, &mut out, f);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zeros and repetitions, small and large.
    #[test]
    fn zeros_and_repetitions_have_their_values() {
        for len in [6, PAR_MIN + 6] {
            assert!(zeros::<f32>(len).iter().all(|v| *v == 0.0));
            assert_eq!(zeros::<f64>(len).len(), len);
            let r = repeated(&[1.0f64, 2.0, 3.0], len);
            assert_eq!(r.len(), len);
            assert!(r.iter().enumerate().all(|(k, v)| *v as usize == k % 3 + 1));
        }
    }

    /// Small and large passes see every row exactly once, with the right first-row index.
    #[test]
    fn chunks_cover_every_row_once_with_their_index() {
        for (rows, m) in [(3, 5), (PAR_MIN / 7 + 3, 7), (5, PAR_MIN + 1), (PAR_MIN, 1)] {
            let mut out = vec![0usize; rows * m];
            let mut other = vec![0usize; rows * m];
            rows2(m, &mut out, &mut other, |r0, o, p| {
                assert_eq!(o.len() % m, 0);
                for (i, (v, w)) in o.iter_mut().zip(p.iter_mut()).enumerate() {
                    *v += r0 + i / m + 1;
                    *w += 1;
                }
            });
            for (k, (v, w)) in out.iter().zip(&other).enumerate() {
                assert_eq!((*v, *w), (k / m + 1, 1), "rows {rows}, m {m}, value {k}");
            }
        }
    }
}
