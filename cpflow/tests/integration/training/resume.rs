//! Resume is exact: a checkpointed and resumed run, or one paused by the interrupt flag and
//! resumed, ends on the uninterrupted run's weights bit for bit.

use crate::flow_common::*;
use candle_core::Device;
use cpflow::{Dataset, FloatType, Flow, FlowConfig, RunOptions, Trainer};

use super::{small_train_config, tmpdir};

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
