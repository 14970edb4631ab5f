//! Tests of the VAE data: the MAT reader on a MATLAB-written file and on files written here,
//! the loaders on the real Frey / Caltech / MNIST files of the project's read-only
//! `../shared/data` (as `datasets::tests` does) and on a fabricated Omniglot MAT-file, with
//! expected values computed by the reference's numpy code.

mod batches;
mod loaders;
mod mat;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub(super) fn shared_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

/// A fresh directory under the system temp dir, removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("cpflow-vae-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
    pub(super) fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A minimal level-5 MAT-file writer (the layout of MathWorks' "MAT-File Format"), used to
/// fabricate files; data of at most 4 bytes uses the small element form, as MATLAB does.
pub(super) struct MatWriter {
    pub big_endian: bool,
    out: Vec<u8>,
}

/// One variable: name, MATLAB class (6 = double, 9 = uint8, ...), dims, storage type
/// (`miDOUBLE` = 9, `miUINT8` = 2, ...) and the stored bytes of the real part.
pub(super) struct MatVar<'a> {
    pub name: &'a str,
    pub class: u32,
    pub dims: Vec<usize>,
    pub storage: u32,
    pub data: Vec<u8>,
}

impl MatWriter {
    pub(super) fn new(big_endian: bool) -> Self {
        let mut out = Vec::with_capacity(128);
        let text = b"MATLAB 5.0 MAT-file, written by the cpflow tests";
        out.extend_from_slice(text);
        out.resize(116, b' ');
        out.extend_from_slice(&[0; 8]);
        if big_endian {
            out.extend_from_slice(&0x0100u16.to_be_bytes());
            out.extend_from_slice(b"MI");
        } else {
            out.extend_from_slice(&0x0100u16.to_le_bytes());
            out.extend_from_slice(b"IM");
        }
        Self { big_endian, out }
    }

    fn u32(&self, v: u32) -> [u8; 4] {
        if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn element(&self, ty: u32, data: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        if data.len() <= 4 && ty != 14 {
            e.extend_from_slice(&self.u32(((data.len() as u32) << 16) | ty));
            let mut d = data.to_vec();
            d.resize(4, 0);
            e.extend_from_slice(&d);
        } else {
            e.extend_from_slice(&self.u32(ty));
            e.extend_from_slice(&self.u32(data.len() as u32));
            e.extend_from_slice(data);
            e.resize(e.len().div_ceil(8) * 8, 0);
        }
        e
    }

    fn matrix(&self, v: &MatVar) -> Vec<u8> {
        let mut flags = self.u32(v.class).to_vec();
        flags.extend_from_slice(&[0; 4]);
        let dims: Vec<u8> = v.dims.iter().flat_map(|&d| self.u32(d as u32)).collect();
        let mut body = self.element(6, &flags);
        body.extend(self.element(5, &dims));
        body.extend(self.element(1, v.name.as_bytes()));
        body.extend(self.element(v.storage, &v.data));
        self.element(14, &body)
    }

    /// Appends a variable, zlib-compressed (`miCOMPRESSED`, unpadded) or not.
    pub(super) fn var(mut self, v: &MatVar, compressed: bool) -> Self {
        let m = self.matrix(v);
        if compressed {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&m).unwrap();
            let z = z.finish().unwrap();
            let (a, b) = (self.u32(15), self.u32(z.len() as u32));
            self.out.extend_from_slice(&a);
            self.out.extend_from_slice(&b);
            self.out.extend_from_slice(&z);
        } else {
            self.out.extend(m);
        }
        self
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// `f64` values as stored bytes in the writer's byte order.
pub(super) fn f64_bytes(v: &[f64], big_endian: bool) -> Vec<u8> {
    v.iter()
        .flat_map(|x| {
            if big_endian {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            }
        })
        .collect()
}
