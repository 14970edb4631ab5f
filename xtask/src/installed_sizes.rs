//! The size of every file `cargo xtask download` installed, recorded in
//! `<dir>/.downloads/INSTALLED` (`<bytes>  <path relative to dir>` lines) when it is installed.
//!
//! `download` of a dataset already installed compares each file's size with this record
//! ([`crate::installed_check::check_installed`]): a file cut short or replaced since (an
//! interrupted copy, a disk that filled up) is caught without reading it. Files installed by
//! an older `xtask`, or placed by hand, have no record: only their content is checked.

use std::path::Path;

use anyhow::{Context, Result};

use crate::extract::write_atomic;
use crate::install::cache_dir;
use crate::name_record::{recorded_values, without_names};

/// The record's file name in `<dir>/.downloads`.
pub const INSTALLED_RECORD: &str = "INSTALLED";

/// The size recorded for `rel` when it was installed in `dir`; `None` when it has no record.
pub fn recorded_size(dir: &Path, rel: &str) -> Option<u64> {
    let text = std::fs::read_to_string(cache_dir(dir).join(INSTALLED_RECORD)).ok()?;
    recorded_values(&text, rel)
        .filter_map(|size| size.parse().ok())
        .next_back()
}

/// Records the size of each of `rels` as installed now in `dir`, replacing their earlier
/// records (the record file is rewritten atomically).
pub fn record_installed(dir: &Path, rels: &[String]) -> Result<()> {
    let path = cache_dir(dir).join(INSTALLED_RECORD);
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let (mut text, _) = without_names(&old, |r| rels.iter().any(|x| x == r));
    for rel in rels {
        let file = dir.join(rel);
        let len = std::fs::metadata(&file)
            .with_context(|| format!("cannot read the size of {}", file.display()))?
            .len();
        text.push_str(&format!("{len}  {rel}\n"));
    }
    write_atomic(&path, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_recorded_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".downloads/x")).unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/one.npy"), b"12345").unwrap();
        std::fs::write(dir.path().join("a/two.csv"), b"12").unwrap();
        assert_eq!(recorded_size(dir.path(), "a/one.npy"), None);
        let rels = ["a/one.npy".to_string(), "a/two.csv".to_string()];
        record_installed(dir.path(), &rels).unwrap();
        assert_eq!(recorded_size(dir.path(), "a/one.npy"), Some(5));
        assert_eq!(recorded_size(dir.path(), "a/two.csv"), Some(2));
        std::fs::write(dir.path().join("a/one.npy"), b"123").unwrap();
        record_installed(dir.path(), &rels[..1]).unwrap();
        assert_eq!(recorded_size(dir.path(), "a/one.npy"), Some(3));
        assert_eq!(recorded_size(dir.path(), "a/two.csv"), Some(2));
        let text =
            std::fs::read_to_string(dir.path().join(".downloads").join(INSTALLED_RECORD)).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
