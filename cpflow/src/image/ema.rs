//! Exponential moving average of a model's weights (the reference's
//! `lib/utils.py:ExponentialMovingAverage`, images-vae.md §2.6), used by the image trainer for
//! validation, the test score and the saved model.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::error::{CpflowError, Result};
use crate::named_vars::saved_tensor;

/// Shadow copies of named variables, updated after every optimiser step by
/// `shadow ← shadow − (1 − decay)·(shadow − param)`.
///
/// As in the reference, the shadows are set by the first [`ExponentialMovingAverage::update`]
/// (right after the first optimiser step, so after the ActNorm initialisation) and
/// `decay = 0` makes them plain copies (the reference passes 0 for the first half of training).
/// Setting the model's variables never changes the shadows.
///
/// Where the shadows live:
/// - [`ExponentialMovingAverage::new`]: tensors of their own, made by the first update;
/// - [`ExponentialMovingAverage::in_vars`]: the given variables (those of an evaluation copy
///   of the model), written in place. The image trainer keeps its average there, so the
///   average costs no memory beyond the evaluation copy.
///
/// ```
/// use cpflow::candle::{Device, Var};
/// use cpflow::image::ExponentialMovingAverage;
/// # fn main() -> cpflow::Result<()> {
/// let w = Var::from_slice(&[1.0f64], 1, &Device::Cpu)?;
/// let vars = vec![("w".to_string(), w.clone())];
/// let mut ema = ExponentialMovingAverage::new();
/// ema.update(&vars, 0.9)?; // first call: shadow = 1
/// w.set(&cpflow::candle::Tensor::new(&[3.0f64], &Device::Cpu)?)?;
/// ema.update(&vars, 0.9)?; // 1 − 0.1·(1 − 3) = 1.2
/// let s = ema.get("w").unwrap().to_vec1::<f64>()?[0];
/// assert!((s - 1.2).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ExponentialMovingAverage {
    /// The shadows; empty for [`ExponentialMovingAverage::new`] until the first update.
    shadow: Vec<(String, Var)>,
    /// Whether the shadows hold an average (an update ran, or they were loaded).
    initialized: bool,
}

impl ExponentialMovingAverage {
    /// An empty average: the first update copies the variables into new tensors.
    pub fn new() -> Self {
        Self::default()
    }

    /// An average kept in `shadows` (same names, shapes and order as the variables it will
    /// average), written in place: the first update copies the variables into them. Until
    /// then the average is not initialised, whatever `shadows` hold.
    ///
    /// ```
    /// use cpflow::candle::{Device, Tensor, Var};
    /// use cpflow::image::ExponentialMovingAverage;
    /// # fn main() -> cpflow::Result<()> {
    /// let w = Var::from_slice(&[1.0f64, 2.0], 2, &Device::Cpu)?;
    /// let eval_w = Var::zeros(2, cpflow::candle::DType::F64, &Device::Cpu)?;
    /// let mut ema = ExponentialMovingAverage::in_vars(vec![("w".to_string(), eval_w.clone())]);
    /// let vars = vec![("w".to_string(), w.clone())];
    /// ema.update(&vars, 0.5)?; // copies [1, 2] into eval_w
    /// w.set(&Tensor::new(&[3.0f64, 0.0], &Device::Cpu)?)?;
    /// ema.update(&vars, 0.5)?; // halfway towards [3, 0]
    /// assert_eq!(eval_w.to_vec1::<f64>()?, [2.0, 1.0]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn in_vars(shadows: Vec<(String, Var)>) -> Self {
        Self {
            shadow: shadows,
            initialized: false,
        }
    }

    /// Whether the shadows hold an average (at least one update, or loaded from a checkpoint).
    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    /// One update with `decay ∈ [0, 1]`: the first call copies the variables, later calls
    /// apply `shadow ← shadow − (1 − decay)(shadow − param)`. `vars` must name the same
    /// variables, in the same order, on every call (and those of [`Self::in_vars`]).
    pub fn update(&mut self, vars: &[(String, Var)], decay: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(CpflowError::InvalidConfig(format!(
                "EMA decay must be in [0, 1], got {decay}"
            )));
        }
        if self.shadow.is_empty() && !vars.is_empty() {
            self.shadow = vars
                .iter()
                .map(|(k, v)| Ok((k.clone(), Var::from_tensor(&v.as_tensor().detach())?)))
                .collect::<Result<_>>()?;
            self.initialized = true;
            return Ok(());
        }
        self.check_names(vars)?;
        for ((_, s), (_, v)) in self.shadow.iter().zip(vars) {
            let p = v.as_tensor().detach();
            if self.initialized {
                let s_t = s.as_tensor().detach();
                s.set(&(&s_t - ((&s_t - &p)? * (1.0 - decay))?)?)?;
            } else {
                s.set(&p)?;
            }
        }
        self.initialized = true;
        Ok(())
    }

    /// An error unless `vars` name the shadows' variables, in order.
    fn check_names(&self, vars: &[(String, Var)]) -> Result<()> {
        if self.shadow.len() != vars.len() {
            return Err(CpflowError::InvalidConfig(format!(
                "EMA holds {} variables, the model has {}",
                self.shadow.len(),
                vars.len()
            )));
        }
        for ((name, _), (vname, _)) in self.shadow.iter().zip(vars) {
            if name != vname {
                return Err(CpflowError::InvalidConfig(format!(
                    "EMA variable {name} does not match the model's {vname}"
                )));
            }
        }
        Ok(())
    }

    /// The shadow of variable `name` (`None` before the first update or load).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.shadows()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_tensor())
    }

    /// The shadows as `(name, tensor)` pairs, in the variables' order (none before the first
    /// update or load). The tensors share storage with the shadows.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.shadows()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect()
    }

    /// The shadows keyed by name (for `set_weights`).
    pub fn to_map(&self) -> HashMap<String, Tensor> {
        self.tensors().into_iter().collect()
    }

    /// The shadows if they hold an average, else none.
    fn shadows(&self) -> &[(String, Var)] {
        if self.initialized { &self.shadow } else { &[] }
    }

    /// Restore shadows saved under `prefix + name` for each of `vars` (dtype and device of the
    /// variables) into new tensors; a missing tensor or one of another shape is a
    /// [`CpflowError::Checkpoint`], a non-finite one a [`CpflowError::InvalidInput`].
    pub fn load(
        vars: &[(String, Var)],
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
    ) -> Result<Self> {
        let shadow = vars
            .iter()
            .map(|(k, v)| {
                // `from_tensor` of a detached tensor copies it.
                let t = saved_tensor(tensors, prefix, k, v)?;
                Ok((k.clone(), Var::from_tensor(&t.detach())?))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            shadow,
            initialized: true,
        })
    }

    /// Restore the shadows of an average made by [`Self::in_vars`] from the tensors saved
    /// under `prefix + name`, in place; a missing tensor or a shape that differs is a
    /// [`CpflowError::Checkpoint`], a non-finite one a [`CpflowError::InvalidInput`], and
    /// then nothing is written.
    pub fn load_in_place(&mut self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        if self.shadow.is_empty() {
            return Err(CpflowError::InvalidConfig(
                "EMA has no variables to load into (make it with in_vars)".into(),
            ));
        }
        let saved = self
            .shadow
            .iter()
            .map(|(k, v)| saved_tensor(tensors, prefix, k, v))
            .collect::<Result<Vec<_>>>()?;
        for ((_, v), t) in self.shadow.iter().zip(&saved) {
            v.set(t)?;
        }
        self.initialized = true;
        Ok(())
    }
}
