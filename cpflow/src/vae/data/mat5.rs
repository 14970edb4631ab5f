//! A small reader for MATLAB MAT-files, level 5 (`save -v6` / `-v7`, compressed or not):
//! real numeric arrays only, which is what the VAE datasets store (Omniglot's
//! `chardata.mat`, Caltech 101 Silhouettes' `.mat`).
//!
//! Layout (MathWorks, "MAT-File Format", level 5): a 128-byte header (text, subsystem
//! offset, version `0x0100`, endian indicator `IM`/`MI`), then data elements, each an
//! 8-byte tag (type, byte count; or the 4-byte "small data element" form) followed by its
//! data padded to 8 bytes. A variable is an `miMATRIX` element (array flags, dimensions,
//! name, real part), stored as is or inside an `miCOMPRESSED` element (a zlib stream holding
//! the `miMATRIX` element). The real part may use a narrower storage type than the class
//! (MATLAB writes integer-valued doubles as `miUINT8`); values are converted.
//!
//! Compressed variables are decoded as a stream: a variable that is not asked for is skipped
//! after its name, and a wanted one is converted while it is inflated, so reading Omniglot's
//! 784 × 24,345 doubles into `f32` needs only the `f32` output in memory.

use std::io::Read;
use std::path::Path;

use crate::datasets::DatasetError;

const HEADER_LEN: usize = 128;
const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
/// Array classes `mxDOUBLE_CLASS` (6) to `mxUINT64_CLASS` (15) are numeric.
const NUMERIC_CLASSES: std::ops::RangeInclusive<u32> = 6..=15;
const COMPLEX_FLAG: u32 = 0x0800;
/// Values converted per read call while streaming a real part.
const CHUNK: usize = 1 << 14;

/// An element type a MAT array can be read into (`f32` or `f64`).
///
/// ```
/// use cpflow::vae::MatValue;
/// assert_eq!(<f32 as MatValue>::from_f64(0.1), 0.1f32);
/// assert_eq!(<f64 as MatValue>::from_f64(0.1), 0.1f64);
/// ```
pub trait MatValue: Copy + Send + Sync + 'static {
    /// Converts one stored value (already widened to `f64`).
    fn from_f64(v: f64) -> Self;
}

impl MatValue for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

impl MatValue for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

/// One real numeric variable of a MAT-file.
///
/// ```
/// use cpflow::vae::{MatArray, parse_mat_v5};
/// # fn main() -> Result<(), cpflow::datasets::DatasetError> {
/// // A level-5 MAT-file holding one 2×3 double matrix `a` = [[1, 2, 3], [4, 5, 6]], its
/// // values stored as uint8 (as MATLAB does for integer-valued doubles).
/// let tag = |ty: u32, len: u32| [ty.to_le_bytes(), len.to_le_bytes()].concat();
/// let mut bytes = b"MATLAB 5.0 MAT-file".to_vec();
/// bytes.resize(124, b' ');
/// bytes.extend([0x00, 0x01, b'I', b'M']); // version 0x0100, little-endian
/// bytes.extend(tag(14, 56)); // miMATRIX, 56 bytes
/// bytes.extend(tag(6, 8)); // array flags (miUINT32): class 6 = double
/// bytes.extend([6, 0, 0, 0, 0, 0, 0, 0]);
/// bytes.extend(tag(5, 8)); // dimensions (miINT32): 2 × 3
/// bytes.extend([2, 0, 0, 0, 3, 0, 0, 0]);
/// bytes.extend(tag(1 | 1 << 16, u32::from_le_bytes(*b"a\0\0\0"))); // name, small element
/// bytes.extend(tag(2, 6)); // real part (miUINT8), column-major, padded to 8 bytes
/// bytes.extend([1, 4, 2, 5, 3, 6, 0, 0]);
/// let vars: Vec<MatArray<f64>> = parse_mat_v5("a.mat".as_ref(), &bytes, &["a"])?;
/// let a = &vars[0];
/// assert_eq!((a.name.as_str(), a.dims.as_slice()), ("a", &[2, 3][..]));
/// // Element (i, j) is data[i + j·rows]: row 1, column 2 holds 6.
/// assert_eq!(a.data[1 + 2 * a.dims[0]], 6.0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray<T> {
    /// The variable name.
    pub name: String,
    /// MATLAB dimensions (at least two).
    pub dims: Vec<usize>,
    /// The values in MATLAB's **column-major** order: element `(i, j)` of a 2-D array is
    /// `data[i + j * dims[0]]`.
    pub data: Vec<T>,
}

/// Reads the named variables from a level-5 MAT-file, in the order of `names`.
///
/// Errors: a missing file is [`DatasetError::Io`] (callers that know a download command
/// check for the file first); a MAT 7.3 (HDF5) or level-4 file, a variable that is absent
/// or not a real numeric array are [`DatasetError::Corrupt`]; a file or zlib stream that
/// ends early is [`DatasetError::Truncated`].
///
/// ```
/// use cpflow::datasets::DatasetError;
/// use cpflow::vae::read_mat_v5;
/// # fn main() -> Result<(), DatasetError> {
/// // A level-5 MAT-file holding one 2×3 double matrix `a` = [[1, 2, 3], [4, 5, 6]], its
/// // values stored as uint8 (as MATLAB does for integer-valued doubles).
/// let tag = |ty: u32, len: u32| [ty.to_le_bytes(), len.to_le_bytes()].concat();
/// let mut bytes = b"MATLAB 5.0 MAT-file".to_vec();
/// bytes.resize(124, b' ');
/// bytes.extend([0x00, 0x01, b'I', b'M']); // version 0x0100, little-endian
/// bytes.extend(tag(14, 56)); // miMATRIX, 56 bytes
/// bytes.extend(tag(6, 8)); // array flags (miUINT32): class 6 = double
/// bytes.extend([6, 0, 0, 0, 0, 0, 0, 0]);
/// bytes.extend(tag(5, 8)); // dimensions (miINT32): 2 × 3
/// bytes.extend([2, 0, 0, 0, 3, 0, 0, 0]);
/// bytes.extend(tag(1 | 1 << 16, u32::from_le_bytes(*b"a\0\0\0"))); // name, small element
/// bytes.extend(tag(2, 6)); // real part (miUINT8), column-major, padded to 8 bytes
/// bytes.extend([1, 4, 2, 5, 3, 6, 0, 0]);
/// let path = std::env::temp_dir().join(format!("cpflow-doc-mat-{}.mat", std::process::id()));
/// std::fs::write(&path, &bytes).unwrap();
/// let vars = read_mat_v5::<f64>(&path, &["a"])?;
/// assert_eq!(vars[0].dims, vec![2, 3]);
/// std::fs::remove_file(&path).unwrap();
/// // Omniglot's file is read as `read_mat_v5::<f32>(path, &["data", "testdata"])`; a
/// // missing file is an I/O error.
/// assert!(matches!(read_mat_v5::<f32>(&path, &["a"]), Err(DatasetError::Io { .. })));
/// # Ok(())
/// # }
/// ```
pub fn read_mat_v5<T: MatValue>(
    path: &Path,
    names: &[&str],
) -> Result<Vec<MatArray<T>>, DatasetError> {
    let bytes = std::fs::read(path).map_err(|e| DatasetError::io(path, e))?;
    parse_mat_v5(path, &bytes, names)
}

/// [`read_mat_v5`] on bytes already in memory (`path` only names the file in errors).
///
/// ```
/// use cpflow::datasets::DatasetError;
/// use cpflow::vae::parse_mat_v5;
/// # fn main() -> Result<(), DatasetError> {
/// // A level-5 MAT-file holding one 2×3 double matrix `a` = [[1, 2, 3], [4, 5, 6]], its
/// // values stored as uint8 (as MATLAB does for integer-valued doubles).
/// let tag = |ty: u32, len: u32| [ty.to_le_bytes(), len.to_le_bytes()].concat();
/// let mut bytes = b"MATLAB 5.0 MAT-file".to_vec();
/// bytes.resize(124, b' ');
/// bytes.extend([0x00, 0x01, b'I', b'M']); // version 0x0100, little-endian
/// bytes.extend(tag(14, 56)); // miMATRIX, 56 bytes
/// bytes.extend(tag(6, 8)); // array flags (miUINT32): class 6 = double
/// bytes.extend([6, 0, 0, 0, 0, 0, 0, 0]);
/// bytes.extend(tag(5, 8)); // dimensions (miINT32): 2 × 3
/// bytes.extend([2, 0, 0, 0, 3, 0, 0, 0]);
/// bytes.extend(tag(1 | 1 << 16, u32::from_le_bytes(*b"a\0\0\0"))); // name, small element
/// bytes.extend(tag(2, 6)); // real part (miUINT8), column-major, padded to 8 bytes
/// bytes.extend([1, 4, 2, 5, 3, 6, 0, 0]);
/// let vars = parse_mat_v5::<f32>("a.mat".as_ref(), &bytes, &["a"])?;
/// assert_eq!(vars[0].data, vec![1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// // A variable that is not in the file, and a file cut short, are errors.
/// let missing = parse_mat_v5::<f32>("a.mat".as_ref(), &bytes, &["b"]);
/// assert!(matches!(missing, Err(DatasetError::Corrupt { .. })));
/// let cut = parse_mat_v5::<f32>("a.mat".as_ref(), &bytes[..150], &["a"]);
/// assert!(matches!(cut, Err(DatasetError::Truncated { .. })));
/// # Ok(())
/// # }
/// ```
pub fn parse_mat_v5<T: MatValue>(
    path: &Path,
    bytes: &[u8],
    names: &[&str],
) -> Result<Vec<MatArray<T>>, DatasetError> {
    let big_endian = check_header(path, bytes)?;
    let mut found: Vec<Option<MatArray<T>>> = names.iter().map(|_| None).collect();
    let mut pos = HEADER_LEN;
    while pos < bytes.len() && found.iter().any(Option::is_none) {
        let tag_bytes = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| truncated(path, format!("data element tag cut short at byte {pos}")))?;
        let mut head = ElementReader::new(tag_bytes, big_endian);
        let tag = head
            .tag()
            .map_err(|e| DatasetError::decoding(path, "data element tag", e))?;
        if tag.small.is_some() {
            return Err(DatasetError::corrupt(
                path,
                format!("top-level data element at byte {pos} uses the small form"),
            ));
        }
        let start = pos + 8;
        let end = start
            .checked_add(tag.len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                truncated(
                    path,
                    format!(
                        "data element at byte {pos} announces {} bytes, {} remain",
                        tag.len,
                        bytes.len() - start
                    ),
                )
            })?;
        let body = &bytes[start..end];
        let parsed = match tag.ty {
            MI_COMPRESSED => {
                let mut r = ElementReader::new(flate2::read::ZlibDecoder::new(body), big_endian);
                let inner = r
                    .tag()
                    .map_err(|e| DatasetError::decoding(path, "compressed element", e))?;
                if inner.ty == MI_MATRIX {
                    read_matrix(path, &mut r, inner.len, names)?
                } else {
                    None
                }
            }
            MI_MATRIX => read_matrix(
                path,
                &mut ElementReader::new(body, big_endian),
                tag.len,
                names,
            )?,
            _ => None,
        };
        if let Some((k, array)) = parsed
            && found[k].is_none()
        {
            found[k] = Some(array);
        }
        // Compressed elements are not padded; others are padded to 8 bytes.
        pos = if tag.ty == MI_COMPRESSED {
            end
        } else {
            start + tag.len.div_ceil(8) * 8
        };
    }
    names
        .iter()
        .zip(found)
        .map(|(name, a)| {
            a.ok_or_else(|| {
                DatasetError::corrupt(path, format!("no variable `{name}` in the MAT-file"))
            })
        })
        .collect()
}

/// Checks the 128-byte header; returns whether the file is big-endian.
fn check_header(path: &Path, bytes: &[u8]) -> Result<bool, DatasetError> {
    let header = bytes.get(..HEADER_LEN).ok_or_else(|| {
        truncated(
            path,
            format!("{} bytes, shorter than a MAT-file header", bytes.len()),
        )
    })?;
    if header.starts_with(b"MATLAB 7.3") {
        return Err(DatasetError::corrupt(
            path,
            "MAT 7.3 (HDF5) file: save it with `save -v7` (or scipy.io.savemat) to read it here",
        ));
    }
    let big_endian = match &header[126..128] {
        b"IM" => false,
        b"MI" => true,
        _ => {
            return Err(DatasetError::corrupt(
                path,
                "not a level-5 MAT-file (no endian indicator at bytes 126-127)",
            ));
        }
    };
    let version = if big_endian {
        u16::from_be_bytes([header[124], header[125]])
    } else {
        u16::from_le_bytes([header[124], header[125]])
    };
    if version != 0x0100 {
        return Err(DatasetError::corrupt(
            path,
            format!("MAT-file version {version:#06x}, expected 0x0100 (level 5)"),
        ));
    }
    Ok(big_endian)
}

fn truncated(path: &Path, detail: String) -> DatasetError {
    DatasetError::truncated(path, detail)
}

/// Parses the body of an `miMATRIX` element of `len` bytes. Returns the index in `names`
/// and the array when the variable is wanted, `None` (without reading its data) otherwise.
fn read_matrix<R: Read, T: MatValue>(
    path: &Path,
    r: &mut ElementReader<R>,
    len: usize,
    names: &[&str],
) -> Result<Option<(usize, MatArray<T>)>, DatasetError> {
    if len == 0 {
        return Ok(None); // an empty miMATRIX placeholder
    }
    let dec = |what: &'static str| move |e: std::io::Error| DatasetError::decoding(path, what, e);
    let flags = r.sub_element(MI_UINT32).map_err(dec("array flags"))?;
    let flags = flags
        .get(..4)
        .map(|b| r.u32_from(b))
        .ok_or_else(|| DatasetError::corrupt(path, "array flags shorter than 4 bytes"))?;
    let dims_raw = r.sub_element(MI_INT32).map_err(dec("array dimensions"))?;
    let name_raw = r.sub_element(MI_INT8).map_err(dec("array name"))?;
    let name = String::from_utf8_lossy(&name_raw).into_owned();
    let Some(k) = names.iter().position(|n| *n == name) else {
        return Ok(None);
    };
    let class = flags & 0xff;
    if !NUMERIC_CLASSES.contains(&class) || flags & COMPLEX_FLAG != 0 {
        return Err(DatasetError::corrupt(
            path,
            format!(
                "variable `{name}` has MATLAB class {class}{}: only real numeric arrays are read",
                if flags & COMPLEX_FLAG != 0 {
                    " (complex)"
                } else {
                    ""
                }
            ),
        ));
    }
    if dims_raw.len() < 8 || dims_raw.len() % 4 != 0 {
        return Err(DatasetError::corrupt(
            path,
            format!("variable `{name}`: {} bytes of dimensions", dims_raw.len()),
        ));
    }
    let mut dims = Vec::with_capacity(dims_raw.len() / 4);
    for c in dims_raw.chunks_exact(4) {
        let d = r.u32_from(c) as i32;
        let d = usize::try_from(d).map_err(|_| {
            DatasetError::corrupt(path, format!("variable `{name}`: negative dimension {d}"))
        })?;
        dims.push(d);
    }
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            DatasetError::corrupt(
                path,
                format!(
                    "variable `{name}`: dimensions {} overflow",
                    crate::vae::shape_text::times_text(&dims)
                ),
            )
        })?;
    let tag = r.tag().map_err(dec("real part tag"))?;
    let width = type_width(tag.ty).ok_or_else(|| {
        DatasetError::corrupt(
            path,
            format!(
                "variable `{name}`: unknown storage type {} for the real part",
                tag.ty
            ),
        )
    })?;
    if count.checked_mul(width) != Some(tag.len) {
        return Err(DatasetError::corrupt(
            path,
            format!(
                "variable `{name}`: dimensions {} need {count} values, the real part holds {} bytes of type {}",
                crate::vae::shape_text::times_text(&dims),
                tag.len,
                tag.ty
            ),
        ));
    }
    let data = match tag.small {
        Some(b) => decode_values(&b[..tag.len], tag.ty, r.big_endian),
        None => {
            let mut data = Vec::with_capacity(count.min(1 << 24));
            let mut buf = vec![0u8; CHUNK * width];
            let mut left = count;
            while left > 0 {
                let n = left.min(CHUNK);
                let chunk = &mut buf[..n * width];
                r.inner.read_exact(chunk).map_err(dec("real part data"))?;
                data.extend(decode_values::<T>(chunk, tag.ty, r.big_endian));
                left -= n;
            }
            data
        }
    };
    Ok(Some((k, MatArray { name, dims, data })))
}

/// Bytes per value of a numeric storage type.
fn type_width(ty: u32) -> Option<usize> {
    Some(match ty {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        _ => return None,
    })
}

fn decode_values<T: MatValue>(b: &[u8], ty: u32, big: bool) -> Vec<T> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            b.chunks_exact($n)
                .map(|c| {
                    let a: [u8; $n] = c.try_into().unwrap_or([0; $n]);
                    let v = if big {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    };
                    T::from_f64(v as f64)
                })
                .collect()
        };
    }
    match ty {
        MI_INT8 => conv!(i8, 1),
        MI_UINT8 => conv!(u8, 1),
        MI_INT16 => conv!(i16, 2),
        MI_UINT16 => conv!(u16, 2),
        MI_INT32 => conv!(i32, 4),
        MI_UINT32 => conv!(u32, 4),
        MI_SINGLE => conv!(f32, 4),
        MI_DOUBLE => conv!(f64, 8),
        MI_INT64 => conv!(i64, 8),
        MI_UINT64 => conv!(u64, 8),
        _ => Vec::new(),
    }
}

/// A data element tag: the type, the byte count and, for the small form, the data.
struct Tag {
    ty: u32,
    len: usize,
    small: Option<[u8; 4]>,
}

/// Reads tags and sub-elements from a stream of elements.
struct ElementReader<R> {
    inner: R,
    big_endian: bool,
}

impl<R: Read> ElementReader<R> {
    fn new(inner: R, big_endian: bool) -> Self {
        Self { inner, big_endian }
    }

    fn u32_from(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    fn tag(&mut self) -> std::io::Result<Tag> {
        let mut b = [0u8; 8];
        self.inner.read_exact(&mut b)?;
        let first = self.u32_from(&b[..4]);
        if first >> 16 != 0 {
            // Small data element: type in the low, byte count in the high 16 bits.
            let len = (first >> 16) as usize;
            if len > 4 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("small data element of {len} bytes"),
                ));
            }
            Ok(Tag {
                ty: first & 0xffff,
                len,
                small: Some([b[4], b[5], b[6], b[7]]),
            })
        } else {
            Ok(Tag {
                ty: first,
                len: self.u32_from(&b[4..]) as usize,
                small: None,
            })
        }
    }

    /// Reads a whole (small) sub-element of type `ty`, skipping its padding.
    fn sub_element(&mut self, ty: u32) -> std::io::Result<Vec<u8>> {
        let tag = self.tag()?;
        if tag.ty != ty {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "sub-element of type {} where type {ty} was expected",
                    tag.ty
                ),
            ));
        }
        if let Some(b) = tag.small {
            return Ok(b[..tag.len].to_vec());
        }
        if tag.len > 1 << 20 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("header sub-element of {} bytes", tag.len),
            ));
        }
        let mut v = vec![0u8; tag.len.div_ceil(8) * 8];
        self.inner.read_exact(&mut v)?;
        v.truncate(tag.len);
        Ok(v)
    }
}
