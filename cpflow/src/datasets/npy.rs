//! A small, strict reader for 2-D numeric `.npy` files (numpy format versions 1–3).
//!
//! Supported `descr`: `<f8`, `>f8`, `<f4`, `>f4`, `|u1`; C or Fortran order. The data is
//! returned as `f64` in row-major order. A file shorter than its header announces is a
//! [`DatasetError::Truncated`]; any other inconsistency is [`DatasetError::Corrupt`].

use std::path::Path;

use super::{DatasetError, Matrix};

const MAGIC: &[u8] = b"\x93NUMPY";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Dtype {
    F8 { little: bool },
    F4 { little: bool },
    U1,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F8 { .. } => 8,
            Dtype::F4 { .. } => 4,
            Dtype::U1 => 1,
        }
    }
}

struct Header {
    dtype: Dtype,
    fortran: bool,
    shape: Vec<usize>,
    data_offset: usize,
}

fn dict_value<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let pat_sq = format!("'{key}'");
    let pat_dq = format!("\"{key}\"");
    let start = dict
        .find(&pat_sq)
        .map(|i| i + pat_sq.len())
        .or_else(|| dict.find(&pat_dq).map(|i| i + pat_dq.len()))?;
    let rest = dict[start..].trim_start().strip_prefix(':')?.trim_start();
    Some(rest)
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header, DatasetError> {
    if bytes.len() < 10 {
        return Err(DatasetError::truncated(
            path,
            "shorter than the .npy preamble",
        ));
    }
    if &bytes[..6] != MAGIC {
        return Err(DatasetError::corrupt(path, "not a .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(DatasetError::truncated(
                    path,
                    "shorter than the .npy preamble",
                ));
            }
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (len as usize, 12)
        }
        v => {
            return Err(DatasetError::corrupt(
                path,
                format!("unsupported .npy format version {v}"),
            ));
        }
    };
    let data_offset = start + header_len;
    if bytes.len() < data_offset {
        return Err(DatasetError::truncated(path, "header cut short"));
    }
    let dict = std::str::from_utf8(&bytes[start..data_offset])
        .map_err(|_| DatasetError::corrupt(path, "header is not text"))?;

    let descr = dict_value(dict, "descr")
        .and_then(|v| {
            let q = v.chars().next()?;
            let body = &v[1..];
            body.find(q).map(|end| &body[..end])
        })
        .ok_or_else(|| DatasetError::corrupt(path, "header has no 'descr'"))?;
    let dtype = match descr {
        "<f8" => Dtype::F8 { little: true },
        ">f8" => Dtype::F8 { little: false },
        "<f4" => Dtype::F4 { little: true },
        ">f4" => Dtype::F4 { little: false },
        "|u1" | "<u1" | ">u1" => Dtype::U1,
        other => {
            return Err(DatasetError::corrupt(
                path,
                format!("unsupported dtype {other:?} (expected <f8, <f4 or |u1)"),
            ));
        }
    };
    let fortran = match dict_value(dict, "fortran_order") {
        Some(v) if v.starts_with("False") => false,
        Some(v) if v.starts_with("True") => true,
        _ => return Err(DatasetError::corrupt(path, "header has no 'fortran_order'")),
    };
    let shape_str = dict_value(dict, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| DatasetError::corrupt(path, "header has no 'shape'"))?;
    let shape = shape_str
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| DatasetError::corrupt(path, format!("bad shape ({shape_str})")))?;
    Ok(Header {
        dtype,
        fortran,
        shape,
        data_offset,
    })
}

/// Parses `.npy` bytes holding a 2-D array into a row-major `f64` matrix.
///
/// `path` is used in error messages only.
pub fn parse_npy_matrix(path: &Path, bytes: &[u8]) -> Result<Matrix<f64>, DatasetError> {
    let h = parse_header(path, bytes)?;
    let (rows, cols) = match h.shape.as_slice() {
        [r, c] => (*r, *c),
        [r] => (*r, 1),
        s => {
            return Err(DatasetError::bad_shape(
                format!("{}", path.display()),
                "a 2-D array",
                format!("{s:?}"),
            ));
        }
    };
    let count = rows
        .checked_mul(cols)
        .ok_or_else(|| DatasetError::corrupt(path, "shape overflows"))?;
    let size = h.dtype.size();
    let need = count
        .checked_mul(size)
        .ok_or_else(|| DatasetError::corrupt(path, "shape overflows"))?;
    let body = &bytes[h.data_offset..];
    if body.len() < need {
        return Err(DatasetError::truncated(
            path,
            format!(
                "header announces shape ({rows}, {cols}) = {need} data bytes, file has {} \
                 ({} complete rows)",
                body.len(),
                body.len() / (cols.max(1) * size)
            ),
        ));
    }
    if body.len() > need {
        return Err(DatasetError::corrupt(
            path,
            format!("{} bytes after the announced data", body.len() - need),
        ));
    }
    let values: Vec<f64> = match h.dtype {
        Dtype::F8 { little } => body
            .chunks_exact(8)
            .map(|c| {
                let a = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                if little {
                    f64::from_le_bytes(a)
                } else {
                    f64::from_be_bytes(a)
                }
            })
            .collect(),
        Dtype::F4 { little } => body
            .chunks_exact(4)
            .map(|c| {
                let a = [c[0], c[1], c[2], c[3]];
                f64::from(if little {
                    f32::from_le_bytes(a)
                } else {
                    f32::from_be_bytes(a)
                })
            })
            .collect(),
        Dtype::U1 => body.iter().map(|&b| f64::from(b)).collect(),
    };
    let data = if h.fortran && rows > 1 && cols > 1 {
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

/// Reads a 2-D `.npy` file; a missing file is reported with the download command.
pub(crate) fn read_npy_matrix(
    path: &Path,
    dataset: &'static str,
    command: &'static str,
) -> Result<Matrix<f64>, DatasetError> {
    let bytes = super::error::read_file(path, dataset, command)?;
    parse_npy_matrix(path, &bytes)
}

/// Serialises a row-major `f64` matrix as a version-1.0 `.npy` (`<f8`, C order).
///
/// Used by tests and tools to fabricate fixtures.
pub fn write_npy_f64(m: &Matrix<f64>) -> Vec<u8> {
    let mut dict = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({}, {}), }}",
        m.rows(),
        m.cols()
    );
    // numpy pads the header with spaces so that the data starts on a 64-byte boundary.
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len() + 8 * m.data().len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    for v in m.data() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.npy")
    }

    #[test]
    fn roundtrip_f64() {
        let m = Matrix::new(3, 2, vec![1.5, -2.0, 3.25, 4.0, 5.0, 6.0]).unwrap();
        let bytes = write_npy_f64(&m);
        assert_eq!((bytes.len() - 8 * 6) % 64, 0);
        assert_eq!(parse_npy_matrix(p(), &bytes).unwrap(), m);
    }

    #[test]
    fn truncated_and_corrupt_are_reported() {
        let m = Matrix::new(3, 2, vec![0.0; 6]).unwrap();
        let bytes = write_npy_f64(&m);
        let cut = &bytes[..bytes.len() - 3];
        assert!(matches!(
            parse_npy_matrix(p(), cut),
            Err(DatasetError::Truncated { .. })
        ));
        assert!(matches!(
            parse_npy_matrix(p(), &bytes[..5]),
            Err(DatasetError::Truncated { .. })
        ));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(
            parse_npy_matrix(p(), &bad),
            Err(DatasetError::Corrupt { .. })
        ));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            parse_npy_matrix(p(), &extra),
            Err(DatasetError::Corrupt { .. })
        ));
        let mut i8 = bytes.clone();
        let at = i8.windows(3).position(|w| w == b"<f8").unwrap();
        i8[at + 1] = b'i';
        let err = parse_npy_matrix(p(), &i8).unwrap_err();
        assert!(err.to_string().contains("unsupported dtype"), "{err}");
    }

    #[test]
    fn f4_and_fortran_order() {
        let mut dict = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }".to_string();
        while !(10 + dict.len() + 1).is_multiple_of(64) {
            dict.push(' ');
        }
        dict.push('\n');
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        // column-major [[1,2,3],[4,5,6]] = 1,4,2,5,3,6
        for v in [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let m = parse_npy_matrix(p(), &b).unwrap();
        assert_eq!(m.data(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }
}
