//! Editing the safetensors header of a weights file, as the s12 fuzz audit did
//! (`/work/scratch/fuzz/audit_fuzz.rs`): a configuration value, a key, a dtype tag, the
//! offsets of two tensors, the checksum entries. The tests of `checkpoint_header_*` damage
//! the files cpflow writes with these and check that every loader refuses them.

use std::path::Path;

use serde_json::Value;

/// The metadata key of the data checksum (an older cpflow's only checksum).
pub const DATA_KEY: &str = "cpflow.data_sha256";
/// The metadata key of the checksum of header and data.
pub const FILE_KEY: &str = "cpflow.file_sha256";

/// The header (JSON) and the data section of safetensors `bytes`.
pub fn split(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

/// Safetensors bytes of `header` and `data` (the header padded to 8 bytes).
pub fn join(header: &Value, data: &[u8]) -> Vec<u8> {
    let mut text = serde_json::to_vec(header).unwrap();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

/// `bytes` with their header edited by `f`.
pub fn edit_header(bytes: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let (mut header, data) = split(bytes);
    f(&mut header);
    join(&header, &data)
}

/// `bytes` as an older cpflow wrote them: the data checksum, no checksum of the header.
pub fn without_file_digest(bytes: &[u8]) -> Vec<u8> {
    edit_header(bytes, |h| {
        let meta = h["__metadata__"].as_object_mut().unwrap();
        // (A file without it is one an older cpflow wrote already.)
        meta.remove(FILE_KEY);
        assert!(meta.contains_key(DATA_KEY));
    })
}

/// `bytes` with the JSON held under the metadata key `key` edited by `f`.
pub fn edit_config(bytes: &[u8], key: &str, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    edit_header(bytes, |h| {
        let text = h["__metadata__"][key].as_str().unwrap().to_string();
        let mut config: Value = serde_json::from_str(&text).unwrap();
        f(&mut config);
        h["__metadata__"][key] = Value::String(config.to_string());
    })
}

/// `bytes` with the value at the JSON pointer `at` of the metadata `key` set to `value`.
pub fn set_config(bytes: &[u8], key: &str, at: &str, value: Value) -> Vec<u8> {
    edit_config(bytes, key, |c| {
        *c.pointer_mut(at).unwrap_or_else(|| panic!("no {at}")) = value;
    })
}

/// `bytes` with the metadata `key`'s text edited by a plain replacement (a flipped byte:
/// `"prior"` → `"prGor"`).
pub fn replace_in_config(bytes: &[u8], key: &str, from: &str, to: &str) -> Vec<u8> {
    edit_header(bytes, |h| {
        let text = h["__metadata__"][key].as_str().unwrap();
        assert!(text.contains(from), "{from} not in {text}");
        h["__metadata__"][key] = Value::String(text.replacen(from, to, 1));
    })
}

/// `bytes` with the dtype tag of tensor `name` set to `dtype` (same byte size: F64 → I64).
pub fn set_dtype(bytes: &[u8], name: &str, dtype: &str) -> Vec<u8> {
    edit_header(bytes, |h| h[name]["dtype"] = Value::String(dtype.into()))
}

/// `bytes` with the data offsets of tensors `a` and `b` (of one shape) exchanged.
pub fn swap_offsets(bytes: &[u8], a: &str, b: &str) -> Vec<u8> {
    edit_header(bytes, |h| {
        assert_eq!(h[a]["shape"], h[b]["shape"]);
        let (oa, ob) = (h[a]["data_offsets"].clone(), h[b]["data_offsets"].clone());
        h[a]["data_offsets"] = ob;
        h[b]["data_offsets"] = oa;
    })
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A fresh directory for one test.
pub fn test_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cpflow-header-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The message of `r`'s error, panicking (with `what`) when it loaded.
pub fn refusal<T>(what: &str, r: cpflow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("{what}: the damaged file loaded"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that the message `msg` names the file `path` and holds every one of `words`.
pub fn assert_names(what: &str, msg: &str, path: &Path, words: &[&str]) {
    assert!(
        msg.contains(&path.display().to_string()),
        "{what}: the message does not name {}: {msg}",
        path.display()
    );
    for w in words {
        assert!(msg.contains(w), "{what}: `{w}` not in: {msg}");
    }
}
