//! `.npy` files written byte by byte: every dtype × order × endianness, and the error cases.

use super::*;

fn p() -> &'static Path {
    Path::new("fixture.npy")
}

/// One element type: descr letter+size and an exact encoder of an `f64` value.
struct Kind {
    code: &'static str,
    size: usize,
    /// Values exactly representable in the type (2×3 matrix, row-major), extremes included.
    values: [f64; 6],
    encode: fn(f64, bool) -> Vec<u8>,
}

fn bytes_of<const N: usize>(le: [u8; N], little: bool) -> Vec<u8> {
    let mut v = le.to_vec();
    if !little {
        v.reverse();
    }
    v
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            code: "f8",
            size: 8,
            values: [-1.5, 0.1, 1e300, -0.0, 2.5e-310, 7.0],
            encode: |v, l| bytes_of(v.to_le_bytes(), l),
        },
        Kind {
            code: "f4",
            size: 4,
            values: [-1.5, 0.25, 3.0e38_f32 as f64, -0.0, 1.0e-45_f32 as f64, 7.0],
            encode: |v, l| bytes_of((v as f32).to_le_bytes(), l),
        },
        Kind {
            code: "i1",
            size: 1,
            values: [-128.0, -1.0, 0.0, 1.0, 100.0, 127.0],
            encode: |v, l| bytes_of((v as i8).to_le_bytes(), l),
        },
        Kind {
            code: "i2",
            size: 2,
            values: [-32768.0, -1.0, 0.0, 258.0, 1000.0, 32767.0],
            encode: |v, l| bytes_of((v as i16).to_le_bytes(), l),
        },
        Kind {
            code: "i4",
            size: 4,
            values: [-2147483648.0, -1.0, 0.0, 16909060.0, 1000.0, 2147483647.0],
            encode: |v, l| bytes_of((v as i32).to_le_bytes(), l),
        },
        Kind {
            code: "i8",
            size: 8,
            values: [
                -9.007199254740992e15,
                -1.0,
                0.0,
                72623859790382856.0,
                5.0,
                2.0f64.powi(62),
            ],
            encode: |v, l| bytes_of((v as i64).to_le_bytes(), l),
        },
        Kind {
            code: "u1",
            size: 1,
            values: [0.0, 1.0, 2.0, 128.0, 200.0, 255.0],
            encode: |v, l| bytes_of((v as u8).to_le_bytes(), l),
        },
        Kind {
            code: "u2",
            size: 2,
            values: [0.0, 1.0, 258.0, 32768.0, 1000.0, 65535.0],
            encode: |v, l| bytes_of((v as u16).to_le_bytes(), l),
        },
        Kind {
            code: "u4",
            size: 4,
            values: [0.0, 1.0, 16909060.0, 2147483648.0, 1000.0, 4294967295.0],
            encode: |v, l| bytes_of((v as u32).to_le_bytes(), l),
        },
        Kind {
            code: "u8",
            size: 8,
            values: [
                0.0,
                1.0,
                72623859790382856.0,
                2.0f64.powi(63),
                5.0,
                2.0f64.powi(53),
            ],
            encode: |v, l| bytes_of((v as u64).to_le_bytes(), l),
        },
        Kind {
            code: "b1",
            size: 1,
            values: [1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
            encode: |v, _| vec![u8::from(v != 0.0)],
        },
    ]
}

/// A `.npy` file of a 2×3 matrix in the given order and byte order.
fn file_2x3(kind: &Kind, endian: char, fortran: bool, little: bool) -> Vec<u8> {
    let descr = format!("'{endian}{}'", kind.code);
    let mut b = npy_header(&descr, fortran, "(2, 3)");
    let order: Vec<usize> = if fortran {
        vec![0, 3, 1, 4, 2, 5] // column-major
    } else {
        (0..6).collect()
    };
    for i in order {
        b.extend((kind.encode)(kind.values[i], little));
    }
    b
}

#[test]
fn every_dtype_order_and_endianness_reads_exactly() {
    let mut checked = 0;
    for kind in kinds() {
        let endians: &[(char, bool)] = if kind.size == 1 {
            &[('|', true), ('<', true), ('>', true)]
        } else {
            &[('<', true), ('>', false)]
        };
        for &(endian, little) in endians {
            for fortran in [false, true] {
                let bytes = file_2x3(&kind, endian, fortran, little);
                let m = parse_npy_matrix(p(), &bytes)
                    .unwrap_or_else(|e| panic!("{endian}{} fortran={fortran}: {e}", kind.code));
                assert_eq!((m.rows(), m.cols()), (2, 3));
                for (i, (got, want)) in m.data().iter().zip(kind.values).enumerate() {
                    // Exact: every value is representable in the type and in f64.
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{endian}{} fortran={fortran} element {i}: {got} vs {want}",
                        kind.code
                    );
                }
                checked += 1;
            }
        }
    }
    // 8 multi-byte kinds × 2 byte orders + 3 one-byte kinds × 3 markers, × 2 axis orders.
    assert_eq!(checked, 2 * (8 * 2 + 3 * 3));
}

#[test]
fn big_endian_is_not_read_as_little() {
    // Guards the test above: the same bytes under the other byte order give other values.
    let kind = &kinds()[0];
    let mut bytes = file_2x3(kind, '>', false, false);
    let at = bytes.windows(3).position(|w| w == b">f8").unwrap();
    bytes[at] = b'<';
    let m = parse_npy_matrix(p(), &bytes).unwrap();
    assert_ne!(m.data()[0], -1.5);
}

#[test]
fn one_dimensional_is_a_column_and_versions_2_and_3_parse() {
    let mut b = npy_header("'<i4'", true, "(3,)");
    for v in [4i32, -5, 6] {
        b.extend(v.to_le_bytes());
    }
    let m = parse_npy_matrix(p(), &b).unwrap();
    assert_eq!(
        (m.rows(), m.cols(), m.data()),
        (3, 1, &[4.0, -5.0, 6.0][..])
    );

    // Version 2.0/3.0: 4-byte header length.
    for major in [2u8, 3] {
        let v1 = write_npy_f64(&Matrix::new(1, 2, vec![1.0, 2.0]).unwrap());
        let dict = &v1[10..v1.len() - 16];
        let mut v2 = MAGIC.to_vec();
        v2.extend([major, 0]);
        v2.extend(u32::try_from(dict.len()).unwrap().to_le_bytes());
        v2.extend(dict);
        v2.extend(&v1[v1.len() - 16..]);
        assert_eq!(parse_npy_matrix(p(), &v2).unwrap().data(), &[1.0, 2.0]);
    }

    let empty = npy_header("'<f8'", false, "(0, 4)");
    let m = parse_npy_matrix(p(), &empty).unwrap();
    assert_eq!((m.rows(), m.cols()), (0, 4));
}

#[test]
fn roundtrip_f64() {
    let m = Matrix::new(3, 2, vec![1.5, -2.0, 3.25, 4.0, 5.0, 6.0]).unwrap();
    let bytes = write_npy_f64(&m);
    assert_eq!((bytes.len() - 8 * 6) % 64, 0);
    assert_eq!(parse_npy_matrix(p(), &bytes).unwrap(), m);
}

fn assert_names_file(err: &DatasetError) {
    assert!(err.to_string().contains("fixture.npy"), "{err}");
}

#[test]
fn truncated_files_are_truncated() {
    let m = Matrix::new(3, 2, vec![0.0; 6]).unwrap();
    let bytes = write_npy_f64(&m);
    // Data cut, header cut, preamble cut, magic cut.
    for len in [bytes.len() - 3, bytes.len() - 48, 40, 9, 7, 5, 0] {
        let err = parse_npy_matrix(p(), &bytes[..len]).unwrap_err();
        assert!(
            matches!(err, DatasetError::Truncated { .. }),
            "len {len}: {err}"
        );
        assert_names_file(&err);
    }
    let err = parse_npy_matrix(p(), &bytes[..bytes.len() - 20]).unwrap_err();
    assert!(err.to_string().contains("(1 complete rows)"), "{err}");
    // A version-2 preamble announcing a 4 GiB header in a 16-byte file.
    let mut v2 = MAGIC.to_vec();
    v2.extend([2, 0]);
    v2.extend(u32::MAX.to_le_bytes());
    v2.extend(b"{'de");
    let err = parse_npy_matrix(p(), &v2).unwrap_err();
    assert!(matches!(err, DatasetError::Truncated { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("header announces 4294967295 bytes"),
        "{err}"
    );
}

#[test]
fn corrupt_files_are_corrupt() {
    let good = write_npy_f64(&Matrix::new(3, 2, vec![0.0; 6]).unwrap());
    let corrupt = |bytes: &[u8], needle: &str| {
        let err = parse_npy_matrix(p(), bytes).unwrap_err();
        assert!(matches!(err, DatasetError::Corrupt { .. }), "{err}");
        assert_names_file(&err);
        assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
    };
    let mut bad = good.clone();
    bad[0] = b'X';
    corrupt(&bad, "bad magic");
    corrupt(b"PK\x03\x04", "bad magic");
    let mut extra = good.clone();
    extra.push(0);
    corrupt(&extra, "1 bytes after");
    let mut v9 = good.clone();
    v9[6] = 9;
    corrupt(&v9, "version");
    // Exactly one element's bytes each, so only the dtype is wrong.
    for (descr, size) in [
        ("'<c16'", 16),
        ("'<f2'", 2),
        ("'|S8'", 8),
        ("'<M8[ns]'", 8),
        ("[('a', '<f8')]", 8),
    ] {
        let mut b = npy_header(descr, false, "(1, 1)");
        b.extend(vec![0u8; size]);
        corrupt(&b, "unsupported dtype");
    }
    // An object array has no fixed element size: it was reported as "shape overflows".
    let mut object = npy_header("'|O'", false, "(1, 1)");
    object.extend([0u8; 8]);
    corrupt(&object, "unsupported dtype |O (object arrays");
    let err = parse_npy_matrix(p(), &object).unwrap_err().to_string();
    assert!(!err.contains("overflows"), "{err}");
    let mut bad_bool = npy_header("'|b1'", false, "(2,)");
    bad_bool.extend([1, 2]);
    corrupt(&bad_bool, "bool");
    // A shape whose product overflows is an error, not a panic or a huge allocation.
    let huge = npy_header("'<f8'", false, "(4294967296, 4294967296)");
    corrupt(&huge, "overflows");
    // Brackets nested 40 deep (with the dict's, 41): refused before npyz's parser, whose time
    // doubles with each level (found by fuzzing: 17 levels took over 10 s, 40 would take
    // years). Without the check this test does not finish.
    let deep = format!("{}'<f8'{}", "[".repeat(40), "]".repeat(40));
    corrupt(
        &npy_header(&deep, false, "(1, 1)"),
        "nests brackets 41 deep",
    );
    // Brackets in a string left open count too (never closed: the shape's `(` makes 42).
    let open = format!("'<f8{}", "[".repeat(40));
    corrupt(
        &npy_header(&open, false, "(1, 1)"),
        "nests brackets 42 deep",
    );
    // A record dtype nesting 7 deep still reaches the dtype check.
    let mut record = npy_header("[('a', [('b', [('c', '<f8')])])]", false, "(1, 1)");
    record.extend([0u8; 8]);
    corrupt(&record, "unsupported dtype");
}

#[test]
fn three_dimensional_arrays_are_rejected() {
    let mut b = npy_header("'<f8'", false, "(2, 2, 2)");
    b.extend(vec![0u8; 64]);
    let err = parse_npy_matrix(p(), &b).unwrap_err();
    assert!(matches!(err, DatasetError::BadShape { .. }), "{err}");
    assert_names_file(&err);
    assert!(err.to_string().contains("[2, 2, 2]"), "{err}");
    let scalar = npy_header("'<f8'", false, "()");
    assert!(matches!(
        parse_npy_matrix(p(), &scalar),
        Err(DatasetError::BadShape { .. })
    ));
}

#[test]
fn read_npy_file_reports_io_errors() {
    let dir = std::env::temp_dir().join(format!("cpflow-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.npy");
    let m = Matrix::new(2, 1, vec![3.0, 4.0]).unwrap();
    std::fs::write(&path, write_npy_f64(&m)).unwrap();
    assert_eq!(read_npy_file(&path).unwrap(), m);
    let err = read_npy_file(&dir.join("missing.npy")).unwrap_err();
    assert!(matches!(err, DatasetError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.npy"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
