//! `cpflow ot`: the optimal-transport experiment over several dimensions.

use anyhow::{Context, Result, bail};
use cpflow::ot::{
    OtConfig, OtReport, OtTarget, ot_table_markdown, run_ot_experiment, write_ot_figures,
};
use cpflow::{LrSchedule, PotentialConfig, RunOptions};

use super::float_type;
use crate::OtArgs;
use crate::run_config::merge;

/// Sets the potential's input dimension (dense potentials only: the experiment's data are
/// vectors, not images).
fn with_dim(p: &PotentialConfig, dim: usize) -> Result<PotentialConfig> {
    let mut p = p.clone();
    match &mut p {
        PotentialConfig::Icnn(c) => c.dim = dim,
        PotentialConfig::Icnn2(c) => c.dim = dim,
        PotentialConfig::Icnn3(c) => c.dim = dim,
        PotentialConfig::DenseIcnn2(c) => c.dim = dim,
        PotentialConfig::Picnn(c) => c.dim = dim,
        _ => bail!(
            "the OT experiment needs a dense potential (icnn, icnn2, icnn3, dense_icnn2), not a \
             convolutional one"
        ),
    }
    Ok(p)
}

/// The configuration for dimension `dim`: the reference, overlaid with the file's keys.
fn config_for(a: &OtArgs, file: Option<&toml::Table>, dim: usize) -> Result<OtConfig> {
    let mut table = toml::Table::try_from(OtConfig::reference(dim))?;
    if let Some(f) = file {
        table = merge(table, f.clone());
    }
    let mut cfg: OtConfig = toml::Value::Table(table)
        .try_into()
        .context("invalid OT configuration")?;
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
    if let Some(d) = &a.dev.dtype {
        cfg.float = float_type(d)?;
    }
    Ok(cfg)
}

pub fn ot(a: OtArgs) -> Result<()> {
    if a.dims.is_empty() || a.dims.contains(&0) {
        bail!("--dims needs positive dimensions");
    }
    let device = crate::device(a.dev.device.as_deref())?;
    let file = match &a.config {
        Some(p) => Some(
            toml::from_str::<toml::Table>(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("parsing {}", p.display()))?,
        ),
        None => None,
    };
    std::fs::create_dir_all(&a.out)?;
    let mut reports: Vec<OtReport> = Vec::new();
    for &dim in &a.dims {
        let cfg = config_for(&a, file.as_ref(), dim)?;
        tracing::info!(dim, iterations = cfg.train.max_iterations, target = ?cfg.target, "OT run");
        let (_, report) = run_ot_experiment(&cfg, &device, RunOptions::default())?;
        write_ot_figures(&a.out, &report)?;
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
        reports.push(report);
        // Rewrite the table after every dimension so a long run leaves partial results.
        std::fs::write(a.out.join("ot_table.md"), ot_table_markdown(&reports))?;
        std::fs::write(
            a.out.join("ot_reports.json"),
            serde_json::to_string_pretty(&reports)?,
        )?;
    }
    println!("\n{}", ot_table_markdown(&reports));
    Ok(())
}
