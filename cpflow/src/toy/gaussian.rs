//! The Gaussian target of the optimal-transport experiment (`data/toy_data.py:Gaussian`):
//! `N(m, C)` with `m ~ N(0, I)` and `C ~ Wishart(d + 1, I)`, its entropy, log-density and the
//! closed-form squared 2-Wasserstein distance to another Gaussian.

use super::ToyError;
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::Rng;
use rand_distr::StandardNormal;
use std::f64::consts::{E, PI};

/// Draws `C ~ Wishart(df, I_dim)`: `C = Σ_{k=1}^{df} g_k g_kᵀ` with `g_k ~ N(0, I)`
/// (scipy `wishart.rvs(df, I)` for integer `df`).
///
/// ```
/// use cpflow::rand::SeedableRng;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// // E[C] = df·I: the average of 2000 draws of Wishart(3, I₂) is close to 3·I.
/// let mut mean = nalgebra::DMatrix::<f64>::zeros(2, 2);
/// for _ in 0..2000 {
///     let c = cpflow::toy::sample_wishart(2, 3, &mut rng);
///     assert_eq!(c, c.transpose());
///     mean += c / 2000.0;
/// }
/// let err = (&mean - nalgebra::DMatrix::<f64>::identity(2, 2) * 3.0).abs().max();
/// assert!(err < 0.2, "{mean}"); // entries have standard errors ≈ 0.05
/// ```
pub fn sample_wishart<R: Rng + ?Sized>(dim: usize, df: usize, rng: &mut R) -> DMatrix<f64> {
    let g = DMatrix::<f64>::from_fn(dim, df, |_, _| rng.sample(StandardNormal));
    &g * g.transpose()
}

/// Principal square root of a symmetric positive semi-definite matrix via its symmetric
/// eigendecomposition (negative round-off eigenvalues are clamped to 0).
pub(crate) fn sqrtm_psd(a: &DMatrix<f64>) -> DMatrix<f64> {
    let eig = SymmetricEigen::new(a.clone());
    let s = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&s) * eig.eigenvectors.transpose()
}

/// Closed-form `W₂²(N(m₁, C₁), N(m₂, C₂)) = ‖m₁ − m₂‖² + tr(C₁ + C₂ − 2 (C₂^{½} C₁ C₂^{½})^{½})`.
///
/// ```
/// use nalgebra::{DMatrix, DVector};
/// // 1-D: W₂² = (m₁ − m₂)² + (σ₁ − σ₂)².
/// let w = cpflow::toy::w2_squared_gaussians(
///     &DVector::from_vec(vec![1.0]), &DMatrix::from_element(1, 1, 4.0),
///     &DVector::from_vec(vec![0.0]), &DMatrix::from_element(1, 1, 1.0)).unwrap();
/// assert!((w - 2.0).abs() < 1e-12);
/// ```
pub fn w2_squared_gaussians(
    m1: &DVector<f64>,
    c1: &DMatrix<f64>,
    m2: &DVector<f64>,
    c2: &DMatrix<f64>,
) -> Result<f64, ToyError> {
    let d = m1.len();
    if m2.len() != d || c1.shape() != (d, d) || c2.shape() != (d, d) {
        return Err(ToyError::InvalidArgument(format!(
            "shape mismatch: m1 {d}, m2 {}, C1 {:?}, C2 {:?}",
            m2.len(),
            c1.shape(),
            c2.shape()
        )));
    }
    let r2 = sqrtm_psd(c2);
    let mut inner = &r2 * c1 * &r2;
    // Symmetrise away the round-off before the eigendecomposition.
    inner = (&inner + inner.transpose()) * 0.5;
    let cross = sqrtm_psd(&inner).trace();
    Ok((m1 - m2).norm_squared() + c1.trace() + c2.trace() - 2.0 * cross)
}

/// A multivariate Gaussian `N(m, C)` with a cached Cholesky factor.
///
/// ```
/// use cpflow::toy::GaussianTarget;
/// use nalgebra::{DMatrix, DVector};
/// use std::f64::consts::PI;
/// let g = GaussianTarget::paper_2d();
/// // At the mean: log N(m; m, C) = −log(2π) − ½ log det C, det C = 0.9² − 0.75².
/// let det: f64 = 0.9 * 0.9 - 0.75 * 0.75;
/// let at_mean = g.log_density(&[1.5, 1.0]).unwrap();
/// assert!((at_mean + (2.0 * PI).ln() + 0.5 * det.ln()).abs() < 1e-12);
/// // N(0, I) is at W₂ distance 0 from itself and has entropy log(2πe).
/// let std = GaussianTarget::new(DVector::zeros(2), DMatrix::identity(2, 2)).unwrap();
/// assert!(std.w2_squared_to_standard_normal().abs() < 1e-12);
/// assert!((std.entropy() - (2.0 * PI * std::f64::consts::E).ln()).abs() < 1e-12);
/// // A covariance that is not positive definite is refused.
/// assert!(GaussianTarget::new(DVector::zeros(2), DMatrix::from_element(2, 2, 1.0)).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct GaussianTarget {
    mean: DVector<f64>,
    cov: DMatrix<f64>,
    /// Lower Cholesky factor `L`, `C = L Lᵀ`.
    chol_l: DMatrix<f64>,
}

impl GaussianTarget {
    /// `N(mean, cov)`; `cov` must be symmetric positive definite.
    pub fn new(mean: DVector<f64>, cov: DMatrix<f64>) -> Result<Self, ToyError> {
        let d = mean.len();
        if d == 0 || cov.shape() != (d, d) {
            return Err(ToyError::InvalidArgument(format!(
                "mean of length {d} and covariance {:?}",
                cov.shape()
            )));
        }
        let asym = (&cov - cov.transpose()).abs().max();
        if asym > 1e-10 * cov.abs().max().max(1.0) {
            return Err(ToyError::InvalidArgument(
                "covariance is not symmetric".into(),
            ));
        }
        let chol = nalgebra::Cholesky::new(cov.clone()).ok_or_else(|| {
            ToyError::InvalidArgument("covariance is not positive definite".into())
        })?;
        let chol_l = chol.l();
        Ok(Self { mean, cov, chol_l })
    }

    /// The reference's random target: `m ~ N(0, I_d)`, `C ~ Wishart(d + 1, I_d)`.
    pub fn random<R: Rng + ?Sized>(dim: usize, rng: &mut R) -> Result<Self, ToyError> {
        if dim == 0 {
            return Err(ToyError::InvalidArgument("dimension must be ≥ 1".into()));
        }
        let mean = DVector::<f64>::from_fn(dim, |_, _| rng.sample(StandardNormal));
        let cov = sample_wishart(dim, dim + 1, rng);
        Self::new(mean, cov)
    }

    /// The fixed 2-D target of the reference `train_ot.py` (used there for visualisation):
    /// `m = (1.5, 1.0)`, `C = [[0.9, −0.75], [−0.75, 0.9]]`.
    pub fn paper_2d() -> Self {
        let mean = DVector::from_vec(vec![1.5, 1.0]);
        let cov = DMatrix::from_row_slice(2, 2, &[0.9, -0.75, -0.75, 0.9]);
        // Eigenvalues 0.15 and 1.65: positive definite, so `new` cannot fail.
        let chol_l = nalgebra::Cholesky::new(cov.clone())
            .map(|c| c.l())
            .unwrap_or_else(|| DMatrix::identity(2, 2));
        Self { mean, cov, chol_l }
    }

    /// Dimension `d`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The mean `m`.
    pub fn mean(&self) -> &DVector<f64> {
        &self.mean
    }

    /// The covariance `C`.
    pub fn cov(&self) -> &DMatrix<f64> {
        &self.cov
    }

    /// Draws `n` samples, returned row-major as a flat `n·d` vector (row `i` is sample `i`).
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<f64> {
        let d = self.dim();
        let mut out = Vec::with_capacity(n * d);
        let mut g = DVector::<f64>::zeros(d);
        for _ in 0..n {
            for v in g.iter_mut() {
                *v = rng.sample(StandardNormal);
            }
            let x = &self.mean + &self.chol_l * &g;
            out.extend(x.iter());
        }
        out
    }

    /// `log N(x; m, C)` for one point.
    pub fn log_density(&self, x: &[f64]) -> Result<f64, ToyError> {
        let d = self.dim();
        if x.len() != d {
            return Err(ToyError::InvalidArgument(format!(
                "point of length {} for a {d}-dimensional Gaussian",
                x.len()
            )));
        }
        let diff = DVector::from_column_slice(x) - &self.mean;
        let y = self
            .chol_l
            .solve_lower_triangular(&diff)
            .ok_or_else(|| ToyError::InvalidArgument("singular Cholesky factor".into()))?;
        let log_det: f64 = self.chol_l.diagonal().iter().map(|l| 2.0 * l.ln()).sum();
        Ok(-0.5 * (d as f64 * (2.0 * PI).ln() + log_det + y.norm_squared()))
    }

    /// Differential entropy `½ log det(2πe C)` (nats).
    pub fn entropy(&self) -> f64 {
        let log_det: f64 = self.chol_l.diagonal().iter().map(|l| 2.0 * l.ln()).sum();
        0.5 * (self.dim() as f64 * (2.0 * PI * E).ln() + log_det)
    }

    /// The optimal (Brenier) map to `N(0, I)`, `T(x) = C^{-½}(x − m)`, applied to row-major
    /// rows (`n·d` values). `mean ‖x − T(x)‖²` over samples of this Gaussian estimates
    /// [`GaussianTarget::w2_squared_to_standard_normal`].
    pub fn optimal_map_to_standard_normal(&self, rows: &[f64]) -> Vec<f64> {
        let eig = SymmetricEigen::new(self.cov.clone());
        let s = eig
            .eigenvalues
            .map(|l| 1.0 / l.max(f64::MIN_POSITIVE).sqrt());
        let a = &eig.eigenvectors * DMatrix::from_diagonal(&s) * eig.eigenvectors.transpose();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows.chunks(self.dim()) {
            let x = DVector::from_column_slice(row) - &self.mean;
            out.extend((&a * x).iter());
        }
        out
    }

    /// Closed-form `W₂²(N(m, C), N(0, I)) = ‖m‖² + tr(C + I − 2 C^{½})`: the optimal
    /// transport cost from this Gaussian to the standard normal.
    pub fn w2_squared_to_standard_normal(&self) -> f64 {
        let d = self.dim();
        self.mean.norm_squared() + self.cov.trace() + d as f64 - 2.0 * sqrtm_psd(&self.cov).trace()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn sqrtm_squares_back() {
        let mut rng = StdRng::seed_from_u64(0);
        let c = sample_wishart(5, 6, &mut rng);
        let r = sqrtm_psd(&c);
        assert!((&r * &r - &c).abs().max() < 1e-10 * c.abs().max());
    }

    #[test]
    fn w2_closed_form_special_cases() {
        // Diagonal covariances commute: W₂² = ‖Δm‖² + Σ (√a_i − √b_i)².
        let m1 = DVector::from_vec(vec![1.0, -2.0, 0.5]);
        let m2 = DVector::from_vec(vec![0.0, 1.0, 0.5]);
        let a = [4.0, 0.25, 9.0];
        let b = [1.0, 1.0, 16.0];
        let c1 = DMatrix::from_diagonal(&DVector::from_column_slice(&a));
        let c2 = DMatrix::from_diagonal(&DVector::from_column_slice(&b));
        let expected = 1.0 + 9.0 + 0.0 + (2.0f64 - 1.0).powi(2) + (0.5f64 - 1.0).powi(2) + 1.0;
        let w = w2_squared_gaussians(&m1, &c1, &m2, &c2).unwrap();
        assert!((w - expected).abs() < 1e-12, "{w} vs {expected}");
        // Rotating both Gaussians by the same orthogonal matrix leaves W₂ unchanged.
        let q =
            SymmetricEigen::new(sample_wishart(3, 4, &mut StdRng::seed_from_u64(1))).eigenvectors;
        let w_rot = w2_squared_gaussians(
            &(&q * &m1),
            &(&q * &c1 * q.transpose()),
            &(&q * &m2),
            &(&q * &c2 * q.transpose()),
        )
        .unwrap();
        assert!((w_rot - expected).abs() < 1e-10, "{w_rot}");
        // The standard-normal shortcut agrees with the general formula.
        let t = GaussianTarget::random(4, &mut StdRng::seed_from_u64(2)).unwrap();
        let general = w2_squared_gaussians(
            t.mean(),
            t.cov(),
            &DVector::zeros(4),
            &DMatrix::identity(4, 4),
        )
        .unwrap();
        assert!((general - t.w2_squared_to_standard_normal()).abs() < 1e-10);
        assert!(w2_squared_gaussians(&m1, &c1, &DVector::zeros(2), &c2).is_err());
    }

    #[test]
    fn paper_target_w2_matches_hand_computation() {
        // C = [[.9, −.75], [−.75, .9]] has eigenvalues 1.65 and 0.15, so
        // tr(C + I − 2C^½) = 1.8 + 2 − 2(√1.65 + √0.15); ‖m‖² = 3.25.
        let t = GaussianTarget::paper_2d();
        let expected = 3.25 + 3.8 - 2.0 * (1.65f64.sqrt() + 0.15f64.sqrt());
        assert!((t.w2_squared_to_standard_normal() - expected).abs() < 1e-12);
    }

    #[test]
    fn samples_have_the_target_moments_and_entropy() {
        let mut rng = StdRng::seed_from_u64(3);
        let t = GaussianTarget::random(3, &mut rng).unwrap();
        let n = 200_000;
        let x = t.sample(n, &mut rng);
        let d = 3;
        let mut mean = [0.0; 3];
        for row in x.chunks(d) {
            for k in 0..d {
                mean[k] += row[k] / n as f64;
            }
        }
        let mut cov = DMatrix::<f64>::zeros(d, d);
        for row in x.chunks(d) {
            for i in 0..d {
                for j in 0..d {
                    cov[(i, j)] += (row[i] - mean[i]) * (row[j] - mean[j]) / n as f64;
                }
            }
        }
        let scale = t.cov().abs().max();
        for (k, m) in mean.iter().enumerate() {
            // SE(mean) = √(C_kk / n) ≤ √(scale/2e5); 6 SE tolerance.
            assert!((m - t.mean()[k]).abs() < 6.0 * (scale / n as f64).sqrt());
        }
        // SE(cov entry) ≈ scale·√(2/n) ≈ 0.003·scale; 0.02·scale ≈ 6 SE.
        assert!(
            (&cov - t.cov()).abs().max() < 0.02 * scale,
            "{cov} vs {}",
            t.cov()
        );
        // Monte-Carlo cross-entropy equals the entropy (SE ≈ √(d/2)/√n ≈ 0.003).
        let nll = -x
            .chunks(d)
            .take(50_000)
            .map(|r| t.log_density(r).unwrap())
            .sum::<f64>()
            / 5e4;
        assert!((nll - t.entropy()).abs() < 0.03, "{nll} vs {}", t.entropy());
    }

    #[test]
    fn optimal_map_whitens_and_its_cost_is_w2() {
        let mut rng = StdRng::seed_from_u64(5);
        let t = GaussianTarget::random(3, &mut rng).unwrap();
        let n = 100_000;
        let x = t.sample(n, &mut rng);
        let z = t.optimal_map_to_standard_normal(&x);
        // z ~ N(0, I): second moments ≈ I (SE ≈ √(2/n) ≈ 0.0045; 0.03 ≈ 6 SE).
        for i in 0..3 {
            for j in 0..3 {
                let m: f64 = z.chunks(3).map(|r| r[i] * r[j]).sum::<f64>() / n as f64;
                let e = if i == j { 1.0 } else { 0.0 };
                assert!((m - e).abs() < 0.03, "({i},{j}) {m}");
            }
        }
        let cost: f64 = x
            .chunks(3)
            .zip(z.chunks(3))
            .map(|(a, b)| a.iter().zip(b).map(|(u, v)| (u - v).powi(2)).sum::<f64>())
            .sum::<f64>()
            / n as f64;
        let w2 = t.w2_squared_to_standard_normal();
        // Relative SE of the mean cost is a few 1e-3 here; 3% is a loose bound.
        assert!((cost - w2).abs() < 0.03 * w2, "{cost} vs {w2}");
    }

    #[test]
    fn wishart_mean_is_df_times_identity() {
        let mut rng = StdRng::seed_from_u64(4);
        let (d, df, reps) = (3, 4, 20_000);
        let mut acc = DMatrix::<f64>::zeros(d, d);
        for _ in 0..reps {
            acc += sample_wishart(d, df, &mut rng);
        }
        acc /= reps as f64;
        // E W = df·I; Var W_ii = 2·df = 8 → SE ≈ 0.02; off-diagonal Var = df → SE ≈ 0.014.
        let err = (&acc - DMatrix::<f64>::identity(d, d) * df as f64)
            .abs()
            .max();
        assert!(err < 0.1, "{acc}");
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let not_pd = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 1.0]);
        assert!(GaussianTarget::new(DVector::zeros(2), not_pd).is_err());
        assert!(GaussianTarget::random(0, &mut StdRng::seed_from_u64(0)).is_err());
        assert!(GaussianTarget::paper_2d().log_density(&[0.0]).is_err());
    }
}
