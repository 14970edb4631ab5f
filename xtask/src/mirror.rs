//! `--mirror`: where a mirror is ([`Mirror`]: a base URL, or a local directory for an offline
//! machine), and the layout it must have ([`mirror_layout`], from the registry's
//! [`crate::registry::Artifact::mirror_path`]s), printed by `cargo xtask download --help`
//! ([`mirror_layout_help`]).

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::registry::registry;

/// Where `--mirror` points: every file is taken from there instead of its official URLs,
/// at its [`crate::registry::Artifact::mirror_path`], and verified and installed exactly like a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    /// A base URL (`http://` or `https://`).
    Url(String),
    /// A local directory (absolute path) with the same layout, for an offline machine.
    Dir(PathBuf),
}

/// A `--mirror` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    /// A URL scheme other than `http`, `https` or `file`.
    #[error(
        "--mirror {0:?}: unsupported URL scheme (use an http:// or https:// base URL, or a \
         local directory as a path or file:// URL)"
    )]
    Scheme(String),
    /// A local mirror that is not a directory.
    #[error(
        "--mirror {given:?}: {} is not a directory (a local mirror is a directory holding the \
         files at the paths `cargo xtask download --help` lists)",
        path.display()
    )]
    NotADirectory {
        /// The value given.
        given: String,
        /// The path it names.
        path: PathBuf,
    },
    /// A `file://` URL of another host, or with a bad percent-escape.
    #[error("--mirror {0:?}: not a file:// URL of a local directory (use file:///abs/path)")]
    BadFileUrl(String),
}

impl Mirror {
    /// Parses a `--mirror` value: an `http(s)://` base URL, or a local directory given as a
    /// path (relative to the working directory) or a `file://` URL (`file:///abs/dir` or
    /// `file://localhost/abs/dir`, percent-escapes decoded). A local one must be a directory.
    ///
    /// ```
    /// use xtask::registry::Mirror;
    /// let dir = std::env::temp_dir();
    /// let url = format!("file://{}", dir.display());
    /// assert_eq!(Mirror::parse(&url), Ok(Mirror::Dir(dir.clone())));
    /// assert_eq!(Mirror::parse(dir.to_str().unwrap()), Ok(Mirror::Dir(dir)));
    /// assert!(matches!(Mirror::parse("https://example.org/data"), Ok(Mirror::Url(_))));
    /// assert!(Mirror::parse("ftp://example.org/data").is_err());
    /// ```
    pub fn parse(arg: &str) -> Result<Self, MirrorError> {
        let lower = arg.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Ok(Mirror::Url(arg.to_string()));
        }
        let path = if lower.starts_with("file://") {
            let rest = &arg["file://".len()..];
            let rest = rest.strip_prefix("localhost").unwrap_or(rest);
            if !rest.starts_with('/') {
                return Err(MirrorError::BadFileUrl(arg.to_string()));
            }
            PathBuf::from(
                percent_decode(rest).ok_or_else(|| MirrorError::BadFileUrl(arg.to_string()))?,
            )
        } else if let Some((scheme, _)) = arg.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        {
            return Err(MirrorError::Scheme(arg.to_string()));
        } else {
            PathBuf::from(arg)
        };
        let path = std::path::absolute(&path).unwrap_or(path);
        if !path.is_dir() {
            return Err(MirrorError::NotADirectory {
                given: arg.to_string(),
                path,
            });
        }
        Ok(Mirror::Dir(path))
    }
}

/// Decodes `%XX` escapes (UTF-8); `None` for a bad escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Every path a mirror serves ([`crate::registry::Artifact::mirror_path`]), in registry order, with the
/// datasets that use it (`hepmass (fallback)` for a source tried after the first).
pub fn mirror_layout() -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for spec in registry() {
        for (k, plan) in spec.plans.iter().enumerate() {
            let name = if k == 0 {
                spec.name.to_string()
            } else {
                format!("{} (fallback)", spec.name)
            };
            for step in &plan.steps {
                let path = &step.artifact.mirror_path;
                match out.iter_mut().find(|(p, _)| p == path) {
                    Some((_, names)) if !names.contains(&name) => names.push(name.clone()),
                    Some(_) => {}
                    None => out.push((path.clone(), vec![name.clone()])),
                }
            }
        }
    }
    out
}

/// The text `cargo xtask download --help` ends with: what a mirror is, its layout (from
/// [`mirror_layout`], so it cannot drift from the registry), and how files without a published
/// checksum are treated.
pub fn mirror_layout_help() -> String {
    let mut s = String::from(
        "Mirrors: with --mirror (or CPFLOW_DATA_MIRROR) every file is taken from the mirror \
         instead of its official source, and verified and installed exactly like a download. A \
         mirror is a base URL (http:// or https://) or, on an offline machine, a local \
         directory (a path or a file:// URL). Either holds the files at these paths:\n",
    );
    let layout = mirror_layout();
    let width = layout.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
    for (path, names) in &layout {
        let _ = writeln!(s, "  {path:width$}  {}", names.join(", "));
    }
    let _ = write!(
        s,
        "\nFiles without a published checksum (maf/, uci/) are accepted on first download once \
         the files installed from them pass their loader's check, and their sha256 is recorded \
         in <DIR>/.downloads/{}; later runs are held to that record. --force forgets it (and \
         the cached file) and downloads afresh.",
        crate::fetch_error::SHA256_RECORD
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_values_parse_or_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let spaced = dir.path().join("a b");
        std::fs::create_dir(&spaced).unwrap();
        let encoded = format!("file://{}/a%20b", dir.path().display());
        assert_eq!(Mirror::parse(&encoded), Ok(Mirror::Dir(spaced.clone())));
        let localhost = format!("file://localhost{}", spaced.display());
        assert_eq!(Mirror::parse(&localhost), Ok(Mirror::Dir(spaced.clone())));
        assert_eq!(
            Mirror::parse(spaced.to_str().unwrap()),
            Ok(Mirror::Dir(spaced.clone()))
        );
        assert!(matches!(
            Mirror::parse("HTTPS://example.org/m"),
            Ok(Mirror::Url(_))
        ));
        let missing = dir.path().join("missing");
        let e = Mirror::parse(missing.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, MirrorError::NotADirectory { .. }), "{e}");
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(matches!(
            Mirror::parse("ftp://example.org/m"),
            Err(MirrorError::Scheme(_))
        ));
        assert!(matches!(
            Mirror::parse("file://otherhost/m"),
            Err(MirrorError::BadFileUrl(_))
        ));
        assert!(matches!(
            Mirror::parse("file:///m%zz"),
            Err(MirrorError::BadFileUrl(_))
        ));
    }

    /// The layout in the help lists every mirror path of the registry once, with the datasets
    /// that use it (the MAF archive serves three).
    #[test]
    fn mirror_layout_lists_every_registry_path() {
        let layout = mirror_layout();
        let paths: Vec<&str> = layout.iter().map(|(p, _)| p.as_str()).collect();
        let mut expected: Vec<String> = registry()
            .iter()
            .flat_map(|d| d.plans.iter().flat_map(|p| p.steps.iter()))
            .map(|s| s.artifact.mirror_path.clone())
            .collect();
        expected.sort();
        expected.dedup();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(sorted, expected);
        let maf = layout.iter().find(|(p, _)| p == "maf/data.tar.gz").unwrap();
        assert_eq!(maf.1, ["power", "hepmass", "miniboone"]);
        let help = mirror_layout_help();
        for p in &paths {
            assert!(help.contains(&format!("  {p} ")), "{p} not in {help}");
        }
    }
}
