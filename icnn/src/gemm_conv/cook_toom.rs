//! The matrices of Winograd's minimal filtering algorithm `F(m, r)` (Toom–Cook, Lavin & Gray
//! 2016), built from interpolation points instead of written out by hand, for the channel-first
//! Winograd convolutions of [`super::winograd`].
//!
//! `F(m, r)` computes `m` outputs of a correlation `y_i = Σ_k g_k d_{i+k}` (`r` taps, `α =
//! m + r − 1` inputs) with `α` multiplications: `y = Aᵀ [(G g) ⊙ (Bᵀ d)]`. With the `α`
//! points `p_0, …, p_{α−2}, ∞` and `V_n` the `α × n` matrix that evaluates a polynomial of
//! degree `< n` at them (row `j`: `1, p_j, p_j², …`; the row of `∞` picks the leading
//! coefficient), the linear convolution `s = g ∗ h` (`h` of length `m`) is
//! `s = V_α⁻¹ [(V_r g) ⊙ (V_m h)]` (a product of polynomials is the product of their values);
//! the correlation is that map's transpose in `h`, so
//! ```text
//! Aᵀ = V_mᵀ  (m × α),     G = V_r  (α × r),     Bᵀ = V_α⁻ᵀ  (α × α).
//! ```
//! In two dimensions `Y = Aᵀ [(G K Gᵀ) ⊙ (Bᵀ D B)] A` for an `α × α` input patch `D`.
//!
//! The points are `0, ±1, ±2, ±½` in that order, as many as `α − 1` needs (`α ≤ 8`): the usual
//! choice, whose matrices have the smallest entries (the algorithm's rounding error grows with
//! them, see [`super::winograd`]). `V_α` is inverted in f64 by Gauss–Jordan elimination with
//! partial pivoting; its entries are rationals with small denominators, so the computed
//! matrices are exact to a few units of f64 rounding.

/// Finite interpolation points, used in this order.
const POINTS: [f64; 7] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5];

/// The largest tile `α` with enough points.
pub(super) const MAX_ALPHA: usize = POINTS.len() + 1;

/// The three matrices of `F(m, r)`, row-major, in f64.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct CookToom {
    /// Outputs per tile side.
    pub m: usize,
    /// Kernel taps per side.
    pub r: usize,
    /// Inputs per tile side, `m + r − 1`.
    pub alpha: usize,
    /// `Aᵀ`, `m × α`: transformed products to outputs.
    pub at: Vec<f64>,
    /// `G`, `α × r`: kernel to transformed kernel.
    pub g: Vec<f64>,
    /// `Bᵀ`, `α × α`: input patch to transformed input.
    pub bt: Vec<f64>,
}

impl CookToom {
    /// `F(m, r)`; `None` when `m` or `r` is 0 or `m + r − 1 >` [`MAX_ALPHA`].
    pub(super) fn new(m: usize, r: usize) -> Option<Self> {
        let alpha = (m + r).checked_sub(1)?;
        if m == 0 || r == 0 || alpha > MAX_ALPHA {
            return None;
        }
        let vm = vandermonde(alpha, m);
        let at = transpose(&vm, alpha, m);
        let g = vandermonde(alpha, r);
        let mut inv = invert(vandermonde(alpha, alpha), alpha)?;
        // Entries that are zero in exact arithmetic come out as ±1e-17 or so: made exact, so
        // that the transforms can skip them.
        for e in &mut inv {
            if e.abs() < 1e-12 {
                *e = 0.0;
            }
        }
        let bt = transpose(&inv, alpha, alpha);
        Some(Self {
            m,
            r,
            alpha,
            at,
            g,
            bt,
        })
    }
}

/// The `α × n` evaluation matrix at the first `α − 1` points and `∞`.
fn vandermonde(alpha: usize, n: usize) -> Vec<f64> {
    let mut v = vec![0.0; alpha * n];
    for (j, row) in v.chunks_exact_mut(n).enumerate() {
        if j + 1 == alpha {
            row[n - 1] = 1.0;
        } else {
            let mut power = 1.0;
            for e in row.iter_mut() {
                *e = power;
                power *= POINTS[j];
            }
        }
    }
    v
}

/// The transpose of a row-major `rows × cols` matrix.
fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}

/// The inverse of a row-major `n × n` matrix by Gauss–Jordan elimination with partial
/// pivoting; `None` when a pivot vanishes (distinct points never make one).
fn invert(mut a: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for col in 0..n {
        let pivot =
            (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))?;
        let p = a[pivot * n + col];
        if p == 0.0 {
            return None;
        }
        for k in 0..n {
            a.swap(col * n + k, pivot * n + k);
            inv.swap(col * n + k, pivot * n + k);
        }
        for k in 0..n {
            a[col * n + k] /= p;
            inv[col * n + k] /= p;
        }
        for row in (0..n).filter(|&row| row != col) {
            let f = a[row * n + col];
            if f != 0.0 {
                for k in 0..n {
                    a[row * n + k] -= f * a[col * n + k];
                    inv[row * n + k] -= f * inv[col * n + k];
                }
            }
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// `rows × cols` times a vector.
    fn apply(a: &[f64], cols: usize, v: &[f64]) -> Vec<f64> {
        a.chunks_exact(cols)
            .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
            .collect()
    }

    /// The 1-D algorithm against the direct correlation, for every `(m, r)` the convolutions
    /// use and a few more; the error bound is f64 rounding times the matrices' entries
    /// (at most 2⁶ for α = 8).
    #[test]
    fn minimal_filtering_matches_the_direct_correlation() {
        let mut rng = StdRng::seed_from_u64(7);
        for (m, r) in [(2, 3), (4, 3), (2, 5), (4, 5), (6, 3), (1, 8)] {
            let f = CookToom::new(m, r).expect("α ≤ 8");
            assert_eq!(f.alpha, m + r - 1);
            for _ in 0..20 {
                let g: Vec<f64> = (0..r).map(|_| rng.random_range(-1.0..1.0)).collect();
                let d: Vec<f64> = (0..f.alpha).map(|_| rng.random_range(-1.0..1.0)).collect();
                let gg = apply(&f.g, r, &g);
                let dd = apply(&f.bt, f.alpha, &d);
                let prod: Vec<f64> = gg.iter().zip(&dd).map(|(a, b)| a * b).collect();
                let y = apply(&f.at, f.alpha, &prod);
                for (i, yi) in y.iter().enumerate() {
                    let direct: f64 = (0..r).map(|k| g[k] * d[i + k]).sum();
                    assert!(
                        (yi - direct).abs() < 1e-12,
                        "F({m}, {r}) output {i}: {yi} vs {direct}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_known_f2_3_matrices_up_to_scaling() {
        // Lavin & Gray's F(2, 3) uses the points 0, 1, −1, ∞ too: each column j of Aᵀ, row j
        // of G and row j of Bᵀ are theirs up to factors whose product is 1.
        let f = CookToom::new(2, 3).expect("α = 4");
        let lavin_at = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
        let lavin_g = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        let lavin_bt = [
            [1.0, 0.0, -1.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [0.0, -1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0, -1.0],
        ];
        for j in 0..4 {
            for (i, at_row) in lavin_at.iter().enumerate() {
                for (k, g) in lavin_g[j].iter().enumerate() {
                    for (q, bt) in lavin_bt[j].iter().enumerate() {
                        let ours = f.at[i * 4 + j] * f.g[j * 3 + k] * f.bt[j * 4 + q];
                        let theirs = at_row[j] * g * bt;
                        assert!((ours - theirs).abs() < 1e-15, "point {j}: ({i}, {k}, {q})");
                    }
                }
            }
        }
    }

    #[test]
    fn zero_entries_are_exact() {
        // F(4, 5)'s Bᵀ has 20 zeros (first and last columns, checkerboard in the first and
        // last rows): the transforms skip them.
        let f = CookToom::new(4, 5).expect("α = 8");
        assert_eq!(f.bt.iter().filter(|e| **e == 0.0).count(), 20);
    }

    #[test]
    fn too_large_or_empty_tiles_are_refused() {
        assert!(CookToom::new(4, 6).is_none());
        assert!(CookToom::new(0, 3).is_none());
        assert!(CookToom::new(3, 0).is_none());
    }
}
