//! Training-level checks: the surrogate's gradient is the exact NLL gradient in expectation,
//! resume is exact, NaN stops training without touching the checkpoint, a trained 2-D
//! model's density integrates to one, early stopping restores the best weights.

use crate::flow_common::*;
use candle_core::{DType, Device, Tensor};
use cpflow::{
    CpflowError, Dataset, FloatType, Flow, FlowConfig, GaussianPrior, LrSchedule, NllEstimator,
    RunOptions, TrainConfig, Trainer,
};
use rand::SeedableRng;

/// For d ≤ 10 the probe-averaged gradient of the surrogate loss equals the gradient of the
/// exact NLL. With P probes per sample the Hutchinson error is O(1/√(B·P)); with B = 8,
/// P = 4000 it is ≈ 0.5 % of the log-det gradient here, so a 3 % tolerance leaves margin while
/// the log-det part of the gradient is large (checked: dropping it moves the gradient by far
/// more than the tolerance).
#[test]
fn surrogate_gradient_matches_exact_nll_gradient() {
    let flow = two_block_flow(3, 21);
    let x = data(8, 3, 22);
    let pair = surrogate_and_exact_gradients(&flow, &x, 23);
    assert_eq!(pair.cg_converged, 2 * 8 * 4000); // two blocks
    let exact = pair.exact.clone();
    let rel = pair.relative_error();
    println!("surrogate vs exact NLL gradient: relative error {rel:.4}");
    assert!(rel < 0.03, "relative gradient error {rel}");
    // Without the log-det terms (prior term only) the gradient is far from the exact one.
    let (z, _) = {
        let mut h = x.clone();
        for l in flow.layers() {
            h = match l {
                cpflow::Layer::ActNorm(a) => a.forward(&h).unwrap().0,
                cpflow::Layer::Cpf(b) => b.forward(&h, None).unwrap(),
            };
        }
        (h, ())
    };
    let prior_only = grads_of(
        &flow,
        &flow
            .prior()
            .log_prob(&z)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap(),
    );
    let mut padded = Vec::new();
    for (k, g) in &exact {
        let p = prior_only
            .iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
            .unwrap_or(vec![0.0; g.len()]);
        padded.push((k.clone(), p));
    }
    let rel_prior = diff_norm(&padded, &exact) / norm(&exact);
    println!("prior-only gradient vs exact: relative difference {rel_prior:.4}");
    assert!(rel_prior > 0.2);
}

fn small_train_config(iters: usize) -> TrainConfig {
    TrainConfig {
        batch_size: 16,
        max_iterations: iters,
        lr_schedule: LrSchedule::Step {
            step_size: 5,
            gamma: 0.7,
        },
        val_every: 4,
        val_estimator: NllEstimator::Exact,
        early_stopping: None,
        train_slq_every: 3,
        log_every: 2,
        clip_grad_norm: Some(50.0),
        seed: 5,
        ..TrainConfig::default()
    }
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

/// Training 2N steps equals training N, checkpointing, resuming and training N more,
/// bit for bit (f64, CPU).
#[test]
fn resume_is_bit_for_bit() {
    let train = Dataset::new(data(72, 2, 31)); // 72 = 4.5 batches: epochs end mid-run
    let val = Dataset::new(data(20, 2, 32));
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2))
        .with_float(FloatType::F64)
        .with_init_seed(3);
    let n = 7;

    let mut straight = Trainer::new(
        Flow::new(cfg.clone(), &Device::Cpu).unwrap(),
        small_train_config(2 * n),
    )
    .unwrap();
    let rep = straight.fit(&train, Some(&val)).unwrap();
    assert_eq!(rep.iterations, 2 * n);

    let dir = tmpdir("resume");
    let opts = RunOptions {
        out_dir: Some(dir.clone()),
        progress_bar: false,
        ..RunOptions::default()
    };
    let mut first = Trainer::new(
        Flow::new(cfg, &Device::Cpu).unwrap(),
        small_train_config(2 * n),
    )
    .unwrap()
    .with_options(opts.clone());
    first.fit_steps(&train, Some(&val), n).unwrap();
    drop(first);
    let ck = dir.join("checkpoint.safetensors");
    let mut resumed = Trainer::resume(&ck, &Device::Cpu, None)
        .unwrap()
        .with_options(opts);
    assert_eq!(resumed.state().iteration, n);
    let rep2 = resumed.fit(&train, Some(&val)).unwrap();
    assert_eq!(rep2.iterations, 2 * n);
    assert_eq!(rep2.best_val_nll, rep.best_val_nll);
    for ((ka, a), (kb, b)) in straight
        .flow()
        .weight_tensors()
        .iter()
        .zip(resumed.flow().weight_tensors().iter())
    {
        assert_eq!(ka, kb);
        assert_eq!(max_abs_diff(a, b), 0.0, "{ka} differs after resume");
    }
    // The metrics file has records from both halves.
    let recs = cpflow::metrics::read_metrics(&dir.join("metrics.jsonl")).unwrap();
    assert!(recs.iter().any(|r| r.iteration <= n) && recs.iter().any(|r| r.iteration > n));
    assert!(
        recs.iter().any(|r| r.val_nll.is_some()) && recs.iter().any(|r| r.train_nll_slq.is_some())
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A NaN in the weights makes the loss NaN: training stops with `NonFinite` and the
/// checkpoint on disk is the last good one.
#[test]
fn nan_stops_training_and_keeps_last_good_checkpoint() {
    let train = Dataset::new(data(64, 2, 41));
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
    let dir = tmpdir("nan");
    let opts = RunOptions {
        out_dir: Some(dir.clone()),
        progress_bar: false,
        ..RunOptions::default()
    };
    let mut tc = small_train_config(100);
    tc.val_every = 0;
    tc.checkpoint_every = 3;
    let mut tr = Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), tc)
        .unwrap()
        .with_options(opts);
    tr.fit_steps(&train, None, 3).unwrap();
    let (name, var) = tr
        .flow()
        .named_vars()
        .into_iter()
        .find(|(k, _)| k.ends_with("w1"))
        .unwrap();
    var.set(&Tensor::new(&[f64::NAN], &Device::Cpu).unwrap())
        .unwrap();
    match tr.fit(&train, None) {
        Err(e @ CpflowError::NonFinite { .. }) => {
            let msg = e.to_string();
            let CpflowError::NonFinite {
                what,
                step,
                checkpoint,
            } = e
            else {
                unreachable!()
            };
            assert!(what.contains("loss"), "{what}");
            // Steps 1-3 went well; the 4th (1-based, as metrics.jsonl counts) failed.
            assert_eq!(step, 4);
            assert!(msg.contains("at training step 4"), "{msg}");
            let ck = dir.join("checkpoint.safetensors");
            assert_eq!(checkpoint.as_deref(), Some(ck.as_path()));
            assert!(msg.contains(&ck.display().to_string()), "{msg}");
        }
        other => panic!("expected NonFinite, got {:?}", other.map(|r| r.iterations)),
    }
    let ck = cpflow::load_checkpoint(&dir.join("checkpoint.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(ck.meta.state.unwrap().iteration, 3);
    let w1 = ck.tensors.get(&name).unwrap().to_vec1::<f64>().unwrap();
    assert!(w1[0].is_finite());
    std::fs::remove_dir_all(&dir).ok();
}

/// Without an output directory no checkpoint exists: the error says so instead of promising
/// one.
#[test]
fn nan_without_checkpoint_says_there_is_none() {
    let train = Dataset::new(data(64, 2, 42));
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
    let mut tc = small_train_config(10);
    tc.val_every = 0;
    let mut tr = Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), tc).unwrap();
    tr.fit_steps(&train, None, 1).unwrap();
    let (_, var) = tr
        .flow()
        .named_vars()
        .into_iter()
        .find(|(k, _)| k.ends_with("w1"))
        .unwrap();
    var.set(&Tensor::new(&[f64::NAN], &Device::Cpu).unwrap())
        .unwrap();
    match tr.fit(&train, None) {
        Err(e @ CpflowError::NonFinite { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("no checkpoint"), "{msg}");
            assert!(!msg.contains("is kept"), "{msg}");
        }
        other => panic!("expected NonFinite, got {:?}", other.map(|r| r.iterations)),
    }
}

/// Non-finite training data is rejected before training starts.
#[test]
fn bad_training_data_is_rejected() {
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
    let mut tr =
        Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), small_train_config(5)).unwrap();
    let bad =
        Dataset::new(Tensor::new(&[[0.0f64, 1.0], [f64::INFINITY, 0.0]], &Device::Cpu).unwrap());
    assert!(matches!(
        tr.fit(&bad, None),
        Err(CpflowError::InvalidInput(_))
    ));
    let wrong = Dataset::new(Tensor::zeros((8, 3), DType::F64, &Device::Cpu).unwrap());
    assert!(matches!(
        tr.fit(&wrong, None),
        Err(CpflowError::InvalidInput(_))
    ));
}

/// Early stopping: with a zero learning rate nothing improves after the first validation, so
/// training stops after `patience + 1` non-improving validations and the best weights (those
/// of the first validation) are restored.
#[test]
fn early_stopping_stops_and_restores_best() {
    let train = Dataset::new(data(64, 2, 51));
    let val = Dataset::new(data(32, 2, 52));
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
    let mut tc = small_train_config(1000);
    tc.val_every = 1;
    tc.early_stopping = Some(3);
    tc.lr_schedule = LrSchedule::Plateau;
    tc.adam.lr = 1e-2;
    let mut frozen = tc.clone();
    frozen.adam.lr = 0.0;
    frozen.adam.weight_decay = 0.0;
    let mut tr0 = Trainer::new(Flow::new(cfg.clone(), &Device::Cpu).unwrap(), frozen).unwrap();
    let rep0 = tr0.fit(&train, Some(&val)).unwrap();
    // Validations after steps 0..=4: the first sets the best, the next four do not improve.
    assert!(rep0.stopped_early);
    assert_eq!(rep0.iterations, 5);
    let mut tr = Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), tc).unwrap();
    let rep = tr.fit(&train, Some(&val)).unwrap();
    // Whatever happened, the final weights are the best ones: re-evaluating gives best_val_nll.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let nll = cpflow::mean_nll(tr.flow(), &val, &NllEstimator::Exact, 1024, &mut rng).unwrap();
    assert!(
        (nll - rep.best_val_nll.unwrap()).abs() < 1e-12,
        "{nll} vs {:?}",
        rep.best_val_nll
    );
}

/// When the end of a run keeps an earlier iteration's weights (`restore_best`), a validation
/// curve does not score them as a point of the last iteration: it ends at the trajectory's
/// last periodic point.
#[test]
fn a_curve_does_not_label_kept_weights_with_the_last_iteration() {
    // Training on the ring of 8 Gaussians, validating at its empty centre: the flow starts
    // about Gaussian (densest at the centre) and learns the ring, so the validation NLL rises,
    // the best validation is the first, and the end restores it.
    let mut rng = rand::rngs::StdRng::seed_from_u64(61);
    let pts = cpflow::toy::Toy::EightGaussians.sample(256, &mut rng);
    let train =
        Dataset::new(cpflow::toy::points_to_tensor(&pts, DType::F64, &Device::Cpu).unwrap());
    let val = Dataset::new((data(32, 2, 52) * 0.02).unwrap());
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
    let mut tc = small_train_config(30);
    tc.val_every = 2;
    tc.early_stopping = None;
    tc.val_estimator = NllEstimator::Exact;
    tc.adam.lr = 1e-2;
    let mut tr = Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), tc).unwrap();
    let mut curve = cpflow::observer::NllCurve::new(val.clone(), NllEstimator::Exact, 4);
    let rep = tr
        .fit_observed(&train, Some(&val), &mut [&mut curve])
        .unwrap();
    let kept = rep.best_iteration.unwrap();
    assert!(kept < rep.iterations, "no restore: {rep:?}");
    assert_eq!(tr.weights_iteration(), kept);
    let last = curve.points().last().unwrap().0;
    assert_eq!(last, 28, "{:?}", curve.points());
}

/// An NLL curve whose data set does not fit the flow (3 columns for a 2-D flow, or a
/// context with fewer rows than the data) is refused before the first step, naming the
/// curve. Before, the run trained until the curve's first point (iteration 4) and then
/// failed with the flow's message alone.
#[test]
fn an_nll_curve_on_data_that_does_not_fit_is_refused_before_training() {
    let train = Dataset::new(data(64, 2, 3));
    let bad_sets = [
        Dataset::new(data(16, 3, 4)),
        Dataset::with_context(data(16, 2, 4), data(8, 1, 5)),
    ];
    for bad in bad_sets {
        let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
        let mut tr =
            Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), small_train_config(8)).unwrap();
        let mut curve = cpflow::observer::NllCurve::new(bad, NllEstimator::Exact, 4);
        let err = tr
            .fit_observed(&train, None, &mut [&mut curve])
            .unwrap_err();
        assert!(
            matches!(&err, CpflowError::InvalidInput(m) if m.starts_with("NLL curve on the validation set: ")),
            "{err}"
        );
        assert_eq!(tr.state().iteration, 0);
        assert!(curve.points().is_empty());
    }
}

/// A trained 2-D model's density integrates to 1 ± 0.01 over a grid (midpoint rule, spacing
/// 0.08 on [−10, 10]²; the mass outside is < 1e-6 for the standard prior after ActNorm).
#[test]
fn trained_density_integrates_to_one() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(61);
    let pts = cpflow::toy::Toy::EightGaussians.sample(4096, &mut rng);
    let train =
        Dataset::new(cpflow::toy::points_to_tensor(&pts, DType::F64, &Device::Cpu).unwrap());
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 16, 3))
        .with_float(FloatType::F64)
        .with_prior(GaussianPrior::standard());
    let tc = TrainConfig {
        batch_size: 128,
        max_iterations: 150,
        lr_schedule: LrSchedule::Constant,
        adam: cpflow::AdamParams {
            lr: 5e-3,
            ..Default::default()
        },
        val_every: 0,
        train_slq_every: 0,
        ..TrainConfig::default()
    };
    let mut tr = Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), tc).unwrap();
    tr.fit(&train, None).unwrap();
    let flow = tr.into_flow();
    let (lo, hi, h) = (-10.0f64, 10.0f64, 0.08f64);
    let n = ((hi - lo) / h).round() as usize;
    let mut g = Vec::with_capacity(n * n * 2);
    for i in 0..n {
        for j in 0..n {
            g.push(lo + (i as f64 + 0.5) * h);
            g.push(lo + (j as f64 + 0.5) * h);
        }
    }
    let grid = Tensor::from_vec(g, (n * n, 2), &Device::Cpu).unwrap();
    let lp = flow
        .log_prob_exact(&grid)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let mass: f64 = lp.iter().map(|l| l.exp()).sum::<f64>() * h * h;
    assert!((mass - 1.0).abs() < 0.01, "∫ p = {mass}");
    // The model learned something: its NLL on the data is well below the initial one.
    let mut r = rand::rngs::StdRng::seed_from_u64(0);
    let nll = cpflow::mean_nll(&flow, &train, &NllEstimator::Exact, 1024, &mut r).unwrap();
    assert!(nll < 3.6, "train NLL {nll}");
}

/// A training or validation set of the wrong width is named in the error (it said "data has 3
/// columns" for either); an evaluation batch size of 0 is an error (it was taken as 1).
#[test]
fn wrong_sets_are_named_and_batch_size_zero_is_refused() {
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
    let train = Dataset::new(data(32, 2, 41));
    let wide = Dataset::new(data(8, 3, 42));
    let mut tr =
        Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), small_train_config(2)).unwrap();
    let e = tr.fit(&train, Some(&wide)).unwrap_err().to_string();
    assert!(e.contains("validation set: data has 3 columns"), "{e}");
    let e = tr.fit(&wide, None).unwrap_err().to_string();
    assert!(e.contains("training set: data has 3 columns"), "{e}");
    tr.fit(&train, None).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let e = cpflow::mean_nll(tr.flow(), &train, &NllEstimator::Exact, 0, &mut rng).unwrap_err();
    assert!(
        e.to_string().contains("batch size must be at least 1"),
        "{e}"
    );
}

/// `nll_estimate`'s mean and standard error equal the two-pass formulas over the rows'
/// exact log-densities, whatever the chunking (1, 5, 37 or 1,000 rows per chunk: the pairwise
/// merge of chunk moments is exact up to rounding, 1e-12 relative), on data shifted by 1e3 so
/// that a naive `Σx² − n·mean²` would lose ~6 digits. A single row has no standard error.
#[test]
fn nll_estimate_matches_two_pass_formulas_for_any_chunking() {
    let cfg = FlowConfig::tabular(3, 2, icnn3(3, 8, 2)).with_float(FloatType::F64);
    let flow = Flow::new(cfg, &Device::Cpu).unwrap();
    let x = data(37, 3, 71);
    flow.initialize(&x).unwrap();
    let x = (x + 1e3).unwrap();
    let nll: Vec<f64> = flow
        .log_prob_exact(&x)
        .unwrap()
        .neg()
        .unwrap()
        .to_vec1()
        .unwrap();
    let n = nll.len() as f64;
    let mean = nll.iter().sum::<f64>() / n;
    let var = nll.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let std_err = (var / n).sqrt();
    let set = Dataset::new(x.clone());
    for chunk in [1, 5, 37, 1000] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let est = cpflow::nll_estimate(&flow, &set, &NllEstimator::Exact, chunk, &mut rng).unwrap();
        assert_eq!(est.n, 37);
        assert!(
            (est.mean - mean).abs() <= 1e-12 * mean.abs(),
            "{chunk}: {est:?} vs {mean}"
        );
        let se = est.std_err.unwrap();
        assert!(
            (se - std_err).abs() <= 1e-10 * std_err,
            "{chunk}: {se} vs {std_err}"
        );
    }
    let one = Dataset::new(x.narrow(0, 0, 1).unwrap());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let est = cpflow::nll_estimate(&flow, &one, &NllEstimator::Exact, 8, &mut rng).unwrap();
    assert_eq!((est.n, est.std_err), (1, None));
    assert!((est.mean - nll[0]).abs() <= 1e-12 * nll[0].abs());
}

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

/// `RunOptions::interrupt` pauses a run after the step in progress, like an observer's pause:
/// `StopReason::Paused` after one step, a checkpoint written, and the resumed run is the
/// uninterrupted one's continuation (same weights as a straight 4-step run).
#[test]
fn the_interrupt_flag_pauses_after_the_step_and_resume_continues() {
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2)).with_float(FloatType::F64);
    let train = Dataset::new(data(64, 2, 91));
    let mut tc = small_train_config(4);
    tc.val_every = 0;
    let dir = tmpdir("interrupt-flag");
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let opts = RunOptions {
        out_dir: Some(dir.clone()),
        interrupt: Some(flag),
        ..RunOptions::default()
    };
    let mut tr = Trainer::new(Flow::new(cfg.clone(), &Device::Cpu).unwrap(), tc.clone())
        .unwrap()
        .with_options(opts);
    let rep = tr.fit(&train, None).unwrap();
    assert_eq!(
        (rep.iterations, rep.stop_reason),
        (1, cpflow::StopReason::Paused)
    );
    let mut resumed =
        Trainer::resume(&dir.join("checkpoint.safetensors"), &Device::Cpu, None).unwrap();
    assert_eq!(resumed.fit(&train, None).unwrap().iterations, 4);
    let mut straight = Trainer::new(Flow::new(cfg, &Device::Cpu).unwrap(), tc).unwrap();
    straight.fit(&train, None).unwrap();
    for ((k, a), (_, b)) in resumed
        .flow()
        .named_vars()
        .iter()
        .zip(straight.flow().named_vars().iter())
    {
        assert_eq!(
            a.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap(),
            b.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap(),
            "{k}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
