//! `--resume` continues a run as it was made: the requested configuration is compared with
//! the run's (its checkpoint and `config.toml`), and only what may change on a resume may
//! differ. A change that would be ignored (the model, the optimiser) or would silently make
//! another experiment (the data, the schedule, the seeds) is refused with the keys and both
//! values named.

use crate::cli::run_kind::{RunKind, check_run_kind};
use anyhow::{Context, Result, bail};
use candle_core::Device;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

use crate::cli::run_config::{Overrides, RunConfig, resolve, resolve_image};
use crate::cli::run_dir::{absolute, absolute_run_config, resume_checkpoint};
use crate::cli::shell_words::shell_word;

/// What `cpflow train --resume` may change (tabular and toy runs): the length of the run,
/// the batch size (the trainer starts a new epoch where the old one no longer fits), logging,
/// checkpoint and monitoring periods, the evaluation chunk size, everything under `[run]`
/// (device, output, NLL-curve period, plots, progress bar) and where the data are read
/// (`data.root`). Everything else is refused.
pub const TRAIN_RESUMABLE: &[&str] = &[
    "train.max_iterations",
    "train.batch_size",
    "train.log_every",
    "train.checkpoint_every",
    "train.eval_batch_size",
    "train.train_slq_every",
    "train.train_slq.",
    "run.",
    "data.root",
];

/// What `cpflow train --resume` may change on an image run: the limits (epochs, iterations,
/// minutes; epochs count images seen), the batch size (in the middle of an epoch a new one
/// starts, and the log says so), logging, checkpoint and monitoring periods, the evaluation
/// chunk size, the final test score's settings and where the data are read.
pub const IMAGE_RESUMABLE: &[&str] = &[
    "train.epochs",
    "train.max_iterations",
    "train.max_minutes",
    "train.batch_size",
    "train.log_every",
    "train.checkpoint_every",
    "train.train_slq_every",
    "train.eval_batch_size",
    "train.test.",
    "data.root",
];

/// What `cpflow vae --resume` may change: the number of epochs, the time budget, the final
/// evaluation (`[eval]`) and where the data are read.
pub const VAE_RESUMABLE: &[&str] = &["train.epochs", "train.max_minutes", "eval.", "data.root"];

/// One key whose value differs: its dotted path, the requested value and the run's.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Dotted key (`train.adam.lr`).
    pub key: String,
    /// The requested value (`absent` when the key is not there).
    pub requested: String,
    /// The run's value.
    pub run: String,
}

/// The keys under `prefix` where `requested` and `run` differ: both serialised, tables
/// compared key by key, anything else as a whole.
pub fn differences<T: Serialize>(prefix: &str, requested: &T, run: &T) -> Result<Vec<Difference>> {
    let (a, b) = (serde_json::to_value(requested)?, serde_json::to_value(run)?);
    let mut out = Vec::new();
    walk(prefix, Some(&a), Some(&b), &mut out);
    Ok(out)
}

fn walk(key: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Difference>) {
    if let (Some(Value::Object(x)), Some(Value::Object(y))) = (a, b) {
        let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
        for k in keys {
            let sub = if key.is_empty() {
                k.clone()
            } else {
                format!("{key}.{k}")
            };
            walk(&sub, x.get(k), y.get(k), out);
        }
    } else if !same(a, b) {
        out.push(Difference {
            key: key.to_string(),
            requested: show(a),
            run: show(b),
        });
    }
}

/// Equal values; numbers to a few ulps (a value read back from a checkpoint's JSON may be
/// one ulp off the one read from TOML).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs(),
                _ => false,
            }
        }
        _ => a == b,
    }
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "absent".into(),
        Some(Value::Null) => "unset".into(),
        Some(v) => v.to_string(),
    }
}

/// Whether `key` is in `allowed` (keys, and tables as prefixes ending in `.`).
pub fn is_resumable(key: &str, allowed: &[&str]) -> bool {
    allowed.iter().any(|a| {
        if let Some(table) = a.strip_suffix('.') {
            key == table || key.starts_with(a)
        } else {
            key == *a
        }
    })
}

/// Refuses the `differences` that are not `allowed`, naming each key with both values; `out`
/// is the run's directory and `command` the subcommand (for the message).
pub fn refuse_changes(
    differences: &[Difference],
    allowed: &[&str],
    out: &Path,
    command: &str,
) -> Result<()> {
    let advice = format!(
        "Resume with the run's own settings (`cpflow {command} --config {} --out {} --resume`, \
         plus those changes), or start a new run with another --out (or --overwrite)",
        shell_word(&out.join("config.toml")),
        shell_word(out)
    );
    refuse_changes_advising(differences, allowed, out, &advice)
}

/// [`refuse_changes`] with `advice` (what to do) ending the message.
fn refuse_changes_advising(
    differences: &[Difference],
    allowed: &[&str],
    out: &Path,
    advice: &str,
) -> Result<()> {
    let refused: Vec<&Difference> = differences
        .iter()
        .filter(|d| !is_resumable(&d.key, allowed))
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = refused
        .iter()
        .map(|d| {
            format!(
                "  {}: {} (requested) vs {} (the run)",
                d.key, d.requested, d.run
            )
        })
        .collect();
    let may: Vec<String> = allowed
        .iter()
        .map(|a| match a.strip_suffix('.') {
            Some(t) => format!("{t}.*"),
            None => a.to_string(),
        })
        .collect();
    bail!(
        "--resume continues the run in {} with the settings it was made with, and these \
         differ:\n{}\nA resume may change only {}. {advice}",
        out.display(),
        lines.join("\n"),
        may.join(", "),
    )
}

/// Refuses a resume whose new limit is below what the run has already done.
pub fn check_limit(key: &str, requested: usize, done: usize, out: &Path) -> Result<()> {
    if requested < done {
        bail!(
            "--resume: {key} = {requested} is below the {done} the run in {} has already done; \
             give at least {done}",
            out.display()
        );
    }
    Ok(())
}

/// A tabular or toy run to resume: its checkpoint and what the new data must match.
pub struct TrainResume {
    /// `<out>/checkpoint.safetensors`.
    pub checkpoint: PathBuf,
    /// The data dimension of the run's model.
    pub dim: usize,
}

/// `cpflow train --resume` of a tabular or toy run (`requested` with absolute paths): the
/// training settings are compared with the checkpoint's, the model with the checkpoint's
/// flow (keys named from `<out>/config.toml`), the data and `[run]` with `config.toml`; only
/// [`TRAIN_RESUMABLE`] keys may differ, and the run may not be shortened.
pub fn check_train_resume(requested: &RunConfig, out: &Path) -> Result<TrainResume> {
    let checkpoint = resume_checkpoint(out, "train")?;
    check_run_kind(out, &checkpoint, RunKind::Vectors, "train")?;
    let ck = crate::load_checkpoint(&checkpoint, &Device::Cpu)
        .with_context(|| format!("reading {}", checkpoint.display()))?;
    let (Some(train), Some(state)) = (&ck.meta.train, &ck.meta.state) else {
        bail!(
            "{} holds a model but no training state, so it cannot be resumed; start a new run \
             (another --out, or --overwrite)",
            checkpoint.display()
        );
    };
    let mut diffs = differences("train", &requested.train, train)?;
    let saved_path = out.join("config.toml");
    let saved = if saved_path.is_file() {
        let s = resolve(Some(&saved_path), &Overrides::default())?;
        Some(absolute_run_config(&s)?)
    } else {
        tracing::warn!(
            "{} is missing: the data and [run] settings of the resume are not checked",
            saved_path.display()
        );
        None
    };
    if let Some(s) = &saved {
        diffs.extend(differences("data", &requested.data, &s.data)?);
        diffs.extend(differences("run", &requested.run, &s.run)?);
    }
    // The checkpoint's flow is the model: [model] keys are named from config.toml when they
    // explain the difference, else the flows' own keys are.
    let flow = requested.model.flow_config(ck.meta.flow.dim)?;
    if flow != ck.meta.flow {
        let named = match &saved {
            Some(s) => differences("model", &requested.model, &s.model)?,
            None => Vec::new(),
        };
        if named.is_empty() {
            diffs.extend(differences("checkpoint.flow", &flow, &ck.meta.flow)?);
        } else {
            diffs.extend(named);
        }
    }
    // A config.toml edited after the run started cannot be the advice: it is what differs.
    let edited = match &saved {
        Some(s) => {
            !differences("train", &s.train, train)?.is_empty()
                || s.model.flow_config(ck.meta.flow.dim)? != ck.meta.flow
        }
        None => false,
    };
    if edited {
        let advice = format!(
            "{} itself no longer matches the run's checkpoint (was it edited after the run \
             started?): restore the run's settings in it (the checkpoint's are listed as \
             \"the run\" above), then resume with the changes a resume may make, or start a \
             new run with another --out (or --overwrite)",
            saved_path.display()
        );
        refuse_changes_advising(&diffs, TRAIN_RESUMABLE, out, &advice)?;
    } else {
        refuse_changes(&diffs, TRAIN_RESUMABLE, out, "train")?;
    }
    check_limit(
        "train.max_iterations (--iters)",
        requested.train.max_iterations,
        state.iteration,
        out,
    )?;
    Ok(TrainResume {
        checkpoint,
        dim: ck.meta.flow.dim,
    })
}

/// `cpflow train --resume` of an image run (`requested` with an absolute data root): the
/// checkpoint must exist, the configuration may differ from `<out>/config.toml` in
/// [`IMAGE_RESUMABLE`] keys only (the trainer itself refuses another model), and
/// `train.max_iterations` may not go below the steps done. Returns the checkpoint's progress
/// for [`check_image_epochs`], which needs the number of training images.
pub fn check_image_resume(
    requested: &crate::image::ImageExperimentConfig,
    out: &Path,
) -> Result<crate::image::ImageTrainState> {
    let checkpoint = resume_checkpoint(out, "train")?;
    check_run_kind(out, &checkpoint, RunKind::Image, "train")?;
    let saved_path = out.join("config.toml");
    if saved_path.is_file() {
        let mut saved = resolve_image(&saved_path, &Overrides::default())?;
        saved.data.root = absolute(&saved.data.root)?;
        let diffs = differences("", requested, &saved)?;
        refuse_changes(&diffs, IMAGE_RESUMABLE, out, "train")?;
    }
    let ck = crate::image::train::load_image_checkpoint(&checkpoint, &Device::Cpu)
        .with_context(|| format!("reading {}", checkpoint.display()))?;
    if let Some(m) = requested.train.max_iterations {
        check_limit(
            "train.max_iterations (--iters)",
            m,
            ck.meta.state.iteration,
            out,
        )?;
    }
    Ok(ck.meta.state)
}

/// Refuses an image resume whose `train.epochs` is below the epochs the run has done,
/// counted in training images seen (`state.samples_seen / n_train`, as the trainer counts
/// them).
pub fn check_image_epochs(
    requested: Option<usize>,
    state: &crate::image::ImageTrainState,
    n_train: usize,
    out: &Path,
) -> Result<()> {
    let (Some(epochs), n) = (requested, n_train as u64) else {
        return Ok(());
    };
    if n == 0 || (epochs as u64).saturating_mul(n) >= state.samples_seen {
        return Ok(());
    }
    let done = if state.samples_seen.is_multiple_of(n) {
        (state.samples_seen / n).to_string()
    } else {
        format!("{:.2}", state.samples_seen as f64 / n as f64)
    };
    bail!(
        "--resume: train.epochs = {epochs} is below the {done} epochs the run in {} has \
         already done ({} training images seen, of {n_train}); give at least {}",
        out.display(),
        state.samples_seen,
        state.samples_seen.div_ceil(n)
    )
}

/// The keys where the VAE configurations `requested` and `run` differ in what
/// `cpflow vae --resume` may not change (all but [`VAE_RESUMABLE`]), their data roots
/// compared as absolute paths: none when they configure one run (`vae --resume`; `eval` and
/// `sample` reading a run's `config.toml` beside its weights).
pub fn vae_fixed_differences(
    requested: &crate::vae::VaeConfig,
    run: &crate::vae::VaeConfig,
) -> Result<Vec<Difference>> {
    let with_absolute_root = |c: &crate::vae::VaeConfig| -> Result<crate::vae::VaeConfig> {
        let mut c = c.clone();
        c.data.root = absolute(&c.data.root)?;
        Ok(c)
    };
    let all = differences(
        "",
        &with_absolute_root(requested)?,
        &with_absolute_root(run)?,
    )?;
    Ok(all
        .into_iter()
        .filter(|d| !is_resumable(&d.key, VAE_RESUMABLE))
        .collect())
}

/// `cpflow vae --resume`: the checkpoint must exist and its configuration may differ from
/// the requested one in [`VAE_RESUMABLE`] keys only ([`vae_fixed_differences`]); the number
/// of epochs may not go below those done.
pub fn check_vae_resume(requested: &crate::vae::VaeConfig, out: &Path) -> Result<()> {
    let checkpoint = resume_checkpoint(out, "vae")?;
    check_run_kind(out, &checkpoint, RunKind::Vae, "vae")?;
    let (meta, _) = crate::vae::load_vae_checkpoint(&checkpoint, &Device::Cpu)
        .with_context(|| format!("reading {}", checkpoint.display()))?;
    refuse_changes(
        &vae_fixed_differences(requested, &meta.config)?,
        VAE_RESUMABLE,
        out,
        "vae",
    )?;
    if let Some(state) = &meta.state {
        check_limit(
            "train.epochs (--epochs)",
            requested.train.epochs,
            state.epoch,
            out,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Cfg {
        a: f64,
        t: Table,
    }
    #[derive(Serialize)]
    struct Table {
        b: Option<usize>,
        s: Schedule,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum Schedule {
        Constant,
        Step { size: usize },
    }

    #[test]
    fn differences_name_dotted_keys_and_allowed_ones_pass() {
        let run = Cfg {
            a: 0.5,
            t: Table {
                b: Some(3),
                s: Schedule::Step { size: 2 },
            },
        };
        let req = Cfg {
            a: 0.25,
            t: Table {
                b: None,
                s: Schedule::Constant,
            },
        };
        let d = differences("x", &req, &run).unwrap();
        let keys: Vec<(&str, &str, &str)> = d
            .iter()
            .map(|d| (d.key.as_str(), d.requested.as_str(), d.run.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("x.a", "0.25", "0.5"),
                ("x.t.b", "unset", "3"),
                ("x.t.s", "\"constant\"", "{\"step\":{\"size\":2}}"),
            ]
        );
        assert!(differences("x", &run, &run).unwrap().is_empty());
        let out = Path::new("/r");
        refuse_changes(&d, &["x.a", "x.t."], out, "train").unwrap();
        let e = refuse_changes(&d, &["x.a"], out, "train")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.t.b: unset (requested) vs 3 (the run)"), "{e}");
        assert!(!e.contains("x.a:") && e.contains("/r/config.toml"), "{e}");
        assert!(is_resumable("run.plots", &["run."]) && !is_resumable("runs", &["run."]));
        assert!(check_limit("train.epochs", 2, 3, out).is_err());
        check_limit("train.epochs", 3, 3, out).unwrap();
        // Image epochs count images seen: 3.75 epochs of 256 images need at least 4.
        let state = crate::image::ImageTrainState {
            samples_seen: 960,
            ..Default::default()
        };
        let e = check_image_epochs(Some(3), &state, 256, out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("epochs = 3 is below the 3.75 epochs"), "{e}");
        assert!(e.contains("give at least 4"), "{e}");
        check_image_epochs(Some(4), &state, 256, out).unwrap();
        check_image_epochs(None, &state, 256, out).unwrap();
        let whole = crate::image::ImageTrainState {
            samples_seen: 512,
            ..Default::default()
        };
        let e = check_image_epochs(Some(1), &whole, 256, out)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("below the 2 epochs") && e.contains("at least 2"),
            "{e}"
        );
        check_image_epochs(Some(2), &whole, 256, out).unwrap();
    }

    /// Two VAE configurations of one run differ only in what `vae --resume` may change
    /// (epochs, time budget, `[eval]`, the data root, a relative root and its absolute form
    /// being one root); anything else is named with both values, `requested`'s first. The
    /// check of `vae --resume` and of `eval`/`sample` reading a run's `config.toml`.
    #[test]
    fn vae_configurations_of_one_run_differ_only_in_resumable_keys() {
        use crate::vae::{PosteriorKind, VaeConfig, VaeDatasetName};
        let run = VaeConfig::reference(VaeDatasetName::Mnist, "data", PosteriorKind::Gaussian);
        let mut same = run.clone();
        same.data.root = std::env::current_dir().unwrap().join("data");
        assert!(vae_fixed_differences(&same, &run).unwrap().is_empty());
        let mut resumed = run.clone();
        resumed.train.epochs += 1;
        resumed.train.max_minutes = Some(5.0);
        resumed.eval.is_samples += 1;
        resumed.data.root = "/elsewhere".into();
        assert!(vae_fixed_differences(&resumed, &run).unwrap().is_empty());
        let mut other = resumed.clone();
        other.model.latent_dim = run.model.latent_dim + 1;
        other.data.seed = run.data.seed + 1;
        let fixed = vae_fixed_differences(&other, &run).unwrap();
        let keys: Vec<&str> = fixed.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["data.seed", "model.latent_dim"]);
        assert_eq!(fixed[1].requested, (run.model.latent_dim + 1).to_string());
        assert_eq!(fixed[1].run, run.model.latent_dim.to_string());
    }
}
