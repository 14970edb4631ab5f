//! The training objective of an image flow: the reference's `compute_loss` in train mode
//! (images-vae.md §2.4), bits per dimension with each block's log-det replaced by the CG
//! surrogate.

use candle_core::Tensor;
use rand::Rng;

use crate::block::CgReport;
use crate::config::SurrogateParams;
use crate::error::Result;
use crate::image::flow::{ImageFlow, ImageLayer};

/// The output of [`ImageFlow::surrogate_loss`].
///
/// ```
/// # use cpflow::candle::{DType, Device};
/// # use cpflow::image::{ImageFlow, ImageModelConfig, ImageSet};
/// # use cpflow::icnn::ImageShape;
/// # use cpflow::rand::SeedableRng;
/// # fn main() -> cpflow::Result<()> {
/// // A one-block flow on 4×4 grey images, initialised on two dequantised images.
/// let shape = ImageShape::new(1, 4, 4);
/// let model = ImageModelConfig {
///     width: 4, depth: 2, nblocks: vec![1], float: cpflow::FloatType::F64, ..Default::default()
/// };
/// let flow = ImageFlow::new(model.flow_config(shape, 0.05)?, &Device::Cpu)?;
/// let set = ImageSet::new(shape, (0..32).map(|i| (i * 37 % 256) as u8).collect())?;
/// let mut rng = cpflow::rand::rngs::StdRng::seed_from_u64(0);
/// let x = set.dequantized_range(0, 2, DType::F64, &Device::Cpu, &mut rng)?;
/// flow.initialize(&x)?;
/// let out = flow.surrogate_loss(&x, &cpflow::SurrogateParams::default(), &mut rng)?;
/// assert!(out.loss.to_scalar::<f64>()?.is_finite());
/// // One CG system per image and probe in the single block, all converged.
/// assert_eq!(out.cg.iterations.len(), 2);
/// assert_eq!(out.cg.converged, 2);
/// // The loss tracks the parameters: its gradient reaches the block's weights.
/// let grads = out.loss.backward()?;
/// assert!(flow.named_vars().iter().any(|(k, v)| k.contains("w1") && grads.get(v).is_some()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ImageSurrogateLoss {
    /// Scalar `mean_batch[−(log N(z) + logit and ActNorm log-dets + Σ_blocks S) + D ln 256]
    /// / (D ln 2)`, parameter-tracking: the reference's training "bits/dim". **Its value is
    /// not a bpd** (each block contributes `S ≈ D`, not its log-det); its gradient estimates
    /// the gradient of the mean bpd.
    pub loss: Tensor,
    /// CG report, all blocks together.
    pub cg: CgReport,
}

impl ImageFlow {
    /// The CG-surrogate training loss in the reference's bits-per-dimension units (the scale
    /// matters for gradient clipping at norm 1). `x` as [`ImageFlow::check_input`] accepts.
    pub fn surrogate_loss<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        params: &SurrogateParams,
        rng: &mut R,
    ) -> Result<ImageSurrogateLoss> {
        self.ensure_initialized()?;
        let mut h = self.check_input(x)?;
        let mut scalar_ld: Option<Tensor> = None;
        let mut sample_ld: Option<Tensor> = None;
        let mut out: Vec<Tensor> = Vec::new();
        let mut cg = CgReport::default();
        let add = |acc: Option<Tensor>, t: Tensor| -> Result<Option<Tensor>> {
            Ok(Some(match acc {
                Some(a) => (a + t)?,
                None => t,
            }))
        };
        for l in self.layers() {
            h = match l {
                ImageLayer::Logit(t) => {
                    let (y, l) = t.forward(&h)?;
                    sample_ld = add(sample_ld, l)?;
                    y
                }
                ImageLayer::ActNorm(a) => {
                    let (y, l) = a.forward(&h)?;
                    scalar_ld = add(scalar_ld, l)?;
                    y
                }
                ImageLayer::FeatureActNorm(a) => {
                    let (y, l) = a.forward(&h)?;
                    scalar_ld = add(scalar_ld, l)?;
                    y
                }
                ImageLayer::Squeeze(s) => s.forward(&h)?,
                ImageLayer::FactorOut(n) => {
                    let keep = h.dim(1)? - n;
                    out.push(h.narrow(1, keep, *n)?);
                    h.narrow(1, 0, keep)?
                }
                ImageLayer::Cpf(b) => {
                    let (z, s, rep) =
                        b.forward_with_surrogate(&h.contiguous()?, None, params, rng)?;
                    cg.extend(&rep);
                    sample_ld = add(sample_ld, s)?;
                    z
                }
            };
        }
        out.push(h);
        let z = Tensor::cat(&out, 1)?;
        let mut lp = self.prior().log_prob(&z)?;
        if let Some(s) = sample_ld {
            lp = (lp + s)?;
        }
        if let Some(s) = scalar_ld {
            lp = lp.broadcast_add(&s)?;
        }
        let d = self.dim() as f64;
        let ln2 = std::f64::consts::LN_2;
        let loss = lp.mean_all()?.affine(-1.0 / (d * ln2), 256f64.ln() / ln2)?;
        Ok(ImageSurrogateLoss { loss, cg })
    }
}
