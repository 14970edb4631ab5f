//! The JSON files xtask writes to continue its runs in several sittings (a benchmark's run
//! configuration and results, a reproduction's pin and saved results): written atomically,
//! read back with an error that names the file.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What to do with a saved result that cannot be read: the run that made it is done again
/// without it (`--resume` finishes or repeats that part).
pub const REMOVE_TO_RUN_AGAIN: &str = "remove it to run that part again";

/// Writes `value` as JSON at `path`, creating its folder, atomically (a kill leaves the old
/// file or the new one).
///
/// ```
/// use xtask::json_file::{REMOVE_TO_RUN_AGAIN, read_json_file, write_json_file};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("part").join("x.json");
/// assert_eq!(read_json_file::<Vec<u8>>(&path, REMOVE_TO_RUN_AGAIN).unwrap(), None);
/// write_json_file(&path, &vec![1u8, 2]).unwrap();
/// assert_eq!(read_json_file::<Vec<u8>>(&path, REMOVE_TO_RUN_AGAIN).unwrap(), Some(vec![1, 2]));
/// std::fs::write(&path, "[1,").unwrap();
/// let e = format!("{:#}", read_json_file::<Vec<u8>>(&path, REMOVE_TO_RUN_AGAIN).unwrap_err());
/// assert!(e.contains("x.json") && e.contains(REMOVE_TO_RUN_AGAIN), "{e}");
/// ```
pub fn write_json_file<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(value)?;
    cpflow::checkpoint::write_atomic(path, json.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The value written at `path` ([`write_json_file`]), `None` when there is no file; an error
/// naming the file when it cannot be read or holds something else, ending with `advice`
/// (what to do about that file: it differs between a saved result and a run's settings).
pub fn read_json_file<T: DeserializeOwned>(path: &Path, advice: &str) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not what xtask wrote there ({advice})",
            path.display()
        )
    })?;
    Ok(Some(value))
}
