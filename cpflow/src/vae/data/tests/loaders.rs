//! The four loaders, against values printed by the reference's numpy code (numpy 2.4.6,
//! scipy 1.17.1; legacy `RandomState` streams are frozen across numpy versions).

use super::{MatVar, MatWriter, TempDir, f64_bytes, shared_data};
use crate::datasets::{DatasetError, Matrix, read_npy_file, write_npy_f64};
use crate::vae::{
    FREY_REFERENCE_SEED, OMNIGLOT_FILE, VaeDatasetName, VaeImages, VaeLikelihood, load_vae_data,
};

fn nonzero(img: &[u8], k: usize) -> Vec<usize> {
    (0..img.len()).filter(|&i| img[i] != 0).take(k).collect()
}

fn ones(s: &VaeImages) -> usize {
    s.pixels.iter().map(|&v| usize::from(v)).sum()
}

/// `d = np.load('frey_faces_uint8.npy'); np.random.seed(123); np.random.shuffle(d)` puts
/// original rows 711, 1896, 1021, 1002, 235, 735, 1476, 1318, 1588, 678 first; row 1565
/// (the first validation image) is original row 445 and the last test image is row 1534
/// (`p = np.arange(1965); np.random.seed(123); np.random.shuffle(p)`, checked to equal the
/// row shuffle of the data).
#[test]
fn frey_faces_reference_split() {
    let root = shared_data();
    let raw = read_npy_file(&root.join("frey-faces/frey_faces_uint8.npy")).unwrap();
    let data = load_vae_data(VaeDatasetName::FreyFaces, &root, FREY_REFERENCE_SEED).unwrap();
    assert_eq!((data.train.n, data.val.n, data.test.n), (1565, 200, 200));
    assert_eq!((data.height, data.width), (28, 20));
    assert_eq!(data.likelihood, VaeLikelihood::Categorical256);
    assert!(!data.dynamic_binarization);
    let row = |i: usize| -> Vec<u8> { raw.row(i).iter().map(|&v| v as u8).collect() };
    for (k, orig) in [711, 1896, 1021, 1002, 235, 735, 1476, 1318, 1588, 678]
        .into_iter()
        .enumerate()
    {
        assert_eq!(data.train.image(k), row(orig), "train image {k}");
    }
    assert_eq!(data.val.image(0), row(445));
    assert_eq!(data.test.image(199), row(1534));
    // README: values 8..238, mean 154.46 over the whole file.
    let all: Vec<u8> = [&data.train, &data.val, &data.test]
        .iter()
        .flat_map(|s| s.pixels.iter().copied())
        .collect();
    assert_eq!(all.len(), 1965 * 560);
    assert_eq!(all.iter().min(), Some(&8));
    assert_eq!(all.iter().max(), Some(&238));
    let mean = all.iter().map(|&v| f64::from(v)).sum::<f64>() / all.len() as f64;
    assert!((mean - 154.46).abs() < 0.005, "{mean}");
    // Another seed, another split.
    let other = load_vae_data(VaeDatasetName::FreyFaces, &root, 321).unwrap();
    assert_ne!(other.train.image(0), data.train.image(0));
}

/// Caltech: `x = 1 − data` in row-major order, train then validation shuffled after
/// `np.random.seed(1)`: `a = np.arange(4100); np.random.shuffle(a); b = np.arange(2264);
/// np.random.shuffle(b)` gives `a[:6] = [3007, 2893, 3371, 1696, 1642, 2837]`,
/// `b[:6] = [1816, 1346, 1391, 908, 303, 143]`. Silhouette pixels (`(1 − x).sum()` over
/// scipy's `loadmat` of the MAT-file): train 1,443,090, val 823,661, test 833,778 (fractions
/// 0.449, 0.464, 0.461).
#[test]
fn caltech_orientation_inversion_and_shuffle() {
    let root = shared_data();
    let dir = root.join("caltech101-silhouettes");
    let data = load_vae_data(VaeDatasetName::Caltech101, &root, 1).unwrap();
    assert_eq!((data.train.n, data.val.n, data.test.n), (4100, 2264, 2307));
    assert_eq!((data.height, data.width), (28, 28));
    assert!(!data.dynamic_binarization);
    // By hand: pixel (r, c) of the image is 1 − stored[c·28 + r].
    let by_hand = |m: &Matrix<f64>, i: usize| -> Vec<u8> {
        let mut img = vec![0u8; 784];
        for r in 0..28 {
            for c in 0..28 {
                img[r * 28 + c] = 1 - m.row(i)[c * 28 + r] as u8;
            }
        }
        img
    };
    let train = read_npy_file(&dir.join("train_data.npy")).unwrap();
    let val = read_npy_file(&dir.join("val_data.npy")).unwrap();
    let test = read_npy_file(&dir.join("test_data.npy")).unwrap();
    for (k, orig) in [3007, 2893, 3371, 1696, 1642, 2837].into_iter().enumerate() {
        assert_eq!(data.train.image(k), by_hand(&train, orig), "train {k}");
    }
    for (k, orig) in [1816, 1346, 1391, 908, 303, 143].into_iter().enumerate() {
        assert_eq!(data.val.image(k), by_hand(&val, orig), "val {k}");
    }
    assert_eq!(data.test.image(0), by_hand(&test, 0));
    assert_eq!(data.test.image(2306), by_hand(&test, 2306));
    // The transpose is not a no-op on these images.
    assert_ne!(
        data.test.image(0),
        test.row(0).iter().map(|&v| 1 - v as u8).collect::<Vec<_>>()
    );
    for (s, want) in [
        (&data.train, 1_443_090),
        (&data.val, 823_661),
        (&data.test, 833_778),
    ] {
        assert!(s.pixels.iter().all(|&v| v <= 1));
        assert_eq!(ones(s), want);
    }
}

/// MNIST with seed 1 (numpy, on the decompressed IDX arrays):
/// `np.random.seed(1); perm = np.random.permutation(60000)` (`perm[:5] = [15281, 21435,
/// 44536, 13518, 47529]`, `perm[50000:50005] = [38359, 19772, 59493, 34373, 3346]`);
/// `np.random.seed(777); xv = np.random.binomial(1, val.astype(np.float32) / 255.);
/// xt = np.random.binomial(1, test.astype(np.float32) / 255.)`: `xv.sum() = 1021877`,
/// `xt.sum() = 1038341`, first nonzero pixels of `xv[0]` and `xt[-1]` below.
#[test]
fn mnist_dynamic_split_and_binarised_evaluation_sets() {
    let root = shared_data();
    let data = load_vae_data(VaeDatasetName::Mnist, &root, 1).unwrap();
    assert_eq!(
        (data.train.n, data.val.n, data.test.n),
        (50_000, 10_000, 10_000)
    );
    assert!(data.dynamic_binarization);
    assert_eq!(data.likelihood, VaeLikelihood::Bernoulli);
    let raw = crate::datasets::load_mnist(&root, 0).unwrap();
    for (k, orig) in [15281, 21435, 44536, 13518, 47529].into_iter().enumerate() {
        assert_eq!(data.train.image(k), raw.train.row(orig), "train {k}");
    }
    // Validation image k is the binarisation of training-file row perm[50000 + k]: zero
    // wherever that row is zero.
    for (k, orig) in [38359, 19772, 59493, 34373, 3346].into_iter().enumerate() {
        let grey = raw.train.row(orig);
        assert!(
            data.val
                .image(k)
                .iter()
                .zip(grey)
                .all(|(&b, &g)| b <= 1 && (g > 0 || b == 0))
        );
    }
    assert_eq!(ones(&data.val), 1_021_877);
    assert_eq!(ones(&data.test), 1_038_341);
    assert_eq!(
        nonzero(data.val.image(0), 12),
        [95, 97, 123, 124, 125, 126, 151, 152, 153, 154, 179, 180]
    );
    assert_eq!(
        nonzero(data.test.image(9999), 12),
        [75, 76, 101, 102, 104, 125, 126, 127, 128, 129, 130, 131]
    );
}

/// Omniglot-like grey level of MATLAB element `(i, j)` (pixel `i` of image `j`): 80 % zeros,
/// the rest `(h − 800)/199` (not multiples of 1/255, 1.0 included).
fn fake_grey(i: usize, j: usize) -> f64 {
    let h = (j * 7919 + i * 104_729) % 1000;
    if h < 800 {
        0.0
    } else {
        (h - 800) as f64 / 199.0
    }
}

fn fake_chardata(n_train: usize, n_test: usize, compressed: bool) -> Vec<u8> {
    let column_major = |n: usize, offset: usize| -> Vec<f64> {
        (0..n)
            .flat_map(|j| (0..784).map(move |i| fake_grey(i, j + offset)))
            .collect()
    };
    let var = |name: &'static str, n: usize, offset: usize| MatVar {
        name,
        class: 6,
        dims: vec![784, n],
        storage: 9,
        data: f64_bytes(&column_major(n, offset), false),
    };
    MatWriter::new(false)
        .var(
            &MatVar {
                name: "target",
                class: 6,
                dims: vec![1, 2],
                storage: 2,
                data: vec![1, 2],
            },
            compressed,
        )
        .var(&var("data", n_train, 0), compressed)
        .var(&var("testdata", n_test, 5000), compressed)
        .finish()
}

/// `load_omniglot` on a fabricated `chardata.mat` (1,350 training and 3 test images of
/// [`fake_grey`]) with `np.random.seed(5)`, computed with the reference's numpy code
/// (`reshape_data` with `order='F'`, shuffle, last 1,345 = validation, seed 777,
/// `binomial`): validation sum 105567, test sum 239, shuffle `perm[:5] = [1213, 578, 762,
/// 534, 977]`, first nonzero pixels of `x_val[0]`, `x_test[2]` and `round(255·x_train[0])`.
#[test]
fn omniglot_reference_procedure_on_a_fabricated_file() {
    let dir = TempDir::new("omniglot");
    dir.write(OMNIGLOT_FILE, &fake_chardata(1350, 3, true));
    let data = load_vae_data(VaeDatasetName::Omniglot, dir.path(), 5).unwrap();
    assert_eq!((data.train.n, data.val.n, data.test.n), (5, 1345, 3));
    assert!(data.dynamic_binarization);
    assert_eq!(ones(&data.val), 105_567);
    assert_eq!(ones(&data.test), 239);
    assert_eq!(
        nonzero(data.val.image(0), 12),
        [6, 11, 30, 37, 47, 61, 66, 73, 83, 87, 92, 97]
    );
    assert_eq!(
        nonzero(data.test.image(2), 12),
        [10, 22, 27, 29, 41, 46, 53, 77, 96, 115, 122, 132]
    );
    let t0 = data.train.image(0);
    let firsts: Vec<(usize, u8)> = nonzero(t0, 6).into_iter().map(|k| (k, t0[k])).collect();
    assert_eq!(
        firsts,
        [(3, 234), (5, 9), (10, 86), (15, 163), (20, 240), (22, 14)]
    );
    // Training image k is original image perm[k], Fortran-reordered: pixel (r, c) is MATLAB
    // element c·28 + r.
    for (k, orig) in [1213, 578, 762, 534, 977].into_iter().enumerate() {
        let img = data.train.image(k);
        for r in 0..28 {
            for c in 0..28 {
                let want = (fake_grey(c * 28 + r, orig) * 255.0).round() as u8;
                assert_eq!(img[r * 28 + c], want, "image {k} ({r}, {c})");
            }
        }
    }
    // Uncompressed variables give the same data.
    let dir2 = TempDir::new("omniglot-plain");
    dir2.write(OMNIGLOT_FILE, &fake_chardata(1350, 3, false));
    let plain = load_vae_data(VaeDatasetName::Omniglot, dir2.path(), 5).unwrap();
    assert_eq!(plain.val.pixels, data.val.pixels);
    assert_eq!(plain.train.pixels, data.train.pixels);
}

#[test]
fn missing_and_bad_files_are_explained() {
    let dir = TempDir::new("missing");
    for (name, needle) in [
        (VaeDatasetName::Omniglot, "cargo xtask download omniglot"),
        (VaeDatasetName::Mnist, "cargo xtask download mnist"),
    ] {
        let err = load_vae_data(name, dir.path(), 0).unwrap_err();
        assert!(matches!(err, DatasetError::MissingFile { .. }), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    let err = load_vae_data(VaeDatasetName::Omniglot, dir.path(), 0).unwrap_err();
    assert!(err.to_string().contains("omniglot/chardata.mat"), "{err}");
    for (name, file) in [
        (VaeDatasetName::FreyFaces, "frey-faces/frey_faces_uint8.npy"),
        (
            VaeDatasetName::Caltech101,
            "caltech101-silhouettes/train_data.npy",
        ),
    ] {
        let err = load_vae_data(name, dir.path(), 0).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DatasetError::Unsupported { .. }), "{msg}");
        assert!(
            msg.contains(file) && msg.contains("../shared/data") && msg.contains("not found"),
            "{msg}"
        );
    }

    // Frey with the wrong width, then with an out-of-range value.
    let npy = |rows: usize, cols: usize, v: f64| {
        write_npy_f64(&Matrix::new(rows, cols, vec![v; rows * cols]).unwrap())
    };
    dir.write("frey-faces/frey_faces_uint8.npy", &npy(1965, 561, 1.0));
    let err = load_vae_data(VaeDatasetName::FreyFaces, dir.path(), 0).unwrap_err();
    assert!(matches!(err, DatasetError::BadShape { .. }), "{err}");
    dir.write("frey-faces/frey_faces_uint8.npy", &npy(1965, 560, 256.0));
    let err = load_vae_data(VaeDatasetName::FreyFaces, dir.path(), 0).unwrap_err();
    assert!(err.to_string().contains("0..=255"), "{err}");
    dir.write("frey-faces/frey_faces_uint8.npy", &npy(100, 560, 1.0));
    let err = load_vae_data(VaeDatasetName::FreyFaces, dir.path(), 0).unwrap_err();
    assert!(err.to_string().contains("1965 rows"), "{err}");
    // Caltech with a grey value.
    dir.write("caltech101-silhouettes/train_data.npy", &npy(3, 784, 0.5));
    let err = load_vae_data(VaeDatasetName::Caltech101, dir.path(), 0).unwrap_err();
    assert!(err.to_string().contains("0..=1"), "{err}");

    // Omniglot: a truncated file, a grey level above 1, wrong image size.
    let good = fake_chardata(1350, 3, true);
    dir.write(OMNIGLOT_FILE, &good[..good.len() - 100]);
    let err = load_vae_data(VaeDatasetName::Omniglot, dir.path(), 0).unwrap_err();
    assert!(matches!(err, DatasetError::Truncated { .. }), "{err}");
    let bad_value = MatWriter::new(false)
        .var(
            &MatVar {
                name: "data",
                class: 6,
                dims: vec![784, 1346],
                storage: 2,
                data: vec![2; 784 * 1346],
            },
            true,
        )
        .var(
            &MatVar {
                name: "testdata",
                class: 6,
                dims: vec![784, 1],
                storage: 2,
                data: vec![0; 784],
            },
            true,
        )
        .finish();
    dir.write(OMNIGLOT_FILE, &bad_value);
    let err = load_vae_data(VaeDatasetName::Omniglot, dir.path(), 0).unwrap_err();
    assert!(err.to_string().contains("not in [0, 1]"), "{err}");
    let bad_shape = MatWriter::new(false)
        .var(
            &MatVar {
                name: "data",
                class: 6,
                dims: vec![28, 28],
                storage: 2,
                data: vec![0; 784],
            },
            false,
        )
        .var(
            &MatVar {
                name: "testdata",
                class: 6,
                dims: vec![784, 1],
                storage: 2,
                data: vec![0; 784],
            },
            false,
        )
        .finish();
    dir.write(OMNIGLOT_FILE, &bad_shape);
    let err = load_vae_data(VaeDatasetName::Omniglot, dir.path(), 0).unwrap_err();
    assert!(matches!(err, DatasetError::BadShape { .. }), "{err}");
}
