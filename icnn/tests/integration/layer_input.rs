//! The public layers (`Linear`, `PosLinear`, `ActNorm`, `Conv2d`, `PosConv2d`) and the public
//! convolutions check their input before candle sees it: a wrong feature (channel) count, a
//! wrong rank or another dtype is an `IcnnError::Shape` naming the layer and the expected and
//! given shapes, not candle's "shape mismatch in matmul" / "dtype mismatch" (`Candle`).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use icnn::{ActNorm, Conv2d, ConvGeometry, Linear, PosConv2d, PosLinear, gemm_conv};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::common::{filled, shape_error};

/// Asserts that `m` names the layer, the expected shape and every piece of `given`.
fn names(m: &str, layer: &str, expected: &str, given: &[&str]) {
    assert!(m.starts_with(layer), "{m:?} does not start with {layer:?}");
    assert!(m.contains(expected), "{m:?} does not name {expected:?}");
    for g in given {
        assert!(m.contains(g), "{m:?} does not name {g:?}");
    }
}

fn other(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F32
    } else {
        DType::F64
    }
}

/// The three bad row inputs of a layer of `n` features and parameters of `dtype`, with what the
/// message must say about each: wrong feature count, wrong rank (1 and 3), other dtype.
fn bad_rows(n: usize, dtype: DType) -> Vec<(Tensor, Vec<String>)> {
    let o = other(dtype);
    vec![
        (filled(&[4, n + 2], dtype), vec![format!("[4, {}]", n + 2)]),
        (filled(&[n], dtype), vec![format!("[{n}]")]),
        (filled(&[2, 4, n], dtype), vec![format!("[2, 4, {n}]")]),
        (
            filled(&[4, n], o),
            vec![format!("[4, {n}]"), format!("{o:?}"), format!("{dtype:?}")],
        ),
    ]
}

#[test]
fn linear_layers_refuse_wrong_rows_with_a_shape_error_naming_the_layer() {
    for dtype in [DType::F64, DType::F32] {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let mut rng = StdRng::seed_from_u64(0);
        let lin = Linear::new(&vb.pp("lin"), 3, 2, true, &mut rng).unwrap();
        let pos = PosLinear::new(&vb.pp("pos"), 3, 2, true, &mut rng).unwrap();
        for (x, given) in bad_rows(3, dtype) {
            let given: Vec<&str> = given.iter().map(String::as_str).collect();
            let m = shape_error("Linear", lin.forward(&x));
            names(&m, "Linear (3 → 2)", "(B, 3)", &given);
            let m = shape_error("PosLinear", pos.forward(&x));
            names(&m, "PosLinear (3 → 2)", "(B, 3)", &given);
        }
        // Valid input: unchanged, `x Wᵀ + b` bit for bit.
        let x = filled(&[4, 3], dtype);
        let want = x
            .matmul(&lin.weight.t().unwrap())
            .unwrap()
            .broadcast_add(lin.bias.as_ref().unwrap())
            .unwrap();
        let diff = (lin.forward(&x).unwrap() - want).unwrap();
        let max = diff.abs().unwrap().max_all().unwrap();
        assert_eq!(
            max.to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap(),
            0.0
        );
        assert_eq!(pos.forward(&x).unwrap().dims(), &[4, 2]);
        // An empty batch is still a batch.
        assert_eq!(
            lin.forward(&filled(&[0, 3], dtype)).unwrap().dims(),
            &[0, 2]
        );
    }
}

#[test]
fn actnorm_forward_and_initialize_refuse_wrong_rows_and_write_nothing() {
    for dtype in [DType::F64, DType::F32] {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let an = ActNorm::new(&vb.pp("an"), 3).unwrap();
        for (x, given) in bad_rows(3, dtype) {
            let given: Vec<&str> = given.iter().map(String::as_str).collect();
            let m = shape_error("ActNorm::forward", an.forward(&x));
            names(&m, "ActNorm (3 features) at `an`", "(B, 3)", &given);
            let m = shape_error("ActNorm::initialize", an.initialize(&x));
            names(&m, "ActNorm (3 features) at `an`", "(B, 3)", &given);
        }
        // Nothing was written: still the zero init (b = 0, logs = 0).
        for p in [&an.b, &an.logs] {
            let v = p.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
            assert_eq!(v.to_vec1::<f64>().unwrap(), vec![0.0; 3]);
        }
        let x = filled(&[5, 3], dtype);
        an.initialize(&x).unwrap();
        assert_eq!(an.forward(&x).unwrap().dims(), &[5, 3]);
    }
}

#[test]
fn conv_layers_refuse_wrong_images_with_a_shape_error_naming_the_layer() {
    let strided = ConvGeometry {
        kernel: 3,
        stride: 2,
        padding: 0,
    };
    for dtype in [DType::F64, DType::F32] {
        let o = other(dtype);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let mut rng = StdRng::seed_from_u64(1);
        let same = ConvGeometry::SAME_3X3;
        let conv = Conv2d::new(&vb.pp("conv"), 2, 3, same, true, &mut rng).unwrap();
        let pos = PosConv2d::new(&vb.pp("pos"), 2, 3, strided, true, &mut rng).unwrap();
        let dt = format!("{dtype:?}");
        let ot = format!("{o:?}");
        let cases = [
            (filled(&[1, 3, 5, 5], dtype), vec!["[1, 3, 5, 5]"]),
            (filled(&[2, 5, 5], dtype), vec!["[2, 5, 5]"]),
            (filled(&[1, 2, 5, 5, 1], dtype), vec!["[1, 2, 5, 5, 1]"]),
            (filled(&[1, 2, 5, 5], o), vec!["[1, 2, 5, 5]", &dt, &ot]),
        ];
        for (x, given) in &cases {
            let m = shape_error("Conv2d", conv.forward(x));
            let layer = "Conv2d (2 → 3 channels, 3×3, stride 1, padding 1)";
            names(&m, layer, "(B, 2, H, W)", given);
            let m = shape_error("PosConv2d", pos.forward(x));
            let layer = "PosConv2d (2 → 3 channels, 3×3, stride 2, padding 0)";
            names(&m, layer, "(B, 2, H, W) with H, W ≥ 3", given);
        }
        // An image smaller than the unpadded kernel (was `InvalidConfig` from the geometry).
        let m = shape_error("PosConv2d", pos.forward(&filled(&[1, 2, 2, 4], dtype)));
        names(&m, "PosConv2d", "H, W ≥ 3", &["[1, 2, 2, 4]"]);
        // Valid images: the output shapes of the geometry.
        let x = filled(&[2, 2, 5, 5], dtype);
        assert_eq!(conv.forward(&x).unwrap().dims(), &[2, 3, 5, 5]);
        assert_eq!(pos.forward(&x).unwrap().dims(), &[2, 3, 2, 2]);
    }
}

#[test]
fn public_convolutions_refuse_a_kernel_or_bias_of_another_dtype() {
    let x = filled(&[1, 2, 5, 5], DType::F32);
    let k = filled(&[3, 2, 3, 3], DType::F64);
    let m = shape_error("conv2d_gemm", gemm_conv::conv2d_gemm(&x, &k, 1, 1));
    names(&m, "conv2d_gemm", "F32", &["kernel is F64"]);
    let kt = filled(&[2, 3, 3, 3], DType::F64);
    let r = gemm_conv::conv_transpose2d_gemm(&x, &kt, 0, 0, 1);
    names(
        &shape_error("conv_transpose2d_gemm", r),
        "conv_transpose2d_gemm",
        "F32",
        &["F64"],
    );
    let k32 = k.to_dtype(DType::F32).unwrap();
    let b64 = filled(&[3], DType::F64);
    let r = gemm_conv::conv2d_gemm_biased(&x, &k32, &b64, 1, 1);
    names(
        &shape_error("biased", r),
        "conv2d_gemm_biased",
        "F32",
        &["bias is F64"],
    );
    let y = filled(&[1, 3, 5, 5], DType::F32);
    let r = gemm_conv::add_channel_bias(&y, &b64);
    names(
        &shape_error("bias", r),
        "add_channel_bias",
        "F32",
        &["bias is F64"],
    );
    // The same operands in one dtype still work.
    let b32 = b64.to_dtype(DType::F32).unwrap();
    gemm_conv::conv2d_gemm_biased(&x, &k32, &b32, 1, 1).unwrap();
}
