//! Random probe vectors for the stochastic estimators, drawn on the host with `rand`.

use rand::Rng;
use rand_distr::StandardNormal;

use crate::LogdetError;

/// `batch·dim`, or [`LogdetError::SizeOverflow`] when that many `f64` cannot be allocated
/// (product overflows `usize`, or exceeds `isize::MAX` bytes).
fn probe_count(batch: usize, dim: usize) -> Result<usize, LogdetError> {
    batch
        .checked_mul(dim)
        .filter(|n| *n <= isize::MAX as usize / std::mem::size_of::<f64>())
        .ok_or_else(|| LogdetError::SizeOverflow {
            context: "probe batch (B, d)",
            dims: vec![batch, dim],
        })
}

/// Distribution of the probe entries.
///
/// ```
/// use logdet::{draw_probes, ProbeDistribution};
/// use rand::{SeedableRng, rngs::StdRng};
/// let mut rng = StdRng::seed_from_u64(7);
/// let signs = draw_probes(&mut rng, ProbeDistribution::default(), 2, 50)?;
/// assert!(signs.iter().all(|x| *x == 1.0 || *x == -1.0)); // Rademacher is the default
/// let normal = draw_probes(&mut rng, ProbeDistribution::Gaussian, 2, 50)?;
/// assert!(normal.iter().any(|x| x.abs() != 1.0));
/// # Ok::<(), logdet::LogdetError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProbeDistribution {
    /// Independent ±1 entries (the reference's `sample_rademacher`). Minimal variance for
    /// Hutchinson: `Var[vᵀAv] = 2(‖A_s‖_F² − Σ_k A_kk²)` with `A_s` the symmetric part.
    #[default]
    Rademacher,
    /// Independent standard normal entries: `Var[vᵀAv] = 2‖A_s‖_F²`.
    Gaussian,
}

/// `batch·dim` independent Rademacher (±1) values (system-major).
/// [`LogdetError::SizeOverflow`] when `batch·dim` values cannot be allocated.
///
/// ```
/// use rand::{SeedableRng, rngs::StdRng};
/// let v = logdet::rademacher_probes(&mut StdRng::seed_from_u64(0), 2, 3).unwrap();
/// assert_eq!(v.len(), 6);
/// assert!(v.iter().all(|x| x.abs() == 1.0));
/// ```
pub fn rademacher_probes(
    rng: &mut impl Rng,
    batch: usize,
    dim: usize,
) -> Result<Vec<f64>, LogdetError> {
    Ok((0..probe_count(batch, dim)?)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect())
}

/// `batch·dim` independent standard normal values (system-major).
/// [`LogdetError::SizeOverflow`] when `batch·dim` values cannot be allocated.
///
/// ```
/// use logdet::{gaussian_probes, LogdetError};
/// use rand::{SeedableRng, rngs::StdRng};
/// let v = gaussian_probes(&mut StdRng::seed_from_u64(0), 4, 1000)?;
/// assert_eq!(v.len(), 4000);
/// // Mean 0 and variance 1: with 4000 draws the sample mean has standard error ≈ 0.016,
/// // the sample variance ≈ 0.022; the bounds are over 6 standard errors.
/// let mean = v.iter().sum::<f64>() / 4000.0;
/// let var = v.iter().map(|x| x * x).sum::<f64>() / 4000.0;
/// assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.15);
/// // The same seed gives the same probes.
/// assert_eq!(v, gaussian_probes(&mut StdRng::seed_from_u64(0), 4, 1000)?);
/// # Ok::<(), LogdetError>(())
/// ```
pub fn gaussian_probes(
    rng: &mut impl Rng,
    batch: usize,
    dim: usize,
) -> Result<Vec<f64>, LogdetError> {
    Ok((0..probe_count(batch, dim)?)
        .map(|_| rng.sample(StandardNormal))
        .collect())
}

/// Probes of the given distribution, system-major (`batch·dim` values).
/// [`LogdetError::SizeOverflow`] when `batch·dim` values cannot be allocated.
///
/// ```
/// use logdet::{draw_probes, rademacher_probes, LogdetError, ProbeDistribution};
/// use rand::{SeedableRng, rngs::StdRng};
/// let v = draw_probes(&mut StdRng::seed_from_u64(3), ProbeDistribution::Rademacher, 2, 3)?;
/// assert_eq!(v, rademacher_probes(&mut StdRng::seed_from_u64(3), 2, 3)?);
/// // A batch too large to allocate is refused before drawing anything.
/// let err = draw_probes(&mut StdRng::seed_from_u64(3), ProbeDistribution::Gaussian, usize::MAX, 2);
/// assert!(matches!(err, Err(LogdetError::SizeOverflow { .. })));
/// # Ok::<(), LogdetError>(())
/// ```
pub fn draw_probes(
    rng: &mut impl Rng,
    distribution: ProbeDistribution,
    batch: usize,
    dim: usize,
) -> Result<Vec<f64>, LogdetError> {
    match distribution {
        ProbeDistribution::Rademacher => rademacher_probes(rng, batch, dim),
        ProbeDistribution::Gaussian => gaussian_probes(rng, batch, dim),
    }
}

/// A Rademacher tensor with the shape, dtype and device of `like` (feature `candle`; a float
/// dtype, [`LogdetError::NotFloat`] otherwise). The signs are drawn on the host with `rng`
/// (candle's RNG cannot be seeded) and uploaded once.
///
/// ```
/// use candle_core::{Device, DType, Tensor};
/// use rand::{SeedableRng, rngs::StdRng};
/// let x = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap();
/// let v = logdet::rademacher_like(&x, &mut StdRng::seed_from_u64(1)).unwrap();
/// assert_eq!(v.dims(), &[4, 3]);
/// assert_eq!(v.dtype(), DType::F32);
/// ```
#[cfg(feature = "candle")]
pub fn rademacher_like(
    like: &candle_core::Tensor,
    rng: &mut impl Rng,
) -> Result<candle_core::Tensor, LogdetError> {
    probes_like(like, rng, ProbeDistribution::Rademacher)
}

/// A probe tensor of the given distribution with the shape, dtype and device of `like`
/// (feature `candle`; any shape). `like` must have a float dtype
/// ([`LogdetError::NotFloat`] otherwise: a `U32` tensor gave all-ones "probes").
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use logdet::{probes_like, LogdetError, ProbeDistribution};
/// use rand::{SeedableRng, rngs::StdRng};
/// let mut rng = StdRng::seed_from_u64(0);
/// let like = Tensor::zeros((2, 3, 4), DType::F64, &Device::Cpu)?;
/// let v = probes_like(&like, &mut rng, ProbeDistribution::Gaussian)?;
/// assert_eq!((v.dims(), v.dtype()), (&[2, 3, 4][..], DType::F64));
/// assert!(v.flatten_all()?.to_vec1::<f64>()?.iter().any(|x| x.abs() != 1.0));
/// let ints = Tensor::zeros((2, 3), DType::U32, &Device::Cpu)?;
/// let err = probes_like(&ints, &mut rng, ProbeDistribution::Rademacher);
/// assert!(matches!(err, Err(LogdetError::NotFloat { .. })));
/// # Ok::<(), LogdetError>(())
/// ```
#[cfg(feature = "candle")]
pub fn probes_like(
    like: &candle_core::Tensor,
    rng: &mut impl Rng,
    distribution: ProbeDistribution,
) -> Result<candle_core::Tensor, LogdetError> {
    if !like.dtype().is_float() {
        return Err(LogdetError::NotFloat {
            found: format!("{:?}", like.dtype()),
        });
    }
    let n = like.elem_count();
    let data = draw_probes(rng, distribution, 1, n)?;
    let t = candle_core::Tensor::from_vec(data, like.shape(), like.device())?;
    Ok(t.to_dtype(like.dtype())?)
}
