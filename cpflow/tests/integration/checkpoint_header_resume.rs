//! The training state of a checkpoint (s12 fuzz audit, finding 4): `Trainer::resume`
//! accepted any number in it — `base_lr` −1, −1e300, 0 or 1e300 (the learning rate every
//! schedule starts from), a plateau decay count of 7, an epoch batch or a step count past
//! the iteration, Adam's β₁ = −1. Each is refused now, naming the file and the field; an
//! intact checkpoint of the older format resumes. The files here are of the older format
//! (data checksum only), so that the header checksum does not refuse them first.

use candle_core::Device;
use serde_json::{Value, json};

use crate::checkpoint_header_edit::*;
use crate::checkpoint_header_files::*;

/// Each edit of a number the resume uses is refused, naming the file and the number.
#[test]
fn resume_refuses_out_of_range_training_state() {
    let dir = test_dir("resume-state");
    let ck = without_file_digest(&std::fs::read(flow_checkpoint(&dir)).unwrap());
    let p = write(&dir, "old.safetensors", &ck);
    let resumed = cpflow::Trainer::resume(&p, &Device::Cpu, None).unwrap();
    assert_eq!(resumed.state().iteration, 3);
    let step_key = {
        let (h, _) = split(&ck);
        let meta: Value =
            serde_json::from_str(h["__metadata__"]["cpflow"].as_str().unwrap()).unwrap();
        meta["adam"]["steps"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone()
    };
    let steps = format!("/adam/steps/{}", step_key.replace('/', "~1"));
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/state/base_lr", json!(-1.0), "base_lr"),
        ("/state/base_lr", json!(-1e300), "base_lr"),
        ("/state/base_lr", json!(0.0), "base_lr"),
        ("/state/base_lr", json!(1e300), "base_lr"),
        ("/state/lr_decays", json!(7), "lr_decays"),
        ("/state/epoch_batch", json!(1_000_000), "epoch_batch"),
        ("/state/best_iteration", json!(99), "best_iteration"),
        ("/state/train_time_s", json!(-5.0), "train_time_s"),
        ("/adam/params/beta1", json!(-1.0), "beta1"),
        (&steps, json!(1_000_000_000u64), "steps"),
    ];
    for (at, value, words) in cases {
        let what = format!("{at} = {value}");
        let damaged = set_config(&ck, "cpflow", at, value);
        let p = write(&dir, "damaged.safetensors", &damaged);
        let msg = refusal(&what, cpflow::Trainer::resume(&p, &Device::Cpu, None));
        assert_names(&what, &msg, &p, &[words]);
    }
    std::fs::remove_dir_all(&dir).ok();
}
