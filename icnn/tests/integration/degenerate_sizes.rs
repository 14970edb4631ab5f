//! Degenerate sizes that used to get through the checks: an empty (`k = 0`) kernel given to
//! the public gemm convolutions (the transposed ones fell back to candle, whose
//! `dilation·(k − 1)` overflowed: a panic with overflow checks, a wrapped size without), a
//! conv layer with kernel size or stride 0, a positive layer with no inputs (its effective
//! parameters divide by `n_in = 0`: a bias became ±∞ or NaN), and an ActNorm whose `b` or
//! `logs` was replaced by a tensor of another size or dtype (candle's reshape error). Each is
//! now an `IcnnError::Shape` naming the operation or the layer; the meaningful degenerate
//! cases (a plain `Linear` or `Conv2d` with no inputs: the output is the bias) still work.

use std::sync::Arc;

use candle_core::{CpuStorage, DType, Device, Shape, Tensor};
use candle_nn::{VarBuilder, VarMap};
use icnn::gemm_conv::{
    ConvHead, conv_transpose2d_gemm_biased, conv2d_gemm_biased, conv2d_gemm_headed,
    gated_conv_transpose2d_gemm, gated_conv2d_gemm,
};
use icnn::{
    ActNorm, Conv2d, ConvGeometry, IcnnError, Linear, PosConv2d, PosLinear, conv_transpose2d_gemm,
    conv2d_gemm,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::common::{filled, shape_error, starts_and_names as names};

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// A head that is never reached: the geometry check comes first.
#[derive(Debug)]
struct Unreachable;

impl ConvHead for Unreachable {
    fn name(&self) -> &'static str {
        "unreachable"
    }
    fn composed(&self, _: &Tensor) -> candle_core::Result<Tensor> {
        candle_core::bail!("the head ran")
    }
    fn forward(&self, _: &CpuStorage, _: [usize; 4]) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the head ran")
    }
    fn backward(
        &self,
        _: &CpuStorage,
        _: [usize; 4],
        _: &Tensor,
        _: &Tensor,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("the head ran")
    }
}

/// Every public gemm convolution refuses a kernel with an empty axis, before any fallback:
/// `conv_transpose2d_gemm(ones (1,1,2,2), zeros (1,1,0,0), 0, 0, 1)` fell back to candle's
/// `conv_transpose2d` (the kernel has no elements), whose output size `dilation·(k_h − 1)`
/// overflowed (a panic here, with overflow checks); the convolutions reported "more elements
/// than memory can hold". The same in f32, f64 and f16 (candle's own path), and for a
/// non-empty input too.
#[test]
fn gemm_convolutions_refuse_an_empty_kernel() {
    // The reviewer's repro, verbatim.
    let ones = Tensor::ones((1, 1, 2, 2), DType::F64, &Device::Cpu).unwrap();
    let empty = Tensor::zeros((1, 1, 0, 0), DType::F64, &Device::Cpu).unwrap();
    shape_error("repro", conv_transpose2d_gemm(&ones, &empty, 0, 0, 1));
    for dtype in [DType::F64, DType::F32, DType::F16] {
        let x = Tensor::ones((1, 2, 2, 2), dtype, &Device::Cpu).unwrap();
        for (kh, kw) in [(0, 0), (0, 2), (2, 0)] {
            let given = format!("{kh}×{kw}");
            // Convolutions: kernel (C_out, C_in, kh, kw), two output channels for the gate.
            let k = Tensor::zeros((2, 2, kh, kw), dtype, &Device::Cpu).unwrap();
            let b = Tensor::zeros(2, dtype, &Device::Cpu).unwrap();
            let want = ["kernel", "must not be empty", given.as_str()];
            let m = shape_error("conv2d_gemm", conv2d_gemm(&x, &k, 0, 1));
            names(&m, "conv2d_gemm: ", &want);
            let m = shape_error("biased", conv2d_gemm_biased(&x, &k, &b, 1, 1));
            names(&m, "conv2d_gemm_biased: ", &want);
            let m = shape_error("gated", gated_conv2d_gemm(&x, &k, &b, 0, 2));
            names(&m, "gated_conv2d_gemm: ", &want);
            let head = conv2d_gemm_headed(&x, &k, &b, 0, 1, Arc::new(Unreachable));
            names(&shape_error("headed", head), "conv2d_gemm_headed: ", &want);
            // Transposed: kernel (C_in, C_out, kh, kw); every size positive but the kernel's.
            let m = shape_error("transposed", conv_transpose2d_gemm(&x, &k, 0, 0, 1));
            names(&m, "conv_transpose2d_gemm: ", &want);
            let m = shape_error(
                "transposed biased",
                conv_transpose2d_gemm_biased(&x, &k, &b, 0, 1, 2),
            );
            names(&m, "conv_transpose2d_gemm_biased: ", &want);
            let m = shape_error(
                "gated transposed",
                gated_conv_transpose2d_gemm(&x, &k, &b, 0, 0, 1),
            );
            names(&m, "gated_conv_transpose2d_gemm: ", &want);
        }
    }
    // Stride 0 stays a configuration error, also with an empty kernel.
    assert!(matches!(
        conv_transpose2d_gemm(&ones, &empty, 0, 0, 0),
        Err(IcnnError::InvalidConfig(_))
    ));
}

/// A conv layer with kernel size 0 (weight `(out, in, 0, 0)`) or stride 0 is refused by
/// `from_tensors`, by `new`, and, put in by hand, by `forward` and the effective parameters,
/// with a shape error naming the layer and the size. Before, `validate` accepted both: the
/// forward of kernel 0 failed with "more elements than memory can hold", stride 0 with an
/// `InvalidConfig` that named no layer.
#[test]
fn conv_layers_refuse_kernel_and_stride_zero() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let mut rng = StdRng::seed_from_u64(0);
    let images = filled(&[1, 2, 5, 5], DType::F64);
    let empty = ConvGeometry {
        kernel: 0,
        stride: 1,
        padding: 1,
    };
    let still = ConvGeometry {
        stride: 0,
        ..ConvGeometry::SAME_3X3
    };
    let w0 = filled(&[3, 2, 0, 0], DType::F64);
    let w3 = filled(&[3, 2, 3, 3], DType::F64);
    let bias = Some(filled(&[3], DType::F64));
    for (what, w, g, piece) in [
        ("kernel 0", &w0, empty, "0×0, stride 1"),
        ("stride 0", &w3, still, "3×3, stride 0"),
    ] {
        let want = ["kernel size and stride must be positive", piece];
        let m = shape_error(what, Conv2d::from_tensors("c", w.clone(), bias.clone(), g));
        names(
            &m,
            "Conv2d (2 → 3 channels, ",
            &["at `c`: ", want[0], want[1]],
        );
        let m = shape_error(what, PosConv2d::from_tensors("p", w.clone(), None, g));
        names(
            &m,
            "PosConv2d (2 → 3 channels, ",
            &["at `p`: ", want[0], want[1]],
        );
        let m = shape_error(what, Conv2d::new(&vb.pp("n"), 2, 3, g, true, &mut rng));
        names(&m, "Conv2d", &["at `n`: ", want[0]]);
        let m = shape_error(what, PosConv2d::new(&vb.pp("m"), 2, 3, g, true, &mut rng));
        names(&m, "PosConv2d", &["at `m`: ", want[0]]);

        let same = ConvGeometry::SAME_3X3;
        let mut conv = Conv2d::new(&vb.pp("byhand"), 2, 3, same, true, &mut rng).unwrap();
        (conv.weight, conv.geometry) = (w.clone(), g);
        names(&shape_error(what, conv.validate()), "Conv2d", &want);
        names(&shape_error(what, conv.forward(&images)), "Conv2d", &want);
        let mut pos = PosConv2d::new(&vb.pp("pbyhand"), 2, 3, same, true, &mut rng).unwrap();
        (pos.weight, pos.geometry) = (w.clone(), g);
        names(&shape_error(what, pos.forward(&images)), "PosConv2d", &want);
        names(
            &shape_error(what, pos.effective_weight()),
            "PosConv2d",
            &want,
        );
        names(&shape_error(what, pos.effective_bias()), "PosConv2d", &want);
    }
}

/// A positive layer with no inputs has no effective parameters (`softplus(W)/n_in`,
/// `b/n_in` divide by 0: its bias was ±∞, or NaN for a zero bias, with no error); refused
/// by `from_tensors`, `new`, `forward` and the effective parameters. A plain `Linear` or
/// `Conv2d` with no inputs stays allowed: its output is its bias.
#[test]
fn positive_layers_without_inputs_are_refused_plain_ones_give_their_bias() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let mut rng = StdRng::seed_from_u64(1);
    let none = filled(&[2, 0], DType::F64);
    let bias = filled(&[2], DType::F64);
    let want = ["no inputs", "divide"];
    let m = shape_error(
        "from_tensors",
        PosLinear::from_tensors("p", none.clone(), Some(bias.clone())),
    );
    names(&m, "PosLinear (0 → 2) at `p`: ", &want);
    let m = shape_error("no bias", PosLinear::from_tensors("p", none.clone(), None));
    names(&m, "PosLinear (0 → 2) at `p`: ", &want);
    let m = shape_error("new", PosLinear::new(&vb.pp("q"), 0, 2, true, &mut rng));
    names(&m, "PosLinear (0 → 2) at `q`: ", &want);
    let mut pos = PosLinear::new(&vb.pp("r"), 3, 2, true, &mut rng).unwrap();
    pos.weight = none.clone();
    let rows = filled(&[4, 0], DType::F64);
    names(
        &shape_error("bias", pos.effective_bias()),
        "PosLinear",
        &want,
    );
    names(
        &shape_error("weight", pos.effective_weight()),
        "PosLinear",
        &want,
    );
    names(
        &shape_error("forward", pos.forward(&rows)),
        "PosLinear",
        &want,
    );

    // Plain Linear with no inputs: every row is the bias.
    let lin = Linear::from_tensors("l", none, Some(bias.clone())).unwrap();
    let y = lin.forward(&rows).unwrap();
    assert_eq!(y.dims(), &[4, 2]);
    assert_eq!(
        values(&y),
        [values(&bias), values(&bias), values(&bias), values(&bias)].concat()
    );

    let g = ConvGeometry::SAME_3X3;
    let w = filled(&[2, 0, 3, 3], DType::F64);
    let m = shape_error(
        "conv",
        PosConv2d::from_tensors("pc", w.clone(), Some(bias.clone()), g),
    );
    names(
        &m,
        "PosConv2d (0 → 2 channels, 3×3, stride 1, padding 1) at `pc`: ",
        &want,
    );
    let m = shape_error(
        "conv new",
        PosConv2d::new(&vb.pp("pn"), 0, 2, g, false, &mut rng),
    );
    names(&m, "PosConv2d (0 → 2 channels", &want);
    let mut pc = PosConv2d::new(&vb.pp("ph"), 1, 2, g, true, &mut rng).unwrap();
    pc.weight = w.clone();
    names(
        &shape_error("conv bias", pc.effective_bias()),
        "PosConv2d",
        &want,
    );

    // Plain Conv2d with no input channels: every pixel of channel j is b_j.
    let conv = Conv2d::from_tensors("c", w, Some(bias.clone()), g).unwrap();
    let y = conv.forward(&filled(&[1, 0, 2, 3], DType::F64)).unwrap();
    assert_eq!(y.dims(), &[1, 2, 2, 3]);
    let b = values(&bias);
    assert_eq!(values(&y), [vec![b[0]; 6], vec![b[1]; 6]].concat());
    // fan_in is n_in·k·k from the weight's dims, also for a layer with no outputs.
    let wide = PosConv2d::from_tensors("", filled(&[0, 2, 3, 3], DType::F64), None, g).unwrap();
    assert_eq!(wide.fan_in(), 18);
}

/// An ActNorm whose `b` or `logs` was replaced by a tensor of another size, rank, dtype or
/// device is refused by `validate`, `forward`, `shift`/`scale` and `initialize` with a shape
/// error naming the layer (it was candle's reshape or broadcast error from `scale`, or the
/// initialisation's write), and `initialize` writes nothing.
#[test]
fn actnorm_refuses_replaced_parameters() {
    for dtype in [DType::F64, DType::F32] {
        let other = if dtype == DType::F64 {
            DType::F32
        } else {
            DType::F64
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let x = filled(&[5, 3], dtype);
        let good = ActNorm::new(&vb.pp("good"), 3).unwrap();
        good.validate().unwrap();
        good.forward(&x).unwrap();
        for (field, bad, pieces) in [
            (
                "logs",
                filled(&[1, 4, 1], dtype),
                &["logs", "(1, 3, 1)", "[1, 4, 1]"][..],
            ),
            ("logs", filled(&[3], dtype), &["logs", "(1, 3, 1)", "[3]"]),
            (
                "logs",
                filled(&[1, 3, 1], other),
                &["logs", &format!("{other:?}")],
            ),
            (
                "logs",
                filled(&[1, 3, 1], dtype).to_dtype(DType::U32).unwrap(),
                &["logs", "U32"],
            ),
            (
                "b",
                filled(&[1, 3, 1], dtype).to_dtype(DType::U32).unwrap(),
                &["b", "floating-point", "U32"],
            ),
        ] {
            let what = format!("{field} {dtype:?} {bad:?}");
            let mut an = ActNorm::new(&vb.pp("an"), 3).unwrap();
            let before = values(&an.b);
            match field {
                "logs" => an.logs = bad,
                _ => an.b = bad,
            }
            let label = "ActNorm (3 features) at `an`: ";
            names(&shape_error(&what, an.validate()), label, pieces);
            names(&shape_error(&what, an.forward(&x)), label, pieces);
            names(&shape_error(&what, an.scale()), label, pieces);
            names(&shape_error(&what, an.shift()), label, pieces);
            names(&shape_error(&what, an.initialize(&x)), label, pieces);
            if field == "logs" {
                assert_eq!(values(&an.b), before, "{what}: initialize wrote b");
            }
        }
    }
}
