//! Adamax (Kingma & Ba 2015, §7.1) with PyTorch's semantics, the VAE's optimiser
//! (`train_vae.py`: `Adamax(lr = 5e-4, eps = 1e-7)`), with a state that can be saved and
//! restored exactly.
//!
//! Per variable: `m ← β₁m + (1−β₁)g`, `u ← max(β₂u, |g| + ε)`,
//! `θ ← θ − lr/(1−β₁ᵗ) · m/u`.

use std::collections::{BTreeMap, HashMap};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::adamax_host::{apply_in_place, host_moments};
use super::shape_text::tuple_text;
use crate::error::{CpflowError, Result};

/// Hyper-parameters of [`Adamax`] (defaults: the reference's).
///
/// ```
/// use cpflow::vae::AdamaxParams;
/// let p: AdamaxParams = toml::from_str("lr = 1e-3").unwrap();
/// assert_eq!(p, AdamaxParams { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-7 });
/// assert!(toml::from_str::<AdamaxParams>("learning_rate = 1e-3").is_err()); // unknown key
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamaxParams {
    /// Learning rate (reference 5e-4).
    pub lr: f64,
    /// First-moment decay (0.9).
    pub beta1: f64,
    /// Infinity-norm decay (0.999).
    pub beta2: f64,
    /// Added to `|g|` (reference 1e-7).
    pub eps: f64,
}

impl Default for AdamaxParams {
    fn default() -> Self {
        AdamaxParams {
            lr: 5e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
        }
    }
}

impl AdamaxParams {
    /// Check the values: a finite learning rate ≥ 0, `beta1` and `beta2` in `[0, 1)` and a
    /// finite `eps > 0` (with 0 a parameter whose gradient is 0 on every step so far gets
    /// `0/0`). `key` is where the parameters sit in the configuration (`train.optimizer` for
    /// `cpflow vae`): the messages name `key.field`.
    ///
    /// ```
    /// let mut p = cpflow::vae::AdamaxParams::default();
    /// p.validate("train.optimizer").unwrap();
    /// p.beta2 = 1.0;
    /// let e = p.validate("train.optimizer").unwrap_err().to_string();
    /// assert!(e.contains("train.optimizer.beta2"), "{e}");
    /// ```
    pub fn validate(&self, key: &str) -> Result<()> {
        crate::adam::check_moment_params(key, self.lr, (self.beta1, self.beta2), self.eps)
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Option<Tensor>,
    u: Option<Tensor>,
    step: u64,
}

/// The Adamax optimiser over named variables; variables without a gradient in a step are
/// skipped (PyTorch's `p.grad is None`).
///
/// ```
/// use cpflow::candle::{Device, Tensor, Var};
/// use cpflow::vae::{Adamax, AdamaxParams};
/// # fn main() -> cpflow::Result<()> {
/// let x = Var::new(&[1.0f64, -2.0], &Device::Cpu)?;
/// let mut opt = Adamax::new(vec![("x".into(), x.clone())], AdamaxParams { lr: 0.1, ..Default::default() })?;
/// let grads = x.as_tensor().sqr()?.sum_all()?.backward()?;
/// opt.step(&grads)?;
/// // The first step moves every coordinate by lr against the sign of its gradient.
/// let v = x.as_tensor().to_vec1::<f64>()?;
/// assert!((v[0] - 0.9).abs() < 1e-6 && (v[1] + 1.9).abs() < 1e-6);
/// # Ok(())
/// # }
/// ```
pub struct Adamax {
    params: AdamaxParams,
    slots: Vec<Slot>,
}

/// Scalar part of the optimiser state (the moments are tensors, saved separately).
///
/// ```
/// use cpflow::candle::{Device, Var};
/// use cpflow::vae::{Adamax, AdamaxParams};
/// # fn main() -> cpflow::Result<()> {
/// let params = AdamaxParams { lr: 0.1, ..Default::default() };
/// let loss = |x: &Var| x.as_tensor().sqr().and_then(|t| t.sum_all());
/// let x = Var::new(&[1.0f64, -2.0], &Device::Cpu)?;
/// let mut opt = Adamax::new(vec![("x".into(), x.clone())], params.clone())?;
/// opt.step(&loss(&x)?.backward()?)?;
/// let state = opt.state();
/// assert_eq!(state.steps["x"], 1);
/// // A second optimiser restored from the state takes the same next step.
/// let y = Var::from_tensor(x.as_tensor())?;
/// let mut restored = Adamax::new(vec![("x".into(), y.clone())], params)?;
/// let tensors = opt.state_tensors().into_iter().collect();
/// restored.load_state(&state, &tensors)?;
/// opt.step(&loss(&x)?.backward()?)?;
/// restored.step(&loss(&y)?.backward()?)?;
/// assert_eq!(x.as_tensor().to_vec1::<f64>()?, y.as_tensor().to_vec1::<f64>()?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamaxState {
    /// Hyper-parameters.
    pub params: AdamaxParams,
    /// Per-variable step counts (variables that never had a gradient are absent).
    pub steps: BTreeMap<String, u64>,
}

/// The new moments `(m', u')` from candle's ops (any device and dtype).
fn composed_moments(
    g: &Tensor,
    m: Option<&Tensor>,
    u: Option<&Tensor>,
    p: &AdamaxParams,
) -> Result<(Tensor, Tensor)> {
    let m = match m {
        Some(m) => ((m * p.beta1)? + (g * (1.0 - p.beta1))?)?,
        None => (g * (1.0 - p.beta1))?,
    };
    let a = (g.abs()? + p.eps)?;
    let u = match u {
        Some(u) => (u * p.beta2)?.maximum(&a)?,
        None => a,
    };
    Ok((m, u))
}

impl Adamax {
    /// The optimiser over `vars` (kept in the given order); the parameters are checked by
    /// [`AdamaxParams::validate`].
    pub fn new(vars: Vec<(String, Var)>, params: AdamaxParams) -> Result<Self> {
        params.validate("optimizer")?;
        let slots = vars
            .into_iter()
            .map(|(name, var)| Slot {
                name,
                var,
                m: None,
                u: None,
                step: 0,
            })
            .collect();
        Ok(Adamax { params, slots })
    }

    /// One update from the gradients in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let p = self.params.clone();
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            slot.step += 1;
            let clr = p.lr / (1.0 - p.beta1.powi(slot.step as i32));
            let theta = slot.var.as_tensor();
            // CPU f32/f64: two fused parallel passes (`adamax_host.rs`), the same values.
            let host = if icnn::takes_host_kernels(theta.device()) && theta.dtype() == g.dtype() {
                host_moments(&g, slot.m.as_ref(), slot.u.as_ref(), &p)?
            } else {
                None
            };
            let (m, u) = match host {
                Some((m, u)) => {
                    apply_in_place(theta, &m, &u, clr)?;
                    (m, u)
                }
                None => {
                    let (m, u) = composed_moments(&g, slot.m.as_ref(), slot.u.as_ref(), &p)?;
                    slot.var.set(&(theta.detach() - ((&m / &u)? * clr)?)?)?;
                    (m, u)
                }
            };
            slot.m = Some(m);
            slot.u = Some(u);
        }
        Ok(())
    }

    /// Scalar state for a checkpoint.
    pub fn state(&self) -> AdamaxState {
        AdamaxState {
            params: self.params.clone(),
            steps: self
                .slots
                .iter()
                .filter(|s| s.step > 0)
                .map(|s| (s.name.clone(), s.step))
                .collect(),
        }
    }

    /// Moment tensors for a checkpoint, named `adamax.m.<var>` / `adamax.u.<var>`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for s in &self.slots {
            if let (Some(m), Some(u)) = (&s.m, &s.u) {
                out.push((format!("adamax.m.{}", s.name), m.clone()));
                out.push((format!("adamax.u.{}", s.name), u.clone()));
            }
        }
        out
    }

    /// Restore the state saved by [`Adamax::state`] and [`Adamax::state_tensors`].
    pub fn load_state(
        &mut self,
        state: &AdamaxState,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<()> {
        self.params = state.params.clone();
        for s in &mut self.slots {
            let Some(&step) = state.steps.get(&s.name) else {
                (s.m, s.u, s.step) = (None, None, 0);
                continue;
            };
            let want = s.var.as_tensor();
            let get = |k: String| -> Result<Tensor> {
                let t = tensors.get(&k).ok_or_else(|| {
                    CpflowError::Checkpoint(format!("missing optimiser tensor {k}"))
                })?;
                if t.shape() != want.shape() {
                    return Err(CpflowError::Checkpoint(format!(
                        "optimiser tensor {k} has shape {}, expected {}",
                        tuple_text(t.dims()),
                        tuple_text(want.dims())
                    )));
                }
                Ok(t.to_dtype(want.dtype())?.to_device(want.device())?)
            };
            s.m = Some(get(format!("adamax.m.{}", s.name))?);
            s.u = Some(get(format!("adamax.u.{}", s.name))?);
            s.step = step;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The fused CPU update (`adamax_host.rs`) against candle's composed ops: the same
    //! operations in the same order, so equal to the bit.
    use super::super::adamax_host::{apply_in_place, host_moments};
    use super::{AdamaxParams, composed_moments};
    use candle_core::{DType, Device, Tensor, Var};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn bits(t: &Tensor) -> Vec<u64> {
        let t = t.flatten_all().unwrap();
        match t.dtype() {
            DType::F32 => t
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits() as u64)
                .collect(),
            _ => t
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect(),
        }
    }

    /// Six steps on a `(70, 300)` variable (above one parallel task) with random gradients,
    /// a tenth of them exactly zero (`u` then decays below `|g| + ε` or not), from the
    /// first step (no moments yet), f32 and f64.
    #[test]
    fn fused_update_equals_the_composed_ops_to_the_bit() {
        let mut rng = StdRng::seed_from_u64(61);
        let p = AdamaxParams {
            lr: 0.01,
            ..Default::default()
        };
        for dtype in [DType::F32, DType::F64] {
            let init: Vec<f64> = (0..70 * 300).map(|_| rng.random::<f64>() - 0.5).collect();
            let init = Tensor::from_vec(init, (70, 300), &Device::Cpu).unwrap();
            let init = init.to_dtype(dtype).unwrap();
            let (ours, theirs) = (
                Var::from_tensor(&init).unwrap(),
                Var::from_tensor(&init).unwrap(),
            );
            let (mut mu_ours, mut mu_theirs) = (None, None);
            for step in 1..=6 {
                let g: Vec<f64> = (0..70 * 300)
                    .map(|_| {
                        if rng.random::<f64>() < 0.1 {
                            0.0
                        } else {
                            rng.random::<f64>() - 0.5
                        }
                    })
                    .collect();
                let g = Tensor::from_vec(g, (70, 300), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let clr = p.lr / (1.0 - p.beta1.powi(step));
                let (m, u) = match &mu_ours {
                    Some((m, u)) => host_moments(&g, Some(m), Some(u), &p),
                    None => host_moments(&g, None, None, &p),
                }
                .unwrap()
                .expect("contiguous CPU tensors take the host path");
                apply_in_place(ours.as_tensor(), &m, &u, clr).unwrap();
                mu_ours = Some((m, u));
                let (m, u) = match &mu_theirs {
                    Some((m, u)) => composed_moments(&g, Some(m), Some(u), &p),
                    None => composed_moments(&g, None, None, &p),
                }
                .unwrap();
                let theta = theirs.as_tensor().detach();
                theirs
                    .set(&(theta - ((&m / &u).unwrap() * clr).unwrap()).unwrap())
                    .unwrap();
                mu_theirs = Some((m, u));
                let (a, b) = (mu_ours.as_ref().unwrap(), mu_theirs.as_ref().unwrap());
                assert_eq!(bits(&a.0), bits(&b.0), "{dtype:?} step {step}: m");
                assert_eq!(bits(&a.1), bits(&b.1), "{dtype:?} step {step}: u");
                assert_eq!(
                    bits(ours.as_tensor()),
                    bits(theirs.as_tensor()),
                    "{dtype:?} step {step}: θ"
                );
            }
        }
    }

    /// Tensors the host path does not cover are left to the composed ops.
    #[test]
    fn strided_or_other_dtype_gradients_take_the_composed_path() {
        let p = AdamaxParams::default();
        let g = Tensor::arange(0f64, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        assert!(
            host_moments(&g.t().unwrap(), None, None, &p)
                .unwrap()
                .is_none()
        );
        let g16 = g.to_dtype(DType::BF16).unwrap();
        assert!(host_moments(&g16, None, None, &p).unwrap().is_none());
        let m = Tensor::zeros((3, 2), DType::F64, &Device::Cpu).unwrap();
        assert!(host_moments(&g, Some(&m), Some(&m), &p).unwrap().is_none());
    }
}
