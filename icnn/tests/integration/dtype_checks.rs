//! Directions and contexts of another dtype than the network's: a shape error that names both
//! dtypes, checked before candle sees them (it would say "dtype mismatch in matmul").

use crate::common::randn;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use icnn::{
    ConditionalConvexPotential, ConvIcnn2, ConvIcnn2Config, ConvexPotential, Icnn2, Icnn2Config,
    IcnnError, ImageShape, Picnn, PicnnConfig,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The message of an [`IcnnError::Shape`]; panics on anything else.
fn shape_error<T: std::fmt::Debug>(r: icnn::Result<T>) -> String {
    match r {
        Err(IcnnError::Shape(m)) => m,
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn hvp_directions_of_the_other_dtype_are_shape_errors() {
    let mut rng = StdRng::seed_from_u64(1);
    let x = randn(&mut rng, (4, 3), 1.0);
    for dtype in [DType::F64, DType::F32] {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let cfg = Icnn2Config {
            dim: 3,
            width: 5,
            depth: 2,
            ..Default::default()
        };
        let net = Icnn2::new(vb.pp("icnn"), &cfg, &mut StdRng::seed_from_u64(2)).unwrap();
        let lin = net.linearize(&x.to_dtype(dtype).unwrap()).unwrap();
        let other = if dtype == DType::F64 {
            DType::F32
        } else {
            DType::F64
        };
        let v = Tensor::ones((4, 3), other, &Device::Cpu).unwrap();
        let m = shape_error(lin.hvp(&v));
        assert!(
            m.contains(&format!("(4, 3) {dtype:?}")) && m.contains(&format!("{other:?}")),
            "{m}"
        );
        let vk = Tensor::ones((4, 2, 3), other, &Device::Cpu).unwrap();
        let m = shape_error(lin.hvp_many(&vk));
        assert!(m.contains(&format!("{other:?}")), "{m}");
        // The right dtype still works.
        lin.hvp(&v.to_dtype(dtype).unwrap()).unwrap();
    }

    // The conv linearisation shares the check.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let image = ImageShape::new(1, 3, 3);
    let cfg = ConvIcnn2Config {
        image,
        width: 2,
        depth: 2,
    };
    let net = ConvIcnn2::new(vb.pp("conv"), &cfg, &mut StdRng::seed_from_u64(3)).unwrap();
    let lin = net.linearize(&randn(&mut rng, (2, 9), 1.0)).unwrap();
    let v = Tensor::ones((2, 9), DType::F32, &Device::Cpu).unwrap();
    assert!(shape_error(lin.hvp(&v)).contains("F32"));
}

#[test]
fn picnn_contexts_of_the_other_dtype_are_shape_errors() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let cfg = PicnnConfig {
        dim: 2,
        context_dim: 2,
        width: 4,
        depth: 2,
        ..Default::default()
    };
    let net = Picnn::new(vb.pp("picnn"), &cfg, &mut StdRng::seed_from_u64(4)).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let (x, c) = (randn(&mut rng, (3, 2), 1.0), randn(&mut rng, (3, 2), 1.0));
    let c32 = c.to_dtype(DType::F32).unwrap();
    // Before the initialisation (the automatic init would meet it first) and after.
    let m = shape_error(net.potential_with_context(&x, &c32));
    assert!(
        m.contains("context") && m.contains("F64") && m.contains("F32"),
        "{m}"
    );
    assert!(!net.is_initialized().unwrap());
    net.potential_with_context(&x, &c).unwrap();
    shape_error(net.linearize_with_context(&x, &c32));
    shape_error(net.initialize(&x, &c32));
}

/// The public activations refuse a tensor of integers with a shape error naming its dtype.
/// `softplus` and `Activation::{eval, value, first_derivative, …}` on a `U32` tensor used
/// to panic inside candle ("not yet implemented: no unary function for u32").
#[test]
fn activations_of_integer_tensors_are_shape_errors() {
    use icnn::{Activation, ActivationKind, softplus};
    for dtype in [DType::U8, DType::U32, DType::I64] {
        let x = Tensor::new(&[[1.0f64, -2.0]], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let m = shape_error(softplus(&x));
        assert!(
            m.contains("softplus") && m.contains(&format!("{dtype:?}")),
            "{m}"
        );
        for kind in [ActivationKind::Softplus, ActivationKind::GaussianSoftplus] {
            let act = Activation::new(kind);
            for r in [
                act.value(&x),
                act.first_derivative(&x),
                act.second_derivative(&x),
                act.eval_composed(&x, true).map(|e| e.value),
            ] {
                let m = shape_error(r);
                assert!(m.contains(&format!("{dtype:?}")), "{m}");
            }
        }
    }
    // Float tensors are unchanged: softplus(0) = ln 2.
    let zero = Tensor::new(&[0.0f32], &Device::Cpu).unwrap();
    let y = softplus(&zero).unwrap().to_vec1::<f32>().unwrap();
    assert!((y[0] - std::f32::consts::LN_2).abs() < 1e-7);
}
