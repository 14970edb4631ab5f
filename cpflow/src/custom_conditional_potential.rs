//! Conditional blocks whose potential `F(x; c)` (convex in `x` for every context `c`) is a
//! network of the user's own: the conditional counterpart of [`crate::custom_potential`], for
//! flows with a context (`Flow::log_prob_exact_given`, `sample_given`, …) like the PICNN's.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use candle_core::Tensor;
use candle_nn::VarBuilder;
use icnn::{ConditionalConvexPotential, Linearization};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::custom_potential::{
    Registry, check_dim, f64_setting, insert, lookup, names, usize_setting,
};
use crate::error::Result;
use crate::rng::FlowRng;

/// A conditional block potential built by the function registered under `name` with
/// [`register_conditional_potential`]. Saved with the model: loading it needs the same
/// registration.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::{CpflowError, CustomConditionalConfig, Flow, FlowConfig, PotentialConfig};
/// let cfg = CustomConditionalConfig {
///     name: "never-registered".into(),
///     dim: 2,
///     context_dim: 3,
///     settings: Default::default(),
/// };
/// let pot = PotentialConfig::CustomConditional(cfg);
/// assert_eq!((pot.dim(), pot.context_dim()), (2, Some(3)));
/// // Building the flow needs a builder registered under the name.
/// let err = Flow::new(FlowConfig::single_block(pot), &Device::Cpu).unwrap_err();
/// assert!(
///     matches!(&err, CpflowError::InvalidConfig(m) if m.contains("register_conditional_potential")),
///     "{err}"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomConditionalConfig {
    /// The name the builder is registered under.
    pub name: String,
    /// The input dimension `d`.
    pub dim: usize,
    /// The context dimension `d_c`.
    pub context_dim: usize,
    /// Free numeric settings for the builder, saved with the model.
    #[serde(default)]
    pub settings: BTreeMap<String, f64>,
}

impl CustomConditionalConfig {
    /// The setting `key` as a count: see [`crate::CustomPotentialConfig::usize_setting`]
    /// (an [`icnn::IcnnError::InvalidConfig`] naming the potential and the key when it is
    /// missing, negative, fractional or not finite).
    ///
    /// ```
    /// use cpflow::CustomConditionalConfig;
    /// let cfg = CustomConditionalConfig {
    ///     name: "mine".into(),
    ///     dim: 2,
    ///     context_dim: 1,
    ///     settings: [("width".to_string(), -8.0)].into(),
    /// };
    /// let err = cfg.usize_setting("width").unwrap_err().to_string();
    /// assert!(err.contains("`mine`") && err.contains("`width`") && err.contains("-8"), "{err}");
    /// ```
    pub fn usize_setting(&self, key: &str) -> icnn::Result<usize> {
        usize_setting(&self.name, &self.settings, key, None)
    }

    /// [`CustomConditionalConfig::usize_setting`] with `default` when `key` is absent.
    pub fn usize_setting_or(&self, key: &str, default: usize) -> icnn::Result<usize> {
        usize_setting(&self.name, &self.settings, key, Some(default))
    }

    /// The setting `key` as a finite number: see
    /// [`crate::CustomPotentialConfig::f64_setting`].
    pub fn f64_setting(&self, key: &str) -> icnn::Result<f64> {
        f64_setting(&self.name, &self.settings, key, None)
    }

    /// [`CustomConditionalConfig::f64_setting`] with `default` when `key` is absent.
    pub fn f64_setting_or(&self, key: &str, default: f64) -> icnn::Result<f64> {
        f64_setting(&self.name, &self.settings, key, Some(default))
    }
}

/// A network usable as a conditional block potential.
pub type CustomConditionalNetwork = Box<dyn ConditionalConvexPotential + Send + Sync>;

/// What [`register_conditional_potential`] stores (see [`crate::PotentialBuilder`]).
pub type ConditionalPotentialBuilder = dyn Fn(
        VarBuilder,
        &CustomConditionalConfig,
        &mut dyn RngCore,
    ) -> icnn::Result<CustomConditionalNetwork>
    + Send
    + Sync;

fn registry() -> &'static Registry<ConditionalPotentialBuilder> {
    static REGISTRY: OnceLock<Registry<ConditionalPotentialBuilder>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Registers (or replaces) the builder of the conditional custom potential `name`, for every
/// flow built or loaded afterwards in this process. The network implements
/// [`ConditionalConvexPotential`]: its `linearize_with_context(x, c)` returns
/// `Linearization::from_parts` of `F(·; c)` at `x` (see `icnn`'s extension API). Contexts go
/// through candle's ordinary autodiff, so the network may depend on them in any way, but must
/// stay convex in `x`. No data-dependent initialisation.
///
/// The integration tests (`cpflow/tests/integration/custom_potential.rs`) hold a complete
/// conditional example; [`crate::register_potential`] shows the unconditional API.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::{CustomConditionalConfig, Flow, FlowConfig, PotentialConfig};
/// use cpflow::icnn::{Picnn, PicnnConfig};
/// # fn main() -> cpflow::Result<()> {
/// // A builder that wraps `icnn`'s partially input-convex network.
/// cpflow::register_conditional_potential("doc-picnn", |vb, cfg, rng| {
///     let config = PicnnConfig {
///         dim: cfg.dim,
///         context_dim: cfg.context_dim,
///         // Checked counts, named in the error when missing or not whole numbers ≥ 0.
///         width: cfg.usize_setting("width")?,
///         depth: cfg.usize_setting_or("depth", 2)?,
///         ..Default::default()
///     };
///     Ok(Box::new(Picnn::new(vb, &config, rng)?))
/// });
/// let pot = PotentialConfig::CustomConditional(CustomConditionalConfig {
///     name: "doc-picnn".into(),
///     dim: 2,
///     context_dim: 1,
///     settings: [("width".to_string(), 4.0)].into(),
/// });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// assert_eq!(flow.context_dim(), Some(1));
/// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2]], &Device::Cpu)?;
/// let c = Tensor::new(&[[0.0f64], [1.0]], &Device::Cpu)?;
/// flow.initialize_given(&x, &c)?;
/// assert_eq!(flow.log_prob_exact_given(&x, &c)?.dims(), &[2]);
/// assert!(flow.log_prob_exact(&x).is_err()); // a conditional flow needs its context
/// # Ok(())
/// # }
/// ```
pub fn register_conditional_potential<F>(name: &str, builder: F)
where
    F: Fn(
            VarBuilder,
            &CustomConditionalConfig,
            &mut dyn RngCore,
        ) -> icnn::Result<CustomConditionalNetwork>
        + Send
        + Sync
        + 'static,
{
    insert(registry(), name, Arc::new(builder));
}

/// The names registered so far with [`register_conditional_potential`], sorted.
///
/// ```
/// use cpflow::icnn::{Picnn, PicnnConfig};
/// cpflow::register_conditional_potential("doc-picnn-names", |vb, cfg, rng| {
///     let config = PicnnConfig { dim: cfg.dim, context_dim: cfg.context_dim, ..Default::default() };
///     Ok(Box::new(Picnn::new(vb, &config, rng)?))
/// });
/// let names = cpflow::registered_conditional_potentials();
/// assert!(names.contains(&"doc-picnn-names".to_string()));
/// assert!(names.is_sorted());
/// ```
pub fn registered_conditional_potentials() -> Vec<String> {
    names(registry())
}

/// A built conditional custom network with the name it was registered under.
#[derive(Clone)]
pub(crate) struct CustomConditionalPotential {
    name: String,
    net: Arc<dyn ConditionalConvexPotential + Send + Sync>,
}

impl std::fmt::Debug for CustomConditionalPotential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomConditionalPotential")
            .field("name", &self.name)
            .field("dim", &self.net.dim())
            .field("context_dim", &self.net.context_dim())
            .finish_non_exhaustive()
    }
}

impl CustomConditionalPotential {
    /// Builds the network of `config` with its registered builder (one `u64` of `rng` seeds
    /// the builder's stream), and checks both dimensions.
    pub(crate) fn build<R: Rng + ?Sized>(
        vb: VarBuilder,
        config: &CustomConditionalConfig,
        rng: &mut R,
    ) -> Result<Self> {
        let builder = lookup(registry(), &config.name, "register_conditional_potential")?;
        let mut stream = FlowRng::seed_from_u64(rng.random());
        let net = builder(vb, config, &mut stream)?;
        check_dim(&config.name, "dim", config.dim, net.dim())?;
        check_dim(
            &config.name,
            "context_dim",
            config.context_dim,
            net.context_dim(),
        )?;
        Ok(Self {
            name: config.name.clone(),
            net: Arc::from(net),
        })
    }

    pub(crate) fn linearize_with_context(
        &self,
        x: &Tensor,
        c: &Tensor,
    ) -> icnn::Result<Linearization> {
        self.net.linearize_with_context(x, c)
    }
}
