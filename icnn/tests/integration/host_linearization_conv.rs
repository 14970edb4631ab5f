//! The host-kernel linearisation ([`icnn::HostLinearization`]) of the convolutional ICNNs
//! against the composed candle recursions (`host_check`): every conv architecture on 1×4×4,
//! 3×4×4 and 2×4×5 images (stride-2 pooling included), f64; the Hessian built from host
//! products equals the composed one; f32 agrees with f64 to single precision.

use crate::conv_common::{BATCH, all_cases, build, named_vars, randn};
use crate::host_check::{Inputs, check_host_against_composed};
use candle_core::{DType, Tensor};
use icnn::ImageShape;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn images() -> Vec<ImageShape> {
    vec![
        ImageShape::new(1, 4, 4),
        ImageShape::new(3, 4, 4),
        ImageShape::new(2, 4, 5),
    ]
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

#[test]
fn conv_host_linearization_matches_composed_recursions_and_their_gradients() {
    let mut rng = StdRng::seed_from_u64(12);
    let mut covered = 0;
    for case in all_cases(&images(), 3) {
        let net = case.net.as_ref();
        let d = case.image.dim();
        let inputs = Inputs::draw(BATCH, d, |shape| randn(&mut rng, shape, 1.0));
        let host = net
            .host_linearize(&inputs.x)
            .unwrap()
            .unwrap_or_else(|| panic!("{}: declined", case.name));
        covered += 1;
        let vars = named_vars(&case.varmap);
        let nonzero = check_host_against_composed(&case.name, net, &host, &vars, &inputs, 1e-12);
        // Every kernel and bias of a network reaches J (the last layer's unused ActNorm of the
        // reference's ConvICNN aside): at least half the variables.
        assert!(
            2 * nonzero >= vars.len(),
            "{}: only {nonzero} of {} nonzero",
            case.name,
            vars.len()
        );

        // The Hessian from host products equals the composed one.
        let hh = flat(&host.hessian().unwrap());
        let hc = flat(&net.linearize(&inputs.x).unwrap().hessian().unwrap());
        let diff: Vec<f64> = hh.iter().zip(&hc).map(|(a, b)| a - b).collect();
        assert!(
            max_abs(&diff) <= 1e-12 * max_abs(&hc).max(1.0),
            "{}: Hessian",
            case.name
        );
    }
    assert_eq!(covered, 15);
}

/// f32 runs in f32 and agrees with f64 to single precision (the same parameters).
#[test]
fn conv_host_linearization_f32_agrees_with_f64() {
    let image = ImageShape::new(2, 4, 4);
    let arch = crate::conv_common::ARCHS[0];
    let (vm64, net64) = build(arch, image, DType::F64, 7);
    let (vm32, net32) = build(arch, image, DType::F32, 7);
    let mut rng = StdRng::seed_from_u64(8);
    let d = image.dim();
    let x = randn(&mut rng, (BATCH, d), 1.0);
    net64.potential(&x).unwrap();
    // Copy every f64 variable (flags included) into the f32 network.
    let src = vm64.data().lock().unwrap();
    for (name, var) in vm32.data().lock().unwrap().iter() {
        var.set(&src[name].as_tensor().to_dtype(DType::F32).unwrap())
            .unwrap();
    }
    let (u, v) = (
        randn(&mut rng, (BATCH, d), 1.0),
        randn(&mut rng, (BATCH, d), 1.0),
    );
    let f32t = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let h64 = net64.host_linearize(&x).unwrap().unwrap();
    let h32 = net32.host_linearize(&f32t(&x)).unwrap().unwrap();
    let (g64, q64) = h64.gradient_and_bilinear(&u, &v).unwrap();
    let (g32, q32) = h32.gradient_and_bilinear(&f32t(&u), &f32t(&v)).unwrap();
    assert_eq!(g32.dtype(), DType::F32);
    let up = |t: &Tensor| flat(&t.to_dtype(DType::F64).unwrap());
    for (a, b, what) in [
        (up(&g32), flat(&g64), "gradient"),
        (up(&q32), flat(&q64), "bilinear"),
    ] {
        let diff: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        assert!(max_abs(&diff) <= 1e-4 * max_abs(&b).max(1.0), "f32 {what}");
    }
}

/// A ConvICNN of `width` against the composed recursions, on 2×4×5 images.
fn check_wide_conv_icnn(width: usize, seed: u64) {
    let image = ImageShape::new(2, 4, 5);
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F64, &candle_core::Device::Cpu);
    let mut rng = StdRng::seed_from_u64(seed);
    let cfg = icnn::ConvIcnnConfig {
        image,
        width,
        depth: 3,
        num_pooling: 0,
    };
    let net = icnn::ConvIcnn::new(vb.pp("icnn"), &cfg, &mut rng).unwrap();
    let d = image.dim();
    icnn::ConvexPotential::potential(&net, &randn(&mut rng, (8, d), 1.0)).unwrap();
    crate::conv_common::perturb(&varmap, &mut rng, 0.2);
    let inputs = Inputs::draw(BATCH, d, |shape| randn(&mut rng, shape, 1.0));
    let host = icnn::ConvexPotential::host_linearize(&net, &inputs.x)
        .unwrap()
        .unwrap();
    let vars = named_vars(&varmap);
    let name = format!("ConvIcnn width {width}");
    let nonzero = check_host_against_composed(&name, &net, &host, &vars, &inputs, 1e-12);
    assert!(2 * nonzero >= vars.len());
}

/// Width 16: the hidden 3×3 layers take the shifted products, the first layer the gathered
/// one.
#[test]
fn wide_conv_host_linearization_matches_composed_recursions() {
    check_wide_conv_icnn(16, 21);
}

/// Width 32: the hidden 3×3 layers take the Winograd `F(4×4, 3×3)` products (forward,
/// adjoint and kernel gradient), on images that are not a multiple of the 4×4 tiles.
#[test]
fn winograd_conv_host_linearization_matches_composed_recursions() {
    check_wide_conv_icnn(32, 22);
}
