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

use std::collections::BTreeMap;

use crate::error::{CpflowError, Result};
use crate::flow_config::{FlowConfig, LayerConfig};
use crate::image::{ImageFlowConfig, ImageLayerConfig};
use crate::posterior::PosteriorConfig;

mod load;

pub use load::{ReferenceLoad, load_reference_state_dict};

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

#[cfg(test)]
mod tests;
