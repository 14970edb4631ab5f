//! The training state of image and VAE checkpoints (s12 state check, after
//! `checkpoint_header_resume` for the vector trainer): their resumes accepted any number in
//! it — a negative training time, an epoch position past the end of the epoch, Adam's
//! β₁ = −1, a learning rate of −1 or 1e300, a best validation at an epoch not yet trained,
//! an RNG position that is no number. Each is refused now, naming the file and the field,
//! before anything of the run is touched; an intact checkpoint resumes. The files are made
//! the older format (data checksum only), so that the header checksum does not refuse the
//! edits first.

use std::path::Path;

use candle_core::Device;
use cpflow::FloatType;
use cpflow::image::{ImageRunOptions, ImageTrainConfig, run_image_training};
use serde_json::{Value, json};

use crate::checkpoint_header_edit::*;
use crate::image_train::{tiny_data, tiny_flow, tiny_train};

const CHECKPOINT: &str = "checkpoint.safetensors";

/// Copies the files of run directory `from` to a fresh `to`, the checkpoint replaced by
/// `checkpoint`.
fn copy_run(from: &Path, to: &Path, checkpoint: &[u8]) {
    std::fs::remove_dir_all(to).ok();
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    std::fs::write(to.join(CHECKPOINT), checkpoint).unwrap();
}

/// The first key of the object at `at` in the metadata `key` of `bytes`, as a JSON pointer
/// token.
fn first_key(bytes: &[u8], key: &str, at: &str) -> String {
    let (h, _) = split(bytes);
    let meta: Value = serde_json::from_str(h["__metadata__"][key].as_str().unwrap()).unwrap();
    let k = meta.pointer(at).unwrap().as_object().unwrap().keys().next();
    k.unwrap().replace('~', "~0").replace('/', "~1")
}

fn image_run(dir: &Path, iters: usize, resume: bool) -> cpflow::Result<()> {
    let cfg = ImageTrainConfig {
        val_every: 1,
        ..tiny_train(iters)
    };
    let opts = ImageRunOptions {
        out_dir: Some(dir.to_path_buf()),
        resume,
        ..Default::default()
    };
    run_image_training(
        &tiny_flow(FloatType::F32),
        &cfg,
        &tiny_data(2, 2),
        &Device::Cpu,
        &opts,
    )
    .map(|_| ())
}

/// Each edit of a number an image resume uses is refused, naming the file and the field.
#[test]
fn image_resume_refuses_out_of_range_training_state() {
    let dir = test_dir("image-state");
    let run = dir.join("run");
    image_run(&run, 2, false).unwrap();
    let key = "cpflow_image_train";
    let ck = without_file_digest(&std::fs::read(run.join(CHECKPOINT)).unwrap());
    let resumed = dir.join("resumed");
    copy_run(&run, &resumed, &ck);
    image_run(&resumed, 3, true).unwrap();
    let steps = format!("/adam/steps/{}", first_key(&ck, key, "/adam/steps"));
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/state/epoch_batch", json!(1_000_000), "state.epoch_batch"),
        ("/state/epoch_batch", json!(3), "state.epoch_batch"),
        ("/state/epoch", json!(1000), "state.epoch"),
        ("/state/samples_seen", json!(1), "state.samples_seen"),
        ("/state/train_time_s", json!(-5.0), "state.train_time_s"),
        (
            "/state/val_curve/0/iteration",
            json!(99),
            "state.val_curve[0]",
        ),
        (
            "/state/step_stats/steps",
            json!(99),
            "state.step_stats.steps",
        ),
        ("/adam/params/beta1", json!(-1.0), "adam.params.beta1"),
        (&steps, json!(1_000_000_000u64), "adam.steps"),
        ("/train/batch_size", json!(0), "batch sizes"),
        ("/rng/word_pos", json!("x"), "rng"),
    ];
    for (at, value, words) in cases {
        let what = format!("{at} = {value}");
        let damaged = set_config(&ck, key, at, value);
        copy_run(&run, &resumed, &damaged);
        let msg = refusal(&what, image_run(&resumed, 3, true));
        assert_names(&what, &msg, &resumed.join(CHECKPOINT), &[words]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Each edit of a number a VAE resume uses is refused, naming the file and the field.
#[cfg(feature = "vae")]
#[test]
fn vae_resume_refuses_out_of_range_training_state() {
    use cpflow::vae::{
        PosteriorKind, VaeArchitecture, VaeConfig, VaeDatasetName, VaeRunOptions, run_vae_on,
    };
    let mut cfg = VaeConfig::reference(
        VaeDatasetName::Caltech101,
        "unused",
        PosteriorKind::Gaussian,
    );
    cfg.model.latent_dim = 2;
    cfg.model.architecture = VaeArchitecture {
        channels: 2,
        feature_dim: 4,
        head_channels: 2,
    };
    (cfg.train.epochs, cfg.train.batch_size) = (1, 2);
    (cfg.eval.is_samples, cfg.eval.is_chunk) = (4, 4);
    let data = crate::posterior_common::made_up_caltech_data(&[0, 2]);
    let resume = VaeRunOptions {
        resume: true,
        ..Default::default()
    };
    let dir = test_dir("vae-state");
    let run = dir.join("run");
    run_vae_on(&cfg, &data, &run, &VaeRunOptions::default()).unwrap();
    let key = "cpflow-vae";
    let ck = without_file_digest(&std::fs::read(run.join(CHECKPOINT)).unwrap());
    cfg.train.epochs = 2;
    let resumed = dir.join("resumed");
    copy_run(&run, &resumed, &ck);
    run_vae_on(&cfg, &data, &resumed, &resume).unwrap();
    let steps = format!(
        "/optimizer/steps/{}",
        first_key(&ck, key, "/optimizer/steps")
    );
    let mut cases: Vec<(&str, Value, &str)> = [-1.0, -1e300, 0.0, 1e300]
        .into_iter()
        .map(|lr| ("/optimizer/params/lr", json!(lr), "optimizer.params.lr"))
        .collect();
    cases.extend([
        (
            "/optimizer/params/beta1",
            json!(-1.0),
            "optimizer.params.beta1",
        ),
        (&steps as &str, json!(1_000_000_000u64), "optimizer.steps"),
        ("/state/epoch", json!(99), "state.epoch"),
        ("/state/bad_epochs", json!(5), "state.bad_epochs"),
        ("/state/best_val/1", json!(7), "state.best_val"),
        ("/state/val_curve/0/0", json!(9), "state.val_curve[0]"),
        ("/state/train_seconds", json!(-5.0), "state.train_seconds"),
        (
            "/state/step_stats/steps",
            json!(99),
            "state.step_stats.steps",
        ),
        ("/state/rng/word_pos", json!("x"), "state.rng"),
    ]);
    for (at, value, words) in cases {
        let what = format!("{at} = {value}");
        let damaged = set_config(&ck, key, at, value);
        copy_run(&run, &resumed, &damaged);
        let msg = refusal(&what, run_vae_on(&cfg, &data, &resumed, &resume));
        assert_names(&what, &msg, &resumed.join(CHECKPOINT), &[words]);
    }
    std::fs::remove_dir_all(&dir).ok();
}
