//! The MAT v5 reader.

use std::path::Path;

use super::{MatVar, MatWriter, f64_bytes, shared_data};
use crate::datasets::{DatasetError, read_npy_file};
use crate::vae::{parse_mat_v5, read_mat_v5};

/// The Caltech 101 Silhouettes MAT-file was written by MATLAB in 2009 (compressed, `uint8`
/// class, a cell array of class names); its `.npy` copies were made with scipy
/// (README in `../shared/data/caltech101-silhouettes`). The reader must
/// agree with them value for value, in MATLAB's column-major order.
#[test]
fn caltech_mat_matches_its_npy_copies() {
    let dir = shared_data().join("caltech101-silhouettes");
    let mat = dir.join("caltech101_silhouettes_28_split1.mat");
    let names = ["test_data", "train_labels", "train_data", "val_data"];
    let vars = read_mat_v5::<f32>(&mat, &names).unwrap();
    let shapes: Vec<Vec<usize>> = vars.iter().map(|v| v.dims.clone()).collect();
    assert_eq!(
        shapes,
        vec![
            vec![2307, 784],
            vec![4100, 1],
            vec![4100, 784],
            vec![2264, 784]
        ]
    );
    for (v, file) in vars.iter().zip([
        "test_data.npy",
        "train_labels.npy",
        "train_data.npy",
        "val_data.npy",
    ]) {
        assert_eq!(v.name, file.trim_end_matches(".npy"));
        let npy = read_npy_file(&dir.join(file)).unwrap();
        let (rows, cols) = (npy.rows(), npy.cols());
        assert_eq!((rows, cols), (v.dims[0], v.dims[1]));
        for i in 0..rows {
            for j in 0..cols {
                assert_eq!(
                    f64::from(v.data[i + j * rows]),
                    npy.row(i)[j],
                    "{file} ({i}, {j})"
                );
            }
        }
    }
    // The class names are a cell array: named in the error, not read.
    let err = read_mat_v5::<f64>(&mat, &["classnames"]).unwrap_err();
    assert!(matches!(err, DatasetError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("classnames") && err.to_string().contains("class 1"));
    let err = read_mat_v5::<f64>(&mat, &["nope"]).unwrap_err();
    assert!(err.to_string().contains("no variable `nope`"), "{err}");
}

/// Every storage type, both byte orders, compressed and plain, small-form names, and
/// variables that are skipped.
#[test]
fn storage_types_byte_orders_and_skipping() {
    for big in [false, true] {
        for compressed in [false, true] {
            let vals = [0.25, -1.5, 3.0, 1e300, 0.1, -0.0];
            let w = MatWriter::new(big)
                .var(
                    &MatVar {
                        name: "skipped_first",
                        class: 6,
                        dims: vec![1, 3],
                        storage: 9,
                        data: f64_bytes(&[9.0, 9.0, 9.0], big),
                    },
                    !compressed,
                )
                .var(
                    &MatVar {
                        name: "x",
                        class: 6,
                        dims: vec![2, 3],
                        storage: 9,
                        data: f64_bytes(&vals, big),
                    },
                    compressed,
                )
                .var(
                    // A double stored as miUINT8, as MATLAB writes integer-valued doubles.
                    &MatVar {
                        name: "ints",
                        class: 6,
                        dims: vec![2, 2],
                        storage: 2,
                        data: vec![0, 1, 254, 255],
                    },
                    compressed,
                )
                .var(
                    &MatVar {
                        name: "i16",
                        class: 10,
                        dims: vec![1, 3],
                        storage: 3,
                        data: [-300i16, 7, 32767]
                            .iter()
                            .flat_map(|v| {
                                if big {
                                    v.to_be_bytes()
                                } else {
                                    v.to_le_bytes()
                                }
                            })
                            .collect(),
                    },
                    compressed,
                )
                .var(
                    &MatVar {
                        name: "f32s",
                        class: 7,
                        dims: vec![1, 1, 2],
                        storage: 7,
                        data: [0.5f32, -2.0]
                            .iter()
                            .flat_map(|v| {
                                if big {
                                    v.to_be_bytes()
                                } else {
                                    v.to_le_bytes()
                                }
                            })
                            .collect(),
                    },
                    compressed,
                )
                .finish();
            let p = Path::new("fabricated.mat");
            let got = parse_mat_v5::<f64>(p, &w, &["f32s", "x", "ints", "i16"]).unwrap();
            let ctx = format!("big {big} compressed {compressed}");
            assert_eq!(got[1].data, vals, "{ctx}");
            assert_eq!(got[1].dims, vec![2, 3], "{ctx}");
            assert_eq!(got[2].data, vec![0.0, 1.0, 254.0, 255.0], "{ctx}");
            assert_eq!(got[3].data, vec![-300.0, 7.0, 32767.0], "{ctx}");
            assert_eq!(got[0].data, vec![0.5, -2.0], "{ctx}");
            assert_eq!(got[0].dims, vec![1, 1, 2], "{ctx}");
            let as_f32 = parse_mat_v5::<f32>(p, &w, &["x"]).unwrap();
            assert_eq!(as_f32[0].data[4], 0.1f32, "{ctx}");
        }
    }
}

/// Cut or damaged files give errors, never panics; the header checks name the problem.
#[test]
fn damaged_files_are_errors() {
    let data: Vec<f64> = (0..100).map(f64::from).collect();
    let var = MatVar {
        name: "data",
        class: 6,
        dims: vec![10, 10],
        storage: 9,
        data: f64_bytes(&data, false),
    };
    let p = Path::new("damaged.mat");
    for compressed in [false, true] {
        let good = MatWriter::new(false).var(&var, compressed).finish();
        assert_eq!(
            parse_mat_v5::<f64>(p, &good, &["data"]).unwrap()[0].data,
            data
        );
        for cut in (0..good.len()).step_by(7) {
            let err = parse_mat_v5::<f64>(p, &good[..cut], &["data"]).unwrap_err();
            assert!(
                matches!(
                    err,
                    DatasetError::Truncated { .. } | DatasetError::Corrupt { .. }
                ),
                "cut at {cut}: {err}"
            );
        }
        // Flipped bytes after the header: Ok or an error, no panic, no huge allocation.
        for at in 128..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0xa5;
            let _ = parse_mat_v5::<f64>(p, &bad, &["data"]);
        }
    }
    let good = MatWriter::new(false).var(&var, false).finish();
    let mut v73 = good.clone();
    v73[..10].copy_from_slice(b"MATLAB 7.3");
    let err = parse_mat_v5::<f64>(p, &v73, &["data"]).unwrap_err();
    assert!(err.to_string().contains("HDF5"), "{err}");
    let mut no_indicator = good.clone();
    no_indicator[126..128].copy_from_slice(b"XX");
    let err = parse_mat_v5::<f64>(p, &no_indicator, &["data"]).unwrap_err();
    assert!(err.to_string().contains("not a level-5 MAT-file"), "{err}");
    // Dimensions that disagree with the data.
    let wrong = MatWriter::new(false)
        .var(
            &MatVar {
                dims: vec![10, 11],
                ..var
            },
            true,
        )
        .finish();
    let err = parse_mat_v5::<f64>(p, &wrong, &["data"]).unwrap_err();
    assert!(err.to_string().contains("need 110 values"), "{err}");
    // Dimensions whose byte count overflows usize (2⁶² values of 8 bytes): an error, not an
    // overflow panic in a debug build.
    let dim = i32::MAX as usize;
    let huge = MatWriter::new(false)
        .var(
            &MatVar {
                dims: vec![dim, dim],
                data: f64_bytes(&data, false),
                ..var
            },
            false,
        )
        .finish();
    let err = parse_mat_v5::<f64>(p, &huge, &["data"]).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("need {} values", dim * dim)),
        "{err}"
    );
}
