//! Where a side-by-side harness writes its `.md` and `.json`.

use std::path::{Path, PathBuf};

/// The output prefix of a side-by-side harness: `out` when given; else
/// `target/<page's file name>` for a run with the reference and
/// `target/<page's file name>-ours-only` for an `--ours-only` run. The results page `page`
/// itself (e.g. `docs/results/image-step-time`) is written only when `out` names it: those
/// pages are kept by hand, one section a run, and a run without `--out` replaced one with
/// its single table when this defaulted to the page.
///
/// ```
/// use benchmarks::output_prefix::output_prefix;
/// use std::path::{Path, PathBuf};
/// let page = Path::new("docs/results/image-step-time");
/// assert_eq!(output_prefix(None, false, page), Path::new("target/image-step-time"));
/// assert_eq!(output_prefix(None, true, page), Path::new("target/image-step-time-ours-only"));
/// let mine = PathBuf::from("/tmp/mine");
/// assert_eq!(output_prefix(Some(mine.clone()), true, page), mine);
/// assert_eq!(output_prefix(Some(page.to_path_buf()), false, page), page);
/// ```
pub fn output_prefix(out: Option<PathBuf>, ours_only: bool, page: &Path) -> PathBuf {
    if let Some(out) = out {
        return out;
    }
    let name = page.file_name().map_or_else(
        || "side-by-side".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let suffix = if ours_only { "-ours-only" } else { "" };
    Path::new("target").join(format!("{name}{suffix}"))
}
