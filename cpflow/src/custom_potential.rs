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

impl CustomPotentialConfig {
    /// The setting `key` as a count (a width, a depth, a number of ridges), for a builder:
    /// an [`icnn::IcnnError::InvalidConfig`] naming the potential and the key when it is
    /// missing or is not a whole number in `[0, 2⁵³]` (negative, fractional, NaN, `±∞`),
    /// never a silent `as usize` (which makes `-1` a 0 and `2.7` a 2).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use cpflow::CustomPotentialConfig;
    /// let cfg = CustomPotentialConfig {
    ///     name: "ridges".into(),
    ///     dim: 2,
    ///     settings: BTreeMap::from([("width".into(), 16.0), ("depth".into(), 2.5)]),
    /// };
    /// assert_eq!(cfg.usize_setting("width")?, 16);
    /// let err = cfg.usize_setting("depth").unwrap_err().to_string();
    /// assert!(err.contains("`depth`") && err.contains("2.5"), "{err}");
    /// let err = cfg.usize_setting("heads").unwrap_err().to_string();
    /// assert!(err.contains("`heads` is missing"), "{err}");
    /// assert_eq!(cfg.usize_setting_or("heads", 4)?, 4);
    /// # Ok::<(), cpflow::icnn::IcnnError>(())
    /// ```
    pub fn usize_setting(&self, key: &str) -> icnn::Result<usize> {
        usize_setting(&self.name, &self.settings, key, None)
    }

    /// [`CustomPotentialConfig::usize_setting`] with `default` when `key` is absent (a
    /// present value is checked all the same).
    pub fn usize_setting_or(&self, key: &str, default: usize) -> icnn::Result<usize> {
        usize_setting(&self.name, &self.settings, key, Some(default))
    }

    /// The setting `key` as a finite number: an [`icnn::IcnnError::InvalidConfig`] naming
    /// the potential and the key when it is missing (a flow's configuration already refuses
    /// NaN and `±∞` settings; see [`crate::FlowConfig::validate`]).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use cpflow::CustomPotentialConfig;
    /// let cfg = CustomPotentialConfig {
    ///     name: "quartic".into(),
    ///     dim: 2,
    ///     settings: BTreeMap::from([("init_bound".into(), 0.5)]),
    /// };
    /// assert_eq!(cfg.f64_setting("init_bound")?, 0.5);
    /// assert!(cfg.f64_setting("scale").is_err());
    /// assert_eq!(cfg.f64_setting_or("scale", 1.0)?, 1.0);
    /// # Ok::<(), cpflow::icnn::IcnnError>(())
    /// ```
    pub fn f64_setting(&self, key: &str) -> icnn::Result<f64> {
        f64_setting(&self.name, &self.settings, key, None)
    }

    /// [`CustomPotentialConfig::f64_setting`] with `default` when `key` is absent.
    pub fn f64_setting_or(&self, key: &str, default: f64) -> icnn::Result<f64> {
        f64_setting(&self.name, &self.settings, key, Some(default))
    }
}

/// Largest whole number every smaller one of which an `f64` setting holds exactly (2⁵³).
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// The refusal of setting `key` of the custom potential `name`.
fn setting_error(name: &str, key: &str, what: String) -> icnn::IcnnError {
    icnn::IcnnError::InvalidConfig(format!("custom potential `{name}`: setting `{key}` {what}"))
}

/// The setting `key` of `settings` (of the custom potential `name`) as a finite number, or
/// `default` when absent (an error when there is none).
pub(crate) fn f64_setting(
    name: &str,
    settings: &BTreeMap<String, f64>,
    key: &str,
    default: Option<f64>,
) -> icnn::Result<f64> {
    match (settings.get(key), default) {
        (Some(&v), _) if v.is_finite() => Ok(v),
        (Some(&v), _) => Err(setting_error(name, key, format!("must be finite, got {v}"))),
        (None, Some(d)) => Ok(d),
        (None, None) => {
            let known: Vec<&str> = settings.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            Err(setting_error(
                name,
                key,
                format!("is missing (settings given: {known})"),
            ))
        }
    }
}

/// The setting `key` as a whole number in `[0, 2⁵³]`, or `default` when absent.
pub(crate) fn usize_setting(
    name: &str,
    settings: &BTreeMap<String, f64>,
    key: &str,
    default: Option<usize>,
) -> icnn::Result<usize> {
    if !settings.contains_key(key)
        && let Some(d) = default
    {
        return Ok(d);
    }
    let v = f64_setting(name, settings, key, None)?;
    if v >= 0.0 && v.fract() == 0.0 && v <= MAX_EXACT_INTEGER {
        // A whole number in [0, 2⁵³]: exact in usize on 64-bit targets; on a 32-bit one,
        // checked.
        usize::try_from(v as u64).map_err(|_| {
            setting_error(name, key, format!("{v} does not fit this platform's usize"))
        })
    } else {
        Err(setting_error(
            name,
            key,
            format!("must be a whole number ≥ 0, got {v}"),
        ))
    }
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
/// - **Initial weights:** draw them from the `rng` the builder receives, with
///   `icnn::init::uniform(&vb, shape, name, bound, rng)` (or `icnn::Linear::new(&vb, n_in,
///   n_out, bias, rng)` for a whole layer), so that a flow is reproducible from its
///   `init_seed`. candle's own random initialisers (`candle_nn::Init::Randn`) cannot be
///   seeded, and constant ones may make `F` constant (every block the identity).
/// - **Settings:** read them with [`CustomPotentialConfig::usize_setting`] and
///   [`CustomPotentialConfig::f64_setting`] (and their `_or` forms), which name the key when
///   it is missing or not a valid count.
/// - **Errors of your own** (a file the builder reads, a network's own failure): return
///   `icnn::IcnnError::network(e)`, which keeps `e` as the error's `source`.
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
///     // One seeded parameter `c` (shape (1,)), drawn from the flow's init stream from
///     // U(−b, b), b the setting `init_bound` (1 if absent).
///     let bound = cfg.f64_setting_or("init_bound", 1.0)?;
///     let c = cpflow::icnn::init::uniform(&vb, 1, "c", bound, rng)?;
///     Ok(Box::new(Quartic { c, dim: cfg.dim }))
/// });
/// let pot = PotentialConfig::Custom(CustomPotentialConfig {
///     name: "quartic".into(),
///     dim: 2,
///     settings: BTreeMap::from([("init_bound".into(), 0.5)]),
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
///     let config = Icnn3Config {
///         dim: cfg.dim,
///         width: cfg.usize_setting_or("width", 4)?,
///         depth: cfg.usize_setting_or("depth", 2)?,
///         ..Default::default()
///     };
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::error::Error;

    use candle_core::Device;

    use crate::{
        CpflowError, CustomConditionalConfig, CustomPotentialConfig, Flow, FlowConfig,
        PotentialConfig,
    };

    fn config(settings: &[(&str, f64)]) -> CustomPotentialConfig {
        CustomPotentialConfig {
            name: "mine".into(),
            dim: 2,
            settings: settings.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    /// The message of an `InvalidConfig`; panics on anything else.
    fn refusal<T: std::fmt::Debug>(r: icnn::Result<T>) -> String {
        match r {
            Err(icnn::IcnnError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    /// Counts are whole numbers in [0, 2⁵³]; anything else names the potential and the key
    /// (`as usize` made -1 a 0, 2.7 a 2, NaN a 0 and 1e300 usize::MAX).
    #[test]
    fn usize_settings_are_checked_and_name_the_key() {
        let cfg = config(&[("zero", 0.0), ("w", 16.0), ("top", 9_007_199_254_740_992.0)]);
        assert_eq!(cfg.usize_setting("zero").unwrap(), 0);
        assert_eq!(cfg.usize_setting("w").unwrap(), 16);
        assert_eq!(cfg.usize_setting("top").unwrap(), 1 << 53);
        assert_eq!(cfg.usize_setting_or("absent", 7).unwrap(), 7);
        assert_eq!(cfg.usize_setting_or("w", 7).unwrap(), 16);
        let m = refusal(cfg.usize_setting("absent"));
        assert_eq!(
            m,
            "custom potential `mine`: setting `absent` is missing (settings given: top, w, zero)"
        );
        for bad in [-1.0, 2.7, -0.5, f64::NAN, f64::INFINITY, 1e300] {
            let cfg = config(&[("width", bad)]);
            for r in [cfg.usize_setting("width"), cfg.usize_setting_or("width", 3)] {
                let m = refusal(r);
                assert!(
                    m.starts_with("custom potential `mine`: setting `width` must be"),
                    "{bad}: {m}"
                );
                assert!(m.contains(&bad.to_string()), "{bad}: {m}");
            }
        }
        assert_eq!(
            refusal(config(&[]).usize_setting("w")),
            "custom potential `mine`: setting `w` is missing (settings given: none)"
        );
    }

    #[test]
    fn f64_settings_are_finite_or_refused() {
        let cfg = config(&[("a", -2.5), ("nan", f64::NAN)]);
        assert_eq!(cfg.f64_setting("a").unwrap(), -2.5);
        assert_eq!(cfg.f64_setting_or("b", 1.5).unwrap(), 1.5);
        assert!(refusal(cfg.f64_setting("b")).contains("`b` is missing"));
        assert!(refusal(cfg.f64_setting_or("nan", 1.0)).contains("`nan` must be finite"));
        let cond = CustomConditionalConfig {
            name: "cond".into(),
            dim: 2,
            context_dim: 1,
            settings: BTreeMap::from([("depth".to_string(), 3.0)]),
        };
        assert_eq!(cond.usize_setting("depth").unwrap(), 3);
        assert_eq!(cond.usize_setting_or("width", 8).unwrap(), 8);
        assert_eq!(cond.f64_setting_or("depth", 0.0).unwrap(), 3.0);
        assert!(refusal(cond.f64_setting("x")).starts_with("custom potential `cond`"));
    }

    /// A builder's own error reaches the caller of `Flow::new` as itself, the source of
    /// `IcnnError::Network` (it had to be flattened into `InvalidConfig`'s text).
    #[test]
    fn a_builders_own_error_stays_the_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("weights file truncated")]
        struct Truncated;
        crate::register_potential("test-failing-builder", |_, _, _| {
            Err(icnn::IcnnError::network(Truncated))
        });
        let pot = PotentialConfig::Custom(CustomPotentialConfig {
            name: "test-failing-builder".into(),
            dim: 2,
            settings: BTreeMap::new(),
        });
        let err = Flow::new(FlowConfig::single_block(pot), &Device::Cpu).unwrap_err();
        assert!(
            matches!(err, CpflowError::Icnn(icnn::IcnnError::Network(_))),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "the network failed");
        let mut chain = err.source();
        let mut found = false;
        while let Some(e) = chain {
            found |= e.downcast_ref::<Truncated>().is_some();
            chain = e.source();
        }
        assert!(found, "Truncated is not in the chain of {err:?}");
    }
}
