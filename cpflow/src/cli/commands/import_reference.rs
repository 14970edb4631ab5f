//! `cpflow import-reference`: a flow trained by the authors' PyTorch code
//! (github.com/CW-Huang/CP-Flow: `train_tabular.py`, `train_toy.py`, `train_img.py`) as a
//! cpflow model directory in the format `cpflow train` writes (`config.toml`,
//! `model.safetensors`), which `eval`, `sample` and `plot` read (image flows: `sample`).
//!
//! The architecture comes from the `[model]` table of a `cpflow train` config (the same TOML a
//! user would train it with); the weights from the reference's `state_dict` saved as
//! safetensors: a `SequentialFlow` (keys `flows.{i}.…`, [`KeyMapping::for_flow`]) for a
//! tabular/toy config, a `MultiscaleFlow` (keys `transforms.{s}.flows.{j}.…`,
//! [`KeyMapping::for_multiscale`], see [`image`]) for an image config; with `--vae`, the VAE
//! of `train_vae.py` and a `cpflow vae` config ([`vae`]). They are loaded by
//! [`load_reference_state_dict`], which checks every key and shape before anything is
//! written.

mod image;
mod vae;

use crate::Flow;
use crate::reference_weights::{KeyMapping, load_reference_state_dict};
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use clap::Args;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::cli::data::DataSource;
use crate::cli::model_file::{ModelKind, kind_of_metadata};
use crate::cli::run_config::{ModelSection, Overrides, is_image_config, resolve};
use crate::cli::run_dir::{
    TRAIN_RUN, VAE_RUN, absolute_run_config, check_new_run, take_run_dir, write_config,
};
use icnn::ActivationKind;

/// `cpflow import-reference`.
#[derive(Args, Debug)]
#[command(after_long_help = PYTORCH_EXPORT_HELP)]
pub struct ImportReferenceArgs {
    /// The reference model's `state_dict` as a safetensors file (keys `flows.{i}.…` of a
    /// `SequentialFlow`, `transforms.{s}.flows.{j}.…` of train_img.py's `MultiscaleFlow`, or
    /// with `--vae` train_vae.py's `VAE`/`CPFVAE`; float64 or float32 tensors). See `--help`
    /// for the PyTorch lines that write it.
    #[arg(long, value_name = "W.safetensors")]
    pub state_dict: PathBuf,
    /// A `cpflow train` TOML config whose `[model]` table describes the reference model
    /// (with `--vae`: a `cpflow vae` config).
    /// Tabular/toy: `arch`, `blocks`, `width`, `depth`, `activation`, `zero_shift`,
    /// `symm_act_first`, `layout` (`tabular` for `train_tabular.py`, `toy` for
    /// `train_toy.py`). Image (a `[data]` table with `dataset = "mnist" | "cifar10"`, which sets
    /// the image shape and the default logit offset, e.g. configs/mnist.toml): `arch`
    /// (`conv_icnn`, `conv_icnn2`, `conv_icnn3` for `--icnn 1/2/3`), `width` = `--dimh`,
    /// `depth` = `--num_hidden_layers`, `nblocks` = `--nblocks`, `actnorm`, `factor_out`,
    /// `fc_end`, `logit_alpha` (the `[train]` table needs a stop condition as for training; it is not
    /// used). The config is kept in `<out>/config.toml`.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Output model directory: `model.safetensors` (with `--vae`: `best.safetensors`) and
    /// `config.toml`. A directory that a running `train` or `vae` holds is refused.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Float type of the written model (default: the config's `model.float`; unset, f64 for
    /// tabular/toy flows and f32 for image flows, as `cpflow train` builds them).
    #[arg(long, value_enum)]
    pub dtype: Option<crate::FloatType>,
    /// Tabular/toy: data dimension (default: the length of the first ActNorm's `flows.0.b`;
    /// needed for `layout = "single"`, which has no ActNorm). Not for image flows.
    #[arg(long)]
    pub dim: Option<usize>,
    /// Read only the tensors whose keys start with this prefix, prefix removed (e.g.
    /// `model.` for a file that also holds other tensors); default: every tensor.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Replace a model or run already in `--out` (not while a `train` or `vae` runs there).
    #[arg(long)]
    pub overwrite: bool,
    /// The state_dict is train_vae.py's VAE (`VAE`, Gaussian posterior, or `CPFVAE`, CP-Flow
    /// posterior) and `--config` a `cpflow vae` config (e.g. configs/vae-frey.toml) that
    /// describes it; `--out` gets a VAE model directory (`best.safetensors`, `config.toml`)
    /// that `eval` and `sample` read.
    #[arg(long)]
    pub vae: bool,
}

/// The `--help` note on writing the safetensors file in PyTorch.
const PYTORCH_EXPORT_HELP: &str = "\
Supported: tabular and toy flows (train_tabular.py, train_toy.py: a SequentialFlow) and image
flows (train_img.py: a MultiscaleFlow on MNIST 1x28x28 or CIFAR-10 3x32x32, --icnn 1/2/3,
any --nblocks, --actnorm, --factor_out, --fc_end), and with --vae the VAE of train_vae.py (Gaussian or CP-Flow posterior; the
architecture from a `cpflow vae` config such as configs/vae-frey.toml).

Writing the state_dict from PyTorch (needs `pip install safetensors`; float64 or float32):

    import torch
    from safetensors.torch import save_file
    model = ...  # the reference SequentialFlow or MultiscaleFlow, weights loaded
    save_file({k: v.double().contiguous() for k, v in model.state_dict().items()}, \"W.safetensors\")

Then: cpflow import-reference --state-dict W.safetensors --config C.toml --out DIR
An image model or a VAE: cpflow sample --model DIR --grid 8x8 -o samples.png
A VAE: cpflow import-reference --vae --state-dict W.safetensors --config vae.toml --out DIR;
       cpflow eval --model DIR (test -ELBO and importance-sampled NLL)";

/// Imports the reference weights into `--out` and prints a one-line summary.
pub fn import_reference(a: ImportReferenceArgs) -> Result<()> {
    // `--out` is checked first, before the configuration and the weights are read (a state
    // dict can be hundreds of MB): a file, a directory that a running `train` or `vae` writes
    // into (`--overwrite` or not) and one that holds a run without `--overwrite` are refused.
    // The lock itself is taken once everything has loaded, before anything is written.
    check_new_run(
        &a.out,
        if a.vae { &VAE_RUN } else { &TRAIN_RUN },
        a.overwrite,
    )?;
    if a.vae {
        return vae::import_vae(&a);
    }
    if is_image_config(Some(&a.config))? {
        return image::import_image(&a);
    }
    let ov = Overrides {
        dtype: a.dtype,
        out: Some(a.out.clone()),
        ..Overrides::default()
    };
    let cfg = resolve(Some(&a.config), &ov)?;
    let StateDictFile {
        tensors: state_dict,
        metadata,
    } = read_state_dict(&a.state_dict, a.prefix.as_deref())?;
    check_recorded_activation(&metadata, &a.state_dict, &a.config, &cfg.model)?;
    let dim = match a.dim {
        Some(d) => check_dim_flag(d, &state_dict)?,
        None => infer_dim(&state_dict)?,
    };
    // The data kept in config.toml are what `eval` and `plot` score by default: a source of
    // another dimension (the default toy when the config has no [data]) is refused here.
    if let Some(data_dim) = known_dim(&cfg.data.source)
        && data_dim != dim
    {
        // A --dim that flows.0.b did not confirm (a `single` layout has no ActNorm) is as
        // likely at fault as the data: both are named.
        if a.dim.is_some() && !state_dict.contains_key("flows.0.b") {
            bail!(
                "--dim {dim} differs from the dimension of data.source = `{}` in {} \
                 ({data_dim}-D): pass the data dimension of the model with --dim, and set \
                 [data] source to the data it was trained on (`eval` and `plot` use it by \
                 default)",
                cfg.data.source,
                a.config.display()
            );
        }
        bail!(
            "{}: data.source = `{}` is {data_dim}-D but the model is {dim}-D: set [data] source \
             to the data the model was trained on (a tabular benchmark such as `miniboone`, or \
             a .npy/.csv file); `eval` and `plot` use it by default",
            a.config.display(),
            cfg.data.source
        );
    }
    let flow = Flow::new(cfg.model.flow_config(dim)?, &Device::Cpu)?;
    let mapping = KeyMapping::for_flow(flow.config());
    let report = load_reference_state_dict(&flow.named_vars(), &state_dict, &mapping)
        .with_context(|| {
            format!(
                "loading {} into the model of {} (check [model] blocks, depth, arch and \
                 layout against the reference model)",
                a.state_dict.display(),
                a.config.display()
            )
        })?;
    // Written once everything has loaded: a failed import leaves `--out` as it was. The
    // directory's lock is held while the files are written (the old ones removed with
    // --overwrite): a `train` or `vae` that runs there refuses it.
    let _lock = take_run_dir(&a.out, &TRAIN_RUN, a.overwrite)?;
    write_config(&a.out, &absolute_run_config(&cfg)?, false)?;
    let model = a.out.join("model.safetensors");
    flow.save(&model)
        .with_context(|| format!("writing {}", model.display()))?;
    println!(
        "imported {} tensors ({} parameters, {}-D flow, {} CP-Flow blocks, {:?}) from {} into {}",
        report.loaded,
        flow.num_parameters(),
        flow.dim(),
        flow.blocks().count(),
        flow.float(),
        a.state_dict.display(),
        model.display()
    );
    Ok(())
}

/// The activation settings of the reference's command line, when the state_dict's metadata
/// `meta` (of the file `path`) records them (`softplus_type`, `zero_softplus`,
/// `symm_act_first`: the fixtures' export script writes them; `safetensors.torch.save_file`
/// writes none), against the config's `[model]`: a difference is refused. The weights alone
/// cannot tell: with another activation the import succeeded and the model scored other
/// log-densities.
fn check_recorded_activation(
    meta: &HashMap<String, String>,
    path: &Path,
    config: &Path,
    model: &ModelSection,
) -> Result<()> {
    let flag = |v: &str| match v {
        "1" | "true" | "True" => Some(true),
        "0" | "false" | "False" => Some(false),
        _ => None,
    };
    let mut differences = Vec::new();
    if let Some(kind) = meta.get("softplus_type") {
        let recorded = match kind.as_str() {
            "softplus" => Some(ActivationKind::Softplus),
            "gaussian_softplus" => Some(ActivationKind::GaussianSoftplus),
            _ => None,
        };
        if let Some(r) = recorded.filter(|r| *r != model.activation) {
            differences.push(format!(
                "model.activation = {:?} in the config, the weights were trained with \
                 softplus_type = {kind} ({r:?})",
                model.activation
            ));
        }
    }
    for (key, ours, name) in [
        ("zero_softplus", model.zero_shift, "model.zero_shift"),
        (
            "symm_act_first",
            model.symm_act_first,
            "model.symm_act_first",
        ),
    ] {
        if let Some(r) = meta.get(key).and_then(|v| flag(v)).filter(|r| *r != ours) {
            differences.push(format!(
                "{name} = {ours} in the config, the weights were trained with {key} = {}",
                u8::from(r)
            ));
        }
    }
    if !differences.is_empty() {
        bail!(
            "{} records how its weights were trained, and {} differs: {}. Set the config's \
             [model] as the reference model was run",
            path.display(),
            config.display(),
            differences.join("; ")
        );
    }
    Ok(())
}

/// The dimension of the data `source` when it is known without reading a data file: 2 for
/// toys and image densities, the benchmark's for a tabular one; `None` for .npy/.csv files.
fn known_dim(source: &str) -> Option<usize> {
    match DataSource::parse(source).ok()? {
        DataSource::Toy(_) | DataSource::Image(_) => Some(2),
        DataSource::Tabular(t) => Some(t.dim()),
        DataSource::Npy(_) | DataSource::Csv(_) => None,
    }
}

/// A reference state_dict as [`read_state_dict`] reads it, the file read once.
struct StateDictFile {
    /// The tensors (those under the prefix, prefix removed).
    tensors: HashMap<String, Tensor>,
    /// The file's `__metadata__` (empty when it has none).
    metadata: HashMap<String, String>,
}

/// The tensors and metadata of the safetensors file `path` (the tensors under `prefix`,
/// prefix removed), refusing a file that is not safetensors (non-finite values are refused
/// by `load_reference_state_dict`, naming the key).
fn read_state_dict(path: &Path, prefix: Option<&str>) -> Result<StateDictFile> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let header = match safetensors::SafeTensors::read_metadata(&bytes) {
        Ok((_, h)) => h,
        Err(e) => bail!(
            "{} is not a safetensors file ({e}): write the state_dict with \
             safetensors.torch.save_file (see `cpflow import-reference --help`)",
            path.display()
        ),
    };
    // A model that cpflow wrote (its metadata says which) is not a reference state_dict: its
    // keys are cpflow's, and the key-by-key error would list them all.
    let keys: Vec<&String> = header.metadata().iter().flat_map(|m| m.keys()).collect();
    let written_by = match kind_of_metadata(&keys) {
        ModelKind::Unknown => None,
        ModelKind::Flow | ModelKind::Image => Some("cpflow train or import-reference"),
        ModelKind::Vae => Some("cpflow vae or import-reference --vae"),
    };
    if let Some(command) = written_by {
        bail!(
            "{} is a cpflow model (written by {command}), not a state_dict of the authors' \
             code: `cpflow eval --model` and `cpflow sample --model` read it as it is",
            path.display()
        );
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .with_context(|| format!("reading the tensors of {}", path.display()))?;
    let tensors: HashMap<String, Tensor> = match prefix {
        Some(p) => tensors
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(p).map(|k| (k.to_string(), v)))
            .collect(),
        None => tensors,
    };
    if tensors.is_empty() {
        bail!(
            "{} holds no tensors{}",
            path.display(),
            prefix.map_or(String::new(), |p| format!(" under the prefix `{p}`"))
        );
    }
    Ok(StateDictFile {
        tensors,
        metadata: header.metadata().clone().unwrap_or_default(),
    })
}

/// `--dim d` against the state_dict: the length of its first ActNorm's bias `flows.0.b`,
/// when it has one, is the data dimension, and another `d` is refused naming the flag (the
/// import failed later as a mismatch of `data.source`, or of the first key's shape).
fn check_dim_flag(d: usize, state_dict: &HashMap<String, Tensor>) -> Result<usize> {
    match state_dict.get("flows.0.b").map(Tensor::elem_count) {
        Some(m) if m != d => bail!(
            "--dim {d} differs from the state_dict's data dimension {m} (the length of its \
             first ActNorm's bias flows.0.b): pass --dim {m}, or leave --dim out (it is read \
             from flows.0.b)"
        ),
        _ => Ok(d),
    }
}

/// The data dimension: the length of the first layer's ActNorm bias `flows.0.b`. An image
/// flow's state_dict is refused, naming the config it needs.
fn infer_dim(state_dict: &HashMap<String, Tensor>) -> Result<usize> {
    if let Some(b) = state_dict.get("flows.0.b") {
        return Ok(b.elem_count());
    }
    // train_img.py's MultiscaleFlow (its `transforms.1.flows.0.b` would pass for a prefix).
    if state_dict
        .keys()
        .any(|k| k.starts_with("transforms.") || k.contains(".transforms."))
    {
        bail!(
            "the state_dict holds `transforms.…` keys (train_img.py's MultiscaleFlow), not a \
             SequentialFlow's `flows.…`: import it with an image config (`[data] dataset = \
             \"mnist\"` or `\"cifar10\"`, e.g. configs/mnist.toml)"
        );
    }
    // A key such as `model.flows.0.b`: the state_dict sits under a prefix.
    if let Some(p) = state_dict
        .keys()
        .filter_map(|k| k.strip_suffix("flows.0.b"))
        .min()
    {
        bail!("the state_dict has no flows.0.b but has {p}flows.0.b: pass --prefix {p}");
    }
    bail!(
        "the state_dict has no flows.0.b (the first ActNorm) to read the data dimension \
         from: pass --dim"
    )
}
