//! Unconverged CG (capped by `cg_max_iters`) is counted in the report and metrics and warned
//! about at most once per log period; the defaults and the exact objective say nothing.

use crate::flow_common::*;
use candle_core::Device;
use cpflow::{Dataset, FloatType, Flow, FlowConfig, LrSchedule, RunOptions, TrainConfig, Trainer};

use super::tmpdir;

/// A tracing subscriber (this thread's, through `with_default`) keeping the messages of the
/// WARN and ERROR events.
struct Warnings(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0.lock().unwrap().push(m.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// `f`'s result and the WARN messages it logged on this thread.
fn with_warnings<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = tracing::subscriber::with_default(Warnings(kept.clone()), f);
    let warnings = kept.lock().unwrap().clone();
    (out, warnings)
}

/// CG stopped by its cap (`cg_max_iters = 1`, `cg_atol = 1e-14`, which QA found silent) is
/// counted and warned about: every step of 16 systems leaves some unconverged, the report and
/// each metrics record carry the converged fraction (the records' windows, weighted by their
/// steps, add up to the report's), and the warning comes at step 1, then once per log period
/// (4 steps) with what happened since. With the defaults (d = 2: two CG iterations solve the
/// 2×2 systems to rounding, far below atol = 1e-3) nothing is unconverged and nothing is
/// said; the exact objective solves no systems.
#[test]
fn unconverged_cg_is_counted_recorded_and_warned_about_at_most_once_per_log_period() {
    let train = Dataset::new(data(64, 2, 71));
    let flow = || {
        let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2))
            .with_float(FloatType::F64)
            .with_init_seed(4);
        Flow::new(cfg, &Device::Cpu).unwrap()
    };
    let config = |surrogate, objective| TrainConfig {
        batch_size: 16,
        max_iterations: 9,
        lr_schedule: LrSchedule::Constant,
        val_every: 0,
        train_slq_every: 0,
        log_every: 4,
        surrogate,
        objective,
        seed: 3,
        ..TrainConfig::default()
    };
    let capped = cpflow::SurrogateParams {
        cg_max_iters: Some(1),
        cg_atol: 1e-14,
        ..Default::default()
    };
    let dir = tmpdir("cg-capped");
    let (rep, warnings) = with_warnings(|| {
        Trainer::new(
            flow(),
            config(capped.clone(), cpflow::Objective::CgSurrogate),
        )
        .unwrap()
        .with_options(RunOptions {
            out_dir: Some(dir.clone()),
            progress_bar: false,
            ..RunOptions::default()
        })
        .fit(&train, None)
        .unwrap()
    });
    assert_eq!(rep.cg_unconverged_steps, 9);
    let fraction = rep.cg_converged.unwrap();
    assert!((0.0..1.0).contains(&fraction), "{fraction}");
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    for (w, part) in
        warnings
            .iter()
            .zip(["at step 1:", "in 4 steps (2 to 5)", "in 4 steps (6 to 9)"])
    {
        assert!(
            w.contains(part) && w.contains("train.surrogate.cg_max_iters = 1 iterations"),
            "{part}: {w}"
        );
    }
    let recs = cpflow::metrics::read_metrics(&dir.join("metrics.jsonl")).unwrap();
    assert_eq!(recs, rep.history);
    let its: Vec<usize> = recs.iter().map(|r| r.iteration).collect();
    assert_eq!(its, [1, 5, 9]);
    // Windows of 1, 4 and 4 steps of 16 systems each.
    let windows: Vec<f64> = recs.iter().map(|r| r.cg_converged.unwrap()).collect();
    assert!(windows.iter().all(|f| *f < 1.0), "{windows:?}");
    let weighted = (windows[0] + 4.0 * windows[1] + 4.0 * windows[2]) / 9.0;
    // Ratios of counts below 200: exact up to a few roundings.
    assert!(
        (weighted - fraction).abs() < 1e-12,
        "{weighted} vs {fraction}"
    );
    std::fs::remove_dir_all(&dir).ok();

    let (rep, warnings) = with_warnings(|| {
        let cfg = config(Default::default(), cpflow::Objective::CgSurrogate);
        Trainer::new(flow(), cfg)
            .unwrap()
            .fit(&train, None)
            .unwrap()
    });
    assert_eq!((rep.cg_converged, rep.cg_unconverged_steps), (Some(1.0), 0));
    assert!(rep.history.iter().all(|r| r.cg_converged == Some(1.0)));
    assert!(warnings.is_empty(), "{warnings:#?}");

    let cfg = config(capped, cpflow::Objective::ExactNll);
    let rep = Trainer::new(flow(), cfg)
        .unwrap()
        .fit(&train, None)
        .unwrap();
    assert_eq!((rep.cg_converged, rep.cg_unconverged_steps), (None, 0));
    assert!(rep.history.iter().all(|r| r.cg_converged.is_none()));
}
