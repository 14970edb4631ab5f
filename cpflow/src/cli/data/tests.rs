use super::*;

#[test]
fn gaussian_floor_of_loaded_rows() {
    let rows = |n: usize| -> Vec<f64> {
        (0..2 * n)
            .map(|i| ((i * 7919) % 101) as f64 / 10.0)
            .collect()
    };
    let data = |train: Rows, test: Rows, dim: usize| LoadedData {
        dim,
        train,
        val: Rows::F64(Vec::new()),
        test,
        source: DataSource::Npy("rows.npy".into()),
    };
    let (tr, te) = (rows(200), rows(50));
    let want = GaussianBaseline::fit_rows(&tr, 2)
        .and_then(|g| g.mean_nll_rows(&te))
        .unwrap();
    let same = data(Rows::F64(tr.clone()), Rows::F64(te.clone()), 2);
    assert_eq!(same.test_gaussian_nll(), Some(want));
    // f32 training rows beside f64 test rows: equal up to the f32 rounding of the rows.
    let f32_rows = Rows::F32(tr.iter().map(|&v| v as f32).collect());
    let mixed = data(f32_rows, Rows::F64(te.clone()), 2).test_gaussian_nll();
    assert!((mixed.unwrap().mean - want.mean).abs() < 1e-5 * want.mean.abs());
    // No floor without test rows, with a constant column, or past the work cap.
    assert_eq!(
        data(Rows::F64(tr.clone()), Rows::F64(Vec::new()), 2).test_gaussian_nll(),
        None
    );
    let flat: Vec<f64> = tr
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 2 == 1 { 1.0 } else { v })
        .collect();
    assert_eq!(
        data(Rows::F64(flat), Rows::F64(te), 2).test_gaussian_nll(),
        None
    );
    let wide = 20_000;
    assert!(101.0 * (wide as f64).powi(2) > GAUSSIAN_BASELINE_MAX_WORK);
    let big = data(
        Rows::F64(vec![0.5; 101 * wide]),
        Rows::F64(vec![0.5; wide]),
        wide,
    );
    assert_eq!(big.test_gaussian_nll(), None);
}

#[test]
fn npy_and_csv_round_trip_and_split() {
    let dir = std::env::temp_dir().join(format!("cpflow-cli-data-{}", std::process::id()));
    let rows: Vec<f64> = (0..30).map(|i| i as f64 * 0.5 - 3.0).collect();
    for name in ["a.npy", "a.csv"] {
        let p = dir.join(name);
        write_rows(&p, 3, &rows).unwrap();
        let (d, back) = if name.ends_with("npy") {
            read_npy(&p).unwrap()
        } else {
            read_csv(&p).unwrap()
        };
        assert_eq!((d, &back), (3, &rows));
    }
    std::fs::write(dir.join("h.csv"), "x,y\n1,2\n3,4\n").unwrap();
    assert_eq!(
        read_csv(&dir.join("h.csv")).unwrap(),
        (2, vec![1.0, 2.0, 3.0, 4.0])
    );
    std::fs::write(dir.join("bad.csv"), "1,2\n3\n").unwrap();
    assert!(read_csv(&dir.join("bad.csv")).is_err());
    let section = DataSection {
        source: dir.join("a.csv").display().to_string(),
        test_fraction: 0.2,
        ..Default::default()
    };
    let data = load(&section).unwrap();
    assert_eq!(
        (data.dim, data.n_train(), data.n_val(), data.n_test()),
        (3, 7, 1, 2)
    );
    assert!(write_rows(&dir.join("a.txt"), 3, &rows).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The three parts of a file are disjoint and cover every row; the test rows do not
/// depend on the validation fraction (the test split is the same with or without one).
#[test]
fn file_splits_are_disjoint_and_test_rows_are_stable() {
    let n = 50;
    let rows: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let mut rng = FlowRng::seed_from_u64(7);
    let (tr, va, te) = split_rows(1, rows.clone(), 0.2, 0.1, &mut rng).unwrap();
    assert_eq!((tr.len(), va.len(), te.len()), (35, 10, 5));
    let mut all: Vec<f64> = tr.iter().chain(&va).chain(&te).copied().collect();
    all.sort_by(f64::total_cmp);
    assert_eq!(all, rows);
    let mut rng = FlowRng::seed_from_u64(7);
    let (_, va0, te0) = split_rows(1, rows.clone(), 0.0, 0.1, &mut rng).unwrap();
    assert!(va0.is_empty());
    assert_eq!(te0, te);
    let mut rng = FlowRng::seed_from_u64(7);
    assert!(split_rows(1, rows.clone(), 0.5, 0.5, &mut rng).is_err());
    assert!(split_rows(1, rows, -0.1, 0.1, &mut rng).is_err());
}

/// A non-finite value is located by row and column; training rows with a constant
/// column, or fewer than 2 training rows, are refused naming the column / the count.
#[test]
fn non_finite_values_and_constant_columns_are_refused() {
    let dir = std::env::temp_dir().join(format!("cpflow-cli-const-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("nan.csv");
    std::fs::write(&p, "1,2\n3,4\n5,nan\n").unwrap();
    let err = read_csv(&p).unwrap_err().to_string();
    assert!(
        err.contains("row 2 (line 3 of nan.csv), column 1 (rows and columns counted from 0)"),
        "{err}"
    );
    // The file line counts the header, comments and blank lines, which are not rows.
    std::fs::write(&p, "# from numpy\nx,y\n0.1,0.2\n\nnan,0.4\n").unwrap();
    let err = read_csv(&p).unwrap_err().to_string();
    assert!(
        err.contains("non-finite value NaN in row 1 (line 5 of nan.csv), column 0"),
        "{err}"
    );
    let section = |rows: &[f64], name: &str| {
        let p = dir.join(name);
        write_rows(&p, 2, rows).unwrap();
        DataSection {
            source: p.display().to_string(),
            ..Default::default()
        }
    };
    // Column 1 constant (7.5), column 0 varies.
    let rows: Vec<f64> = (0..40).flat_map(|i| [i as f64, 7.5]).collect();
    let err = load(&section(&rows, "c.npy")).err().unwrap().to_string();
    assert!(err.contains("column 1") && err.contains("(7.5)"), "{err}");
    // The same with column 1 varying in one row loads.
    let mut varied = rows.clone();
    varied[1] = 7.0;
    assert!(load(&section(&varied, "v.npy")).is_ok());
    // A file of one row (the default 10% + 10% round to no validation and test rows).
    // A column of standard deviation ~9e3 (0, 1e3, …, 3.1e4) is trained, with a warning.
    let wide: Vec<f64> = varied.iter().map(|v| v * 1e3).collect();
    let train: Vec<f64> = wide[..64].to_vec();
    let warning = check_columns(Path::new("w.npy"), 2, &train).unwrap();
    assert!(matches!(&warning[..], [w] if w.contains("column 0")));
    assert!(
        check_columns(Path::new("v.npy"), 2, &varied[..64])
            .unwrap()
            .is_empty()
    );
    let err = load(&section(&rows[..2], "one.npy"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("1 training row"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sources_parse() {
    assert!(matches!(
        DataSource::parse("moons").unwrap(),
        DataSource::Toy(Toy::Moons)
    ));
    assert!(matches!(
        DataSource::parse("x.NPY").unwrap(),
        DataSource::Npy(_)
    ));
    assert!(DataSource::parse("not-a-toy").is_err());
    let section = DataSection {
        source: "8gaussians".into(),
        n_train: 100,
        n_test: 50,
        ..Default::default()
    };
    let data = load(&section).unwrap();
    assert_eq!((data.n_train(), data.n_test()), (100, 50));
    assert_eq!(data.n_val(), DataSection::default().n_val);
    assert!(data.test_entropy().unwrap().is_finite());
}

/// A hand-written `.npy` (version 1.0; `descr` and `shape` as Python literals).
fn npy_bytes(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let order = if fortran { "True" } else { "False" };
    let mut dict = format!("{{'descr': {descr}, 'fortran_order': {order}, 'shape': {shape}, }}");
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend(u16::try_from(dict.len()).unwrap().to_le_bytes());
    out.extend(dict.as_bytes());
    out.extend(data);
    out
}

/// The CLI reads `.npy` files with the library's reader: integer dtypes, big-endian data
/// and Fortran order (candle's reader, used before, rejected the last two), and it
/// rejects what it cannot read with the file's name.
#[test]
fn npy_files_of_any_order_and_byte_order() {
    let dir = std::env::temp_dir().join(format!("cpflow-cli-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // [[1, -2, 3], [4, 5, -6]] as big-endian i2 in column-major order.
    let data: Vec<u8> = [1i16, 4, -2, 5, 3, -6]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let p = dir.join("f.npy");
    std::fs::write(&p, npy_bytes("'>i2'", true, "(2, 3)", &data)).unwrap();
    assert_eq!(
        read_npy(&p).unwrap(),
        (3, vec![1.0, -2.0, 3.0, 4.0, 5.0, -6.0])
    );
    let data: Vec<u8> = [0.5f32, -1.25]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    std::fs::write(&p, npy_bytes("'>f4'", false, "(2,)", &data)).unwrap();
    assert_eq!(read_npy(&p).unwrap(), (1, vec![0.5, -1.25]));
    std::fs::write(&p, npy_bytes("'<f8'", false, "(1, 1, 1)", &[0; 8])).unwrap();
    let err = read_npy(&p).unwrap_err().to_string();
    assert!(err.contains("f.npy") && err.contains("[1, 1, 1]"), "{err}");
    std::fs::write(&p, npy_bytes("'<f8'", false, "(2, 1)", &[0; 8])).unwrap();
    let err = read_npy(&p).unwrap_err().to_string();
    assert!(err.contains("f.npy") && err.contains("truncated"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A first line that is neither numbers nor a plausible header is an error naming line 1
/// (it used to be skipped silently, losing a row or hiding a wrong delimiter).
#[test]
fn csv_first_line_must_be_numbers_or_a_header() {
    let dir = std::env::temp_dir().join(format!("cpflow-cli-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("c.csv");
    for text in [
        "1,2,abc\n3,4,5\n",
        "1 2 abc\n3 4 5\n",
        "x,\n1,2\n",
        "x,y,z\n1,2\n",
    ] {
        std::fs::write(&p, text).unwrap();
        let err = read_csv(&p).unwrap_err().to_string();
        assert!(
            err.contains("c.csv") && err.contains("line 1"),
            "{text:?}: {err}"
        );
    }
    // Any of the separators the first line shows (a ';' file lost its first row as a
    // header and failed on line 2).
    for text in [
        "x, y\n1,2\n3,4\n",
        "1;2\n3;4\n",
        "1 2\n3 4\n",
        "x\ty\n1\t2\n3\t4",
    ] {
        std::fs::write(&p, text).unwrap();
        assert_eq!(
            read_csv(&p).unwrap(),
            (2, vec![1.0, 2.0, 3.0, 4.0]),
            "{text:?}"
        );
    }
    std::fs::write(&p, "1,2\n3,nan\n").unwrap();
    assert!(read_csv(&p).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `SourceName::of` is the one classification of a source's name: `parse` reads each
/// source as it classifies it (the same kind, the same file), and a missing file or an
/// unread benchmark is classified without being read. `has_fixed_rows` and `file` follow.
#[test]
fn sources_are_parsed_as_their_names_are_classified() {
    let dir = std::env::temp_dir().join(format!("cpflow-source-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A 2×2 picture with one dark pixel: an image density `parse` can read.
    let picture = dir.join("picture.png");
    crate::image_file::write_png(
        &picture,
        (2, 2),
        crate::image_file::PngColor::Gray8,
        &[0, 255, 255, 255],
    )
    .unwrap();
    let picture = picture.to_str().unwrap();
    let prefixed = format!("image:{picture}");
    let kind = |n: &SourceName| match n {
        SourceName::Image(_) => "image",
        SourceName::Npy(_) => "npy",
        SourceName::Csv(_) => "csv",
        SourceName::Tabular(_) => "tabular",
        SourceName::Toy(_) => "toy",
    };
    for (source, want, fixed) in [
        ("rows.npy", "npy", true),
        ("ROWS.CSV", "csv", true),
        ("power", "tabular", true),
        ("MiniBooNE", "tabular", true),
        ("8gaussians", "toy", false),
        ("moons", "toy", false),
        ("no-such-toy", "toy", false),
        ("image:rows.npy", "image", false),
        (picture, "image", false),
        (&prefixed, "image", false),
    ] {
        let name = SourceName::of(source);
        assert_eq!(
            (kind(&name), name.has_fixed_rows()),
            (want, fixed),
            "{source}"
        );
        let file = name.file();
        assert_eq!(
            file.is_some(),
            matches!(want, "image" | "npy" | "csv"),
            "{source}"
        );
        let parsed = match DataSource::parse(source) {
            Ok(p) => p,
            // Only an unknown toy and a picture that is not there fail.
            Err(e) => {
                assert!(
                    ["no-such-toy", "image:rows.npy"].contains(&source),
                    "{source}: {e:#}"
                );
                continue;
            }
        };
        let (parsed_kind, parsed_file) = match &parsed {
            DataSource::Image(_) => ("image", file),
            DataSource::Npy(p) => ("npy", Some(p.as_path())),
            DataSource::Csv(p) => ("csv", Some(p.as_path())),
            DataSource::Tabular(t) => {
                assert_eq!(name, SourceName::Tabular(*t), "{source}");
                ("tabular", None)
            }
            DataSource::Toy(_) => ("toy", None),
        };
        assert_eq!((parsed_kind, parsed_file), (want, file), "{source}");
    }
    // The path after `image:` is the picture's, whatever its extension.
    assert_eq!(
        SourceName::of("image:rows.npy").file(),
        Some(Path::new("rows.npy"))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// 200 rows whose column 0 is `offset + scale·z` and column 1 `scale·z'` (z, z' of standard
/// deviation 1), written to `name` in a fresh directory.
fn scaled_rows_section(name: &str, offset: f64, scale: f64) -> DataSection {
    let dir = std::env::temp_dir().join(format!("cpflow-cli-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let z = |i: usize, k: usize| ((i * k) % 200) as f64 / 200.0 * 3.4641 - 1.7320;
    let rows: Vec<f64> = (0..200)
        .flat_map(|i| [offset + scale * z(i, 7919), scale * z(i, 104_729)])
        .collect();
    let p = dir.join(name);
    write_rows(&p, 2, &rows).unwrap();
    DataSection {
        source: p.display().to_string(),
        ..Default::default()
    }
}

/// A column of 1e8 + N(0, 1) is rounded to steps of 8 in f32: the f32 tensor of its rows is
/// refused, naming the file, the column, the step and `--dtype f64`; f64 takes them. Before,
/// `train --dtype f32` trained on the rounded rows and reported a test NLL 0.73 nats below
/// f64's, against a Gaussian fitted to the unrounded rows.
#[test]
fn rows_f32_cannot_resolve_are_refused_for_an_f32_model() {
    let data = load(&scaled_rows_section("offset.csv", 1e8, 1.0)).unwrap();
    let err = data
        .tensor(&data.train, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("offset.csv: column 0 (counted from 0)")
            && err.contains("f32 rounds values that large to steps of 8e0")
            && err.contains("or train in f64 (`--dtype f64`)"),
        "{err}"
    );
    assert!(data.tensor(&data.train, DType::F64, &Device::Cpu).is_ok());
    // The other parts are judged by the training rows (`eval` scores a run's test part).
    assert!(data.tensor(&data.test, DType::F32, &Device::Cpu).is_err());
    // eval's rows (all in the test part) are judged on their own.
    let all = load_all(
        &scaled_rows_section("all.csv", 1e8, 1.0).source,
        Path::new("."),
        0,
        0,
    )
    .unwrap();
    assert!(all.tensor(&all.test, DType::F32, &Device::Cpu).is_err());
}

/// Data ×1e-8 (below what ActNorm's 1e-6 floor scales to unit spread) are refused with
/// "standardise the data"; ×1e-5 load with a warning. Before, both trained silently (×1e-8:
/// test NLL 466,482 nats after 100 iterations, 9.3 nats worse than a Gaussian after 1,500).
#[test]
fn columns_of_tiny_spread_are_refused_or_warned_of() {
    let err = load(&scaled_rows_section("tiny.csv", 0.0, 1e-8))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tiny.csv: column 0 (counted from 0) has standard deviation 9.99")
            && err.contains("e-9 in the training rows")
            && err.contains("standardise the data"),
        "{err}"
    );
    assert!(load(&scaled_rows_section("small.csv", 0.0, 1e-5)).is_ok());
    // Column 0 (standard deviation 2e-5) is the narrower of the two below 1e-4.
    let train: Vec<f64> = (0..32)
        .flat_map(|i| [(i % 7) as f64 * 1e-5, (i % 7) as f64 * 3e-5])
        .collect();
    let warnings = check_columns(Path::new("small.npy"), 2, &train).unwrap();
    assert!(
        matches!(&warnings[..], [w] if w.contains("column 0")
            && w.contains("(1 more column of standard deviation below 1e-4)")),
        "{warnings:?}"
    );
}
