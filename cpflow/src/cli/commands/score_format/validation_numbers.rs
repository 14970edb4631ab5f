//! What the validation numbers of `cpflow train` are, for `report.json` and the final line:
//! `val_nll` is the trainer's estimator (`train.val_estimator`, by default a 1-probe SLQ
//! estimate) at the validations every `train.val_every` iterations, `val_nll_curve` the exact
//! NLL every `run.eval_every` iterations and at the end. The report named neither estimator,
//! so the same weights showed two "validation" numbers (`val_nll: 3.1795`, `val_nll_curve:
//! [[300, 3.1707]]`) while the console printed "validation exact NLL 3.1707" with no field
//! of that name; and with `train.restore_best = false` the console said it "kept the weights
//! of iteration 251" (the best validation) while the model file held the last ones.

use serde::Serialize;

use crate::{NllEstimator, TrainConfig, TrainReport};

/// The validation fields that `report.json` adds to `val_nll`, `val_iteration` and
/// `val_nll_curve` (flattened into it), and the final line's validation part
/// ([`ValidationNumbers::console_text`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidationNumbers {
    /// The iteration of the weights in `model.safetensors`: `val_iteration` when
    /// `train.restore_best` kept the best validated weights, else the last iteration.
    pub model_iteration: usize,
    /// The estimator of `val_nll` (`train.val_estimator`): `exact` or `slq(P probes, S
    /// steps)`; `null` without validation (`train.val_every = 0`).
    pub val_nll_estimator: Option<String>,
    /// The estimator of `val_nll_curve`: `exact`.
    pub val_nll_curve_estimator: String,
    /// The exact validation NLL of the weights in `model.safetensors` (the curve's point at
    /// `model_iteration`): what the final line calls "validation exact NLL"; `null` when the
    /// curve has no point there (weights kept from a validation between its points).
    pub val_nll_exact: Option<f64>,
    /// `val_nll`, `val_iteration` and the iterations run, for the final line.
    #[serde(skip)]
    val_nll: Option<f64>,
    #[serde(skip)]
    val_iteration: Option<usize>,
    #[serde(skip)]
    iterations: usize,
}

/// The name of an NLL estimator in reports: `exact`, `slq(1 probe, 10 steps)`.
///
/// The SLQ estimate uses `min(steps, dim)` Lanczos steps; the configured count is named.
pub fn estimator_name(e: &NllEstimator) -> String {
    match e {
        NllEstimator::Exact => "exact".into(),
        NllEstimator::Slq(p) => format!(
            "slq({} probe{}, {} steps)",
            p.probes,
            if p.probes == 1 { "" } else { "s" },
            p.steps
        ),
    }
}

impl ValidationNumbers {
    /// The numbers of a finished run of `train` (the trainer's settings) that ended with
    /// `report`, whose curve of `curve_estimator` has the points `curve`.
    pub fn new(
        train: &TrainConfig,
        report: &TrainReport,
        curve: &[(usize, f64)],
        curve_estimator: &NllEstimator,
    ) -> Self {
        // A finished run with validation and `restore_best` keeps the better of its best
        // validated and last weights ([`TrainReport::best_iteration`]); otherwise the last.
        let model_iteration = match report.best_iteration {
            Some(i) if train.restore_best && train.val_every > 0 => i,
            _ => report.iterations,
        };
        let val_nll_exact = match curve_estimator {
            NllEstimator::Exact => curve
                .iter()
                .rev()
                .find(|p| p.0 == model_iteration)
                .map(|p| p.1),
            NllEstimator::Slq(_) => None,
        };
        ValidationNumbers {
            model_iteration,
            val_nll_estimator: report
                .best_val_nll
                .map(|_| estimator_name(&train.val_estimator)),
            val_nll_curve_estimator: estimator_name(curve_estimator),
            val_nll_exact,
            val_nll: report.best_val_nll,
            val_iteration: report.best_iteration,
            iterations: report.iterations,
        }
    }

    /// The final line's validation part, named as `report.json` names it: `; validation
    /// exact NLL 3.1707` (`val_nll_exact`), `; kept the weights of iteration 251 (validation
    /// NLL 3.2268 by slq(1 probe, 10 steps))` (`val_nll` and its estimator), or nothing.
    pub fn console_text(&self) -> String {
        let val_nll = match (self.val_nll, &self.val_nll_estimator) {
            // `val_nll` is of the model's weights only when they are its iteration's.
            (Some(v), Some(e)) if self.val_iteration == Some(self.model_iteration) => {
                Some(format!("validation NLL {} by {e}", super::score(v, 4)))
            }
            _ => None,
        };
        let number = match self.val_nll_exact {
            Some(x) => Some(format!("validation exact NLL {}", super::score(x, 4))),
            None => val_nll,
        };
        match number {
            Some(n) if self.model_iteration != self.iterations => {
                format!(
                    "; kept the weights of iteration {} ({n})",
                    self.model_iteration
                )
            }
            Some(n) => format!("; {n}"),
            None if self.model_iteration != self.iterations => {
                format!("; kept the weights of iteration {}", self.model_iteration)
            }
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SlqConfig, StopReason};

    fn report(iterations: usize, best: Option<(usize, f64)>) -> TrainReport {
        TrainReport {
            iterations,
            final_loss: 0.0,
            best_val_nll: best.map(|b| b.1),
            best_iteration: best.map(|b| b.0),
            stopped_early: false,
            stop_reason: StopReason::MaxIterations,
            wall_time_s: 0.0,
            mean_cg_iterations: 0.0,
            cg_converged: None,
            cg_unconverged_steps: 0,
            history: Vec::new(),
        }
    }

    fn train(val_every: usize, restore_best: bool) -> TrainConfig {
        TrainConfig {
            val_every,
            restore_best,
            ..TrainConfig::default()
        }
    }

    /// The audit's run (`--iters 300 --set train.val_every=100`): `val_nll` is the 1-probe
    /// SLQ estimate, the curve's last point the exact NLL of the same (last) weights; the
    /// report names both estimators and has the exact number the console prints.
    #[test]
    fn the_slq_and_exact_numbers_are_named() {
        assert_eq!(
            estimator_name(&NllEstimator::default()),
            "slq(1 probe, 10 steps)"
        );
        let three = NllEstimator::Slq(SlqConfig {
            probes: 3,
            steps: 7,
        });
        assert_eq!(estimator_name(&three), "slq(3 probes, 7 steps)");
        let curve = [(300, 3.1707)];
        let v = ValidationNumbers::new(
            &train(100, true),
            &report(300, Some((300, 3.1795))),
            &curve,
            &NllEstimator::Exact,
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "model_iteration": 300,
                "val_nll_estimator": "slq(1 probe, 10 steps)",
                "val_nll_curve_estimator": "exact",
                "val_nll_exact": 3.1707,
            })
        );
        assert_eq!(v.console_text(), "; validation exact NLL 3.1707");
    }

    /// Without validation (`val_every = 0`) `val_nll` is null, and the exact end-of-run
    /// number the console prints is `val_nll_exact`.
    #[test]
    fn without_validation_the_exact_number_has_its_field() {
        let v = ValidationNumbers::new(
            &train(0, true),
            &report(300, None),
            &[(100, 3.5), (300, 3.1707)],
            &NllEstimator::Exact,
        );
        assert_eq!(v.val_nll_estimator, None);
        assert_eq!((v.model_iteration, v.val_nll_exact), (300, Some(3.1707)));
        assert_eq!(v.console_text(), "; validation exact NLL 3.1707");
        // No validation rows at all: no curve, nothing to print.
        let none =
            ValidationNumbers::new(&train(0, true), &report(3, None), &[], &NllEstimator::Exact);
        assert_eq!(
            (none.val_nll_exact, none.console_text()),
            (None, String::new())
        );
    }

    /// Weights kept from an earlier validation (251) that the exact curve (every 50) has no
    /// point at: the console names `val_nll`'s estimator, and with a point there, the exact
    /// number.
    #[test]
    fn kept_weights_are_named_with_their_estimator() {
        let curve = [(250, 3.2077), (300, 3.1707)];
        let v = ValidationNumbers::new(
            &train(50, true),
            &report(300, Some((251, 3.2268))),
            &curve,
            &NllEstimator::Exact,
        );
        assert_eq!((v.model_iteration, v.val_nll_exact), (251, None));
        assert_eq!(
            v.console_text(),
            "; kept the weights of iteration 251 (validation NLL 3.2268 by slq(1 probe, 10 steps))"
        );
        let on_curve = ValidationNumbers::new(
            &train(50, true),
            &report(300, Some((250, 3.2268))),
            &curve,
            &NllEstimator::Exact,
        );
        assert_eq!(
            on_curve.console_text(),
            "; kept the weights of iteration 250 (validation exact NLL 3.2077)"
        );
    }

    /// As `train`'s report uses it: built from the run's optional exact curve and flattened
    /// into the report, whose other fields stay as they are.
    #[test]
    fn flattened_into_the_report() {
        #[derive(Serialize)]
        struct Report {
            val_nll: Option<f64>,
            #[serde(flatten)]
            validation: ValidationNumbers,
            val_nll_curve: Vec<(usize, f64)>,
        }
        let curve: Option<crate::NllCurve> = None;
        let rep = report(4, None);
        let r = Report {
            val_nll: rep.best_val_nll,
            validation: ValidationNumbers::new(
                &train(0, true),
                &rep,
                curve.as_ref().map_or(&[][..], |c| c.points()),
                &NllEstimator::Exact,
            ),
            val_nll_curve: curve.map(|c| c.into_points()).unwrap_or_default(),
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "val_nll": null,
                "model_iteration": 4,
                "val_nll_estimator": null,
                "val_nll_curve_estimator": "exact",
                "val_nll_exact": null,
                "val_nll_curve": [],
            })
        );
    }

    /// `train.restore_best = false`: the model holds the last weights, whatever the best
    /// validation was (the console said it "kept the weights of iteration 251").
    #[test]
    fn without_restore_best_the_last_weights_are_the_model() {
        let v = ValidationNumbers::new(
            &train(50, false),
            &report(300, Some((251, 3.2268))),
            &[(250, 3.2077), (300, 3.1707)],
            &NllEstimator::Exact,
        );
        assert_eq!((v.model_iteration, v.val_nll_exact), (300, Some(3.1707)));
        assert_eq!(v.console_text(), "; validation exact NLL 3.1707");
    }
}
