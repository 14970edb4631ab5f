//! Scoring a split: the single-sample negative ELBO with the exact `log q` (what Table 3
//! reports) and the importance-sampled log-likelihood, both with standard errors.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::data::{VaeData, VaeSplit};
use super::model::{Vae, VaeBatch};
use crate::error::Result;

/// A mean over images with its standard error (`sd / √n`).
///
/// ```
/// use cpflow::vae::MeanWithError;
/// let nats = MeanWithError::of(&[560.0, 580.0]);
/// assert_eq!((nats.mean, nats.std_err, nats.n), (570.0, 10.0, 2));
/// // In bits per dimension over 560 pixels: divided by 560·ln 2.
/// let bpd = nats.to_bits_per_dim(560);
/// assert!((bpd.mean - 570.0 / (560.0 * std::f64::consts::LN_2)).abs() < 1e-12);
/// assert!(MeanWithError::of(&[1.0]).std_err.is_nan());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanWithError {
    /// Mean over images.
    pub mean: f64,
    /// Standard error of the mean (`NaN` for one image).
    pub std_err: f64,
    /// Number of images.
    pub n: usize,
}

impl MeanWithError {
    /// Mean and standard error of `v`.
    ///
    /// ```
    /// let m = cpflow::vae::MeanWithError::of(&[1.0, 2.0, 3.0]);
    /// assert_eq!(m.mean, 2.0);
    /// assert!((m.std_err - 1.0 / 3f64.sqrt()).abs() < 1e-12);
    /// ```
    pub fn of(v: &[f64]) -> Self {
        let (mean, std_err) = crate::image::mean_and_std_err(v);
        MeanWithError {
            mean,
            std_err,
            n: v.len(),
        }
    }

    /// The same in bits per dimension over `dims` pixels.
    pub fn to_bits_per_dim(self, dims: usize) -> Self {
        let s = 1.0 / (dims as f64 * std::f64::consts::LN_2);
        MeanWithError {
            mean: self.mean * s,
            std_err: self.std_err * s,
            n: self.n,
        }
    }
}

/// The batch `idx` of a split as model input.
///
/// ```
/// use cpflow::vae::make_batch;
/// # use cpflow::candle::Device;
/// # use cpflow::vae::{PosteriorKind, Vae, VaeArchitecture, VaeData, VaeDatasetName};
/// # use cpflow::vae::{VaeImages, VaeLikelihood, VaeModelConfig, VaeSplit};
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // Static binary 28×28 images (as Caltech 101 Silhouettes), made up in place.
/// let images = |ks: &[usize]| VaeImages {
///     n: ks.len(),
///     pixels: ks
///         .iter()
///         .flat_map(|k| (0..784).map(move |i| u8::from((i / 28 + i % 28 + k) % 3 == 0)))
///         .collect(),
/// };
/// let data = VaeData {
///     name: VaeDatasetName::Caltech101,
///     likelihood: VaeLikelihood::Bernoulli,
///     height: 28,
///     width: 28,
///     train: images(&[0, 1, 2, 3]),
///     val: images(&[1, 2]),
///     test: images(&[0, 2]),
///     dynamic_binarization: false,
/// };
/// let cfg = VaeModelConfig {
///     latent_dim: 2,
///     architecture: VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 },
///     posterior: PosteriorKind::Gaussian,
///     ..Default::default()
/// };
/// let vae = Vae::new(&cfg, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu)?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let batch = make_batch(&vae, &data, VaeSplit::Val, &[1, 0], &mut rng)?;
/// assert_eq!(batch.x.dims(), &[2, 1, 28, 28]);
/// assert!(batch.targets.is_none()); // Bernoulli: the inputs are the targets
/// // Image 1 of the validation split is data.val.image(1), as 0/1 values.
/// let first = batch.x.get(0)?.flatten_all()?.to_vec1::<f64>()?;
/// assert!(first.iter().zip(data.val.image(1)).all(|(v, &p)| *v == f64::from(p)));
/// assert!(make_batch(&vae, &data, VaeSplit::Test, &[2], &mut rng).is_err()); // out of range
/// # Ok(())
/// # }
/// ```
pub fn make_batch<R: Rng + ?Sized>(
    vae: &Vae,
    data: &VaeData,
    split: VaeSplit,
    idx: &[usize],
    rng: &mut R,
) -> Result<VaeBatch> {
    let x = data.batch_inputs(split, idx, vae.network_dtype(), vae.device(), rng)?;
    let targets = match vae.likelihood() {
        super::data::VaeLikelihood::Categorical256 => {
            Some(data.batch_targets(split, idx, vae.device())?)
        }
        super::data::VaeLikelihood::Bernoulli => None,
    };
    Ok(VaeBatch { x, targets })
}

/// Per-image negative ELBO (exact `log q`, one posterior sample each) over the first `n`
/// images of a split, `batch` at a time.
///
/// ```
/// use cpflow::vae::split_neg_elbo;
/// # use cpflow::candle::Device;
/// # use cpflow::vae::{PosteriorKind, Vae, VaeArchitecture, VaeData, VaeDatasetName};
/// # use cpflow::vae::{VaeImages, VaeLikelihood, VaeModelConfig, VaeSplit};
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // Static binary 28×28 images (as Caltech 101 Silhouettes), made up in place.
/// let images = |ks: &[usize]| VaeImages {
///     n: ks.len(),
///     pixels: ks
///         .iter()
///         .flat_map(|k| (0..784).map(move |i| u8::from((i / 28 + i % 28 + k) % 3 == 0)))
///         .collect(),
/// };
/// let data = VaeData {
///     name: VaeDatasetName::Caltech101,
///     likelihood: VaeLikelihood::Bernoulli,
///     height: 28,
///     width: 28,
///     train: images(&[0, 1, 2, 3]),
///     val: images(&[1, 2]),
///     test: images(&[0, 2]),
///     dynamic_binarization: false,
/// };
/// let cfg = VaeModelConfig {
///     latent_dim: 2,
///     architecture: VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 },
///     posterior: PosteriorKind::Gaussian,
///     ..Default::default()
/// };
/// let vae = Vae::new(&cfg, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu)?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let first = cpflow::vae::make_batch(&vae, &data, VaeSplit::Train, &[0, 1], &mut rng)?;
/// vae.initialize(&first, &mut rng)?;
/// // At most the split's images, in batches of one.
/// let e = split_neg_elbo(&vae, &data, VaeSplit::Test, 10, 1, &mut rng)?;
/// assert_eq!(e.len(), 2);
/// assert!(e.iter().all(|v| v.is_finite() && *v > 0.0));
/// # Ok(())
/// # }
/// ```
pub fn split_neg_elbo<R: Rng + ?Sized>(
    vae: &Vae,
    data: &VaeData,
    split: VaeSplit,
    n: usize,
    batch: usize,
    rng: &mut R,
) -> Result<Vec<f64>> {
    split_neg_elbo_monitored(vae, data, split, n, batch, rng, |_| Ok(()))
}

/// [`split_neg_elbo`] calling `on_batch(images done)` after each batch (progress; an error it
/// returns stops the scoring and is returned).
pub(crate) fn split_neg_elbo_monitored<R: Rng + ?Sized>(
    vae: &Vae,
    data: &VaeData,
    split: VaeSplit,
    n: usize,
    batch: usize,
    rng: &mut R,
    mut on_batch: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<f64>> {
    let n = n.min(data.split(split).n);
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let idx: Vec<usize> = (i..(i + batch).min(n)).collect();
        let b = make_batch(vae, data, split, &idx, rng)?;
        out.extend(vae.neg_elbo_exact(&b, rng)?.neg_elbo);
        i += idx.len();
        on_batch(i)?;
    }
    Ok(out)
}

/// The importance-sampled negative log-likelihood of the first `n` images of a split.
/// Returns the per-image `−log p̂(x)` and the mean over images of each estimate's own
/// Monte-Carlo standard error, over the images whose estimate has one: `NaN` when none has,
/// as with one sample per image (`samples = 1`: no spread of the weights to estimate it from;
/// it was reported as 0). `on_image(done)` is called after each image (progress); an
/// error it returns stops the scoring and is returned (e.g. on an interrupt).
#[allow(clippy::too_many_arguments)]
///
/// ```
/// use cpflow::vae::split_importance_nll;
/// # use cpflow::candle::Device;
/// # use cpflow::vae::{PosteriorKind, Vae, VaeArchitecture, VaeData, VaeDatasetName};
/// # use cpflow::vae::{VaeImages, VaeLikelihood, VaeModelConfig, VaeSplit};
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // Static binary 28×28 images (as Caltech 101 Silhouettes), made up in place.
/// let images = |ks: &[usize]| VaeImages {
///     n: ks.len(),
///     pixels: ks
///         .iter()
///         .flat_map(|k| (0..784).map(move |i| u8::from((i / 28 + i % 28 + k) % 3 == 0)))
///         .collect(),
/// };
/// let data = VaeData {
///     name: VaeDatasetName::Caltech101,
///     likelihood: VaeLikelihood::Bernoulli,
///     height: 28,
///     width: 28,
///     train: images(&[0, 1, 2, 3]),
///     val: images(&[1, 2]),
///     test: images(&[0, 2]),
///     dynamic_binarization: false,
/// };
/// let cfg = VaeModelConfig {
///     latent_dim: 2,
///     architecture: VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 },
///     posterior: PosteriorKind::Gaussian,
///     ..Default::default()
/// };
/// let vae = Vae::new(&cfg, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu)?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let first = cpflow::vae::make_batch(&vae, &data, VaeSplit::Train, &[0, 1], &mut rng)?;
/// vae.initialize(&first, &mut rng)?;
/// let mut seen = Vec::new();
/// let (nll, mc) = split_importance_nll(&vae, &data, VaeSplit::Test, 2, 8, 4, &mut rng, |i| {
///     seen.push(i);
///     Ok(())
/// })?;
/// assert_eq!((nll.len(), seen), (2, vec![1, 2]));
/// assert!(mc.is_finite() && mc >= 0.0);
/// assert!(nll.iter().all(|v| v.is_finite() && *v > 0.0));
/// # Ok(())
/// # }
/// ```
pub fn split_importance_nll<R: Rng + ?Sized>(
    vae: &Vae,
    data: &VaeData,
    split: VaeSplit,
    n: usize,
    samples: usize,
    chunk: usize,
    rng: &mut R,
    on_image: impl FnMut(usize) -> Result<()>,
) -> Result<(Vec<f64>, f64)> {
    split_importance_nll_monitored(
        vae,
        data,
        split,
        n,
        samples,
        chunk,
        rng,
        |_| Ok(()),
        on_image,
    )
}

/// [`split_importance_nll`] that also calls `on_chunk(image)` before each chunk of samples
/// of image `image` (counting from 0): with millions of samples per image, the point where
/// an interrupt can stop the estimate.
#[allow(clippy::too_many_arguments)]
pub fn split_importance_nll_monitored<R: Rng + ?Sized>(
    vae: &Vae,
    data: &VaeData,
    split: VaeSplit,
    n: usize,
    samples: usize,
    chunk: usize,
    rng: &mut R,
    mut on_chunk: impl FnMut(usize) -> Result<()>,
    mut on_image: impl FnMut(usize) -> Result<()>,
) -> Result<(Vec<f64>, f64)> {
    let n = n.min(data.split(split).n);
    let (mut nll, mut mc, mut with_mc) = (Vec::with_capacity(n), 0.0, 0usize);
    for i in 0..n {
        let b = make_batch(vae, data, split, &[i], rng)?;
        let est =
            vae.importance_log_likelihood_monitored(&b, samples, chunk, rng, || on_chunk(i))?;
        for e in est {
            nll.push(-e.log_likelihood);
            if e.std_err.is_finite() {
                mc += e.std_err;
                with_mc += 1;
            }
        }
        on_image(i + 1)?;
    }
    let mc = if with_mc > 0 {
        mc / with_mc as f64
    } else {
        f64::NAN
    };
    Ok((nll, mc))
}
