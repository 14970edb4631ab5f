//! The run's step statistics across resumes, the final validation's log line and a failed
//! checkpoint write.

use candle_core::{Device, Tensor};
use rand::Rng;

use crate::checkpoint::{hidden_file_beside, load_checkpoint, save_checkpoint};
use crate::config::{LrSchedule, SurrogateParams, TrainConfig};
use crate::error::CpflowError;
use crate::evaluate::Dataset;
use crate::flow::Flow;
use crate::flow_config::FlowConfig;
use crate::potential::PotentialConfig;
use crate::rng::FlowRng;
use crate::train::{RunOptions, TrainReport, TrainStepStats, Trainer};

/// 3-D rows (a skewed cloud, so that the flow has something to learn).
fn data(n: usize) -> Dataset {
    let mut r = FlowRng::seed_from_u64(11);
    let v: Vec<f64> = (0..n * 3)
        .map(|i| {
            let u: f64 = r.random::<f64>() * 2.0 - 1.0;
            if i % 3 == 2 { u * u * 2.0 } else { u }
        })
        .collect();
    Dataset::new(Tensor::from_vec(v, (n, 3), &Device::Cpu).unwrap())
}

/// CG capped at 2 iterations in 3-D with a tight tolerance: some systems meet it, some do
/// not, so every statistic is non-trivial.
fn config(iterations: usize) -> TrainConfig {
    TrainConfig {
        batch_size: 16,
        max_iterations: iterations,
        val_every: 0,
        train_slq_every: 0,
        log_every: 4,
        lr_schedule: LrSchedule::Constant,
        surrogate: SurrogateParams {
            cg_atol: 1e-4,
            cg_rtol: 0.0,
            cg_max_iters: Some(2),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn new_trainer(cfg: TrainConfig, out: &std::path::Path) -> Trainer {
    let pot = PotentialConfig::Icnn3(icnn::Icnn3Config {
        dim: 3,
        width: 6,
        depth: 2,
        ..Default::default()
    });
    let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu).unwrap();
    let options = RunOptions {
        out_dir: Some(out.to_path_buf()),
        ..Default::default()
    };
    Trainer::new(flow, cfg).unwrap().with_options(options)
}

fn resume(out: &std::path::Path, cfg: TrainConfig) -> Trainer {
    let options = RunOptions {
        out_dir: Some(out.to_path_buf()),
        ..Default::default()
    };
    Trainer::resume(&out.join("checkpoint.safetensors"), &Device::Cpu, Some(cfg))
        .unwrap()
        .with_options(options)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The report's step statistics, compared by bits (the same steps in the same order give
/// the same sums).
fn stats(r: &TrainReport) -> (usize, u64, u64, Option<u64>, usize) {
    (
        r.iterations,
        r.final_loss.to_bits(),
        r.mean_cg_iterations.to_bits(),
        r.cg_converged.map(f64::to_bits),
        r.cg_unconverged_steps,
    )
}

/// A run paused at step 5 and resumed (with more iterations), and a resume of the finished
/// run that trains no step, report the statistics of the uninterrupted run, bit for bit: the
/// checkpoint carries them.
#[test]
fn resumes_report_the_whole_runs_step_statistics() {
    let (a, b) = (temp_dir("stats-whole"), temp_dir("stats-resumed"));
    let train = data(40);
    let whole = new_trainer(config(12), &a).fit(&train, None).unwrap();
    assert!(
        whole.cg_unconverged_steps > 0 && whole.cg_converged.is_some_and(|c| c > 0.0),
        "the test needs unconverged and converged systems: {whole:?}"
    );
    assert!(whole.final_loss.is_finite() && whole.mean_cg_iterations > 0.0);
    // Paused after 5 steps of a run configured for 8, extended to 12 on resume.
    let mut first = new_trainer(config(8), &b);
    first.fit_steps(&train, None, 5).unwrap();
    let mut resumed = resume(&b, config(12));
    let rep = resumed.fit(&train, None).unwrap();
    assert_eq!(stats(&rep), stats(&whole));
    assert_eq!(resumed.state().step_stats.counted_from(12), 0);
    // The finished run resumed: no step, the same numbers.
    let rep = resume(&b, config(12)).fit(&train, None).unwrap();
    assert_eq!(stats(&rep), stats(&whole));
    for d in [a, b] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// A checkpoint written before the statistics were kept (its state has none: what an older
/// trainer wrote, see `train_state`'s test of the JSON) resumes; the statistics then cover
/// the steps after the resume, and say so.
#[test]
fn an_old_checkpoint_resumes_counting_from_the_resume() {
    let d = temp_dir("stats-old");
    let train = data(40);
    new_trainer(config(12), &d)
        .fit_steps(&train, None, 5)
        .unwrap();
    let path = d.join("checkpoint.safetensors");
    let mut ck = load_checkpoint(&path, &Device::Cpu).unwrap();
    let state = ck.meta.state.as_mut().unwrap();
    assert_eq!(state.step_stats.steps, 5);
    state.step_stats = TrainStepStats::default();
    save_checkpoint(&path, &ck.meta, ck.tensors.into_iter().collect()).unwrap();
    let mut t = resume(&d, config(12));
    let rep = t.fit(&train, None).unwrap();
    let s = &t.state().step_stats;
    assert_eq!((s.steps, s.counted_from(rep.iterations)), (7, 5));
    assert!(rep.final_loss.is_finite() && rep.mean_cg_iterations > 0.0);
    std::fs::remove_dir_all(d).ok();
}

/// A checkpoint that cannot be written (its temporary file's name is taken by a directory)
/// fails naming the iteration and the last checkpoint, which is intact and resumes.
#[test]
fn a_failed_checkpoint_write_names_the_iteration_and_the_saved_one() {
    let d = temp_dir("ckpt-write");
    let train = data(40);
    let cfg = TrainConfig {
        checkpoint_every: 2,
        ..config(8)
    };
    let mut t = new_trainer(cfg.clone(), &d);
    t.fit_steps(&train, None, 3).unwrap();
    let path = d.join("checkpoint.safetensors");
    let blocker = hidden_file_beside(&path, "tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    let err = t.fit(&train, None).unwrap_err();
    match &err {
        CpflowError::CheckpointWrite {
            iteration: 4,
            saved: Some((3, p)),
            ..
        } if *p == path => {}
        other => panic!("expected the write at 4 to fail, 3 saved: {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("writing the checkpoint at iteration 4 failed")
            && msg.contains("the run is saved at iteration 3"),
        "{msg}"
    );
    std::fs::remove_dir(&blocker).unwrap();
    let mut again = resume(&d, cfg);
    assert_eq!(again.state().iteration, 3);
    assert_eq!(again.fit(&train, None).unwrap().iterations, 8);
    // Without an earlier checkpoint the error says so.
    let e = temp_dir("ckpt-write-first");
    let mut t = new_trainer(config(8), &e);
    std::fs::create_dir_all(hidden_file_beside(&e.join("checkpoint.safetensors"), "tmp")).unwrap();
    let msg = t.fit_steps(&train, None, 1).unwrap_err().to_string();
    assert!(
        msg.contains("at iteration 1 failed") && msg.contains("no earlier checkpoint"),
        "{msg}"
    );
    for dir in [d, e] {
        std::fs::remove_dir_all(dir).ok();
    }
}
