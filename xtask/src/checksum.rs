//! Checksums of downloaded files: what is known about each file, and how it is verified.

use std::fmt;
use std::io::Read;
use std::path::Path;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// What is known about the bytes of a downloaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// sha256 of the file (lower-case hex).
    Sha256(String),
    /// sha256 of the file's **decompressed** content (for `.gz` files whose compressed bytes
    /// vary between mirrors while the content does not). A file that is not gzip is hashed
    /// as is (a server may have decoded it already).
    Sha256Gunzipped(String),
    /// md5 of the file (only where the publisher gives nothing stronger).
    Md5(String),
    /// Git blob id of the file: SHA-1 of `"blob <size>\0"` followed by its bytes, what `git
    /// hash-object` prints (for a file published only in a git repository).
    GitBlob(String),
    /// Nothing is known: the computed sha256 is reported and recorded (trust on first use).
    Unknown,
    /// No checksum is published: this sha256 was recorded locally, in
    /// `<dir>/.downloads/SHA256SUMS`, when the file was first downloaded (trust on first use).
    /// Verified like [`Checksum::Sha256`], but it vouches only for what that first download
    /// delivered (`--force` forgets it).
    RecordedSha256(String),
    /// Nothing is known about the file as a whole, and nothing is computed: the caller checks
    /// its content instead (each member of an archive against its published sum,
    /// [`crate::registry::Extract::verifies_members`]). [`verify`] does not read the file.
    OfMembers,
}

impl Checksum {
    /// A [`Checksum::Sha256`] from a hex string.
    pub fn sha256(hex: &str) -> Self {
        Self::Sha256(hex.to_ascii_lowercase())
    }

    /// Whether this checksum comes from the publisher (the registry; for
    /// [`Checksum::OfMembers`], the sums of the members), not from a local record of a first
    /// download ([`Checksum::RecordedSha256`]) or nowhere ([`Checksum::Unknown`]).
    pub fn is_published(&self) -> bool {
        !matches!(self, Checksum::Unknown | Checksum::RecordedSha256(_))
    }

    /// Whether this is a sha256 recorded on first download ([`Checksum::RecordedSha256`]):
    /// a mismatch with it says so, not that a published checksum failed.
    pub fn is_recorded(&self) -> bool {
        matches!(self, Checksum::RecordedSha256(_))
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksum::Sha256(h) => write!(f, "sha256 {h}"),
            Checksum::Sha256Gunzipped(h) => write!(f, "sha256 of the gunzipped content {h}"),
            Checksum::Md5(h) => write!(f, "md5 {h}"),
            Checksum::GitBlob(h) => write!(f, "git blob {h}"),
            Checksum::Unknown => write!(f, "checksum not published"),
            Checksum::RecordedSha256(h) => {
                write!(
                    f,
                    "sha256 {h}, recorded on first download; none is published"
                )
            }
            Checksum::OfMembers => write!(f, "each member is checked against its published sum"),
        }
    }
}

/// Outcome of a successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// The file matches the known checksum.
    Match,
    /// Nothing was known; this is the file's sha256.
    Unverified {
        /// The computed sha256.
        sha256: String,
    },
    /// Not checked here ([`Checksum::OfMembers`]): the caller verifies the content.
    Deferred,
}

/// The file does not match its checksum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checksum mismatch: expected {expected}, computed {actual}")]
pub struct Mismatch {
    /// What was expected.
    pub expected: String,
    /// What the file has.
    pub actual: String,
}

fn hash_reader<D: Digest>(mut r: impl Read) -> std::io::Result<String> {
    let mut hasher = D::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    hash_reader::<Sha256>(std::io::BufReader::new(std::fs::File::open(path)?))
}

/// sha256 of a byte slice, lower-case hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// md5 of a file, lower-case hex.
pub fn md5_file(path: &Path) -> std::io::Result<String> {
    hash_reader::<Md5>(std::io::BufReader::new(std::fs::File::open(path)?))
}

/// Git blob id of a file (`git hash-object`): SHA-1 of `"blob <size>\0"` and the bytes.
pub fn git_blob_id_file(path: &Path) -> std::io::Result<String> {
    let size = std::fs::metadata(path)?.len();
    let header = format!("blob {size}\0");
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    hash_reader::<Sha1>(header.as_bytes().chain(file))
}

/// sha256 of the gunzipped content of a file (of the file itself if it is not gzip).
pub fn sha256_gunzipped_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut magic = [0u8; 2];
    let is_gz = f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let f = std::io::BufReader::new(std::fs::File::open(path)?);
    if is_gz {
        hash_reader::<Sha256>(flate2::read::GzDecoder::new(f))
    } else {
        hash_reader::<Sha256>(f)
    }
}

/// Checks `path` against `checksum`. I/O errors (including a corrupt gzip stream for
/// [`Checksum::Sha256Gunzipped`]) are reported as mismatches of that kind.
pub fn verify(path: &Path, checksum: &Checksum) -> std::io::Result<Result<Verified, Mismatch>> {
    let compare = |expected: &str, actual: String| {
        if actual.eq_ignore_ascii_case(expected) {
            Ok(Verified::Match)
        } else {
            Err(Mismatch {
                expected: expected.to_string(),
                actual,
            })
        }
    };
    Ok(match checksum {
        Checksum::Sha256(h) => compare(h, sha256_file(path)?).map_err(|m| Mismatch {
            expected: format!("sha256 {}", m.expected),
            actual: format!("sha256 {}", m.actual),
        }),
        Checksum::RecordedSha256(h) => compare(h, sha256_file(path)?).map_err(|m| Mismatch {
            expected: format!("sha256 {} (recorded on first download)", m.expected),
            actual: format!("sha256 {}", m.actual),
        }),
        Checksum::Md5(h) => compare(h, md5_file(path)?).map_err(|m| Mismatch {
            expected: format!("md5 {}", m.expected),
            actual: format!("md5 {}", m.actual),
        }),
        Checksum::GitBlob(h) => compare(h, git_blob_id_file(path)?).map_err(|m| Mismatch {
            expected: format!("git blob {}", m.expected),
            actual: format!("git blob {}", m.actual),
        }),
        Checksum::Sha256Gunzipped(h) => match sha256_gunzipped_file(path) {
            Ok(actual) => compare(h, actual),
            Err(e) => Err(Mismatch {
                expected: format!("gzip data with content sha256 {h}"),
                actual: format!("unreadable gzip stream ({e})"),
            }),
        },
        Checksum::Unknown => Ok(Verified::Unverified {
            sha256: sha256_file(path)?,
        }),
        Checksum::OfMembers => Ok(Verified::Deferred),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // FIPS 180-2 / RFC 1321 test vectors for "abc".
        let dir = std::env::temp_dir().join(format!("xtask-checksum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("abc");
        std::fs::write(&p, b"abc").unwrap();
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&p).unwrap(), sha);
        assert_eq!(sha256_bytes(b"abc"), sha);
        assert_eq!(md5_file(&p).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            verify(&p, &Checksum::sha256(&sha.to_uppercase())).unwrap(),
            Ok(Verified::Match)
        );
        assert_eq!(
            verify(
                &p,
                &Checksum::Md5("900150983cd24fb0d6963f7d28e17f72".into())
            )
            .unwrap(),
            Ok(Verified::Match)
        );
        assert!(verify(&p, &Checksum::Md5("00".into())).unwrap().is_err());
        // `printf abc | git hash-object --stdin`.
        let blob = "f2ba8f84ab5c1bce84a7b441cb1959cfc7093b7f";
        assert_eq!(git_blob_id_file(&p).unwrap(), blob);
        assert_eq!(
            verify(&p, &Checksum::GitBlob(blob.into())).unwrap(),
            Ok(Verified::Match)
        );
        let e = verify(&p, &Checksum::GitBlob("00".into()))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.actual, format!("git blob {blob}"));
        // An empty file: `git hash-object /dev/null`.
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            git_blob_id_file(&empty).unwrap(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert!(verify(&p, &Checksum::sha256("00")).unwrap().is_err());
        // Not gzip: hashed as is.
        assert_eq!(
            verify(&p, &Checksum::Sha256Gunzipped(sha.into())).unwrap(),
            Ok(Verified::Match)
        );
        let gz = dir.join("abc.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut enc, b"abc").unwrap();
        let bytes = enc.finish().unwrap();
        std::fs::write(&gz, &bytes).unwrap();
        assert_eq!(sha256_gunzipped_file(&gz).unwrap(), sha);
        std::fs::write(&gz, &bytes[..bytes.len() - 4]).unwrap();
        assert!(
            verify(&gz, &Checksum::Sha256Gunzipped(sha.into()))
                .unwrap()
                .is_err()
        );
        assert_eq!(
            verify(&p, &Checksum::Unknown).unwrap(),
            Ok(Verified::Unverified { sha256: sha.into() })
        );
        // A file whose members are checked instead is not read: not even opened.
        let missing = dir.join("missing");
        assert!(verify(&missing, &Checksum::Unknown).is_err());
        assert_eq!(
            verify(&missing, &Checksum::OfMembers).unwrap(),
            Ok(Verified::Deferred)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
