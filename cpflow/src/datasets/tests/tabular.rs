//! MAF tabular loaders against MAF's own Python code.
//!
//! The expected numbers of the `*_matches_maf_code` tests were printed by MAF's own Python
//! preprocessing (numpy 2.4.6 / pandas 3.1.1, `.as_matrix()` replaced by `.to_numpy()`) run
//! on the same fabricated inputs. Tolerance: the loaders return `f32`; 2e-6 absolute on
//! standardised values of order 1 allows a last-bit difference after the cast plus the
//! difference between numpy's pairwise and our sequential summation.

// The expected values are Python's float32 outputs written with 8 digits.
#![allow(clippy::excessive_precision)]

use super::super::*;
use super::{TempDir, missing_file_names_command, shared_data};

fn assert_close(got: &[f32], want: &[f32]) {
    super::assert_close(got, want, TOL);
}

const TOL: f32 = 2e-6;

// ---------------------------------------------------------------- POWER

fn power_raw(n: usize) -> Matrix<f64> {
    let data = (0..n)
        .flat_map(|i| (0..8).map(move |j| ((i * 37 + j * 11) % 101) as f64 / 4.0 + j as f64))
        .collect();
    Matrix::new(n, 8, data).unwrap()
}

#[test]
fn power_matches_maf_code() {
    let dir = TempDir::new("power");
    dir.write(layout::POWER, &write_npy_f64(&power_raw(50)));
    let s = load_power(dir.path()).unwrap();
    assert_eq!(s.sizes(), (41, 4, 5));
    assert_close(
        s.train.row(0),
        &[
            0.8897965,
            1.6397914,
            -1.0627487,
            -0.5602115,
            -0.27337208,
            -0.015735988,
        ],
    );
    assert_close(
        s.val.row(1),
        &[
            0.3187124, 1.0707816, -1.6282946, -1.198845, -0.8896651, -0.6176375,
        ],
    );
    assert_close(
        s.test.row(4),
        &[
            1.4271748,
            -1.208503,
            -0.46280551,
            -0.0160372,
            0.33014476,
            0.55075955,
        ],
    );
}

#[test]
fn power_errors() {
    let dir = TempDir::new("power-err");
    missing_file_names_command(load_power(dir.path()).unwrap_err(), "data.npy", "power");
    dir.write(
        layout::POWER,
        &write_npy_f64(&Matrix::new(30, 7, vec![0.0; 210]).unwrap()),
    );
    assert!(matches!(
        load_power(dir.path()),
        Err(DatasetError::BadShape { .. })
    ));
    let bytes = write_npy_f64(&power_raw(30));
    dir.write(layout::POWER, &bytes[..bytes.len() - 100]);
    assert!(matches!(
        load_power(dir.path()),
        Err(DatasetError::Truncated { .. })
    ));
}

// ---------------------------------------------------------------- GAS

fn gas_text(n: usize) -> String {
    let mut out = String::from(
        "Time (seconds), CO conc (ppm), Ethylene conc (ppm), Sensor readings (16 channels)\n",
    );
    for i in 0..n {
        let mut s: Vec<f64> = (0..16)
            .map(|k| ((i * (2 * k + 3) + k * 13) % 89) as f64 / 3.0 + k as f64)
            .collect();
        s[5] = 2.0 * s[2] + ((i % 3) as f64 - 1.0) * 0.01;
        s[12] = s[2] + ((i % 5) as f64 - 2.0) * 0.02;
        s[9] = -s[1];
        let mut row = vec![i as f64 * 0.01, (i % 7) as f64 * 1.5, (i % 5) as f64 * 2.0];
        row.extend(s);
        let line: Vec<String> = row.iter().map(|v| format!("{v:.2}")).collect();
        out.push_str(&line.join("  "));
        out.push('\n');
    }
    out
}

#[test]
fn gas_matches_maf_code() {
    let dir = TempDir::new("gas");
    dir.write(layout::GAS_TXT, gas_text(200).as_bytes());
    let cfg = GasConfig {
        sample_fraction: Some(0.25),
        seed: 3,
    };
    let s = load_gas(dir.path(), &cfg).unwrap();
    // S2 and S5 are dropped (correlated with S12); S9 = -S1 is kept (only C > 0.98 counts).
    assert_eq!(s.sizes(), (41, 4, 5));
    assert_eq!(s.dim(), 14);
    assert_close(
        s.train.row(0),
        &[
            -0.364128,
            -0.4305782,
            -0.21021163,
            0.09202425,
            0.40300941,
            0.46028551,
            0.8050074,
            0.4305782,
            1.3151125,
            0.86685306,
            -0.39886379,
            1.3631673,
            2.0206165,
            -1.6540822,
        ],
    );
    assert_close(
        s.test.row(4),
        &[
            -1.0564703,
            0.69182837,
            1.2671466,
            -0.027487764,
            0.55627102,
            -1.0649356,
            1.2344352,
            -0.69182837,
            -1.5590323,
            -0.024473717,
            -0.8045006,
            0.72519064,
            -0.24574518,
            1.4276134,
        ],
    );
}

#[test]
fn gas_without_sampling_keeps_file_order() {
    let dir = TempDir::new("gas-all");
    let p = dir.write("g.txt", gas_text(40).as_bytes());
    let cfg = GasConfig {
        sample_fraction: None,
        seed: 0,
    };
    let raw = read_gas_sensors(&p, &cfg).unwrap();
    assert_eq!((raw.rows(), raw.cols()), (40, 16));
    // row 1, sensor 0 = ((1*3 + 0) % 89)/3 + 0 = 1.00
    assert_eq!(raw.row(1)[0], 1.0);
    assert_eq!(load_gas_file(&p, &cfg).unwrap().sizes(), (33, 3, 4));
}

#[test]
fn gas_errors() {
    let dir = TempDir::new("gas-err");
    let cfg = GasConfig::default();
    missing_file_names_command(
        load_gas(dir.path(), &cfg).unwrap_err(),
        "ethylene_CO.txt",
        "gas",
    );
    dir.write(layout::GAS_PICKLE, b"\x80\x02pandas");
    let err = load_gas(dir.path(), &cfg).unwrap_err();
    assert!(matches!(err, DatasetError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("cargo xtask download gas"));
    let text = gas_text(200);
    dir.write(layout::GAS_TXT, &text.as_bytes()[..text.len() - 30]);
    let err = load_gas(dir.path(), &cfg).unwrap_err();
    assert!(matches!(err, DatasetError::Truncated { .. }), "{err}");
    dir.write(
        layout::GAS_TXT,
        text.replacen("\n0.00", "\nabc", 1).as_bytes(),
    );
    let err = load_gas(dir.path(), &cfg).unwrap_err();
    assert!(matches!(err, DatasetError::Corrupt { .. }), "{err}");
    let bad = GasConfig {
        sample_fraction: Some(1.5),
        seed: 0,
    };
    dir.write(layout::GAS_TXT, text.as_bytes());
    assert!(matches!(
        load_gas(dir.path(), &bad),
        Err(DatasetError::InvalidConfig(_))
    ));
    // Empty and header-only files have no data lines: refused by the reader (found by
    // fuzzing: they read as a 0×16 matrix).
    let all = GasConfig {
        sample_fraction: None,
        seed: 0,
    };
    for cut in ["", "Time CO Eth sensors\n"] {
        let p = dir.write("cut.txt", cut.as_bytes());
        match read_gas_sensors(&p, &all) {
            Err(DatasetError::Truncated { detail, .. }) => {
                assert!(detail.contains("no data lines"), "{detail}")
            }
            other => panic!("expected a truncated-file error for {cut:?}, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- HEPMASS

fn hepmass_csv(n: usize, test: bool) -> String {
    let mut cols = vec!["# label".to_string()];
    cols.extend((0..5).map(|k| format!("f{k}")));
    cols.push("mass".into());
    if test {
        cols.push("junk".into());
    }
    let mut out = cols.join(", ") + "\n";
    for i in 0..n {
        let label = if i % 3 == 0 { 0.0 } else { 1.0 };
        let mut f: Vec<f64> = (0..5)
            .map(|k| ((i * (3 * k + 7) + 5 * k) % 53) as f64 / 7.0 - k as f64)
            .collect();
        f[2] = (i % 3) as f64 + if i % 4 == 0 { 1.0 } else { 0.0 };
        let mut row = vec![label];
        row.extend(f);
        row.push(1000.0 + (i % 2) as f64 * 0.5);
        if test {
            row.push((i % 11) as f64);
        }
        let line: Vec<String> = row.iter().map(|v| format!("{v:.6}")).collect();
        out.push_str(&line.join(", "));
        if test {
            out.push(','); // trailing delimiter, skipped like pandas' index_col=False
        }
        out.push('\n');
    }
    out
}

#[test]
fn hepmass_matches_maf_code() {
    let dir = TempDir::new("hepmass");
    dir.write(layout::HEPMASS_TRAIN, hepmass_csv(90, false).as_bytes());
    dir.write(layout::HEPMASS_TEST, hepmass_csv(40, true).as_bytes());
    let s = load_hepmass(dir.path()).unwrap();
    // f2 (discrete) and mass (two values) are removed by the repeated-minimum rule.
    assert_eq!(s.sizes(), (54, 6, 26));
    assert_eq!(s.dim(), 4);
    assert_close(
        s.train.row(0),
        &[-1.1972669, -0.69390923, 0.35097176, 0.82078451],
    );
    assert_close(
        s.val.row(5),
        &[0.96567899, 1.3813332, -1.1673393, -0.70823181],
    );
    assert_close(
        s.test.row(0),
        &[-1.1972669, -0.69390923, 0.35097176, 0.82078451],
    );

    // A test file whose header names one more column than its rows hold (pandas fills it
    // with NaN; MAF drops it) loads the same.
    let short = hepmass_csv(40, false).replacen("mass\n", "mass, junk\n", 1);
    dir.write(layout::HEPMASS_TEST, short.as_bytes());
    let s2 = load_hepmass(dir.path()).unwrap();
    assert_eq!(s2.test.row(0), s.test.row(0));
    assert_eq!(s2.test.rows(), 26);
}

#[test]
fn hepmass_errors() {
    let dir = TempDir::new("hepmass-err");
    missing_file_names_command(
        load_hepmass(dir.path()).unwrap_err(),
        "1000_train.csv",
        "hepmass",
    );
    dir.write(layout::HEPMASS_TRAIN, hepmass_csv(90, false).as_bytes());
    missing_file_names_command(
        load_hepmass(dir.path()).unwrap_err(),
        "1000_test.csv",
        "hepmass",
    );
    let test = hepmass_csv(40, true);
    let cut = &test[..test.len() - 20];
    dir.write(layout::HEPMASS_TEST, cut.as_bytes());
    let err = load_hepmass(dir.path()).unwrap_err();
    assert!(matches!(err, DatasetError::Truncated { .. }), "{err}");
    // A test file whose columns are not the train columns (plus one) is rejected.
    dir.write(
        layout::HEPMASS_TEST,
        test.replacen("f3", "g3", 1).as_bytes(),
    );
    let err = load_hepmass(dir.path()).unwrap_err();
    assert!(matches!(err, DatasetError::BadShape { .. }), "{err}");
    // A file cut to its header, or to part of it, has no signal row (found by fuzzing: it
    // read as an empty table).
    let train = hepmass_csv(90, false);
    for cut in [&train[..train.find('\n').unwrap() + 1], &train[..8]] {
        let p = dir.write("cut.csv", cut.as_bytes());
        match read_signal_csv(&p) {
            Err(DatasetError::Truncated { detail, .. }) => {
                assert!(detail.contains("no signal rows"), "{detail}")
            }
            other => panic!("expected a truncated-file error for {cut:?}, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- MINIBOONE

#[test]
fn miniboone_fragment_loads_like_maf_code() {
    let path = shared_data().join("miniboone/maf_miniboone_first1523rows_float64.npy");
    let bytes = std::fs::read(&path).unwrap();
    let raw = parse_npy_matrix(&path, &bytes).unwrap();
    assert_eq!((raw.rows(), raw.cols()), (1523, 43));
    // docs/data/miniboone/README.md: the first row starts 2.59413, 0.4688, 20.6916 (printed rounded)
    for (got, want) in raw.row(0).iter().zip([2.59413, 0.4688, 20.6916]) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
    let s = load_miniboone_file(&path).unwrap();
    assert_eq!(s.sizes(), (1234, 137, 152));
    assert_close(
        &s.train.row(0)[..5],
        &[-1.7092626, -0.65214801, -0.38171187, 2.2840462, -0.32838768],
    );
    assert_close(&s.test.row(151)[40..], &[4.7982745, 2.5430508, 1.0220490]);
    // train+val standardised: column means 0, stds 1 (ddof 0).
    let n = (s.train.rows() + s.val.rows()) as f64;
    for c in [0, 21, 42] {
        let vals: Vec<f64> = (0..s.train.rows())
            .map(|r| f64::from(s.train.row(r)[c]))
            .chain((0..s.val.rows()).map(|r| f64::from(s.val.row(r)[c])))
            .collect();
        let mean = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-5,
            "{mean} {var}"
        );
    }
}

#[test]
fn miniboone_errors() {
    let dir = TempDir::new("miniboone-err");
    missing_file_names_command(
        load_miniboone(dir.path()).unwrap_err(),
        "miniboone/data.npy",
        "miniboone",
    );
    // The committed WFR file that this fragment came from: header (36488, 43), data cut.
    let frag =
        std::fs::read(shared_data().join("miniboone/maf_miniboone_first1523rows_float64.npy"))
            .unwrap();
    let mut cut = frag.clone();
    let at = cut.windows(10).position(|w| w == b"(1523, 43)").unwrap();
    // "(1523, 43)" -> "(36488,43)": same length, so the header keeps its 128 bytes.
    cut[at..at + 10].copy_from_slice(b"(36488,43)");
    dir.write(layout::MINIBOONE, &cut);
    let err = load_miniboone(dir.path()).unwrap_err();
    assert!(matches!(err, DatasetError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("1523 complete rows"), "{err}");
    dir.write(layout::MINIBOONE, b"PK\x03\x04 not an npy file at all");
    assert!(matches!(
        load_miniboone(dir.path()),
        Err(DatasetError::Corrupt { .. })
    ));
    // A NaN in the file is a damaged file, named with its row and column (it surfaced as a
    // non-finite training batch that named no file).
    let mut raw = parse_npy_matrix(Path::new("frag.npy"), &frag)
        .unwrap()
        .into_data();
    raw[5 * MINIBOONE_COLUMNS + 2] = f64::NAN;
    let raw = Matrix::new(raw.len() / MINIBOONE_COLUMNS, MINIBOONE_COLUMNS, raw).unwrap();
    let path = dir.write(layout::MINIBOONE, &write_npy_f64(&raw));
    let err = load_miniboone(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DatasetError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("NaN in row 5, column 2"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- TabularDataset

#[test]
fn tabular_names_roundtrip() {
    for d in TabularDataset::ALL {
        assert_eq!(TabularDataset::from_name(d.name()), Some(d));
    }
    assert_eq!(TabularDataset::from_name("mnist"), None);
    // MAF sizes follow the 10 % / 10 % tail split of the totals (except BSDS300's file).
    for d in [
        TabularDataset::Power,
        TabularDataset::Gas,
        TabularDataset::Miniboone,
    ] {
        let (tr, va, te) = d.maf_sizes();
        let n = tr + va + te;
        assert_eq!(te, (0.1 * n as f64) as usize, "{d}");
        assert_eq!(va, (0.1 * (n - te) as f64) as usize, "{d}");
    }
    // GAS: round(0.25 * 4,208,261 UCI rows) is MAF's total.
    let (tr, va, te) = TabularDataset::Gas.maf_sizes();
    assert_eq!(
        tr + va + te,
        (0.25f64 * 4_208_261.0).round_ties_even() as usize
    );
}
