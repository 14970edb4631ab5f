//! The ActNorm data-dependent initialisation on unusable batches (fewer than 2 rows, all rows
//! equal, non-finite values, overflow): a typed error that writes nothing, for every
//! architecture with ActNorms, on the explicit `initialize` and on the automatic first call.

use crate::common::{flat, randn, to_vec1};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use icnn::{
    ActNorm, ConditionalConvexPotential, ConvIcnn, ConvIcnn2, ConvIcnn2Config, ConvIcnn3,
    ConvIcnn3Config, ConvIcnnConfig, ConvexPotential, DenseIcnn2, DenseIcnn2Config, Icnn, Icnn2,
    Icnn2Config, Icnn3, Icnn3Config, IcnnConfig, IcnnError, ImageShape, Picnn, PicnnConfig,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

const CFG: Icnn2Config = crate::common::SMALL_ICNN2;

fn vb(varmap: &VarMap) -> VarBuilder<'static> {
    VarBuilder::from_varmap(varmap, DType::F64, &Device::Cpu)
}

fn icnn2(varmap: &VarMap, seed: u64) -> Icnn2 {
    Icnn2::new(
        vb(varmap).pp("icnn"),
        &CFG,
        &mut StdRng::seed_from_u64(seed),
    )
    .unwrap()
}

/// Every variable of `varmap`, sorted by name, as f64 values.
fn values(varmap: &VarMap) -> Vec<(String, Vec<f64>)> {
    let data = varmap.data().lock().unwrap();
    let mut v: Vec<(String, Vec<f64>)> = data
        .iter()
        .map(|(k, var)| (k.clone(), flat(var.as_tensor())))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// `(layer, reason)` of an [`IcnnError::Initialization`]; panics on anything else.
fn init_error<T: std::fmt::Debug>(r: icnn::Result<T>) -> (String, String) {
    match r {
        Err(IcnnError::Initialization { layer, reason }) => (layer, reason),
        other => panic!("expected an ActNorm initialisation error, got {other:?}"),
    }
}

fn rows(v: &[[f64; 3]]) -> Tensor {
    let flat: Vec<f64> = v.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (v.len(), 3), &Device::Cpu).unwrap()
}

#[test]
fn a_one_row_first_call_is_an_error_and_a_later_batch_initialises() {
    let varmap = VarMap::new();
    let net = icnn2(&varmap, 1);
    let before = values(&varmap);
    // The first call initialises automatically: one row has std 0 in every unit.
    let (layer, reason) = init_error(net.linearize(&rows(&[[0.3, 0.2, 0.1]])));
    assert_eq!(layer, "input");
    assert!(reason.contains("1 row"), "{reason}");
    assert!(!net.is_initialized().unwrap());
    assert_eq!(before, values(&varmap), "a failed initialisation wrote");
    init_error(net.potential(&rows(&[[1.3, -0.2, 0.5]])));
    init_error(net.host_linearize(&rows(&[[1.3, -0.2, 0.5]])));

    // A proper batch then initialises it, exactly as a fresh twin initialised on that batch.
    let mut rng = StdRng::seed_from_u64(2);
    let x = randn(&mut rng, (32, 3), 1.0);
    net.linearize(&x).unwrap();
    assert!(net.is_initialized().unwrap());
    let twin_map = VarMap::new();
    let twin = icnn2(&twin_map, 1);
    twin.initialize(&x).unwrap();
    assert_eq!(values(&twin_map), values(&varmap));
    // Moderate values away from the batch (the one-row init gave potentials of 1e17 here).
    let other = randn(&mut rng, (8, 3), 2.0);
    let f = to_vec1(&net.potential(&other).unwrap());
    assert!(f.iter().all(|v| v.abs() < 1e3), "{f:?}");
}

#[test]
fn empty_equal_non_finite_and_overflowing_batches_write_nothing() {
    let varmap = VarMap::new();
    let net = icnn2(&varmap, 3);
    let fresh = values(&varmap);
    let empty = Tensor::zeros((0, 3), DType::F64, &Device::Cpu).unwrap();
    let (layer, reason) = init_error(net.initialize(&empty));
    assert_eq!(layer, "input");
    assert!(reason.contains("0 row"), "{reason}");
    let (_, reason) = init_error(net.initialize(&rows(&[[f64::NAN, 0.0, 0.0], [1.0; 3]])));
    assert!(reason.contains("row 0, column 0 is not finite"), "{reason}");
    let (_, reason) = init_error(net.initialize(&rows(&[[f64::INFINITY, 0.0, 0.0], [1.0; 3]])));
    assert!(reason.contains("not finite"), "{reason}");
    let (_, reason) = init_error(net.initialize(&rows(&[[0.5, -1.0, 2.0]; 4])));
    assert!(reason.contains("same point"), "{reason}");
    // Finite and distinct, but the first layer's variance overflows f64 (~1e400).
    let (layer, reason) =
        init_error(net.initialize(&rows(&[[1e200, 0.0, 0.0], [-1e200, 0.0, 0.0]])));
    assert_eq!(layer, "icnn.actnorm0");
    assert!(reason.contains("overflows"), "{reason}");
    assert!(!net.is_initialized().unwrap());
    assert_eq!(fresh, values(&varmap), "a failed initialisation wrote");

    // On an initialised network a failed re-initialisation keeps the parameters and the flag.
    let mut rng = StdRng::seed_from_u64(4);
    net.initialize(&randn(&mut rng, (16, 3), 1.0)).unwrap();
    let initialised = values(&varmap);
    init_error(net.initialize(&rows(&[[f64::NAN, 0.0, 0.0], [1.0; 3]])));
    assert!(net.is_initialized().unwrap());
    assert_eq!(initialised, values(&varmap));
}

/// Runs the checks of one unconditional architecture: a one-row first call fails and leaves
/// it uninitialised, a proper batch then initialises it.
macro_rules! check_first_call {
    ($net:expr, $d:expr, $has_actnorm:expr) => {{
        let net = $net;
        let one = Tensor::from_vec(vec![0.3f64; $d], (1, $d), &Device::Cpu).unwrap();
        if $has_actnorm {
            init_error(net.potential(&one));
            assert!(!net.is_initialized().unwrap());
        } else {
            // Nothing to initialise: a single point is fine.
            net.potential(&one).unwrap();
        }
        let mut rng = StdRng::seed_from_u64(5);
        net.potential(&randn(&mut rng, (16, $d), 1.0)).unwrap();
        assert!(net.is_initialized().unwrap());
    }};
}

#[test]
fn every_dense_architecture_refuses_a_one_row_first_call() {
    let varmap = VarMap::new();
    let mut rng = StdRng::seed_from_u64(6);
    let (d, w, l) = (3, 4, 3);
    let cfg = IcnnConfig {
        dim: d,
        width: w,
        depth: l,
    };
    check_first_call!(
        Icnn::new(vb(&varmap).pp("a"), &cfg, &mut rng).unwrap(),
        d,
        false
    );
    let cfg = Icnn3Config {
        dim: d,
        width: w,
        depth: l,
        ..Default::default()
    };
    check_first_call!(
        Icnn3::new(vb(&varmap).pp("b"), &cfg, &mut rng).unwrap(),
        d,
        true
    );
    let cfg = DenseIcnn2Config {
        dim: d,
        width: w,
        depth: l,
        ..Default::default()
    };
    check_first_call!(
        DenseIcnn2::new(vb(&varmap).pp("c"), &cfg, &mut rng).unwrap(),
        d,
        true
    );
}

#[test]
fn picnn_refuses_one_row_non_finite_and_constant_contexts() {
    let varmap = VarMap::new();
    let cfg = PicnnConfig {
        dim: 2,
        context_dim: 1,
        width: 4,
        depth: 2,
        ..Default::default()
    };
    let net = Picnn::new(vb(&varmap).pp("picnn"), &cfg, &mut StdRng::seed_from_u64(7)).unwrap();
    let fresh = values(&varmap);
    let t = |v: &[f64], n: usize| Tensor::from_vec(v.to_vec(), (n, v.len() / n), &Device::Cpu);
    let x = t(&[0.0, 1.0, 1.0, -1.0, 0.5, 0.2], 3).unwrap();
    let (layer, _) =
        init_error(net.linearize_with_context(&t(&[0.0, 1.0], 1).unwrap(), &t(&[0.3], 1).unwrap()));
    assert_eq!(layer, "input");
    let (layer, _) =
        init_error(net.potential_with_context(&x, &t(&[0.3, f64::NAN, 0.1], 3).unwrap()));
    assert_eq!(layer, "context");
    // One context for the whole batch: the context ActNorm sees no variation, and the
    // message names the context (it named the ActNorm's units and asked for distinct points,
    // which the x rows were).
    let (layer, reason) = init_error(net.initialize(&x, &t(&[0.3; 3], 3).unwrap()));
    assert_eq!(layer, "context");
    assert!(
        reason.contains("the context is the same on all 3 rows"),
        "{reason}"
    );
    assert!(!net.is_initialized().unwrap());
    assert_eq!(fresh, values(&varmap), "a failed initialisation wrote");
    net.potential_with_context(&x, &t(&[0.3, -0.7, 1.1], 3).unwrap())
        .unwrap();
    assert!(net.is_initialized().unwrap());
}

/// A network's `is_initialized`, boxed.
type IsInitialized = Box<dyn Fn() -> bool>;

#[test]
fn conv_architectures_refuse_constant_and_non_finite_images() {
    let image = ImageShape::new(1, 4, 4);
    let d = image.dim();
    let varmap = VarMap::new();
    let mut rng = StdRng::seed_from_u64(8);
    let c1 = ConvIcnnConfig {
        image,
        width: 3,
        depth: 2,
        num_pooling: 0,
    };
    let c2 = ConvIcnn2Config {
        image,
        width: 4,
        depth: 2,
    };
    let c3 = ConvIcnn3Config {
        image,
        width: 4,
        depth: 2,
        ..Default::default()
    };
    let nets: Vec<(Box<dyn ConvexPotential>, IsInitialized)> = {
        let a = ConvIcnn::new(vb(&varmap).pp("a"), &c1, &mut rng).unwrap();
        let b = ConvIcnn2::new(vb(&varmap).pp("b"), &c2, &mut rng).unwrap();
        let c = ConvIcnn3::new(vb(&varmap).pp("c"), &c3, &mut rng).unwrap();
        let (a2, b2, c2) = (a.clone(), b.clone(), c.clone());
        vec![
            (Box::new(a), Box::new(move || a2.is_initialized().unwrap())),
            (Box::new(b), Box::new(move || b2.is_initialized().unwrap())),
            (Box::new(c), Box::new(move || c2.is_initialized().unwrap())),
        ]
    };
    let fresh = values(&varmap);
    let zeros = Tensor::zeros((2, d), DType::F64, &Device::Cpu).unwrap();
    let mut nan = vec![0.5f64; 2 * d];
    nan[5] = f64::NAN;
    let nan = Tensor::from_vec(nan, (2, d), &Device::Cpu).unwrap();
    let empty = Tensor::zeros((0, d), DType::F64, &Device::Cpu).unwrap();
    for (net, initialized) in &nets {
        // Zero images: the statistics would see only the zero padding's border effects.
        let (layer, reason) = init_error(net.potential(&zeros));
        assert_eq!(layer, "input");
        assert!(reason.contains("same value in each channel"), "{reason}");
        let (layer, _) = init_error(net.linearize(&nan));
        assert_eq!(layer, "input");
        init_error(net.potential(&empty));
        assert!(!initialized());
    }
    assert_eq!(fresh, values(&varmap), "a failed initialisation wrote");
    // One random image is enough: the statistics run over the batch and the pixels.
    for (net, initialized) in &nets {
        net.potential(&randn(&mut rng, (1, d), 1.0)).unwrap();
        assert!(initialized());
    }
}

#[test]
fn a_constant_unit_keeps_the_reference_scale_and_an_all_constant_batch_is_an_error() {
    let varmap = VarMap::new();
    let an = ActNorm::new(&vb(&varmap).pp("an"), 2).unwrap();
    assert_eq!(an.name(), "an");
    // Unit 1 is constant: the reference's logs = −ln(0 + 1e-6), a scale of 1e6 + 0.001.
    let x = Tensor::new(&[[1.0f64, 5.0], [2.0, 5.0], [4.0, 5.0]], &Device::Cpu).unwrap();
    an.initialize(&x).unwrap();
    let mean = 7.0 / 3.0;
    let std = ((1.0f64 - mean).powi(2) + (2.0 - mean).powi(2) + (4.0 - mean).powi(2)) / 3.0;
    let std = std.sqrt();
    let logs = flat(&an.logs);
    // A few roundings in the mean, variance, sqrt and log.
    assert!((logs[0] + (std + 1e-6).ln()).abs() < 1e-14, "{logs:?}");
    assert!((logs[1] + 1e-6f64.ln()).abs() < 1e-14, "{logs:?}");
    let b = flat(&an.b);
    assert!(
        (b[0] + mean).abs() < 1e-14 && (b[1] + 5.0).abs() < 1e-14,
        "{b:?}"
    );

    // Every unit constant (to rounding), or one row: an error that keeps b and logs.
    let other = ActNorm::new(&vb(&varmap).pp("other"), 2).unwrap();
    let same = Tensor::new(&[[1.0f64, 5.0], [1.0, 5.0]], &Device::Cpu).unwrap();
    let (layer, _) = init_error(other.initialize(&same));
    assert_eq!(layer, "other");
    let one = Tensor::new(&[[1.0f64, 5.0]], &Device::Cpu).unwrap();
    init_error(other.initialize(&one));
    let nan = Tensor::new(&[[1.0f64, 5.0], [f64::NAN, 1.0]], &Device::Cpu).unwrap();
    init_error(other.initialize(&nan));
    assert_eq!(flat(&other.b), vec![0.0, 0.0]);
    assert_eq!(flat(&other.logs), vec![0.0, 0.0]);
    assert!(matches!(
        other.initialize(&Tensor::zeros((3, 3), DType::F64, &Device::Cpu).unwrap()),
        Err(IcnnError::Shape(_))
    ));
}
