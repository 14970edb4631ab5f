//! Loading the authors' PyTorch `state_dict`s (github.com/CW-Huang/CP-Flow) into cpflow models.
//!
//! cpflow's ICNN parameters already carry the reference's `state_dict` names under each block
//! (`icnn.Wzs.0.weight`, `icnn.actnorms.1.logs`, …; `docs/ARCHITECTURE.md`, crate `icnn`), and
//! each CP-Flow block has the reference's `w0`, `w1`. What differs is where the layers sit: a
//! [`KeyMapping`] renames the reference's layer paths to cpflow's, layer by layer:
//!
//! | reference model | reference key | cpflow variable |
//! |---|---|---|
//! | `SequentialFlow` (`train_tabular.py`, `train_toy.py`) | `flows.{i}.b`, `flows.{i}.logs` (ActNorm) | `layers.{i}.bias`, `layers.{i}.logs` |
//! | | `flows.{i}.{w0, w1, icnn.*}` (CP-Flow block) | `layers.{i}.{w0, w1, icnn.*}` |
//! | `MultiscaleFlow` (`train_img.py`) | `transforms.{s}.flows.{j}.{b, logs}` (ActNorm) | `layers.{i}.{bias, logs}` |
//! | | `transforms.{s}.flows.{j}.flows.0.*` (conv CP-Flow block) | `layers.{i}.*` |
//! | | `transforms.{s}.flows.{j}.fc_module.flows.0.*` (`fc_end` block) | `layers.{i}.*` |
//! | | `transforms.{s}.flows.{j}.fc_module.{b, logs}` (its ActNorm) | `layers.{i}.{bias, logs}` |
//! | `CPFVAE.flow` (`train_vae.py`) | `flow.flows.{i}.flow.flows.1.{b, logs}` (`LayerActnorm`) | `<prefix>.layers.{i}.{bias, logs}` |
//! | | `flow.flows.{i}.{w0, w1, icnn.*}` | `<prefix>.layers.{i}.{w0, w1, icnn.*}` |
//!
//! Shapes may differ only by axes of length 1 (the reference's ActNorms hold `(1, C, 1)`,
//! cpflow's `(1, C)`): the values are the same in the same order. The reference does not save
//! its ActNorms' `initialized` attribute (it sets it by a dummy forward pass before loading),
//! so [`load_reference_state_dict`] sets every cpflow `initialized` flag after loading.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Tensor, Var};

use crate::error::{CpflowError, Result, first_few};
use crate::flow_config::{FlowConfig, LayerConfig};
use crate::image::{ImageFlowConfig, ImageLayerConfig};
use crate::posterior::PosteriorConfig;

/// How reference `state_dict` keys become cpflow variable names: exact keys and key prefixes,
/// an exact key taking precedence over prefixes and a longer prefix over a shorter one.
///
/// ```
/// use cpflow::reference_weights::KeyMapping;
/// use cpflow::{FlowConfig, PotentialConfig};
/// let cfg = FlowConfig::tabular(6, 1, PotentialConfig::Icnn2(Default::default()));
/// let m = KeyMapping::for_flow(&cfg);
/// assert_eq!(m.map("flows.0.b").as_deref(), Some("layers.0.bias"));
/// assert_eq!(m.map("flows.1.icnn.Wzs.0.weight").as_deref(), Some("layers.1.icnn.Wzs.0.weight"));
/// assert_eq!(m.map("flows.3.b"), None); // the flow has 3 layers
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyMapping {
    keys: BTreeMap<String, String>,
    prefixes: Vec<(String, String)>,
    /// Reference keys that hold a constant in cpflow (no variable): the value they must have.
    constants: BTreeMap<String, Constant>,
}

/// A reference parameter that cpflow keeps as a constant (e.g. a non-trainable `w0`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Constant(f64);

impl Eq for Constant {}

impl KeyMapping {
    /// An empty mapping (maps nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder: the reference key `reference` is cpflow's variable `ours`.
    pub fn with_key(mut self, reference: impl Into<String>, ours: impl Into<String>) -> Self {
        self.keys.insert(reference.into(), ours.into());
        self
    }

    /// Builder: a reference key `reference + rest` is cpflow's variable `ours + rest`.
    pub fn with_prefix(mut self, reference: impl Into<String>, ours: impl Into<String>) -> Self {
        self.prefixes.push((reference.into(), ours.into()));
        // Longest prefix first, so that `map` takes the most specific rule.
        self.prefixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        self
    }

    /// Builder: the reference key `reference` is a parameter that cpflow keeps as the
    /// constant `value` (the reference's `w0` with `trainable_w0=False` is a frozen
    /// `Parameter`, so it is in its `state_dict`; cpflow's block has no variable for it).
    /// [`load_reference_state_dict`] checks that the key holds `value` (to 1e-6 relative, so
    /// that float32 exports pass) and sets nothing.
    pub fn with_constant(mut self, reference: impl Into<String>, value: f64) -> Self {
        self.constants.insert(reference.into(), Constant(value));
        self
    }

    /// The constant that the reference key `key` must hold, if cpflow keeps it as one.
    pub fn constant(&self, key: &str) -> Option<f64> {
        self.constants.get(key).map(|c| c.0)
    }

    /// The cpflow name of the reference key `key`, or `None` if no rule covers it.
    pub fn map(&self, key: &str) -> Option<String> {
        if let Some(ours) = self.keys.get(key) {
            return Some(ours.clone());
        }
        self.prefixes.iter().find_map(|(r, o)| {
            key.strip_prefix(r.as_str())
                .map(|rest| format!("{o}{rest}"))
        })
    }

    /// The reference key that [`map`](Self::map)s to cpflow's variable `ours`, if any (exact
    /// keys first, then the longest matching prefix; confirmed by `map`).
    ///
    /// ```
    /// use cpflow::reference_weights::KeyMapping;
    /// use cpflow::{FlowConfig, PotentialConfig};
    /// let cfg = FlowConfig::tabular(6, 1, PotentialConfig::Icnn2(Default::default()));
    /// let m = KeyMapping::for_flow(&cfg);
    /// assert_eq!(m.reference_key("layers.2.logs").as_deref(), Some("flows.2.logs"));
    /// assert_eq!(m.reference_key("layers.1.w0").as_deref(), Some("flows.1.w0"));
    /// assert_eq!(m.reference_key("layers.9.w0"), None);
    /// ```
    pub fn reference_key(&self, ours: &str) -> Option<String> {
        // An exact key always maps to its value (`map` tries exact keys first).
        if let Some((r, _)) = self.keys.iter().find(|(_, o)| o.as_str() == ours) {
            return Some(r.clone());
        }
        self.prefixes
            .iter()
            .filter_map(|(r, o)| {
                ours.strip_prefix(o.as_str())
                    .map(|rest| format!("{r}{rest}"))
            })
            .find(|k| self.map(k).as_deref() == Some(ours))
    }

    /// An ActNorm flow layer: `{reference}b`, `{reference}logs` → `{ours}.bias`, `{ours}.logs`.
    fn with_actnorm(self, reference: &str, ours: &str) -> Self {
        self.with_key(format!("{reference}b"), format!("{ours}.bias"))
            .with_key(format!("{reference}logs"), format!("{ours}.logs"))
    }

    /// A [`crate::Flow`] built from `config` against the reference's `SequentialFlow` with the
    /// same layers (`train_tabular.py`'s `[ActNorm, CPF, …, CPF, ActNorm]`, `train_toy.py`'s
    /// `[ActNorm, CPF]`): layer `i` is `flows.{i}` there and `layers.{i}` here. A block with a
    /// fixed `w0` (`trainable_w0 = false`, the toy layout with several blocks) has no `w0`
    /// variable; the reference's frozen `flows.{i}.w0` must then hold its initial value
    /// ([`KeyMapping::with_constant`]).
    pub fn for_flow(config: &FlowConfig) -> Self {
        config
            .layers
            .iter()
            .enumerate()
            .fold(Self::new(), |m, (i, l)| match l {
                LayerConfig::ActNorm => {
                    m.with_actnorm(&format!("flows.{i}."), &format!("layers.{i}"))
                }
                LayerConfig::Cpf(b) => {
                    let m = m.with_prefix(format!("flows.{i}."), format!("layers.{i}."));
                    if b.trainable_w0 {
                        m
                    } else {
                        m.with_constant(format!("flows.{i}.w0"), crate::block::LOG_E_MINUS_1)
                    }
                }
            })
    }

    /// An [`crate::image::ImageFlow`] built from `config` against the reference's
    /// `MultiscaleFlow` (`lib/multiscale_flow.py`, built by `train_img.py`): scale `s` is
    /// `transforms.{s}`, a `SequentialFlow` whose layers `flows.{j}` are, in order, the init
    /// layer (logit, no parameters) and its ActNorm (scale 0), `[ActNorm, block]` pairs, and
    /// the squeeze that closes every scale but the last (factor-out is not a layer there).
    /// A block is `SequentialFlow([DeepConvexFlow])`, so its parameters sit under
    /// `flows.{j}.flows.0.`; a block with a dense potential is the `fc_end` block, wrapped in
    /// `FCWrapper` (`flows.{j}.fc_module.flows.0.`), and a per-feature ActNorm is the
    /// `FCWrapper(ActNorm(D))` after it (`flows.{j}.fc_module.`).
    ///
    /// Fails on a layer sequence that `MultiscaleFlow` cannot build (a factor-out that does
    /// not follow a squeeze).
    pub fn for_multiscale(config: &ImageFlowConfig) -> Result<Self> {
        let mut m = Self::new();
        let (mut scale, mut j) = (0usize, 0usize);
        let mut after_squeeze = false;
        for (i, l) in config.layers.iter().enumerate() {
            let theirs = format!("transforms.{scale}.flows.{j}.");
            let ours = format!("layers.{i}");
            let was_squeeze = after_squeeze;
            after_squeeze = false;
            match l {
                ImageLayerConfig::Logit { .. } => j += 1,
                ImageLayerConfig::ActNorm => {
                    m = m.with_actnorm(&theirs, &ours);
                    j += 1;
                }
                ImageLayerConfig::FeatureActNorm => {
                    m = m.with_actnorm(&format!("{theirs}fc_module."), &ours);
                    j += 1;
                }
                ImageLayerConfig::Cpf(b) => {
                    let wrapper = if b.potential.image_shape().is_some() {
                        "flows.0."
                    } else {
                        "fc_module.flows.0."
                    };
                    m = m.with_prefix(format!("{theirs}{wrapper}"), format!("{ours}."));
                    j += 1;
                }
                ImageLayerConfig::Squeeze => {
                    scale += 1;
                    j = 0;
                    after_squeeze = true;
                }
                ImageLayerConfig::FactorOut => {
                    if !was_squeeze {
                        return Err(CpflowError::InvalidConfig(format!(
                            "layer {i}: the reference's MultiscaleFlow factors out only right \
                             after a squeeze"
                        )));
                    }
                }
            }
        }
        Ok(m)
    }

    /// An [`crate::posterior::AmortizedPosterior`] built from `config` under `our_prefix`
    /// against the reference VAE's posterior flow (`lib/sylvester/models/VAE.py:CPFVAE`, its
    /// `SequentialFlow` at `reference_prefix`, `"flow."` in a `CPFVAE` `state_dict`): layer
    /// `i` is `flows.{i}` there, a `LayerActnorm` keeping its `ActNorm(1)` at
    /// `flow.flows.1.`.
    ///
    /// Fails for `actnorm = false`: the reference then still ends with a `LayerActnorm`,
    /// which cpflow's posterior leaves out, so the two flows differ.
    pub fn for_vae_posterior(
        config: &PosteriorConfig,
        reference_prefix: &str,
        our_prefix: &str,
    ) -> Result<Self> {
        if !config.actnorm {
            return Err(CpflowError::InvalidConfig(
                "without ActNorms cpflow's posterior has no closing ActNorm, the reference's \
                 CPFVAE always has one: the layers do not correspond"
                    .into(),
            ));
        }
        if let Some(c) = &config.custom_potential {
            return Err(CpflowError::InvalidConfig(format!(
                "the posterior's blocks use the custom potential `{}`: the reference's CPFVAE \
                 has PICNN blocks, so its weights do not correspond",
                c.name
            )));
        }
        let mut m = Self::new();
        let mut i = 0;
        let actnorm = |m: Self, i: &mut usize| {
            let m = m.with_actnorm(
                &format!("{reference_prefix}flows.{i}.flow.flows.1."),
                &format!("{our_prefix}.layers.{i}"),
            );
            *i += 1;
            m
        };
        for _ in 0..config.blocks {
            m = actnorm(m, &mut i);
            m = m.with_prefix(
                format!("{reference_prefix}flows.{i}."),
                format!("{our_prefix}.layers.{i}."),
            );
            i += 1;
        }
        Ok(actnorm(m, &mut i))
    }
}

/// What [`load_reference_state_dict`] did.
///
/// ```
/// use std::collections::HashMap;
/// use candle_core::{Device, Tensor};
/// use cpflow::reference_weights::{KeyMapping, ReferenceLoad, load_reference_state_dict};
/// use cpflow::{FloatType, Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn2(icnn::Icnn2Config { dim: 3, width: 4, depth: 2, ..Default::default() });
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
/// use candle_core::{Device, Tensor};
/// use cpflow::reference_weights::{KeyMapping, load_reference_state_dict};
/// use cpflow::{FloatType, Flow, FlowConfig, PotentialConfig};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Written by benchmarks/reference_parity/export_fixtures.py: the state_dict of
/// // train_tabular.py's flow (d = 6, ICNN2 width 16, depth 3, 2 blocks) under `model.`.
/// let path = concat!(
///     env!("CARGO_MANIFEST_DIR"),
///     "/tests/fixtures/reference/tabular_icnn2.safetensors"
/// );
/// let state_dict: HashMap<String, Tensor> = candle_core::safetensors::load(path, &Device::Cpu)?
///     .into_iter()
///     .filter_map(|(k, v)| k.strip_prefix("model.").map(|k| (k.to_string(), v)))
///     .collect();
/// let pot = PotentialConfig::Icnn2(icnn::Icnn2Config { dim: 6, width: 16, depth: 3, ..Default::default() });
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use icnn::Icnn2Config;

    use crate::potential::PotentialConfig;
    use crate::{FloatType, Flow};

    fn small_flow() -> Flow {
        let pot = PotentialConfig::Icnn2(Icnn2Config {
            dim: 3,
            width: 4,
            depth: 2,
            ..Default::default()
        });
        let cfg = FlowConfig::tabular(3, 1, pot).with_float(FloatType::F64);
        Flow::new(cfg, &Device::Cpu).unwrap()
    }

    /// The flow's own variables, renamed to reference keys and reshaped like PyTorch's
    /// ActNorms, as a state_dict.
    fn reference_state_dict(flow: &Flow) -> HashMap<String, Tensor> {
        flow.named_vars()
            .into_iter()
            .filter(|(k, _)| !k.ends_with("initialized"))
            .map(|(k, v)| {
                let t = (v.as_tensor() + 0.25).unwrap();
                let (key, t) = match k.strip_suffix(".bias") {
                    Some(p) if !p.contains("icnn") => (format!("{p}.b"), t.unsqueeze(2).unwrap()),
                    _ if k.ends_with(".logs") && !k.contains("icnn") => {
                        (k.clone(), t.unsqueeze(2).unwrap())
                    }
                    _ => (k.clone(), t),
                };
                (key.replacen("layers.", "flows.", 1), t)
            })
            .collect()
    }

    #[test]
    fn loads_renamed_and_reshaped_weights_and_marks_flags() {
        let flow = small_flow();
        assert!(!flow.is_initialized().unwrap());
        let sd = reference_state_dict(&flow);
        let m = KeyMapping::for_flow(flow.config());
        let r = load_reference_state_dict(&flow.named_vars(), &sd, &m).unwrap();
        assert_eq!(r.loaded, sd.len());
        assert!(r.flags_marked >= 3);
        assert!(flow.is_initialized().unwrap());
        let b = flow
            .named_vars()
            .into_iter()
            .find(|(k, _)| k == "layers.0.bias")
            .unwrap()
            .1;
        let expect = sd["flows.0.b"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert_eq!(
            b.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap(),
            expect
        );
    }

    #[test]
    fn errors_name_the_offending_key() {
        let flow = small_flow();
        let m = KeyMapping::for_flow(flow.config());
        let vars = flow.named_vars();
        let message = |sd: &HashMap<String, Tensor>| {
            let e = load_reference_state_dict(&vars, sd, &m).unwrap_err();
            assert!(matches!(e, CpflowError::Checkpoint(_)), "{e}");
            e.to_string()
        };
        let mut sd = reference_state_dict(&flow);
        sd.remove("flows.1.w0");
        assert!(message(&sd).contains("has no flows.1.w0 (the model's layers.1.w0)"));
        let mut sd = reference_state_dict(&flow);
        sd.insert(
            "flows.1.icnn.Wzs.0.weight".into(),
            Tensor::zeros((4, 2), DType::F64, &Device::Cpu).unwrap(),
        );
        let msg = message(&sd);
        assert!(
            msg.contains("flows.1.icnn.Wzs.0.weight has shape [4, 2]"),
            "{msg}"
        );
        let mut sd = reference_state_dict(&flow);
        sd.insert(
            "flows.7.b".into(),
            Tensor::zeros(3, DType::F64, &Device::Cpu).unwrap(),
        );
        assert!(message(&sd).contains("flows.7.b matches no rule"));
        let mut sd = reference_state_dict(&flow);
        sd.insert(
            "flows.1.extra".into(),
            Tensor::zeros(1, DType::F64, &Device::Cpu).unwrap(),
        );
        assert!(message(&sd).contains("maps to layers.1.extra, which the model does not have"));
        let mut sd = reference_state_dict(&flow);
        let w1 = sd["flows.1.w1"].clone();
        sd.insert("flows.1.w1".into(), (w1 * f64::NAN).unwrap());
        assert!(message(&sd).contains("flows.1.w1 holds a NaN or infinite value"));
        // Integer and half-precision values are refused by key (they were converted silently:
        // an I64 w1 imported as a model with NLL 1.6e37).
        for dtype in [DType::I64, DType::F16, DType::U8] {
            let mut sd = reference_state_dict(&flow);
            let w1 = sd["flows.1.w1"].to_dtype(dtype).unwrap();
            sd.insert("flows.1.w1".into(), w1);
            let msg = message(&sd);
            assert!(
                msg.contains(&format!("flows.1.w1 holds {dtype:?} values")),
                "{msg}"
            );
        }
        // A frozen reference w0 must hold the constant that a fixed-w0 block uses.
        let mut cfg = flow.config().clone();
        for l in &mut cfg.layers {
            if let LayerConfig::Cpf(b) = l {
                b.trainable_w0 = false;
            }
        }
        let fixed = Flow::new(cfg, &Device::Cpu).unwrap();
        let fixed_map = KeyMapping::for_flow(fixed.config());
        let mut sd = reference_state_dict(&flow);
        sd.insert(
            "flows.1.w0".into(),
            Tensor::new(&[crate::block::LOG_E_MINUS_1 as f32], &Device::Cpu).unwrap(),
        );
        let r = load_reference_state_dict(&fixed.named_vars(), &sd, &fixed_map).unwrap();
        assert_eq!(r.loaded, sd.len() - 1);
        sd.insert(
            "flows.1.w0".into(),
            Tensor::new(&[0.7f64], &Device::Cpu).unwrap(),
        );
        let e = load_reference_state_dict(&fixed.named_vars(), &sd, &fixed_map).unwrap_err();
        assert!(e.to_string().contains("flows.1.w0 is [0.7]"), "{e}");
        // Nothing was written by the failed loads.
        assert!(!flow.is_initialized().unwrap());
    }

    #[test]
    fn multiscale_and_posterior_mappings_follow_the_reference_layout() {
        use crate::image::MultiscaleConfig;
        let ms = MultiscaleConfig {
            image: icnn::ImageShape::new(1, 4, 4),
            nblocks: vec![2, 1],
            factor_out: true,
            fc_end: Some(PotentialConfig::Icnn2(Icnn2Config::default())),
            ..MultiscaleConfig::mnist()
        };
        let cfg = ImageFlowConfig::multiscale(&ms).unwrap();
        let m = KeyMapping::for_multiscale(&cfg).unwrap();
        // [logit, AN, AN, CPF, AN, CPF, squeeze, factor-out | AN, CPF, fc CPF, fc AN]
        let pairs = [
            ("transforms.0.flows.1.b", "layers.1.bias"),
            ("transforms.0.flows.5.flows.0.w0", "layers.5.w0"),
            ("transforms.1.flows.0.logs", "layers.8.logs"),
            (
                "transforms.1.flows.1.flows.0.icnn.Wz0.weight",
                "layers.9.icnn.Wz0.weight",
            ),
            ("transforms.1.flows.2.fc_module.flows.0.w1", "layers.10.w1"),
            ("transforms.1.flows.3.fc_module.b", "layers.11.bias"),
        ];
        for (theirs, ours) in pairs {
            assert_eq!(m.map(theirs).as_deref(), Some(ours), "{theirs}");
        }
        let pc = PosteriorConfig::reference_vae(4, 3).with_blocks(2);
        let m = KeyMapping::for_vae_posterior(&pc, "flow.", "q").unwrap();
        assert_eq!(
            m.map("flow.flows.4.flow.flows.1.logs").as_deref(),
            Some("q.layers.4.logs")
        );
        assert_eq!(
            m.map("flow.flows.3.icnn.Wcs.0.bias").as_deref(),
            Some("q.layers.3.icnn.Wcs.0.bias")
        );
        assert!(KeyMapping::for_vae_posterior(&pc.with_actnorm(false), "flow.", "q").is_err());
    }
}
