//! Damage to the header of a weights file (s12 fuzz audit, finding 1): the sha256 covered
//! the tensor data only, so a flipped byte in a configuration key (`"prior"` → `"prGor"`:
//! the default prior), an edited configuration value, a dtype tag F64 → I64 or the offsets
//! of two tensors of one shape exchanged loaded as another model. Files now record a
//! checksum of the header too (`cpflow.file_sha256`); files of older versions (data
//! checksum only) still load, and the model configurations refuse unknown keys.

use candle_core::Device;
use cpflow::Flow;
use serde_json::{Value, json};

use crate::checkpoint_header_edit::*;
use crate::checkpoint_header_files::*;
use crate::flow_common::{data, max_abs_diff};

/// The flow metadata key.
const FLOW: &str = "cpflow";

/// Every header edit of the audit that loaded as another flow is refused by `Flow::load`,
/// `Flow::load_best` and `load_checkpoint`, naming the file and the checksum (the renamed
/// key: the unknown field); the intact file loads the same model.
#[test]
fn header_edits_of_a_flow_file_are_refused() {
    let dir = test_dir("digest-flow");
    let path = flow_model_file(&dir);
    let bytes = std::fs::read(&path).unwrap();
    let x = data(5, 2, 9);
    let saved = tiny_flow().log_prob_exact(&x).unwrap();
    let loaded = Flow::load(&path, &Device::Cpu).unwrap();
    assert_eq!(
        max_abs_diff(&loaded.log_prob_exact(&x).unwrap(), &saved),
        0.0
    );
    let pot = "/flow/layers/1/potential";
    let variants: Vec<(&str, Vec<u8>)> = vec![
        (
            "key flip",
            replace_in_config(&bytes, FLOW, "\"prior\"", "\"prGor\""),
        ),
        (
            "prior log_var",
            set_config(&bytes, FLOW, "/flow/prior/log_var", json!(1.5)),
        ),
        (
            "zero_shift",
            set_config(&bytes, FLOW, &format!("{pot}/zero_shift"), json!(false)),
        ),
        (
            "symm_act_first",
            set_config(&bytes, FLOW, &format!("{pot}/symm_act_first"), json!(false)),
        ),
        (
            "activation removed",
            edit_config(&bytes, FLOW, |c| {
                c.pointer_mut(pot)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .remove("activation");
            }),
        ),
        ("dtype", set_dtype(&bytes, "layers.0.bias", "I64")),
        (
            "offsets",
            swap_offsets(&bytes, "layers.0.bias", "layers.0.logs"),
        ),
    ];
    for (what, damaged) in variants {
        let p = write(&dir, "damaged.safetensors", &damaged);
        // The renamed key is refused by the configuration's reader before the checksum.
        let words = if what == "key flip" {
            "unknown field `prGor`"
        } else {
            "checksum"
        };
        for msg in [
            refusal(what, Flow::load(&p, &Device::Cpu)),
            refusal(what, Flow::load_best(&p, &Device::Cpu)),
            refusal(what, cpflow::load_checkpoint(&p, &Device::Cpu)),
        ] {
            assert_names(what, &msg, &p, &[words]);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A file as an older cpflow wrote it (data checksum only, or no checksum) loads the same
/// model; its data are still checked, and the configuration's unknown keys and the dtype
/// tags are refused without the header checksum.
#[test]
fn older_flow_files_load_and_keep_their_checks() {
    let dir = test_dir("digest-old-flow");
    let path = flow_model_file(&dir);
    let old = without_file_digest(&std::fs::read(&path).unwrap());
    let p = write(&dir, "old.safetensors", &old);
    let x = data(5, 2, 9);
    let loaded = Flow::load(&p, &Device::Cpu).unwrap();
    let saved = tiny_flow().log_prob_exact(&x).unwrap();
    assert_eq!(
        max_abs_diff(&loaded.log_prob_exact(&x).unwrap(), &saved),
        0.0
    );

    // One written before any checksum was kept loads too.
    let plain = edit_header(&old, |h| {
        h["__metadata__"].as_object_mut().unwrap().remove(DATA_KEY);
    });
    let p = write(&dir, "plain.safetensors", &plain);
    let loaded = Flow::load(&p, &Device::Cpu).unwrap();
    assert_eq!(
        max_abs_diff(&loaded.log_prob_exact(&x).unwrap(), &saved),
        0.0
    );

    let mut flipped = old.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 1;
    let p = write(&dir, "damaged.safetensors", &flipped);
    let msg = refusal("data flip", Flow::load(&p, &Device::Cpu));
    assert_names(
        "data flip",
        &msg,
        &p,
        &["the tensor data do not match the checksum"],
    );

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "key flip",
            replace_in_config(&old, FLOW, "\"prior\"", "\"prGor\""),
            "unknown field `prGor`",
        ),
        (
            "potential key flip",
            replace_in_config(&old, FLOW, "\"zero_shift\"", "\"zero_sGift\""),
            "unknown key `cpflow.flow.layers[1].potential.zero_sGift`",
        ),
        (
            "key in a unit layer",
            edit_config(&old, FLOW, |c| c["flow"]["layers"][0]["extra"] = json!(1)),
            "unknown key `cpflow.flow.layers[0].extra`",
        ),
        (
            "dtype",
            set_dtype(&old, "layers.0.bias", "I64"),
            "tensor layers.0.bias is of type I64",
        ),
    ];
    for (what, damaged, words) in cases {
        let p = write(&dir, "damaged.safetensors", &damaged);
        let msg = refusal(what, Flow::load(&p, &Device::Cpu));
        assert_names(what, &msg, &p, &[words]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `Trainer::resume` refuses a checkpoint whose dtype tag was edited (it resumed on integer
/// weights), with or without the header checksum.
#[test]
fn resume_refuses_an_edited_dtype() {
    let dir = test_dir("digest-resume");
    let path = flow_checkpoint(&dir);
    let bytes = std::fs::read(&path).unwrap();
    for (what, damaged, words) in [
        (
            "new file",
            set_dtype(&bytes, "layers.0.bias", "I64"),
            "checksum",
        ),
        (
            "older file",
            set_dtype(&without_file_digest(&bytes), "layers.0.bias", "I64"),
            "of type I64",
        ),
    ] {
        let p = write(&dir, "damaged.safetensors", &damaged);
        let msg = refusal(what, cpflow::Trainer::resume(&p, &Device::Cpu, None));
        assert_names(what, &msg, &p, &[words]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The image flow: an edited logit `alpha` is refused by the checksum; in an older file a
/// flipped key of the configuration (`init_seed`, the ICNN's `num_pooling`) or a key added
/// to the logit layer is refused as an unknown key (it loaded, with the default).
#[test]
fn header_edits_of_an_image_flow_file_are_refused() {
    let dir = test_dir("digest-image");
    let path = image_model_file(&dir);
    let bytes = std::fs::read(&path).unwrap();
    const IMAGE: &str = "cpflow_image";
    cpflow::image::ImageFlow::load(&path, &Device::Cpu).unwrap();
    let alpha = set_config(&bytes, IMAGE, "/flow/layers/0/alpha", json!(0.2));
    let p = write(&dir, "damaged.safetensors", &alpha);
    let msg = refusal("alpha", cpflow::image::ImageFlow::load(&p, &Device::Cpu));
    assert_names("alpha", &msg, &p, &["checksum"]);

    let old = without_file_digest(&bytes);
    cpflow::image::ImageFlow::load(&write(&dir, "old.safetensors", &old), &Device::Cpu).unwrap();
    let logit_key = edit_config(&old, IMAGE, |c| c["flow"]["layers"][0]["extra"] = json!(1));
    let cases = [
        (
            replace_in_config(&old, IMAGE, "\"init_seed\"", "\"init_sGed\""),
            "unknown field `init_sGed`",
        ),
        (
            replace_in_config(&old, IMAGE, "\"num_pooling\"", "\"num_pGoling\""),
            "potential.num_pGoling`",
        ),
        (logit_key, "unknown field `extra`"),
    ];
    for (damaged, words) in cases {
        let p = write(&dir, "damaged.safetensors", &damaged);
        let msg = refusal(words, cpflow::image::ImageFlow::load(&p, &Device::Cpu));
        assert_names(words, &msg, &p, &[words]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A VAE weights file whose model configuration was edited (`blocks`) is refused by the
/// checksum; the file in the older format loads.
#[cfg(feature = "vae")]
#[test]
fn an_edited_vae_configuration_is_refused() {
    let dir = test_dir("digest-vae");
    let path = vae_file(&dir, cpflow::vae::PosteriorKind::Gaussian, |t| t);
    cpflow::vae::load_vae_file(&path, &Device::Cpu).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // The older format (data checksum only) loads.
    let old = write(&dir, "old.safetensors", &without_file_digest(&bytes));
    cpflow::vae::load_vae_file(&old, &Device::Cpu).unwrap();
    let damaged = edit_config(&bytes, "cpflow-vae", |c| {
        c["config"]["model"]["blocks"] = Value::from(0);
    });
    let p = write(&dir, "damaged.safetensors", &damaged);
    let msg = refusal("blocks", cpflow::vae::load_vae_file(&p, &Device::Cpu));
    assert_names("blocks", &msg, &p, &["checksum"]);
    std::fs::remove_dir_all(&dir).ok();
}
