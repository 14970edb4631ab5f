//! Strongly convex test potentials whose gradient maps have closed-form inverses computed on
//! the host in `f64`, independently of the solvers (shared by the property tests), and the
//! proptest configuration they run under.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use convex_opt::options::RESIDUAL_RESOLUTION_ROUNDOFFS;
use convex_opt::{
    BatchedPotential, ConvexOptError, InversionOptions, InversionResult, Termination,
};
use nalgebra::{DMatrix, DVector};
use proptest::test_runner::{Config, RngSeed};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// Unit roundoff of `f64`.
pub const EPS: f64 = f64::EPSILON / 2.0;

/// A fixed-seed proptest configuration with `cases` cases that never writes
/// `proptest-regressions/` files (no failure persistence) and keeps shrinking short.
pub fn fixed_config(cases: u32, seed: u64) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    }
}

/// A random orthogonal `d × d` matrix (QR of a Gaussian matrix).
pub fn orthogonal(d: usize, rng: &mut StdRng) -> DMatrix<f64> {
    let m = DMatrix::<f64>::from_fn(d, d, |_, _| StandardNormal.sample(rng));
    m.qr().q()
}

/// `A = Q diag(λ) Qᵀ` with eigenvalues log-spaced in `[λ_min, λ_min·cond]` (both ends
/// attained), symmetrised.
pub fn spd(d: usize, lambda_min: f64, cond: f64, rng: &mut StdRng) -> DMatrix<f64> {
    let q = orthogonal(d, rng);
    let lam = DVector::from_fn(d, |i, _| {
        let s = if d > 1 {
            i as f64 / (d - 1) as f64
        } else {
            0.0
        };
        lambda_min * cond.powf(s)
    });
    let a: DMatrix<f64> = &q * DMatrix::from_diagonal(&lam) * q.transpose();
    (&a + a.transpose()) * 0.5
}

pub fn gaussian_vector(d: usize, scale: f64, rng: &mut StdRng) -> DVector<f64> {
    DVector::from_fn(d, |_, _| {
        scale * Distribution::<f64>::sample(&StandardNormal, rng)
    })
}

/// The real root of `t³ + p·t = q` for `p > 0` (the derivative of `t⁴/4 + p·t²/2` inverted)
/// by Cardano's formula in a cancellation-free form: with `s = √(q²/4 + p³/27)`,
/// `a = ∛(|q|/2 + s)` and `b = p/(3a)` the root is `±(a − b) = ±|q|/(a² + ab + b²)`
/// (`a³ − b³ = |q|`, `ab = p/3`). The denominator is stationary in `a` where `a ≈ b`, so a
/// rounded `a` changes the root by at most ~2 ulps relative; one Newton step then polishes it.
pub fn cardano(p: f64, q: f64) -> f64 {
    assert!(p > 0.0);
    let s = (0.25 * q * q + p * p * p / 27.0).sqrt();
    let a = (0.5 * q.abs() + s).cbrt();
    let b = p / (3.0 * a);
    let t = q.abs() / (a * a + p / 3.0 + b * b);
    let t = t.copysign(q);
    t - (t * t * t + p * t - q) / (3.0 * t * t + p)
}

/// `Φ(x) = c·Σ_j (z_j⁴/4 + α_j z_j²/2) + bᵀx` with `z = Qᵀ(x − m)`, `Q` orthogonal (the
/// identity for the separable case), `α_j > 0`, `c > 0`:
/// `∇Φ(x) = c·Q(z³ + α∘z) + b`, `∇²Φ(x) = c·Q diag(3z² + α) Qᵀ ⪰ c·min α · I`, and the inverse
/// of the gradient map is `x = m + Q z` with `z_j = cardano(α_j, (Qᵀ(y − b))_j / c)`.
/// Rows are evaluated as `z = (x − m)Q`, so each row's value is computed from that row alone.
pub struct RotatedQuartic {
    pub q: DMatrix<f64>,
    pub alpha: DVector<f64>,
    pub m: DVector<f64>,
    pub b: DVector<f64>,
    pub c: f64,
    /// `Q` as a `(d, d)` tensor (`None` when `Q = I`: element-wise arithmetic only).
    q_t: Option<Tensor>,
    alpha_t: Tensor,
    m_t: Tensor,
    b_t: Tensor,
}

fn row_tensor(v: &DVector<f64>) -> Tensor {
    Tensor::from_slice(v.as_slice(), (1, v.len()), &Device::Cpu).unwrap()
}

/// A `(n, d)` tensor from host rows.
pub fn rows_tensor(rows: &[DVector<f64>], d: usize) -> Tensor {
    let data: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(data, (rows.len(), d), &Device::Cpu).unwrap()
}

/// Host rows of a `(n, d)` tensor.
pub fn host_rows(t: &Tensor) -> Vec<DVector<f64>> {
    t.to_dtype(DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap()
        .into_iter()
        .map(DVector::from_vec)
        .collect()
}

impl RotatedQuartic {
    pub fn new(
        q: Option<DMatrix<f64>>,
        alpha: DVector<f64>,
        m: DVector<f64>,
        b: DVector<f64>,
        c: f64,
    ) -> Self {
        let d = alpha.len();
        assert!(c > 0.0 && alpha.iter().all(|&a| a > 0.0));
        let q_t = q.as_ref().map(|q| {
            // Row-major data of Q for candle.
            let data: Vec<f64> = (0..d)
                .flat_map(|i| (0..d).map(move |j| (i, j)))
                .map(|(i, j)| q[(i, j)])
                .collect();
            Tensor::from_vec(data, (d, d), &Device::Cpu).unwrap()
        });
        Self {
            q: q.unwrap_or_else(|| DMatrix::identity(d, d)),
            alpha_t: row_tensor(&alpha),
            m_t: row_tensor(&m),
            b_t: row_tensor(&b),
            alpha,
            m,
            b,
            c,
            q_t,
        }
    }

    pub fn dim(&self) -> usize {
        self.alpha.len()
    }

    /// Strong-convexity modulus `c·min_j α_j` (a lower bound of `∇²Φ` everywhere).
    pub fn modulus(&self) -> f64 {
        self.c * self.alpha.min()
    }

    /// The exact inverse `x = (∇Φ)⁻¹(y)` of one row, on the host.
    pub fn inverse(&self, y: &DVector<f64>) -> DVector<f64> {
        let w = self.q.transpose() * (y - &self.b);
        let z = DVector::from_fn(self.dim(), |j, _| cardano(self.alpha[j], w[j] / self.c));
        &self.m + &self.q * z
    }

    /// `∇Φ(x)` of one row on the host, and a bound on the magnitudes that its rounding
    /// scales with: `z = Qᵀ(x − m)` is off by about `d·ε·(|x| + |m|)`, which the curvature
    /// `c(3z² + α)` amplifies, plus the summed terms `c|z³ + αz|` and `|b|`.
    pub fn gradient_host(&self, x: &DVector<f64>) -> (DVector<f64>, f64) {
        let d = self.dim() as f64;
        let z = self.q.transpose() * (x - &self.m);
        let inner = DVector::from_fn(self.dim(), |j, _| z[j] * z[j] * z[j] + self.alpha[j] * z[j]);
        let curvature = (0..self.dim())
            .map(|j| 3.0 * z[j] * z[j] + self.alpha[j])
            .fold(0.0f64, f64::max);
        let g = &self.q * &inner * self.c + &self.b;
        let terms =
            self.c * d * (inner.amax() + curvature * (x.amax() + self.m.amax())) + self.b.amax();
        (g, terms)
    }

    /// A bound on `‖x − x*‖∞` for `x* = inverse(y)` from a residual bound
    /// `R ≥ ‖∇Φ(x) − y‖∞`: in the rotated coordinates the map is separable,
    /// `f_j(t) = c(t³ + α_j t)`, and `(f_j(t) − f_j(s))/(t − s) = c(t² + ts + s² + α_j) ≥
    /// c(α_j + ¾s²)` (the minimum over `t` is at `t = −s/2`), so `|z_j − z*_j| ≤ |(Qᵀr)_j| /
    /// (c(α_j + ¾z*_j²)) ≤ √d·R / (c(α_j + ¾z*_j²))`, and `‖x − x*‖∞ ≤ ‖Q(z − z*)‖₂ = ‖z − z*‖₂`.
    pub fn error_bound(&self, x_star: &DVector<f64>, residual: f64) -> f64 {
        let z = self.q.transpose() * (x_star - &self.m);
        let sd = (self.dim() as f64).sqrt();
        (0..self.dim())
            .map(|j| {
                let e = sd * residual / (self.c * (self.alpha[j] + 0.75 * z[j] * z[j]));
                e * e
            })
            .sum::<f64>()
            .sqrt()
    }

    fn z(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let shifted = x.broadcast_sub(&self.m_t)?;
        match &self.q_t {
            Some(q) => shifted.matmul(q),
            None => Ok(shifted),
        }
    }

    fn rotate_back(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        match &self.q_t {
            Some(q) => t.matmul(&q.t()?),
            None => Ok(t.clone()),
        }
    }
}

impl BatchedPotential for RotatedQuartic {
    fn value_and_gradient(&self, x: &Tensor) -> Result<(Tensor, Tensor), ConvexOptError> {
        let z = self.z(x)?;
        let z2 = z.sqr()?;
        let quart = ((z2.sqr()? * 0.25)? + z2.broadcast_mul(&self.alpha_t)?.affine(0.5, 0.0)?)?;
        let value = ((quart.sum(1)? * self.c)? + x.broadcast_mul(&self.b_t)?.sum(1)?)?;
        let inner = ((&z2 * &z)? + z.broadcast_mul(&self.alpha_t)?)?;
        let grad = (self.rotate_back(&inner)? * self.c)?.broadcast_add(&self.b_t)?;
        Ok((value, grad))
    }

    fn hvp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor, ConvexOptError> {
        let z = self.z(x)?;
        let curv = (z.sqr()? * 3.0)?.broadcast_add(&self.alpha_t)?;
        let vz = match &self.q_t {
            Some(q) => v.matmul(q)?,
            None => v.clone(),
        };
        Ok((self.rotate_back(&(curv * vz)?)? * self.c)?)
    }
}

/// The rounding slack of a recomputed residual `‖∇Φ(x) − y‖∞`: the gradient sums at most
/// `d + 2` products whose magnitudes are at most `terms` (plus `|y|`), so each entry is off by
/// at most `(d + 3)·ε·(terms + |y|)` (standard summation bound, first order); doubled.
pub fn rounding_slack(d: usize, terms: f64, y_inf: f64) -> f64 {
    2.0 * (d as f64 + 3.0) * EPS * (terms + y_inf)
}

/// `abs + rel·‖y‖∞`, the per-sample threshold the solvers must report.
pub fn expected_tolerance(opts: &InversionOptions, y: &DVector<f64>) -> f64 {
    let (abs, rel) = opts.tolerances(DType::F64).unwrap();
    abs + rel * y.amax()
}

/// The report of a run is internally consistent and honest against an independent
/// recomputation `recomputed[i]` (host residual at the returned `x`) with rounding slack
/// `slack[i]`: reported residuals equal the recomputed ones to rounding, flags follow
/// residual ≤ tolerance exactly, `Termination::Converged` iff converged, tolerances are
/// `abs + rel·‖y_i‖∞`, iteration caps hold. Returns a message instead of panicking so that
/// proptest can shrink.
pub fn check_report(
    name: &str,
    res: &InversionResult,
    ys: &[DVector<f64>],
    recomputed: &[f64],
    slack: &[f64],
    opts: &InversionOptions,
) -> Result<(), String> {
    let n = ys.len();
    if res.residual_inf.len() != n
        || res.converged.len() != n
        || res.tolerance.len() != n
        || res.termination.len() != n
        || res.iterations.len() != n
        || res.x.dims() != [n, ys.first().map_or(0, |y| y.len())]
    {
        return Err(format!("{name}: report of the wrong size for {n} rows"));
    }
    for i in 0..n {
        let tol = expected_tolerance(opts, &ys[i]);
        // The same two-term sum, perhaps evaluated in another order: within an ulp.
        if (res.tolerance[i] - tol).abs() > 4.0 * EPS * tol {
            return Err(format!(
                "{name}: row {i} tolerance {} ≠ {tol}",
                res.tolerance[i]
            ));
        }
        // A NaN on either side is a mismatch too.
        let gap = (res.residual_inf[i] - recomputed[i]).abs();
        if gap.is_nan() || gap > slack[i] {
            return Err(format!(
                "{name}: row {i} reports residual {:e}, recomputed {:e} (slack {:e})",
                res.residual_inf[i], recomputed[i], slack[i]
            ));
        }
        // Met, and resolvable: a tolerance below the f64 residual's resolution
        // (`RESIDUAL_RESOLUTION_ROUNDOFFS·ε·max(1, ‖y_i‖∞)`) that is met ends `BelowResolution`.
        let met = res.residual_inf[i] <= res.tolerance[i];
        let resolvable = res.tolerance[i]
            >= RESIDUAL_RESOLUTION_ROUNDOFFS * f64::EPSILON * ys[i].amax().max(1.0);
        if res.converged[i] != (met && resolvable) {
            return Err(format!(
                "{name}: row {i} converged = {} at residual {:e}, tolerance {:e}",
                res.converged[i], res.residual_inf[i], res.tolerance[i]
            ));
        }
        if (res.termination[i] == Termination::BelowResolution) != (met && !resolvable) {
            return Err(format!(
                "{name}: row {i} termination {:?} at residual {:e}, tolerance {:e}",
                res.termination[i], res.residual_inf[i], res.tolerance[i]
            ));
        }
        if res.converged[i] != (res.termination[i] == Termination::Converged) {
            return Err(format!(
                "{name}: row {i} converged = {} but termination {:?}",
                res.converged[i], res.termination[i]
            ));
        }
        if res.converged[i] && recomputed[i] > res.tolerance[i] + slack[i] {
            return Err(format!(
                "{name}: row {i} flagged converged, recomputed residual {:e} > {:e}",
                recomputed[i], res.tolerance[i]
            ));
        }
        if res.iterations[i] > opts.max_iterations {
            return Err(format!(
                "{name}: row {i} took {} > {} iterations",
                res.iterations[i], opts.max_iterations
            ));
        }
    }
    if res.stats.outer_iterations > opts.max_iterations {
        return Err(format!(
            "{name}: {} outer iterations > cap {}",
            res.stats.outer_iterations, opts.max_iterations
        ));
    }
    Ok(())
}

/// A seeded generator for the host-side random data of one proptest case.
pub fn case_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}
