//! `cpflow ot`: the optimal-transport experiment over several dimensions.
//!
//! `--config` overlays a TOML file on `OtConfig::reference(d)`: tables merge key by key,
//! except that a table naming another variant of an enum than the reference's (another
//! `train.lr_schedule` or `train.val_estimator` variant, a `[potential]` of another `arch`)
//! replaces the reference's table instead of being merged into it. Unknown keys are errors
//! naming the key and its table, in every table.

use crate::ot::{
    OtConfig, OtError, OtReport, OtTarget, ot_table_markdown, run_ot_experiment, write_ot_figures,
};
use crate::{LrSchedule, PotentialConfig, RunOptions};
use anyhow::{Context, Result, bail};
use std::path::Path;

use crate::cli::OtArgs;
use crate::cli::interrupt::Interrupt;
use crate::cli::memory::{MemoryLimit, memory_limit};
use crate::cli::output_files::{ensure_dir, write_file_atomic};
use crate::cli::run_config::merge;
use crate::cli::run_dir::{TRAIN_RUN, lock_run_dir, remove_old_run};
use crate::cli::run_kind::{OT_REPORTS_FILE, OT_TABLE_FILE, check_ot_out, ot_output_files};

/// Sets the potential's input dimension (dense potentials only: the experiment's data are
/// vectors, not images).
fn with_dim(p: &PotentialConfig, dim: usize) -> Result<PotentialConfig> {
    let mut p = p.clone();
    match &mut p {
        PotentialConfig::Icnn(c) => c.dim = dim,
        PotentialConfig::Icnn2(c) => c.dim = dim,
        PotentialConfig::Icnn3(c) => c.dim = dim,
        PotentialConfig::DenseIcnn2(c) => c.dim = dim,
        PotentialConfig::Picnn(_) => bail!(
            "the OT experiment fits an unconditional flow: picnn is a conditional potential \
             (it needs a context for every point); use icnn, icnn2, icnn3 or dense_icnn2"
        ),
        other => bail!(
            "the OT experiment needs a dense potential (icnn, icnn2, icnn3, dense_icnn2), not \
             {}",
            potential_words(other)
        ),
    }
    Ok(p)
}

/// What a potential the OT experiment cannot use is, in words.
fn potential_words(p: &PotentialConfig) -> &'static str {
    match p {
        PotentialConfig::ConvIcnn(_)
        | PotentialConfig::ConvIcnn2(_)
        | PotentialConfig::ConvIcnn3(_) => "a convolutional one",
        _ => "a custom one (its input size is its builder's: the experiment sets `dim` per run)",
    }
}

/// The first key of `file` (depth first) that the configuration does not have: `resolved`
/// is the deserialised configuration serialised again, so a key serde skipped (the ICNN
/// configurations of `[potential]` accept unknown keys) is missing there. Returns the key,
/// its table (`""` for the top level) and the table's keys.
fn unknown_key(
    file: &toml::Table,
    resolved: &toml::Table,
    table: &str,
) -> Option<(String, String, Vec<String>)> {
    for (k, v) in file {
        match (v, resolved.get(k)) {
            (_, None) => {
                let known = resolved.keys().cloned().collect();
                return Some((k.clone(), table.to_string(), known));
            }
            (toml::Value::Table(f), Some(toml::Value::Table(r))) => {
                let path = if table.is_empty() {
                    k.clone()
                } else {
                    format!("{table}.{k}")
                };
                if let Some(found) = unknown_key(f, r, &path) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

/// The configuration of the file `path` (parsed into `file`) for dimension `dim`: the
/// reference, overlaid with the file's keys; unknown keys are refused with their table.
fn from_file(path: &Path, file: &toml::Table, dim: usize) -> Result<OtConfig> {
    let table = merge(
        toml::Table::try_from(OtConfig::reference(dim))?,
        file.clone(),
    );
    let cfg: OtConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key_path = e.path().to_string();
            let msg = e.into_inner().to_string();
            // toml appends the key's location on a line of its own.
            let msg = msg.trim().replace('\n', " ");
            // An unknown key's path ends with the key: name the table that holds it.
            let at = match key_path.rsplit_once('.') {
                _ if !msg.starts_with("unknown field") => format!("at `{key_path}`"),
                Some((table, _)) => format!("in table [{table}]"),
                None => "at the top level".to_string(),
            };
            anyhow::anyhow!("invalid OT configuration in {} {at}: {msg}", path.display())
        })?;
    let resolved = toml::Table::try_from(&cfg)?;
    if let Some((key, table, known)) = unknown_key(file, &resolved, "") {
        let table = if table.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in table [{table}]")
        };
        bail!(
            "invalid OT configuration in {}: unknown key `{key}` {table} (its keys: {})",
            path.display(),
            known.join(", ")
        );
    }
    Ok(cfg)
}

/// The configuration for dimension `dim`: the reference or the file's, then the flags.
fn config_for(a: &OtArgs, file: Option<&toml::Table>, dim: usize) -> Result<OtConfig> {
    let mut cfg = match (file, &a.config) {
        (Some(f), Some(path)) => from_file(path, f, dim)?,
        _ => OtConfig::reference(dim),
    };
    cfg.dim = dim;
    cfg.potential = with_dim(&cfg.potential, dim)?;
    if let Some(n) = a.iters {
        cfg.train.max_iterations = n;
        if let LrSchedule::Cosine { .. } = cfg.train.lr_schedule {
            cfg.train.lr_schedule = LrSchedule::Cosine { t_max: n };
        }
    }
    if a.paper_2d && dim == 2 {
        cfg.target = OtTarget::Paper2d;
    }
    if let Some(s) = a.dev.seed {
        cfg.data_seed = s;
        cfg.init_seed = s;
        cfg.train.seed = s;
    }
    if let Some(f) = a.dev.dtype {
        cfg.float = f;
    }
    cfg.train.validate()?;
    Ok(cfg)
}

/// Peak memory (bytes) of training `cfg` with the exact log-det, which keeps per-sample
/// `d × d` Hessians and `width × d` Jacobians of every layer for the backward pass:
/// `0.1 GB + batch · d · (depth · (2,787 + 74.2 · width) + 194 · d)` bytes. Fitted to the
/// peak RSS of `cpflow ot --iters 1` on this project's CPU machine (GB, batch 128 unless
/// said): d = 128: 1.12 (batch 64: 0.61; width 32: 0.92; depth 10: 1.77), d = 192: 1.94,
/// d = 256: 3.07; within 10% of each. A guide for the dense potentials, not a bound.
fn training_memory_estimate(cfg: &OtConfig) -> f64 {
    let (width, depth) = match &cfg.potential {
        PotentialConfig::Icnn(c) => (c.width, c.depth),
        PotentialConfig::Icnn2(c) => (c.width, c.depth),
        PotentialConfig::Icnn3(c) => (c.width, c.depth),
        PotentialConfig::DenseIcnn2(c) => (c.width, c.depth),
        PotentialConfig::Picnn(c) => (c.width, c.depth),
        _ => (64, 5),
    };
    let (b, d) = (cfg.train.batch_size as f64, cfg.dim as f64);
    0.1e9 + b * d * (depth as f64 * (2787.0 + 74.2 * width as f64) + 194.0 * d)
}

/// Refuses, before anything runs, a dimension whose training would not fit in the memory
/// this process may use, `limit` ([`memory_limit`]; `None`: unknown, nothing is refused;
/// the refusal names the limit). `--dims 1024` needs about 31 GB at batch 128: it ran the
/// machine out of memory.
fn check_memory(configs: &[OtConfig], limit: Option<MemoryLimit>) -> Result<()> {
    let Some(limit) = limit else { return Ok(()) };
    for cfg in configs {
        let need = training_memory_estimate(cfg);
        if need > limit.bytes {
            bail!(
                "d = {}: training with the exact log-det at batch {} needs about {:.1} GB \
                 (it grows as batch · d²), more than {limit}: lower train.batch_size or the \
                 dimension",
                cfg.dim,
                cfg.train.batch_size,
                need / 1e9,
            );
        }
    }
    Ok(())
}

/// The settings every dimension's run needs, checked before anything runs (`n_test = 0` used
/// to fail after training, `n_train = 0` without naming the key).
fn check_sizes(cfg: &OtConfig) -> Result<()> {
    for (key, value) in [
        ("n_train", cfg.n_train),
        ("n_test", cfg.n_test),
        ("n_eval_curve", cfg.n_eval_curve),
    ] {
        if value == 0 {
            bail!("invalid OT configuration: {key} must be at least 1");
        }
    }
    Ok(())
}

/// A line naming the dimensions whose map has not converged (their transport cost is not an
/// estimate of W₂²), or `None` when every one has.
fn not_converged_note(reports: &[OtReport]) -> Option<String> {
    let dims: Vec<String> = reports
        .iter()
        .filter(|r| !r.w2_squared_bounds.converged)
        .map(|r| r.dim.to_string())
        .collect();
    (!dims.is_empty()).then(|| {
        format!(
            "NOT CONVERGED: d = {}: the KL leaves W2² a wide range (column \"W2^2 bounds from \
             the KL\"), so those transport costs are not yet estimates of W2²; train longer \
             (--iters)",
            dims.join(", ")
        )
    })
}

/// Runs the experiment for every `--dims` entry; writes the figures, `ot_table.md` and
/// `ot_reports.json` (rewritten atomically after each dimension) into `--out`, and says for
/// every dimension whether its map has converged (its transport cost estimates W₂²).
pub fn ot(a: OtArgs) -> Result<()> {
    if a.dims.is_empty() || a.dims.contains(&0) {
        bail!("--dims needs positive dimensions");
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(d) = a.dims.iter().find(|d| !seen.insert(**d)) {
        bail!("--dims lists d = {d} twice: each dimension is one run and one table row");
    }
    let device = crate::cli::device(a.dev.device.as_deref())?;
    let file = match &a.config {
        Some(p) => Some(
            toml::from_str::<toml::Table>(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("parsing {}", p.display()))?,
        ),
        None => None,
    };
    // Every configuration and the output directory are checked before the first run.
    let configs = a
        .dims
        .iter()
        .map(|&dim| config_for(&a, file.as_ref(), dim))
        .collect::<Result<Vec<_>>>()?;
    for cfg in &configs {
        check_sizes(cfg)?;
    }
    check_memory(&configs, memory_limit())?;
    // A directory that another process writes into (a `train` or `vae` going on, another
    // `ot`) is refused, --overwrite or not; this one holds its lock until it ends.
    ensure_dir(&a.out, "the OT output directory")?;
    let _lock = lock_run_dir(&a.out)?;
    // A `train` or `vae` run there is not mixed with the experiment's files: refused, or
    // replaced with --overwrite.
    if check_ot_out(&a.out, a.overwrite)? {
        remove_old_run(&a.out, &TRAIN_RUN)?;
    }
    // An earlier run's files would mix with this run's (its `ot_d…` figures stayed beside a
    // table that no longer listed them).
    let earlier = ot_output_files(&a.out)?;
    if !earlier.is_empty() {
        if !a.overwrite {
            bail!(
                "{} already holds the results of an OT run ({} files, e.g. {}): pass \
                 --overwrite to replace them, or choose another --out",
                a.out.display(),
                earlier.len(),
                earlier[0].display()
            );
        }
        for f in &earlier {
            std::fs::remove_file(f).with_context(|| format!("removing {}", f.display()))?;
        }
    }
    let interrupt = Interrupt::install_with_message(
        "interrupted: stopping after the training step in progress (the finished dimensions \
         are saved); interrupt again to quit now",
    )?;
    let mut reports: Vec<OtReport> = Vec::new();
    for cfg in &configs {
        let dim = cfg.dim;
        let target = match cfg.target {
            OtTarget::Random => "random",
            OtTarget::Paper2d => "paper_2d",
        };
        tracing::info!(dim, iterations = cfg.train.max_iterations, target = %target, "OT run");
        let options = RunOptions {
            interrupt: Some(interrupt.flag()),
            ..RunOptions::default()
        };
        let (_, report) = match run_ot_experiment(cfg, &device, options) {
            Err(e @ OtError::Interrupted { .. }) => {
                if reports.is_empty() {
                    bail!(
                        "{e}: no dimension had finished and nothing was written; run the \
                         command again to start over"
                    );
                }
                let kept = {
                    let dims: Vec<String> = reports.iter().map(|r| r.dim.to_string()).collect();
                    format!(
                        "the finished dimensions (d = {}) are in {}",
                        dims.join(", "),
                        a.out.join(OT_TABLE_FILE).display()
                    )
                };
                bail!("{e}: {kept}; run the command again with --overwrite to redo it");
            }
            r => r?,
        };
        write_ot_figures(&a.out, &report).with_context(|| {
            format!("writing the figures of d = {dim} into {}", a.out.display())
        })?;
        println!(
            "d = {dim}: W2² = {:.4}, transport cost = {:.4} ({:+.2}%; optimal map on the same test points {:.4}, {:+.2}%), KL = {:.4}, {:.1} s",
            report.w2_squared,
            report.transport_cost,
            100.0 * report.relative_error,
            report.optimal_cost_on_test,
            100.0 * report.paired_relative_error,
            report.kl,
            report.train_time_s
        );
        println!("  {}", report.w2_squared_bounds.verdict());
        reports.push(report);
        // Rewrite the table after every dimension so a long run leaves partial results.
        write_file_atomic(
            &a.out.join(OT_TABLE_FILE),
            ot_table_markdown(&reports).as_bytes(),
            "the OT table",
        )?;
        let json = serde_json::to_string_pretty(&reports).context("serialising the reports")?;
        write_file_atomic(
            &a.out.join(OT_REPORTS_FILE),
            json.as_bytes(),
            "the OT reports",
        )?;
    }
    println!("\n{}", ot_table_markdown(&reports));
    if let Some(n) = not_converged_note(&reports) {
        println!("{n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NllEstimator;

    fn resolve(text: &str) -> Result<OtConfig> {
        let file: toml::Table = toml::from_str(text).unwrap();
        from_file(Path::new("ot.toml"), &file, 3)
    }

    /// A schedule or potential of another variant replaces the reference's; one of the same
    /// variant is merged into it.
    /// A conditional potential is refused as such (it passed as "dense" and failed later
    /// with "pass a context tensor"); dense ones get the run's dimension.
    #[test]
    fn with_dim_sets_dense_potentials_and_refuses_a_conditional_one() {
        let picnn = PotentialConfig::Picnn(icnn::PicnnConfig {
            dim: 2,
            context_dim: 3,
            width: 4,
            depth: 1,
            ..Default::default()
        });
        let e = with_dim(&picnn, 5).unwrap_err().to_string();
        assert!(e.contains("picnn is a conditional potential"), "{e}");
        let dense = PotentialConfig::Icnn3(icnn::Icnn3Config {
            dim: 2,
            ..Default::default()
        });
        assert_eq!(with_dim(&dense, 5).unwrap().dim(), 5);
    }

    #[test]
    fn variants_replace_and_same_variants_merge() {
        let cfg = resolve("[train.lr_schedule.step]\nstep_size = 600\ngamma = 0.5\n").unwrap();
        assert_eq!(
            cfg.train.lr_schedule,
            LrSchedule::Step {
                step_size: 600,
                gamma: 0.5
            }
        );
        let cfg = resolve("[train]\nlr_schedule = \"constant\"\nval_estimator = \"exact\"\n");
        let cfg = cfg.unwrap();
        assert_eq!(cfg.train.lr_schedule, LrSchedule::Constant);
        assert_eq!(cfg.train.val_estimator, NllEstimator::Exact);
        let cfg = resolve("[potential]\narch = \"icnn\"\nwidth = 8\n").unwrap();
        match cfg.potential {
            PotentialConfig::Icnn(c) => assert_eq!(c.width, 8),
            p => panic!("{p:?}"),
        }
        // Same arch: the reference's other settings stay.
        let cfg = resolve("[potential]\narch = \"icnn3\"\nwidth = 8\n").unwrap();
        match cfg.potential {
            PotentialConfig::Icnn3(c) => assert_eq!((c.width, c.depth), (8, 5)),
            p => panic!("{p:?}"),
        }
    }

    /// The estimate reproduces the peak memory it was fitted to (within 10%), and a
    /// dimension past the machine's memory is refused before anything runs.
    #[test]
    fn memory_estimate_matches_measurements_and_refuses_what_cannot_fit() {
        let cfg = |dim: usize, batch: usize, width: usize, depth: usize| {
            let mut c = resolve("").unwrap();
            c.dim = dim;
            c.train.batch_size = batch;
            match &mut c.potential {
                PotentialConfig::Icnn3(p) => (p.width, p.depth) = (width, depth),
                p => panic!("the reference potential is {p:?}"),
            }
            c
        };
        for (dim, batch, width, depth, gb) in [
            (128, 128, 64, 5, 1.12),
            (128, 64, 64, 5, 0.61),
            (128, 128, 32, 5, 0.92),
            (128, 128, 64, 10, 1.77),
            (192, 128, 64, 5, 1.94),
            (256, 128, 64, 5, 3.07),
        ] {
            let est = training_memory_estimate(&cfg(dim, batch, width, depth)) / 1e9;
            assert!(
                (est / gb - 1.0).abs() < 0.1,
                "d = {dim}: {est:.2} GB vs {gb} GB"
            );
        }
        let big = cfg(1024, 128, 64, 5);
        let machine = Some(MemoryLimit::machine(23e9));
        let err = check_memory(&[cfg(2, 128, 64, 5), big], machine)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("d = 1024")
                && err.contains("more than this machine's 23.0 GB: lower train.batch_size"),
            "{err}"
        );
        check_memory(&[cfg(256, 128, 64, 5)], machine).unwrap();
        // Under a tighter limit the refusal names it: d = 256 needs about 3.1 GB.
        let ulimit = MemoryLimit {
            bytes: 2e9,
            source: crate::cli::memory::LimitSource::AddressSpace,
        };
        let err = check_memory(&[cfg(256, 128, 64, 5)], Some(ulimit))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "more than the 2.0 GB this process may use (its address-space limit, \
                 ulimit -v)"
            ),
            "{err}"
        );
        check_memory(&[cfg(4096, 128, 64, 5)], None).unwrap();
    }

    #[test]
    fn unknown_keys_name_key_and_table() {
        for (text, key, table) in [
            ("n_trian = 5\n", "n_trian", "top level"),
            ("[potential]\nwidht = 5\n", "widht", "[potential]"),
            ("[bogus]\nx = 1\n", "bogus", "top level"),
            ("[train.adam]\nlrr = 1\n", "lrr", "train.adam"),
            ("[run]\nplots = true\n", "run", "top level"),
        ] {
            let err = format!("{:#}", resolve(text).unwrap_err());
            assert!(err.contains(key) && err.contains(table), "{text}: {err}");
            assert!(err.contains("ot.toml"), "{err}");
        }
    }

    /// Zero sizes are refused by key before anything runs.
    #[test]
    fn zero_sizes_are_refused_by_key() {
        for key in ["n_train", "n_test", "n_eval_curve"] {
            let cfg = resolve(&format!("{key} = 0\n")).unwrap();
            let e = check_sizes(&cfg).unwrap_err().to_string();
            assert!(e.contains(&format!("{key} must be at least 1")), "{e}");
        }
        check_sizes(&resolve("").unwrap()).unwrap();
    }

    /// An earlier run's files are found (and nothing else in the directory).
    #[test]
    fn earlier_run_files_are_the_ot_outputs_only() {
        let dir = std::env::temp_dir().join(format!("cpflow-ot-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "ot_table.md",
            "ot_reports.json",
            "ot_d2_curve.csv",
            "notes.txt",
        ] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let names: Vec<String> = ot_output_files(&dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["ot_d2_curve.csv", "ot_reports.json", "ot_table.md"]);
        assert!(ot_output_files(&dir.join("missing")).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
