//! Tests of `config.rs`: the training configuration's checks name the offending key.

use super::*;

/// A change to a default configuration.
type Edit = Box<dyn Fn(&mut TrainConfig)>;

/// Each setting that used to pass (and then trained with a negative learning rate, failed
/// steps later with a non-finite loss, or ran CG with no iteration) is refused, naming its
/// key; the boundary values a user would expect to pass do.
#[test]
fn optimiser_schedule_and_surrogate_settings_are_checked_by_key() {
    let refused: Vec<(&str, Edit)> = vec![
        (
            "train.lr_schedule.step.gamma",
            Box::new(|c| {
                c.lr_schedule = LrSchedule::Step {
                    step_size: 10,
                    gamma: -1.0,
                }
            }),
        ),
        (
            "train.lr_schedule.step.gamma",
            Box::new(|c| {
                c.lr_schedule = LrSchedule::Step {
                    step_size: 10,
                    gamma: f64::NAN,
                }
            }),
        ),
        (
            "train.lr_schedule.step.gamma",
            Box::new(|c| {
                c.lr_schedule = LrSchedule::Step {
                    step_size: 10,
                    gamma: 0.0,
                }
            }),
        ),
        (
            "train.lr_schedule.step.gamma",
            Box::new(|c| {
                c.lr_schedule = LrSchedule::Step {
                    step_size: 10,
                    gamma: 1.5,
                }
            }),
        ),
        (
            "train.lr_schedule.step.step_size",
            Box::new(|c| {
                c.lr_schedule = LrSchedule::Step {
                    step_size: 0,
                    gamma: 0.5,
                }
            }),
        ),
        (
            "train.lr_schedule.cosine.t_max",
            Box::new(|c| c.lr_schedule = LrSchedule::Cosine { t_max: 0 }),
        ),
        (
            "train.adam.weight_decay",
            Box::new(|c| c.adam.weight_decay = -1.0),
        ),
        (
            "train.adam.weight_decay",
            Box::new(|c| c.adam.weight_decay = f64::INFINITY),
        ),
        ("train.adam.eps", Box::new(|c| c.adam.eps = 0.0)),
        ("train.adam.eps", Box::new(|c| c.adam.eps = f64::NAN)),
        ("train.adam.beta1", Box::new(|c| c.adam.beta1 = 1.5)),
        ("train.adam.beta2", Box::new(|c| c.adam.beta2 = 1.0)),
        ("train.adam.lr", Box::new(|c| c.adam.lr = f64::NAN)),
        ("train.adam.lr", Box::new(|c| c.adam.lr = -1e-3)),
        (
            "train.surrogate.cg_max_iters",
            Box::new(|c| c.surrogate.cg_max_iters = Some(0)),
        ),
        (
            "train.surrogate.cg_atol",
            Box::new(|c| c.surrogate.cg_atol = -1.0),
        ),
        (
            "train.surrogate.cg_rtol",
            Box::new(|c| c.surrogate.cg_rtol = f64::NAN),
        ),
        (
            "train.surrogate.probes",
            Box::new(|c| c.surrogate.probes = 0),
        ),
        (
            "train.train_slq.probes",
            Box::new(|c| c.train_slq.probes = 0),
        ),
        (
            "train.clip_grad_norm",
            Box::new(|c| c.clip_grad_norm = Some(0.0)),
        ),
        ("train.max_iterations", Box::new(|c| c.max_iterations = 0)),
    ];
    for (key, set) in &refused {
        let mut c = TrainConfig::default();
        set(&mut c);
        let e = c.validate().unwrap_err();
        assert!(matches!(e, CpflowError::InvalidConfig(_)), "{key}: {e}");
        assert!(e.to_string().contains(key), "{key}: {e}");
    }
    let accepted: Vec<Edit> = vec![
        Box::new(|c| {
            c.lr_schedule = LrSchedule::Step {
                step_size: 1,
                gamma: 1.0,
            }
        }),
        Box::new(|c| c.lr_schedule = LrSchedule::Cosine { t_max: 1 }),
        Box::new(|c| c.adam.weight_decay = 0.0),
        Box::new(|c| c.adam.lr = 0.0),
        Box::new(|c| (c.adam.beta1, c.adam.beta2) = (0.0, 0.0)),
        Box::new(|c| c.surrogate.cg_max_iters = Some(1)),
        Box::new(|c| (c.surrogate.cg_atol, c.surrogate.cg_rtol) = (0.0, 0.0)),
    ];
    for set in &accepted {
        let mut c = TrainConfig::default();
        set(&mut c);
        c.validate().unwrap();
    }
}

/// The SLQ settings of the training estimate and of the validation estimator are checked
/// with the config (they failed inside `fit` without the key).
#[test]
fn slq_settings_are_checked_by_key() {
    let mut c = TrainConfig::default();
    c.train_slq.steps = 0;
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("train.train_slq.steps must be at least 1"),
        "{e}"
    );
    let mut c = TrainConfig {
        val_estimator: NllEstimator::Slq(SlqConfig {
            probes: 0,
            steps: 10,
        }),
        ..TrainConfig::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("train.val_estimator.slq.probes"), "{e}");
    c.val_estimator = NllEstimator::Slq(SlqConfig::default());
    c.validate().unwrap();
}
