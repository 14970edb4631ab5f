//! The JSON entry of a weights file's safetensors metadata that one loader reads (the
//! flow's `cpflow`, the image flow's, the image training checkpoint's, the VAE's), found
//! and parsed the same way by every loader, with the same refusals.

use std::path::Path;

use safetensors::tensor::Metadata;
use serde::de::DeserializeOwned;

use crate::error::{CpflowError, Result};

/// How one loader names the metadata entry it reads and the files it reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MetadataEntry<'a> {
    /// The metadata key (`cpflow`, `cpflow_vae`, …).
    pub key: &'a str,
    /// What the loader reads, for a file that is another kind of cpflow file: "`file` is
    /// {kind}, not {kind_of_file}" (`None`: such a file is named as one without the key).
    pub kind_of_file: Option<&'a str>,
    /// What the loader reads, for a file without the key: "`file` has no `key` metadata: not
    /// {cpflow_file}", and for one whose entry does not parse: "its `key` metadata is not that
    /// of {cpflow_file}".
    pub cpflow_file: &'a str,
}

impl MetadataEntry<'_> {
    /// The entry's JSON text in the header `md` of `path`, and the entry parsed as `T`.
    ///
    /// # Errors
    /// [`CpflowError::Checkpoint`] naming the file: the key is missing (the message says what
    /// kind of cpflow file it is instead, where [`crate::checkpoint::file_kind`] knows), or its
    /// JSON is not a `T`.
    pub(crate) fn read<'m, T: DeserializeOwned>(
        &self,
        path: &Path,
        md: &'m Metadata,
    ) -> Result<(T, &'m str)> {
        let metadata = md.metadata().as_ref();
        let Some(json) = metadata.and_then(|m| m.get(self.key)) else {
            let kind = self
                .kind_of_file
                .and_then(|not| Some((super::file_kind(metadata)?, not)));
            return Err(CpflowError::Checkpoint(match kind {
                Some((kind, not)) => format!("{} is {kind}, not {not}", path.display()),
                None => format!(
                    "{} has no `{}` metadata: not {}",
                    path.display(),
                    self.key,
                    self.cpflow_file
                ),
            }));
        };
        let parsed = serde_json::from_str(json).map_err(|e| {
            CpflowError::Checkpoint(format!(
                "{}: its `{}` metadata is not that of {} ({e})",
                path.display(),
                self.key,
                self.cpflow_file
            ))
        })?;
        Ok((parsed, json))
    }
}

/// Refuses the file `path` whose entry says format `found` where the loader reads `expected`
/// (`what`: "checkpoint", "image-flow", …, as in "unsupported {what} format").
///
/// # Errors
/// [`CpflowError::Checkpoint`] naming the file and both versions.
pub(crate) fn check_format_version(
    path: &Path,
    what: &str,
    found: u32,
    expected: u32,
) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    Err(CpflowError::Checkpoint(format!(
        "{}: unsupported {what} format {found} (expected {expected})",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const ENTRY: MetadataEntry<'static> = MetadataEntry {
        key: "cpflow_vae",
        kind_of_file: Some("a VAE file"),
        cpflow_file: "a cpflow VAE checkpoint",
    };

    fn header(entries: &[(&str, &str)]) -> Metadata {
        let map: HashMap<String, String> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Metadata::new(Some(map), Vec::new()).unwrap()
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Meta {
        epoch: u32,
    }

    #[test]
    fn reads_the_entry_and_returns_its_json() {
        let md = header(&[("cpflow_vae", r#"{"epoch": 3}"#)]);
        let (meta, json) = ENTRY.read::<Meta>(Path::new("m.safetensors"), &md).unwrap();
        assert_eq!((meta, json), (Meta { epoch: 3 }, r#"{"epoch": 3}"#));
    }

    /// Each refusal names the file and says why: another kind of cpflow file (by its key),
    /// no entry, an entry that does not parse.
    #[test]
    fn refusals_name_the_file_and_the_reason() {
        let path = Path::new("dir/m.safetensors");
        let msg = |md: &Metadata, entry: MetadataEntry| {
            entry.read::<Meta>(path, md).unwrap_err().to_string()
        };
        let flow = header(&[("cpflow", "{}")]);
        let m = msg(&flow, ENTRY);
        assert!(m.contains("dir/m.safetensors is a flow checkpoint"), "{m}");
        assert!(m.ends_with("not a VAE file"), "{m}");
        // A loader that does not name other kinds says what is missing.
        let m = msg(
            &flow,
            MetadataEntry {
                kind_of_file: None,
                ..ENTRY
            },
        );
        assert!(
            m.ends_with("has no `cpflow_vae` metadata: not a cpflow VAE checkpoint"),
            "{m}"
        );
        let m = msg(&header(&[("other", "x")]), ENTRY);
        assert!(m.contains("has no `cpflow_vae` metadata"), "{m}");
        let m = msg(&header(&[("cpflow_vae", r#"{"epoch": "x"}"#)]), ENTRY);
        assert!(
            m.contains("its `cpflow_vae` metadata is not that of a cpflow VAE checkpoint"),
            "{m}"
        );
    }

    #[test]
    fn a_format_version_other_than_the_loaders_is_refused() {
        let path = Path::new("c.safetensors");
        check_format_version(path, "checkpoint", 1, 1).unwrap();
        let m = check_format_version(path, "checkpoint", 2, 1)
            .unwrap_err()
            .to_string();
        assert_eq!(
            m,
            "checkpoint error: c.safetensors: unsupported checkpoint format 2 (expected 1)"
        );
    }
}
