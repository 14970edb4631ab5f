//! Observers of a training run: the one place where "train N steps, then evaluate, then
//! decide" lives (modelled on argmin's observers).
//!
//! [`Trainer::fit_observed`] calls every observer at the start of the call, after every step
//! whose total iteration count is a multiple of the observer's [`TrainObserver::period`], and
//! once at the end of the run. An observer reads the trainer (model, state, configuration) and
//! returns [`Control::Stop`] to end the run early: the run then finishes like one that reached
//! its iteration cap (final validation, best weights restored, checkpoint and model written).
//! [`Control::Pause`] ends the call without finishing the run (an interrupt: the checkpoint
//! holds it, [`Trainer::resume`] continues it).
//!
//! Two observers come with the crate: [`NllCurve`] (an NLL on a data set every `period` steps,
//! e.g. the validation curve of the toy experiment and of `cpflow train`) and [`TimeBudget`]
//! (stop when a wall-clock budget is spent).

use std::time::{Duration, Instant};

use crate::config::NllEstimator;
use crate::error::Result;
use crate::evaluate::{Dataset, mean_nll};
use crate::rng::FlowRng;
use crate::train::Trainer;

/// Whether training goes on after an observation.
///
/// ```
/// use cpflow::StopReason;
/// use cpflow::observer::{Control, FnObserver, Moment};
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Dataset, Flow, FlowConfig, LrSchedule, PotentialConfig, TrainConfig, Trainer};
/// # fn main() -> cpflow::Result<()> {
/// # let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// # let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// # let data: Vec<f64> = (0..64).map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0).collect();
/// # let train = Dataset::new(Tensor::from_vec(data, (32, 2), &Device::Cpu)?);
/// # let config = TrainConfig {
/// #     batch_size: 8, max_iterations: 6, val_every: 0, train_slq_every: 0,
/// #     lr_schedule: LrSchedule::Constant, ..Default::default()
/// # };
/// let mut trainer = Trainer::new(flow, config)?; // max_iterations: 6
/// // Stop once 3 steps are done.
/// let mut stop_at_3 = FnObserver::new(1, |t: &Trainer, _: Moment| {
///     Ok(if t.state().iteration >= 3 { Control::Stop } else { Control::Continue })
/// });
/// let report = trainer.fit_observed(&train, None, &mut [&mut stop_at_3])?;
/// assert_eq!((report.iterations, report.stop_reason), (3, StopReason::Observer));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Keep training.
    Continue,
    /// End the run now (it finishes as if it had reached its iteration cap).
    Stop,
    /// End this call now without finishing the run, as [`Trainer::fit_steps`] does at its step
    /// limit: the last weights, optimiser and RNG state go to the checkpoint (when the trainer
    /// has an output directory); no final validation, no model file. For interrupts.
    Pause,
}

/// When an observer is called.
///
/// ```
/// use cpflow::observer::{Control, FnObserver, Moment};
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Dataset, Flow, FlowConfig, LrSchedule, PotentialConfig, TrainConfig, Trainer};
/// # fn main() -> cpflow::Result<()> {
/// # let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// # let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// # let data: Vec<f64> = (0..64).map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0).collect();
/// # let train = Dataset::new(Tensor::from_vec(data, (32, 2), &Device::Cpu)?);
/// # let config = TrainConfig {
/// #     batch_size: 8, max_iterations: 6, val_every: 0, train_slq_every: 0,
/// #     lr_schedule: LrSchedule::Constant, ..Default::default()
/// # };
/// let mut trainer = Trainer::new(flow, config)?; // max_iterations: 6
/// let mut seen = Vec::new();
/// let mut record = FnObserver::new(2, |t: &Trainer, m: Moment| {
///     seen.push((m, t.state().iteration));
///     Ok(Control::Continue)
/// });
/// trainer.fit_observed(&train, None, &mut [&mut record])?;
/// drop(record);
/// let expected = [
///     (Moment::Start, 0),
///     (Moment::Periodic, 2),
///     (Moment::Periodic, 4),
///     (Moment::Periodic, 6),
///     (Moment::End, 6),
/// ];
/// assert_eq!(seen, expected);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Moment {
    /// Before the first step of a [`Trainer::fit_observed`] call.
    Start,
    /// After a step whose total iteration count is a multiple of the observer's period.
    Periodic,
    /// Once the run has finished (cap, early stopping or an observer's stop), after the best
    /// weights were restored: the trainer's flow is the model the run returns.
    End,
}

/// Something that watches a training run.
///
/// ```
/// use cpflow::observer::{Control, Moment, TrainObserver};
/// use cpflow::Trainer;
///
/// /// Stops a run at its first iteration past 100.
/// struct StopAt100;
///
/// impl TrainObserver for StopAt100 {
///     fn period(&self) -> usize { 1 }
///     fn observe(&mut self, trainer: &Trainer, _moment: Moment) -> cpflow::Result<Control> {
///         Ok(if trainer.state().iteration >= 100 { Control::Stop } else { Control::Continue })
///     }
/// }
/// ```
pub trait TrainObserver {
    /// Iterations between [`Moment::Periodic`] calls (0: never; only start and end).
    fn period(&self) -> usize;

    /// Look at the run; return [`Control::Stop`] to end it.
    fn observe(&mut self, trainer: &Trainer, moment: Moment) -> Result<Control>;

    /// A curve this observer records and wants kept with the run: `(name, points)`. After
    /// each observation the trainer copies it into [`crate::TrainState::curves`], so its
    /// checkpoints hold it and an observer of a resumed run can continue it ([`NllCurve`]
    /// does). Default: none.
    fn curve(&self) -> Option<(&str, &[(usize, f64)])> {
        None
    }
}

/// Records a mean NLL of a data set every `period` iterations and at the end of the run.
///
/// The curve holds `(iteration, NLL)` pairs; the start of a fresh run is recorded when
/// `record_start` is set. Give it a validation split: the test split is scored once, after
/// training. The curve is kept with the run under its label ([`TrainObserver::curve`]): an
/// empty `NllCurve` given to a resumed trainer starts from the points the run recorded
/// before its checkpoint, so that it covers the whole run.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::observer::NllCurve;
/// use cpflow::{Dataset, Flow, FlowConfig, LrSchedule, NllEstimator, PotentialConfig, TrainConfig, Trainer};
///
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let rows = |n: usize, k: usize| -> Vec<f64> {
///     (0..2 * n).map(|i| (((i + k) * 7919) % 101) as f64 / 50.0 - 1.0).collect()
/// };
/// let train = Dataset::new(Tensor::from_vec(rows(32, 0), (32, 2), &Device::Cpu)?);
/// let val = Dataset::new(Tensor::from_vec(rows(16, 5), (16, 2), &Device::Cpu)?);
/// let config = TrainConfig {
///     batch_size: 8, max_iterations: 6, val_every: 0, train_slq_every: 0,
///     lr_schedule: LrSchedule::Constant, ..Default::default()
/// };
/// let mut curve = NllCurve::new(val, NllEstimator::Exact, 3);
/// let mut trainer = Trainer::new(flow, config)?;
/// trainer.fit_observed(&train, None, &mut [&mut curve])?;
/// let its: Vec<usize> = curve.points().iter().map(|p| p.0).collect();
/// assert_eq!(its, vec![3, 6]);
/// # Ok(())
/// # }
/// ```
pub struct NllCurve {
    data: Dataset,
    estimator: NllEstimator,
    period: usize,
    batch_size: usize,
    record_start: bool,
    rng: FlowRng,
    points: Vec<(usize, f64)>,
    label: &'static str,
    eval_time: Duration,
}

impl NllCurve {
    /// A curve of `estimator`'s NLL on `data` every `period` iterations (0: only at the end).
    pub fn new(data: Dataset, estimator: NllEstimator, period: usize) -> Self {
        NllCurve {
            data,
            estimator,
            period,
            batch_size: 1024,
            record_start: false,
            rng: FlowRng::seed_from_u64(0xC0_FFEE),
            points: Vec::new(),
            label: "validation",
            eval_time: Duration::ZERO,
        }
    }

    /// Evaluation chunk size (default 1024).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Also record the NLL before the first step of a fresh run.
    pub fn with_start(mut self, record_start: bool) -> Self {
        self.record_start = record_start;
        self
    }

    /// Seed of the SLQ probes (unused by the exact estimator).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = FlowRng::seed_from_u64(seed);
        self
    }

    /// Name of the split in log lines (default "validation").
    pub fn with_label(mut self, label: &'static str) -> Self {
        self.label = label;
        self
    }

    /// The `(iteration, NLL)` points so far.
    pub fn points(&self) -> &[(usize, f64)] {
        &self.points
    }

    /// The last point.
    pub fn last(&self) -> Option<(usize, f64)> {
        self.points.last().copied()
    }

    /// Wall-clock time spent evaluating so far.
    pub fn eval_time(&self) -> Duration {
        self.eval_time
    }

    /// Consume the observer, returning the curve.
    pub fn into_points(self) -> Vec<(usize, f64)> {
        self.points
    }
}

impl TrainObserver for NllCurve {
    fn period(&self) -> usize {
        self.period
    }

    fn observe(&mut self, trainer: &Trainer, moment: Moment) -> Result<Control> {
        let iteration = trainer.state().iteration;
        if moment == Moment::Start {
            // The data set is checked against the flow before the first step, as the trainer
            // checks its own sets: a curve whose set does not fit would otherwise fail only
            // at its first point, after `period` steps.
            trainer
                .flow()
                .check_input(&self.data.x, self.data.context.as_ref())
                .map_err(|e| e.about(&format!("NLL curve on the {} set", self.label)))?;
        }
        if moment == Moment::Start
            && self.points.is_empty()
            && let Some(before) = trainer.state().curves.get(self.label)
        {
            self.points = before
                .iter()
                .copied()
                .filter(|p| p.0 <= iteration)
                .collect();
        }
        let wanted = match moment {
            Moment::Start => self.record_start && iteration == 0,
            Moment::Periodic => true,
            // The curve follows the trajectory: weights kept from an earlier iteration
            // (`restore_best`) are not a point of it at the last iteration.
            Moment::End => trainer.weights_iteration() == iteration,
        };
        // The end of a run often falls on a periodic point: record each iteration once.
        if !wanted || self.points.last().is_some_and(|p| p.0 == iteration) {
            return Ok(Control::Continue);
        }
        if !trainer.flow().is_initialized()? {
            return Ok(Control::Continue);
        }
        let t0 = Instant::now();
        let nll = mean_nll(
            trainer.flow(),
            &self.data,
            &self.estimator,
            self.batch_size,
            &mut self.rng,
        )?;
        self.eval_time += t0.elapsed();
        tracing::info!(iteration, nll, split = self.label, "NLL curve");
        self.points.push((iteration, nll));
        Ok(Control::Continue)
    }

    fn curve(&self) -> Option<(&str, &[(usize, f64)])> {
        Some((self.label, &self.points))
    }
}

/// Stops a run once a wall-clock budget is spent (checked after every step, so a run
/// overshoots by at most one step, plus the final validation). The clock starts at the
/// first observation.
///
/// ```
/// use std::time::Duration;
/// use cpflow::StopReason;
/// use cpflow::observer::TimeBudget;
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Dataset, Flow, FlowConfig, LrSchedule, PotentialConfig, TrainConfig, Trainer};
/// # fn main() -> cpflow::Result<()> {
/// # let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// # let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// # let data: Vec<f64> = (0..64).map(|i| ((i * 7919) % 101) as f64 / 50.0 - 1.0).collect();
/// # let train = Dataset::new(Tensor::from_vec(data, (32, 2), &Device::Cpu)?);
/// # let config = TrainConfig {
/// #     batch_size: 8, max_iterations: 6, val_every: 0, train_slq_every: 0,
/// #     lr_schedule: LrSchedule::Constant, ..Default::default()
/// # };
/// let mut trainer = Trainer::new(flow, config)?; // max_iterations: 6
/// // A budget of zero: spent after the first step.
/// let mut budget = TimeBudget::new(Duration::ZERO);
/// let report = trainer.fit_observed(&train, None, &mut [&mut budget])?;
/// assert_eq!((report.iterations, report.stop_reason), (1, StopReason::Observer));
/// assert!(budget.exhausted() && budget.elapsed() > Duration::ZERO);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TimeBudget {
    budget: Duration,
    start: Option<Instant>,
    exhausted: bool,
}

impl TimeBudget {
    /// A budget of `budget` wall-clock time.
    pub fn new(budget: Duration) -> Self {
        TimeBudget {
            budget,
            start: None,
            exhausted: false,
        }
    }

    /// Whether the budget ended the run.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Time since the first observation.
    pub fn elapsed(&self) -> Duration {
        self.start.map(|s| s.elapsed()).unwrap_or_default()
    }
}

impl TrainObserver for TimeBudget {
    fn period(&self) -> usize {
        1
    }

    fn observe(&mut self, _trainer: &Trainer, moment: Moment) -> Result<Control> {
        let start = *self.start.get_or_insert_with(Instant::now);
        if moment == Moment::Periodic && start.elapsed() >= self.budget {
            self.exhausted = true;
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }
}

/// An observer from a closure: `f(trainer, moment)` every `period` iterations, at the start
/// and at the end.
///
/// ```
/// use cpflow::observer::{Control, FnObserver, Moment};
///
/// let mut seen = Vec::new();
/// let _observer = FnObserver::new(10, |trainer: &cpflow::Trainer, moment: Moment| {
///     if moment == Moment::Periodic {
///         seen.push(trainer.state().iteration);
///     }
///     Ok(Control::Continue)
/// });
/// ```
pub struct FnObserver<F> {
    period: usize,
    f: F,
}

impl<F> FnObserver<F>
where
    F: FnMut(&Trainer, Moment) -> Result<Control>,
{
    /// Calls `f` every `period` iterations (0: only at the start and the end).
    pub fn new(period: usize, f: F) -> Self {
        FnObserver { period, f }
    }
}

impl<F> TrainObserver for FnObserver<F>
where
    F: FnMut(&Trainer, Moment) -> Result<Control>,
{
    fn period(&self) -> usize {
        self.period
    }

    fn observe(&mut self, trainer: &Trainer, moment: Moment) -> Result<Control> {
        (self.f)(trainer, moment)
    }
}
