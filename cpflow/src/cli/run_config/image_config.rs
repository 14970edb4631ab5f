//! The TOML configuration of an image run of `cpflow train` (a `[data]` table with a
//! `dataset`: [`crate::image::ImageExperimentConfig`], e.g. `configs/mnist.toml`), told from
//! the tabular/toy one and read with the command line's overrides.

use anyhow::{Context, Result, bail};
use std::path::Path;

use super::{Overrides, apply_sets, set_training_flags, table_has_key};

/// A `cpflow vae` configuration given to `cpflow train` (its `[model]` names a `posterior`):
/// refused with the command that runs it (it failed as "unknown variant `frey-faces`" of the
/// image datasets, read as a typo).
fn refuse_vae_config(file: &Path, table: &toml::Table) -> Result<()> {
    if table_has_key(table, "model", "posterior") {
        bail!(
            "{} configures the VAE experiment (its [model] names a posterior): `cpflow train` \
             trains flows; run it with `cpflow vae --config {}`",
            file.display(),
            file.display()
        );
    }
    Ok(())
}

/// Whether `file` describes an image run: a `[data]` table with a `dataset` key
/// (`crate::image::ImageExperimentConfig`, e.g. `configs/mnist.toml`) rather than the
/// tabular/toy `source`.
pub fn is_image_config(file: Option<&Path>) -> Result<bool> {
    let Some(p) = file else { return Ok(false) };
    let text =
        std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
    let table = toml::from_str::<toml::Table>(&text)
        .with_context(|| format!("parsing config {}", p.display()))?;
    Ok(table_has_key(&table, "data", "dataset"))
}

/// Reads an image-run file and applies the overrides: `--set`, then `--iters`
/// (`train.max_iterations`), `--batch-size`, `--lr` (`train.adam.lr`), `--dtype`
/// (`model.float`), `--seed` (`data.seed`, `train.seed`, `model.init_seed`). `--data` is
/// refused (the dataset is `data.dataset`); `--device` and `--out` are not config keys here.
pub fn resolve_image(file: &Path, ov: &Overrides) -> Result<crate::image::ImageExperimentConfig> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading config {}", file.display()))?;
    let mut table = toml::from_str::<toml::Table>(&text)
        .with_context(|| format!("parsing config {}", file.display()))?;
    refuse_vae_config(file, &table)?;
    apply_sets(&mut table, &ov.set)?;
    if ov.data.is_some() {
        bail!("--data does not apply to an image run: set data.dataset (mnist or cifar10)");
    }
    set_training_flags(&mut table, ov)?;
    let cfg: crate::image::ImageExperimentConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(super::serde_messages::image_config_error)?;
    // The library names what it refuses by its key (e.g. model.nblocks: too many scales,
    // the most the images allow and their sizes); the dataset that sets the images is named
    // here.
    // The network's own check said "width must be at least 1", naming no key.
    for (key, v) in [
        ("model.width", cfg.model.width),
        ("model.depth", cfg.model.depth),
    ] {
        if v == 0 {
            bail!("{key} must be at least 1 (got 0)");
        }
    }
    let (dataset, image) = (cfg.data.dataset, cfg.data.dataset.image_shape());
    cfg.validate().with_context(|| {
        format!(
            "checking the settings for the {}×{}×{} images of {} (data.dataset)",
            image.channels,
            image.height,
            image.width,
            dataset.name()
        )
    })?;
    Ok(cfg)
}

/// A relative `data.root` is read from the current directory, not the config file's: when it
/// is missing there but present beside `file`, what to do (added to the loader's "not found",
/// which names the absolute path it tried: [`with_root_beside_config`]). `None` otherwise.
fn root_beside_config(file: &Path, root: &Path) -> Option<String> {
    if root.is_absolute() || root.exists() {
        return None;
    }
    let beside = file.parent()?.join(root);
    let cwd = std::env::current_dir().ok()?;
    (beside.is_dir() && cwd.join(root) != beside).then(|| {
        format!(
            "data.root = {} is read relative to the current directory ({}), where it does not \
             exist; relative to the directory of {} it would be {}, which exists: run from \
             there or give an absolute data.root (`--set data.root=...`)",
            root.display(),
            cwd.join(root).display(),
            file.display(),
            beside.display()
        )
    })
}

/// The image loader's error `e` for the configuration in `file`, with what
/// [`root_beside_config`] says about its `data.root` appended (it was a warning printed
/// before the error, easy to miss above a progress bar or in a log that keeps only the error).
pub fn with_root_beside_config(e: anyhow::Error, file: &Path, root: &Path) -> anyhow::Error {
    match root_beside_config(file, root) {
        Some(hint) => anyhow::anyhow!("{e:#}. {hint}"),
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root that exists beside the config but not in the current directory is named with
    /// both places; one in the current directory, or absolute, or nowhere, gives nothing.
    #[test]
    fn a_root_beside_the_config_is_pointed_out() {
        let dir = std::env::temp_dir().join(format!("cpflow-root-hint-{}", std::process::id()));
        let name = format!("cpflow-root-hint-data-{}", std::process::id());
        std::fs::create_dir_all(dir.join(&name)).unwrap();
        let file = dir.join("c.toml");
        let hint = root_beside_config(&file, Path::new(&name)).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert!(
            hint.contains(&format!("({})", cwd.join(&name).display()))
                && hint.contains(&format!("it would be {}", dir.join(&name).display())),
            "{hint}"
        );
        // The loader's error keeps its own words first and carries the hint (it was a warning
        // printed before the error).
        let e =
            with_root_beside_config(anyhow::anyhow!("mnist not found"), &file, Path::new(&name));
        assert_eq!(e.to_string(), format!("mnist not found. {hint}"));
        let plain = with_root_beside_config(anyhow::anyhow!("x"), &file, Path::new("no-such-xyz"));
        assert_eq!(plain.to_string(), "x");
        assert_eq!(root_beside_config(&file, &dir.join(&name)), None);
        assert_eq!(
            root_beside_config(&file, Path::new("no-such-root-xyz")),
            None
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
