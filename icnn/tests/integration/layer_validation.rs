//! The public layers' own tensors (`Linear`, `PosLinear`, `Conv2d`, `PosConv2d`; `ActNorm`'s
//! size): a weight of another rank or kernel size, or a bias whose shape or dtype does not
//! agree with the weight, whether given to `from_tensors` or put into the public fields by
//! hand, is an `IcnnError::Shape` naming the layer and the expected and given shapes — never a
//! panic in `n_in()`/`n_out()`/`features()` (they indexed the weight's dims unchecked). And
//! the input checks name a layer built under a `VarBuilder` prefix by that prefix.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use icnn::{ActNorm, Conv2d, ConvGeometry, IcnnError, Linear, PosConv2d, PosLinear};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::common::{filled, shape_error, starts_and_names as names};

/// Largest `|a − b|` of two tensors of the same shape, in f64.
fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// A weight of another rank put into the public field: the sizes are 0 (they panicked with
/// "index out of bounds"), and `forward` and the effective parameters refuse the layer with a
/// shape error naming it and the expected weight shape.
#[test]
fn a_weight_of_another_rank_put_in_by_hand_is_refused_not_a_panic() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let mut rng = StdRng::seed_from_u64(0);
    let x = filled(&[4, 3], DType::F64);
    for bad in [&[6][..], &[1, 2, 3]] {
        let given = format!("{bad:?}");
        let mut lin = Linear::new(&vb.pp("lin"), 3, 2, true, &mut rng).unwrap();
        lin.weight = filled(bad, DType::F64);
        assert_eq!((lin.n_in(), lin.n_out()), (0, 0));
        let m = shape_error("Linear", lin.forward(&x));
        names(&m, "Linear at `lin`: ", &["(out, in)", "rank 2", &given]);
        assert!(matches!(lin.validate(), Err(IcnnError::Shape(_))));

        let mut pos = PosLinear::new(&vb.pp("pos"), 3, 2, true, &mut rng).unwrap();
        pos.weight = filled(bad, DType::F64);
        assert_eq!((pos.n_in(), pos.n_out()), (0, 0));
        let m = shape_error("PosLinear", pos.forward(&x));
        names(&m, "PosLinear at `pos`: ", &["(out, in)", &given]);
        shape_error("effective_weight", pos.effective_weight());
        shape_error("effective_bias", pos.effective_bias());
    }
    let images = filled(&[1, 2, 5, 5], DType::F64);
    let same = ConvGeometry::SAME_3X3;
    for bad in [&[6][..], &[3, 18], &[3, 2, 3, 3, 1]] {
        let given = format!("{bad:?}");
        let mut conv = Conv2d::new(&vb.pp("conv"), 2, 3, same, true, &mut rng).unwrap();
        conv.weight = filled(bad, DType::F64);
        assert_eq!((conv.n_in(), conv.n_out()), (0, 0));
        let m = shape_error("Conv2d", conv.forward(&images));
        names(
            &m,
            "Conv2d at `conv`: ",
            &["(out, in, 3, 3)", "rank 4", &given],
        );

        let mut pos = PosConv2d::new(&vb.pp("pc"), 2, 3, same, true, &mut rng).unwrap();
        pos.weight = filled(bad, DType::F64);
        assert_eq!((pos.n_in(), pos.n_out()), (0, 0));
        let m = shape_error("PosConv2d", pos.forward(&images));
        names(&m, "PosConv2d at `pc`: ", &["(out, in, 3, 3)", &given]);
        shape_error("effective_weight", pos.effective_weight());
    }
    // ActNorm's size read `b.dims()[1]` the same way.
    let mut an = ActNorm::new(&vb.pp("an"), 3).unwrap();
    an.b = filled(&[3], DType::F64);
    assert_eq!(an.features(), 0);
    assert!(an.forward(&x).is_err());
}

/// A geometry whose kernel is not the weight's: a shape error, not a convolution with the
/// weight's kernel under the geometry's output size (or candle's error).
#[test]
fn a_conv_geometry_that_does_not_match_the_kernel_is_refused() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let mut rng = StdRng::seed_from_u64(1);
    let images = filled(&[1, 2, 6, 6], DType::F64);
    let five = ConvGeometry {
        kernel: 5,
        stride: 1,
        padding: 2,
    };
    let mut conv = Conv2d::new(&vb.pp("c"), 2, 3, ConvGeometry::SAME_3X3, false, &mut rng).unwrap();
    conv.geometry = five;
    let m = shape_error("Conv2d", conv.forward(&images));
    names(&m, "Conv2d at `c`: ", &["(out, in, 5, 5)", "[3, 2, 3, 3]"]);
    let mut pos =
        PosConv2d::new(&vb.pp("p"), 2, 3, ConvGeometry::SAME_3X3, true, &mut rng).unwrap();
    pos.geometry = five;
    let m = shape_error("PosConv2d", pos.forward(&images));
    names(
        &m,
        "PosConv2d at `p`: ",
        &["(out, in, 5, 5)", "[3, 2, 3, 3]"],
    );
}

/// A bias of the wrong length or of another dtype than the weight, put in by hand: a shape
/// error that names the layer with its sizes and the expected bias (it was candle's broadcast
/// or dtype error, `IcnnError::Candle`, or for the convolutions a message of the internal
/// `add_channel_bias` that does not name the layer).
#[test]
fn a_bias_that_does_not_agree_with_the_weight_is_refused() {
    for dtype in [DType::F64, DType::F32] {
        let other = if dtype == DType::F64 {
            DType::F32
        } else {
            DType::F64
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let mut rng = StdRng::seed_from_u64(2);
        let x = filled(&[4, 3], dtype);
        let images = filled(&[1, 2, 5, 5], dtype);
        let same = ConvGeometry::SAME_3X3;
        let conv_label = "Conv2d (2 → 3 channels, 3×3, stride 1, padding 1) at `conv`: ";
        let pos_conv_label = "PosConv2d (2 → 3 channels, 3×3, stride 1, padding 1) at `pc`: ";
        for (bias, given) in [
            (filled(&[3], dtype), "[3]"),
            (filled(&[1, 2], dtype), "[1, 2]"),
            (filled(&[2], other), "[2]"),
        ] {
            let want = ["expected a bias of shape (2,)", given];
            let mut lin = Linear::new(&vb.pp("lin"), 3, 2, true, &mut rng).unwrap();
            lin.bias = Some(bias.clone());
            let m = shape_error("Linear", lin.forward(&x));
            names(&m, "Linear (3 → 2) at `lin`: ", &want);
            let mut pos = PosLinear::new(&vb.pp("pos"), 3, 2, true, &mut rng).unwrap();
            pos.bias = Some(bias);
            let m = shape_error("PosLinear", pos.forward(&x));
            names(&m, "PosLinear (3 → 2) at `pos`: ", &want);
        }
        for (bias, given) in [(filled(&[2], dtype), "[2]"), (filled(&[3], other), "[3]")] {
            let want = ["expected a bias of shape (3,)", given];
            let mut conv = Conv2d::new(&vb.pp("conv"), 2, 3, same, true, &mut rng).unwrap();
            conv.bias = Some(bias.clone());
            let m = shape_error("Conv2d", conv.forward(&images));
            names(&m, conv_label, &want);
            let mut pos = PosConv2d::new(&vb.pp("pc"), 2, 3, same, true, &mut rng).unwrap();
            pos.bias = Some(bias);
            let m = shape_error("PosConv2d", pos.forward(&images));
            names(&m, pos_conv_label, &want);
        }
    }
}

/// A case `from_tensors` must refuse: what, weight, bias, geometry, pieces of the message.
type BadConv<'a> = (&'a str, Tensor, Option<Tensor>, ConvGeometry, &'a [&'a str]);

/// `from_tensors` takes the tensors of a layer as they are (the same outputs, bit for bit, as
/// the layer built under a `VarBuilder`) and refuses, with a shape error naming the layer,
/// every combination `validate` refuses: a weight of another rank or kernel size, an integer
/// weight, a bias of another length, rank or dtype.
#[test]
fn from_tensors_checks_rank_bias_and_dtype() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let mut rng = StdRng::seed_from_u64(3);
    let x = filled(&[4, 3], DType::F64);
    let lin = Linear::new(&vb.pp("lin"), 3, 2, true, &mut rng).unwrap();
    let (w, b) = (lin.weight.clone(), lin.bias.clone());
    let mine = Linear::from_tensors("mine", w.clone(), b.clone()).unwrap();
    assert_eq!(mine.name(), "mine");
    assert_eq!(
        max_diff(&mine.forward(&x).unwrap(), &lin.forward(&x).unwrap()),
        0.0
    );
    let pos = PosLinear::from_tensors("", w.clone(), b.clone()).unwrap();
    let reference = PosLinear::new(&vb.pp("lin"), 3, 2, true, &mut rng).unwrap(); // loads `lin`
    assert_eq!(
        max_diff(&pos.forward(&x).unwrap(), &reference.forward(&x).unwrap()),
        0.0
    );
    let int_weight = w.to_dtype(DType::U32).unwrap();
    let bad: [(&str, Tensor, Option<Tensor>, &[&str]); 5] = [
        (
            "rank 1",
            filled(&[6], DType::F64),
            None,
            &["(out, in)", "[6]"],
        ),
        (
            "rank 3",
            filled(&[1, 2, 3], DType::F64),
            None,
            &["[1, 2, 3]"],
        ),
        ("integer", int_weight, None, &["floating-point", "U32"]),
        (
            "bias length",
            w.clone(),
            Some(filled(&[3], DType::F64)),
            &["(2,)", "[3]"],
        ),
        (
            "bias dtype",
            w.clone(),
            Some(filled(&[2], DType::F32)),
            &["(2,)", "F32"],
        ),
    ];
    for (what, weight, bias, pieces) in bad {
        let m = shape_error(
            what,
            Linear::from_tensors("mine", weight.clone(), bias.clone()),
        );
        names(&m, "Linear", &[&["`mine`"][..], pieces].concat());
        let m = shape_error(what, PosLinear::from_tensors("", weight, bias));
        names(&m, "PosLinear", pieces);
        assert!(!m.contains(" at `"), "an unnamed layer: {m:?}");
    }

    let g = ConvGeometry {
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let images = filled(&[2, 2, 5, 5], DType::F64);
    let conv = Conv2d::new(&vb.pp("conv"), 2, 3, g, true, &mut rng).unwrap();
    let (w, b) = (conv.weight.clone(), conv.bias.clone());
    let mine = Conv2d::from_tensors("mine", w.clone(), b.clone(), g).unwrap();
    assert_eq!(
        max_diff(
            &mine.forward(&images).unwrap(),
            &conv.forward(&images).unwrap()
        ),
        0.0
    );
    let pos = PosConv2d::from_tensors("pc", w.clone(), b.clone(), g).unwrap();
    assert_eq!((pos.name(), pos.fan_in()), ("pc", 18));
    assert_eq!(pos.forward(&images).unwrap().dims(), &[2, 3, 3, 3]);
    let wide = ConvGeometry { kernel: 5, ..g };
    let bad: [BadConv; 5] = [
        (
            "rank 2",
            filled(&[3, 18], DType::F64),
            None,
            g,
            &["(out, in, 3, 3)", "[3, 18]"],
        ),
        (
            "kernel",
            w.clone(),
            None,
            wide,
            &["(out, in, 5, 5)", "[3, 2, 3, 3]"],
        ),
        (
            "non-square",
            filled(&[3, 2, 3, 2], DType::F64),
            None,
            g,
            &["[3, 2, 3, 2]"],
        ),
        (
            "bias length",
            w.clone(),
            Some(filled(&[2], DType::F64)),
            g,
            &["(3,)", "[2]"],
        ),
        (
            "bias dtype",
            w.clone(),
            Some(filled(&[3], DType::F32)),
            g,
            &["(3,)", "F32"],
        ),
    ];
    for (what, weight, bias, geometry, pieces) in bad {
        let r = Conv2d::from_tensors("mine", weight.clone(), bias.clone(), geometry);
        names(
            &shape_error(what, r),
            "Conv2d",
            &[&["`mine`"][..], pieces].concat(),
        );
        let r = PosConv2d::from_tensors("mine", weight, bias, geometry);
        names(&shape_error(what, r), "PosConv2d", pieces);
    }
}

/// The input checks name a layer built under a prefix by its prefix, appended to the
/// description (so messages still start with `Linear (3 → 2)`); a layer at the root of its
/// builder keeps the message it had.
#[test]
fn input_errors_name_the_layer_by_its_parameter_prefix() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let mut rng = StdRng::seed_from_u64(4);
    let wide = filled(&[4, 5], DType::F64);
    let block = vb.pp("block3");
    let lin = Linear::new(&block.pp("z1"), 3, 2, true, &mut rng).unwrap();
    let m = shape_error("Linear", lin.forward(&wide));
    names(
        &m,
        "Linear (3 → 2) at `block3.z1`: expected an input",
        &["(B, 3)", "[4, 5]"],
    );
    let pos = PosLinear::new(&block.pp("z2"), 3, 2, true, &mut rng).unwrap();
    let m = shape_error("PosLinear", pos.forward(&wide));
    names(
        &m,
        "PosLinear (3 → 2) at `block3.z2`: expected an input",
        &["(B, 3)"],
    );
    let gate = Linear::new_zeros(&block.pp("gate"), 3, 2).unwrap();
    let m = shape_error("gate", gate.forward(&wide));
    names(&m, "Linear (3 → 2) at `block3.gate`: ", &["(B, 3)"]);

    let rgb = filled(&[1, 3, 5, 5], DType::F64);
    let same = ConvGeometry::SAME_3X3;
    let conv = Conv2d::new(&block.pp("c"), 2, 3, same, true, &mut rng).unwrap();
    let m = shape_error("Conv2d", conv.forward(&rgb));
    let label = "Conv2d (2 → 3 channels, 3×3, stride 1, padding 1) at `block3.c`: expected";
    names(&m, label, &["(B, 2, H, W)", "[1, 3, 5, 5]"]);
    let pos = PosConv2d::new(&block.pp("p"), 2, 3, same, true, &mut rng).unwrap();
    let m = shape_error("PosConv2d", pos.forward(&rgb));
    let label = "PosConv2d (2 → 3 channels, 3×3, stride 1, padding 1) at `block3.p`: expected";
    names(&m, label, &["(B, 2, H, W)"]);

    // At the root: no name, the message as before.
    let root = Linear::new(&vb, 3, 2, false, &mut StdRng::seed_from_u64(5)).unwrap();
    let m = shape_error("root", root.forward(&wide));
    names(&m, "Linear (3 → 2): expected an input of shape (B, 3)", &[]);
}
