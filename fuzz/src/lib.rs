//! What the fuzz targets share: readers that take a path get the input as a file.

use std::path::PathBuf;

/// Writes `data` to `name` in this process's directory for `target` under the temp dir, and
/// returns its path (the same file every run: one input at a time).
pub fn temp_file(target: &str, name: &str, data: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpflow-fuzz-{target}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the fuzz target's temp dir");
    let path = dir.join(name);
    std::fs::write(&path, data).expect("the fuzz input's temp file");
    path
}
