//! Helpers shared by every model that keeps its variables in a candle `VarMap` (`Flow`,
//! `image::ImageFlow`): a deterministic variable order, parameter counts, reading and
//! writing weights by name, and an initialisation that restores every variable if it fails.

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};
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
        let src = saved_tensor(tensors, prefix, &name, &var)?;
        // candle refuses to set a variable from a tensor that shares its storage (such as the
        // model's own `weight_tensors()`); a copy makes that a plain assignment.
        var.set(&src.copy()?)?;
    }
    Ok(())
}

/// `tensors[prefix + name]`, checked for `var` (present, of its shape, finite), in its dtype
/// and on its device.
pub(crate) fn saved_tensor(
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
    name: &str,
    var: &Var,
) -> Result<Tensor> {
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
    if let Some(what) = non_finite_values(t)? {
        return Err(CpflowError::InvalidInput(format!(
            "tensor {key} {what}: a model's weights must be finite"
        )));
    }
    Ok(t.to_dtype(var.dtype())?.to_device(var.device())?)
}

/// `None` when every value of `t` is finite (or `t` holds integers), else a description of the
/// non-finite values: "holds 3 non-finite values (the first, NaN, at element 0 of 4)". The
/// common case costs one reduction and one scalar read (`Σ (t − t)` is 0 exactly when every
/// value is finite: `NaN − NaN` and `∞ − ∞` are NaN), so a tensor on a GPU is not copied to the
/// host unless it holds a non-finite value.
pub(crate) fn non_finite_values(t: &Tensor) -> Result<Option<String>> {
    if !t.dtype().is_float() || t.elem_count() == 0 {
        return Ok(None);
    }
    let probe = t
        .sub(t)?
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?;
    if probe == 0.0 {
        return Ok(None);
    }
    let values = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    Ok(values.iter().position(|v| !v.is_finite()).map(|i| {
        format!(
            "holds {bad} non-finite {} (the first, {}, at element {i} of {})",
            if bad == 1 { "value" } else { "values" },
            values[i],
            values.len()
        )
    }))
}

/// The safetensors bytes of `tensors` (made contiguous) with the metadata `info` and the
/// data's sha256 ([`crate::checkpoint_digest`]), refusing a non-finite floating-point value: the loaders refuse such a file as corrupt, so writing it
/// (atomically, over the last good checkpoint) would lose the run.
pub(crate) fn serialize_finite(
    tensors: Vec<(String, Tensor)>,
    info: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let tensors: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.contiguous()?)))
        .collect::<Result<_>>()?;
    for (name, t) in &tensors {
        if let Some(what) = non_finite_values(t)? {
            return Err(CpflowError::Checkpoint(format!(
                "not written: tensor {name} {what} (the weights or the optimiser state are not \
                 finite)"
            )));
        }
    }
    crate::checkpoint_digest::serialize_with_sha256(tensors, info)
}

/// Refuses a checkpoint read from `path` with a non-finite value in any floating-point tensor
/// (the weights, the EMA copy, the optimiser's moments), naming the file and the tensor: such
/// a file is corrupt, and a resume from it would stop at its first step with a non-finite
/// loss, pointing back to this file as "the last good checkpoint".
pub(crate) fn check_loaded_finite(
    path: &std::path::Path,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        if let Some(what) = non_finite_values(&tensors[name])? {
            return Err(CpflowError::Checkpoint(format!(
                "{}: tensor {name} {what}: the file is corrupt",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Runs the data-dependent initialisation `init` of a model whose variables are `vars`, all
/// or nothing: if it fails, every variable is put back to the value it had before the call
/// (bit for bit: parameters and `initialized` flags alike), so a failure in a later layer
/// does not leave the earlier layers re-initialised. The variables are copied once before
/// `init` runs (one more copy of the weights for the length of the call).
///
/// Should putting a value back fail too (a device error), the error of `init` is still the
/// one returned, and the failure to restore is logged.
pub(crate) fn initialize_all_or_nothing<T>(
    vars: Vec<(String, Var)>,
    init: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let saved = vars
        .into_iter()
        .map(|(name, var)| {
            let value = var.as_tensor().detach().copy()?;
            Ok((name, var, value))
        })
        .collect::<Result<Vec<_>>>()?;
    let failure = match init() {
        Ok(done) => return Ok(done),
        Err(e) => e,
    };
    for (name, var, value) in &saved {
        if let Err(restore) = var.set(value) {
            tracing::error!(
                variable = %name,
                error = %restore,
                "a failed initialisation could not restore the variable's previous value"
            );
        }
    }
    Err(failure)
}
