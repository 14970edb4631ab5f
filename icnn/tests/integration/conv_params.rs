//! Parameters of the convolutional ICNNs: names and shapes of the reference `state_dict`,
//! parameter counts, seeding, save/load, the ActNorm flag, parameter gradients of the
//! explicit derivatives (central differences, f64), and input validation.

use std::collections::BTreeMap;

use crate::conv_common::{Arch, build, flat, named_vars, perturb, randn};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use icnn::{
    ActivationKind, ConvIcnn, ConvIcnn2, ConvIcnn2Config, ConvIcnn3, ConvIcnn3Config,
    ConvIcnnConfig, ConvexPotential, IcnnError, ImageShape,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn shapes(varmap: &VarMap) -> BTreeMap<String, Vec<usize>> {
    let data = varmap.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().dims().to_vec()))
        .collect()
}

fn count(s: &BTreeMap<String, Vec<usize>>) -> usize {
    s.iter()
        .filter(|(k, _)| !k.ends_with("initialized"))
        .map(|(_, d)| d.iter().product::<usize>())
        .sum()
}

fn vb(varmap: &VarMap, dtype: DType) -> VarBuilder<'static> {
    VarBuilder::from_varmap(varmap, dtype, &Device::Cpu)
}

#[test]
fn conv_icnn_state_dict_matches_the_reference() {
    let varmap = VarMap::new();
    let cfg = ConvIcnnConfig::default(); // MNIST, h = 64, L = 3 (train_img.py defaults)
    let mut rng = StdRng::seed_from_u64(0);
    ConvIcnn::new(vb(&varmap, DType::F32), &cfg, &mut rng).unwrap();
    let s = shapes(&varmap);
    let expect: &[(&str, &[usize])] = &[
        ("Wz0.weight", &[64, 1, 3, 3]),
        ("Wz0.bias", &[64]),
        ("Wx0.weight", &[64, 1, 3, 3]),
        ("Wx0.bias", &[64]),
        ("steps.0.0.0.weight", &[64, 64, 3, 3]),
        ("steps.0.0.1.bias", &[64]),
        ("steps.0.1.1.weight", &[64, 64, 3, 3]),
        ("steps.0.2.0.b", &[1, 64, 1]),
        ("steps.0.2.2.logs", &[1, 64, 1]), // allocated, unused (as the reference)
        ("actnorm_first.b", &[1, 64, 1]),
        ("initialized", &[1]),
    ];
    for (k, d) in expect {
        assert_eq!(s.get(*k).map(Vec::as_slice), Some(*d), "{k}");
    }
    assert!(!s.contains_key("steps.0.0.2.weight"));
    // 640 + 640 + 2·36,928 + 2·36,928 + 3·128 + 128: with the C = 4 and C = 16 blocks this
    // gives the reference's 1.41 M for the default MNIST flow (images-vae.md §2.10).
    assert_eq!(count(&s), 149_504);

    let varmap = VarMap::new();
    let cfg = ConvIcnnConfig {
        image: ImageShape::new(3, 8, 8),
        width: 8,
        depth: 2,
        num_pooling: 1,
    };
    ConvIcnn::new(vb(&varmap, DType::F32), &cfg, &mut rng).unwrap();
    let s = shapes(&varmap);
    assert_eq!(s["pooling_layers_z.0.weight"], [8, 8, 2, 2]);
    assert_eq!(s["pooling_layers_x.0.weight"], [8, 8, 2, 2]);
    assert!(!s.contains_key("pooling_layers_z.0.bias"));
    assert_eq!(s["steps.1.0.1.weight"], [8, 8, 3, 3]);
    assert_eq!(s["steps.1.2.1.b"], [1, 8, 1]);
}

#[test]
fn conv_icnn3_and_conv_icnn2_state_dicts_match_the_reference() {
    let (c, h, l) = (3usize, 64usize, 3usize);
    let image = ImageShape::new(c, 32, 32);
    let varmap = VarMap::new();
    let cfg = ConvIcnn3Config {
        image,
        width: h,
        depth: l,
        ..Default::default()
    };
    let mut rng = StdRng::seed_from_u64(1);
    ConvIcnn3::new(vb(&varmap, DType::F32), &cfg, &mut rng).unwrap();
    let s = shapes(&varmap);
    assert_eq!(s["Wzs.0.weight"], [64, 3, 3, 3]);
    assert_eq!(s["Wzs.1.weight"], [32, 64, 3, 3]);
    assert_eq!(s["Wzs.3.weight"], [1, 64, 3, 3]);
    assert!(!s.contains_key("Wzs.3.bias"));
    assert_eq!(s["Wxs.1.weight"], [32, 3, 3, 3]);
    assert_eq!(s["Wxs.2.weight"], [1, 3, 3, 3]);
    assert!(!s.contains_key("Wxs.2.bias"));
    assert_eq!(s["Wx2s.1.bias"], [32]);
    assert!(!s.contains_key("Wx2s.2.weight"));
    assert_eq!(s["actnorms.2.b"], [1, 32, 1]);
    assert_eq!(s["actnorms.3.logs"], [1, 1, 1]);
    let hh = h / 2;
    let convs = (h * c * 9 + h)
        + (l - 1) * (hh * h * 9 + hh)
        + h * 9
        + 2 * (l - 1) * (hh * c * 9 + hh)
        + c * 9;
    assert_eq!(count(&s), convs + l * 2 * hh + 2);

    let varmap = VarMap::new();
    let cfg = ConvIcnn2Config {
        image,
        width: h,
        depth: l,
    };
    ConvIcnn2::new(vb(&varmap, DType::F32), &cfg, &mut rng).unwrap();
    let s = shapes(&varmap);
    assert_eq!(s["step.0.1.weight"], [32, 64, 3, 3]);
    assert_eq!(s["step.1.1.weight"], [32, 64, 3, 3]);
    assert_eq!(s["step.2.0.bias"], [32]);
    assert_eq!(s["step.3.2.b"], [1, 32, 1]);
    assert_eq!(s["actnorm_first.logs"], [1, 64, 1]);
    let convs = 2 * (h * c * 9 + h) + 3 * (l - 1) * (hh * h * 9 + hh);
    assert_eq!(count(&s), convs + l * 2 * hh + 2 * h);
}

#[test]
fn same_seed_gives_same_weights_and_save_load_round_trips() {
    let image = ImageShape::new(2, 4, 5);
    let arch = Arch::Icnn { pooling: 1 };
    let (vm1, n1) = build(arch, image, DType::F64, 9);
    let (vm2, _) = build(arch, image, DType::F64, 9);
    for ((k1, v1), (k2, v2)) in named_vars(&vm1).into_iter().zip(named_vars(&vm2)) {
        assert_eq!(k1, k2);
        assert_eq!(flat(v1.as_tensor()), flat(v2.as_tensor()), "{k1}");
    }
    let mut rng = StdRng::seed_from_u64(40);
    let x = randn(&mut rng, (3, image.dim()), 1.0);
    let f1 = flat(&n1.potential(&x).unwrap());
    let path = std::env::temp_dir().join(format!(
        "icnn-conv-params-{}.safetensors",
        std::process::id()
    ));
    vm1.save(&path).unwrap();
    // Another seed, then load: same potential, and no new ActNorm init on the next call.
    let (mut vm3, n3) = build(arch, image, DType::F64, 10);
    vm3.load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let x_other = randn(&mut rng, (3, image.dim()), 5.0);
    n3.potential(&x_other).unwrap();
    assert_eq!(flat(&n3.potential(&x).unwrap()), f1);
}

#[test]
fn actnorm_flag_and_batch_of_one() {
    let image = ImageShape::new(1, 4, 4);
    let varmap = VarMap::new();
    let cfg = ConvIcnnConfig {
        image,
        width: 4,
        depth: 2,
        num_pooling: 0,
    };
    let mut rng = StdRng::seed_from_u64(2);
    let net = ConvIcnn::new(vb(&varmap, DType::F64).pp("icnn"), &cfg, &mut rng).unwrap();
    assert!(!net.is_initialized().unwrap());
    // A batch of one works (the reference's `.squeeze()` fails there).
    let x = randn(&mut rng, (1, 16), 1.0);
    assert_eq!(net.potential(&x).unwrap().dims(), &[1]);
    assert!(net.is_initialized().unwrap());
    let before = flat(&net.potential(&x).unwrap());
    net.initialize(&randn(&mut rng, (5, 16), 2.0)).unwrap();
    assert_ne!(flat(&net.potential(&x).unwrap()), before);
    // No ActNorm in a depth-1 ConvIcnn3: initialised from the start.
    let cfg3 = ConvIcnn3Config {
        image,
        width: 4,
        depth: 1,
        ..Default::default()
    };
    let varmap3 = VarMap::new();
    let net3 = ConvIcnn3::new(vb(&varmap3, DType::F64), &cfg3, &mut rng).unwrap();
    assert!(net3.is_initialized().unwrap());
    assert_eq!(net3.image_shape(), image);
}

#[test]
fn invalid_configs_and_inputs_are_errors() {
    let mut rng = StdRng::seed_from_u64(3);
    let image = ImageShape::new(1, 4, 4);
    let odd = ConvIcnn3Config {
        image,
        width: 5,
        ..Default::default()
    };
    let varmap = VarMap::new();
    let r = ConvIcnn3::new(vb(&varmap, DType::F64), &odd, &mut rng);
    assert!(matches!(r, Err(IcnnError::InvalidConfig(_))));
    let odd2 = ConvIcnn2Config {
        image,
        width: 3,
        depth: 2,
    };
    let r = ConvIcnn2::new(vb(&varmap, DType::F64).pp("b"), &odd2, &mut rng);
    assert!(matches!(r, Err(IcnnError::InvalidConfig(_))));
    let zero = ConvIcnnConfig {
        depth: 0,
        ..Default::default()
    };
    let r = ConvIcnn::new(vb(&varmap, DType::F64).pp("c"), &zero, &mut rng);
    assert!(matches!(r, Err(IcnnError::InvalidConfig(_))));

    let (_, net) = build(Arch::Icnn2, image, DType::F64, 0);
    let wrong_dim = Tensor::zeros((2, 15), DType::F64, &Device::Cpu).unwrap();
    assert!(matches!(
        net.potential(&wrong_dim),
        Err(IcnnError::Shape(_))
    ));
    let wrong_image = Tensor::zeros((2, 1, 2, 8), DType::F64, &Device::Cpu).unwrap();
    assert!(matches!(
        net.linearize(&wrong_image),
        Err(IcnnError::Shape(_))
    ));
    let wrong_dtype = Tensor::zeros((2, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        net.potential(&wrong_dtype),
        Err(IcnnError::Shape(_))
    ));
    // A random batch: the first call initialises the ActNorms, which refuse constant images.
    let x = randn(&mut rng, (2, 16), 1.0);
    let lin = net.linearize(&x).unwrap();
    assert!(
        lin.hvp(&Tensor::zeros((2, 15), DType::F64, &Device::Cpu).unwrap())
            .is_err()
    );
    let (_, g) = net.value_and_gradient(&x).unwrap();
    assert_eq!(g.dims(), &[2, 16]);
}

/// `S(θ) = Σ u ⊙ H v + Σ w ⊙ ∇F + Σ F` at fixed `x, u, v, w` (what a CP-Flow step
/// differentiates: the CG surrogate, the gradient map, the potential).
fn surrogate(net: &dyn ConvexPotential, x: &Tensor, u: &Tensor, v: &Tensor, w: &Tensor) -> Tensor {
    let lin = net.linearize(x).unwrap();
    let s1 = (lin.hvp(v).unwrap() * u).unwrap().sum_all().unwrap();
    let s2 = (lin.gradient() * w).unwrap().sum_all().unwrap();
    let s3 = lin.potential().sum_all().unwrap();
    ((s1 + s2).unwrap() + s3).unwrap()
}

#[test]
fn parameter_gradients_match_central_differences() {
    let image = ImageShape::new(2, 4, 5);
    let mut rng = StdRng::seed_from_u64(41);
    let archs = [
        Arch::Icnn { pooling: 1 },
        Arch::Icnn2,
        Arch::Icnn3 {
            kind: ActivationKind::GaussianSoftplus,
        },
    ];
    for arch in archs {
        let (varmap, net) = build(arch, image, DType::F64, 11);
        let d = image.dim();
        net.potential(&randn(&mut rng, (6, d), 1.0)).unwrap();
        perturb(&varmap, &mut rng, 0.2);
        let (x, u, v, w) = (
            randn(&mut rng, (2, d), 1.0),
            randn(&mut rng, (2, d), 1.0),
            randn(&mut rng, (2, d), 1.0),
            randn(&mut rng, (2, d), 1.0),
        );
        let grads = surrogate(net.as_ref(), &x, &u, &v, &w).backward().unwrap();
        let mut checked = 0;
        for (name, var) in named_vars(&varmap) {
            let n = var.elem_count();
            let g = grads.get(var.as_tensor()).map(flat);
            let base = flat(var.as_tensor());
            for idx in [0, n / 2, n - 1] {
                let eval = |delta: f64| -> f64 {
                    let mut p = base.clone();
                    p[idx] += delta;
                    var.set(&Tensor::from_vec(p, var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    let s = surrogate(net.as_ref(), &x, &u, &v, &w)
                        .to_scalar::<f64>()
                        .unwrap();
                    var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    s
                };
                let h = 1e-5;
                let fd = (eval(h) - eval(-h)) / (2.0 * h);
                let ours = g.as_ref().map_or(0.0, |g| g[idx]);
                // Central differences: error ≈ h²|S'''| + 1e-16|S|/h ≈ 1e-9; a missing or
                // wrong backward path is off by the size of the derivative.
                assert!(
                    (ours - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
                    "{arch:?} {name}[{idx}]: backward {ours} vs central difference {fd}"
                );
                checked += usize::from(fd.abs() > 1e-8);
            }
        }
        assert!(
            checked > 10,
            "{arch:?}: only {checked} non-zero derivatives"
        );
    }
}
