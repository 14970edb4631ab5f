//! numpy's legacy `RandomState` (MT19937), bit for bit.
//!
//! The MAF preprocessing draws its shuffles and noise from `np.random.RandomState(42)` (POWER)
//! and pandas' `DataFrame.sample` (GAS), which uses `RandomState.permutation`. Both are
//! deterministic algorithms, so they are reproduced here exactly rather than approximated with
//! another generator:
//!
//! * seeding with an integer is `init_genrand(seed)` of the MT19937 reference code;
//! * `rand()` / `random_sample()` is the 53-bit double `(a·2²⁶ + b) / 2⁵³` from two outputs
//!   `a = next >> 5`, `b = next >> 6`;
//! * `shuffle` / `permutation` is Fisher–Yates from the last index down, with `j` drawn by
//!   masked rejection sampling (`random_interval`).
//!
//! The tests compare against values printed by numpy 2.4 (`RandomState(42).rand(3)`,
//! `RandomState(42).permutation(10)`).

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// numpy's `np.random.RandomState(seed)` for an integer seed (legacy MT19937 stream).
///
/// ```
/// use cpflow::datasets::NumpyRandomState;
/// let mut rng = NumpyRandomState::new(42);
/// // np.random.RandomState(42).rand() == 0.3745401188473625
/// assert_eq!(rng.random_sample(), 0.3745401188473625);
/// ```
#[derive(Clone)]
pub struct NumpyRandomState {
    state: [u32; N],
    index: usize,
}

impl std::fmt::Debug for NumpyRandomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NumpyRandomState")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl NumpyRandomState {
    /// Seeds the generator like `np.random.RandomState(seed)` (`init_genrand`).
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, index: N }
    }

    fn generate(&mut self) {
        let mt = &mut self.state;
        for i in 0..N {
            let y = (mt[i] & UPPER_MASK) | (mt[(i + 1) % N] & LOWER_MASK);
            let mut next = mt[(i + M) % N] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= MATRIX_A;
            }
            mt[i] = next;
        }
        self.index = 0;
    }

    /// The next raw 32-bit output (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.generate();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// One draw of `RandomState.random_sample()` / `rand()`: uniform on `[0, 1)`, 53 bits.
    pub fn random_sample(&mut self) -> f64 {
        let a = f64::from(self.next_u32() >> 5);
        let b = f64::from(self.next_u32() >> 6);
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// numpy's `random_interval(max)`: uniform integer on `0..=max` by masked rejection.
    pub fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        mask |= mask >> 32;
        if max <= u64::from(u32::MAX) {
            loop {
                let value = u64::from(self.next_u32()) & mask;
                if value <= max {
                    return value;
                }
            }
        } else {
            loop {
                let hi = u64::from(self.next_u32());
                let lo = u64::from(self.next_u32());
                let value = ((hi << 32) | lo) & mask;
                if value <= max {
                    return value;
                }
            }
        }
    }

    /// In-place `RandomState.shuffle` of the rows of a row-major `(len/row_len, row_len)`
    /// matrix (numpy shuffles along the first axis).
    ///
    /// # Panics
    /// Never for `row_len == 0` or an empty slice; `data.len()` must be a multiple of
    /// `row_len` (checked by callers; extra trailing elements are left in place).
    pub fn shuffle_rows<T: Copy>(&mut self, data: &mut [T], row_len: usize) {
        if row_len == 0 {
            return;
        }
        let n = data.len() / row_len;
        for i in (1..n).rev() {
            let j = self.random_interval(i as u64) as usize;
            if i != j {
                for k in 0..row_len {
                    data.swap(i * row_len + k, j * row_len + k);
                }
            }
        }
    }

    /// `RandomState.permutation(n)`: a shuffled `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        self.shuffle_rows(&mut idx, 1);
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values printed by numpy 2.4.6 (legacy RandomState is frozen across versions).
    #[test]
    fn rand_matches_numpy() {
        let mut rng = NumpyRandomState::new(42);
        let got: Vec<f64> = (0..3).map(|_| rng.random_sample()).collect();
        assert_eq!(
            got,
            vec![0.3745401188473625, 0.9507143064099162, 0.7319939418114051]
        );
    }

    #[test]
    fn mt19937_reference_first_output() {
        // init_genrand(5489) is the reference default seed; first output 3499211612.
        let mut rng = NumpyRandomState::new(5489);
        assert_eq!(rng.next_u32(), 3_499_211_612);
    }

    #[test]
    fn permutation_matches_numpy() {
        let mut rng = NumpyRandomState::new(42);
        assert_eq!(rng.permutation(10), vec![8, 1, 5, 0, 7, 2, 9, 4, 3, 6]);
    }

    #[test]
    fn shuffle_rows_matches_numpy() {
        // a = np.arange(20.).reshape(10, 2); RandomState(42).shuffle(a); a[:, 0]
        let mut a: Vec<f64> = (0..20).map(f64::from).collect();
        NumpyRandomState::new(42).shuffle_rows(&mut a, 2);
        let first: Vec<f64> = a.chunks(2).map(|r| r[0]).collect();
        assert_eq!(
            first,
            vec![16.0, 2.0, 10.0, 0.0, 14.0, 4.0, 18.0, 8.0, 6.0, 12.0]
        );
        // rows stay intact
        assert!(a.chunks(2).all(|r| r[1] == r[0] + 1.0));
    }
}
