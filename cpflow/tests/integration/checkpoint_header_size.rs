//! A configuration edited to a huge model (s12 fuzz audit, finding 2): `width` 4 → 30000 in
//! an 8 kB flow file made `Flow::load`, `load_checkpoint` and `Trainer::resume` build the
//! model before any check and abort with "memory allocation of 3600000000 bytes failed";
//! `load_vae_file` with `model.width = 30000` too. The loaders now compare the parameters
//! the configuration counts with the file's tensor table before building anything. The
//! files here are of the older format (data checksum only), so that the count is what
//! refuses them (the header checksum of a current file refuses them first).

use std::time::Instant;

use candle_core::Device;
use serde_json::json;

use crate::checkpoint_header_edit::*;
use crate::checkpoint_header_files::*;

/// Asserts that `msg` refuses the file `path` for its parameter count, and that the refusal
/// took under a second (building the model took seconds and 3.6 GB; the refusal reads a
/// header: a second is far above it on any machine).
fn assert_refused_by_count(what: &str, msg: &str, path: &std::path::Path, started: Instant) {
    assert_names(
        what,
        msg,
        path,
        &["parameters", "refused before building the model"],
    );
    let took = started.elapsed().as_secs_f64();
    assert!(took < 1.0, "{what}: refused after {took:.2} s");
}

/// `width` 4 → 30000 in a flow model file and a training checkpoint: refused by every
/// loader, naming the file, before the model is built.
#[test]
fn a_flow_file_edited_to_a_huge_model_is_refused_before_building_it() {
    let dir = test_dir("size-flow");
    let width = "/flow/layers/1/potential/width";
    let model = without_file_digest(&std::fs::read(flow_model_file(&dir)).unwrap());
    let model = set_config(&model, "cpflow", width, json!(30000));
    let p = write(&dir, "wide.safetensors", &model);
    let t = Instant::now();
    let msg = refusal("Flow::load", cpflow::Flow::load(&p, &Device::Cpu));
    assert_refused_by_count("Flow::load", &msg, &p, t);
    let t = Instant::now();
    let msg = refusal("load_checkpoint", cpflow::load_checkpoint(&p, &Device::Cpu));
    assert_refused_by_count("load_checkpoint", &msg, &p, t);

    let ck = without_file_digest(&std::fs::read(flow_checkpoint(&dir)).unwrap());
    let ck = set_config(&ck, "cpflow", width, json!(30000));
    let p = write(&dir, "wide-checkpoint.safetensors", &ck);
    let t = Instant::now();
    let msg = refusal("resume", cpflow::Trainer::resume(&p, &Device::Cpu, None));
    assert_refused_by_count("resume", &msg, &p, t);
    std::fs::remove_dir_all(&dir).ok();
}

/// The image flow and its training checkpoint with a convolutional width 4 → 3000 (1.6e8
/// parameters: 1.3 GB in f64).
#[test]
fn an_image_file_edited_to_a_huge_model_is_refused_before_building_it() {
    let dir = test_dir("size-image");
    let model = without_file_digest(&std::fs::read(image_model_file(&dir)).unwrap());
    let widen = |c: &mut serde_json::Value| {
        let layers = c["flow"]["layers"].as_array_mut().unwrap();
        let block = layers.iter_mut().find(|l| l["layer"] == "cpf").unwrap();
        block["potential"]["width"] = json!(3000);
    };
    let model = edit_config(&model, "cpflow_image", widen);
    let p = write(&dir, "wide.safetensors", &model);
    let t = Instant::now();
    let msg = refusal(
        "ImageFlow::load",
        cpflow::image::ImageFlow::load(&p, &Device::Cpu),
    );
    assert_refused_by_count("ImageFlow::load", &msg, &p, t);

    let ck = std::fs::read(image_checkpoint(&dir, "ck.safetensors", |t| t)).unwrap();
    let ck = edit_config(&without_file_digest(&ck), "cpflow_image_train", widen);
    let p = write(&dir, "wide-checkpoint.safetensors", &ck);
    let t = Instant::now();
    let msg = refusal(
        "load_image_checkpoint",
        cpflow::image::train::load_image_checkpoint(&p, &Device::Cpu),
    );
    assert_refused_by_count("load_image_checkpoint", &msg, &p, t);
    std::fs::remove_dir_all(&dir).ok();
}

/// A VAE weights file with `model.width = 30000` (the CP-Flow posterior's PICNN) or 3000
/// encoder and decoder channels.
#[cfg(feature = "vae")]
#[test]
fn a_vae_file_edited_to_a_huge_model_is_refused_before_building_it() {
    let dir = test_dir("size-vae");
    let path = vae_file(&dir, cpflow::vae::PosteriorKind::CpFlow, |t| t);
    let bytes = without_file_digest(&std::fs::read(path).unwrap());
    let cases = [
        ("/config/model/width", 30000),
        ("/config/model/architecture/channels", 3000),
    ];
    for (at, value) in cases {
        let damaged = set_config(&bytes, "cpflow-vae", at, json!(value));
        let p = write(&dir, "wide.safetensors", &damaged);
        let t = Instant::now();
        let msg = refusal(at, cpflow::vae::load_vae_file(&p, &Device::Cpu));
        assert_refused_by_count(at, &msg, &p, t);
    }
    std::fs::remove_dir_all(&dir).ok();
}
