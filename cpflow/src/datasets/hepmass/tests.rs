//! HEPMASS preprocessing on small fabricated CSVs: missing values as pandas reads them, and
//! constant columns. Expected values are closed forms: a column holding a permutation of
//! 1..=20 has mean 10.5 and (ddof 1) variance 20·21/12 = 35.

use super::*;
use crate::datasets::tests::TempDir;

const HEADER: &str = "# label, a, b, c, mass";

/// Train CSV: 20 signal rows (a, b permutations of 1..=20; c = i mod 2, discrete; mass
/// constant) with background rows and a row without label in between. `edit(i, fields)`
/// may change signal row i (fields: a, b, c, mass as text).
fn train_csv(edit: impl Fn(usize, &mut [String; 4])) -> String {
    let mut out = format!("{HEADER}\n");
    for i in 0..20 {
        let mut f = [
            ((i * 7) % 20 + 1).to_string(),
            ((i * 3) % 20 + 1).to_string(),
            (i % 2).to_string(),
            "1000".to_string(),
        ];
        edit(i, &mut f);
        out.push_str(&format!("1, {}\n", f.join(", ")));
        if i % 5 == 0 {
            // Background rows (dropped, missing values and all) and a missing label.
            out.push_str("0, nan, , 3, 1000\n");
            out.push_str(", 1, 2, 3, 1000\n");
        }
    }
    out
}

/// Test CSV: 4 signal rows and an extra last column, which MAF drops.
fn test_csv(a3: &str) -> String {
    let mut out = format!("{HEADER}, junk\n");
    for (i, a) in ["2", "4", "6", a3].iter().enumerate() {
        out.push_str(&format!("1, {a}, {}, 0, 1000, 9\n", 20 - i));
    }
    out
}

fn load(train: &str, test: &str) -> Result<Split, DatasetError> {
    let dir = TempDir::new("hepmass-na");
    dir.write(layout::HEPMASS_TRAIN, train.as_bytes());
    dir.write(layout::HEPMASS_TEST, test.as_bytes());
    load_hepmass(dir.path())
}

fn z(v: f64) -> f32 {
    ((v - 10.5) / 35f64.sqrt()) as f32
}

#[test]
fn missing_values_are_read_as_pandas_reads_them() {
    let dir = TempDir::new("hepmass-read");
    let text = format!(
        "{HEADER}\n1, , NA, N/A, null\n1, nan, NaN, NULL, None\n1, 1.5, -2, 3e1, 4\n\
         nan, 1, 2, 3, 4\n, 1, 2, 3, 4\n0, 1, 2, 3, 4\n"
    );
    let path = dir.write("t.csv", text.as_bytes());
    let t = read_signal_csv(&path).unwrap();
    // Rows with a missing or 0 label are not signal rows (pandas: NaN == 1 is false).
    assert_eq!((t.data.rows(), t.data.cols()), (3, 4));
    assert!(
        t.data
            .row(0)
            .iter()
            .chain(t.data.row(1))
            .all(|v| v.is_nan())
    );
    assert_eq!(t.data.row(2), &[1.5, -2.0, 30.0, 4.0]);
    assert_eq!(t.names, ["a", "b", "c", "mass"]);
    assert_eq!(t.path, path);
    // Text that is neither a number nor a pandas NA string is still an error.
    let path = dir.write("u.csv", format!("{HEADER}\n1, 1, 2, oops, 4\n").as_bytes());
    let err = read_signal_csv(&path).unwrap_err();
    assert!(err.to_string().contains("\"oops\""), "{err}");
}

#[test]
fn selection_and_values_follow_the_maf_procedure() {
    let s = load(&train_csv(|_, _| {}), &test_csv("8")).unwrap();
    // c (discrete) and mass (constant) removed: a and b kept; 20 signal rows → 18 + 2.
    assert_eq!((s.sizes(), s.dim()), ((18, 2, 4), 2));
    assert_eq!(s.train.row(0), &[z(1.0), z(1.0)]);
    // Signal row 19: a = 133 mod 20 + 1 = 14, b = 57 mod 20 + 1 = 18.
    assert_eq!(s.val.row(1), &[z(14.0), z(18.0)]);
    assert_eq!(s.test.row(3), &[z(8.0), z(17.0)]);
}

#[test]
fn missing_values_in_removed_columns_change_nothing() {
    // Empty/NaN fields in the discrete column: the old loader stopped at the empty field
    // ("bad number"); pandas reads NaN, the column is removed all the same.
    let with_na = train_csv(|i, f| {
        if i == 3 || i == 8 {
            f[2] = if i == 3 { String::new() } else { "nan".into() };
        }
        if i == 5 {
            f[3] = "NA".into();
        }
    });
    let clean = load(&train_csv(|_, _| {}), &test_csv("8")).unwrap();
    let s = load(&with_na, &test_csv("8")).unwrap();
    assert_eq!(s, clean);
}

#[test]
fn missing_values_in_kept_columns_are_errors_naming_the_column() {
    // The old loader dropped column a silently (its mean and std were NaN), changing d.
    let err = load(
        &train_csv(|i, f| {
            if i == 4 {
                f[0] = String::new();
            }
        }),
        &test_csv("8"),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DatasetError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("1000_train.csv") && msg.contains("column \"a\": 1 missing"),
        "{msg}"
    );
    let err = load(&train_csv(|_, _| {}), &test_csv("nan")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("1000_test.csv") && msg.contains("column \"a\": 1 missing"),
        "{msg}"
    );
}

fn table(columns: &[&[f64]]) -> LabelledTable {
    let rows = columns[0].len();
    let data: Vec<f64> = (0..rows)
        .flat_map(|r| columns.iter().map(move |c| c[r]))
        .collect();
    LabelledTable {
        path: PathBuf::from("train.csv"),
        names: (0..columns.len()).map(|c| format!("f{c}")).collect(),
        data: Matrix::new(rows, columns.len(), data).unwrap(),
    }
}

#[test]
fn statistics_skip_missing_values_and_constant_columns_are_reported() {
    let nan = f64::NAN;
    let mut a: Vec<f64> = (1..=20).map(f64::from).collect();
    a.extend([nan; 3]);
    let constant = [2.5; 23];
    let mut b: Vec<f64> = (1..=20).rev().map(f64::from).collect();
    b.extend([1.0, 1.0, nan]); // minimum 1 three times: kept (≤ 5)
    let f = select_hepmass_features(&table(&[&a, &constant, &b])).unwrap();
    // Exact: the sums (210, then 665 = 19·35) are exact in f64.
    assert_eq!((f.means[0], f.stds[0]), (10.5, 35f64.sqrt()));
    assert_eq!((f.means[1], f.stds[1]), (2.5, 0.0));
    assert_eq!(f.kept, [0, 2]);
    assert_eq!(
        f.removed,
        [(
            1,
            HepmassRemoval::Constant {
                value: 2.5,
                count: 23
            }
        )]
    );

    // The constant column is removed, never divided by its zero std.
    let mut test = table(&[&a[..4], &constant[..4], &b[..4]]);
    test.names.push("junk".into());
    test.data = Matrix::new(4, 4, (0..16).map(|k| f64::from(k % 7)).collect()).unwrap();
    let s = preprocess_hepmass(table(&[&a, &constant, &b]), test);
    // a has missing values in its kept train column: reported, not NaN in the output.
    let err = s.unwrap_err().to_string();
    assert!(err.contains("column \"f0\": 3 missing"), "{err}");

    // Too few values for the repeated-value rule: an error naming the column.
    let mut short = vec![7.0; 4];
    short.extend([nan; 19]);
    let err = select_hepmass_features(&table(&[&a, &short])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("train.csv") && msg.contains("column \"f1\": constant"),
        "{msg}"
    );
    let err = select_hepmass_features(&table(&[&a, &[nan; 23]])).unwrap_err();
    assert!(err.to_string().contains("column \"f1\": no value"), "{err}");
    let mut inf = a.clone();
    inf[0] = f64::INFINITY;
    let err = select_hepmass_features(&table(&[&inf])).unwrap_err();
    assert!(err.to_string().contains("infinite"), "{err}");
}

#[test]
fn constant_columns_never_reach_the_output() {
    // An exactly constant column that MAF's rule does not catch in pandas (0/0 = NaN is
    // never counted as repeated): here it is removed and reported, the output is finite.
    let s = load(&train_csv(|_, f| f[3] = "1250.5".into()), &test_csv("8")).unwrap();
    assert_eq!(s.dim(), 2);
    let all = s
        .train
        .data()
        .iter()
        .chain(s.val.data())
        .chain(s.test.data());
    assert!(all.into_iter().all(|v| v.is_finite()));
}
