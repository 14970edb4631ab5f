//! Extraction of downloaded archives. Every output is written to `<file>.part` and renamed
//! into place once complete, so an interrupted extraction leaves no half-written file under
//! its final name. [`extract`] with [`Output::Discard`] reads an archive to its end without
//! writing anything: `download` runs it first, so that nothing is extracted from an archive
//! that turns out truncated or corrupt half-way (see [`crate::install`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::checksum::sha256_bytes;
use crate::fetch::part_path;
use crate::registry::Extract;

/// Where the files extracted from an archive go.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// Under this directory, each written atomically ([`write_atomic`]).
    Dir(&'a Path),
    /// Nowhere: the archive is only read, which checks that it can be read to its end and
    /// holds the expected members.
    Discard,
}

impl Output<'_> {
    fn write(self, rel: &Path, mut r: impl Read) -> Result<u64> {
        match self {
            Output::Dir(dir) => write_atomic(&dir.join(rel), r),
            Output::Discard => Ok(std::io::copy(&mut r, &mut std::io::sink())?),
        }
    }
}

/// Extracts `archive` as `how` says into `out` (or only reads it, with [`Output::Discard`]).
pub fn extract(archive: &Path, how: &Extract, out: Output<'_>) -> Result<()> {
    match how {
        Extract::TarMembers(members) => tar_members(archive, members, out),
        Extract::TarDir {
            prefix,
            dest_dir,
            required,
        } => tar_dir(archive, prefix, dest_dir, required, out),
        Extract::ZipMember { member, dest } => zip_member(archive, member, dest, out),
        Extract::Gunzip(dest) => gunzip(archive, dest, out),
        Extract::Place(dest) => match out {
            Output::Dir(dir) => place(archive, &dir.join(dest)),
            Output::Discard => Ok(()),
        },
        Extract::PlaceVerifyingMembers { dest, sums } => {
            let n = verify_tar_members(archive, sums)?;
            match out {
                Output::Dir(dir) => {
                    tracing::info!("{}: all {n} images match their sha256", archive.display());
                    place(archive, &dir.join(dest))
                }
                Output::Discard => Ok(()),
            }
        }
    }
}

/// Writes everything `r` yields to `dest` atomically.
pub fn write_atomic(dest: &Path, mut r: impl Read) -> Result<u64> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let part = part_path(dest);
    let n = (|| -> std::io::Result<u64> {
        let mut f = File::create(&part)?;
        let n = std::io::copy(&mut r, &mut f)?;
        f.flush()?;
        f.sync_all()?;
        Ok(n)
    })();
    let n = match n {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e).with_context(|| format!("cannot write {}", dest.display()));
        }
    };
    std::fs::rename(&part, dest).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(n)
}

fn open_tar_gz(archive: &Path) -> Result<tar::Archive<flate2::read::GzDecoder<BufReader<File>>>> {
    let f = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(
        BufReader::new(f),
    )))
}

/// Reads what is left of a `.tar.gz` after its last member (end-of-archive blocks, the gzip
/// trailer), so that a truncated stream or a bad gzip checksum is an error.
fn drain_tar_gz(
    tar: tar::Archive<flate2::read::GzDecoder<BufReader<File>>>,
    archive: &Path,
) -> Result<()> {
    std::io::copy(&mut tar.into_inner(), &mut std::io::sink())
        .with_context(|| format!("reading {}", archive.display()))?;
    Ok(())
}

/// Copies the members of a `.tar.gz` whose path ends with each `suffix` to `dest` under `out`.
pub fn tar_members(archive: &Path, members: &[(String, String)], out: Output<'_>) -> Result<()> {
    let mut found = vec![false; members.len()];
    let mut tar = open_tar_gz(archive)?;
    let ctx = || format!("reading {}", archive.display());
    for entry in tar.entries().with_context(ctx)? {
        let mut entry = entry.with_context(ctx)?;
        let name = entry
            .path()
            .with_context(ctx)?
            .to_string_lossy()
            .into_owned();
        if let Some(i) = members
            .iter()
            .position(|(suffix, _)| name.ends_with(suffix.as_str()))
        {
            out.write(Path::new(&members[i].1), &mut entry)
                .with_context(ctx)?;
            found[i] = true;
        }
    }
    drain_tar_gz(tar, archive)?;
    let missing: Vec<&str> = members
        .iter()
        .zip(&found)
        .filter(|(_, f)| !**f)
        .map(|(m, _)| m.0.as_str())
        .collect();
    if !missing.is_empty() {
        bail!("{} has no member {}", archive.display(), missing.join(", "));
    }
    Ok(())
}

/// Copies every regular file under the directory `prefix` of a `.tar.gz` into `dest_dir`
/// under `out` and checks that the `required` file names were among them.
pub fn tar_dir(
    archive: &Path,
    prefix: &str,
    dest_dir: &str,
    required: &[String],
    out: Output<'_>,
) -> Result<()> {
    let mut tar = open_tar_gz(archive)?;
    let ctx = || format!("reading {}", archive.display());
    let mut written = Vec::new();
    for entry in tar.entries().with_context(ctx)? {
        let mut entry = entry.with_context(ctx)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .with_context(ctx)?
            .to_string_lossy()
            .into_owned();
        let Some(pos) = name.find(prefix) else {
            continue;
        };
        let rel = &name[pos + prefix.len()..];
        if rel.is_empty() || rel.split('/').any(|c| c == ".." || c.is_empty()) {
            continue;
        }
        out.write(&Path::new(dest_dir).join(rel), &mut entry)
            .with_context(ctx)?;
        written.push(rel.to_string());
    }
    drain_tar_gz(tar, archive)?;
    let missing: Vec<&String> = required.iter().filter(|r| !written.contains(r)).collect();
    if !missing.is_empty() {
        bail!("{} lacks {prefix}{:?}", archive.display(), missing);
    }
    Ok(())
}

fn zip_find<R: Read + Seek>(zip: &mut zip::ZipArchive<R>, member: &str) -> Result<Option<Vec<u8>>> {
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()?;
    if let Some(name) = names.iter().find(|n| n.ends_with(member)) {
        let mut f = zip.by_name(name)?;
        let mut out = Vec::with_capacity(usize::try_from(f.size()).unwrap_or(0));
        f.read_to_end(&mut out)?;
        return Ok(Some(out));
    }
    // UCI sometimes wraps the original zip in another one.
    for name in names.iter().filter(|n| n.ends_with(".zip")) {
        let mut inner = Vec::new();
        zip.by_name(name)?.read_to_end(&mut inner)?;
        let mut nested = zip::ZipArchive::new(std::io::Cursor::new(inner))?;
        if let Some(found) = zip_find(&mut nested, member)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Copies the member of a `.zip` whose path ends with `member` to `dest` under `out`.
pub fn zip_member(archive: &Path, member: &str, dest: &str, out: Output<'_>) -> Result<()> {
    let f = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(f))
        .with_context(|| format!("{} is not a zip archive", archive.display()))?;
    let bytes = zip_find(&mut zip, member)
        .with_context(|| format!("reading {}", archive.display()))?
        .with_context(|| format!("{} has no member {member}", archive.display()))?;
    out.write(Path::new(dest), &bytes[..])?;
    Ok(())
}

/// Decompresses a `.gz` file to `dest` under `out`.
pub fn gunzip(archive: &Path, dest: &str, out: Output<'_>) -> Result<()> {
    let f = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    out.write(
        Path::new(dest),
        flate2::read::GzDecoder::new(BufReader::new(f)),
    )
    .with_context(|| format!("decompressing {}", archive.display()))?;
    Ok(())
}

/// Moves (or, across file systems, copies) `from` to `to`, atomically at `to`.
pub fn place(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    if std::fs::rename(from, to).is_err() {
        let f = File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
        write_atomic(to, BufReader::new(f))?;
        let _ = std::fs::remove_file(from);
    }
    Ok(())
}

/// Checks the members of a `.tar.gz` listed in `sums` (`<sha256>  <path>` lines; a member
/// matches when its path ends with `/<path>`). Every listed file must be present and match.
pub fn verify_tar_members(archive: &Path, sums: &str) -> Result<usize> {
    let expected: HashMap<&str, &str> = sums
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, p)| (p.trim(), h.trim()))
        .collect();
    let mut ok = 0usize;
    let mut tar = open_tar_gz(archive)?;
    let ctx = || format!("reading {}", archive.display());
    for entry in tar.entries().with_context(ctx)? {
        let mut entry = entry.with_context(ctx)?;
        let name = entry
            .path()
            .with_context(ctx)?
            .to_string_lossy()
            .into_owned();
        let Some((_, want)) = expected
            .iter()
            .find(|(p, _)| name.ends_with(&format!("/{p}")))
        else {
            continue;
        };
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).with_context(ctx)?;
        let got = sha256_bytes(&bytes);
        if got != *want {
            bail!(
                "{}: member {name} has sha256 {got}, expected {want} (not the official images)",
                archive.display()
            );
        }
        ok += 1;
    }
    if ok != expected.len() {
        bail!(
            "{}: {} of the {} expected images are missing",
            archive.display(),
            expected.len() - ok,
            expected.len()
        );
    }
    Ok(ok)
}
