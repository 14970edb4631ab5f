//! `cpflow vae`: the VAE experiment of Table 3 (Gaussian or CP-Flow posterior).

use crate::vae::{
    Adamax, PosteriorKind, Vae, VaeConfig, VaeData, VaeModelConfig, VaeRunOptions, load_vae_data,
    run_vae_on,
};
use anyhow::{Context, Result};
use candle_core::Device;
use std::path::Path;

use crate::cli::VaeArgs;
use crate::cli::divergence::{split_divergence, vae_remedies};
use crate::cli::interrupt::Interrupt;
use crate::cli::memory::{
    MemoryLimit, OPTIMISER_COPIES, check_training_memory, memory_limit, size_in_words,
    vae_training_memory,
};
use crate::cli::resume_check::check_vae_resume;
use crate::cli::run_config::{apply_sets, flag_integer, set_path, table_has_key, vae_config_error};
use crate::cli::run_dir::{
    VAE_RUN, absolute, check_new_run_of, resume_checkpoint, take_run_dir, write_config,
};
use crate::cli::run_kind::{RunKind, check_run_command};
use crate::cli::shell_words::resume_command;

mod summary;

/// Reads the TOML file, applies `--set` and the flags, deserialises (unknown keys are errors
/// that name their path).
pub fn resolve_vae_config(a: &VaeArgs) -> Result<VaeConfig> {
    // `--resume` without `--config` continues the run as it was configured.
    let own = a.out.join("config.toml");
    let file = match &a.config {
        Some(c) => c.as_path(),
        None if a.resume => {
            // The run's own config.toml is read as a VAE's only once the directory is known
            // to hold a VAE run: a missing run, or another command's, is said as such.
            resume_checkpoint(&a.out, "vae")?;
            check_run_command(&a.out, "vae")?;
            own.as_path()
        }
        None => anyhow::bail!("--config is needed to start a VAE run"),
    };
    read_vae_config(file, |table| {
        apply_sets(table, &a.set)?;
        if let Some(p) = a.posterior {
            let name = match p {
                PosteriorKind::Gaussian => "gaussian",
                PosteriorKind::CpFlow => "cp-flow",
            };
            set_path(table, "model.posterior", toml::Value::String(name.into()))?;
        }
        if let Some(e) = a.epochs {
            set_path(table, "train.epochs", flag_integer("--epochs", e)?)?;
        }
        Ok(())
    })
}

/// Reads the VAE config `path`, lets `edit` change its TOML table, deserialises it (unknown
/// keys are errors that name their path) and validates it.
pub fn read_vae_config(
    path: &Path,
    edit: impl FnOnce(&mut toml::Table) -> Result<()>,
) -> Result<VaeConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
    refuse_train_config(path, &table)?;
    edit(&mut table)?;
    // Unknown keys and malformed values name their key (once), an enum-valued key its forms.
    let cfg: VaeConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(vae_config_error)?;
    cfg.validate()?;
    Ok(cfg)
}

/// A `cpflow train` configuration given as a VAE's (its `[data]` names a `source`, its
/// `[model]` an `arch`, or it has a `[run]` table): refused as such, with the command that
/// trains it (it failed on the first key the VAE's configuration does not know, e.g.
/// "unknown field `n_test`", read as a typo).
fn refuse_train_config(path: &Path, table: &toml::Table) -> Result<()> {
    let sign = if table_has_key(table, "data", "source") {
        "its [data] names a `source`"
    } else if table_has_key(table, "model", "arch") {
        "its [model] names an `arch`"
    } else if table.contains_key("run") {
        "it has a [run] table"
    } else {
        return Ok(());
    };
    anyhow::bail!(
        "{} configures a flow of `cpflow train` ({sign}), not the VAE experiment: a VAE's \
         configuration names a `dataset` in [data] and a `posterior` in [model] (see \
         configs/vae-*.toml); train this one with `cpflow train --config {}`",
        path.display(),
        crate::cli::shell_words::shell_word(path)
    )
}

/// Settings that size a VAE's training memory, for the messages that refuse it.
const VAE_SIZE_KEYS: &str = "model.latent_dim, train.batch_size, model.architecture.channels, \
     model.architecture.feature_dim, model.blocks, model.width or model.depth";

/// Refuses a VAE that cannot train in the memory this process may use, `limit`
/// ([`memory_limit`]; `None`: unknown, only the fixed size bound applies): the fixed bound on
/// the parameters first (its message does not depend on the limit); then the weights in the
/// optimiser's copies with the activations of a training step (the encoder's and decoder's,
/// [`vae_training_memory`], and the CP-Flow posterior's, which grow with `model.latent_dim`;
/// a batch holds at most the whole training split); then those weights with the exact
/// `log q` of the evaluations (the validation −ELBO after every epoch, the test scores at the
/// end): a chunk of the posterior's `latent_dim × latent_dim` Jacobians.
fn check_vae_memory(cfg: &VaeConfig, data: &VaeData, limit: Option<MemoryLimit>) -> Result<()> {
    let resident = check_vae_training_memory(cfg, data, limit)?;
    let e = &cfg.eval;
    let rows = exact_pass_rows(
        cfg.train.batch_size.min(data.val.n.max(data.test.n)),
        e.is_samples,
        e.is_chunk,
    );
    check_exact_log_q_memory(
        &cfg.model,
        rows,
        resident,
        limit,
        "the validation −ELBO after every epoch and the test scores",
    )
}

/// The training step's part of [`check_vae_memory`]; returns the bytes of the weights in
/// the optimiser's copies (held through the evaluations too).
fn check_vae_training_memory(
    cfg: &VaeConfig,
    data: &VaeData,
    limit: Option<MemoryLimit>,
) -> Result<f64> {
    let m = &cfg.model;
    let image_hw = (data.height, data.width);
    let (networks, posterior) = m.check_size(data.likelihood, image_hw)?;
    let units = m
        .architecture
        .hidden_units(image_hw, m.latent_dim, data.likelihood)?;
    let batch = cfg.train.batch_size.min(data.train.n);
    let parts = [
        (networks, m.network_float.dtype()),
        (posterior, m.posterior_float.dtype()),
    ];
    let activations = vae_training_memory(units, batch, m.network_float.dtype())
        + m.posterior_training_memory(batch);
    check_training_memory(
        "the VAE",
        &parts,
        OPTIMISER_COPIES,
        activations,
        &Device::Cpu,
        limit,
        VAE_SIZE_KEYS,
    )?;
    let weights: f64 = parts
        .iter()
        .map(|&(n, dtype)| n as f64 * dtype.size_in_bytes() as f64)
        .sum();
    Ok(OPTIMISER_COPIES * weights)
}

/// Rows of the largest exact `log q` pass: a −ELBO batch of `batch` images, or
/// `min(is_chunk, is_samples)` importance samples of one image (none when `is_samples` is
/// 0).
pub(super) fn exact_pass_rows(batch: usize, is_samples: usize, is_chunk: usize) -> usize {
    batch.max(is_chunk.min(is_samples))
}

/// Refuses a CP-Flow posterior whose exact `log q` on passes of `rows` images (`when`: what
/// it scores) cannot fit, with `resident` bytes already held, in the memory this process may
/// use, `limit` ([`memory_limit`]; `None`: unknown, nothing is refused; the refusal names
/// the limit): it forms one dense `latent_dim × latent_dim` Jacobian per image for a chunk
/// of images ([`VaeModelConfig::posterior_exact_memory`]).
/// A `latent_dim` of 20,000 trained and then aborted in an allocation at its first
/// validation (16 images' Jacobians: 51 GB).
pub(super) fn check_exact_log_q_memory(
    m: &VaeModelConfig,
    rows: usize,
    resident: f64,
    limit: Option<MemoryLimit>,
    when: &str,
) -> Result<()> {
    let Some(limit) = limit else { return Ok(()) };
    let exact = m.posterior_exact_memory(rows);
    if resident + exact.bytes > limit.bytes {
        let d = m.latent_dim;
        anyhow::bail!(
            "the VAE's CP-Flow posterior with model.latent_dim = {d} cannot be evaluated: \
             its exact log q ({when}) forms a {d} × {d} Jacobian for each image, {} images \
             at a time: {} for the Jacobians and {} for the weights, more than {limit}: \
             lower model.latent_dim",
            exact.rows,
            size_in_words(exact.bytes),
            size_in_words(resident),
        );
    }
    Ok(())
}

/// A data set whose file is missing under `data.root` (`configured`: as the configuration or
/// `--set` gave it; `resolved`: the absolute path it was read as), with where that root
/// pointed and how to give another: a relative root is read against the working directory,
/// so the shipped configurations (`root = "../shared/data"`, written for the repository)
/// run from elsewhere looked in the wrong place, and the loader's message said only to copy
/// or download the file. Other errors pass as they are.
fn with_data_root_hint(
    e: crate::datasets::DatasetError,
    configured: &Path,
    resolved: &Path,
) -> anyhow::Error {
    use crate::datasets::DatasetError;
    if !matches!(
        e,
        DatasetError::MissingFile { .. } | DatasetError::Unsupported { .. }
    ) {
        return e.into();
    }
    let how = if configured.is_relative() {
        let cwd = std::env::current_dir().map_or_else(|_| "?".into(), |d| d.display().to_string());
        format!(
            "data.root = {} is read relative to the working directory ({cwd}), so the data \
             were looked for under {}: run the command from the directory the configuration \
             was written for (the repository's, for configs/vae-*.toml), or give the folder \
             that holds the data with `--set data.root=DIR`",
            // As TOML writes it (Rust's Debug form escaped what TOML does not, e.g. `\u{301}`).
            toml::Value::String(configured.display().to_string()),
            resolved.display()
        )
    } else {
        format!(
            "data.root is {}: give the folder that holds the data with `--set data.root=DIR`",
            configured.display()
        )
    };
    anyhow::anyhow!("{e}. {how}")
}

/// Runs the experiment and prints the test numbers. Before anything is written: a new run
/// does not replace another without `--overwrite`, `--resume` needs the run's checkpoint and
/// may change only the epochs, the time budget and `[eval]` (unlike the library's
/// [`VaeRunOptions::resume`], which starts afresh without a checkpoint), and the data must
/// load. `config.toml` keeps the data root as an absolute path.
pub fn vae(a: VaeArgs) -> Result<()> {
    let mut cfg = resolve_vae_config(&a)?;
    let configured_root = cfg.data.root.clone();
    cfg.data.root = absolute(&cfg.data.root)?;
    if a.resume {
        check_vae_resume(&cfg, &a.out)?;
    } else {
        check_new_run_of(&a.out, RunKind::Vae, a.overwrite)?;
    }
    // Everything that can be checked without training, before the run directory changes (a
    // setting the new run refuses must not cost the run that --overwrite would replace): the
    // data, then the model and its optimiser, built as the run builds them. The data set is
    // fixed by its name (data.dataset, read under data.root), so a resume does not record or
    // check file contents as `cpflow train` does for data files.
    let data = load_vae_data(cfg.data.dataset, &cfg.data.root, cfg.data.seed)
        .map_err(|e| with_data_root_hint(e, &configured_root, &cfg.data.root))?;
    check_vae_memory(&cfg, &data, memory_limit())?;
    let model = Vae::new(
        &cfg.model,
        data.likelihood,
        (data.height, data.width),
        &Device::Cpu,
    )?;
    Adamax::new(model.trainable_named_vars(), cfg.train.optimizer.clone())?;
    drop(model);
    let interrupt = Interrupt::install()?;
    // Only now is the run directory changed; what only training shows fails after this.
    let _lock = take_run_dir(&a.out, &VAE_RUN, a.overwrite)?;
    write_config(&a.out, &cfg, a.resume)?;
    let opts = VaeRunOptions {
        resume: a.resume,
        progress_bar: !a.no_progress,
        interrupt: Some(interrupt.flag()),
        training_ended: Some(interrupt.training_ended()),
    };
    // A checkpoint, best weights, metrics.jsonl or report.json that could not be written:
    // where the run is saved and how to continue it.
    let trained = match run_vae_on(&cfg, &data, &a.out, &opts) {
        Err(e @ crate::CpflowError::EpochCheckpointWrite { .. }) => {
            return Err(super::checkpoint_hint::with_checkpoint_hint(
                e, "vae", &a.out,
            ));
        }
        r => r,
    };
    let trained = split_divergence(trained, || vae_remedies(cfg.train.optimizer.lr))?;
    let r = Interrupt::with_resume_hint(trained, || resume_command("vae", &a.out))?;
    summary::print_summary(&cfg, &r, &a.out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::run_config::parse_value;
    use crate::vae::VaeDatasetName;
    use std::path::PathBuf;

    fn args(config: &str) -> VaeArgs {
        VaeArgs {
            config: Some(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(config),
            ),
            out: PathBuf::from("unused"),
            posterior: None,
            epochs: None,
            resume: false,
            overwrite: false,
            set: vec![],
            no_progress: true,
        }
    }

    #[test]
    fn shipped_configs_are_the_library_presets() {
        // configs/vae-<ds>.toml must be exactly VaeConfig::reference, and the -cpu files
        // exactly VaeConfig::cpu, so the note's numbers and `cargo xtask reproduce` agree.
        let cases = [
            ("frey", VaeDatasetName::FreyFaces, "../shared/data"),
            ("caltech", VaeDatasetName::Caltech101, "../shared/data"),
            ("mnist", VaeDatasetName::Mnist, "../shared/data"),
            ("omniglot", VaeDatasetName::Omniglot, "data"),
        ];
        for (file, ds, root) in cases {
            let got = resolve_vae_config(&args(&format!("configs/vae-{file}.toml"))).unwrap();
            assert_eq!(
                got,
                VaeConfig::reference(ds, root, PosteriorKind::CpFlow),
                "{file}"
            );
            let cpu = format!("configs/vae-{file}-cpu.toml");
            if std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(&cpu)
                .exists()
            {
                let got = resolve_vae_config(&args(&cpu)).unwrap();
                assert_eq!(
                    got,
                    VaeConfig::cpu(ds, root, PosteriorKind::CpFlow),
                    "{cpu}"
                );
            }
        }
        // configs/vae-frey-custom.toml is the CPU preset with the posterior's PICNN(64, 5)
        // named as a custom network (width and depth as settings).
        let got = resolve_vae_config(&args("configs/vae-frey-custom.toml")).unwrap();
        let mut want = VaeConfig::cpu(
            VaeDatasetName::FreyFaces,
            "../shared/data",
            PosteriorKind::CpFlow,
        );
        want.model.custom_posterior = Some(crate::posterior::CustomPosteriorPotential {
            name: "picnn_by_settings".into(),
            settings: [("width".to_string(), 64.0), ("depth".to_string(), 5.0)].into(),
        });
        assert_eq!(got, want);
    }

    /// `VaeConfig::cpu` on Frey Faces with the CP-Flow posterior, and its data (offline copy).
    fn frey_faces_cpu_preset() -> (VaeConfig, VaeData) {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
        let cfg = VaeConfig::cpu(
            VaeDatasetName::FreyFaces,
            root.clone(),
            PosteriorKind::CpFlow,
        );
        let data = load_vae_data(cfg.data.dataset, &root, cfg.data.seed).unwrap();
        (cfg, data)
    }

    /// The CPU preset on Frey Faces (1,565 training images): the weights in four copies, 2
    /// values per hidden unit and image of the batch, and the CP-Flow posterior's arrays
    /// must fit; a batch above the split counts as the split.
    #[test]
    fn a_batch_whose_activations_cannot_fit_is_refused() {
        let (mut cfg, data) = frey_faces_cpu_preset();
        assert_eq!(data.train.n, 1565);
        // `cpflow vae` on this preset logs 1,501,946 parameters: 1,049,824 f32 in the
        // networks (the Gaussian run's count), 452,122 f64 in the posterior. Hidden units:
        // 18,176 + 24,640 + 143,360 per image (`VaeArchitecture::hidden_units`' example).
        // The posterior: 4 blocks × 5 layers × (8 values × 64 latents + 6 × 64 units), f64.
        let weights = 4.0 * (1_049_824.0 * 4.0 + 452_122.0 * 8.0);
        let posterior = 4.0 * 5.0 * (8.0 * 64.0 + 6.0 * 64.0) * 8.0;
        let need = |batch: f64| weights + (2.0 * 186_176.0 * 4.0 + posterior) * batch;
        cfg.train.batch_size = 100;
        let machine = |bytes| Some(MemoryLimit::machine(bytes));
        check_vae_memory(&cfg, &data, machine(need(100.0))).unwrap();
        let err = check_vae_memory(&cfg, &data, machine(need(100.0) - 1.0)).unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("the VAE has 1501946 parameters")
                && err.contains("GB for the activations of a batch")
                && err.contains("lower model.latent_dim, train.batch_size"),
            "{err}"
        );
        for batch in [1565, 1_000_000] {
            cfg.train.batch_size = batch;
            check_vae_memory(&cfg, &data, machine(need(1565.0))).unwrap();
            assert!(check_vae_memory(&cfg, &data, machine(need(1565.0) - 1.0)).is_err());
        }
        check_vae_memory(&cfg, &data, None).unwrap();
    }

    /// An absurd latent size is refused before anything is built, naming `model.latent_dim`:
    /// 20,000 latents passed the check (its weights fit in 23 GB), trained, and aborted in an
    /// allocation (its exact log q needs 16 images' 20,000 × 20,000 Jacobians, 51.2 GB, at
    /// the first validation). The reference latent size passes on the same machine; the
    /// bound is below every measured peak of the CPU preset (`POSTERIOR_MEASURED_PEAKS`).
    #[test]
    fn an_absurd_latent_size_is_refused_naming_the_key() {
        let (mut cfg, data) = frey_faces_cpu_preset();
        let machine = Some(MemoryLimit::machine(23e9));
        check_vae_memory(&cfg, &data, machine).unwrap();
        cfg.model.latent_dim = 20_000;
        let err = check_vae_memory(&cfg, &data, machine)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.latent_dim = 20000")
                && err.contains("20000 × 20000 Jacobian for each image, 16 images at a time")
                && err.contains("51.2 GB for the Jacobians")
                && err.contains("more than this machine's 23.0 GB: lower model.latent_dim"),
            "{err}"
        );
        // The Gaussian posterior has no Jacobians: only its weights and activations count.
        cfg.model.posterior = PosteriorKind::Gaussian;
        check_vae_memory(&cfg, &data, machine).unwrap();
        // The training step's bound against the peaks measured in training steps: each
        // passes on a machine of exactly its peak, and none on one of a fifth of it (the
        // bound is a bound, and not a toothless one).
        cfg.model.posterior = PosteriorKind::CpFlow;
        for (gb, latent_dim) in crate::vae::POSTERIOR_MEASURED_PEAKS {
            cfg.model.latent_dim = latent_dim;
            check_vae_training_memory(&cfg, &data, Some(MemoryLimit::machine(gb * 1e9))).unwrap();
            let fifth =
                check_vae_training_memory(&cfg, &data, Some(MemoryLimit::machine(gb * 1e9 / 5.0)));
            assert!(
                fifth.is_err(),
                "latent_dim {latent_dim}: fits in {gb} GB / 5"
            );
        }
    }

    /// A relative data root is quoted as the configuration writes it: a combining accent
    /// stays as it is (Rust's Debug form wrote `\u{301}`, which no TOML file holds).
    #[test]
    fn a_relative_data_root_is_quoted_as_toml() {
        let configured = Path::new("donne\u{301}es");
        let missing = crate::datasets::DatasetError::MissingFile {
            dataset: "frey-faces",
            path: PathBuf::from("/nowhere/donne\u{301}es/frey_rawface.mat"),
            command: "frey-faces",
        };
        let e = with_data_root_hint(missing, configured, Path::new("/nowhere")).to_string();
        assert!(
            e.contains("data.root = \"donne\u{301}es\" is read relative to the working directory"),
            "{e}"
        );
    }

    /// Frey Faces with the defaults and `key = value`, read by `cpflow vae`'s reader.
    fn vae_with(key: &str, value: &str) -> Result<(), String> {
        // One file per call: tests on other threads may call this at the same time.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cpflow-vae-forms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("vae-{call}.toml"));
        std::fs::write(&file, "[data]\ndataset = \"frey-faces\"\nroot = \"data\"\n").unwrap();
        let read = read_vae_config(&file, |t| set_path(t, key, parse_value(value)));
        std::fs::remove_file(&file).unwrap();
        read.map(drop).map_err(|e| format!("{e:#}"))
    }

    /// The VAE's enum-valued keys are refused with their forms, as the flow's are, and the
    /// forms listed are the forms (`model.network_float = 16` said only "invalid type: unit
    /// variant, expected string only").
    #[test]
    fn enum_errors_list_the_forms() {
        use crate::cli::run_config::{VAE_FORMS, form_checks::check_forms};
        check_forms("VAE configuration", VAE_FORMS, vae_with);
        let err = vae_with("model.network_float", "16").unwrap_err();
        assert_eq!(
            err,
            "invalid VAE configuration at `model.network_float`: invalid type: unit variant, \
             expected string only; model.network_float is one of \"f32\" or \"f64\""
        );
        // A key that is not an enum: its reason, the key once.
        let err = vae_with("model.latent_dim", "\"many\"").unwrap_err();
        assert_eq!(
            err,
            "invalid VAE configuration at `model.latent_dim`: invalid type: string \"many\", \
             expected usize"
        );
    }

    #[test]
    fn flags_and_set_override_the_file() {
        let mut a = args("configs/vae-frey.toml");
        a.posterior = Some(PosteriorKind::Gaussian);
        a.epochs = Some(7);
        a.set = vec!["eval.is_samples=10".into()];
        let c = resolve_vae_config(&a).unwrap();
        assert_eq!(c.model.posterior, PosteriorKind::Gaussian);
        assert_eq!((c.train.epochs, c.eval.is_samples), (7, 10));
        a.set = vec!["train.epoch=3".into()];
        let e = resolve_vae_config(&a).unwrap_err().to_string();
        assert!(e.contains("train"), "{e}");
    }
}
