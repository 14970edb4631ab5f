//! The VAE experiment's configuration (`cpflow vae --config configs/vae-*.toml`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::adamax::AdamaxParams;
use super::data::VaeDatasetName;
use super::model::{PosteriorKind, VaeModelConfig};
use super::network::VaeArchitecture;
use crate::config::FloatType;
use crate::config::SurrogateParams;
use crate::error::{CpflowError, Result};

/// Which data, from where.
///
/// ```
/// use cpflow::vae::{VaeDataConfig, VaeDatasetName};
/// let d: VaeDataConfig = toml::from_str(r#"
/// dataset = "omniglot"
/// root = "../shared/data"
/// "#).unwrap();
/// assert_eq!((d.dataset, d.seed), (VaeDatasetName::Omniglot, 123)); // the reference seed
/// assert_eq!(d.n_train, None); // every training image
/// assert!(toml::from_str::<VaeDataConfig>(r#"dataset = "cifar10""#).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeDataConfig {
    /// The dataset.
    pub dataset: VaeDatasetName,
    /// Data root (laid out as `../shared/data`: `frey-faces/`, `caltech101-silhouettes/`,
    /// `mnist/`, `omniglot/`).
    pub root: PathBuf,
    /// Seed of the split shuffles and the one-off binarisation of validation/test images
    /// (reference `freyseed` 123).
    #[serde(default = "default_data_seed")]
    pub seed: u64,
    /// Train on the first `n_train` images of the training split only (`None`: all of
    /// them), for short runs; the validation and test splits are unchanged. A value above
    /// the split's size uses every image (with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_train: Option<usize>,
}

fn default_data_seed() -> u64 {
    123
}

/// Training (`train_vae.py` defaults: 2000 epochs, batch 100, Adamax 5e-4, β warm-up over
/// 100 epochs, early stopping after 100 epochs without improvement, CG tolerance 1e-5).
///
/// ```
/// use cpflow::vae::VaeTrainConfig;
/// let t: VaeTrainConfig = toml::from_str("warmup_epochs = 10\nmax_beta = 0.5").unwrap();
/// assert_eq!((t.epochs, t.batch_size, t.early_stopping_epochs), (2000, 100, 100));
/// // β = min(epoch / warmup_epochs, max_beta).
/// assert_eq!((t.beta(1), t.beta(5), t.beta(20)), (0.1, 0.5, 0.5));
/// assert_eq!(t.cg, cpflow::posterior::reference_vae_surrogate_params());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaeTrainConfig {
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Batch size (train, validation and test).
    pub batch_size: usize,
    /// Adamax hyper-parameters.
    pub optimizer: AdamaxParams,
    /// β = min(epoch / warmup_epochs, max_beta).
    pub warmup_epochs: usize,
    /// Final β.
    pub max_beta: f64,
    /// Stop after this many epochs without a better validation −ELBO (counted only once
    /// `epoch ≥ warmup_epochs`, as the reference).
    pub early_stopping_epochs: usize,
    /// CG of the surrogate (reference: atol = rtol = 1e-5, at most 64 iterations).
    pub cg: SurrogateParams,
    /// Seed of the batch order, the posterior noise, the probes and dynamic binarisation.
    pub seed: u64,
    /// Stop after this many minutes of training (then evaluate as usual).
    pub max_minutes: Option<f64>,
}

impl Default for VaeTrainConfig {
    fn default() -> Self {
        VaeTrainConfig {
            epochs: 2000,
            batch_size: 100,
            optimizer: AdamaxParams::default(),
            warmup_epochs: 100,
            max_beta: 1.0,
            early_stopping_epochs: 100,
            cg: crate::posterior::reference_vae_surrogate_params(),
            seed: 1,
            max_minutes: None,
        }
    }
}

impl VaeTrainConfig {
    /// β of a 1-based epoch.
    pub fn beta(&self, epoch: usize) -> f64 {
        (epoch as f64 / self.warmup_epochs.max(1) as f64).min(self.max_beta)
    }
}

/// Final evaluation on the test split.
///
/// ```
/// use cpflow::vae::{PosteriorKind, VaeConfig, VaeDatasetName, VaeEvalConfig};
/// let e: VaeEvalConfig = toml::from_str("is_images = 50").unwrap();
/// assert_eq!((e.is_samples, e.is_chunk, e.is_images), (1000, 500, Some(50)));
/// // Importance sampling in chunks of 0 samples is refused by `VaeConfig::validate`.
/// let mut cfg = VaeConfig::reference(VaeDatasetName::Mnist, "data", PosteriorKind::Gaussian);
/// cfg.eval = VaeEvalConfig { is_chunk: 0, ..e };
/// assert!(cfg.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaeEvalConfig {
    /// Importance samples per test image for the log-likelihood (0 = skip).
    pub is_samples: usize,
    /// Samples per decoder pass.
    pub is_chunk: usize,
    /// Score the importance-sampled likelihood on the first `is_images` test images only
    /// (`None`: all of them). The −ELBO always uses the whole test split.
    pub is_images: Option<usize>,
}

impl Default for VaeEvalConfig {
    fn default() -> Self {
        VaeEvalConfig {
            is_samples: 1000,
            is_chunk: 500,
            is_images: None,
        }
    }
}

/// The whole experiment.
///
/// ```
/// let cfg: cpflow::vae::VaeConfig = toml::from_str(r#"
/// [data]
/// dataset = "frey-faces"
/// root = "../shared/data"
/// [model]
/// posterior = "gaussian"
/// [train]
/// epochs = 3
/// "#).unwrap();
/// assert_eq!(cfg.train.batch_size, 100);
/// assert_eq!(cfg.model.latent_dim, 64);
/// cfg.validate().unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    /// Data.
    pub data: VaeDataConfig,
    /// Model.
    #[serde(default)]
    pub model: VaeModelConfig,
    /// Training.
    #[serde(default)]
    pub train: VaeTrainConfig,
    /// Test evaluation.
    #[serde(default)]
    pub eval: VaeEvalConfig,
}

impl VaeConfig {
    /// The reference experiment (`train_vae.py` defaults, `images-vae.md` §3): reference
    /// widths, z = 64, f64, 4 CP-Flow blocks of PICNN(64, 5), 2000 epochs with β warm-up over
    /// 100 and early stopping after 100; importance sampling with K = 1000.
    pub fn reference(
        dataset: VaeDatasetName,
        root: impl Into<PathBuf>,
        posterior: PosteriorKind,
    ) -> Self {
        VaeConfig {
            data: VaeDataConfig {
                dataset,
                root: root.into(),
                seed: default_data_seed(),
                n_train: None,
            },
            model: VaeModelConfig {
                posterior,
                ..Default::default()
            },
            train: VaeTrainConfig::default(),
            eval: VaeEvalConfig::default(),
        }
    }

    /// A reduced experiment that trains on 2 CPU cores (`configs/vae-*-cpu.toml`): encoder
    /// and decoder at half width (`c = 16`, a 64-channel categorical head) in f32, the
    /// posterior as the reference (PICNN(64, 5) × 4 blocks, f64); 100 epochs with β warm-up
    /// over 20 and early stopping after 30; importance sampling with K = 200 on the first
    /// 200 test images.
    pub fn cpu(
        dataset: VaeDatasetName,
        root: impl Into<PathBuf>,
        posterior: PosteriorKind,
    ) -> Self {
        let mut c = Self::reference(dataset, root, posterior);
        c.model.architecture = VaeArchitecture {
            channels: 16,
            feature_dim: 256,
            head_channels: 64,
        };
        c.model.network_float = FloatType::F32;
        c.train.epochs = 100;
        c.train.warmup_epochs = 20;
        c.train.early_stopping_epochs = 30;
        c.eval = VaeEvalConfig {
            is_samples: 200,
            is_chunk: 200,
            is_images: Some(200),
        };
        c
    }

    /// Check the values that serde cannot (the optimiser's with
    /// [`AdamaxParams::validate`], the CG surrogate's with [`SurrogateParams::validate`]).
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        let bad = |m: &str| Err(CpflowError::InvalidConfig(m.to_string()));
        if t.batch_size == 0 {
            return bad("train.batch_size must be ≥ 1");
        }
        if self.data.n_train == Some(0) {
            return bad(
                "data.n_train must be ≥ 1 (leave it unset to train on every training image)",
            );
        }
        if t.epochs == 0 {
            return bad("train.epochs must be ≥ 1");
        }
        if !(t.max_beta.is_finite() && t.max_beta >= 0.0) {
            return bad(&format!(
                "train.max_beta must be finite and ≥ 0, got {:?}",
                t.max_beta
            ));
        }
        if let Some(m) = t.max_minutes
            && !(m.is_finite() && m > 0.0)
        {
            return bad(&format!(
                "train.max_minutes must be finite and > 0, got {m:?}"
            ));
        }
        t.optimizer.validate("train.optimizer")?;
        t.cg.validate("train.cg")?;
        if self.eval.is_samples > 0 && self.eval.is_chunk == 0 {
            return bad("eval.is_chunk must be ≥ 1");
        }
        if self.eval.is_images == Some(0) {
            // Scored 0 images: a report with a NaN importance-sampled NLL.
            return bad(
                "eval.is_images must be ≥ 1 (leave it unset to score every test image, or set \
                 eval.is_samples = 0 to skip importance sampling)",
            );
        }
        if self.model.latent_dim == 0 {
            return bad("model.latent_dim must be ≥ 1");
        }
        let a = &self.model.architecture;
        for (key, v) in [
            ("channels", a.channels),
            ("feature_dim", a.feature_dim),
            ("head_channels", a.head_channels),
        ] {
            if v == 0 {
                return bad(&format!("model.architecture.{key} must be ≥ 1"));
            }
        }
        if self.model.posterior == super::PosteriorKind::CpFlow && self.model.blocks == 0 {
            // Zero blocks would be the Gaussian posterior reported as a CP-Flow one.
            return bad(
                "model.blocks must be ≥ 1 for a CP-Flow posterior (`posterior = \"gaussian\"` \
                 is the posterior without blocks)",
            );
        }
        // The whole model's size limit, before the data load (`Vae::new` checks it again,
        // by the same count) and before the posterior's own count, which names its
        // internals (`context_dim`).
        self.check_parameter_count()?;
        self.model.posterior_config().validate()?;
        Ok(())
    }
}

/// A key that sizes the VAE: its name, how to read it and how to set it.
type SizeKey = (
    &'static str,
    fn(&VaeModelConfig) -> usize,
    fn(&mut VaeModelConfig, usize),
);

/// The keys whose values set the VAE's parameter count.
const SIZE_KEYS: [SizeKey; 7] = [
    (
        "model.latent_dim",
        |m| m.latent_dim,
        |m, v| m.latent_dim = v,
    ),
    (
        "model.architecture.channels",
        |m| m.architecture.channels,
        |m, v| m.architecture.channels = v,
    ),
    (
        "model.architecture.feature_dim",
        |m| m.architecture.feature_dim,
        |m, v| m.architecture.feature_dim = v,
    ),
    (
        "model.architecture.head_channels",
        |m| m.architecture.head_channels,
        |m, v| m.architecture.head_channels = v,
    ),
    ("model.blocks", |m| m.blocks, |m, v| m.blocks = v),
    ("model.width", |m| m.width, |m, v| m.width = v),
    ("model.depth", |m| m.depth, |m, v| m.depth = v),
];

/// `items` as "a", "a and b", "a, b and c" (`last`: the last joint).
fn listed(items: &[String], last: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., end] => format!("{} {last} {end}", init.join(", ")),
    }
}

impl VaeConfig {
    /// Parameters of the VAE of `model` for this configuration's dataset (a posterior
    /// potential of your own counted as 0), counted without building it; saturating.
    fn parameters_of(&self, model: &VaeModelConfig) -> Result<usize> {
        let ds = self.data.dataset;
        let (networks, posterior) = model.counted_parts(ds.likelihood(), ds.image_size())?;
        Ok(crate::model_size::add(networks, posterior))
    }

    /// Refuses a VAE of more than [`icnn::MAX_MODEL_PARAMETERS`] parameters, naming the keys
    /// that make it so: those above the reference's value that make the reference model
    /// larger on their own (`model.latent_dim = 1000000000` was refused as "a posterior of 4
    /// blocks (latent_dim 1000000000, context_dim 256) would have …": the posterior's
    /// internals, not the configuration's key).
    fn check_parameter_count(&self) -> Result<()> {
        let n = self.parameters_of(&self.model)?;
        if n <= icnn::MAX_MODEL_PARAMETERS {
            return Ok(());
        }
        // The reference model with this one's posterior: each key is set on it alone, so
        // that a count saturated by two keys still names both.
        let reference = VaeModelConfig {
            posterior: self.model.posterior,
            custom_posterior: self.model.custom_posterior.clone(),
            ..VaeModelConfig::default()
        };
        let reference_count = self.parameters_of(&reference)?;
        let mut at_fault: Vec<&SizeKey> = Vec::new();
        for key @ (_, get, set) in &SIZE_KEYS {
            if get(&self.model) <= get(&reference) {
                continue;
            }
            let mut larger = reference.clone();
            set(&mut larger, get(&self.model));
            if self.parameters_of(&larger)? > reference_count {
                at_fault.push(key);
            }
        }
        if at_fault.is_empty() {
            // Unreachable while the count grows with every key (the reference fits), kept
            // so the message always names keys.
            at_fault = SIZE_KEYS.iter().collect();
        }
        let values: Vec<String> = at_fault
            .iter()
            .map(|(key, get, _)| format!("{key} = {}", get(&self.model)))
            .collect();
        let keys: Vec<String> = at_fault.iter().map(|(key, ..)| key.to_string()).collect();
        let references: Vec<String> = at_fault
            .iter()
            .map(|(_, get, _)| get(&reference).to_string())
            .collect();
        let shown = icnn::shown_parameter_count(n);
        Err(CpflowError::InvalidConfig(format!(
            "{} make{} a VAE of {shown} parameters; a model may have at most {} (2^32): lower \
             {} (the reference's: {})",
            listed(&values, "and"),
            if values.len() == 1 { "s" } else { "" },
            icnn::MAX_MODEL_PARAMETERS,
            listed(&keys, "or"),
            listed(&references, "and"),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change to a default configuration.
    type Edit = Box<dyn Fn(&mut VaeTrainConfig)>;

    /// The optimiser's and the CG surrogate's settings are checked by `validate` (they were
    /// not: Adamax refused its parameters only when the run built it, after the data load, as
    /// "bad Adamax parameters", and `train.cg.cg_max_iters = 0` passed), naming the key.
    #[test]
    fn optimiser_and_cg_settings_are_checked_by_key() {
        let base = VaeConfig::reference(VaeDatasetName::FreyFaces, "data", PosteriorKind::CpFlow);
        base.validate().unwrap();
        let refused: Vec<(&str, Edit)> = vec![
            (
                "train.optimizer.lr",
                Box::new(|t| t.optimizer.lr = f64::NAN),
            ),
            (
                "train.optimizer.beta1",
                Box::new(|t| t.optimizer.beta1 = 1.5),
            ),
            (
                "train.optimizer.beta2",
                Box::new(|t| t.optimizer.beta2 = -0.1),
            ),
            ("train.optimizer.eps", Box::new(|t| t.optimizer.eps = 0.0)),
            (
                "train.cg.cg_max_iters",
                Box::new(|t| t.cg.cg_max_iters = Some(0)),
            ),
            (
                "train.cg.cg_atol",
                Box::new(|t| t.cg.cg_atol = f64::INFINITY),
            ),
            ("train.cg.probes", Box::new(|t| t.cg.probes = 0)),
        ];
        for (key, set) in &refused {
            let mut c = base.clone();
            set(&mut c.train);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    /// An absurd size is refused by the keys that make it so (they were named by the
    /// posterior's internals: "a posterior of 4 blocks (latent_dim 1000000000, context_dim
    /// 256)", or "a VAE (channels …)"), before anything is built.
    #[test]
    fn an_absurd_size_is_refused_naming_its_keys() {
        let base = VaeConfig::cpu(VaeDatasetName::FreyFaces, "data", PosteriorKind::CpFlow);
        base.validate().unwrap();
        let refused = |edit: &dyn Fn(&mut VaeModelConfig)| {
            let mut c = base.clone();
            edit(&mut c.model);
            c.validate().unwrap_err().to_string()
        };
        let e = refused(&|m| m.latent_dim = 1_000_000_000);
        assert_eq!(
            e,
            "invalid configuration: model.latent_dim = 1000000000 makes a VAE of 5338001160314 \
             (5.3e12) parameters; a model may have at most 4294967296 (2^32): lower \
             model.latent_dim (the reference's: 64)"
        );
        // The Gaussian posterior: the same key, and the encoder's and decoder's count alone
        // (the count the old message gave for it).
        let e = refused(&|m| {
            m.latent_dim = 1_000_000_000;
            m.posterior = PosteriorKind::Gaussian;
        });
        assert!(
            e.contains("model.latent_dim = 1000000000 makes a VAE of"),
            "{e}"
        );
        // Two keys above the reference; the width of the CPU preset (16 < 32) is not named.
        let e = refused(&|m| {
            m.blocks = 1_000_000;
            m.width = 1000;
        });
        assert!(
            e.contains("model.blocks = 1000000 and model.width = 1000 make a VAE of")
                && e.contains("lower model.blocks or model.width (the reference's: 4 and 64)"),
            "{e}"
        );
        // Two keys that each saturate the count are both named.
        let e = refused(&|m| {
            m.blocks = 1_000_000_000_000_000;
            m.latent_dim = 1_000_000_000_000_000;
        });
        assert!(
            e.contains(
                "model.latent_dim = 1000000000000000 and model.blocks = 1000000000000000 make a \
                 VAE of more than usize::MAX parameters"
            ),
            "{e}"
        );
        // A key above the reference that does not count here is not named: the head of the
        // categorical likelihood exists for Frey Faces only.
        let mut mnist = VaeConfig::cpu(VaeDatasetName::Mnist, "data", PosteriorKind::CpFlow);
        mnist.model.architecture.head_channels = 1_000_000;
        mnist.model.latent_dim = 100_000_000;
        let e = mnist.validate().unwrap_err().to_string();
        assert!(
            e.contains("model.latent_dim = 100000000 makes") && !e.contains("head_channels"),
            "{e}"
        );
    }
}
