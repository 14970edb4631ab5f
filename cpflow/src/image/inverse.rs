//! Inverting an [`ImageFlow`] and sampling from it.

use candle_core::Tensor;
use rand::Rng;

use crate::block_inverse::InverseParams;
use crate::error::{CpflowError, Result};
use crate::flow::check_matrix_rows;
use crate::flow_sample::InverseReport;
use crate::image::flow::{ImageFlow, ImageLayer};

/// Images recovered from latents, with the per-sample convergence report of every block.
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
/// let inv = flow.sample(3, 0.5, &mut rng)?; // three images at temperature ½
/// assert!(inv.report.all_converged());
/// assert_eq!(flow.to_images(&inv.x)?.dims(), &[3, 1, 4, 4]);
/// // Inverting the latents of x gives x back.
/// let back = flow.inverse(&flow.forward(&x)?)?;
/// let err = (back.x - &x)?.abs()?.max_all()?.to_scalar::<f64>()?;
/// assert!(err < 1e-8, "{err}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ImageInverse {
    /// `x = f⁻¹(z)` as `(B, D)` rows (see [`ImageFlow::to_images`]), detached. Rows whose
    /// `report.converged` is false are the solver's last iterates, not solutions.
    pub x: Tensor,
    /// Per block (last block first) the solver report, and the per-sample verdict.
    pub report: InverseReport,
}

impl ImageFlow {
    /// The solver parameters [`ImageFlow::inverse`] and [`ImageFlow::sample`] use: Newton–CG
    /// with a per-block tolerance `abs = rel = 2e-6` on `‖∇Φ(x) − y‖∞` in f32 and `1e-11`
    /// in f64. These are tighter than the per-dtype defaults of [`InverseParams`] (f32:
    /// `2e-5` abs + `2e-5` rel) because the image error is the block residuals amplified by
    /// the ActNorm inverses (the init ActNorm divides by `1/std` of logit-space pixels, ≈ 6
    /// on MNIST): with the defaults, inverse of forward on 8 MNIST images (reference model,
    /// f32) was off by 2.3e-4; with `2e-6`, by 6e-7, in the same 3 Newton steps.
    pub fn default_inverse_params(&self) -> InverseParams {
        let tol = match self.float() {
            crate::config::FloatType::F32 => 2e-6,
            crate::config::FloatType::F64 => 1e-11,
        };
        InverseParams {
            abs_tolerance: Some(tol),
            rel_tolerance: Some(tol),
            ..Default::default()
        }
    }

    /// `x = f⁻¹(z)` with [`ImageFlow::default_inverse_params`].
    pub fn inverse(&self, z: &Tensor) -> Result<ImageInverse> {
        self.inverse_with(z, &self.default_inverse_params())
    }

    /// `x = f⁻¹(z)`: `z` `(B, D)` is split into the factored-out parts and the last scale,
    /// then every layer is undone in reverse order (blocks by the convex solver, the others in
    /// closed form). 0 latents give `(0, D)` and an empty report.
    pub fn inverse_with(&self, z: &Tensor, params: &InverseParams) -> Result<ImageInverse> {
        self.ensure_initialized()?;
        let z = check_matrix_rows(z, self.dim(), "latents", self.dtype(), self.device())?;
        let n = z.dim(0)?;
        if n == 0 {
            // Nothing to solve (as `Flow::inverse`): a `(0, D)` result, no block reports.
            return Ok(ImageInverse {
                x: z,
                report: InverseReport::new(0),
            });
        }
        let shapes = self.layer_shapes();
        let mut parts = Vec::with_capacity(shapes.factored.len());
        let mut at = 0;
        for s in &shapes.factored {
            parts.push(z.narrow(1, at, s.dim())?);
            at += s.dim();
        }
        let mut h = z.narrow(1, at, shapes.output.dim())?.detach();
        let mut report = InverseReport::new(n);
        for l in self.layers().iter().rev() {
            h = match l {
                ImageLayer::Logit(t) => t.inverse(&h)?,
                ImageLayer::ActNorm(a) => a.inverse(&h)?,
                ImageLayer::FeatureActNorm(a) => a.inverse(&h)?,
                ImageLayer::Squeeze(s) => s.inverse(&h)?,
                ImageLayer::FactorOut(_) => {
                    let f = parts.pop().ok_or_else(|| {
                        CpflowError::InvalidConfig("factor-out parts out of step".into())
                    })?;
                    Tensor::cat(&[h, f], 1)?
                }
                ImageLayer::Cpf(b) => report.record(b.inverse(&h.contiguous()?, None, params)?),
            };
        }
        report.mark_non_finite_rows(&h)?;
        report.warn_if_unconverged("image flow");
        Ok(ImageInverse { x: h, report })
    }

    /// Draw `n` images: `z = T·ε` with `ε` from the prior (host RNG) and temperature `T`
    /// (`1` = the model; `< 1` concentrates on the modes), then `x = f⁻¹(z)` with
    /// [`ImageFlow::default_inverse_params`]. Check `report` for unconverged samples.
    /// `n = 0` gives a `(0, D)` sample and an empty report, as [`crate::Flow::sample`].
    /// [`ImageFlow::sample_and_log_prob`] also gives the samples' log-density.
    pub fn sample<R: Rng + ?Sized>(
        &self,
        n: usize,
        temperature: f64,
        rng: &mut R,
    ) -> Result<ImageInverse> {
        self.sample_with(n, temperature, &self.default_inverse_params(), rng)
    }

    /// [`ImageFlow::sample`] with explicit solver parameters.
    pub fn sample_with<R: Rng + ?Sized>(
        &self,
        n: usize,
        temperature: f64,
        params: &InverseParams,
        rng: &mut R,
    ) -> Result<ImageInverse> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(CpflowError::InvalidInput(format!(
                "temperature must be finite and non-negative, got {temperature:?}"
            )));
        }
        let eps = self
            .prior()
            .sample(n, self.dim(), self.dtype(), self.device(), rng)?;
        self.inverse_with(&(eps * temperature)?, params)
    }
}
