//! Shared helpers for the icnn integration tests: small networks of every architecture and
//! activation, random batches, parameter perturbation.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use icnn::{
    ActivationKind, ConditionalConvexPotential, ConvexPotential, DenseIcnn2, DenseIcnn2Config,
    Icnn, Icnn2, Icnn2Config, Icnn3, Icnn3Config, IcnnConfig, Linearization, Picnn, PicnnConfig,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// A `Picnn` with a fixed context, seen as a convex potential in `x`.
pub struct WithContext {
    pub net: Picnn,
    pub context: Tensor,
}

impl ConvexPotential for WithContext {
    fn potential(&self, x: &Tensor) -> icnn::Result<Tensor> {
        self.net.potential_with_context(x, &self.context)
    }
    fn linearize(&self, x: &Tensor) -> icnn::Result<Linearization> {
        self.net.linearize_with_context(x, &self.context)
    }
    fn dim(&self) -> usize {
        ConditionalConvexPotential::dim(&self.net)
    }
}

/// A network under test.
pub struct Case {
    pub name: String,
    pub net: Box<dyn ConvexPotential>,
    pub varmap: VarMap,
}

pub const BATCH: usize = 4;

/// A small Icnn2 (d = 3, width 5, depth 3, softplus) for API-level tests.
pub const SMALL_ICNN2: icnn::Icnn2Config = icnn::Icnn2Config {
    dim: 3,
    width: 5,
    depth: 3,
    activation: icnn::ActivationKind::Softplus,
    zero_shift: false,
    symm_act_first: false,
};

pub fn randn(rng: &mut StdRng, shape: (usize, usize), scale: f64) -> Tensor {
    let n = shape.0 * shape.1;
    let v: Vec<f64> = (0..n)
        .map(|_| scale * Distribution::<f64>::sample(&StandardNormal, rng))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Adds `N(0, scale²)` noise to every parameter except the `initialized` flags, so that the
/// tests do not run at the special point of the init (zero gates, unit ActNorm statistics).
pub fn perturb(varmap: &VarMap, rng: &mut StdRng, scale: f64) {
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        if name.ends_with("initialized") {
            continue;
        }
        let var: &Var = &data[name];
        let t = var.as_tensor();
        let n = t.elem_count();
        let noise: Vec<f64> = (0..n)
            .map(|_| scale * Distribution::<f64>::sample(&StandardNormal, rng))
            .collect();
        let noise = Tensor::from_vec(noise, t.shape(), t.device())
            .unwrap()
            .to_dtype(t.dtype())
            .unwrap();
        var.set(&(t + noise).unwrap()).unwrap();
    }
}

fn vb(varmap: &VarMap) -> VarBuilder<'static> {
    VarBuilder::from_varmap(varmap, DType::F64, &Device::Cpu)
}

const KINDS: [ActivationKind; 2] = [ActivationKind::Softplus, ActivationKind::GaussianSoftplus];

/// Every architecture with every activation option, small sizes, initialised on a random
/// batch and perturbed.
pub fn all_cases(dim: usize, seed: u64) -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cases: Vec<Case> = Vec::new();
    let (w, l) = (6, 3);
    {
        let varmap = VarMap::new();
        let cfg = IcnnConfig {
            dim,
            width: w,
            depth: l,
        };
        let net = Icnn::new(vb(&varmap).pp("icnn"), &cfg, &mut rng).unwrap();
        cases.push(Case {
            name: "Icnn".into(),
            net: Box::new(net),
            varmap,
        });
    }
    for kind in KINDS {
        for (zero_shift, symm) in [(false, false), (true, true)] {
            let varmap = VarMap::new();
            let cfg = Icnn2Config {
                dim,
                width: w,
                depth: l,
                activation: kind,
                zero_shift,
                symm_act_first: symm,
            };
            let net = Icnn2::new(vb(&varmap).pp("icnn"), &cfg, &mut rng).unwrap();
            cases.push(Case {
                name: format!("Icnn2({kind:?}, shift={zero_shift}, symm={symm})"),
                net: Box::new(net),
                varmap,
            });
            let varmap = VarMap::new();
            let cfg = Icnn3Config {
                dim,
                width: w,
                depth: l,
                activation: kind,
                zero_shift,
                symm_act_first: symm,
            };
            let net = Icnn3::new(vb(&varmap).pp("icnn"), &cfg, &mut rng).unwrap();
            cases.push(Case {
                name: format!("Icnn3({kind:?}, shift={zero_shift}, symm={symm})"),
                net: Box::new(net),
                varmap,
            });
        }
        let varmap = VarMap::new();
        let cfg = DenseIcnn2Config {
            dim,
            width: 4,
            depth: l,
            activation: kind,
            zero_shift: false,
            symm_act_first: true,
        };
        let net = DenseIcnn2::new(vb(&varmap).pp("icnn"), &cfg, &mut rng).unwrap();
        cases.push(Case {
            name: format!("DenseIcnn2({kind:?})"),
            net: Box::new(net),
            varmap,
        });
        let varmap = VarMap::new();
        let cfg = PicnnConfig {
            dim,
            context_dim: 2,
            width: w,
            depth: l,
            activation: kind,
            zero_shift: kind == ActivationKind::Softplus,
            symm_act_first: true,
        };
        let net = Picnn::new(vb(&varmap).pp("picnn"), &cfg, &mut rng).unwrap();
        let context = randn(&mut rng, (BATCH, 2), 1.0);
        cases.push(Case {
            name: format!("Picnn({kind:?})"),
            net: Box::new(WithContext { net, context }),
            varmap,
        });
    }
    for case in &mut cases {
        // Data-dependent init on a random batch, then move away from the init point.
        let x0 = randn(&mut rng, (BATCH, dim), 1.5);
        case.net.potential(&x0).unwrap();
        perturb(&case.varmap, &mut rng, 0.3);
    }
    cases
}

pub fn to_vec2(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_vec2::<f64>().unwrap()
}

pub fn to_vec1(t: &Tensor) -> Vec<f64> {
    t.to_vec1::<f64>().unwrap()
}

/// Max |a − b| / (atol + rtol·max|b|) style check with a readable message.
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

pub fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// All parameter variables of a VarMap with their names, sorted by name, flags excluded.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap();
    let mut v: Vec<(String, Var)> = data
        .iter()
        .filter(|(k, _)| !k.ends_with("initialized"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The message of an [`icnn::IcnnError::Shape`]; panics on any other result.
pub fn shape_error<T: std::fmt::Debug>(what: &str, r: icnn::Result<T>) -> String {
    match r {
        Err(icnn::IcnnError::Shape(m)) => m,
        other => panic!("{what}: expected IcnnError::Shape, got {other:?}"),
    }
}

/// Asserts that the message `m` starts with `start` and contains every piece of `pieces`.
pub fn starts_and_names(m: &str, start: &str, pieces: &[&str]) {
    assert!(m.starts_with(start), "{m:?} does not start with {start:?}");
    for p in pieces {
        assert!(m.contains(p), "{m:?} does not name {p:?}");
    }
}

/// A tensor of `shape` filled with `sin(0.37·k)`, `k` the flat index, in `dtype`.
pub fn filled(shape: &[usize], dtype: DType) -> Tensor {
    let n = shape.iter().product::<usize>();
    let v: Vec<f64> = (0..n).map(|k| (k as f64 * 0.37).sin()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}
