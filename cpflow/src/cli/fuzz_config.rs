//! The `config` fuzz target's entry point (built only under `cargo fuzz`, `--cfg fuzzing`):
//! a TOML file read the ways the command line reads one, without building a model.

use std::path::Path;

use super::commands::read_vae_config;
use super::run_config::{Overrides, check_training_start, is_image_config, resolve, resolve_image};
use crate::vae::VaeLikelihood;

/// Reads `path` as a tabular/toy run (`cpflow train`), an image run and a VAE run
/// (`cpflow vae`), and for each that resolves, sizes the model the way the commands do before
/// building it: the flow for a few data dimensions, the image flow's layer shapes, the VAE's
/// parameter count for both likelihoods. Errors are the expected outcome of most inputs; a
/// panic, a hang or a huge allocation is a finding.
pub fn read_config_file(path: &Path) {
    let none = Overrides::default();
    let _ = is_image_config(Some(path));
    if let Ok(cfg) = resolve(Some(path), &none) {
        let _ = check_training_start(&cfg.train, 2, true);
        for dim in [1, 2, 43] {
            if let Ok(flow) = cfg.model.flow_config(dim) {
                let _ = flow.parameter_count();
                let _ = flow.validate();
            }
        }
    }
    if let Ok(cfg) = resolve_image(path, &none)
        && let Ok(flow) = cfg.flow_config()
    {
        let _ = flow.parameter_count();
        let _ = flow.layer_shapes();
    }
    if let Ok(cfg) = read_vae_config(path, |_| Ok(())) {
        for likelihood in [VaeLikelihood::Bernoulli, VaeLikelihood::Categorical256] {
            let _ = cfg.model.check_size(likelihood, (28, 20));
        }
    }
}
