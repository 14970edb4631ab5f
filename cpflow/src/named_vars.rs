//! Helpers shared by every model that keeps its variables in a candle `VarMap` (`Flow`,
//! `image::ImageFlow`): a deterministic variable order, parameter counts, and reading and
//! writing weights by name.

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use crate::error::{CpflowError, Result};

/// All variables of `varmap` sorted by name (a deterministic order for optimisers and
/// checkpoints).
pub(crate) fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = match varmap.data().lock() {
        Ok(d) => d,
        Err(p) => p.into_inner(),
    };
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Number of scalar parameters (ActNorm init flags excluded).
pub(crate) fn count_parameters(vars: &[(String, Var)]) -> usize {
    vars.iter()
        .filter(|(k, _)| !k.ends_with("initialized"))
        .map(|(_, v)| v.elem_count())
        .sum()
}

/// The variables as `(name, tensor)` pairs (detached).
pub(crate) fn detached_tensors(vars: Vec<(String, Var)>) -> Vec<(String, Tensor)> {
    vars.into_iter()
        .map(|(k, v)| (k, v.as_tensor().detach()))
        .collect()
}

/// Set every variable from `tensors[prefix + name]` (shapes must match; dtype and device
/// are converted).
pub(crate) fn set_vars(
    vars: Vec<(String, Var)>,
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
) -> Result<()> {
    for (name, var) in vars {
        let key = format!("{prefix}{name}");
        let t = tensors
            .get(&key)
            .ok_or_else(|| CpflowError::Checkpoint(format!("missing tensor {key}")))?;
        if t.shape() != var.shape() {
            return Err(CpflowError::Checkpoint(format!(
                "tensor {key} has shape {:?}, the model expects {:?}",
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}
