//! Shared helpers for the convolutional ICNN tests: small networks of every conv
//! architecture, random batches, parameter perturbation, comparisons.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use icnn::{
    ActivationKind, ConvIcnn, ConvIcnn2, ConvIcnn2Config, ConvIcnn3, ConvIcnn3Config,
    ConvIcnnConfig, ConvexPotential, ImageShape,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// A conv architecture with its options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arch {
    /// `ConvIcnn` with `num_pooling` extra stages.
    Icnn {
        pooling: usize,
    },
    Icnn2,
    /// `ConvIcnn3` with the given activation (zero-shifted).
    Icnn3 {
        kind: ActivationKind,
    },
}

/// Hidden channels and depth of the test networks.
pub const WIDTH: usize = 4;
pub const DEPTH: usize = 3;
/// Batch of the derivative checks.
pub const BATCH: usize = 2;

/// A network under test.
pub struct Case {
    pub name: String,
    pub arch: Arch,
    pub image: ImageShape,
    pub net: Box<dyn ConvexPotential>,
    pub varmap: VarMap,
}

pub fn build(
    arch: Arch,
    image: ImageShape,
    dtype: DType,
    seed: u64,
) -> (VarMap, Box<dyn ConvexPotential>) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu).pp("icnn");
    let mut rng = StdRng::seed_from_u64(seed);
    let net: Box<dyn ConvexPotential> = match arch {
        Arch::Icnn { pooling } => {
            let cfg = ConvIcnnConfig {
                image,
                width: WIDTH,
                depth: DEPTH,
                num_pooling: pooling,
            };
            Box::new(ConvIcnn::new(vb, &cfg, &mut rng).unwrap())
        }
        Arch::Icnn2 => {
            let cfg = ConvIcnn2Config {
                image,
                width: WIDTH,
                depth: DEPTH,
            };
            Box::new(ConvIcnn2::new(vb, &cfg, &mut rng).unwrap())
        }
        Arch::Icnn3 { kind } => {
            let cfg = ConvIcnn3Config {
                image,
                width: WIDTH,
                depth: DEPTH,
                activation: kind,
                zero_shift: true,
            };
            Box::new(ConvIcnn3::new(vb, &cfg, &mut rng).unwrap())
        }
    };
    (varmap, net)
}

pub const ARCHS: [Arch; 5] = [
    Arch::Icnn { pooling: 0 },
    Arch::Icnn { pooling: 1 },
    Arch::Icnn2,
    Arch::Icnn3 {
        kind: ActivationKind::Softplus,
    },
    Arch::Icnn3 {
        kind: ActivationKind::GaussianSoftplus,
    },
];

/// Every architecture on the given image shapes, f64, ActNorms initialised on a random
/// batch, then every parameter perturbed (so the tests do not run at the init point).
pub fn all_cases(images: &[ImageShape], seed: u64) -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cases = Vec::new();
    for &image in images {
        for (i, arch) in ARCHS.into_iter().enumerate() {
            let (varmap, net) = build(arch, image, DType::F64, seed * 100 + i as u64);
            let x0 = randn(&mut rng, (8, image.dim()), 1.0);
            net.potential(&x0).unwrap();
            perturb(&varmap, &mut rng, 0.2);
            cases.push(Case {
                name: format!(
                    "{arch:?} on {}x{}x{}",
                    image.channels, image.height, image.width
                ),
                arch,
                image,
                net,
                varmap,
            });
        }
    }
    cases
}

pub fn randn(rng: &mut StdRng, shape: (usize, usize), scale: f64) -> Tensor {
    let v: Vec<f64> = (0..shape.0 * shape.1)
        .map(|_| scale * Distribution::<f64>::sample(&StandardNormal, rng))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Adds `N(0, scale²)` noise to every parameter except the `initialized` flags.
pub fn perturb(varmap: &VarMap, rng: &mut StdRng, scale: f64) {
    for (_, var) in named_vars(varmap) {
        let t = var.as_tensor();
        let noise: Vec<f64> = (0..t.elem_count())
            .map(|_| scale * Distribution::<f64>::sample(&StandardNormal, rng))
            .collect();
        let noise = Tensor::from_vec(noise, t.shape(), t.device())
            .unwrap()
            .to_dtype(t.dtype())
            .unwrap();
        var.set(&(t + noise).unwrap()).unwrap();
    }
}

/// All parameter variables with their names, sorted by name, flags excluded.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap();
    let mut v: Vec<(String, Var)> = data
        .iter()
        .filter(|(k, _)| !k.ends_with("initialized"))
        .map(|(k, var)| (k.clone(), var.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The parameter `name` (full name, prefix included) as f64 values with its shape.
pub fn param(varmap: &VarMap, name: &str) -> (Vec<f64>, Vec<usize>) {
    let data = varmap.data().lock().unwrap();
    let t = data
        .get(name)
        .unwrap_or_else(|| panic!("missing parameter {name}"))
        .as_tensor()
        .to_dtype(DType::F64)
        .unwrap();
    (
        t.flatten_all().unwrap().to_vec1().unwrap(),
        t.dims().to_vec(),
    )
}

pub fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// `|a_i − b_i| ≤ tol·max(1, max|b|)` for every entry, with a readable message.
pub fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length mismatch");
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1.0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}: entry {i}: {x} vs {y} (tol {tol} × scale {scale})"
        );
    }
}

/// The maximum of `|a_i − b_i|`.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}
