//! Loading the authors' VAE `state_dict` (`train_vae.py`: `lib/sylvester/models/VAE.py`'s
//! `VAE` for `-f no_flow`, `CPFVAE` for `-f cpflow`) into a [`Vae`].
//!
//! The encoder and decoder variables already carry the reference's names under `encoder.` and
//! `decoder.`; only the variance head differs (theirs is `nn.Sequential(Linear, Softplus[,
//! Hardtanh])`, so its linear layer is `q_z_var.0`). The CP-Flow posterior's layers are
//! mapped by [`KeyMapping::for_vae_posterior`]:
//!
//! | reference key | cpflow variable |
//! |---|---|
//! | `q_z_nn.{i}.{h,g}.{weight,bias}` (`GatedConv2d`) | `encoder.q_z_nn.{i}.{h,g}.*` |
//! | `q_z_mean.{weight,bias}` | `encoder.q_z_mean.*` |
//! | `q_z_var.0.{weight,bias}` | `encoder.q_z_var.*` |
//! | `p_x_nn.{i}.{h,g}.{weight,bias}` (`GatedConvTranspose2d`) | `decoder.p_x_nn.{i}.{h,g}.*` |
//! | `p_x_mean.{0,1}.{weight,bias}` (output convolutions) | `decoder.p_x_mean.{0,1}.*` |
//! | `flow.flows.{i}.flow.flows.1.{b,logs}` (`LayerActnorm`, CP-Flow only) | `posterior.layers.{i}.{bias,logs}` |
//! | `flow.flows.{i}.{w0,w1,icnn.*}` (CP-Flow blocks) | `posterior.layers.{i}.{w0,w1,icnn.*}` |
//!
//! Parity with their code on the same weights: `cpflow/tests/integration/reference_parity_vae.rs`.

use std::collections::HashMap;

use candle_core::Tensor;

use super::model::{PosteriorKind, Vae, VaeModelConfig};
use crate::error::Result;
use crate::reference_weights::{KeyMapping, ReferenceLoad, load_reference_state_dict};

/// The [`KeyMapping`] from the reference VAE's `state_dict` keys (`VAE` for a Gaussian
/// posterior, `CPFVAE` for a CP-Flow one) to the variables of a [`Vae`] built from
/// `config` (module docs: the table).
///
/// Errors: a CP-Flow posterior without ActNorms, which the reference cannot build
/// ([`KeyMapping::for_vae_posterior`]).
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::vae::{PosteriorKind, Vae, VaeArchitecture, VaeLikelihood, VaeModelConfig};
/// use cpflow::vae::reference_vae_key_mapping;
/// # fn main() -> cpflow::Result<()> {
/// let cfg = VaeModelConfig {
///     latent_dim: 4,
///     architecture: VaeArchitecture { channels: 2, feature_dim: 8, head_channels: 4 },
///     posterior: PosteriorKind::CpFlow, blocks: 1, width: 8, depth: 2,
///     ..Default::default()
/// };
/// let m = reference_vae_key_mapping(&cfg)?;
/// assert_eq!(m.map("q_z_var.0.weight").as_deref(), Some("encoder.q_z_var.weight"));
/// assert_eq!(m.map("p_x_nn.2.g.bias").as_deref(), Some("decoder.p_x_nn.2.g.bias"));
/// assert_eq!(m.map("flow.flows.0.flow.flows.1.logs").as_deref(), Some("posterior.layers.0.logs"));
/// assert_eq!(m.map("flow.flows.1.icnn.Wczs.0.weight").as_deref(),
///            Some("posterior.layers.1.icnn.Wczs.0.weight"));
/// // Every variable of the model (ActNorm flags aside) has a reference key.
/// let vae = Vae::new(&cfg, VaeLikelihood::Categorical256, (28, 20), &Device::Cpu)?;
/// for (name, _) in vae.named_vars() {
///     assert!(name.ends_with("initialized") || m.reference_key(&name).is_some(), "{name}");
/// }
/// # Ok(())
/// # }
/// ```
pub fn reference_vae_key_mapping(config: &VaeModelConfig) -> Result<KeyMapping> {
    let base = match config.posterior {
        PosteriorKind::Gaussian => KeyMapping::new(),
        PosteriorKind::CpFlow => {
            KeyMapping::for_vae_posterior(&config.posterior_config(), "flow.", "posterior")?
        }
    };
    Ok(base
        .with_prefix("q_z_nn.", "encoder.q_z_nn.")
        .with_prefix("q_z_mean.", "encoder.q_z_mean.")
        .with_prefix("q_z_var.0.", "encoder.q_z_var.")
        .with_prefix("p_x_nn.", "decoder.p_x_nn.")
        .with_prefix("p_x_mean.", "decoder.p_x_mean."))
}

/// Set every weight of `vae` from the reference VAE's `state_dict` (keys as PyTorch names
/// them, values float32 or float64) through [`reference_vae_key_mapping`], then mark every
/// ActNorm initialised ([`load_reference_state_dict`], which checks every key, shape and
/// value before it writes anything).
///
/// ```
/// use std::collections::HashMap;
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::vae::{PosteriorKind, Vae, VaeArchitecture, VaeLikelihood, VaeModelConfig};
/// use cpflow::vae::{load_reference_vae_state_dict, reference_vae_key_mapping};
/// # fn main() -> cpflow::Result<()> {
/// let cfg = VaeModelConfig {
///     latent_dim: 3,
///     architecture: VaeArchitecture { channels: 2, feature_dim: 4, head_channels: 2 },
///     posterior: PosteriorKind::Gaussian,
///     ..Default::default()
/// };
/// let source = Vae::new(&VaeModelConfig { init_seed: 1, ..cfg.clone() },
///                       VaeLikelihood::Categorical256, (28, 20), &Device::Cpu)?;
/// // The source's weights under the reference's names, as a PyTorch export holds them.
/// let m = reference_vae_key_mapping(&cfg)?;
/// let state_dict: HashMap<String, Tensor> = source
///     .weight_tensors()
///     .into_iter()
///     .map(|(k, t)| (m.reference_key(&k).expect("a reference key"), t))
///     .collect();
/// assert!(state_dict.contains_key("q_z_var.0.bias"));
/// let target = Vae::new(&cfg, VaeLikelihood::Categorical256, (28, 20), &Device::Cpu)?;
/// let report = load_reference_vae_state_dict(&target, &state_dict)?;
/// assert_eq!(report.loaded, state_dict.len());
/// let src: HashMap<String, Tensor> = source.weight_tensors().into_iter().collect();
/// for (name, t) in target.weight_tensors() {
///     let diff = (t - &src[&name])?.abs()?.max_all()?.to_scalar::<f64>()?;
///     assert_eq!(diff, 0.0, "{name}");
/// }
/// # Ok(())
/// # }
/// ```
pub fn load_reference_vae_state_dict(
    vae: &Vae,
    state_dict: &HashMap<String, Tensor>,
) -> Result<ReferenceLoad> {
    let mapping = reference_vae_key_mapping(vae.config())?;
    load_reference_state_dict(&vae.named_vars(), state_dict, &mapping)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vae::{VaeArchitecture, VaeLikelihood};
    use candle_core::Device;

    /// With the reference widths, the mapped variables are exactly the reference's
    /// parameters, key for key: on Frey Faces 56 keys / 2,764,480 values (`VAE`) and, with
    /// the `train_vae.py` defaults, 330 keys / 3,216,602 values (`CPFVAE`), as their
    /// `state_dict`s count them (`benchmarks/reference_parity/export_vae_full.py`).
    #[test]
    fn reference_widths_give_the_reference_parameter_counts() {
        for (posterior, want, keys) in [
            (PosteriorKind::Gaussian, 2_764_480, 56),
            (PosteriorKind::CpFlow, 3_216_602, 330),
        ] {
            let cfg = VaeModelConfig {
                posterior,
                architecture: VaeArchitecture::reference(),
                ..Default::default()
            };
            let vae =
                Vae::new(&cfg, VaeLikelihood::Categorical256, (28, 20), &Device::Cpu).unwrap();
            let m = reference_vae_key_mapping(&cfg).unwrap();
            let vars: Vec<_> = vae
                .named_vars()
                .into_iter()
                .filter(|(k, _)| !k.ends_with("initialized"))
                .collect();
            for (k, _) in &vars {
                let r = m.reference_key(k).unwrap_or_else(|| panic!("{k}"));
                assert_eq!(m.map(&r).as_deref(), Some(k.as_str()));
            }
            let n: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
            assert_eq!((n, vars.len()), (want, keys), "{posterior:?}");
        }
    }
}
