//! Where a side-by-side harness writes its `.md` and `.json`.

use std::path::{Path, PathBuf};

/// The output prefix of a side-by-side harness: `out` when given; else its results page
/// `page` (e.g. `docs/results/image-step-time`, which the documented command regenerates)
/// for a run with the reference, and `target/<page's file name>-ours-only` for an
/// `--ours-only` run, which measures one side only and must not replace the side-by-side
/// page (it did when `out` defaulted to the page whatever the run).
///
/// ```
/// use benchmarks::output_prefix::output_prefix;
/// use std::path::{Path, PathBuf};
/// let page = Path::new("docs/results/image-step-time");
/// assert_eq!(output_prefix(None, false, page), page);
/// assert_eq!(output_prefix(None, true, page), Path::new("target/image-step-time-ours-only"));
/// let mine = PathBuf::from("/tmp/mine");
/// assert_eq!(output_prefix(Some(mine.clone()), true, page), mine);
/// ```
pub fn output_prefix(out: Option<PathBuf>, ours_only: bool, page: &Path) -> PathBuf {
    match out {
        Some(out) => out,
        None if !ours_only => page.to_path_buf(),
        None => {
            let name = page.file_name().map_or_else(
                || "side-by-side".into(),
                |n| n.to_string_lossy().into_owned(),
            );
            Path::new("target").join(format!("{name}-ours-only"))
        }
    }
}
