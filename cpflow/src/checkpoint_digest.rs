//! A checksum of every file of weights cpflow writes: the sha256 of the safetensors data
//! section, kept in the file's metadata under [`DATA_SHA256_KEY`] and checked when the file
//! is read. The loaders' other checks (names, finite values, ActNorm flags) catch what makes
//! a file unusable; a flipped byte that leaves a weight finite passed them all and changed
//! the model's scores silently.
//!
//! ```
//! use cpflow::checkpoint_digest::{DATA_SHA256_KEY, check_data_sha256};
//! use std::collections::HashMap;
//! # use cpflow::candle::{Device, Tensor};
//! # fn main() -> cpflow::Result<()> {
//! let meta = cpflow::checkpoint::CheckpointMeta::weights_only(cpflow::FlowConfig::toy_reference(1));
//! let t = Tensor::new(&[1.0f64, 2.0, 3.0], &Device::Cpu)?;
//! let mut bytes = cpflow::checkpoint::to_bytes(&meta, vec![("w".into(), t)])?;
//! let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
//! assert!(header.metadata().as_ref().unwrap().contains_key(DATA_SHA256_KEY));
//! let path = std::path::Path::new("w.safetensors");
//! check_data_sha256(path, &bytes)?;
//! // 2.0 becomes 2.0000000000000004: finite, and refused.
//! let last = bytes.len() - 16;
//! bytes[last] ^= 1;
//! assert!(check_data_sha256(path, &bytes).unwrap_err().to_string().contains("checksum"));
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{CpflowError, Result};

/// The metadata key of the data section's sha256 (lower-case hex).
pub const DATA_SHA256_KEY: &str = "cpflow.data_sha256";

/// The sha256 (lower-case hex) of the data section of the safetensors `bytes` (everything
/// after the 8-byte header length and the header), or `None` for bytes too short to hold
/// the header they announce.
fn data_sha256(bytes: &[u8]) -> Option<String> {
    let len: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let start = usize::try_from(u64::from_le_bytes(len))
        .ok()?
        .checked_add(8)?;
    Some(hex::encode(Sha256::digest(bytes.get(start..)?)))
}

/// Safetensors bytes of `tensors` with the metadata `info` plus [`DATA_SHA256_KEY`], the
/// sha256 of the data section. The data section does not depend on the header, so the
/// tensors are serialised once and the header is written again with the digest, its keys in
/// sorted order (safetensors writes the metadata in a hash map's order, which differs
/// between processes once it holds two keys: the same weights must give the same file) and
/// padded with spaces to a multiple of 8 bytes, as safetensors pads it.
pub(crate) fn serialize_with_sha256<V: safetensors::View>(
    tensors: Vec<(String, V)>,
    info: HashMap<String, String>,
) -> Result<Vec<u8>> {
    use std::collections::BTreeMap;
    let bytes = safetensors::serialize(tensors, Some(info))?;
    let bad = || CpflowError::Checkpoint("safetensors wrote an unreadable header".into());
    let len: [u8; 8] = bytes
        .get(..8)
        .ok_or_else(bad)?
        .try_into()
        .map_err(|_| bad())?;
    let n = usize::try_from(u64::from_le_bytes(len)).map_err(|_| bad())?;
    let (header, data) = (bytes.get(8..8 + n).ok_or_else(bad)?, &bytes[8 + n..]);
    let mut entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header)?;
    let mut meta: BTreeMap<String, String> = match entries.remove("__metadata__") {
        Some(m) => serde_json::from_value(m)?,
        None => BTreeMap::new(),
    };
    meta.insert(
        DATA_SHA256_KEY.to_string(),
        hex::encode(Sha256::digest(data)),
    );
    entries.insert("__metadata__".into(), serde_json::to_value(meta)?);
    let mut text = serde_json::to_vec(&entries)?;
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + data.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    Ok(out)
}

/// The header of the safetensors `bytes` read from `path` (its length and metadata), or a
/// [`CpflowError::Checkpoint`] naming the file when they are not a whole safetensors file
/// (truncated, empty, another format): every loader of weights reads it first.
pub(crate) fn read_header(
    path: &Path,
    bytes: &[u8],
) -> Result<(usize, safetensors::tensor::Metadata)> {
    safetensors::SafeTensors::read_metadata(bytes).map_err(|e| {
        CpflowError::Checkpoint(format!(
            "{} is not a readable safetensors file ({e}): truncated or corrupt",
            path.display()
        ))
    })
}

/// Checks the data section of the safetensors `bytes` (read from `path`) against the
/// sha256 its metadata records; a file without one (written before cpflow kept it, or by
/// another program) passes. A mismatch is a [`CpflowError::Checkpoint`] naming the file.
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
        let short = |h: &str| h.chars().take(16).collect::<String>();
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

/// Makes the recorded sha256 of the safetensors `bytes` that of their data section again,
/// in place (the digest's hex has a fixed length, so the header keeps its size): tests that
/// edit a value on purpose use it to reach the loaders' other checks.
#[cfg(test)]
pub(crate) fn rewrite_data_sha256(bytes: &mut [u8]) {
    let (n, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let old = header.metadata().as_ref().unwrap()[DATA_SHA256_KEY].clone();
    let new = data_sha256(bytes).unwrap();
    let head = &mut bytes[8..8 + n];
    let at = head
        .windows(old.len())
        .position(|w| w == old.as_bytes())
        .unwrap();
    head[at..at + new.len()].copy_from_slice(new.as_bytes());
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

    /// A finite change of one value is refused; the digest rewritten, it passes; a file
    /// without a digest passes; the digest is that of the data section alone.
    #[test]
    fn a_changed_value_fails_the_checksum() {
        let path = Path::new("x.safetensors");
        let mut bytes = file();
        check_data_sha256(path, &bytes).unwrap();
        let n = bytes.len();
        bytes[n - 16] ^= 1;
        let err = check_data_sha256(path, &bytes).unwrap_err().to_string();
        assert!(
            err.contains("x.safetensors") && err.contains("checksum"),
            "{err}"
        );
        rewrite_data_sha256(&mut bytes);
        check_data_sha256(path, &bytes).unwrap();
        let back = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
        assert_eq!(
            back["w"].to_vec1::<f64>().unwrap()[1],
            2.0 + f64::EPSILON * 2.0
        );

        let t = Tensor::new(&[1.0f64], &Device::Cpu).unwrap();
        let plain = safetensors::serialize(vec![("w".to_string(), t)], None).unwrap();
        check_data_sha256(path, &plain).unwrap();

        let (h, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let recorded = &header.metadata().as_ref().unwrap()[DATA_SHA256_KEY];
        assert_eq!(*recorded, hex::encode(Sha256::digest(&bytes[8 + h..])));
        assert_eq!(header.metadata().as_ref().unwrap()["k"], "v");
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
        check_data_sha256(Path::new("x"), &first).unwrap();
        let back = candle_core::safetensors::load_buffer(&first, &Device::Cpu).unwrap();
        assert_eq!(
            back["b"].to_vec2::<f32>().unwrap(),
            [[1.0, 2.0], [3.0, 4.0]]
        );
        assert_eq!(back["a"].to_vec1::<f64>().unwrap(), [5.0]);
    }
}
