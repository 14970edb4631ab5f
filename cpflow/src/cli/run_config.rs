//! The TOML run configuration of `cpflow train`, with command-line overrides.
//!
//! A file has up to four tables, every key optional (defaults: the reference toy run,
//! `train_toy.py`):
//!
//! ```toml
//! [data]            # what to fit
//! source = "8gaussians"   # toy name | path.npy | path.csv | path.png (image density)
//!                          # | power | gas | hepmass | miniboone | bsds300 (MAF's splits)
//! root = "data"            # tabular benchmarks: the data root of `cargo xtask download`
//! n_train = 50000          # toys/images: points drawn for training
//! n_val = 10000            # toys/images: fresh validation points (curve, early stopping)
//! n_test = 10000           # toys/images: fresh test points, scored once at the end
//! seed = 0
//! val_fraction = 0.1       # files: fraction of the rows for validation
//! test_fraction = 0.1      # files: fraction of the rows for the test (0: no test score)
//!
//! [model]
//! arch = "icnn3"           # icnn | icnn2 | icnn3 | dense_icnn2
//! blocks = 1
//! width = 32
//! depth = 20
//! activation = "gaussian_softplus"   # or "softplus"
//! zero_shift = true
//! symm_act_first = true
//! layout = "toy"           # toy | tabular | single
//! # prior_log_var = 2.0    # default: 2 for the one-block toy layout, else 0
//! float = "f64"            # f32 | f64
//! init_seed = 0
//!
//! [train]                  # crate::TrainConfig (serde names), e.g.
//! batch_size = 128
//! max_iterations = 3910
//! lr_schedule = { step = { step_size = 2000, gamma = 0.5 } }
//! [train.adam]
//! lr = 0.005
//!
//! [run]
//! device = "cpu"           # cpu | cuda
//! out = "runs/cpflow"
//! eval_every = 500         # validation exact NLL every this many iterations (0: end only)
//! plots = true             # write the PNGs at the end (2-D data only)
//! progress = true
//! ```
//!
//! Overrides: `--set table.key=value` (value in TOML syntax; bare words are strings), and the
//! shortcuts `--data`, `--iters`, `--batch-size`, `--lr`, `--device`, `--dtype`, `--seed`,
//! `--out`, applied in that order after the file.

use crate::block::BlockConfig;
use crate::model_size;
use crate::{
    CustomPotentialConfig, FloatType, FlowConfig, GaussianPrior, LayerConfig, PotentialConfig,
    TrainConfig,
};
use anyhow::{Context, Result, bail};
use icnn::{ActivationKind, DenseIcnn2Config, Icnn2Config, Icnn3Config, IcnnConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

mod image_config;
mod inert_settings;
mod serde_messages;
mod toml_integer;
pub use image_config::{is_image_config, resolve_image, with_root_beside_config};
pub(crate) use serde_messages::vae_config_error;
#[cfg(test)]
pub(crate) use serde_messages::{VAE_FORMS, form_checks};
use toml_integer::check_set_integer;
pub(crate) use toml_integer::flag_integer;

/// `[data]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    pub source: String,
    /// Where the tabular benchmarks are read (`cargo xtask download <name> --dir <root>`).
    pub root: PathBuf,
    pub n_train: usize,
    pub n_val: usize,
    pub n_test: usize,
    pub seed: u64,
    pub val_fraction: f64,
    pub test_fraction: f64,
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection {
            source: "8gaussians".into(),
            root: PathBuf::from(crate::datasets::layout::DEFAULT_ROOT),
            n_train: 50_000,
            n_val: 10_000,
            n_test: 10_000,
            seed: 0,
            val_fraction: 0.1,
            test_fraction: 0.1,
        }
    }
}

/// ICNN family of the blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    Icnn,
    Icnn2,
    Icnn3,
    DenseIcnn2,
    /// A network registered with `cpflow::register_potential` by the program that runs this
    /// command line (`cpflow::cli::main`), named in `[model.custom]`.
    Custom,
}

/// `[model.custom]`: the registered network of `arch = "custom"` and its builder's settings
/// (`width`, `depth`, … are then not used).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSection {
    /// The name it is registered under.
    pub name: String,
    /// Numeric settings passed to the builder (`CustomPotentialConfig::settings`).
    #[serde(default)]
    pub settings: std::collections::BTreeMap<String, f64>,
}

/// Layer layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `train_toy.py`: one block → `[ActNorm, CPF]` (trainable w₀, prior N(0, e²I));
    /// more → `[ActNorm, CPF, ActNorm, …]` (fixed w₀, prior N(0, I)).
    Toy,
    /// `train_tabular.py`: `[ActNorm, CPF, ActNorm, …, CPF, ActNorm]`, trainable w₀.
    Tabular,
    /// `[CPF, …, CPF]` without ActNorm (the OT experiment uses one block).
    Single,
}

/// `[model]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    pub arch: Arch,
    pub blocks: usize,
    pub width: usize,
    pub depth: usize,
    pub activation: ActivationKind,
    pub zero_shift: bool,
    pub symm_act_first: bool,
    pub layout: Layout,
    pub prior_log_var: Option<f64>,
    pub float: FloatType,
    pub init_seed: u64,
    /// The network of `arch = "custom"`.
    pub custom: Option<CustomSection>,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            arch: Arch::Icnn3,
            blocks: 1,
            width: 32,
            depth: 20,
            activation: ActivationKind::GaussianSoftplus,
            zero_shift: true,
            symm_act_first: true,
            layout: Layout::Toy,
            prior_log_var: None,
            float: FloatType::F64,
            init_seed: 0,
            custom: None,
        }
    }
}

impl ModelSection {
    /// The potential of every block for data dimension `dim`.
    pub fn potential(&self, dim: usize) -> Result<PotentialConfig> {
        let (width, depth, activation) = (self.width, self.depth, self.activation);
        let (zero_shift, symm_act_first) = (self.zero_shift, self.symm_act_first);
        Ok(match self.arch {
            Arch::Icnn => PotentialConfig::Icnn(IcnnConfig { dim, width, depth }),
            Arch::Icnn2 => PotentialConfig::Icnn2(Icnn2Config {
                dim,
                width,
                depth,
                activation,
                zero_shift,
                symm_act_first,
            }),
            Arch::Icnn3 => PotentialConfig::Icnn3(Icnn3Config {
                dim,
                width,
                depth,
                activation,
                zero_shift,
                symm_act_first,
            }),
            Arch::DenseIcnn2 => PotentialConfig::DenseIcnn2(DenseIcnn2Config {
                dim,
                width,
                depth,
                activation,
                zero_shift,
                symm_act_first,
            }),
            Arch::Custom => {
                let Some(c) = &self.custom else {
                    bail!(
                        "model.arch = \"custom\" needs a [model.custom] table naming the \
                         registered network: name = \"…\" (and settings = {{ … }} for its builder)"
                    );
                };
                PotentialConfig::Custom(CustomPotentialConfig {
                    name: c.name.clone(),
                    dim,
                    settings: c.settings.clone(),
                })
            }
        })
    }

    /// The flow for data dimension `dim`.
    pub fn flow_config(&self, dim: usize) -> Result<FlowConfig> {
        if self.blocks == 0 {
            bail!("model.blocks must be at least 1");
        }
        // Named by their keys here: the network's own check said "layer 1: width must be at
        // least 1", which names no setting. A custom network reads its own settings.
        if self.arch != Arch::Custom {
            for (key, v) in [("model.width", self.width), ("model.depth", self.depth)] {
                if v == 0 {
                    bail!("{key} must be at least 1 (got 0)");
                }
            }
        }
        if self.custom.is_some() && self.arch != Arch::Custom {
            bail!(
                "[model.custom] is only read with model.arch = \"custom\" (this model's arch is {:?})",
                self.arch
            );
        }
        let potential = self.potential(dim)?;
        // The layout as (ActNorms, blocks, trainable w₀): counted before the layer list is
        // built, since the list of an absurd `blocks` would itself fill the memory before
        // `validate` could refuse it.
        let (actnorms, trainable_w0, default_log_var) = match self.layout {
            Layout::Toy if self.blocks == 1 => (1, true, 2.0),
            Layout::Toy => (self.blocks.saturating_add(1), false, 0.0),
            Layout::Tabular => (self.blocks.saturating_add(1), true, 0.0),
            Layout::Single => (0, true, 0.0),
        };
        let mut block = BlockConfig::new(potential);
        block.trainable_w0 = trainable_w0;
        model_size::check_model_size(
            &format!("the flow (model.blocks = {}, dim {dim})", self.blocks),
            model_size::add(
                model_size::mul(actnorms, model_size::actnorm(dim)),
                model_size::Count::of_block(&block)
                    .times(self.blocks)
                    .at_least,
            ),
        )?;
        let cpf = || LayerConfig::Cpf(block.clone());
        let layers = match self.layout {
            Layout::Toy if self.blocks == 1 => vec![LayerConfig::ActNorm, cpf()],
            Layout::Toy | Layout::Tabular => {
                let mut layers = vec![LayerConfig::ActNorm];
                for _ in 0..self.blocks {
                    layers.push(cpf());
                    layers.push(LayerConfig::ActNorm);
                }
                layers
            }
            Layout::Single => (0..self.blocks).map(|_| cpf()).collect(),
        };
        let cfg = FlowConfig {
            dim,
            layers,
            prior: GaussianPrior::with_log_var(self.prior_log_var.unwrap_or(default_log_var)),
            float: self.float,
            init_seed: self.init_seed,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// `[run]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    pub device: String,
    pub out: PathBuf,
    pub eval_every: usize,
    pub plots: bool,
    pub progress: bool,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            device: "cpu".into(),
            out: PathBuf::from("runs/cpflow"),
            eval_every: 500,
            plots: true,
            progress: true,
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub data: DataSection,
    pub model: ModelSection,
    pub train: TrainConfig,
    pub run: RunSection,
}

impl Default for RunConfig {
    /// The reference toy run (`train_toy.py` defaults on EightGaussian).
    fn default() -> Self {
        let train = crate::ToyExperimentConfig::reference_8gaussians().train;
        RunConfig {
            data: DataSection::default(),
            model: ModelSection::default(),
            train,
            run: RunSection::default(),
        }
    }
}

/// Command-line shortcuts (each `None` leaves the file's value).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub set: Vec<String>,
    pub data: Option<String>,
    pub iters: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub device: Option<String>,
    pub dtype: Option<FloatType>,
    pub seed: Option<u64>,
    pub out: Option<PathBuf>,
}

/// Whether the configuration `table` has a table `section` holding `key` (`[data] source`,
/// `[model] posterior`): how the commands tell a flow's, an image run's and a VAE's
/// configurations apart before deserialising them.
pub fn table_has_key(table: &toml::Table, section: &str, key: &str) -> bool {
    table
        .get(section)
        .and_then(|t| t.as_table())
        .is_some_and(|t| t.contains_key(key))
}

/// Parses `value` as a TOML value; a bare word that is not valid TOML becomes a string.
pub fn parse_value(value: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.into())),
        Err(_) => toml::Value::String(value.into()),
    }
}

/// Sets `path` (`a.b.c`) in `table`, creating intermediate tables.
pub fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<()> {
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        bail!("bad key path `{path}`");
    }
    let mut cur = table;
    for k in &keys[..keys.len() - 1] {
        let entry = cur
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("`{k}` in `{path}` is not a table"),
        };
    }
    cur.insert(keys[keys.len() - 1].to_string(), value);
    Ok(())
}

/// The training flags that a flow's and an image flow's configuration take alike, set in
/// `table`: `--iters`, `--batch-size` (refused above TOML's integers), `--lr`, `--dtype` and
/// `--seed` (the data's, the training's and the initialisation's).
pub(crate) fn set_training_flags(table: &mut toml::Table, ov: &Overrides) -> Result<()> {
    if let Some(n) = ov.iters {
        set_path(table, "train.max_iterations", flag_integer("--iters", n)?)?;
    }
    if let Some(b) = ov.batch_size {
        set_path(table, "train.batch_size", flag_integer("--batch-size", b)?)?;
    }
    if let Some(lr) = ov.lr {
        set_path(table, "train.adam.lr", toml::Value::Float(lr))?;
    }
    if let Some(f) = ov.dtype {
        set_path(table, "model.float", toml::Value::try_from(f)?)?;
    }
    if let Some(seed) = ov.seed {
        let seed = flag_integer("--seed", seed)?;
        for key in ["data.seed", "train.seed", "model.init_seed"] {
            set_path(table, key, seed.clone())?;
        }
    }
    Ok(())
}

/// Applies `--set key=value` overrides to `table` (each value in TOML syntax, [`parse_value`];
/// an integer outside TOML's range is refused, not taken as a string).
pub(crate) fn apply_sets(table: &mut toml::Table, sets: &[String]) -> Result<()> {
    for kv in sets {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set expects key=value, got `{kv}`"))?;
        let (k, v) = (k.trim(), v.trim());
        check_set_integer(k, v)?;
        set_path(table, k, parse_value(v))?;
    }
    Ok(())
}

/// Reads `file` (if any), applies the overrides and deserialises.
pub fn resolve(file: Option<&Path>, ov: &Overrides) -> Result<RunConfig> {
    let mut table = match file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            toml::from_str::<toml::Table>(&text)
                .with_context(|| format!("parsing config {}", p.display()))?
        }
        None => toml::Table::new(),
    };
    apply_sets(&mut table, &ov.set)?;
    let s = |v: &str| toml::Value::String(v.to_string());
    if let Some(d) = &ov.data {
        set_path(&mut table, "data.source", s(d))?;
    }
    set_training_flags(&mut table, ov)?;
    if let Some(d) = &ov.device {
        set_path(&mut table, "run.device", s(d))?;
    }
    if let Some(o) = &ov.out {
        set_path(&mut table, "run.out", s(&o.display().to_string()))?;
    }
    // Train-section defaults come from `RunConfig::default()`, not `TrainConfig::default()`:
    // merge the user's [train] over the serialised defaults.
    let user_set_early_stopping = table_has_key(&table, "train", "early_stopping");
    let defaults = toml::Table::try_from(RunConfig::default())?;
    let merged = merge(defaults, table);
    // Every table rejects unknown keys; the path names the table and the key.
    let mut cfg: RunConfig = serde_path_to_error::deserialize(toml::Value::Table(merged))
        .map_err(serde_messages::config_error)?;
    // TOML cannot hold `None`: the run default `early_stopping = None` is lost in the merge
    // above and would come back as `TrainConfig`'s `Some(20)`.
    if !user_set_early_stopping {
        cfg.train.early_stopping = RunConfig::default().train.early_stopping;
    }
    cfg.train.validate()?;
    check_prior_log_var(&cfg.model)?;
    Ok(cfg)
}

/// Refuses a `model.prior_log_var` that the flow's prior would refuse, naming the key and
/// printing the value in its short form (`1e300`; the prior's own message printed all 301
/// digits of it, and only once the data were loaded).
fn check_prior_log_var(model: &ModelSection) -> Result<()> {
    if let Some(v) = model.prior_log_var
        && GaussianPrior::with_log_var(v).validate().is_err()
    {
        bail!(
            "model.prior_log_var must be finite and within ±{} (the log-variance of the \
             Gaussian prior: σ² from e⁻⁸⁰ ≈ 1.8e-35 to e⁸⁰ ≈ 5.5e34), got {v:?}",
            GaussianPrior::MAX_ABS_LOG_VAR
        );
    }
    Ok(())
}

/// What the trainer would refuse only once training starts, checked before a run directory
/// is touched (`--overwrite` must not remove a run for a new one that cannot start): the SLQ
/// settings (validation estimator, training monitor) and, for a new run (`new_run`), a
/// first batch of at least 2 rows, from which the flow's ActNorm layers initialise (the first
/// batch has `min(train.batch_size, n_train)` rows). The rest of `[train]` is
/// [`TrainConfig::validate`]'s (called by [`resolve`]). Settings that the run accepts but
/// that cannot act in it (a plateau schedule or early stopping with `train.val_every = 0`, a
/// batch larger than the training rows) are warnings (`tracing::warn!`, on stderr), once.
pub fn check_training_start(train: &TrainConfig, n_train: usize, new_run: bool) -> Result<()> {
    let slqs = [
        match &train.val_estimator {
            crate::NllEstimator::Slq(p) => Some(("train.val_estimator.slq", p)),
            crate::NllEstimator::Exact => None,
        },
        Some(("train.train_slq", &train.train_slq)),
    ];
    for (key, p) in slqs.into_iter().flatten() {
        if p.probes == 0 || p.steps == 0 {
            bail!(
                "{key}.probes and {key}.steps must be at least 1, got {} and {}",
                p.probes,
                p.steps
            );
        }
    }
    let first = train.batch_size.min(n_train);
    if new_run && first < 2 {
        bail!(
            "the first training batch would have {first} row (train.batch_size = {}, {n_train} \
             training row{}): the flow initialises its ActNorm layers from it, which needs at \
             least 2 rows; raise train.batch_size (--batch-size) or the training rows \
             (data.n_train for toys and images, the file's rows for files)",
            train.batch_size,
            if n_train == 1 { "" } else { "s" }
        );
    }
    for warning in inert_settings::inert_train_settings(train, n_train) {
        tracing::warn!("{warning}");
    }
    Ok(())
}

/// Whether `over` describes the same enum variant as `base`, so that it may be merged into
/// it: the same `arch` (a potential, tagged by that key), the same single key (an externally
/// tagged enum such as `{ cosine = { t_max = 782 } }`), or not a variant at all.
fn same_variant(base: &toml::Table, over: &toml::Table) -> bool {
    if let (Some(a), Some(b)) = (base.get("arch"), over.get("arch")) {
        return a == b;
    }
    if base.len() == 1 && over.len() == 1 {
        return base.keys().next() == over.keys().next();
    }
    true
}

/// `over` on top of `base` (a file over the serialised defaults): tables of the same variant
/// merge key by key; anything else in `over` (a value, a table of another variant such as a
/// `cosine` schedule over the default `step` one) replaces `base`'s.
pub fn merge(mut base: toml::Table, over: toml::Table) -> toml::Table {
    for (k, v) in over {
        let value = match (base.remove(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) if same_variant(&b, &o) => {
                toml::Value::Table(merge(b, o))
            }
            (_, v) => v,
        };
        base.insert(k, value);
    }
    base
}

#[cfg(test)]
#[path = "run_config_tests.rs"]
mod tests;
