//! Blocks whose convex potential is a network of the user's own: registered by name with
//! [`register_potential`], named in a [`PotentialConfig::Custom`](crate::PotentialConfig)
//! block, and built by the registered function whenever a flow of that configuration is
//! built or loaded (`Flow::new`, `Flow::load`, checkpoints, `Trainer::resume`).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use candle_core::Tensor;
use candle_nn::VarBuilder;
use icnn::{ConvexPotential, Linearization};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::error::{CpflowError, Result};
use crate::rng::FlowRng;

/// A block potential built by the function registered under `name` (see
/// [`register_potential`]). The configuration is saved with the model, so loading it needs
/// the same registration.
///
/// ```
/// use std::collections::BTreeMap;
/// use cpflow::candle::Device;
/// use cpflow::{CpflowError, CustomPotentialConfig, Flow, FlowConfig, PotentialConfig};
/// let cfg = CustomPotentialConfig {
///     name: "never-registered".into(),
///     dim: 2,
///     settings: BTreeMap::from([("width".to_string(), 8.0)]),
/// };
/// // Saved with the model as JSON; a field it does not know is refused.
/// let json = serde_json::to_string(&cfg).unwrap();
/// assert_eq!(serde_json::from_str::<CustomPotentialConfig>(&json).unwrap(), cfg);
/// assert!(serde_json::from_str::<CustomPotentialConfig>(r#"{"name": "x", "dim": 2, "depth": 3}"#).is_err());
/// // Building the flow needs a builder registered under the name.
/// let err = Flow::new(FlowConfig::single_block(PotentialConfig::Custom(cfg)), &Device::Cpu).unwrap_err();
/// assert!(matches!(&err, CpflowError::InvalidConfig(m) if m.contains("register_potential")), "{err}");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPotentialConfig {
    /// The name the builder is registered under.
    pub name: String,
    /// The input dimension `d`.
    pub dim: usize,
    /// Free numeric settings for the builder (widths, depths, …), saved with the model.
    #[serde(default)]
    pub settings: BTreeMap<String, f64>,
}

/// A network usable as a block potential: any [`ConvexPotential`] that can be shared
/// between threads.
pub type CustomNetwork = Box<dyn ConvexPotential + Send + Sync>;

/// What [`register_potential`] stores: builds the network from the block's variables (under
/// the block's `icnn` prefix), its configuration and a random stream for the initial weights
/// (seeded from the flow's `init_seed`, so a flow is reproducible). Tensors the builder makes
/// itself (constants, not variables of the `VarBuilder`) must be in the flow's float type,
/// `vb.dtype()`, and on `vb.device()`: another type fails at the first product with candle's
/// "dtype mismatch".
pub type PotentialBuilder = dyn Fn(VarBuilder, &CustomPotentialConfig, &mut dyn RngCore) -> icnn::Result<CustomNetwork>
    + Send
    + Sync;

/// Builders by name (one map per kind of network: see also
/// [`crate::custom_conditional_potential`]).
pub(crate) type Registry<B> = RwLock<BTreeMap<String, Arc<B>>>;

fn registry() -> &'static Registry<PotentialBuilder> {
    static REGISTRY: OnceLock<Registry<PotentialBuilder>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(BTreeMap::new()))
}

/// Registers (or replaces) `builder` under `name`.
pub(crate) fn insert<B: ?Sized>(registry: &Registry<B>, name: &str, builder: Arc<B>) {
    registry
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(name.to_string(), builder);
}

/// The registered names, sorted.
pub(crate) fn names<B: ?Sized>(registry: &Registry<B>) -> Vec<String> {
    registry
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keys()
        .cloned()
        .collect()
}

/// The builder registered under `name`, or the error that says which call registers it.
pub(crate) fn lookup<B: ?Sized>(
    registry: &Registry<B>,
    name: &str,
    register_fn: &str,
) -> Result<Arc<B>> {
    let found = registry
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(name)
        .cloned();
    found.ok_or_else(|| {
        let known = names(registry);
        // The `cpflow` binary registers nothing: its runs need a program of the user's own.
        let cli_hint = if register_fn == "register_potential" {
            " (the `cpflow` command line: a program that registers it, then runs \
             cpflow::cli::main — see the example custom_potential_cli)"
        } else {
            ""
        };
        CpflowError::InvalidConfig(format!(
            "the custom potential `{name}` is not registered in this process (registered: {}): \
             call cpflow::{register_fn}(\"{name}\", …) before building or loading the \
             flow{cli_hint}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// The refusal of a network whose dimension is not the configured one.
pub(crate) fn check_dim(name: &str, what: &str, configured: usize, built: usize) -> Result<()> {
    if configured == built {
        return Ok(());
    }
    Err(CpflowError::InvalidConfig(format!(
        "the custom potential `{name}` was configured with {what} = {configured} but its \
         builder returned a network of {what} {built}"
    )))
}

/// Registers (or replaces) the builder of the custom potential `name`, for every flow built
/// or loaded afterwards in this process.
///
/// The network must compute `∇ₓF` and `∇²ₓF·v` explicitly (see `icnn`'s
/// `Linearization::from_parts` and `check_derivatives`). It has no data-dependent
/// initialisation of its own: `Flow::initialize` leaves it as built.
///
/// - **Initial weights:** draw them from the `rng` the builder receives, e.g. with
///   `icnn::Linear::new(&vb, n_in, n_out, bias, rng)`, so that a flow is reproducible from its
///   `init_seed`. candle's own random initialisers (`candle_nn::Init::Randn`) cannot be
///   seeded, and constant ones may make `F` constant (every block the identity).
/// - **Convexity is not checked:** products that are not those of a convex `F` make the
///   block's Jacobian indefinite. The exact log-det then refuses the flow, and training warns
///   that CG broke down (`CgReport::breakdown`). Check a new network with
///   `icnn::check_derivatives` first.
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::Arc;
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::{BlockConfig, CustomPotentialConfig, Flow, FlowConfig, PotentialConfig};
/// use cpflow::icnn::{ConvexPotential, HessianVectorProducts, Linearization};
///
/// // F(x) = s·Σ x_i⁴/12 with s = softplus(c), c a parameter: ∇F = s·x³/3, ∇²F = diag(s·x²).
/// struct Quartic { c: Tensor, dim: usize }
/// #[derive(Debug)]
/// struct Diagonal(Tensor);
/// impl HessianVectorProducts for Diagonal {
///     fn hvp(&self, v: &Tensor) -> cpflow::icnn::Result<Tensor> { Ok((v * &self.0)?) }
///     fn detach(&self) -> Arc<dyn HessianVectorProducts> { Arc::new(Diagonal(self.0.detach())) }
/// }
/// impl ConvexPotential for Quartic {
///     fn potential(&self, x: &Tensor) -> cpflow::icnn::Result<Tensor> { Ok(self.linearize(x)?.potential()) }
///     fn linearize(&self, x: &Tensor) -> cpflow::icnn::Result<Linearization> {
///         let s = cpflow::icnn::softplus(&self.c)?;
///         let x2 = x.sqr()?;
///         let f = (x2.sqr()?.sum(1)?.broadcast_mul(&s)? / 12.0)?;
///         let g = ((x2.clone() * x)?.broadcast_mul(&s)? / 3.0)?;
///         Linearization::from_parts(f, g, Arc::new(Diagonal(x2.broadcast_mul(&s)?)))
///     }
///     fn dim(&self) -> usize { self.dim }
/// }
///
/// # fn main() -> cpflow::Result<()> {
/// cpflow::register_potential("quartic", |vb, cfg, rng| {
///     // One seeded parameter `c` (shape (1,)), drawn from the flow's init stream.
///     let c = cpflow::icnn::Linear::new(&vb, 1, 1, false, rng)?.weight.flatten_all()?;
///     Ok(Box::new(Quartic { c, dim: cfg.dim }))
/// });
/// let pot = PotentialConfig::Custom(CustomPotentialConfig {
///     name: "quartic".into(),
///     dim: 2,
///     settings: BTreeMap::new(),
/// });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f64, -1.0], [2.0, 0.1]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let lp = flow.log_prob_exact(&x)?;
/// assert_eq!(lp.dims(), &[2]);
/// # Ok(())
/// # }
/// ```
pub fn register_potential<F>(name: &str, builder: F)
where
    F: Fn(VarBuilder, &CustomPotentialConfig, &mut dyn RngCore) -> icnn::Result<CustomNetwork>
        + Send
        + Sync
        + 'static,
{
    insert(registry(), name, Arc::new(builder));
}

/// The names registered so far with [`register_potential`], sorted.
///
/// ```
/// use cpflow::icnn::{Icnn3, Icnn3Config};
/// // A builder that wraps one of `icnn`'s own networks.
/// cpflow::register_potential("doc-icnn3", |vb, cfg, rng| {
///     let config = Icnn3Config { dim: cfg.dim, width: 4, depth: 2, ..Default::default() };
///     Ok(Box::new(Icnn3::new(vb, &config, rng)?))
/// });
/// let names = cpflow::registered_potentials();
/// assert!(names.contains(&"doc-icnn3".to_string()));
/// assert!(names.is_sorted());
/// ```
pub fn registered_potentials() -> Vec<String> {
    names(registry())
}

/// A built custom network with the name it was registered under.
#[derive(Clone)]
pub(crate) struct CustomPotential {
    name: String,
    net: Arc<dyn ConvexPotential + Send + Sync>,
}

impl std::fmt::Debug for CustomPotential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomPotential")
            .field("name", &self.name)
            .field("dim", &self.net.dim())
            .finish_non_exhaustive()
    }
}

impl CustomPotential {
    /// Builds the network of `config` with its registered builder (one `u64` of `rng` seeds
    /// the builder's stream), and checks its dimension.
    pub(crate) fn build<R: Rng + ?Sized>(
        vb: VarBuilder,
        config: &CustomPotentialConfig,
        rng: &mut R,
    ) -> Result<Self> {
        let builder = lookup(registry(), &config.name, "register_potential")?;
        let mut stream = FlowRng::seed_from_u64(rng.random());
        let net = builder(vb, config, &mut stream)?;
        check_dim(&config.name, "dim", config.dim, net.dim())?;
        Ok(Self {
            name: config.name.clone(),
            net: Arc::from(net),
        })
    }

    pub(crate) fn linearize(&self, x: &Tensor) -> icnn::Result<Linearization> {
        self.net.linearize(x)
    }

    pub(crate) fn value_and_gradient(&self, x: &Tensor) -> icnn::Result<(Tensor, Tensor)> {
        self.net.value_and_gradient(x)
    }

    /// The network of your own, for the host kernels' paths
    /// (`ConvexPotential::host_linearize`, `ConvexPotential::host_weights`).
    pub(crate) fn network(&self) -> &dyn ConvexPotential {
        self.net.as_ref()
    }

    /// Custom networks have no data-dependent initialisation.
    pub(crate) fn initialize(&self, _x: &Tensor) -> icnn::Result<()> {
        Ok(())
    }
}
