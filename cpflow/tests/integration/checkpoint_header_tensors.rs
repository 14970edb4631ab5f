//! The tensor table against the model (s12 fuzz audit, findings 3 and 5): the image and VAE
//! loaders ignored extra tensors and `load_image_checkpoint` never compared names or shapes
//! with the model; errors behind the loaders (a weight of another shape, a configuration the
//! constructor refuses, an unknown layer name, a bad RNG state) did not name the file.

use candle_core::{Device, Tensor};
use serde_json::json;

use crate::checkpoint_header_edit::*;
use crate::checkpoint_header_files::*;

type Tensors = Vec<(String, Tensor)>;

/// The first weight of `tensors` that is not an ActNorm flag, whose name contains `part`.
fn weight_named(tensors: &Tensors, part: &str) -> String {
    tensors
        .iter()
        .map(|(k, _)| k.clone())
        .find(|k| k.contains(part) && !k.ends_with("initialized"))
        .unwrap()
}

/// Three damaged variants of a list of tensors: one tensor more, one less (the weight
/// whose name contains `part`), that weight of shape `[1, n]`; with what the refusal says.
type Variant = (&'static str, Box<dyn Fn(Tensors) -> Tensors>, &'static str);
fn variants(part: &str) -> Vec<Variant> {
    let part = part.to_string();
    let p2 = part.clone();
    vec![
        (
            "extra",
            Box::new(|mut t: Tensors| {
                let prefix = if t[0].0.starts_with("model.") {
                    "model."
                } else {
                    ""
                };
                let one = Tensor::new(&[1.0f64], &Device::Cpu).unwrap();
                t.push((format!("{prefix}layers.99.bogus"), one));
                t
            }),
            "unexpected tensor",
        ),
        (
            "missing",
            Box::new(move |t: Tensors| {
                let name = weight_named(&t, &part);
                t.into_iter().filter(|(k, _)| *k != name).collect()
            }),
            "missing tensor",
        ),
        (
            "mis-shaped",
            Box::new(move |t: Tensors| {
                let name = weight_named(&t, &p2);
                let flat = |(k, v): (String, Tensor)| {
                    let v = if k == name {
                        v.flatten_all().unwrap().unsqueeze(0).unwrap()
                    } else {
                        v
                    };
                    (k, v)
                };
                t.into_iter().map(flat).collect()
            }),
            "has shape",
        ),
    ]
}

/// The image training checkpoint and `ImageFlow::load` (which reads its current weights)
/// refuse a tensor more, one less and one of another shape, naming the file and the tensor.
#[test]
fn image_loaders_refuse_extra_missing_and_misshaped_tensors() {
    let dir = test_dir("tensors-image");
    for (what, edit, words) in variants("icnn") {
        let p = image_checkpoint(&dir, "damaged.safetensors", edit);
        let msg = refusal(
            what,
            cpflow::image::train::load_image_checkpoint(&p, &Device::Cpu),
        );
        assert_names(what, &msg, &p, &[words]);
        let msg = refusal(what, cpflow::image::ImageFlow::load(&p, &Device::Cpu));
        assert_names(what, &msg, &p, &[words]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `load_vae_file` refuses a tensor more, one less and one of another shape, naming the file
/// and the tensor.
#[cfg(feature = "vae")]
#[test]
fn the_vae_loader_refuses_extra_missing_and_misshaped_tensors() {
    let dir = test_dir("tensors-vae");
    for (what, edit, words) in variants("encoder") {
        let p = vae_file(&dir, cpflow::vae::PosteriorKind::Gaussian, edit);
        let msg = refusal(what, cpflow::vae::load_vae_file(&p, &Device::Cpu));
        assert_names(what, &msg, &p, &[words]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The errors met behind the loaders name the file: a weight of another shape, a
/// configuration the constructor refuses, an unknown layer or variant name, an unsupported
/// format version (files of the older format, so that the header checksum does not refuse
/// them first).
#[test]
fn errors_behind_the_loaders_name_the_file() {
    let dir = test_dir("tensors-named");
    let flow = without_file_digest(&std::fs::read(flow_model_file(&dir)).unwrap());
    let shape = edit_header(&flow, |h| h["layers.0.bias"]["shape"] = json!([2]));
    let p = write(&dir, "shape.safetensors", &shape);
    let msg = refusal("shape", cpflow::Flow::load(&p, &Device::Cpu));
    assert_names("shape", &msg, &p, &["layers.0.bias", "[2]"]);
    let dim = set_config(&flow, "cpflow", "/flow/dim", json!(0));
    let p = write(&dir, "dim.safetensors", &dim);
    let msg = refusal("dim", cpflow::Flow::load(&p, &Device::Cpu));
    assert_names("dim", &msg, &p, &["dimension must be positive"]);

    let image = std::fs::read(image_model_file(&dir)).unwrap();
    let load = cpflow::image::ImageFlow::load;
    for (what, bytes, words) in [
        (
            "variant",
            replace_in_config(&image, "cpflow_image", "\"logit\"", "\"logTt\""),
            "unknown variant `logTt`",
        ),
        (
            "version",
            set_config(&image, "cpflow_image", "/format_version", json!(2)),
            "unsupported image-flow format 2",
        ),
    ] {
        let p = write(&dir, "damaged.safetensors", &bytes);
        assert_names(what, &refusal(what, load(&p, &Device::Cpu)), &p, &[words]);
    }
    let ck = std::fs::read(image_checkpoint(&dir, "ck.safetensors", |t| t)).unwrap();
    let key = "cpflow_image_train";
    for (what, bytes, words) in [
        (
            "variant",
            replace_in_config(&ck, key, "\"logit\"", "\"logTt\""),
            "unknown variant `logTt`",
        ),
        (
            "version",
            set_config(&ck, key, "/format_version", json!(2)),
            "format 2",
        ),
    ] {
        let p = write(&dir, "damaged.safetensors", &bytes);
        let msg = refusal(
            what,
            cpflow::image::train::load_image_checkpoint(&p, &Device::Cpu),
        );
        assert_names(what, &msg, &p, &[words]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `Trainer::resume`: an optimiser moment of another shape and a bad RNG state are refused
/// naming the file ("optimiser state shape mismatch for layers.0.bias", "bad RNG state:
/// seed must be 32 bytes" did not).
#[test]
fn resume_errors_name_the_file() {
    let dir = test_dir("tensors-resume");
    let ck = without_file_digest(&std::fs::read(flow_checkpoint(&dir)).unwrap());
    let moment = edit_header(&ck, |h| h["adam.m.layers.0.bias"]["shape"] = json!([2]));
    let seed = set_config(&ck, "cpflow", "/rng/seed_hex", json!(""));
    for (what, bytes, words) in [
        ("moment", moment, "adam.m.layers.0.bias"),
        ("rng", seed, "seed must be 32 bytes"),
    ] {
        let p = write(&dir, "damaged.safetensors", &bytes);
        let msg = refusal(what, cpflow::Trainer::resume(&p, &Device::Cpu, None));
        assert_names(what, &msg, &p, &[words]);
    }
    std::fs::remove_dir_all(&dir).ok();
}
