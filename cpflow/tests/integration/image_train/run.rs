//! A short image-training run: the files it writes (checkpoint, metrics, EMA model, report)
//! and its test score, the step a non-finite loss names, and a resumed or interrupted run
//! following the uninterrupted trajectory bit for bit.

use std::path::Path;

use candle_core::Device;
use cpflow::image::train::{TEST_SEED_SALT, exact_bpd_per_image, slq_bpd_per_image};
use cpflow::image::{
    ImageFlow, ImageRunOptions, ImageTrainConfig, ImageTrainReport, run_image_training,
};
use cpflow::{FloatType, SlqConfig};

use super::{checkpoint_tensors, read_metrics, temp_dir, tiny_data, tiny_flow, tiny_train};

#[test]
fn two_steps_write_checkpoint_metrics_model_and_report() {
    let dir = temp_dir("files");
    let data = tiny_data(3, 3);
    let mut cfg = ImageTrainConfig {
        val_every: 1,
        train_slq_every: 1,
        ..tiny_train(2)
    };
    cfg.test.slq = SlqConfig {
        probes: 32,
        steps: 16,
    };
    let opts = ImageRunOptions {
        out_dir: Some(dir.clone()),
        ..Default::default()
    };
    let flow = tiny_flow(FloatType::F64);
    let r = run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts).unwrap();
    assert_eq!((r.iterations, r.cp_flow_blocks), (2, 2));
    assert_eq!((r.n_train, r.n_val, r.n_test), (12, 3, 3));
    // 12 images in batches of 4: two steps are 2/3 of an epoch.
    assert!((r.epochs - 2.0 / 3.0).abs() < 1e-12);
    assert!(r.mean_cg_iterations >= 1.0 && r.final_loss.is_finite());
    // Validated after each step; the end adds no duplicate point.
    let its: Vec<usize> = r.val_curve.iter().map(|p| p.iteration).collect();
    assert_eq!(its, vec![1, 2]);
    assert!(
        r.val_curve
            .iter()
            .all(|p| p.val.bpd.is_finite() && p.val.images == 3)
    );
    let m = read_metrics(&dir.join("metrics.jsonl"));
    assert_eq!(m.len(), 2);
    assert!(
        m.iter()
            .all(|l| l.val_bpd.is_some() && l.train_bpd_slq.is_some())
    );
    assert!(
        m.iter()
            .all(|l| l.cg_iterations >= 1.0 && l.grad_norm > 0.0)
    );
    // The test score: SLQ over the 3 test images, exact on 2 of them, on the same dequantised
    // images. Recomputed here from the saved EMA model with the documented test seed.
    let model = ImageFlow::load(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let seed = cfg.seed ^ TEST_SEED_SALT;
    let t = r.test.as_ref().unwrap();
    assert_eq!(t.slq.images, 3);
    let ex = t.exact.as_ref().unwrap();
    assert_eq!(ex.exact.images, 2);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let exact = exact_bpd_per_image(&model, &data.test, 2, 3, seed).unwrap();
    let slq = slq_bpd_per_image(&model, &data.test, 3, &cfg.test.slq, 3, seed).unwrap();
    assert!((mean(&exact) - ex.exact.bpd).abs() < 1e-12);
    assert!((mean(&slq.bpd) - t.slq.bpd).abs() < 1e-12);
    assert!((ex.slq.bpd - ex.exact.bpd - ex.slq_minus_exact).abs() < 1e-12);
    // With steps = D the Lanczos quadrature is exact for each probe, so SLQ − exact is probe
    // noise only: within 5 of its standard errors (from the 32 probes) per image.
    let z = ex.max_abs_z.unwrap();
    assert!(z < 5.0, "{ex:?}");
    assert!(t.probe_std_err.unwrap() > 0.0);
    // Other dequantisation noise gives other exact values (the comparison pairs images).
    let other = exact_bpd_per_image(&model, &data.test, 2, 3, seed ^ 1).unwrap();
    assert!((other[0] - exact[0]).abs() > 1e-6);
    // report.json is the returned report (compared as text: serde_json's default float
    // parsing may be one ulp off), and it reads back.
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    assert_eq!(text, serde_json::to_string_pretty(&r).unwrap());
    let saved: ImageTrainReport = serde_json::from_str(&text).unwrap();
    assert_eq!(saved.val_curve.len(), 2);
    // The comparison's fields are named for their sign (the old `mean_difference` was
    // SLQ − exact while the log line printed exact − SLQ), and a report with the old names
    // still reads back.
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cmp = &json["test"]["exact"];
    let d = cmp["slq_minus_exact"].as_f64().unwrap();
    let (s, e) = (cmp["slq"]["bpd"].as_f64(), cmp["exact"]["bpd"].as_f64());
    assert!((s.unwrap() - e.unwrap() - d).abs() < 1e-12, "{cmp}");
    assert!(cmp["slq_minus_exact_std_err"].is_number(), "{cmp}");
    let old_names = text
        .replace("\"slq_minus_exact\"", "\"mean_difference\"")
        .replace("\"slq_minus_exact_std_err\"", "\"difference_std_err\"");
    let old: ImageTrainReport = serde_json::from_str(&old_names).unwrap();
    assert_eq!(
        old.test.unwrap().exact.unwrap().slq_minus_exact,
        ex.slq_minus_exact
    );
    // model.safetensors holds the EMA weights of the checkpoint.
    let ck = checkpoint_tensors(&dir);
    for (name, t) in model.weight_tensors() {
        let ema = &ck[&format!("ema.{name}")];
        let d = (t - ema).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f64>().unwrap(), 0.0, "{name}");
    }
    assert!(ck.keys().any(|k| k.starts_with("adam.m.")));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A non-finite loss or gradient names the 1-based step that produced it, as `metrics.jsonl`
/// counts: with a huge learning rate the steps before it are logged finite.
#[test]
fn non_finite_steps_are_counted_as_the_metrics_count_them() {
    let dir = temp_dir("nan");
    let mut cfg = tiny_train(6);
    cfg.adam.lr = 1e30;
    let opts = ImageRunOptions {
        out_dir: Some(dir.clone()),
        ..Default::default()
    };
    let flow = tiny_flow(FloatType::F64);
    let err = run_image_training(&flow, &cfg, &tiny_data(3, 3), &Device::Cpu, &opts).unwrap_err();
    let cpflow::CpflowError::NonFinite { step, .. } = err else {
        panic!("expected a non-finite step, got {err}");
    };
    let m = read_metrics(&dir.join("metrics.jsonl"));
    assert!(step >= 2 && m.iter().all(|r| r.loss.is_finite()), "{step}");
    assert_eq!(m.last().map(|r| r.iteration), Some(step - 1));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_follows_the_uninterrupted_trajectory() {
    let data = tiny_data(0, 0);
    let flow = tiny_flow(FloatType::F32);
    let run = |dir: &Path, iters: usize, seed: u64, resume: bool| {
        let opts = ImageRunOptions {
            out_dir: Some(dir.to_path_buf()),
            resume,
            ..Default::default()
        };
        let cfg = ImageTrainConfig {
            seed,
            ..tiny_train(iters)
        };
        run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts).unwrap()
    };
    let (a, b, c) = (
        temp_dir("resume-a"),
        temp_dir("resume-b"),
        temp_dir("resume-c"),
    );
    // 5 steps cross an epoch boundary (3 batches per epoch).
    run(&a, 5, 3, false);
    run(&b, 2, 3, false);
    let rb = run(&b, 5, 3, true);
    assert_eq!(rb.iterations, 5);
    run(&c, 5, 4, false);
    let (ta, tb, tc) = (
        checkpoint_tensors(&a),
        checkpoint_tensors(&b),
        checkpoint_tensors(&c),
    );
    assert_eq!(ta.len(), tb.len());
    let mut differs_with_seed = false;
    for (k, t) in &ta {
        // Weights, EMA shadows and Adam moments: bit for bit (same ops in the same order).
        let d = (t - &tb[k]).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{k}");
        let dc = (t - &tc[k]).unwrap().abs().unwrap().max_all().unwrap();
        differs_with_seed |= dc.to_scalar::<f32>().unwrap() > 0.0;
    }
    // Another seed (other batches, noise and probes) ends elsewhere: the comparison can fail.
    assert!(differs_with_seed);
    // An interrupt (the flag set from the start) pauses the run after its first step: the
    // checkpoint holds it, there is no model file, and resuming ends where `a` ended.
    let d = temp_dir("resume-d");
    let opts = ImageRunOptions {
        out_dir: Some(d.clone()),
        interrupt: Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
            true,
        ))),
        ..Default::default()
    };
    let cfg = ImageTrainConfig {
        seed: 3,
        ..tiny_train(5)
    };
    match run_image_training(&flow, &cfg, &data, &Device::Cpu, &opts) {
        Err(cpflow::CpflowError::Interrupted {
            iteration: 1,
            checkpoint: Some(p),
        }) => assert_eq!(p, d.join("checkpoint.safetensors")),
        other => panic!("expected an interrupt after step 1, got {other:?}"),
    }
    assert!(!d.join("model.safetensors").exists());
    assert_eq!(run(&d, 5, 3, true).iterations, 5);
    let td = checkpoint_tensors(&d);
    for (k, t) in &ta {
        let diff = (t - &td[k]).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(
            diff.to_scalar::<f32>().unwrap(),
            0.0,
            "{k} after the interrupt"
        );
    }
    std::fs::remove_dir_all(&d).ok();
    // The resumed run appended to the metrics file: one line per step.
    let its: Vec<usize> = read_metrics(&b.join("metrics.jsonl"))
        .iter()
        .map(|l| l.iteration)
        .collect();
    assert_eq!(its, vec![1, 2, 3, 4, 5]);
    // Resuming with another model is refused.
    let other = tiny_flow(FloatType::F64);
    let opts = ImageRunOptions {
        out_dir: Some(b.clone()),
        resume: true,
        ..Default::default()
    };
    assert!(run_image_training(&other, &tiny_train(6), &data, &Device::Cpu, &opts).is_err());
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
