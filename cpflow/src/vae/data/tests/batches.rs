//! `VaeData::batch_inputs` / `batch_targets`, names and serde.

use candle_core::{DType, Device};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::datasets::DatasetError;
use crate::vae::{VaeData, VaeDatasetName, VaeImages, VaeLikelihood, VaeSplit, load_vae_data};

/// A 16×16 "dataset" whose one training image has grey level `g` at pixel `g`, and whose
/// validation image is binary.
fn ramp(dynamic: bool, likelihood: VaeLikelihood) -> VaeData {
    let grey: Vec<u8> = (0..=255u8).collect();
    let bits: Vec<u8> = (0..256).map(|i| (i % 3 == 0) as u8).collect();
    VaeData {
        name: VaeDatasetName::Omniglot,
        likelihood,
        height: 16,
        width: 16,
        train: VaeImages {
            n: 1,
            pixels: grey.clone(),
        },
        val: VaeImages { n: 1, pixels: bits },
        test: VaeImages { n: 1, pixels: grey },
        dynamic_binarization: dynamic,
    }
}

#[test]
fn dynamic_binarisation_has_the_grey_level_as_probability() {
    let data = ramp(true, VaeLikelihood::Bernoulli);
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(11);
    // 4,000 copies of the image in one batch: per pixel, the frequency of ones estimates
    // g/255 with standard error ≤ sqrt(0.25/4000) ≈ 0.0079; 0.04 is 5 standard errors, and
    // 256 pixels make a 5-sigma excursion anywhere unlikely (< 1e-4).
    let n = 4000;
    let idx = vec![0usize; n];
    let x = data
        .batch_inputs(VaeSplit::Train, &idx, DType::F32, &dev, &mut rng)
        .unwrap();
    assert_eq!(x.dims(), &[n, 1, 16, 16]);
    let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|&b| b == 0.0 || b == 1.0));
    let mut total = 0.0;
    for g in 0..256 {
        let freq = (0..n).map(|k| f64::from(v[k * 256 + g])).sum::<f64>() / n as f64;
        assert!((freq - g as f64 / 255.0).abs() < 0.04, "pixel {g}: {freq}");
        total += freq;
    }
    // The mean over all pixels: 0.5 with standard error < 0.0005.
    assert!((total / 256.0 - 0.5).abs() < 0.003, "{}", total / 256.0);
    assert_eq!(v[0], 0.0);
    assert!((0..n).all(|k| v[k * 256 + 255] == 1.0));

    // A fresh draw per call; the same generator state gives the same draw.
    let a = data
        .batch_inputs(VaeSplit::Train, &[0], DType::F32, &dev, &mut rng)
        .unwrap();
    let b = data
        .batch_inputs(VaeSplit::Train, &[0], DType::F32, &dev, &mut rng)
        .unwrap();
    let (a, b): (Vec<f32>, Vec<f32>) = (
        a.flatten_all().unwrap().to_vec1().unwrap(),
        b.flatten_all().unwrap().to_vec1().unwrap(),
    );
    assert_ne!(a, b);
    let again = |seed| -> Vec<f64> {
        data.batch_inputs(
            VaeSplit::Train,
            &[0, 0],
            DType::F64,
            &dev,
            &mut StdRng::seed_from_u64(seed),
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
    };
    assert_eq!(again(5), again(5));

    // Validation and test are not redrawn: the stored values as they are.
    let val: Vec<f64> = data
        .batch_inputs(VaeSplit::Val, &[0], DType::F64, &dev, &mut rng)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(
        val,
        (0..256).map(|i| f64::from(i % 3 == 0)).collect::<Vec<_>>()
    );
    let t: Vec<u32> = data
        .batch_targets(VaeSplit::Val, &[0], &dev)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(
        t,
        (0..256).map(|i| u32::from(i % 3 == 0)).collect::<Vec<_>>()
    );
    let err = data.batch_targets(VaeSplit::Train, &[0], &dev).unwrap_err();
    assert!(err.to_string().contains("binarised per batch"), "{err}");
}

#[test]
fn frey_inputs_and_targets() {
    let root = super::shared_data();
    let data = load_vae_data(VaeDatasetName::FreyFaces, &root, 123).unwrap();
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(0);
    let idx = [3, 0, 1564];
    let x = data
        .batch_inputs(VaeSplit::Train, &idx, DType::F64, &dev, &mut rng)
        .unwrap();
    assert_eq!(x.dims(), &[3, 1, 28, 20]);
    assert_eq!(x.dtype(), DType::F64);
    let x: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    let t = data.batch_targets(VaeSplit::Train, &idx, &dev).unwrap();
    assert_eq!(t.dims(), &[3, 560]);
    assert_eq!(t.dtype(), DType::U32);
    let t: Vec<u32> = t.flatten_all().unwrap().to_vec1().unwrap();
    for (b, &i) in idx.iter().enumerate() {
        for (j, &g) in data.train.image(i).iter().enumerate() {
            // The reference's `data / 255.` in f64, then `.float()`, then `.double()`.
            assert_eq!(x[b * 560 + j], f64::from((f64::from(g) / 255.0) as f32));
            assert_eq!(t[b * 560 + j], u32::from(g));
        }
    }
    // Static data does not touch the generator: same result with any rng.
    let y: Vec<f32> = data
        .batch_inputs(
            VaeSplit::Test,
            &[199],
            DType::F32,
            &dev,
            &mut StdRng::seed_from_u64(9),
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(y[0], f32::from(data.test.image(199)[0]) / 255.0);

    for bad in [&[][..], &[1565][..]] {
        let err = data
            .batch_inputs(VaeSplit::Train, bad, DType::F32, &dev, &mut rng)
            .unwrap_err();
        assert!(matches!(err, DatasetError::InvalidConfig(_)), "{err}");
    }
    let err = data.batch_targets(VaeSplit::Val, &[200], &dev).unwrap_err();
    assert!(err.to_string().contains("200 images"), "{err}");
}

#[test]
fn names_and_serde() {
    for (d, s) in [
        (VaeDatasetName::FreyFaces, "frey-faces"),
        (VaeDatasetName::Caltech101, "caltech101"),
        (VaeDatasetName::Mnist, "mnist"),
        (VaeDatasetName::Omniglot, "omniglot"),
    ] {
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{s}\""));
        assert_eq!(
            serde_json::from_str::<VaeDatasetName>(&format!("\"{s}\"")).unwrap(),
            d
        );
        assert_eq!(d.name(), s);
        assert_eq!(VaeDatasetName::from_name(s), Some(d));
        assert_eq!(d.to_string(), s);
    }
    assert_eq!(
        VaeDatasetName::FreyFaces.likelihood(),
        VaeLikelihood::Categorical256
    );
    assert_eq!(VaeDatasetName::FreyFaces.image_size(), (28, 20));
    assert!(VaeDatasetName::Omniglot.dynamic_binarization());
    assert!(!VaeDatasetName::Caltech101.dynamic_binarization());
}
