//! Adam with PyTorch's coupled (L2) weight decay, over named candle [`Var`]s, with a state that
//! can be saved and restored exactly.
//!
//! PyTorch `Adam(weight_decay=wd)` adds `wd·θ` to the gradient before the moment updates (this
//! is what the reference uses: `train_tabular.py`, wd = 1e-6). candle-nn's `AdamW` decays the
//! weights directly (decoupled), which is a different optimiser, hence this one.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{CpflowError, Result};

/// Hyper-parameters of [`Adam`].
///
/// ```
/// use cpflow::AdamParams;
/// let p = AdamParams::default(); // the reference's train_tabular.py settings
/// assert_eq!((p.lr, p.beta1, p.beta2, p.weight_decay), (1e-3, 0.9, 0.99, 1e-6));
/// // In configuration files, fields left out keep their defaults; unknown ones are refused.
/// let q: AdamParams = serde_json::from_str(r#"{"lr": 0.005}"#).unwrap();
/// assert_eq!(q, AdamParams { lr: 0.005, ..p });
/// assert!(serde_json::from_str::<AdamParams>(r#"{"learning_rate": 0.005}"#).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamParams {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay (reference: 0.9).
    pub beta1: f64,
    /// Second-moment decay (reference: 0.99).
    pub beta2: f64,
    /// Denominator epsilon (PyTorch default 1e-8).
    pub eps: f64,
    /// Coupled L2 weight decay added to the gradient (reference: 1e-6).
    pub weight_decay: f64,
}

impl Default for AdamParams {
    fn default() -> Self {
        AdamParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 1e-6,
        }
    }
}

/// The checks shared by Adam and Adamax ([`crate::vae::AdamaxParams`]): a finite learning
/// rate ≥ 0, both betas in `[0, 1)`, a finite `eps > 0`; messages name `key.field`.
pub(crate) fn check_moment_params(
    key: &str,
    lr: f64,
    (beta1, beta2): (f64, f64),
    eps: f64,
) -> Result<()> {
    let bad = |m: String| Err(CpflowError::InvalidConfig(m));
    if !(lr.is_finite() && lr >= 0.0) {
        return bad(format!(
            "{key}.lr (the learning rate) must be finite and ≥ 0, got {lr:?}"
        ));
    }
    for (name, beta) in [("beta1", beta1), ("beta2", beta2)] {
        if !(0.0..1.0).contains(&beta) {
            return bad(format!("{key}.{name} must be in [0, 1), got {beta:?}"));
        }
    }
    if !(eps.is_finite() && eps > 0.0) {
        return bad(format!(
            "{key}.eps must be finite and > 0, got {eps:?}: it keeps the update's denominator \
             away from 0"
        ));
    }
    Ok(())
}

impl AdamParams {
    /// Check the values: a finite learning rate ≥ 0, `beta1` and `beta2` in `[0, 1)`, a
    /// finite `eps > 0` (with 0 a parameter whose gradient is 0 on every step so far gets
    /// `0/0`) and a finite `weight_decay ≥ 0` (a negative one pushes the weights away from 0).
    /// `key` is where the parameters sit in the configuration (`train.adam` for `cpflow
    /// train`): the messages name `key.field`.
    ///
    /// ```
    /// let mut p = cpflow::AdamParams::default();
    /// p.validate("train.adam").unwrap();
    /// p.eps = 0.0;
    /// let e = p.validate("train.adam").unwrap_err().to_string();
    /// assert!(e.contains("train.adam.eps"), "{e}");
    /// ```
    pub fn validate(&self, key: &str) -> Result<()> {
        let bad = |m: String| Err(CpflowError::InvalidConfig(m));
        check_moment_params(key, self.lr, (self.beta1, self.beta2), self.eps)?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "{key}.weight_decay must be finite and ≥ 0, got {:?}",
                self.weight_decay
            ));
        }
        Ok(())
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Option<Tensor>,
    v: Option<Tensor>,
    step: u64,
}

/// Serialisable scalar part of the optimiser state (the moments are tensors, saved separately).
///
/// ```
/// use std::collections::HashMap;
/// use cpflow::candle::{Device, Var};
/// use cpflow::{Adam, AdamParams, AdamState};
/// # fn main() -> cpflow::Result<()> {
/// let w = Var::new(&[1.0f64, -2.0], &Device::Cpu)?;
/// let mut adam = Adam::new(vec![("w".into(), w.clone())], AdamParams::default())?;
/// adam.step(&w.as_tensor().sqr()?.sum_all()?.backward()?)?;
/// let state: AdamState = adam.state();
/// assert_eq!(state.steps.get("w"), Some(&1));
/// // A resume: the scalars from JSON, the moments from the tensors.
/// let state: AdamState = serde_json::from_str(&serde_json::to_string(&state)?)?;
/// let moments: HashMap<String, _> = adam.state_tensors().into_iter().collect();
/// assert_eq!(moments.len(), 2); // adam.m.w and adam.v.w
/// let mut restored = Adam::new(vec![("w".into(), w)], AdamParams::default())?;
/// restored.load_state(&state, &moments)?;
/// assert_eq!(restored.state(), adam.state());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// Current hyper-parameters (the learning rate may have been decayed).
    pub params: AdamParams,
    /// Per-variable step counts (variables that never had a gradient are absent).
    pub steps: BTreeMap<String, u64>,
}

/// Adam optimiser (PyTorch semantics, L2 weight decay). Variables without a gradient in a step
/// are skipped, as in PyTorch (`p.grad is None`).
///
/// ```
/// use cpflow::candle::{Device, Var};
/// use cpflow::{Adam, AdamParams};
/// # fn main() -> cpflow::Result<()> {
/// let w = Var::new(&[1.0f64, -2.0], &Device::Cpu)?;
/// let params = AdamParams { lr: 0.1, weight_decay: 0.0, ..Default::default() };
/// let mut adam = Adam::new(vec![("w".into(), w.clone())], params)?;
/// // Loss ‖w‖²: gradient 2w. Adam's first step is lr·g/(|g| + ε) ≈ lr·sign(g).
/// let grads = w.as_tensor().sqr()?.sum_all()?.backward()?;
/// assert!((adam.grad_norm(&grads)? - 20f64.sqrt()).abs() < 1e-12);
/// adam.step(&grads)?;
/// let w1 = w.as_tensor().to_vec1::<f64>()?;
/// assert!((w1[0] - 0.9).abs() < 1e-8 && (w1[1] + 1.9).abs() < 1e-8);
/// // Invalid hyper-parameters are refused.
/// let bad = AdamParams { beta1: 1.0, ..Default::default() };
/// assert!(Adam::new(vec![("w".into(), w)], bad).is_err());
/// # Ok(())
/// # }
/// ```
pub struct Adam {
    params: AdamParams,
    slots: Vec<Slot>,
}

impl Adam {
    /// Build the optimiser over named variables (kept in the given order); the parameters
    /// are checked by [`AdamParams::validate`].
    pub fn new(vars: Vec<(String, Var)>, params: AdamParams) -> Result<Self> {
        params.validate("adam")?;
        let slots = vars
            .into_iter()
            .map(|(name, var)| Slot {
                name,
                var,
                m: None,
                v: None,
                step: 0,
            })
            .collect();
        Ok(Adam { params, slots })
    }

    /// Current hyper-parameters.
    pub fn params(&self) -> &AdamParams {
        &self.params
    }

    /// Current learning rate.
    pub fn lr(&self) -> f64 {
        self.params.lr
    }

    /// Set the learning rate (schedulers call this).
    pub fn set_lr(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// One update from the gradients in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let p = self.params.clone();
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            // candle's gradients of variables can still carry a graph (a detached upstream
            // gradient times a tracked forward tensor): detach, or the moments would keep every
            // step's graph alive.
            let g = g.detach();
            let theta = slot.var.as_tensor().detach();
            let g = if p.weight_decay != 0.0 {
                (g + theta.affine(p.weight_decay, 0.0)?)?
            } else {
                g
            };
            let m = match &slot.m {
                Some(m) => ((m * p.beta1)? + (&g * (1.0 - p.beta1))?)?,
                None => (&g * (1.0 - p.beta1))?,
            };
            let g2 = g.sqr()?;
            let v = match &slot.v {
                Some(v) => ((v * p.beta2)? + (g2 * (1.0 - p.beta2))?)?,
                None => (g2 * (1.0 - p.beta2))?,
            };
            slot.step += 1;
            let t = slot.step as i32;
            let bc1 = 1.0 - p.beta1.powi(t);
            let bc2_sqrt = (1.0 - p.beta2.powi(t)).sqrt();
            let denom = ((v.sqrt()? / bc2_sqrt)? + p.eps)?;
            let update = (m.div(&denom)? * (p.lr / bc1))?;
            slot.var.set(&(theta - update)?)?;
            slot.m = Some(m);
            slot.v = Some(v);
        }
        Ok(())
    }

    /// Euclidean norm of all gradients together (over the optimiser's variables).
    ///
    /// Each variable's sum of squares is reduced where the gradient lives, in its dtype, and
    /// the sums are copied to the host in one transfer (one wait for an accelerator, not one
    /// per variable), then added in `f64` in the variables' order.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let present: Vec<&Tensor> = self
            .slots
            .iter()
            .filter_map(|slot| grads.get(slot.var.as_tensor()))
            .collect();
        let Some(first) = present.first() else {
            return Ok(0.0);
        };
        // Sums of gradients on another device than the first (not in a flow) join its.
        let device = first.device().clone();
        let sums = present
            .iter()
            .map(|g| {
                let sum = g.sqr()?.sum_all()?.to_dtype(DType::F64)?;
                Ok(sum.reshape(1)?.to_device(&device)?)
            })
            .collect::<Result<Vec<Tensor>>>()?;
        let mut s = 0.0;
        for v in Tensor::cat(&sums, 0)?.to_vec1::<f64>()? {
            s += v;
        }
        Ok(s.sqrt())
    }

    /// Name of the first variable whose gradient has a NaN or Inf, if any.
    pub fn first_non_finite_grad(&self, grads: &GradStore) -> Result<Option<String>> {
        for slot in &self.slots {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                let s = g
                    .abs()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
                if !s.is_finite() {
                    return Ok(Some(slot.name.clone()));
                }
            }
        }
        Ok(None)
    }

    /// PyTorch `clip_grad_norm_`: scale all gradients by `max_norm/(norm + 1e-6)` when that is
    /// below 1. Returns the norm before clipping.
    pub fn clip_grad_norm(&self, grads: &mut GradStore, max_norm: f64) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        self.clip_grad_norm_with_norm(grads, max_norm, norm)?;
        Ok(norm)
    }

    /// [`Adam::clip_grad_norm`] with the norm already computed by [`Adam::grad_norm`].
    pub fn clip_grad_norm_with_norm(
        &self,
        grads: &mut GradStore,
        max_norm: f64,
        norm: f64,
    ) -> Result<()> {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for slot in &self.slots {
                if let Some(g) = grads.remove(slot.var.as_tensor()) {
                    grads.insert(slot.var.as_tensor(), (g * coef)?);
                }
            }
        }
        Ok(())
    }

    /// Scalar state (hyper-parameters and step counts) for a checkpoint.
    pub fn state(&self) -> AdamState {
        let steps = self
            .slots
            .iter()
            .filter(|s| s.step > 0)
            .map(|s| (s.name.clone(), s.step))
            .collect();
        AdamState {
            params: self.params.clone(),
            steps,
        }
    }

    /// Moment tensors for a checkpoint, named `adam.m.<var>` / `adam.v.<var>`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for s in &self.slots {
            if let (Some(m), Some(v)) = (&s.m, &s.v) {
                out.push((format!("adam.m.{}", s.name), m.clone()));
                out.push((format!("adam.v.{}", s.name), v.clone()));
            }
        }
        out
    }

    /// Restore the state saved by [`Adam::state`] and [`Adam::state_tensors`].
    pub fn load_state(
        &mut self,
        state: &AdamState,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        self.params = state.params.clone();
        for s in &mut self.slots {
            match state.steps.get(&s.name) {
                Some(&step) => {
                    let get = |k: String| {
                        tensors.get(&k).cloned().ok_or_else(|| {
                            CpflowError::Checkpoint(format!("missing optimiser tensor {k}"))
                        })
                    };
                    let m = get(format!("adam.m.{}", s.name))?;
                    let v = get(format!("adam.v.{}", s.name))?;
                    let want = s.var.as_tensor();
                    if m.shape() != want.shape() || v.shape() != want.shape() {
                        return Err(CpflowError::Checkpoint(format!(
                            "optimiser state shape mismatch for {}",
                            s.name
                        )));
                    }
                    let (dt, dev) = (want.dtype(), want.device());
                    s.m = Some(m.to_dtype(dt)?.to_device(dev)?);
                    s.v = Some(v.to_dtype(dt)?.to_device(dev)?);
                    s.step = step;
                }
                None => {
                    s.m = None;
                    s.v = None;
                    s.step = 0;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `Adam::new` refuses what `AdamParams::validate` refuses (it took `eps = 0` and a
    /// negative weight decay), naming the field.
    #[test]
    fn new_checks_the_parameters() {
        let var = Var::from_slice(&[1.0f64], 1, &Device::Cpu).unwrap();
        for (field, p) in [
            (
                "adam.eps",
                AdamParams {
                    eps: 0.0,
                    ..Default::default()
                },
            ),
            (
                "adam.weight_decay",
                AdamParams {
                    weight_decay: -1.0,
                    ..Default::default()
                },
            ),
            (
                "adam.lr",
                AdamParams {
                    lr: f64::INFINITY,
                    ..Default::default()
                },
            ),
        ] {
            let e = Adam::new(vec![("w".into(), var.clone())], p).err().unwrap();
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }

    /// A refused value is printed short: `-1e300`, not a 301-digit integer (`{}` of a large
    /// f64 prints every digit), and `0.5` as it is.
    #[test]
    fn refused_values_are_printed_short() {
        let message = |p: AdamParams| p.validate("train.adam").unwrap_err().to_string();
        let cases = [
            (
                AdamParams {
                    lr: -1e300,
                    ..Default::default()
                },
                "got -1e300",
            ),
            (
                AdamParams {
                    eps: -2e200,
                    ..Default::default()
                },
                "got -2e200",
            ),
            (
                AdamParams {
                    beta1: 3e100,
                    ..Default::default()
                },
                "got 3e100",
            ),
            (
                AdamParams {
                    weight_decay: -1e250,
                    ..Default::default()
                },
                "got -1e250",
            ),
            (
                AdamParams {
                    weight_decay: -0.5,
                    ..Default::default()
                },
                "got -0.5",
            ),
        ];
        for (p, expected) in cases {
            let m = message(p);
            assert!(m.contains(expected) && !m.contains("000000"), "{m}");
        }
    }

    /// The per-variable formula `grad_norm` had, one host read per variable.
    fn grad_norm_one_read_per_variable(adam: &Adam, grads: &GradStore) -> f64 {
        let mut s = 0.0;
        for slot in &adam.slots {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                s += g
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
            }
        }
        s.sqrt()
    }

    /// One transfer for all the sums gives the norm of the per-variable reads to the bit:
    /// 24 variables, f32 and f64 in one optimiser (f32 sums reduced in f32, as before), each
    /// at its own scale over eight orders of magnitude (so the order of the host additions
    /// shows: adding them in reverse changes the last bits), one without a gradient; and 0
    /// for no gradient at all.
    #[test]
    fn grad_norm_equals_the_per_variable_reads_to_the_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let dev = Device::Cpu;
        let mut vars = Vec::new();
        let mut loss = Tensor::zeros((), DType::F64, &dev).unwrap();
        for i in 0..24 {
            let dtype = if i % 2 == 0 { DType::F32 } else { DType::F64 };
            let (r, c) = (rng.random_range(1..20), rng.random_range(1..40));
            let scale = 10f64.powi(rng.random_range(-4..4));
            let mut draw = || -> Tensor {
                let v = (0..r * c).map(|_| (rng.random::<f64>() - 0.5) * scale);
                let t = Tensor::from_vec(v.collect(), (r, c), &dev).unwrap();
                t.to_dtype(dtype).unwrap()
            };
            let var = Var::from_tensor(&draw()).unwrap();
            let weights = draw();
            if i != 5 {
                let term = (var.as_tensor() * &weights).unwrap().sum_all().unwrap();
                loss = (loss + term.to_dtype(DType::F64).unwrap()).unwrap();
            }
            vars.push((format!("v{i}"), var));
        }
        let adam = Adam::new(vars, AdamParams::default()).unwrap();
        let grads = loss.backward().unwrap();
        let old = grad_norm_one_read_per_variable(&adam, &grads);
        let new = adam.grad_norm(&grads).unwrap();
        assert!(old > 0.0 && old.is_finite());
        assert_eq!(new.to_bits(), old.to_bits(), "{new} vs {old}");
        let none = Tensor::zeros((), DType::F64, &dev)
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(adam.grad_norm(&none).unwrap(), 0.0);
    }

    /// Hand-computed PyTorch Adam on f(θ) = ½θ² (grad = θ) with L2 weight decay.
    #[test]
    fn matches_hand_computed_torch_adam() {
        let var = Var::from_slice(&[1.0f64, -2.0], 2, &Device::Cpu).unwrap();
        let p = AdamParams {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let mut opt = Adam::new(vec![("w".into(), var.clone())], p.clone()).unwrap();
        let mut th = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for t in 1..=5 {
            let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&grads).unwrap();
            for i in 0..2 {
                let g = th[i] + p.weight_decay * th[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.99 * v[i] + 0.01 * g * g;
                let bc1 = 1.0 - 0.9f64.powi(t);
                let bc2 = 1.0 - 0.99f64.powi(t);
                th[i] -= p.lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + p.eps);
            }
        }
        let got = var.as_tensor().to_vec1::<f64>().unwrap();
        for i in 0..2 {
            assert!((got[i] - th[i]).abs() < 1e-14, "{} vs {}", got[i], th[i]);
        }
    }
}
