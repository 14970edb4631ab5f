//! The `cpflow` command line with a network of your own.
//!
//! This program registers a potential under the name `icnn3_by_settings` (here `icnn`'s
//! `Icnn3`, sized by the `[model.custom] settings` of the run's TOML; put your own
//! `ConvexPotential` in its place) and then runs `cpflow::cli::main`, so every command of the
//! `cpflow` binary (train, resume, eval, sample, plot) works on flows of it:
//!
//! ```text
//! cargo run --release -p cpflow --example custom_potential_cli -- \
//!     train --config configs/toy-8gaussians-custom.toml --out runs/8g-custom
//! cargo run --release -p cpflow --example custom_potential_cli -- eval --model runs/8g-custom
//! ```
//!
//! It also registers a conditional network, `picnn_by_settings` (`icnn`'s `Picnn`), which
//! the VAE's CP-Flow posterior uses through `[model.custom_posterior]`:
//!
//! ```text
//! cargo run --release -p cpflow --example custom_potential_cli -- \
//!     vae --config configs/vae-frey-custom.toml --out runs/vae-frey-custom
//! ```
//!
//! The plain `cpflow` binary refuses such a run with an error that names
//! `cpflow::register_potential` (or `register_conditional_potential`): the model file records
//! the network's name and settings, not its code.

use std::collections::BTreeMap;

use icnn::{Icnn3, Icnn3Config, IcnnError, Picnn, PicnnConfig};

/// mimalloc, as the `cpflow` binary uses (see `cpflow::allocator`).
#[global_allocator]
static GLOBAL: cpflow::allocator::MiMalloc = cpflow::allocator::MiMalloc;

/// The whole-number setting `key` of the `[table] settings` (at least 1), or `default` when
/// absent.
fn count(
    settings: &BTreeMap<String, f64>,
    table: &str,
    key: &str,
    default: usize,
) -> icnn::Result<usize> {
    match settings.get(key) {
        None => Ok(default),
        Some(&v) if v >= 1.0 && v.fract() == 0.0 && v <= 1e6 => Ok(v as usize),
        Some(v) => Err(IcnnError::InvalidConfig(format!(
            "[{table}] settings.{key} must be a whole number from 1 to 1e6, got {v}"
        ))),
    }
}

fn main() -> std::process::ExitCode {
    // SAFETY: first thing in `main`, before any thread is spawned: nothing else reads or
    // writes the environment.
    unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    cpflow::register_potential("icnn3_by_settings", |vb, cfg, rng| {
        let config = Icnn3Config {
            dim: cfg.dim,
            width: count(&cfg.settings, "model.custom", "width", 32)?,
            depth: count(&cfg.settings, "model.custom", "depth", 5)?,
            ..Default::default()
        };
        Ok(Box::new(Icnn3::new(vb, &config, rng)?))
    });
    // The reference posterior's PICNN options (gaussian softplus, zero-shifted, symmetric
    // first activation), its width and depth from the settings.
    cpflow::register_conditional_potential("picnn_by_settings", |vb, cfg, rng| {
        let table = "model.custom_posterior";
        let config = PicnnConfig {
            dim: cfg.dim,
            context_dim: cfg.context_dim,
            width: count(&cfg.settings, table, "width", 64)?,
            depth: count(&cfg.settings, table, "depth", 5)?,
            zero_shift: true,
            symm_act_first: true,
            ..Default::default()
        };
        Ok(Box::new(Picnn::new(vb, &config, rng)?))
    });
    cpflow::exit_report::exit_code(cpflow::cli::main())
}
