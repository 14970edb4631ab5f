//! The configuration errors of `cpflow vae` and of an image run of `cpflow train` list the
//! forms of an enum-valued key, as the flow's do, and `cpflow vae` refuses an absurd latent
//! size by its key before anything is written.

use crate::cli_common::{cpflow_fails, temp_dir};

/// `command --config configs/CONFIG --out OUT --set SET`: its error, and whether `OUT` was
/// left as it was (absent).
fn refused(command: &str, config: &str, set: &str) -> String {
    let name: String = set
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = temp_dir(&format!("config-forms-{command}-{name}"));
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(config);
    let out = dir.join("run");
    let err = cpflow_fails(&[
        command,
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
        "--set",
        set,
    ]);
    assert!(!out.exists(), "{set} wrote {}", out.display());
    err
}

/// `--set model.network_float=16` said only "invalid type: unit variant, expected string
/// only"; an image run's `model.arch` named serde's identifiers, not the TOML forms.
#[test]
fn vae_and_image_enum_errors_list_the_forms() {
    let err = refused("vae", "vae-frey-cpu.toml", "model.network_float=16");
    assert!(
        err.contains(
            "invalid VAE configuration at `model.network_float`: invalid type: unit variant, \
             expected string only; model.network_float is one of \"f32\" or \"f64\""
        ),
        "{err}"
    );
    let err = refused("vae", "vae-frey-cpu.toml", "model.posterior=flow");
    assert!(
        err.contains("model.posterior is one of \"gaussian\" or \"cp-flow\""),
        "{err}"
    );
    let err = refused("train", "mnist.toml", "model.arch=3");
    assert!(
        err.contains(
            "invalid image configuration at `model.arch`: invalid type: unit variant, expected \
             string only; model.arch is one of \"conv_icnn\", \"conv_icnn2\" or \"conv_icnn3\""
        ),
        "{err}"
    );
}

/// `model.latent_dim = 10⁹` was refused as "a posterior of 4 blocks (latent_dim 1000000000,
/// context_dim 256) would have …": the posterior's internals, not the key.
#[test]
fn an_absurd_latent_size_is_refused_by_its_key() {
    let err = refused("vae", "vae-frey-cpu.toml", "model.latent_dim=1000000000");
    assert!(
        err.contains(
            "model.latent_dim = 1000000000 makes a VAE of 5338001160314 (5.3e12) parameters; \
             a model may have at most 4294967296 (2^32): lower model.latent_dim (the \
             reference's: 64)"
        ),
        "{err}"
    );
}
