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
    /// The exact validation NLL of the weights in `model.safetensors`: what the final line
    /// calls "validation exact NLL". The curve's point at `model_iteration`, or, when the
    /// curve has none there (weights kept from a validation between its points), `val_nll`
    /// when `train.val_estimator` is exact (the same weights' exact NLL on the same rows),
    /// else those weights scored at the end of the run
    /// ([`ValidationNumbers::with_model_exact`]); `null` without validation rows.
    pub val_nll_exact: Option<f64>,
}

impl ValidationNumbers {
    /// The numbers of a finished run of `train` (the trainer's settings) that ended with
    /// `report`, whose exact NLL curve (`val_nll_curve`) has the points `curve`.
    pub fn new(train: &TrainConfig, report: &TrainReport, curve: &[(usize, f64)]) -> Self {
        // A finished run with validation and `restore_best` keeps the better of its best
        // validated and last weights ([`TrainReport::best_iteration`]); otherwise the last.
        let model_iteration = match report.best_iteration {
            Some(i) if train.restore_best && train.val_every > 0 => i,
            _ => report.iterations,
        };
        let on_curve = curve
            .iter()
            .rev()
            .find(|p| p.0 == model_iteration)
            .map(|p| p.1);
        // Off the curve, an exact trainer's validation of the model's weights is their exact
        // NLL on the same rows: `train` need not score them again. The two can differ only
        // by their chunks' summation order when `train.eval_batch_size` is not the curve's
        // 1024 rows (by default they are the same chunks and the same number).
        let validated_exact = match (&train.val_estimator, report.best_iteration) {
            (NllEstimator::Exact, Some(i)) if i == model_iteration => report.best_val_nll,
            _ => None,
        };
        let val_nll_exact = on_curve.or(validated_exact);
        ValidationNumbers {
            model_iteration,
            val_nll_estimator: report.best_val_nll.map(|_| train.val_estimator.to_string()),
            val_nll_curve_estimator: NllEstimator::Exact.to_string(),
            val_nll_exact,
        }
    }

    /// Whether the exact validation NLL of the model's weights is still to be scored: the
    /// curve has no point at `model_iteration`, and the trainer's
    /// validation there was not exact.
    pub fn lacks_model_exact(&self) -> bool {
        self.val_nll_exact.is_none()
    }

    /// These numbers with `val_nll_exact` = `nll`, the exact validation NLL of the model's
    /// weights scored after training (when [`ValidationNumbers::lacks_model_exact`]).
    pub fn with_model_exact(self, nll: f64) -> Self {
        ValidationNumbers {
            val_nll_exact: Some(nll),
            ..self
        }
    }

    /// The final line's validation part, named as `report.json` names it: `; validation
    /// exact NLL 3.1707` (`val_nll_exact`), `; kept the weights of iteration 251 (validation
    /// NLL 3.2268 by slq(1 probe, 10 steps))` (`val_nll` and its estimator), or nothing.
    /// `val_nll`, `val_iteration` and `iterations` are the report's (`TrainSummary`'s).
    pub fn console_text(
        &self,
        val_nll: Option<f64>,
        val_iteration: Option<usize>,
        iterations: usize,
    ) -> String {
        let val_nll = match (val_nll, &self.val_nll_estimator) {
            // `val_nll` is of the model's weights only when they are its iteration's.
            (Some(v), Some(e)) if val_iteration == Some(self.model_iteration) => {
                Some(format!("validation NLL {} by {e}", super::score(v, 4)))
            }
            _ => None,
        };
        let number = match self.val_nll_exact {
            Some(x) => Some(format!("validation exact NLL {}", super::score(x, 4))),
            None => val_nll,
        };
        match number {
            Some(n) if self.model_iteration != iterations => {
                format!(
                    "; kept the weights of iteration {} ({n})",
                    self.model_iteration
                )
            }
            Some(n) => format!("; {n}"),
            None if self.model_iteration != iterations => {
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

    /// The numbers of a run with an exact curve, and their final-line text given the
    /// report's `val_nll`, `val_iteration` and iterations (as `train`'s final line gives them).
    fn numbers(
        train: &TrainConfig,
        report: &TrainReport,
        curve: &[(usize, f64)],
    ) -> (ValidationNumbers, String) {
        let v = ValidationNumbers::new(train, report, curve);
        let text = v.console_text(
            report.best_val_nll,
            report.best_iteration,
            report.iterations,
        );
        (v, text)
    }

    /// The audit's run (`--iters 300 --set train.val_every=100`): `val_nll` is the 1-probe
    /// SLQ estimate, the curve's last point the exact NLL of the same (last) weights; the
    /// report names both estimators and has the exact number the console prints.
    #[test]
    fn the_slq_and_exact_numbers_are_named() {
        assert_eq!(
            NllEstimator::default().to_string(),
            "slq(1 probe, 10 steps)"
        );
        let three = NllEstimator::Slq(SlqConfig {
            probes: 3,
            steps: 7,
        });
        assert_eq!(three.to_string(), "slq(3 probes, 7 steps)");
        let curve = [(300, 3.1707)];
        let (v, text) = numbers(&train(100, true), &report(300, Some((300, 3.1795))), &curve);
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
        assert_eq!(text, "; validation exact NLL 3.1707");
    }

    /// Without validation (`val_every = 0`) `val_nll` is null, and the exact end-of-run
    /// number the console prints is `val_nll_exact`.
    #[test]
    fn without_validation_the_exact_number_has_its_field() {
        let (v, text) = numbers(
            &train(0, true),
            &report(300, None),
            &[(100, 3.5), (300, 3.1707)],
        );
        assert_eq!(v.val_nll_estimator, None);
        assert_eq!((v.model_iteration, v.val_nll_exact), (300, Some(3.1707)));
        assert_eq!(text, "; validation exact NLL 3.1707");
        // No validation rows at all: no curve, nothing to print.
        let (none, text) = numbers(&train(0, true), &report(3, None), &[]);
        assert_eq!((none.val_nll_exact, text), (None, String::new()));
    }

    /// An exact trainer (`train.val_estimator = "exact"`) that kept the weights of a
    /// validation off the curve (251) validated them exactly on the same rows: that is their
    /// `val_nll_exact`, nothing is left to score, and the final line prints it once, as the
    /// exact number. With restore_best off, the last weights' validation (300) is used only
    /// where the curve has no point. The old code left it to be scored again.
    #[test]
    fn an_exact_trainers_validation_is_the_exact_number() {
        let exact = TrainConfig {
            val_estimator: NllEstimator::Exact,
            ..train(50, true)
        };
        let curve = [(250, 3.2077), (300, 3.1707)];
        let rep = report(300, Some((251, 3.2011)));
        let (v, text) = numbers(&exact, &rep, &curve);
        assert_eq!((v.model_iteration, v.val_nll_exact), (251, Some(3.2011)));
        assert!(!v.lacks_model_exact());
        assert_eq!(v.val_nll_estimator.as_deref(), Some("exact"));
        assert_eq!(
            text,
            "; kept the weights of iteration 251 (validation exact NLL 3.2011)"
        );
        // On the curve, the curve's number (the same with the default eval_batch_size).
        let (v, _) = numbers(&exact, &report(300, Some((250, 3.2))), &curve);
        assert_eq!(v.val_nll_exact, Some(3.2077));
        // Without restore_best the model is the last weights: the best validation (251) is
        // not theirs, and neither is an SLQ validation of the kept weights.
        let last = TrainConfig {
            restore_best: false,
            ..exact.clone()
        };
        let (v, _) = numbers(&last, &report(320, Some((251, 3.2011))), &curve);
        assert_eq!((v.model_iteration, v.val_nll_exact), (320, None));
        let (v, _) = numbers(&last, &report(320, Some((320, 3.19))), &curve);
        assert_eq!(v.val_nll_exact, Some(3.19));
        let (v, _) = numbers(&train(50, true), &rep, &curve);
        assert!(v.lacks_model_exact());
    }

    /// Weights kept from an earlier validation (251) that the exact curve (every 50) has no
    /// point at: the exact number is missing until those weights are scored (`train` does it
    /// after training), then the console prints it; without it, it names `val_nll`'s
    /// estimator. With a point there, the curve's exact number.
    #[test]
    fn kept_weights_are_named_with_their_estimator() {
        let curve = [(250, 3.2077), (300, 3.1707)];
        let rep = report(300, Some((251, 3.2268)));
        let (v, text) = numbers(&train(50, true), &rep, &curve);
        assert_eq!((v.model_iteration, v.val_nll_exact), (251, None));
        assert!(v.lacks_model_exact());
        assert_eq!(
            text,
            "; kept the weights of iteration 251 (validation NLL 3.2268 by slq(1 probe, 10 steps))"
        );
        let scored = v.with_model_exact(3.2111);
        assert!(!scored.lacks_model_exact());
        assert_eq!(scored.val_nll_exact, Some(3.2111));
        assert_eq!(
            scored.console_text(rep.best_val_nll, rep.best_iteration, rep.iterations),
            "; kept the weights of iteration 251 (validation exact NLL 3.2111)"
        );
        let (on_curve, text) = numbers(&train(50, true), &report(300, Some((250, 3.2268))), &curve);
        assert!(!on_curve.lacks_model_exact());
        assert_eq!(
            text,
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
        let (v, text) = numbers(
            &train(50, false),
            &report(300, Some((251, 3.2268))),
            &[(250, 3.2077), (300, 3.1707)],
        );
        assert_eq!((v.model_iteration, v.val_nll_exact), (300, Some(3.1707)));
        assert_eq!(text, "; validation exact NLL 3.1707");
    }
}
