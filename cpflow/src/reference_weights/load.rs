//! Setting a model's variables from a reference `state_dict` under a [`KeyMapping`]:
//! [`load_reference_state_dict`], its checks (names, shapes, dtypes, finite values, the
//! constants cpflow keeps in place of frozen reference parameters) and its [`ReferenceLoad`]
//! report.

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};

use super::KeyMapping;
use crate::error::{CpflowError, Result, first_few};

/// What [`load_reference_state_dict`] did.
///
/// ```
/// use std::collections::HashMap;
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::reference_weights::{KeyMapping, ReferenceLoad, load_reference_state_dict};
/// use cpflow::{FloatType, Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn2(cpflow::icnn::Icnn2Config { dim: 3, width: 4, depth: 2, ..Default::default() });
/// let config = FlowConfig::tabular(3, 1, pot).with_float(FloatType::F64);
/// let mapping = KeyMapping::for_flow(&config);
/// // A state_dict under the reference's names, as a PyTorch export holds it (no init flags).
/// let source = Flow::new(config.clone().with_init_seed(1), &Device::Cpu)?;
/// let state_dict: HashMap<String, Tensor> = source
///     .weight_tensors()
///     .into_iter()
///     .filter(|(k, _)| !k.ends_with("initialized"))
///     .map(|(k, t)| (mapping.reference_key(&k).expect("every weight has a reference key"), t))
///     .collect();
/// let target = Flow::new(config.with_init_seed(2), &Device::Cpu)?;
/// let report: ReferenceLoad = load_reference_state_dict(&target.named_vars(), &state_dict, &mapping)?;
/// assert_eq!(report.loaded, state_dict.len());
/// let flags = target.named_vars().iter().filter(|(k, _)| k.ends_with("initialized")).count();
/// assert_eq!(report.flags_marked, flags);
/// assert!(target.is_initialized()?);
/// // The target now holds the source's weights.
/// let src: HashMap<String, Tensor> = source.weight_tensors().into_iter().collect();
/// for (name, t) in target.weight_tensors() {
///     if !name.ends_with("initialized") {
///         let diff = (t - &src[&name])?.abs()?.max_all()?.to_scalar::<f64>()?;
///         assert_eq!(diff, 0.0, "{name}");
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReferenceLoad {
    /// Variables set from the `state_dict`.
    pub loaded: usize,
    /// `initialized` flags set (every one of the model's).
    pub flags_marked: usize,
}

/// The reference key `key` holds the constant `value` that cpflow uses in its place.
fn check_constant(key: &str, t: &Tensor, value: f64) -> Result<()> {
    let got = t
        .to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    // 1e-6 relative: a float32 export of the constant is within 6e-8 of it.
    // NaN fails `within`.
    let within = got.len() == 1 && (got[0] - value).abs() <= 1e-6 * value.abs().max(1.0);
    if !within {
        return Err(CpflowError::Checkpoint(format!(
            "reference key {key} is {got:?}; cpflow's model keeps it at the constant {value} \
             (a trainable parameter there needs a trainable one here: e.g. trainable_w0)"
        )));
    }
    Ok(())
}

/// Dimensions without the axes of length 1.
fn squeezed(dims: &[usize]) -> Vec<usize> {
    dims.iter().copied().filter(|&d| d != 1).collect()
}

/// Set the variables `vars` (a model's `named_vars()`) from a reference `state_dict` under the
/// names that `mapping` gives, then mark every ActNorm initialised (each variable whose name
/// ends in `initialized` is set to 1).
///
/// Everything is checked before anything is written: every reference key must map to one of
/// the model's variables, with the same shape up to axes of length 1, and every variable of
/// the model (flags aside) must receive a value, and every value must be a finite float32 or
/// float64. An error
/// names the offending key(s)
/// ([`CpflowError::Checkpoint`]). Values are converted to the variables' dtype and device.
///
/// ```
/// use std::collections::HashMap;
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::reference_weights::{KeyMapping, load_reference_state_dict};
/// use cpflow::{FloatType, Flow, FlowConfig, PotentialConfig};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Written by benchmarks/reference_parity/export_fixtures.py: the state_dict of
/// // train_tabular.py's flow (d = 6, ICNN2 width 16, depth 3, 2 blocks) under `model.`.
/// let path = concat!(
///     env!("CARGO_MANIFEST_DIR"),
///     "/tests/fixtures/reference/tabular_icnn2.safetensors"
/// );
/// let state_dict: HashMap<String, Tensor> = cpflow::candle::safetensors::load(path, &Device::Cpu)?
///     .into_iter()
///     .filter_map(|(k, v)| k.strip_prefix("model.").map(|k| (k.to_string(), v)))
///     .collect();
/// let pot = PotentialConfig::Icnn2(cpflow::icnn::Icnn2Config { dim: 6, width: 16, depth: 3, ..Default::default() });
/// let flow = Flow::new(FlowConfig::tabular(6, 2, pot).with_float(FloatType::F64), &Device::Cpu)?;
/// let mapping = KeyMapping::for_flow(flow.config());
/// let report = load_reference_state_dict(&flow.named_vars(), &state_dict, &mapping)?;
/// assert_eq!(report.loaded, state_dict.len());
/// assert!(flow.is_initialized()?); // no data-dependent initialisation needed
/// # Ok(())
/// # }
/// ```
pub fn load_reference_state_dict(
    vars: &[(String, Var)],
    state_dict: &HashMap<String, Tensor>,
    mapping: &KeyMapping,
) -> Result<ReferenceLoad> {
    let by_name: HashMap<&str, &Var> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    // Missing values first: with another architecture (more blocks) they say what differs.
    let targets: std::collections::HashSet<String> =
        state_dict.keys().filter_map(|k| mapping.map(k)).collect();
    let missing: Vec<String> = vars
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !k.ends_with("initialized") && !targets.contains(*k))
        .map(|k| match mapping.reference_key(k) {
            Some(r) => format!("{r} (the model's {k})"),
            None => format!("a value for the model's {k}"),
        })
        .collect();
    if !missing.is_empty() {
        return Err(CpflowError::Checkpoint(format!(
            "the state_dict has no {}",
            first_few(&missing, 8)
        )));
    }
    let mut keys: Vec<&String> = state_dict.keys().collect();
    keys.sort();
    let mut assignments: Vec<(&Var, &Tensor)> = Vec::with_capacity(keys.len());
    let mut filled: HashMap<&str, &str> = HashMap::new();
    for key in keys {
        if let Some(value) = mapping.constant(key) {
            check_constant(key, &state_dict[key], value)?;
            continue;
        }
        let ours = mapping.map(key).ok_or_else(|| {
            CpflowError::Checkpoint(format!(
                "reference key {key} matches no rule of the key mapping"
            ))
        })?;
        let (name, var) = by_name.get_key_value(ours.as_str()).ok_or_else(|| {
            CpflowError::Checkpoint(format!(
                "reference key {key} maps to {ours}, which the model does not have"
            ))
        })?;
        let t = &state_dict[key];
        if squeezed(t.dims()) != squeezed(var.dims()) {
            return Err(CpflowError::Checkpoint(format!(
                "reference key {key} has shape {:?}, the model's {ours} has shape {:?}",
                t.dims(),
                var.dims()
            )));
        }
        if !matches!(t.dtype(), DType::F32 | DType::F64) {
            return Err(CpflowError::Checkpoint(format!(
                "reference key {key} holds {:?} values: save the state_dict in float32 or \
                 float64 (e.g. `v.double()`; integer or half-precision weights are not a \
                 trained model's)",
                t.dtype()
            )));
        }
        if !crate::flow::all_finite(t)? {
            return Err(CpflowError::Checkpoint(format!(
                "reference key {key} holds a NaN or infinite value"
            )));
        }
        if let Some(other) = filled.insert(name, key.as_str()) {
            return Err(CpflowError::Checkpoint(format!(
                "reference keys {other} and {key} both map to {ours}"
            )));
        }
        assignments.push((var, t));
    }
    for (var, t) in &assignments {
        let v = t
            .to_dtype(var.dtype())?
            .to_device(var.device())?
            .reshape(var.shape())?;
        var.set(&v)?;
    }
    let mut flags_marked = 0;
    for (_, var) in vars.iter().filter(|(k, _)| k.ends_with("initialized")) {
        var.set(&var.ones_like()?)?;
        flags_marked += 1;
    }
    Ok(ReferenceLoad {
        loaded: assignments.len(),
        flags_marked,
    })
}
