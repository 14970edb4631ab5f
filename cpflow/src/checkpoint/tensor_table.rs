//! The tensor table of a weights file (names, dtypes, shapes: its safetensors header, read
//! without loading any tensor) checked against the model its metadata describes, by every
//! loader (flows, image flows, VAEs): before the model is built, that the configuration asks
//! for no more parameters than the file can back (a damaged width or depth would otherwise
//! allocate gigabytes, and abort, before any other check); once it is built, that the file
//! holds exactly its variables (and copies of them: best weights, EMA, optimiser moments),
//! each of the variable's shape and dtype. Every refusal names the file and the tensor.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::Var;
use safetensors::tensor::{Metadata, TensorInfo};

use crate::error::{CpflowError, Result, first_few};

/// How a kind of weights file names its tensors.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TensorLayout<'a> {
    /// Prefix of the model's variables (`""` for flows, `"model."` for VAEs).
    pub model: &'a str,
    /// Prefixes of copies of the variables (`"best."`, `"ema."`, `"adam.m."`, …): each
    /// tensor under one is `prefix + variable`.
    pub copies: &'a [&'a str],
    /// The copies that cover every variable when the file holds any of them (best weights,
    /// EMA); the others (optimiser moments) cover the variables that had a step.
    pub complete: &'a [&'a str],
}

impl TensorLayout<'_> {
    /// The variable the tensor `name` is the model's value of, or `None` for a copy or a
    /// tensor outside the model's prefix.
    fn model_var<'n>(&self, name: &'n str) -> Option<&'n str> {
        if self.copies.iter().any(|c| name.starts_with(c)) {
            return None;
        }
        name.strip_prefix(self.model)
    }

    /// The variable the tensor `name` holds a value or a copy of (`None`: no prefix of the
    /// layout).
    fn var_of<'n>(&self, name: &'n str) -> Option<&'n str> {
        self.model_var(name)
            .or_else(|| self.copies.iter().find_map(|c| name.strip_prefix(c)))
    }

    /// What a file of this layout holds, for the messages.
    fn describe(&self) -> String {
        let copies: Vec<String> = self.copies.iter().map(|c| format!("`{c}`")).collect();
        let model = if self.model.is_empty() {
            "the model's variables".to_string()
        } else {
            format!("the model's variables under `{}`", self.model)
        };
        if copies.is_empty() {
            model
        } else {
            format!("{model} and copies of them under {}", copies.join(", "))
        }
    }
}

/// The most parameters a loader builds for a file whose model tensors hold `held`: twice
/// them and 2²⁰ more (8 MiB in f64), so that a tensor missing from a small file is still
/// built and named by [`check_against_model`], while a damaged width or depth, which
/// multiplies the count, is refused before any allocation.
fn build_allowance(held: usize) -> usize {
    held.saturating_mul(2).saturating_add(1 << 20)
}

/// Elements of a tensor of `info` (saturating: safetensors has checked that its byte size
/// fits a `usize`).
fn elements(info: &TensorInfo) -> usize {
    info.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

/// Refuses, before the model is built, a file read from `path` whose configuration counts
/// `counted` parameters (`None`: a network of your own, not counted) when that is far more
/// than its model tensors hold (`header`, named as `layout` says; ActNorm `initialized` flags
/// excluded, as in the counts): more than [`build_allowance`] of them. The configuration or
/// the tensor table is damaged, and building the model it describes could take any amount
/// of memory (a width of 30000 in an 8 kB file asked for 3.6 GB and aborted). A count within
/// the allowance is built — its memory is bounded by the file's — and then checked tensor by
/// tensor ([`check_against_model`]), which names what is missing or of another shape.
pub(crate) fn check_counted_parameters(
    path: &Path,
    header: &Metadata,
    layout: TensorLayout<'_>,
    counted: Option<usize>,
) -> Result<()> {
    let Some(counted) = counted else {
        return Ok(());
    };
    let held = header
        .tensors()
        .iter()
        .filter(|(name, _)| layout.model_var(name).is_some() && !name.ends_with("initialized"))
        .fold(0usize, |n, (_, info)| n.saturating_add(elements(info)));
    let allowed = build_allowance(held);
    if counted > allowed {
        return Err(CpflowError::Checkpoint(format!(
            "{}: the model its metadata describes has {counted} parameters, far more than \
             the {held} its model tensors hold: its configuration or tensor table is damaged \
             (refused before building the model)",
            path.display()
        )));
    }
    Ok(())
}

/// Checks the tensor table `header` of the file `path` against the model's variables
/// `vars`: every tensor a variable or a copy of one (`layout`), every variable present (and
/// under every complete copy prefix the file uses), each tensor of its variable's shape and
/// dtype. Names are checked first (a file of another architecture), then each tensor in name
/// order, so the error is deterministic.
pub(crate) fn check_against_model(
    path: &Path,
    header: &Metadata,
    layout: TensorLayout<'_>,
    vars: &[(String, Var)],
) -> Result<()> {
    let table = header.tensors();
    let by_name: HashMap<&str, &Var> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let names: BTreeSet<&str> = table.keys().map(String::as_str).collect();
    let unexpected: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !layout.var_of(n).is_some_and(|v| by_name.contains_key(v)))
        .collect();
    if !unexpected.is_empty() {
        return Err(CpflowError::Checkpoint(format!(
            "{}: unexpected {} {}: the model its metadata describes has no such variable (a \
             file of this kind holds {}; this file is corrupt or of another architecture)",
            path.display(),
            if unexpected.len() == 1 {
                "tensor"
            } else {
                "tensors"
            },
            first_few(&unexpected, 5),
            layout.describe()
        )));
    }
    let used: Vec<&str> = layout
        .complete
        .iter()
        .copied()
        .filter(|c| names.iter().any(|n| n.starts_with(c)))
        .collect();
    let mut missing: Vec<String> = Vec::new();
    for prefix in std::iter::once(layout.model).chain(used) {
        let mut absent: Vec<String> = vars
            .iter()
            .map(|(k, _)| format!("{prefix}{k}"))
            .filter(|k| !names.contains(k.as_str()))
            .collect();
        absent.sort();
        missing.extend(absent);
    }
    if !missing.is_empty() {
        return Err(CpflowError::Checkpoint(format!(
            "{}: missing {} {}: the model its metadata describes has {} (this file is \
             corrupt or of another architecture)",
            path.display(),
            if missing.len() == 1 {
                "tensor"
            } else {
                "tensors"
            },
            first_few(&missing, 5),
            if missing.len() == 1 {
                "this variable"
            } else {
                "these variables"
            }
        )));
    }
    for name in names {
        let info = table[name];
        let Some(var) = layout.var_of(name).and_then(|v| by_name.get(v)) else {
            continue;
        };
        if info.shape != var.dims() {
            return Err(CpflowError::Checkpoint(format!(
                "{}: tensor {name} has shape {:?}, the model expects {:?}: the file is corrupt \
                 or of another architecture",
                path.display(),
                info.shape,
                var.dims()
            )));
        }
        let want = var.dtype().as_str().to_uppercase();
        if info.dtype.to_string() != want {
            return Err(CpflowError::Checkpoint(format!(
                "{}: tensor {name} is of type {}, the model's variable of type {want}: the \
                 file is corrupt",
                path.display(),
                info.dtype
            )));
        }
    }
    Ok(())
}
