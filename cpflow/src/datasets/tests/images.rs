//! BSDS300 patches from images, and MNIST.

use std::io::Write;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::super::*;
use super::{TempDir, missing_file_names_command, shared_data};

/// PNG bytes of an RGB image (the decoder sniffs the format, so it may be named `.jpg`).
fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let pixels: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .flat_map(|(x, y)| f(x, y))
        .collect();
    crate::image_file::encode_png((w, h), crate::image_file::PngColor::Rgb8, &pixels).unwrap()
}

fn tar_gz(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, &bytes[..]).unwrap();
    }
    let mut gz = tar.into_inner().unwrap();
    gz.flush().unwrap();
    gz.finish().unwrap()
}

#[test]
fn pil_luma_matches_pil() {
    // PIL: Image.new("RGB", (1, 1), c).convert("L").getpixel((0, 0))
    assert_eq!(pil_luma(200, 100, 50), 124);
    assert_eq!(pil_luma(255, 255, 255), 255);
    assert_eq!(pil_luma(0, 0, 0), 0);
    assert_eq!(pil_luma(255, 0, 0), 76);
    assert_eq!(pil_luma(0, 255, 0), 150);
    assert_eq!(pil_luma(0, 0, 255), 29);
}

/// Train images: grey level 10·column (a horizontal ramp); test image: constant colour.
fn fabricated_archive() -> Vec<u8> {
    let ramp = png(24, 12, |x, _| {
        let v = (10 * x) as u8;
        [v, v, v]
    });
    tar_gz(&[
        ("BSDS300/iids_train.txt", b"2\n10\n".to_vec()),
        ("BSDS300/images/train/10.jpg", ramp.clone()),
        ("BSDS300/images/train/2.jpg", ramp),
        (
            "BSDS300/images/test/7.jpg",
            png(9, 8, |_, _| [200, 100, 50]),
        ),
    ])
}

#[test]
fn bsds300_patches_from_fabricated_images() {
    let dir = TempDir::new("bsds");
    dir.write(layout::BSDS300_IMAGES[0], &fabricated_archive());
    let cfg = Bsds300Config {
        n_train: 500,
        n_val: 50,
        n_test: 200,
        ..Bsds300Config::default()
    };
    let s = load_bsds300(dir.path(), &cfg).unwrap();
    assert_eq!(s.sizes(), (500, 50, 200));
    assert_eq!(s.dim(), BSDS300_DIM);
    // Ramp: pixel (r, c) of a patch at column `left` is (10(left + c) + u)/256, so after
    // removing the patch mean it is (10(c - 3.5) + u - ū)/256: within 1/256 of 10(c-3.5)/256.
    for r in 0..s.train.rows() {
        for (k, &v) in s.train.row(r).iter().enumerate() {
            let c = (k % 8) as f32;
            let want = 10.0 * (c - 3.5) / 256.0;
            assert!(
                (v - want).abs() < 1.0 / 256.0,
                "patch {r} pixel {k}: {v} vs {want}"
            );
        }
    }
    // Constant test image: only the dequantisation noise remains, |u - ū|/256 < 1/256, and
    // it is not all zero (the noise is there).
    let t = s.test.data();
    assert!(t.iter().all(|v| v.abs() < 1.0 / 256.0));
    let var = t.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / t.len() as f64;
    // Var(u - ū) ≈ (1/12)(1 - 1/64) / 256²; allow ±20 % for 200·63 correlated samples.
    let want = (1.0 / 12.0) * (63.0 / 64.0) / 65536.0;
    assert!((var / want - 1.0).abs() < 0.2, "{var} vs {want}");
    // Same seed, same patches; another seed, other patches.
    assert_eq!(load_bsds300(dir.path(), &cfg).unwrap(), s);
    let other = Bsds300Config { seed: 1, ..cfg };
    assert_ne!(load_bsds300(dir.path(), &other).unwrap().test, s.test);
}

#[test]
fn bsds300_errors() {
    let dir = TempDir::new("bsds-err");
    let cfg = Bsds300Config::default();
    missing_file_names_command(
        load_bsds300(dir.path(), &cfg).unwrap_err(),
        "BSDS300-images.tgz",
        "bsds300",
    );
    dir.write(layout::BSDS300_HDF5, b"\x89HDF\r\n\x1a\n");
    let err = load_bsds300(dir.path(), &cfg).unwrap_err();
    assert!(matches!(err, DatasetError::Unsupported { .. }), "{err}");
    assert!(
        err.to_string().contains("cargo xtask download bsds300"),
        "{err}"
    );
    let archive = fabricated_archive();
    let p = dir.write(layout::BSDS300_IMAGES[1], &archive[..archive.len() / 2]);
    let err = load_bsds300_from_archive(&p, &cfg).unwrap_err();
    assert!(
        matches!(
            err,
            DatasetError::Truncated { .. } | DatasetError::Corrupt { .. }
        ),
        "{err}"
    );
    let no_test = tar_gz(&[("BSDS300/images/train/1.jpg", png(8, 8, |_, _| [0, 0, 0]))]);
    let p = dir.write("only-train.tgz", &no_test);
    assert!(matches!(
        load_bsds300_from_archive(&p, &cfg),
        Err(DatasetError::Corrupt { .. })
    ));
}

#[test]
fn bsds300_from_the_real_images() {
    let archive = shared_data().join("bsds300/BSDS300-images.tar.gz");
    let images = read_images_archive(&archive, Some(2), Some(1)).unwrap();
    assert_eq!((images.train.len(), images.test.len()), (2, 1));
    for im in images.train.iter().chain(&images.test) {
        let dims = (im.width, im.height);
        assert!(dims == (481, 321) || dims == (321, 481), "{dims:?}");
    }
    let cfg = Bsds300Config {
        n_train: 2000,
        n_val: 100,
        n_test: 500,
        ..Bsds300Config::default()
    };
    let s = patches_from_images(&images, &cfg).unwrap();
    assert_eq!(s.sizes(), (2000, 100, 500));
    // Every value is a pixel in [0, 1] minus a patch mean in [0, 1]; the dropped pixel is
    // minus the sum of the other 63 and lies in [-1, 1] too.
    for r in 0..s.train.rows() {
        let row = s.train.row(r);
        assert!(row.iter().all(|v| v.abs() <= 1.0));
        assert!(row.iter().sum::<f64>().abs() <= 1.0);
    }
    // Natural images: neighbouring pixels are strongly correlated (pixels 0 and 1).
    let n = s.train.rows() as f64;
    let (a, b): (Vec<f64>, Vec<f64>) = (0..s.train.rows())
        .map(|r| (s.train.row(r)[0], s.train.row(r)[1]))
        .unzip();
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / n;
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum::<f64>() / n;
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum::<f64>() / n;
    assert!(cov / (va * vb).sqrt() > 0.5);
}

// ---------------------------------------------------------------- MNIST

#[test]
fn mnist_official_files() {
    let m = load_mnist(&shared_data(), 10_000).unwrap();
    assert_eq!(
        (m.train.rows(), m.val.rows(), m.test.rows()),
        (50_000, 10_000, 10_000)
    );
    assert_eq!(m.train.cols(), 784);
    // docs/data/mnist/README.md: label counts of the 60,000 training images and pixel mean.
    let mut counts = [0usize; 10];
    for &l in m.train_labels.iter().chain(&m.val_labels) {
        counts[l as usize] += 1;
    }
    assert_eq!(
        counts,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    let mut test_counts = [0usize; 10];
    for &l in &m.test_labels {
        test_counts[l as usize] += 1;
    }
    assert_eq!(test_counts[1], 1135);
    let sum: u64 = m
        .train
        .data()
        .iter()
        .chain(m.val.data())
        .map(|&v| u64::from(v))
        .sum();
    let mean = sum as f64 / (60_000.0 * 784.0 * 255.0);
    assert!((mean - 0.1307).abs() < 5e-5, "{mean}");
}

fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2051u32, n, rows, cols] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend((0..n * rows * cols).map(|i| (i * 7 % 256) as u8));
    b
}

#[test]
fn mnist_idx_errors() {
    let dir = TempDir::new("mnist");
    missing_file_names_command(
        load_mnist(dir.path(), 10).unwrap_err(),
        "train-images-idx3-ubyte",
        "mnist",
    );
    let good = idx_images(3, 2, 2);
    let p = dir.write("a-idx3-ubyte", &good);
    let imgs = read_idx_images(&p).unwrap();
    assert_eq!((imgs.images.rows(), imgs.rows, imgs.cols), (3, 2, 2));
    assert_eq!(imgs.images.row(1), &[28, 35, 42, 49]);
    let p = dir.write("b", &good[..good.len() - 1]);
    assert!(matches!(
        read_idx_images(&p),
        Err(DatasetError::Truncated { .. })
    ));
    let p = dir.write("c", &good[..10]);
    assert!(matches!(
        read_idx_images(&p),
        Err(DatasetError::Truncated { .. })
    ));
    // A header whose n·rows·cols overflows usize (found by fuzzing: it panicked in a debug
    // build and wrapped in a release one).
    let huge: Vec<u8> = [2051u32, u32::MAX, u32::MAX, u32::MAX]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let p = dir.write("huge", &huge);
    match read_idx_images(&p) {
        Err(DatasetError::Corrupt { detail, .. }) => {
            assert!(detail.contains("4294967295x"), "{detail}")
        }
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
    let p = dir.write("d", &idx_images(1, 1, 1)[..]);
    assert!(matches!(
        read_idx_labels(&p),
        Err(DatasetError::Corrupt { .. })
    ));
    // A label outside 0–9 (found by fuzzing: a flipped byte loaded as label 200).
    let mut labels: Vec<u8> = [2049u32, 3].iter().flat_map(|v| v.to_be_bytes()).collect();
    labels.extend([5, 200, 4]);
    let p = dir.write("labels", &labels);
    match read_idx_labels(&p) {
        Err(DatasetError::Corrupt { detail, .. }) => {
            assert!(detail.contains("label 200 at index 1"), "{detail}")
        }
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
    // A gzip stream cut in the middle.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&idx_images(50, 28, 28)).unwrap();
    let gz = gz.finish().unwrap();
    let p = dir.write("e.gz", &gz[..gz.len() / 2]);
    assert!(matches!(
        read_idx_images(&p),
        Err(DatasetError::Truncated { .. })
    ));
    let p = dir.write("f.gz", &gz);
    assert_eq!(read_idx_images(&p).unwrap().images.rows(), 50);
}

#[test]
fn logit_transform_jacobian_inverse_and_bits() {
    let pixels: Vec<u8> = (0..=255).collect();
    let img = Matrix::new(2, 128, pixels).unwrap();
    let alpha = 0.05;
    let mut rng = StdRng::seed_from_u64(7);
    let out = dequantize_logit(&img, alpha, &mut rng).unwrap();
    // Log-Jacobian against a central difference of y(x) at the same points, recovered from
    // y: x = (sigmoid(y) - α)/(1 - 2α). Step 1e-6 in x: error O(h²·y''') ≪ 1e-6 per pixel.
    for r in 0..2 {
        let mut lj = 0.0;
        for &y in out.data.row(r) {
            let s = 1.0 / (1.0 + (-f64::from(y)).exp());
            let x = (s - alpha) / (1.0 - 2.0 * alpha);
            let f = |x: f64| {
                let s = alpha + (1.0 - 2.0 * alpha) * x;
                (s / (1.0 - s)).ln()
            };
            let h = 1e-6;
            lj += ((f(x + h) - f(x - h)) / (2.0 * h)).ln();
        }
        // y is stored in f32: x is recovered to ~1e-7 relative, so 1e-4 over 128 pixels.
        assert!(
            (lj - out.log_jacobian[r]).abs() < 1e-4,
            "{lj} vs {}",
            out.log_jacobian[r]
        );
    }
    // Quantising back gives the original pixels (y in f32 may move a value at a bin edge).
    let back = logit_to_pixels(&out.data, alpha);
    let exact = back
        .data()
        .iter()
        .zip(img.data())
        .filter(|(a, b)| a == b)
        .count();
    assert!(exact >= 250, "{exact}");
    assert!(
        back.data()
            .iter()
            .zip(img.data())
            .all(|(a, b)| a.abs_diff(*b) <= 1)
    );
    // A uniform density on [0, 1]^D has log p_x = 0, i.e. log p_y = -log|J|: 8 bits/dim.
    let bpd = bits_per_dim(-out.log_jacobian[0], out.log_jacobian[0], 128);
    assert!((bpd - 8.0).abs() < 1e-12);
    assert!(dequantize_logit(&img, 0.5, &mut rng).is_err());
}

/// The rebuilt patches against MAF's file: the full-covariance Gaussian fitted to 200,000
/// training patches scores the test patches within 1.2 nats of the −96.67 ± 0.25 that MAF's
/// Table 1 reports on its file. At full size (1,000,000 / 250,000 patches, the
/// `bsds300_gaussian_baseline` example) seeds 0, 1 and 2 give −96.31, −96.49 and −96.37,
/// each ± 0.25. 100,000 test patches give ± 0.40 (2 s.e.), so the two estimates differ by
/// about 0.47 at 2 s.e.; 1.2 nats is about 5 standard errors. A scale error of 2% in the
/// pixels moves the NLL by 63 ln 1.02 = 1.25 nats.
#[test]
fn bsds300_gaussian_matches_maf() {
    let cfg = Bsds300Config {
        n_train: 200_000,
        n_val: 10,
        n_test: 100_000,
        ..Bsds300Config::maf()
    };
    let split = load_bsds300(&shared_data(), &cfg).unwrap();
    let g = GaussianBaseline::fit(&split.train).unwrap();
    let test = g.mean_nll(&split.test).unwrap();
    let (maf, _) = TabularDataset::Bsds300.maf_gaussian_test_nll();
    assert!(
        (test.mean - maf).abs() < 1.2,
        "rebuilt BSDS300: Gaussian test NLL {:.3} ± {:.3}, MAF's file {maf}",
        test.mean,
        2.0 * test.std_err.unwrap_or(0.0)
    );
    // The test images are harder than the train images (about 5 nats for this model).
    let train = g.mean_nll(&split.train).unwrap();
    assert!(
        test.mean - train.mean > 3.0,
        "{} vs {}",
        test.mean,
        train.mean
    );
}
