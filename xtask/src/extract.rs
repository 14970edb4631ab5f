//! Extraction of downloaded archives. Every output is written to `<file>.part` and renamed
//! into place once complete, so an interrupted extraction leaves no half-written file under
//! its final name. [`extract`] tells an archive that cannot be read to its end (truncated,
//! corrupt, without the expected members: [`ExtractError::Unusable`]) from a file that
//! could not be written ([`ExtractError::Unwritten`]); `download` extracts into a staging
//! directory that it removes on either, so nothing is installed from an archive that turns
//! out truncated or corrupt half-way (see [`crate::install`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::checksum::sha256_bytes;
use crate::fetch::part_path;
use crate::registry::Extract;

/// Why [`extract`] failed.
#[derive(Debug)]
pub enum ExtractError {
    /// The archive cannot be read to its end, lacks an expected member, or holds one that
    /// fails its published sum: nothing extracted from it can be trusted.
    Unusable(anyhow::Error),
    /// A file could not be written under the output directory (a full disk, permissions):
    /// not the archive's fault.
    Unwritten(anyhow::Error),
}

/// An I/O error met writing a file (not reading what goes into it): the marker that
/// [`extract`] tells [`ExtractError::Unwritten`] by. Displayed as the I/O error itself.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct WriteFailed(std::io::Error);

/// A failed [`copy_atomic`].
enum CopyError {
    /// Reading the source failed.
    Read(std::io::Error),
    /// Writing failed: a [`WriteFailed`] under "cannot write/create <path>".
    Write(anyhow::Error),
}

/// Writes everything `r` yields to `dest` atomically.
pub fn write_atomic(dest: &Path, r: impl Read) -> Result<u64> {
    copy_atomic(dest, r).map_err(|e| match e {
        CopyError::Read(e) => {
            anyhow::Error::new(e).context(format!("cannot write {}", dest.display()))
        }
        CopyError::Write(e) => e,
    })
}

/// [`write_atomic`], telling a failure to read `r` from one to write `dest`.
fn copy_atomic(dest: &Path, mut r: impl Read) -> Result<u64, CopyError> {
    let cannot_write = |e: std::io::Error| {
        CopyError::Write(
            anyhow::Error::new(WriteFailed(e)).context(format!("cannot write {}", dest.display())),
        )
    };
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            CopyError::Write(
                anyhow::Error::new(WriteFailed(e))
                    .context(format!("cannot create {}", parent.display())),
            )
        })?;
    }
    let part = part_path(dest);
    let n = (|| -> Result<u64, CopyError> {
        let mut f = File::create(&part).map_err(cannot_write)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        loop {
            let k = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(e)),
            };
            f.write_all(&buf[..k]).map_err(cannot_write)?;
            n += k as u64;
        }
        f.flush().map_err(cannot_write)?;
        f.sync_all().map_err(cannot_write)?;
        Ok(n)
    })();
    let n = match n {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, dest).map_err(cannot_write)?;
    Ok(n)
}

/// Where the files extracted from an archive go, and which were written.
struct Output<'a> {
    /// The output directory.
    dir: &'a Path,
    /// The files written, relative to `dir` (`/`-separated).
    written: Vec<String>,
}

impl Output<'_> {
    /// Writes what `r` yields to `rel` under the output directory, atomically. A failure to
    /// read `r` (the archive) is returned as it is; one to write is a [`WriteFailed`] under
    /// "cannot write <file>".
    fn write(&mut self, rel: &Path, r: impl Read) -> Result<u64> {
        let n = copy_atomic(&self.dir.join(rel), r).map_err(|e| match e {
            CopyError::Read(e) => anyhow::Error::from(e),
            CopyError::Write(e) => e,
        })?;
        self.written.push(slash_path(rel));
        Ok(n)
    }
}

/// `rel` as a `/`-separated path, as the data directory's file names are spelt.
fn slash_path(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Extracts `archive` as `how` says into `dir`. Returns the files written, relative to `dir`
/// (`/`-separated, sorted).
pub fn extract(archive: &Path, how: &Extract, dir: &Path) -> Result<Vec<String>, ExtractError> {
    // Errors of reading the archive are the archive's; those of writing under `dir` are not.
    let by_cause = |e: anyhow::Error| {
        if e.downcast_ref::<WriteFailed>().is_some() {
            ExtractError::Unwritten(e)
        } else {
            ExtractError::Unusable(e)
        }
    };
    let mut out = Output {
        dir,
        written: Vec::new(),
    };
    match how {
        Extract::TarMembers(members) => {
            tar_members(archive, members, &mut out).map_err(by_cause)?
        }
        Extract::TarDir {
            prefix,
            dest_dir,
            required,
        } => tar_dir(archive, prefix, dest_dir, required, &mut out).map_err(by_cause)?,
        Extract::ZipMember { member, dest } => {
            zip_member(archive, member, dest, &mut out).map_err(by_cause)?;
        }
        Extract::Gunzip(dest) => gunzip(archive, dest, &mut out).map_err(by_cause)?,
        Extract::Place(dest) => {
            place(archive, &dir.join(dest)).map_err(ExtractError::Unwritten)?;
            out.written.push(slash_path(Path::new(dest)));
        }
        Extract::PlaceVerifyingMembers { dest, sums } => {
            let n = verify_tar_members(archive, sums).map_err(ExtractError::Unusable)?;
            tracing::info!("{}: all {n} images match their sha256", archive.display());
            place(archive, &dir.join(dest)).map_err(ExtractError::Unwritten)?;
            out.written.push(slash_path(Path::new(dest)));
        }
    }
    let mut files = out.written;
    files.sort();
    files.dedup();
    Ok(files)
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
fn tar_members(archive: &Path, members: &[(String, String)], out: &mut Output<'_>) -> Result<()> {
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
fn tar_dir(
    archive: &Path,
    prefix: &str,
    dest_dir: &str,
    required: &[String],
    out: &mut Output<'_>,
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

/// Streams the member of `zip` whose path ends with `member` (looking inside nested `.zip`
/// members too) into `dest` under `out`. Returns whether it was found. Nothing is held in
/// memory but a nested archive, read as its bytes arrive (no allocation sized by its header).
fn zip_copy<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    member: &str,
    dest: &Path,
    out: &mut Output<'_>,
) -> Result<bool> {
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()?;
    if let Some(name) = names.iter().find(|n| n.ends_with(member)) {
        out.write(dest, zip.by_name(name)?)?;
        return Ok(true);
    }
    // UCI sometimes wraps the original zip in another one.
    for name in names.iter().filter(|n| n.ends_with(".zip")) {
        let mut inner = Vec::new();
        zip.by_name(name)?.read_to_end(&mut inner)?;
        let mut nested = zip::ZipArchive::new(std::io::Cursor::new(inner))?;
        if zip_copy(&mut nested, member, dest, out)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Copies the member of a `.zip` whose path ends with `member` to `dest` under `out`.
fn zip_member(archive: &Path, member: &str, dest: &str, out: &mut Output<'_>) -> Result<()> {
    let f = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(f))
        .with_context(|| format!("{} is not a zip archive", archive.display()))?;
    let found = zip_copy(&mut zip, member, Path::new(dest), out)
        .with_context(|| format!("reading {}", archive.display()))?;
    if !found {
        bail!("{} has no member {member}", archive.display());
    }
    Ok(())
}

/// Decompresses a `.gz` file to `dest` under `out`.
fn gunzip(archive: &Path, dest: &str, out: &mut Output<'_>) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, &bytes[..]).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    /// Extraction returns the files it wrote; an archive cut short is
    /// [`ExtractError::Unusable`] with the decoder's error (not blamed on writing), and a file
    /// that cannot be written is [`ExtractError::Unwritten`], with the path it could not write.
    #[test]
    fn extract_tells_a_bad_archive_from_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        // Bytes that gzip cannot shrink much (a 64-bit LCG), so a cut lands inside a member.
        let mut x = 1u64;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        let archive = dir.path().join("a.tar.gz");
        std::fs::write(
            &archive,
            tar_gz(&[("data/b.bin", noise.clone()), ("data/a/x.bin", vec![7; 10])]),
        )
        .unwrap();
        let how = Extract::TarMembers(vec![
            ("data/b.bin".into(), "out/b.bin".into()),
            ("data/a/x.bin".into(), "out/a/x.bin".into()),
        ]);
        let staging = dir.path().join("staging");
        let files = extract(&archive, &how, &staging).unwrap();
        assert_eq!(files, ["out/a/x.bin", "out/b.bin"]);
        assert_eq!(std::fs::read(staging.join("out/b.bin")).unwrap(), noise);

        let good = std::fs::read(&archive).unwrap();
        std::fs::write(&archive, &good[..good.len() / 2]).unwrap();
        let cut = dir.path().join("cut");
        let Err(ExtractError::Unusable(e)) = extract(&archive, &how, &cut) else {
            panic!("a truncated archive must be unusable");
        };
        let e = format!("{e:#}");
        assert!(
            e.starts_with("reading ") && !e.contains("cannot write"),
            "{e}"
        );
        assert!(!cut.join("out/b.bin.part").exists());

        std::fs::write(&archive, &good).unwrap();
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(&blocked).unwrap();
        std::fs::write(blocked.join("out"), b"a file where a folder goes").unwrap();
        let Err(ExtractError::Unwritten(e)) = extract(&archive, &how, &blocked) else {
            panic!("a failed write must not be blamed on the archive");
        };
        let e = format!("{e:#}");
        assert!(
            e.contains("cannot create") && e.contains("blocked/out"),
            "{e}"
        );
    }

    fn stored_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        use std::io::Write;
        let mut bytes = std::io::Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut bytes);
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in files {
            z.start_file(*name, o).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
        bytes.into_inner()
    }

    /// A zip member is streamed to its file, also from inside a nested zip; one whose bytes
    /// do not match its CRC is [`ExtractError::Unusable`] and leaves nothing behind (not even
    /// the `.part` file); a missing member is named.
    #[test]
    fn zip_members_are_streamed_checked_and_found_in_nested_zips() {
        let dir = tempfile::tempdir().unwrap();
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let inner = stored_zip(&[("deep/data.txt", &payload)]);
        let archive = dir.path().join("a.zip");
        std::fs::write(
            &archive,
            stored_zip(&[("readme.txt", b"hello"), ("inner.zip", &inner)]),
        )
        .unwrap();
        let how = Extract::ZipMember {
            member: "data.txt".into(),
            dest: "out/data.txt".into(),
        };
        let ok = dir.path().join("ok");
        assert_eq!(extract(&archive, &how, &ok).unwrap(), ["out/data.txt"]);
        assert_eq!(std::fs::read(ok.join("out/data.txt")).unwrap(), payload);

        // Flip one byte of the (stored) payload: the CRC check at the member's end fails.
        let top = stored_zip(&[("data.txt", &payload)]);
        let at = top
            .windows(4)
            .position(|w| w == &payload[1000..1004])
            .unwrap();
        let mut bad = top.clone();
        bad[at] ^= 0xff;
        std::fs::write(&archive, &bad).unwrap();
        let corrupt = dir.path().join("corrupt");
        let Err(ExtractError::Unusable(e)) = extract(&archive, &how, &corrupt) else {
            panic!("a member failing its CRC must be unusable");
        };
        assert!(format!("{e:#}").starts_with("reading "), "{e:#}");
        assert!(!corrupt.join("out/data.txt").exists());
        assert!(!corrupt.join("out/data.txt.part").exists());

        std::fs::write(&archive, &top).unwrap();
        let how = Extract::ZipMember {
            member: "other.txt".into(),
            dest: "out/other.txt".into(),
        };
        let Err(ExtractError::Unusable(e)) = extract(&archive, &how, &corrupt) else {
            panic!("a missing member must be unusable");
        };
        assert!(
            format!("{e:#}").contains("has no member other.txt"),
            "{e:#}"
        );
    }
}
