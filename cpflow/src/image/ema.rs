//! Exponential moving average of a model's weights (the reference's
//! `lib/utils.py:ExponentialMovingAverage`, images-vae.md §2.6), used by the image trainer for
//! validation, the test score and the saved model.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::error::{CpflowError, Result};

/// Shadow copies of named variables, updated after every optimiser step by
/// `shadow ← shadow − (1 − decay)·(shadow − param)`.
///
/// As in the reference, the shadows are created by the first [`ExponentialMovingAverage::update`]
/// (right after the first optimiser step, so after the ActNorm initialisation) and
/// `decay = 0` makes them plain copies (the reference passes 0 for the first half of training).
/// The shadows are tensors of their own: setting the variables never changes them.
///
/// ```
/// use candle_core::{Device, Var};
/// use cpflow::image::ExponentialMovingAverage;
/// # fn main() -> cpflow::Result<()> {
/// let w = Var::from_slice(&[1.0f64], 1, &Device::Cpu)?;
/// let vars = vec![("w".to_string(), w.clone())];
/// let mut ema = ExponentialMovingAverage::new();
/// ema.update(&vars, 0.9)?; // first call: shadow = 1
/// w.set(&candle_core::Tensor::new(&[3.0f64], &Device::Cpu)?)?;
/// ema.update(&vars, 0.9)?; // 1 − 0.1·(1 − 3) = 1.2
/// let s = ema.get("w").unwrap().to_vec1::<f64>()?[0];
/// assert!((s - 1.2).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ExponentialMovingAverage {
    shadow: Vec<(String, Tensor)>,
}

impl ExponentialMovingAverage {
    /// An empty average (no shadows until the first update).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the shadows exist (at least one update, or restored from a checkpoint).
    pub fn is_initialized(&self) -> bool {
        !self.shadow.is_empty()
    }

    /// One update with `decay ∈ [0, 1]`: the first call copies the variables, later calls
    /// apply `shadow ← shadow − (1 − decay)(shadow − param)`. `vars` must name the same
    /// variables, in the same order, on every call.
    pub fn update(&mut self, vars: &[(String, Var)], decay: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(CpflowError::InvalidConfig(format!(
                "EMA decay must be in [0, 1], got {decay}"
            )));
        }
        if self.shadow.is_empty() {
            self.shadow = vars
                .iter()
                .map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().copy()?)))
                .collect::<Result<_>>()?;
            return Ok(());
        }
        if self.shadow.len() != vars.len() {
            return Err(CpflowError::InvalidConfig(format!(
                "EMA holds {} variables, the model has {}",
                self.shadow.len(),
                vars.len()
            )));
        }
        for ((name, s), (vname, v)) in self.shadow.iter_mut().zip(vars) {
            if name != vname {
                return Err(CpflowError::InvalidConfig(format!(
                    "EMA variable {name} does not match the model's {vname}"
                )));
            }
            let p = v.as_tensor().detach();
            *s = (&*s - ((&*s - &p)? * (1.0 - decay))?)?;
        }
        Ok(())
    }

    /// The shadow of variable `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.shadow.iter().find(|(k, _)| k == name).map(|(_, t)| t)
    }

    /// The shadows as `(name, tensor)` pairs, in the variables' order.
    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.shadow
    }

    /// The shadows keyed by name (for `set_weights`).
    pub fn to_map(&self) -> HashMap<String, Tensor> {
        self.shadow.iter().cloned().collect()
    }

    /// Restore shadows saved under `prefix + name` for each of `vars` (dtype and device of the
    /// variables); a missing tensor is a [`CpflowError::Checkpoint`].
    pub fn load(
        vars: &[(String, Var)],
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
    ) -> Result<Self> {
        let shadow = vars
            .iter()
            .map(|(k, v)| {
                let key = format!("{prefix}{k}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| CpflowError::Checkpoint(format!("missing EMA tensor {key}")))?;
                if t.shape() != v.shape() {
                    return Err(CpflowError::Checkpoint(format!(
                        "EMA tensor {key} has shape {:?}, the model expects {:?}",
                        t.dims(),
                        v.dims()
                    )));
                }
                Ok((
                    k.clone(),
                    t.to_dtype(v.dtype())?.to_device(v.device())?.copy()?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self { shadow })
    }
}
