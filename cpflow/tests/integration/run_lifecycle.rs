//! The life of a training run on disk: the final checkpoint holds the last weights (so a
//! resume continues the same trajectory), resumes with another batch or data size work, a
//! fresh run starts a fresh metrics file, observers see and stop runs, a stopped run
//! finishes like one that reached its cap, and a paused run is checkpointed unfinished.

use std::time::Duration;

use crate::flow_common::*;
use candle_core::Device;
use cpflow::{
    Control, Dataset, FloatType, Flow, FlowConfig, FnObserver, Moment, NllCurve, NllEstimator,
    RunOptions, StopReason, TimeBudget, TrainConfig, Trainer, load_checkpoint,
};

fn config(iters: usize) -> TrainConfig {
    TrainConfig {
        batch_size: 16,
        max_iterations: iters,
        lr_schedule: cpflow::LrSchedule::Constant,
        adam: cpflow::AdamParams {
            lr: 2e-2,
            ..Default::default()
        },
        val_every: 4,
        val_estimator: NllEstimator::Exact,
        early_stopping: None,
        train_slq_every: 0,
        log_every: 1,
        restore_best: true,
        seed: 9,
        ..TrainConfig::default()
    }
}

fn flow(seed: u64) -> Flow {
    let cfg = FlowConfig::tabular(2, 1, icnn3(2, 8, 2))
        .with_float(FloatType::F64)
        .with_init_seed(seed);
    Flow::new(cfg, &Device::Cpu).unwrap()
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-life-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

fn opts(dir: &std::path::Path) -> RunOptions {
    RunOptions {
        out_dir: Some(dir.to_path_buf()),
        progress_bar: false,
        ..RunOptions::default()
    }
}

fn model_weights(path: &std::path::Path) -> Vec<(String, Vec<f64>)> {
    let ck = load_checkpoint(path, &Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f64>)> = ck
        .tensors
        .iter()
        .filter(|(k, _)| !k.starts_with("adam.") && !k.starts_with("best."))
        .map(|(k, t)| {
            (
                k.clone(),
                t.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A finished run of N steps, resumed to 2N, ends with the same last weights as a straight
/// run of 2N steps: the final checkpoint holds the last weights (with their optimiser and RNG
/// state), not the best validated ones, which go to `model.safetensors`. With validations at
/// iterations 1 and 5 of the first run and its last weights at 7, the best weights are never
/// the last ones, so a checkpoint of the best weights would put the resume elsewhere.
#[test]
fn final_checkpoint_holds_the_last_weights_and_resume_continues() {
    let train = Dataset::new(data(72, 2, 71));
    let val = Dataset::new(data(24, 2, 72));
    let n = 7;
    let straight_dir = tmpdir("straight");
    let mut straight = Trainer::new(flow(1), config(2 * n))
        .unwrap()
        .with_options(opts(&straight_dir));
    straight.fit(&train, Some(&val)).unwrap();

    let dir = tmpdir("halves");
    let mut first = Trainer::new(flow(1), config(n))
        .unwrap()
        .with_options(opts(&dir));
    let rep = first.fit(&train, Some(&val)).unwrap();
    assert_eq!(rep.stop_reason, StopReason::MaxIterations);
    let ck = dir.join("checkpoint.safetensors");
    let saved = load_checkpoint(&ck, &Device::Cpu).unwrap();
    assert_eq!(saved.meta.state.as_ref().unwrap().iteration, n);
    // The model file holds the kept weights: its validation NLL is the report's.
    let kept = Flow::load(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut rng = cpflow::FlowRng::seed_from_u64(0);
    let nll = cpflow::mean_nll(&kept, &val, &NllEstimator::Exact, 1024, &mut rng).unwrap();
    assert!((nll - rep.best_val_nll.unwrap()).abs() < 1e-12);
    drop(first);

    let mut resumed = Trainer::resume(&ck, &Device::Cpu, Some(config(2 * n)))
        .unwrap()
        .with_options(opts(&dir));
    let rep2 = resumed.fit(&train, Some(&val)).unwrap();
    assert_eq!(rep2.iterations, 2 * n);
    let a = model_weights(&straight_dir.join("checkpoint.safetensors"));
    let b = model_weights(&ck);
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert_eq!(
            va, vb,
            "{ka} differs between the straight and the resumed run"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&straight_dir).ok();
}

/// Resuming mid-epoch with a batch size whose next batch starts past the end of the data (3
/// batches of 16 done, then batch 64 on 72 rows: the old code sliced rows 192..256 of 72 and
/// panicked), or with fewer rows than before, starts a new epoch and trains on.
#[test]
fn resume_with_another_batch_or_data_size_works() {
    let train = Dataset::new(data(72, 2, 81));
    let dir = tmpdir("batch");
    let mut tc = config(100);
    tc.val_every = 0;
    let mut tr = Trainer::new(flow(2), tc.clone())
        .unwrap()
        .with_options(opts(&dir));
    tr.fit_steps(&train, None, 3).unwrap();
    assert_eq!(tr.state().epoch_batch, 3);
    drop(tr);
    let ck = dir.join("checkpoint.safetensors");
    let mut bigger = tc.clone();
    bigger.batch_size = 64;
    let mut tr = Trainer::resume(&ck, &Device::Cpu, Some(bigger))
        .unwrap()
        .with_options(opts(&dir));
    let rep = tr.fit_steps(&train, None, 2).unwrap();
    assert_eq!(rep.iterations, 5);
    // Epoch 1 began at the resume and took both of its batches (64 + 8 rows).
    assert_eq!((tr.state().epoch, tr.state().epoch_batch), (2, 0));
    drop(tr);
    let fewer = Dataset::new(data(20, 2, 82));
    let mut tr = Trainer::resume(&ck, &Device::Cpu, Some(tc))
        .unwrap()
        .with_options(opts(&dir));
    let rep = tr.fit_steps(&fewer, None, 3).unwrap();
    assert_eq!(rep.iterations, 8);
    std::fs::remove_dir_all(&dir).ok();
}

/// A fresh run into a folder that holds an older run's metrics starts a new file; a resume
/// appends to it.
#[test]
fn fresh_run_starts_fresh_metrics_and_resume_appends() {
    let train = Dataset::new(data(48, 2, 91));
    let dir = tmpdir("metrics");
    let mut tc = config(5);
    tc.val_every = 0;
    for _ in 0..2 {
        let mut tr = Trainer::new(flow(3), tc.clone())
            .unwrap()
            .with_options(opts(&dir));
        tr.fit(&train, None).unwrap();
    }
    let path = dir.join("metrics.jsonl");
    let recs = cpflow::metrics::read_metrics(&path).unwrap();
    let its: Vec<usize> = recs.iter().map(|r| r.iteration).collect();
    assert_eq!(its, vec![1, 2, 3, 4, 5], "two fresh runs appended");
    let mut more = tc.clone();
    more.max_iterations = 7;
    let mut tr = Trainer::resume(
        &dir.join("checkpoint.safetensors"),
        &Device::Cpu,
        Some(more),
    )
    .unwrap()
    .with_options(opts(&dir));
    tr.fit(&train, None).unwrap();
    let its: Vec<usize> = cpflow::metrics::read_metrics(&path)
        .unwrap()
        .iter()
        .map(|r| r.iteration)
        .collect();
    assert_eq!(its, vec![1, 2, 3, 4, 5, 6, 7]);
    std::fs::remove_dir_all(&dir).ok();
}

/// Observers are called at the start, on their period and at the end; a zero budget stops
/// the run after its first step, which then finishes like a capped run (model file written,
/// final validation, stop reason reported, iterations actually run).
#[test]
fn observers_see_the_run_and_can_stop_it() {
    let train = Dataset::new(data(64, 2, 101));
    let val = Dataset::new(data(16, 2, 102));
    let mut calls = Vec::new();
    let mut log = FnObserver::new(3, |t: &Trainer, m: Moment| {
        calls.push((t.state().iteration, m));
        Ok(Control::Continue)
    });
    let mut curve = NllCurve::new(val.clone(), NllEstimator::Exact, 4).with_start(true);
    let mut tr = Trainer::new(flow(4), config(10)).unwrap();
    let rep = tr
        .fit_observed(&train, Some(&val), &mut [&mut log, &mut curve])
        .unwrap();
    assert_eq!(rep.iterations, 10);
    assert_eq!(
        calls,
        vec![
            (0, Moment::Start),
            (3, Moment::Periodic),
            (6, Moment::Periodic),
            (9, Moment::Periodic),
            (10, Moment::End),
        ]
    );
    // Before the first step the flow is not initialised: no start point; then 4, 8, end.
    let its: Vec<usize> = curve.points().iter().map(|p| p.0).collect();
    assert_eq!(its, vec![4, 8, 10]);

    let dir = tmpdir("budget");
    let mut budget = TimeBudget::new(Duration::ZERO);
    let mut tr = Trainer::new(flow(5), config(1000))
        .unwrap()
        .with_options(opts(&dir));
    let rep = tr
        .fit_observed(&train, Some(&val), &mut [&mut budget])
        .unwrap();
    assert!(budget.exhausted());
    assert_eq!(rep.stop_reason, StopReason::Observer);
    assert_eq!(rep.iterations, 1);
    assert!(dir.join("model.safetensors").exists());
    assert!(rep.best_val_nll.is_some_and(f64::is_finite));
    std::fs::remove_dir_all(&dir).ok();
}

/// A paused run (an observer's `Control::Pause`, what `cpflow train` does on Ctrl-C) ends the
/// call after the step in progress without finishing: the checkpoint holds that step, no
/// model file or final validation; resumed, it ends with the same last weights as a straight
/// run of the same length.
#[test]
fn a_paused_run_is_checkpointed_unfinished_and_resumes_on_the_same_trajectory() {
    let train = Dataset::new(data(72, 2, 111));
    let val = Dataset::new(data(24, 2, 112));
    let (pause_at, n) = (5, 9);
    let straight_dir = tmpdir("unpaused");
    let mut straight = Trainer::new(flow(6), config(n))
        .unwrap()
        .with_options(opts(&straight_dir));
    straight.fit(&train, Some(&val)).unwrap();

    let dir = tmpdir("paused");
    let mut pause = FnObserver::new(1, |t: &Trainer, m: Moment| {
        Ok(
            if m == Moment::Periodic && t.state().iteration == pause_at {
                Control::Pause
            } else {
                Control::Continue
            },
        )
    });
    let mut first = Trainer::new(flow(6), config(n))
        .unwrap()
        .with_options(opts(&dir));
    let rep = first
        .fit_observed(&train, Some(&val), &mut [&mut pause])
        .unwrap();
    assert_eq!(rep.stop_reason, StopReason::Paused);
    assert_eq!(rep.iterations, pause_at);
    assert!(!dir.join("model.safetensors").exists());
    let ck = dir.join("checkpoint.safetensors");
    let saved = load_checkpoint(&ck, &Device::Cpu).unwrap();
    assert_eq!(saved.meta.state.as_ref().unwrap().iteration, pause_at);
    drop(first);

    let mut resumed = Trainer::resume(&ck, &Device::Cpu, None)
        .unwrap()
        .with_options(opts(&dir));
    let rep2 = resumed.fit(&train, Some(&val)).unwrap();
    assert_eq!(
        (rep2.iterations, rep2.stop_reason),
        (n, StopReason::MaxIterations)
    );
    assert!(dir.join("model.safetensors").exists());
    assert_eq!(
        model_weights(&straight_dir.join("checkpoint.safetensors")),
        model_weights(&ck),
        "the paused and resumed run left the straight run's trajectory"
    );
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&straight_dir).ok();
}

/// An [`NllCurve`] is kept with the run (`TrainState::curves`, in every checkpoint): a run
/// paused at 5, resumed to 7 (a finished run whose last point, 7, is off the period), then
/// resumed to 12, reports with fresh curves given to the resumed trainers every point of the
/// run, not only those of the last call: the straight run's 3, 6, 9, 12 and the end point 7.
#[test]
fn nll_curves_are_checkpointed_and_cover_resumed_runs() {
    let train = Dataset::new(data(72, 2, 121));
    let val = Dataset::new(data(24, 2, 122));
    let tc = |iters: usize| TrainConfig {
        val_every: 0,
        ..config(iters)
    };
    let curve = || NllCurve::new(val.clone(), NllEstimator::Exact, 3);
    let mut straight = curve();
    Trainer::new(flow(7), tc(12))
        .unwrap()
        .fit_observed(&train, None, &mut [&mut straight])
        .unwrap();
    let straight = straight.into_points();
    let its = |c: &[(usize, f64)]| c.iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(its(&straight), vec![3, 6, 9, 12]);

    let dir = tmpdir("curves");
    let mut pause = FnObserver::new(1, |t: &Trainer, m: Moment| {
        let at_5 = m == Moment::Periodic && t.state().iteration == 5;
        Ok(if at_5 {
            Control::Pause
        } else {
            Control::Continue
        })
    });
    let mut first = curve();
    let rep = Trainer::new(flow(7), tc(12))
        .unwrap()
        .with_options(opts(&dir))
        .fit_observed(&train, None, &mut [&mut first, &mut pause])
        .unwrap();
    assert_eq!(rep.stop_reason, StopReason::Paused);
    assert_eq!(first.points(), &straight[..1]);
    let ck = dir.join("checkpoint.safetensors");
    let saved = load_checkpoint(&ck, &Device::Cpu)
        .unwrap()
        .meta
        .state
        .unwrap();
    assert_eq!(saved.curves["validation"], straight[..1]);
    let resume = |iters: usize| {
        let mut c = curve();
        Trainer::resume(&ck, &Device::Cpu, Some(tc(iters)))
            .unwrap()
            .with_options(opts(&dir))
            .fit_observed(&train, None, &mut [&mut c])
            .unwrap();
        c.into_points()
    };
    let to_7 = resume(7);
    assert_eq!(its(&to_7), vec![3, 6, 7]);
    assert_eq!(to_7[..2], straight[..2]);
    let to_12 = resume(12);
    assert_eq!(its(&to_12), vec![3, 6, 7, 9, 12]);
    assert_eq!((to_12[2], &to_12[3..]), (to_7[2], &straight[2..]));
    std::fs::remove_dir_all(&dir).ok();
}

/// A kill after a checkpoint leaves lines past it in `metrics.jsonl`: a resume cuts them off
/// before it appends, so the log equals the uninterrupted run's (iterations and values, timing
/// aside) instead of holding 6–9 twice. The kill is simulated by putting the checkpoint of
/// iteration 5 back after the run went on to 9. The training time is kept in the checkpoint
/// and adds up over the resume.
#[test]
fn a_resume_after_a_kill_cuts_the_metrics_back_and_keeps_the_training_time() {
    let train = Dataset::new(data(72, 2, 131));
    let val = Dataset::new(data(24, 2, 132));
    let n = 12;
    let straight_dir = tmpdir("log-straight");
    Trainer::new(flow(8), config(n))
        .unwrap()
        .with_options(opts(&straight_dir))
        .fit(&train, Some(&val))
        .unwrap();

    let dir = tmpdir("log-killed");
    let ck = dir.join("checkpoint.safetensors");
    let ck5 = dir.join("checkpoint-5.safetensors");
    let mut first = Trainer::new(flow(8), config(n))
        .unwrap()
        .with_options(opts(&dir));
    first.fit_steps(&train, Some(&val), 5).unwrap();
    std::fs::copy(&ck, &ck5).unwrap();
    first.fit_steps(&train, Some(&val), 4).unwrap();
    drop(first);
    std::fs::copy(&ck5, &ck).unwrap();
    let time_at_5 = load_checkpoint(&ck, &Device::Cpu)
        .unwrap()
        .meta
        .state
        .unwrap()
        .train_time_s;
    assert!(time_at_5 > 0.0);
    let mut resumed = Trainer::resume(&ck, &Device::Cpu, None)
        .unwrap()
        .with_options(opts(&dir));
    assert_eq!(resumed.fit(&train, Some(&val)).unwrap().iterations, n);
    assert!(resumed.state().train_time_s > time_at_5);
    let saved = load_checkpoint(&ck, &Device::Cpu)
        .unwrap()
        .meta
        .state
        .unwrap();
    assert_eq!(saved.train_time_s, resumed.state().train_time_s);

    let log = |d: &std::path::Path| {
        let mut recs = cpflow::metrics::read_metrics(&d.join("metrics.jsonl")).unwrap();
        for r in &mut recs {
            (r.samples_per_sec, r.elapsed_s) = (0.0, 0.0);
        }
        recs
    };
    let (want, got) = (log(&straight_dir), log(&dir));
    let its = |r: &[cpflow::MetricsRecord]| r.iter().map(|r| r.iteration).collect::<Vec<_>>();
    assert_eq!(its(&got), (1..=n).collect::<Vec<_>>());
    assert_eq!(got, want);
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&straight_dir).ok();
}
