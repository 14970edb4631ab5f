//! The crate's one `.npy` reader (the MAF loaders and the `cpflow` CLI both use it), built on
//! the maintained [`npyz`] crate, and a minimal `.npy` writer for fixtures.
//!
//! Accepted: numpy format versions 1–3; C or Fortran order; little-, big- or
//! no-endianness (`<`, `>`, `|`); dtypes `f4`, `f8`, `i1`…`i8`, `u1`…`u8` and `b1` (bool);
//! shape `(n, d)` or `(n,)` (read as `(n, 1)`). The values are returned as a row-major
//! `f64` [`Matrix`] (`i8`/`u8` values beyond 2^53 are rounded, as numpy's `astype(float64)`).
//! A file shorter than its header announces is a [`DatasetError::Truncated`]; any other
//! inconsistency (bad magic, unsupported dtype, bytes after the data) is a
//! [`DatasetError::Corrupt`]; another rank is a [`DatasetError::BadShape`]. Every message
//! names the file.

use std::io;
use std::path::Path;

use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar};

use super::{DatasetError, Matrix};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Maps an error of `npyz` on an in-memory buffer: running out of bytes is truncation.
fn npyz_error(path: &Path, what: &str, e: io::Error) -> DatasetError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        DatasetError::truncated(path, format!("{what} cut short"))
    } else {
        DatasetError::corrupt(path, format!("{what}: {e}"))
    }
}

/// Checks what `npyz` would not: the preamble (so that a cut-off file is `Truncated`, not
/// "bad magic") and that the product of the shape fits in `u64` (`npyz` multiplies the
/// dimensions unchecked, which panics in debug builds).
fn check_preamble(path: &Path, bytes: &[u8]) -> Result<(), DatasetError> {
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if head != &MAGIC[..head.len()] {
        return Err(DatasetError::corrupt(path, "not a .npy file (bad magic)"));
    }
    let start = match bytes.get(6) {
        Some(2 | 3) => 12,
        _ => 10,
    };
    if bytes.len() < start {
        return Err(DatasetError::truncated(
            path,
            "shorter than the .npy preamble",
        ));
    }
    let len = match start {
        12 => u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
        _ => usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
    };
    let end = start.saturating_add(len);
    if bytes.len() < end {
        return Err(DatasetError::truncated(
            path,
            format!(
                "header announces {len} bytes, the file has {} after the preamble",
                bytes.len() - start
            ),
        ));
    }
    let text = String::from_utf8_lossy(&bytes[start..end]);
    // `npyz` parses the header with a backtracking parser whose time doubles with each level
    // of bracket nesting (found by fuzzing: a 128-byte header nesting 30 deep would take
    // hours). numpy nests 2 deep for a plain array (the dict and the shape), deeper only for
    // record dtypes, which are not read here anyway.
    let depth = bracket_depth(&text);
    if depth > MAX_HEADER_NESTING {
        return Err(DatasetError::corrupt(
            path,
            format!(
                "header nests brackets {depth} deep (a numeric array's header nests 2 deep; \
                 more than {MAX_HEADER_NESTING} is refused)"
            ),
        ));
    }
    if let Some(i) = text.find("'shape'").or_else(|| text.find("\"shape\"")) {
        let tuple = text[i + 7..].split(')').next().unwrap_or("");
        let mut product = 1u64;
        for dim in tuple
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
        {
            // A dimension that does not fit in u64 is reported by npyz itself.
            if let Ok(dim) = dim.parse::<u64>() {
                product = product
                    .checked_mul(dim)
                    .ok_or_else(|| DatasetError::corrupt(path, "shape overflows"))?;
            }
        }
    }
    Ok(())
}

/// Deepest bracket nesting (`(`, `[`, `{`) accepted in a header.
const MAX_HEADER_NESTING: usize = 8;

/// The deepest nesting of brackets in a header's text. Brackets inside string literals count
/// too: a plain dtype's string holds at most one pair (`'<M8[ns]'`), and a string left open
/// cannot hide deeper nesting from the check.
fn bracket_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Reads every element of the body as `T` and converts it with `to_f64`.
fn read_as<T: npyz::Deserialize>(
    path: &Path,
    header: &NpyHeader,
    body: &[u8],
    to_f64: fn(T) -> f64,
) -> Result<Vec<f64>, DatasetError> {
    let reader = NpyFile::with_header(header.clone(), body)
        .data::<T>()
        .map_err(|e| DatasetError::corrupt(path, e.to_string()))?;
    reader
        .map(|v| v.map(to_f64))
        .collect::<io::Result<Vec<f64>>>()
        .map_err(|e| npyz_error(path, "data", e))
}

/// Reads the whole body of a `.npy` file as `f64` values.
type ElementReader = fn(&Path, &NpyHeader, &[u8]) -> Result<Vec<f64>, DatasetError>;

/// The size in bytes of one element of the plain dtype `ty` and the reader of its values, or
/// why the dtype is not read. Checked before the shape, so that a dtype without a fixed size
/// (`|O`) is reported as what it is.
fn element_reader(path: &Path, ty: &npyz::TypeStr) -> Result<(usize, ElementReader), DatasetError> {
    let reader: ElementReader = match (ty.type_char(), ty.size_field()) {
        (TypeChar::Float, 8) => |p, h, b| read_as::<f64>(p, h, b, |v| v),
        (TypeChar::Float, 4) => |p, h, b| read_as::<f32>(p, h, b, f64::from),
        (TypeChar::Int, 1) => |p, h, b| read_as::<i8>(p, h, b, f64::from),
        (TypeChar::Int, 2) => |p, h, b| read_as::<i16>(p, h, b, f64::from),
        (TypeChar::Int, 4) => |p, h, b| read_as::<i32>(p, h, b, f64::from),
        (TypeChar::Int, 8) => |p, h, b| read_as::<i64>(p, h, b, |v| v as f64),
        (TypeChar::Uint, 1) => |p, h, b| read_as::<u8>(p, h, b, f64::from),
        (TypeChar::Uint, 2) => |p, h, b| read_as::<u16>(p, h, b, f64::from),
        (TypeChar::Uint, 4) => |p, h, b| read_as::<u32>(p, h, b, f64::from),
        (TypeChar::Uint, 8) => |p, h, b| read_as::<u64>(p, h, b, |v| v as f64),
        (TypeChar::Bool, 1) => |p, h, b| read_as::<bool>(p, h, b, |v| f64::from(u8::from(v))),
        (TypeChar::Object, _) => {
            return Err(DatasetError::corrupt(
                path,
                format!(
                    "unsupported dtype {ty} (object arrays hold pickled Python objects, not \
                     numbers; save a numeric array, e.g. `np.save(path, a.astype(np.float64))`)"
                ),
            ));
        }
        _ => {
            return Err(DatasetError::corrupt(
                path,
                format!(
                    "unsupported dtype {ty} (expected f4, f8, i1-i8, u1-u8 or b1, any \
                     endianness)"
                ),
            ));
        }
    };
    // The sizes matched above are 1 to 8 bytes.
    let size = usize::try_from(ty.size_field()).unwrap_or(usize::MAX);
    Ok((size, reader))
}

/// What a parsed header says about the body: the matrix shape, the element size and reader.
struct BodyLayout {
    rows: usize,
    cols: usize,
    /// Bytes the body must have: `rows · cols · element size`.
    data_bytes: u64,
    read: ElementReader,
}

impl BodyLayout {
    /// The dtype's reader and the shape of `header`, or why they are not read.
    fn of(path: &Path, header: &NpyHeader) -> Result<Self, DatasetError> {
        let DType::Plain(ty) = header.dtype() else {
            return Err(DatasetError::corrupt(
                path,
                format!(
                    "unsupported dtype {} (expected a plain number type, not a record)",
                    header.dtype().descr()
                ),
            ));
        };
        let (size, read) = element_reader(path, &ty)?;
        let (rows, cols) = match header.shape() {
            [r, c] => (*r, *c),
            [r] => (*r, 1),
            s => {
                return Err(DatasetError::bad_shape(
                    format!("{}", path.display()),
                    "a 1-D or 2-D array",
                    format!("{s:?}"),
                ));
            }
        };
        let too_big = || DatasetError::corrupt(path, "shape overflows");
        let rows = usize::try_from(rows).map_err(|_| too_big())?;
        let cols = usize::try_from(cols).map_err(|_| too_big())?;
        let need = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(size))
            .ok_or_else(too_big)?;
        Ok(Self {
            rows,
            cols,
            data_bytes: need as u64,
            read,
        })
    }

    /// A body of `len` bytes is exactly the announced data: shorter is truncation, longer is
    /// corrupt.
    fn check_body_len(&self, path: &Path, len: u64) -> Result<(), DatasetError> {
        let (rows, cols, need) = (self.rows, self.cols, self.data_bytes);
        if len < need {
            let row_bytes = (need / (rows as u64).max(1)).max(1);
            return Err(DatasetError::truncated(
                path,
                format!(
                    "header announces shape ({rows}, {cols}) = {need} data bytes, file has \
                     {len} ({} complete rows)",
                    len / row_bytes
                ),
            ));
        }
        if len > need {
            return Err(DatasetError::corrupt(
                path,
                format!("{} bytes after the announced data", len - need),
            ));
        }
        Ok(())
    }
}

/// The shape `(rows, cols)` of a 1-D or 2-D numeric `.npy` file (`(n,)` is `(n, 1)`), from
/// its header and its size alone: the body is not read. The header is checked as
/// [`parse_npy_matrix`] checks it (magic, a supported dtype, the rank), and the file's size
/// must be exactly the header's plus the announced data, so a file cut short or with bytes
/// appended gives the same [`DatasetError::Truncated`] / [`DatasetError::Corrupt`] as a full
/// read; damage inside the data (which only a full read or a checksum finds) does not show.
///
/// ```
/// use cpflow::datasets::{DatasetError, Matrix, read_npy_shape, write_npy_f64};
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-npy-shape-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("m.npy");
/// let bytes = write_npy_f64(&Matrix::new(3, 2, vec![0.5; 6])?);
/// std::fs::write(&path, &bytes).unwrap();
/// assert_eq!(read_npy_shape(&path)?, (3, 2));
/// std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
/// assert!(matches!(read_npy_shape(&path), Err(DatasetError::Truncated { .. })));
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), DatasetError>(())
/// ```
pub fn read_npy_shape(path: &Path) -> Result<(usize, usize), DatasetError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| DatasetError::io(path, e))?
        .len();
    let mut file = io::BufReader::new(file);
    // The preamble (10 bytes, 12 from version 2), then the header length it announces.
    let mut head = Vec::with_capacity(64);
    (&mut file)
        .take(12)
        .read_to_end(&mut head)
        .map_err(|e| DatasetError::io(path, e))?;
    let header_len = match head.get(6) {
        Some(2 | 3) if head.len() >= 12 => {
            12 + u64::from(u32::from_le_bytes([head[8], head[9], head[10], head[11]]))
        }
        _ if head.len() >= 10 => 10 + u64::from(u16::from_le_bytes([head[8], head[9]])),
        // Too short for a preamble: reported by `check_preamble`.
        _ => 0,
    };
    let rest = header_len.saturating_sub(head.len() as u64);
    (&mut file)
        .take(rest)
        .read_to_end(&mut head)
        .map_err(|e| DatasetError::io(path, e))?;
    check_preamble(path, &head)?;
    let mut cursor = &head[..];
    let header = NpyHeader::from_reader(&mut cursor).map_err(|e| npyz_error(path, "header", e))?;
    let layout = BodyLayout::of(path, &header)?;
    let header_bytes = (head.len() - cursor.len()) as u64;
    layout.check_body_len(path, file_len.saturating_sub(header_bytes))?;
    Ok((layout.rows, layout.cols))
}

/// Parses `.npy` bytes holding a 1-D or 2-D numeric array into a row-major `f64` matrix
/// (`(n,)` becomes `(n, 1)`).
///
/// Accepted: numpy format versions 1–3; C or Fortran order; little-, big- or no-endianness
/// (`<`, `>`, `|`); dtypes `f4`, `f8`, `i1`…`i8`, `u1`…`u8` and `b1` (bool). A file shorter
/// than its header announces is a [`DatasetError::Truncated`]; any other inconsistency (bad
/// magic, unsupported dtype, bytes after the data) is a [`DatasetError::Corrupt`]; another
/// rank is a [`DatasetError::BadShape`].
///
/// `path` is used in error messages only.
///
/// ```
/// use cpflow::datasets::{Matrix, parse_npy_matrix, write_npy_f64};
/// let m = Matrix::new(2, 2, vec![1.0, 2.0, 3.0, 4.0])?;
/// let back = parse_npy_matrix("m.npy".as_ref(), &write_npy_f64(&m))?;
/// assert_eq!(back, m);
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn parse_npy_matrix(path: &Path, bytes: &[u8]) -> Result<Matrix<f64>, DatasetError> {
    check_preamble(path, bytes)?;
    let mut cursor = bytes;
    let header = NpyHeader::from_reader(&mut cursor).map_err(|e| npyz_error(path, "header", e))?;
    let body = cursor;
    let layout = BodyLayout::of(path, &header)?;
    layout.check_body_len(path, body.len() as u64)?;
    let BodyLayout {
        rows, cols, read, ..
    } = layout;
    // At most the body's length over the element size: it does not overflow.
    let count = rows * cols;
    let values = read(path, &header, body)?;
    let data = if header.order() == Order::Fortran && rows > 1 && cols > 1 {
        let mut out = vec![0.0; count];
        for c in 0..cols {
            for r in 0..rows {
                out[r * cols + c] = values[c * rows + r];
            }
        }
        out
    } else {
        values
    };
    Matrix::new(rows, cols, data)
}

/// Reads a 1-D or 2-D numeric `.npy` file as a row-major `f64` matrix (see
/// [`parse_npy_matrix`]); I/O errors, a missing file included, are [`DatasetError::Io`].
///
/// ```
/// use cpflow::datasets::{DatasetError, Matrix, read_npy_file, write_npy_f64};
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-read-npy-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("samples.npy");
/// let m = Matrix::new(3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
/// std::fs::write(&path, write_npy_f64(&m)).unwrap(); // what np.save writes for a (3, 2) f8 array
/// assert_eq!(read_npy_file(&path)?, m);
/// let err = read_npy_file(&dir.join("missing.npy")).unwrap_err();
/// assert!(matches!(err, DatasetError::Io { .. }));
/// std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), DatasetError>(())
/// ```
pub fn read_npy_file(path: &Path) -> Result<Matrix<f64>, DatasetError> {
    read_npy_file_as(path, path)
}

/// [`read_npy_file`] of the file at `path` that errors call `shown_as`: e.g. a staged copy
/// checked before it is renamed to `shown_as`.
///
/// ```
/// use cpflow::datasets::read_npy_file_as;
/// let dir = std::env::temp_dir().join(format!("cpflow-doc-read-npy-as-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let err = read_npy_file_as(&dir.join("gone.npy.tmp"), "data/power/data.npy".as_ref()).unwrap_err();
/// assert!(err.to_string().starts_with("I/O error on data/power/data.npy: "), "{err}");
/// std::fs::remove_dir_all(&dir).ok();
/// ```
pub fn read_npy_file_as(path: &Path, shown_as: &Path) -> Result<Matrix<f64>, DatasetError> {
    let bytes = std::fs::read(path).map_err(|e| DatasetError::io(shown_as, e))?;
    parse_npy_matrix(shown_as, &bytes)
}

/// Reads a 2-D `.npy` file; a missing file is reported with the download command.
pub(crate) fn read_npy_matrix(
    path: &Path,
    dataset: &'static str,
    command: &'static str,
) -> Result<Matrix<f64>, DatasetError> {
    let bytes = super::error::read_file(path, dataset, command)?;
    let m = parse_npy_matrix(path, &bytes)?;
    // The benchmarks' published arrays are finite: a NaN or infinity is a damaged file, named
    // here rather than met later as a non-finite training batch.
    if let Some((row, col, v)) = m.first_non_finite() {
        return Err(DatasetError::corrupt(
            path,
            format!("non-finite value {v} in row {row}, column {col} (counted from 0)"),
        ));
    }
    Ok(m)
}

/// Serialises a row-major `f64` matrix as a version-1.0 `.npy` (`<f8`, C order).
///
/// Used by tests and tools to fabricate fixtures.
///
/// ```
/// use cpflow::datasets::{Matrix, parse_npy_matrix, write_npy_f64};
/// let m = Matrix::new(2, 3, vec![0.5, -1.0, 2.0, 1e300, f64::MIN_POSITIVE, 0.0])?;
/// let bytes = write_npy_f64(&m);
/// assert!(bytes.starts_with(b"\x93NUMPY\x01\x00")); // format version 1.0
/// assert_eq!(bytes.len(), 128 + 6 * 8); // header padded to 64 bytes, then the values
/// assert_eq!(parse_npy_matrix("m.npy".as_ref(), &bytes)?, m); // exact round trip
/// # Ok::<(), cpflow::datasets::DatasetError>(())
/// ```
pub fn write_npy_f64(m: &Matrix<f64>) -> Vec<u8> {
    let mut out = npy_header("'<f8'", false, &format!("({}, {})", m.rows(), m.cols()));
    for v in m.data() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A version-1.0 preamble and header dict, padded like numpy's so that the data starts on a
/// 64-byte boundary. `descr` and `shape` are Python literals (`"'<f8'"`, `"(2, 3)"`).
fn npy_header(descr: &str, fortran: bool, shape: &str) -> Vec<u8> {
    let order = if fortran { "True" } else { "False" };
    let mut dict = format!("{{'descr': {descr}, 'fortran_order': {order}, 'shape': {shape}, }}");
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    // The padding keeps the dict short: its length fits in u16 for any shape string we write.
    out.extend_from_slice(&u16::try_from(dict.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests;
