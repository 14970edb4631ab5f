use super::*;
use crate::{FloatType, PotentialConfig};
use icnn::{ActivationKind, Icnn3Config};
use std::path::PathBuf;

/// `[ActNorm, CPF, ActNorm]` in f64, dimension 2, initialised on a fixed batch.
fn small_flow() -> Flow {
    let pot = PotentialConfig::Icnn3(Icnn3Config {
        dim: 2,
        width: 4,
        depth: 2,
        activation: ActivationKind::GaussianSoftplus,
        zero_shift: true,
        symm_act_first: true,
    });
    let cfg = FlowConfig::tabular(2, 1, pot).with_float(FloatType::F64);
    let flow = Flow::new(cfg, &Device::Cpu).unwrap();
    let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 2.0], [-0.3, 0.7]], &Device::Cpu).unwrap();
    flow.initialize(&x).unwrap();
    flow
}

/// A fresh directory for one test.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpflow-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Overwrite the f64 data of tensor `name` in the safetensors file `path` with `value`.
fn overwrite_f64(path: &Path, name: &str, value: f64) {
    let mut bytes = std::fs::read(path).unwrap();
    let (n, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let info = md.info(name).unwrap();
    assert_eq!(info.dtype, safetensors::Dtype::F64);
    let (a, b) = info.data_offsets;
    let start = 8 + n;
    for chunk in bytes[start + a..start + b].chunks_mut(8) {
        chunk.copy_from_slice(&value.to_le_bytes());
    }
    // The checksum follows, so that the loaders' checks of the values are reached.
    crate::checkpoint_digest::rewrite_digests(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// A weight changed to another finite value is refused by the checksum (it loaded and
/// changed the model's scores).
#[test]
fn a_finite_change_of_a_weight_is_refused() {
    let dir = test_dir("checksum");
    let path = dir.join("flow.safetensors");
    let flow = small_flow();
    flow.save(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let (n, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let name = flow
        .weight_tensors()
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.starts_with("layers.1.") && k.contains("weight"))
        .unwrap();
    let (a, _) = md.info(&name).unwrap().data_offsets;
    bytes[8 + n + a] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let msg = checkpoint_error(Flow::load(&path, &Device::Cpu));
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("checksum"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn checkpoint_error(r: Result<Flow>) -> String {
    match r {
        Ok(_) => panic!("the checkpoint loaded"),
        Err(e @ CpflowError::Checkpoint(_)) => e.to_string(),
        Err(e) => panic!("not a checkpoint error: {e}"),
    }
}

/// A truncated file (its header cut, or its data cut after a whole header) and a file
/// whose metadata is not ours are refused naming the file (the messages were bare
/// "safetensors (de)serialisation failed" / "JSON (de)serialisation failed").
#[test]
fn truncated_and_foreign_files_are_named() {
    let dir = test_dir("truncated");
    let path = dir.join("flow.safetensors");
    small_flow().save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for len in [4, 20, bytes.len() - 7] {
        let cut = dir.join(format!("cut{len}.safetensors"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let msg = match Flow::load(&cut, &Device::Cpu) {
            Ok(_) => panic!("a truncated file loaded"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains(&cut.display().to_string()), "{len}: {msg}");
    }
    let foreign = dir.join("foreign.safetensors");
    let mut info = HashMap::new();
    info.insert(METADATA_KEY.to_string(), "{\"not\": \"ours\"}".to_string());
    let t = Tensor::zeros(2, candle_core::DType::F64, &Device::Cpu).unwrap();
    std::fs::write(
        &foreign,
        safetensors::serialize(vec![("x".to_string(), t)], Some(info)).unwrap(),
    )
    .unwrap();
    let msg = checkpoint_error(Flow::load(&foreign, &Device::Cpu));
    assert!(
        msg.contains("foreign.safetensors") && msg.contains("metadata"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nan_weight_is_refused_at_load_naming_file_and_tensor() {
    let dir = test_dir("nan");
    let path = dir.join("flow.safetensors");
    let flow = small_flow();
    flow.save(&path).unwrap();
    let name = flow
        .weight_tensors()
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.starts_with("layers.1.") && k.contains("weight"))
        .unwrap();
    overwrite_f64(&path, &name, f64::NAN);
    for msg in [
        checkpoint_error(Flow::load(&path, &Device::Cpu)),
        checkpoint_error(Flow::load_best(&path, &Device::Cpu)),
        checkpoint_error(load_checkpoint(&path, &Device::Cpu).map(|_| small_flow())),
    ] {
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("tensor {name} holds")), "{msg}");
        assert!(msg.contains("non-finite"), "{msg}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn overwritten_tail_is_refused_at_load() {
    // 0xff bytes are NaN; they cover the last tensors of the file, among them an
    // `initialized` flag, and used to load as an uninitialised flow.
    let dir = test_dir("tail");
    let path = dir.join("flow.safetensors");
    small_flow().save(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 64..].fill(0xff);
    std::fs::write(&path, bytes).unwrap();
    let msg = checkpoint_error(Flow::load(&path, &Device::Cpu));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(": tensor layers."), "{msg}");
    assert!(msg.contains("non-finite"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn init_flag_other_than_0_or_1_is_refused() {
    let dir = test_dir("flag");
    let path = dir.join("flow.safetensors");
    small_flow().save(&path).unwrap();
    overwrite_f64(&path, "layers.0.initialized", 0.75);
    let msg = checkpoint_error(Flow::load(&path, &Device::Cpu));
    assert!(
        msg.contains("tensor layers.0.initialized holds 0.75"),
        "{msg}"
    );
    // 0 (an uninitialised flow saved as such) is valid.
    small_flow().save(&path).unwrap();
    overwrite_f64(&path, "layers.0.initialized", 0.0);
    let flow = Flow::load(&path, &Device::Cpu).unwrap();
    assert!(!flow.is_initialized().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unexpected_tensors_are_refused_by_name() {
    let dir = test_dir("extra");
    let path = dir.join("flow.safetensors");
    let flow = small_flow();
    let meta = CheckpointMeta::weights_only(flow.config().clone());
    let one = Tensor::new(&[1.0f64], &Device::Cpu).unwrap();
    let mut tensors = flow.weight_tensors();
    tensors.push(("layers.99.bogus".into(), one.clone()));
    save_checkpoint(&path, &meta, tensors.clone()).unwrap();
    let msg = checkpoint_error(Flow::load(&path, &Device::Cpu));
    assert!(msg.contains("unexpected tensor layers.99.bogus:"), "{msg}");
    // Optimiser and best prefixes of names that are no variable are unexpected too.
    tensors.push(("adam.m.nothing".into(), one.clone()));
    tensors.push(("best.nothing".into(), one));
    save_checkpoint(&path, &meta, tensors).unwrap();
    let msg = checkpoint_error(Flow::load(&path, &Device::Cpu));
    assert!(
        msg.contains("unexpected tensors adam.m.nothing, best.nothing, layers.99.bogus:"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn best_and_optimiser_tensors_of_the_model_are_accepted() {
    let dir = test_dir("best");
    let path = dir.join("checkpoint.safetensors");
    let flow = small_flow();
    let meta = CheckpointMeta::weights_only(flow.config().clone());
    let weights = flow.weight_tensors();
    let mut tensors = weights.clone();
    for (k, t) in &weights {
        // best weights: the current ones plus 1 (flags stay flags)
        let best = if k.ends_with(".initialized") {
            t.clone()
        } else {
            (t + 1.0).unwrap()
        };
        tensors.push((format!("{BEST_PREFIX}{k}"), best));
        tensors.push((format!("adam.m.{k}"), t.zeros_like().unwrap()));
        tensors.push((format!("adam.v.{k}"), t.ones_like().unwrap()));
    }
    save_checkpoint(&path, &meta, tensors).unwrap();
    assert_eq!(
        load_checkpoint(&path, &Device::Cpu).unwrap().tensors.len(),
        4 * weights.len()
    );
    let current = Flow::load(&path, &Device::Cpu).unwrap();
    let best = Flow::load_best(&path, &Device::Cpu).unwrap();
    for (((k, w), (_, c)), (_, b)) in weights
        .iter()
        .zip(current.weight_tensors())
        .zip(best.weight_tensors())
    {
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert_eq!(diff(w, &c), 0.0, "{k}");
        let shift = if k.ends_with(".initialized") {
            0.0
        } else {
            1.0
        };
        assert_eq!(diff(&(w + shift).unwrap(), &b), 0.0, "{k}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each kind of cpflow weights file is told apart by its metadata key (an image-flow
/// training checkpoint holds both image keys); other files have no kind.
#[test]
fn file_kinds_are_named_by_their_metadata_key() {
    let kind = |keys: &[&str]| {
        let m: HashMap<String, String> =
            keys.iter().map(|k| (k.to_string(), "{}".into())).collect();
        super::file_kind(Some(&m))
    };
    let starts = |keys: &[&str], prefix: &str| {
        let k = kind(keys).unwrap_or_else(|| panic!("{keys:?}: no kind"));
        assert!(k.starts_with(prefix), "{keys:?}: {k}");
    };
    starts(&[METADATA_KEY], "a flow checkpoint");
    starts(&["cpflow-vae"], "a VAE");
    starts(&[crate::image::IMAGE_METADATA_KEY], "an image-flow model");
    starts(
        &[
            crate::image::IMAGE_METADATA_KEY,
            crate::image::train::IMAGE_TRAIN_METADATA_KEY,
        ],
        "an image-flow training checkpoint",
    );
    assert_eq!(kind(&["something-else"]), None);
    assert_eq!(super::file_kind(None), None);
}

/// A write that fails half-way (here: the file-size limit of `ulimit -f`, in a child process
/// that ignores SIGXFSZ so that the write returns EFBIG) leaves neither the target nor the
/// temporary file behind (the temporary file stayed before).
#[test]
fn write_atomic_leaves_no_temporary_file_when_the_write_fails() {
    const CHILD: &str = "CPFLOW_WRITE_ATOMIC_CHILD_DIR";
    if let Ok(dir) = std::env::var(CHILD) {
        let err = write_atomic(&Path::new(&dir).join("big.bin"), &vec![7u8; 1 << 20]).unwrap_err();
        assert!(matches!(err, CpflowError::Io { .. }), "{err:?}");
        return;
    }
    let dir = test_dir("write-fails");
    let exe = std::env::current_exe().unwrap();
    // The child's output goes to pipes: the file-size limit would also fail its writes to a
    // regular file (a CI log redirected to a file larger than the limit).
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 64; exec \"$0\" --exact --nocapture \"$1\"")
        .arg(&exe)
        .arg("checkpoint::tests::write_atomic_leaves_no_temporary_file_when_the_write_fails")
        .env(CHILD, &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the child's write did not fail as expected: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    std::fs::remove_dir_all(&dir).ok();
}
