//! Construction, determinism, ActNorm init, checkpoints, configs, activations, f32.

use crate::common::{assert_close, flat, randn, to_vec1};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use icnn::{
    Activation, ActivationKind, ConvexPotential, Icnn2, Icnn2Config, Icnn3, Icnn3Config, IcnnError,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn icnn2(varmap: &VarMap, cfg: &Icnn2Config, seed: u64, dtype: DType) -> Icnn2 {
    let vb = VarBuilder::from_varmap(varmap, dtype, &Device::Cpu);
    Icnn2::new(vb.pp("icnn"), cfg, &mut StdRng::seed_from_u64(seed)).unwrap()
}

fn sorted_values(varmap: &VarMap) -> Vec<(String, Vec<f64>)> {
    let data = varmap.data().lock().unwrap();
    let mut v: Vec<(String, Vec<f64>)> = data
        .iter()
        .map(|(k, var)| {
            let t = var.as_tensor().to_dtype(DType::F64).unwrap();
            (k.clone(), flat(&t))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

const CFG: Icnn2Config = crate::common::SMALL_ICNN2;

#[test]
fn same_seed_gives_same_weights_and_different_seed_differs() {
    let (a, b, c) = (VarMap::new(), VarMap::new(), VarMap::new());
    icnn2(&a, &CFG, 7, DType::F64);
    icnn2(&b, &CFG, 7, DType::F64);
    icnn2(&c, &CFG, 8, DType::F64);
    assert_eq!(sorted_values(&a), sorted_values(&b));
    assert_ne!(sorted_values(&a), sorted_values(&c));
}

#[test]
fn parameter_names_and_shapes_follow_the_reference() {
    let varmap = VarMap::new();
    icnn2(&varmap, &CFG, 0, DType::F64);
    let data = varmap.data().lock().unwrap();
    let shape = |n: &str| data[n].as_tensor().dims().to_vec();
    assert_eq!(shape("icnn.Wzs.0.weight"), vec![5, 3]);
    assert_eq!(shape("icnn.Wzs.0.bias"), vec![5]);
    assert_eq!(shape("icnn.Wzs.1.weight"), vec![5, 5]);
    assert_eq!(shape("icnn.Wzs.3.weight"), vec![1, 5]);
    assert!(!data.contains_key("icnn.Wzs.3.bias"));
    assert_eq!(shape("icnn.Wxs.1.weight"), vec![5, 3]);
    assert_eq!(shape("icnn.Wxs.2.weight"), vec![1, 3]);
    assert!(!data.contains_key("icnn.Wxs.2.bias"));
    assert_eq!(shape("icnn.actnorm0.b"), vec![1, 5, 1]);
    assert_eq!(shape("icnn.actnorms.2.logs"), vec![1, 1, 1]);
    assert_eq!(shape("icnn.initialized"), vec![1]);
    // Parameter count of the reference ICNN2 with d=6, h=64, L=10 is 43,298 − 2 − 24 = 43,272
    // (the reference count includes the CP-Flow block's w0, w1 and two outer ActNorms).
    drop(data);
    let big = VarMap::new();
    let cfg = Icnn2Config {
        dim: 6,
        width: 64,
        depth: 10,
        ..Default::default()
    };
    icnn2(&big, &cfg, 0, DType::F32);
    let count: usize = big
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.ends_with("initialized"))
        .map(|(_, v)| v.as_tensor().elem_count())
        .sum();
    assert_eq!(count, 43_272);
}

#[test]
fn actnorm_init_standardises_the_first_batch_and_runs_once() {
    let varmap = VarMap::new();
    let net = icnn2(&varmap, &CFG, 1, DType::F64);
    let mut rng = StdRng::seed_from_u64(2);
    let x = randn(&mut rng, (256, 3), 3.0);
    assert!(!net.is_initialized().unwrap());
    net.potential(&x).unwrap();
    assert!(net.is_initialized().unwrap());
    // The output ActNorm standardises F over the init batch: mean 0 and, with
    // logs = −ln(σ + 1e-6) (σ the std before the ActNorm), std σ·(exp(logs) + 0.001).
    let f = to_vec1(&net.potential(&x).unwrap());
    let mean = f.iter().sum::<f64>() / f.len() as f64;
    let std = (f.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / f.len() as f64).sqrt();
    let logs = flat(varmap.data().lock().unwrap()["icnn.actnorms.2.logs"].as_tensor())[0];
    let sigma = (-logs).exp() - 1e-6;
    assert!(mean.abs() < 1e-9, "mean {mean}");
    assert!(
        (std - sigma * (logs.exp() + 0.001)).abs() < 1e-9,
        "std {std}"
    );
    // A second batch does not re-initialise.
    let before = sorted_values(&varmap);
    net.potential(&randn(&mut rng, (16, 3), 1.0)).unwrap();
    assert_eq!(before, sorted_values(&varmap));
}

#[test]
fn save_and_load_roundtrip_keeps_values_and_init_flag() {
    let dir = std::env::temp_dir().join(format!("icnn-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("icnn2.safetensors");
    let mut rng = StdRng::seed_from_u64(3);
    let x = randn(&mut rng, (8, 3), 1.0);
    let varmap = VarMap::new();
    let net = icnn2(&varmap, &CFG, 4, DType::F64);
    let f = to_vec1(&net.potential(&x).unwrap());
    varmap.save(&path).unwrap();

    // A different seed, then load: same potential and no re-initialisation.
    let mut loaded = VarMap::new();
    let net2 = icnn2(&loaded, &CFG, 5, DType::F64);
    loaded.load(&path).unwrap();
    assert!(net2.is_initialized().unwrap());
    let other = randn(&mut rng, (8, 3), 5.0);
    net2.potential(&other).unwrap();
    assert_close(&to_vec1(&net2.potential(&x).unwrap()), &f, 0.0, "reloaded");

    // Loading through a VarBuilder over the safetensors file directly.
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F64, &Device::Cpu).unwrap() };
    let net3 = Icnn2::new(vb.pp("icnn"), &CFG, &mut StdRng::seed_from_u64(9)).unwrap();
    assert!(net3.is_initialized().unwrap());
    assert_close(&to_vec1(&net3.potential(&x).unwrap()), &f, 0.0, "mmaped");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn configs_roundtrip_through_serde_and_default() {
    let cfg = Icnn3Config {
        dim: 5,
        width: 10,
        depth: 4,
        activation: ActivationKind::GaussianSoftplus,
        zero_shift: true,
        symm_act_first: true,
    };
    let s = serde_json::to_string(&cfg).unwrap();
    assert!(s.contains("gaussian_softplus"));
    let back: Icnn3Config = serde_json::from_str(&s).unwrap();
    assert_eq!(cfg, back);
    let partial: Icnn2Config = serde_json::from_str(r#"{"dim": 43}"#).unwrap();
    assert_eq!(partial.dim, 43);
    assert_eq!(partial.width, Icnn2Config::default().width);
}

#[test]
fn invalid_configs_and_shapes_are_errors() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let mut rng = StdRng::seed_from_u64(0);
    let odd = Icnn3Config {
        width: 5,
        ..Default::default()
    };
    assert!(matches!(
        Icnn3::new(vb.pp("a"), &odd, &mut rng),
        Err(IcnnError::InvalidConfig(_))
    ));
    let zero = Icnn2Config {
        depth: 0,
        ..Default::default()
    };
    assert!(Icnn2::new(vb.pp("b"), &zero, &mut rng).is_err());
    let net = icnn2(&varmap, &CFG, 0, DType::F64);
    let wrong = Tensor::zeros((4, 2), DType::F64, &Device::Cpu).unwrap();
    assert!(matches!(net.potential(&wrong), Err(IcnnError::Shape(_))));
    // A random batch: the first call initialises the ActNorms, which refuse equal rows.
    let x = randn(&mut StdRng::seed_from_u64(1), (4, 3), 1.0);
    let lin = net.linearize(&x).unwrap();
    assert!(lin.hvp(&wrong).is_err());
    let x32 = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(net.potential(&x32).is_err());
}

#[test]
fn f32_matches_f64() {
    let mut rng = StdRng::seed_from_u64(6);
    let x = randn(&mut rng, (16, 3), 1.0);
    let v = randn(&mut rng, (16, 3), 1.0);
    let (a, b) = (VarMap::new(), VarMap::new());
    let n64 = icnn2(&a, &CFG, 11, DType::F64);
    let n32 = icnn2(&b, &CFG, 11, DType::F32);
    let x32 = x.to_dtype(DType::F32).unwrap();
    let l64 = n64.linearize(&x).unwrap();
    let l32 = n32.linearize(&x32).unwrap();
    let as64 = |t: Tensor| flat(&t.to_dtype(DType::F64).unwrap());
    // f32 rounding through a few layers: ~1e-6 relative.
    assert_close(&as64(l32.potential()), &flat(&l64.potential()), 1e-4, "F");
    assert_close(&as64(l32.gradient()), &flat(&l64.gradient()), 1e-4, "∇F");
    let hv32 = l32.hvp(&v.to_dtype(DType::F32).unwrap()).unwrap();
    assert_close(&as64(hv32), &flat(&l64.hvp(&v).unwrap()), 1e-4, "Hv");
}

#[test]
fn activations_values_and_derivatives() {
    let xs: Vec<f64> = vec![-800.0, -30.0, -2.0, -0.5, 0.0, 0.5, 2.0, 30.0, 800.0];
    let x = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
    let sig = |t: f64| 1.0 / (1.0 + (-t).exp());
    let sp = |t: f64| if t > 30.0 { t } else { t.exp().ln_1p() };
    let erf_cdf = |t: f64| 0.5 * statrs::function::erf::erfc(-t / std::f64::consts::SQRT_2);
    let pdf = |t: f64| (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
    type Exact = Box<dyn Fn(f64) -> [f64; 3]>;
    let cases: Vec<(Activation, Exact)> = vec![
        (
            Activation::new(ActivationKind::Softplus),
            Box::new(move |t| [sp(t), sig(t), sig(t) * (1.0 - sig(t))]),
        ),
        (
            Activation::new(ActivationKind::Softplus)
                .with_symmetric(true)
                .with_zero_shift(true),
            Box::new(move |t| {
                [
                    sp(t) - 0.5 * t - std::f64::consts::LN_2,
                    sig(t) - 0.5,
                    sig(t) * (1.0 - sig(t)),
                ]
            }),
        ),
        (
            Activation::new(ActivationKind::GaussianSoftplus),
            Box::new(move |t| [t * erf_cdf(t) + pdf(t), erf_cdf(t), pdf(t)]),
        ),
        (
            Activation::new(ActivationKind::GaussianSoftplus).with_zero_shift(true),
            Box::new(move |t| [t * erf_cdf(t) + pdf(t) - pdf(0.0), erf_cdf(t), pdf(t)]),
        ),
    ];
    for (act, exact) in cases {
        let e = act.eval(&x, true).unwrap();
        // The fused kernels and the composed tensor ops agree.
        let c = act.eval_composed(&x, true).unwrap();
        for (a, b) in [
            (&e.value, &c.value),
            (e.d1.as_ref().unwrap(), c.d1.as_ref().unwrap()),
        ]
        .into_iter()
        .chain([(e.d2.as_ref().unwrap(), c.d2.as_ref().unwrap())])
        {
            assert_close(
                &to_vec1(a),
                &to_vec1(b),
                1e-14,
                &format!("{act:?} fused vs composed"),
            );
        }
        assert_close(
            &to_vec1(&act.value(&x).unwrap()),
            &to_vec1(&e.value),
            0.0,
            "value",
        );
        let vals = [
            to_vec1(&e.value),
            to_vec1(&e.d1.unwrap()),
            to_vec1(&e.d2.unwrap()),
        ];
        for (i, &t) in xs.iter().enumerate() {
            let want = exact(t);
            for k in 0..3 {
                let got = vals[k][i];
                assert!(got.is_finite(), "{act:?} order {k} at {t}: {got}");
                // statrs' erfc is accurate to ~1e-12 only (at −2 it is off by 2e-12).
                assert!(
                    (got - want[k]).abs() <= 1e-11 * (1.0 + want[k].abs()),
                    "{act:?} order {k} at {t}: {got} vs {}",
                    want[k]
                );
            }
        }
    }
}

/// A width whose parameters cannot exist is a configuration error naming the network's size
/// (it panicked with "capacity overflow"); the total is checked before any parameter.
#[test]
fn absurd_widths_are_refused_not_panicked() {
    for width in [usize::MAX / 2, 1 << 40] {
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(
            &varmap,
            candle_core::DType::F64,
            &candle_core::Device::Cpu,
        );
        let cfg = icnn::Icnn2Config {
            dim: 3,
            width,
            depth: 2,
            ..Default::default()
        };
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let err = icnn::Icnn2::new(vb.pp("icnn"), &cfg, &mut rng)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Icnn2 (dim 3, width") && err.contains("a model may have at most"),
            "{width}: {err}"
        );
        // A layer built on its own (a network of your own) is refused per parameter.
        let err = icnn::Linear::new(&vb, 3, width, true, &mut rng)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("parameter weight") && err.contains("elements"),
            "{width}: {err}"
        );
        assert!(varmap.all_vars().is_empty());
    }
}

/// A VarBuilder of an integer dtype is refused when the network is built (it built, then
/// failed at its first batch with "all rows are the same point").
#[test]
fn integer_parameters_are_refused() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::U32, &Device::Cpu);
    let err = Icnn2::new(vb.pp("icnn"), &CFG, &mut StdRng::seed_from_u64(0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("U32") && err.contains("floating-point"),
        "{err}"
    );
}
