//! Checksums of every file of weights cpflow writes, kept in the file's metadata and checked
//! when the file is read:
//!
//! - [`FILE_SHA256_KEY`]: the sha256 of a canonical form of the safetensors header (every
//!   tensor's name, dtype, shape and data offsets, and every metadata entry but this one)
//!   followed by the data section. A changed byte anywhere in the file is refused: in a
//!   weight, in the configuration (a key renamed by a flipped byte, an edited value), in a
//!   dtype tag or in the offsets of two tensors of one shape.
//! - [`DATA_SHA256_KEY`]: the sha256 of the data section alone, the only checksum of files
//!   written before the header was covered; still written, and checked when a file holds no
//!   [`FILE_SHA256_KEY`] ([`check_digests`]).
//!
//! The loaders' other checks (names, shapes, finite values, ActNorm flags) catch what makes
//! a file unusable; the checksums catch the damage that leaves a file usable and different.
//!
//! ```
//! use cpflow::checkpoint_digest::{DATA_SHA256_KEY, FILE_SHA256_KEY, check_digests};
//! # use cpflow::candle::{Device, Tensor};
//! # fn main() -> cpflow::Result<()> {
//! let meta = cpflow::checkpoint::CheckpointMeta::weights_only(cpflow::FlowConfig::toy_reference(1));
//! let t = Tensor::new(&[1.0f64, 2.0, 3.0], &Device::Cpu)?;
//! let mut bytes = cpflow::checkpoint::to_bytes(&meta, vec![("w".into(), t)])?;
//! let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
//! let recorded = header.metadata().as_ref().unwrap();
//! assert!(recorded.contains_key(FILE_SHA256_KEY) && recorded.contains_key(DATA_SHA256_KEY));
//! let path = std::path::Path::new("w.safetensors");
//! check_digests(path, &bytes)?;
//! // 2.0 becomes 2.0000000000000004: finite, and refused.
//! let last = bytes.len() - 16;
//! bytes[last] ^= 1;
//! assert!(check_digests(path, &bytes).unwrap_err().to_string().contains("checksum"));
//! bytes[last] ^= 1;
//! // So is a changed byte of the header: the prior's key `"prior"` becomes `"prGor"`.
//! let at = bytes.windows(7).position(|w| w == b"\\\"prior").unwrap() + 4;
//! bytes[at] = b'G';
//! assert!(check_digests(path, &bytes).unwrap_err().to_string().contains("checksum"));
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Metadata, TensorInfo};
use sha2::{Digest, Sha256};

use crate::error::{CpflowError, Result};

/// The metadata key of the data section's sha256 (lower-case hex).
pub const DATA_SHA256_KEY: &str = "cpflow.data_sha256";

/// The metadata key of the whole file's sha256 (lower-case hex): the canonical header
/// (tensor table and metadata, this entry excepted) and the data section ([`check_digests`]).
pub const FILE_SHA256_KEY: &str = "cpflow.file_sha256";

/// The length of the header announced by the first 8 bytes of the safetensors `bytes`, and
/// where the data section starts; `None` for bytes too short to hold that header.
fn data_start(bytes: &[u8]) -> Option<(usize, usize)> {
    let len: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let n = usize::try_from(u64::from_le_bytes(len)).ok()?;
    let start = n.checked_add(8)?;
    (start <= bytes.len()).then_some((n, start))
}

/// The sha256 (lower-case hex) of the data section of the safetensors `bytes` (everything
/// after the 8-byte header length and the header), or `None` for bytes too short to hold
/// the header they announce.
fn data_sha256(bytes: &[u8]) -> Option<String> {
    let (_, start) = data_start(bytes)?;
    Some(hex::encode(Sha256::digest(bytes.get(start..)?)))
}

/// The sha256 (lower-case hex) recorded under [`FILE_SHA256_KEY`] for the safetensors
/// `bytes` whose parsed header is `header`: of the canonical JSON of the header — the tensor
/// table by name (`dtype`, `shape`, `data_offsets` as read) and the metadata by key without
/// [`FILE_SHA256_KEY`] — its length first, then the data section. Canonical, so that it does
/// not depend on the order or spacing of the header's JSON, only on what the loaders read.
fn file_sha256(header: &Metadata, bytes: &[u8]) -> Option<String> {
    let (_, start) = data_start(bytes)?;
    let tensors: BTreeMap<String, &TensorInfo> = header.tensors().into_iter().collect();
    let metadata: BTreeMap<&String, &String> = header
        .metadata()
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != FILE_SHA256_KEY)
        .collect();
    let canonical = serde_json::to_vec(&(metadata, tensors)).ok()?;
    let mut h = Sha256::new();
    h.update(b"cpflow file sha256 v1\0");
    h.update((canonical.len() as u64).to_le_bytes());
    h.update(&canonical);
    h.update(bytes.get(start..)?);
    Some(hex::encode(h.finalize()))
}

/// Safetensors bytes of the header `entries` (tensor table, without `__metadata__`), the
/// metadata `meta` and the `data` section: the keys in sorted order (safetensors writes the
/// metadata in a hash map's order, which differs between processes once it holds two keys:
/// the same weights must give the same file), the header padded with spaces to a multiple of
/// 8 bytes, as safetensors pads it.
fn assemble(
    entries: &BTreeMap<String, serde_json::Value>,
    meta: &BTreeMap<String, String>,
    data: &[u8],
) -> Result<Vec<u8>> {
    let mut all = entries.clone();
    all.insert("__metadata__".into(), serde_json::to_value(meta)?);
    let mut text = serde_json::to_vec(&all)?;
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + data.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    Ok(out)
}

/// Safetensors bytes of `tensors` with the metadata `info` plus [`DATA_SHA256_KEY`], the
/// sha256 of the data section, and [`FILE_SHA256_KEY`], that of the whole file. The data
/// section does not depend on the header, so the tensors are serialised once and the header
/// is written again with the digests ([`assemble`]: sorted keys, padded).
pub(crate) fn serialize_with_sha256<V: safetensors::View>(
    tensors: Vec<(String, V)>,
    info: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let bytes = safetensors::serialize(tensors, Some(info))?;
    let bad = || CpflowError::Checkpoint("safetensors wrote an unreadable header".into());
    let (n, start) = data_start(&bytes).ok_or_else(bad)?;
    let (header, data) = (&bytes[8..8 + n], &bytes[start..]);
    let mut entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header)?;
    let mut meta: BTreeMap<String, String> = match entries.remove("__metadata__") {
        Some(m) => serde_json::from_value(m)?,
        None => BTreeMap::new(),
    };
    meta.insert(
        DATA_SHA256_KEY.to_string(),
        hex::encode(Sha256::digest(data)),
    );
    let without = assemble(&entries, &meta, data)?;
    let (_, parsed) = safetensors::SafeTensors::read_metadata(&without)?;
    let digest = file_sha256(&parsed, &without).ok_or_else(bad)?;
    meta.insert(FILE_SHA256_KEY.to_string(), digest);
    assemble(&entries, &meta, data)
}

/// The header of the safetensors `bytes` read from `path` (its length and metadata), or a
/// [`CpflowError::Checkpoint`] naming the file when they are not a whole safetensors file
/// (truncated, empty, another format): every loader of weights reads it first.
pub(crate) fn read_header(path: &Path, bytes: &[u8]) -> Result<(usize, Metadata)> {
    safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        CpflowError::Checkpoint(format!(
            "{} is not a readable safetensors file ({e}): truncated or corrupt",
            path.display()
        ))
    })
}

/// The first 16 hex digits of a digest, for messages.
fn short(h: &str) -> String {
    h.chars().take(16).collect()
}

/// Checks the safetensors `bytes` (read from `path`) against the checksums their metadata
/// records: [`FILE_SHA256_KEY`] (header and data) when present, else [`DATA_SHA256_KEY`]
/// (the data alone: files written before the header was covered). A file with neither
/// (written before cpflow kept them, or by another program) passes. A mismatch is a
/// [`CpflowError::Checkpoint`] naming the file.
pub fn check_digests(path: &Path, bytes: &[u8]) -> Result<()> {
    let (_, header) = read_header(path, bytes)?;
    let Some(recorded) = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(FILE_SHA256_KEY))
    else {
        return check_data_sha256(path, bytes);
    };
    let read = file_sha256(&header, bytes).unwrap_or_default();
    if read != *recorded {
        return Err(CpflowError::Checkpoint(format!(
            "{}: the header (configuration, tensor table) or the tensor data do not match the \
             checksum written with them (sha256 {}… recorded, {}… read): the file is corrupt",
            path.display(),
            short(recorded),
            short(&read)
        )));
    }
    Ok(())
}

/// Checks the data section of the safetensors `bytes` (read from `path`) against the
/// sha256 its metadata records under [`DATA_SHA256_KEY`]; a file without one passes. A
/// mismatch is a [`CpflowError::Checkpoint`] naming the file. The loaders call
/// [`check_digests`], which also covers the header when the file records it.
pub fn check_data_sha256(path: &Path, bytes: &[u8]) -> Result<()> {
    let (_, header) = read_header(path, bytes)?;
    let Some(recorded) = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(DATA_SHA256_KEY))
    else {
        return Ok(());
    };
    let read = data_sha256(bytes).unwrap_or_default();
    if read != *recorded {
        return Err(CpflowError::Checkpoint(format!(
            "{}: the tensor data do not match the checksum written with them (sha256 {}… \
             recorded, {}… read): the file is corrupt",
            path.display(),
            short(recorded),
            short(&read)
        )));
    }
    Ok(())
}

/// Makes the recorded checksums of the safetensors `bytes` those of their contents again,
/// in place (a digest's hex has a fixed length, so the header keeps its size): tests that
/// edit a value or the header on purpose use it to reach the loaders' other checks.
#[cfg(test)]
pub(crate) fn rewrite_digests(bytes: &mut [u8]) {
    let replace = |bytes: &mut [u8], old: &str, new: &str| {
        let n = data_start(bytes).unwrap().0;
        let head = &mut bytes[8..8 + n];
        let at = head
            .windows(old.len())
            .position(|w| w == old.as_bytes())
            .unwrap();
        head[at..at + new.len()].copy_from_slice(new.as_bytes());
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    if let Some(old) = meta.get(DATA_SHA256_KEY) {
        replace(bytes, old, &data_sha256(bytes).unwrap());
    }
    if let Some(old) = meta.get(FILE_SHA256_KEY) {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
        replace(bytes, old, &file_sha256(&header, bytes).unwrap());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn file() -> Vec<u8> {
        let t = Tensor::new(&[1.0f64, 2.0, 3.0], &Device::Cpu).unwrap();
        let info = HashMap::from([("k".to_string(), "v".to_string())]);
        serialize_with_sha256(vec![("w".to_string(), t)], info).unwrap()
    }

    /// A finite change of one value is refused; the digests rewritten, it passes; a file
    /// without a digest passes; the data digest is that of the data section alone.
    #[test]
    fn a_changed_value_fails_the_checksum() {
        let path = Path::new("x.safetensors");
        let mut bytes = file();
        check_digests(path, &bytes).unwrap();
        let n = bytes.len();
        bytes[n - 16] ^= 1;
        for err in [
            check_digests(path, &bytes).unwrap_err().to_string(),
            check_data_sha256(path, &bytes).unwrap_err().to_string(),
        ] {
            assert!(
                err.contains("x.safetensors") && err.contains("checksum"),
                "{err}"
            );
        }
        rewrite_digests(&mut bytes);
        check_digests(path, &bytes).unwrap();
        let back = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
        assert_eq!(
            back["w"].to_vec1::<f64>().unwrap()[1],
            2.0 + f64::EPSILON * 2.0
        );

        let t = Tensor::new(&[1.0f64], &Device::Cpu).unwrap();
        let plain = safetensors::serialize(vec![("w".to_string(), t)], None).unwrap();
        check_digests(path, &plain).unwrap();

        let (h, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let recorded = &header.metadata().as_ref().unwrap()[DATA_SHA256_KEY];
        assert_eq!(*recorded, hex::encode(Sha256::digest(&bytes[8 + h..])));
        assert_eq!(header.metadata().as_ref().unwrap()["k"], "v");
    }

    /// Two f64 tensors of one shape, `a` = [1, 2] and `b` = [3, 4], with the metadata
    /// `{"k": "{\"prior\": 1}"}` and the digests; and the same file as an older cpflow wrote
    /// it, with the data digest only.
    fn two_tensor_files() -> (Vec<u8>, Vec<u8>) {
        let a = Tensor::new(&[1.0f64, 2.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[3.0f64, 4.0], &Device::Cpu).unwrap();
        let info = HashMap::from([("k".to_string(), r#"{"prior": 1}"#.to_string())]);
        let tensors = vec![("a".to_string(), a), ("b".to_string(), b)];
        let new = serialize_with_sha256(tensors, info).unwrap();
        let (n, start) = data_start(&new).unwrap();
        let mut entries: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&new[8..8 + n]).unwrap();
        let mut meta: BTreeMap<String, String> =
            serde_json::from_value(entries.remove("__metadata__").unwrap()).unwrap();
        assert!(meta.remove(FILE_SHA256_KEY).is_some());
        let old = assemble(&entries, &meta, &new[start..]).unwrap();
        (new, old)
    }

    /// The edits of the header that loaded as another model (s12 fuzz audit) — a flipped
    /// byte in a metadata key, a dtype tag F64 → I64, the offsets of two tensors of one shape
    /// swapped — are refused by the file digest, naming the file; the digests rewritten,
    /// they pass. A file with the data digest only (an older cpflow's) is checked as before:
    /// its data, not its header.
    #[test]
    fn header_edits_fail_the_file_checksum() {
        let path = Path::new("two.safetensors");
        let (new, old) = two_tensor_files();
        check_digests(path, &new).unwrap();
        check_digests(path, &old).unwrap();
        let n = data_start(&new).unwrap().0;
        let header = String::from_utf8(new[8..8 + n].to_vec()).unwrap();
        let edits: [(&str, &str, &str); 3] = [
            ("key flip", "prior", "prGor"),
            ("dtype", "\"F64\"", "\"I64\""),
            ("offsets", "[0,16]", "[9,99]"),
        ];
        for (what, from, to) in edits {
            let mut edited = header.replacen(from, to, 1);
            if what == "offsets" {
                edited = edited
                    .replace("[16,32]", "[0,16]")
                    .replace("[9,99]", "[16,32]");
            }
            assert_ne!(edited, header, "{what}");
            let mut bytes = new.clone();
            bytes[8..8 + n].copy_from_slice(edited.as_bytes());
            // safetensors reads the edited header (the loaders would load it) …
            let (_, parsed) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            assert_eq!(parsed.tensors().len(), 2, "{what}");
            // … and the checksum refuses it.
            let err = check_digests(path, &bytes).unwrap_err().to_string();
            assert!(
                err.contains("two.safetensors")
                    && err.contains("header")
                    && err.contains("checksum"),
                "{what}: {err}"
            );
            rewrite_digests(&mut bytes);
            check_digests(path, &bytes).unwrap();
        }
        // The older file: a header edit passes (nothing covers it), a data edit does not.
        let n_old = data_start(&old).unwrap().0;
        let mut bytes = old.clone();
        let at = 8
            + String::from_utf8_lossy(&old[8..8 + n_old])
                .find("prior")
                .unwrap()
            + 2;
        bytes[at] = b'G';
        check_digests(path, &bytes).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let err = check_digests(path, &bytes).unwrap_err().to_string();
        assert!(err.contains("the tensor data do not match"), "{err}");
    }

    /// The file digest is that of the header as read, not of its bytes: the same header
    /// written with its entries in another order and other spacing passes.
    #[test]
    fn the_file_checksum_does_not_depend_on_the_header_layout() {
        let (new, _) = two_tensor_files();
        let (n, start) = data_start(&new).unwrap();
        let entries: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&new[8..8 + n]).unwrap();
        let mut text = String::from("{ ");
        for (i, (k, v)) in entries.iter().rev().enumerate() {
            let sep = if i == 0 { "" } else { " ,\n " };
            text += &format!("{sep}{} :  {}", serde_json::to_string(k).unwrap(), v);
        }
        text += " }";
        while text.len() % 8 != 0 {
            text.push(' ');
        }
        assert_ne!(text.as_bytes(), &new[8..8 + n]);
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(&new[start..]);
        check_digests(Path::new("x"), &bytes).unwrap();
    }

    /// A truncated or empty file is refused naming it by every loader of weights (the
    /// image and VAE loaders said only "safetensors (de)serialisation failed").
    #[test]
    fn every_loader_names_a_truncated_file() {
        let dir = std::env::temp_dir().join(format!("cpflow-truncated-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cut.safetensors");
        std::fs::write(&path, &file()[..5]).unwrap();
        let cpu = &Device::Cpu;
        #[cfg_attr(not(feature = "vae"), allow(unused_mut))]
        let mut messages = vec![
            crate::Flow::load(&path, cpu).err().unwrap().to_string(),
            crate::image::ImageFlow::load(&path, cpu)
                .err()
                .unwrap()
                .to_string(),
            crate::image::train::load_image_checkpoint(&path, cpu)
                .err()
                .unwrap()
                .to_string(),
        ];
        #[cfg(feature = "vae")]
        messages.push(
            crate::vae::load_vae_checkpoint(&path, cpu)
                .err()
                .unwrap()
                .to_string(),
        );
        for msg in messages {
            assert!(
                msg.contains("cut.safetensors") && msg.contains("truncated or corrupt"),
                "{msg}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The same tensors and metadata give the same bytes, whatever order the metadata's
    /// hash map iterates in (a new `RandomState` per map), and the file reads back.
    #[test]
    fn files_are_byte_identical_for_the_same_contents() {
        let t = Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let u = Tensor::new(&[5.0f64], &Device::Cpu).unwrap();
        let write = || {
            let info: HashMap<String, String> = (0..6)
                .map(|i| (format!("key{i}"), format!("{i}")))
                .collect();
            let tensors = vec![("b".to_string(), t.clone()), ("a".to_string(), u.clone())];
            serialize_with_sha256(tensors, info).unwrap()
        };
        let first = write();
        for _ in 0..8 {
            assert_eq!(write(), first);
        }
        assert_eq!(u64::from_le_bytes(first[..8].try_into().unwrap()) % 8, 0);
        check_digests(Path::new("x"), &first).unwrap();
        let back = candle_core::safetensors::load_buffer(&first, &Device::Cpu).unwrap();
        assert_eq!(
            back["b"].to_vec2::<f32>().unwrap(),
            [[1.0, 2.0], [3.0, 4.0]]
        );
        assert_eq!(back["a"].to_vec1::<f64>().unwrap(), [5.0]);
    }
}
