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
/// use candle_core::{Device, Tensor, Var};
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
/// use candle_core::{Device, Var};
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
            let m = match &slot.m {
                Some(m) => ((m * p.beta1)? + (&g * (1.0 - p.beta1))?)?,
                None => (&g * (1.0 - p.beta1))?,
            };
            let a = (g.abs()? + p.eps)?;
            let u = match &slot.u {
                Some(u) => (u * p.beta2)?.maximum(&a)?,
                None => a,
            };
            slot.step += 1;
            let clr = p.lr / (1.0 - p.beta1.powi(slot.step as i32));
            let theta = slot.var.as_tensor().detach();
            slot.var.set(&(theta - ((&m / &u)? * clr)?)?)?;
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
                        "optimiser tensor {k} has shape {:?}, expected {:?}",
                        t.dims(),
                        want.dims()
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
