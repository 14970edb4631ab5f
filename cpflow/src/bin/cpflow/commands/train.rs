//! `cpflow train`.

use anyhow::{Context, Result};
use cpflow::{Dataset, Flow, FlowRng, NllEstimator, RunOptions, Trainer, mean_nll};
use serde::Serialize;
use std::time::Instant;

use crate::TrainArgs;
use crate::data::load;
use crate::model_plots::{PlotOptions, rows_to_points, write_model_plots};
use crate::run_config::{Overrides, resolve};

/// `report.json` of a run.
#[derive(Serialize)]
struct TrainSummary {
    data: String,
    dim: usize,
    n_train: usize,
    n_test: usize,
    parameters: usize,
    iterations: usize,
    /// Held-out exact NLL (nats) at the end.
    test_nll: f64,
    /// `(iteration, held-out exact NLL)`.
    test_nll_curve: Vec<(usize, f64)>,
    /// Monte-Carlo entropy of the held-out data, when the density is known in closed form.
    data_entropy: Option<f64>,
    /// `test_nll − data_entropy`: a KL estimate.
    kl_estimate: Option<f64>,
    final_loss: f64,
    train_time_s: f64,
    wall_time_s: f64,
}

pub fn train(a: TrainArgs) -> Result<()> {
    let t0 = Instant::now();
    let ov = Overrides {
        set: a.set.clone(),
        data: a.data.clone(),
        iters: a.iters,
        batch_size: a.batch_size,
        lr: a.lr,
        device: a.dev.device.clone(),
        dtype: a.dev.dtype.clone(),
        seed: a.dev.seed,
        out: a.out.clone(),
    };
    let cfg = resolve(a.config.as_deref(), &ov)?;
    let out = cfg.run.out.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("config.toml"), toml::to_string_pretty(&cfg)?)?;
    let device = crate::device(Some(&cfg.run.device))?;
    let data = load(&cfg.data)?;
    let dtype = cfg.model.float.dtype();
    tracing::info!(
        data = %cfg.data.source,
        dim = data.dim,
        n_train = data.n_train(),
        n_test = data.n_test(),
        out = %out.display(),
        "loaded data"
    );
    let train_set = Dataset::new(data.tensor(&data.train, dtype, &device)?);
    let test_set = if data.test.is_empty() {
        None
    } else {
        Some(Dataset::new(data.tensor(&data.test, dtype, &device)?))
    };
    let options = RunOptions {
        out_dir: Some(out.clone()),
        progress_bar: cfg.run.progress && !a.no_progress,
    };
    let mut trainer = if a.resume {
        let ck = out.join("checkpoint.safetensors");
        tracing::info!(checkpoint = %ck.display(), "resuming");
        Trainer::resume(&ck, &device, Some(cfg.train.clone()))?.with_options(options)
    } else {
        let flow = Flow::new(cfg.model.flow_config(data.dim)?, &device)?;
        tracing::info!(parameters = flow.num_parameters(), "built the flow");
        Trainer::new(flow, cfg.train.clone())?.with_options(options)
    };
    let val = if cfg.train.val_every > 0 {
        test_set.as_ref()
    } else {
        None
    };

    let total = cfg.train.max_iterations;
    let segment = if cfg.run.eval_every == 0 {
        total.max(1)
    } else {
        cfg.run.eval_every
    };
    let mut eval_rng = FlowRng::seed_from_u64(cfg.train.seed ^ 0xE7A1);
    let mut curve = Vec::new();
    let mut train_time = 0.0;
    let mut final_loss = f64::NAN;
    loop {
        let ts = Instant::now();
        let rep = trainer.fit_steps(&train_set, val, segment)?;
        train_time += ts.elapsed().as_secs_f64();
        final_loss = if rep.final_loss.is_finite() {
            rep.final_loss
        } else {
            final_loss
        };
        if let Some(test) = &test_set {
            let nll = mean_nll(
                trainer.flow(),
                test,
                &NllEstimator::Exact,
                1024,
                &mut eval_rng,
            )?;
            tracing::info!(
                iteration = rep.iterations,
                test_nll = nll,
                "held-out exact NLL"
            );
            curve.push((rep.iterations, nll));
        }
        let st = trainer.state();
        if st.iteration >= total || st.stopped_early || rep.iterations == 0 {
            break;
        }
    }
    let flow = trainer.into_flow();
    let entropy = data.test_entropy();
    let test_nll = curve.last().map(|c| c.1).unwrap_or(f64::NAN);
    if cfg.run.plots && data.dim == 2 {
        let pts = rows_to_points(&data.train, 100_000);
        let mut rng = FlowRng::seed_from_u64(cfg.train.seed ^ 0x5A3);
        let figs = write_model_plots(
            &flow,
            Some(&pts),
            &out.join("plots"),
            &PlotOptions::default(),
            &mut rng,
        )?;
        tracing::info!(count = figs.len(), dir = %out.join("plots").display(), "wrote plots");
    }
    let summary = TrainSummary {
        data: cfg.data.source.clone(),
        dim: data.dim,
        n_train: data.n_train(),
        n_test: data.n_test(),
        parameters: flow.num_parameters(),
        iterations: total,
        test_nll,
        test_nll_curve: curve,
        data_entropy: entropy,
        kl_estimate: entropy.map(|h| test_nll - h),
        final_loss,
        train_time_s: train_time,
        wall_time_s: t0.elapsed().as_secs_f64(),
    };
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!(
        "trained {} iterations in {:.1} s; held-out exact NLL {:.4} nats{}; outputs in {}",
        summary.iterations,
        summary.train_time_s,
        summary.test_nll,
        match entropy {
            Some(h) => format!(" (data entropy {h:.4}, KL ≈ {:.4})", test_nll - h),
            None => String::new(),
        },
        out.display()
    );
    Ok(())
}
