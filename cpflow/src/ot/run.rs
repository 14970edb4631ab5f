//! The OT run: training one CP-Flow block and measuring its transport cost and KL.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::{OtConfig, OtError, OtRecord, OtReport, W2Bounds};
use crate::error::CpflowError;
use crate::flow::{EVAL_CHUNK, Flow, Layer};
use crate::flow_config::FlowConfig;
use crate::observer::{Control, FnObserver};
use crate::rng::FlowRng;
use crate::toy::GaussianTarget;
use crate::train::{Dataset, RunOptions, StopReason, Trainer};

/// `f(x)`: the flow's forward map without log-determinants (detached), chunked.
///
/// ```
/// use cpflow::ot::forward_map;
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::{Flow, FlowConfig, PotentialConfig};
/// use cpflow::icnn::Icnn3Config;
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// // One CP-Flow block on 2-D points (f64), initialised on the data.
/// let icnn = Icnn3Config { dim: 2, width: 8, depth: 2, ..Default::default() };
/// let potential = PotentialConfig::Icnn3(icnn);
/// let cfg = FlowConfig::single_block(potential).with_float(cpflow::FloatType::F64);
/// let flow = Flow::new(cfg, &Device::Cpu)?;
/// let x = Tensor::new(&[[0.0f64, 0.0], [1.0, -1.0], [2.0, 0.5], [-0.5, 1.5]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let z = forward_map(&flow, &x)?;
/// // The same map as the flow's transform, without the log-determinants.
/// let (z_ref, _) = flow.transform(&x)?;
/// assert!((z - z_ref)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-12);
/// assert!(forward_map(&flow, &x.narrow(0, 0, 0)?).is_err()); // no rows
/// # Ok(())
/// # }
/// ```
pub fn forward_map(flow: &Flow, x: &Tensor) -> Result<Tensor, OtError> {
    Ok(checked_forward_map(flow, x)?.1)
}

/// `(x, f(x))` with `x` validated as every other pass of the flow validates its data
/// ([`Flow::check_input`]: rank 2, `d` columns, at least one row, finite; moved to the
/// flow's device and dtype) and the flow initialised. Without the latter check a flow whose
/// only layer is a CP-Flow block (no ActNorm to refuse first) had its ICNN's ActNorms
/// initialised on `x` by the first forward call, a silent change of the model.
fn checked_forward_map(flow: &Flow, x: &Tensor) -> Result<(Tensor, Tensor), OtError> {
    flow.ensure_initialized()?;
    let (x, _) = flow.check_input(x, None)?;
    let mut out = flow.chunked(&x, None, EVAL_CHUNK, |_, xc, _| {
        let mut h = xc.clone();
        for layer in flow.layers() {
            h = match layer {
                Layer::ActNorm(a) => a.forward(&h)?.0,
                Layer::Cpf(b) => b.forward(&h, None)?,
            }
            .detach();
        }
        Ok(vec![h])
    })?;
    // One output per row chunk, concatenated; none when `x` has no rows.
    let z = out.pop().ok_or_else(|| {
        OtError::from(CpflowError::InvalidInput(
            "forward_map needs at least one row".into(),
        ))
    })?;
    Ok((x, z))
}

/// `E‖x − f(x)‖²` over the rows of `x`.
///
/// ```
/// use cpflow::ot::{forward_map, transport_cost};
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::{Flow, FlowConfig, PotentialConfig};
/// use cpflow::icnn::Icnn3Config;
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// // One CP-Flow block on 2-D points (f64), initialised on the data.
/// let icnn = Icnn3Config { dim: 2, width: 8, depth: 2, ..Default::default() };
/// let potential = PotentialConfig::Icnn3(icnn);
/// let cfg = FlowConfig::single_block(potential).with_float(cpflow::FloatType::F64);
/// let flow = Flow::new(cfg, &Device::Cpu)?;
/// let x = Tensor::new(&[[0.0f64, 0.0], [1.0, -1.0], [2.0, 0.5], [-0.5, 1.5]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let z = forward_map(&flow, &x)?;
/// let want = (&x - z)?.sqr()?.sum(1)?.mean_all()?.to_scalar::<f64>()?;
/// assert!((transport_cost(&flow, &x)? - want).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
pub fn transport_cost(flow: &Flow, x: &Tensor) -> Result<f64, OtError> {
    let (x, z) = checked_forward_map(flow, x)?;
    let d2 = (x - z)?.sqr()?.sum(1)?.to_dtype(DType::F64)?;
    Ok(d2.mean_all()?.to_scalar::<f64>()?)
}

/// `(mean(log p − log q), mean(−log q))` over the rows of `x` (host `f64` rows `x_rows`).
fn kl_and_nll(
    flow: &Flow,
    target: &GaussianTarget,
    x: &Tensor,
    x_rows: &[f64],
) -> Result<(f64, f64), OtError> {
    let log_q = flow
        .log_prob_exact(x)?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    let d = target.dim();
    let mut kl = 0.0;
    let mut nll = 0.0;
    for (row, lq) in x_rows.chunks(d).zip(&log_q) {
        kl += target.log_density(row)? - lq;
        nll -= lq;
    }
    let n = log_q.len().max(1) as f64;
    Ok((kl / n, nll / n))
}

/// Trains one block on `N(m, C)` data and records transport cost and KL along the way.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::ot::{OtConfig, run_ot_experiment};
/// # fn main() -> Result<(), cpflow::ot::OtError> {
/// // The reference settings, shrunk: a width-8 ICNN, 256 training points, 10 steps.
/// let mut cfg = OtConfig::reference(2);
/// (cfg.n_train, cfg.n_test, cfg.n_eval_curve, cfg.eval_every) = (256, 128, 64, 5);
/// cfg.train.max_iterations = 10;
/// cfg.train.batch_size = 64;
/// cfg.train.lr_schedule = cpflow::LrSchedule::Cosine { t_max: 10 };
/// if let cpflow::PotentialConfig::Icnn3(c) = &mut cfg.potential {
///     (c.width, c.depth) = (8, 2);
/// }
/// let (flow, report) = run_ot_experiment(&cfg, &Device::Cpu, Default::default())?;
/// assert_eq!((report.dim, report.curve.last().unwrap().iteration), (2, 10));
/// assert!(report.train_time_s > 0.0 && report.wall_time_s >= report.train_time_s);
/// // The trained flow is returned: its cost on the test set is the report's.
/// assert!(report.transport_cost.is_finite() && flow.dim() == 2);
/// # Ok(())
/// # }
/// ```
pub fn run_ot_experiment(
    cfg: &OtConfig,
    device: &Device,
    options: RunOptions,
) -> Result<(Flow, OtReport), OtError> {
    let t0 = Instant::now();
    let mut rng = FlowRng::seed_from_u64(cfg.data_seed);
    let target = cfg.build_target(&mut rng)?;
    let dtype = cfg.float.dtype();
    let to_tensor = |rows: &[f64], n: usize| -> Result<Tensor, OtError> {
        Ok(Tensor::from_slice(rows, (n, cfg.dim), device)?.to_dtype(dtype)?)
    };
    let train_rows = target.sample(cfg.n_train, &mut rng);
    let test_rows = target.sample(cfg.n_test, &mut rng);
    let train = Dataset::new(to_tensor(&train_rows, cfg.n_train)?);
    let test = to_tensor(&test_rows, cfg.n_test)?;
    let n_curve = cfg.n_eval_curve.max(1);
    // The curve follows a fresh validation sample (drawn after the test set, which is
    // scored once, at the end).
    let curve_rows = target.sample(n_curve, &mut rng);
    let curve_x = to_tensor(&curve_rows, n_curve)?;

    let flow_cfg = FlowConfig::single_block(cfg.potential.clone())
        .with_float(cfg.float)
        .with_init_seed(cfg.init_seed);
    let flow = Flow::new(flow_cfg, device)?;
    flow.initialize(
        &train
            .x
            .narrow(0, 0, cfg.train.batch_size.min(cfg.n_train))?,
    )?;
    let mut trainer = Trainer::new(flow, cfg.train.clone())?.with_options(options);

    let w2 = target.w2_squared_to_standard_normal();
    let mut curve = Vec::new();
    let mut record = |trainer: &Trainer| -> Result<f64, OtError> {
        let iteration = trainer.state().iteration;
        // The end of a run whose length is a multiple of `eval_every` is seen twice (the
        // periodic evaluation and the end): evaluated and logged once.
        if curve
            .last()
            .is_some_and(|r: &OtRecord| r.iteration == iteration)
        {
            return Ok(0.0);
        }
        let t = Instant::now();
        let cost = transport_cost(trainer.flow(), &curve_x)?;
        let (kl, _) = kl_and_nll(trainer.flow(), &target, &curve_x, &curve_rows)?;
        tracing::info!(
            dim = cfg.dim,
            iteration,
            transport_cost = cost,
            w2_squared = w2,
            kl,
            converged = W2Bounds::from_cost_and_kl(cost, kl).converged,
            "OT"
        );
        curve.push(OtRecord {
            iteration,
            transport_cost: cost,
            kl,
        });
        Ok(t.elapsed().as_secs_f64())
    };
    // The observer stops the run on the first evaluation error and keeps it for us.
    let mut failure: Option<OtError> = None;
    let mut eval_time = 0.0;
    let mut observer = FnObserver::new(cfg.eval_every, |trainer: &Trainer, _moment| {
        match record(trainer) {
            Ok(dt) => {
                eval_time += dt;
                Ok(Control::Continue)
            }
            Err(e) => {
                failure = Some(e);
                Ok(Control::Stop)
            }
        }
    });
    let ts = Instant::now();
    let fit = trainer.fit_observed(&train, None, &mut [&mut observer])?;
    if let Some(e) = failure {
        return Err(e);
    }
    if fit.stop_reason == StopReason::Paused {
        return Err(OtError::Interrupted {
            dim: cfg.dim,
            iteration: fit.iterations,
        });
    }
    let train_time = ts.elapsed().as_secs_f64() - eval_time;
    let flow = trainer.into_flow();
    let cost = transport_cost(&flow, &test)?;
    let optimal = target.optimal_map_to_standard_normal(&test_rows);
    let optimal_cost = test_rows
        .iter()
        .zip(&optimal)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        / cfg.n_test.max(1) as f64;
    let (kl, test_nll) = kl_and_nll(&flow, &target, &test, &test_rows)?;
    let report = OtReport {
        dim: cfg.dim,
        w2_squared: w2,
        transport_cost: cost,
        relative_error: (cost - w2) / w2,
        optimal_cost_on_test: optimal_cost,
        paired_relative_error: (cost - optimal_cost) / optimal_cost,
        kl,
        w2_squared_bounds: W2Bounds::from_cost_and_kl(cost, kl),
        test_nll,
        entropy: target.entropy(),
        curve,
        train_time_s: train_time,
        wall_time_s: t0.elapsed().as_secs_f64(),
    };
    Ok((flow, report))
}
