//! `ActNorm::from_tensors`: an ActNorm built from tensors of the caller's own is the
//! `VarBuilder`-built one with the same values (bit for bit), uses its tensors as they are
//! (the initialisation writes into them, gradients reach them), and refuses every tensor
//! `validate` refuses with a shape error naming the layer (``ActNorm (3 features) at `mine` ``,
//! the form of the other layers' messages). `ActNorm::new` refuses zero features before
//! creating anything.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use icnn::{ACTNORM_SCALE_MIN, ActNorm};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{filled, shape_error, starts_and_names as names};

/// `t` as host `f64` values (exact for f32 and f64 tensors).
fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// A `(rows, cols)` batch of `U(−2, 3)` values drawn on the host, in `dtype`.
fn batch(rng: &mut StdRng, (rows, cols): (usize, usize), dtype: DType) -> Tensor {
    let v: Vec<f64> = (0..rows * cols)
        .map(|_| rng.random::<f64>() * 5.0 - 2.0)
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// `t`'s values in a new tensor of the same shape and dtype (no storage shared).
fn copy(t: &Tensor) -> Tensor {
    Tensor::from_vec(values(t), t.dims(), &Device::Cpu)
        .unwrap()
        .to_dtype(t.dtype())
        .unwrap()
}

/// The same shift and log-scale values give the same layer: `forward`, `shift` and `scale`
/// of `from_tensors` equal those of `ActNorm::new` after its data-dependent init, bit for
/// bit (the same ops on the same values), with and without a frozen bias.
#[test]
fn from_tensors_matches_a_varbuilder_actnorm_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(11);
    for dtype in [DType::F64, DType::F32] {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let mut built = ActNorm::new(&vb.pp("an"), 4).unwrap();
        built.initialize(&batch(&mut rng, (6, 4), dtype)).unwrap();
        // The init moved b and logs away from their zeros: a layer that ignored or swapped
        // its tensors would differ.
        assert!(values(&built.b).iter().all(|&v| v != 0.0));
        assert!(values(&built.logs).iter().all(|&v| v != 0.0));
        let mut mine = ActNorm::from_tensors("mine", copy(&built.b), copy(&built.logs)).unwrap();
        assert_eq!((mine.name(), mine.features()), ("mine", 4));
        assert!(!mine.frozen_bias);
        let x = batch(&mut rng, (5, 4), dtype);
        for frozen in [false, true] {
            built.frozen_bias = frozen;
            mine.frozen_bias = frozen;
            let (y, want) = (mine.forward(&x).unwrap(), built.forward(&x).unwrap());
            assert_eq!(y.dtype(), dtype);
            assert_eq!(values(&y), values(&want), "{dtype:?} frozen {frozen}");
            assert_eq!(
                values(&mine.shift().unwrap()),
                values(&built.shift().unwrap())
            );
            assert_eq!(
                values(&mine.scale().unwrap()),
                values(&built.scale().unwrap())
            );
        }
    }
}

/// The tensors are used as they are: `initialize` writes `−mean` and `−ln(std + 1e-6)`
/// into the caller's variables (closed form on the host), and the gradient of `Σ forward`
/// reaches them (`∂/∂b_c = B·scale_c`). A non-contiguous `logs` is accepted by `forward` but
/// refused by `initialize` with a shape error before `b` is written.
#[test]
fn from_tensors_uses_the_tensors_as_they_are() {
    let b = Var::zeros((1, 3, 1), DType::F64, &Device::Cpu).unwrap();
    let logs = Var::zeros((1, 3, 1), DType::F64, &Device::Cpu).unwrap();
    let an =
        ActNorm::from_tensors("vars", b.as_tensor().clone(), logs.as_tensor().clone()).unwrap();
    let x = batch(&mut StdRng::seed_from_u64(12), (7, 3), DType::F64);
    an.initialize(&x).unwrap();
    let rows = x.to_vec2::<f64>().unwrap();
    let n = rows.len() as f64;
    let (b_now, logs_now) = (values(b.as_tensor()), values(logs.as_tensor()));
    for c in 0..3 {
        let mean = rows.iter().map(|r| r[c]).sum::<f64>() / n;
        let var = rows.iter().map(|r| (r[c] - mean).powi(2)).sum::<f64>() / n;
        // A few roundings of the sums, the sqrt and the log of O(1) values.
        assert!((b_now[c] + mean).abs() < 1e-13, "b {c}: {b_now:?}");
        let want = -(var.sqrt() + 1e-6).ln();
        assert!((logs_now[c] - want).abs() < 1e-13, "logs {c}: {logs_now:?}");
    }
    let grads = an
        .forward(&x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let grad_b = values(grads.get(b.as_tensor()).expect("no gradient for b"));
    assert!(
        grads.get(logs.as_tensor()).is_some(),
        "no gradient for logs"
    );
    for c in 0..3 {
        let scale = logs_now[c].exp() + ACTNORM_SCALE_MIN;
        // Σ over 7 rows of the same scale: a few roundings.
        assert!(
            (grad_b[c] - n * scale).abs() < 1e-12 * n * scale,
            "{grad_b:?}"
        );
    }

    // logs a strided view: column 0 of a (3, 2) tensor.
    let strided = filled(&[3, 2], DType::F64).narrow(1, 0, 1).unwrap();
    let strided = strided.unsqueeze(0).unwrap();
    assert!(!strided.is_contiguous());
    let b = filled(&[1, 3, 1], DType::F64);
    let viewed = ActNorm::from_tensors("view", b.clone(), strided.clone()).unwrap();
    let dense = ActNorm::from_tensors("dense", b.clone(), strided.contiguous().unwrap()).unwrap();
    assert_eq!(
        values(&viewed.forward(&x).unwrap()),
        values(&dense.forward(&x).unwrap())
    );
    let m = shape_error("initialize", viewed.initialize(&x));
    names(&m, "ActNorm (3 features) at `view`: ", &["contiguous"]);
    assert_eq!(values(&viewed.b), values(&b), "initialize wrote b");
}

/// A bad input: what, b, logs, the message's start, pieces it names.
type Bad<'a> = (&'a str, Tensor, Tensor, &'a str, Vec<String>);

/// Every check of `validate` refuses through `from_tensors`, with a shape error that starts
/// with the layer (named, or unnamed without ` at `) and names the tensor at fault and the
/// expected and given shape or dtype.
#[test]
fn from_tensors_refuses_each_bad_input_naming_the_layer() {
    for dtype in [DType::F64, DType::F32] {
        let other = if dtype == DType::F64 {
            DType::F32
        } else {
            DType::F64
        };
        let t = |shape: &[usize]| filled(shape, dtype);
        let int = |shape: &[usize]| filled(shape, dtype).to_dtype(DType::U32).unwrap();
        let pieces = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let shift = "expected a shift `b` of shape (1, C, 1) with C ≥ 1";
        let b0 = format!("ActNorm (0 features) at `mine`: {shift}");
        let b3 = format!("ActNorm (3 features) at `mine`: {shift}");
        let log_scale = "ActNorm (3 features) at `mine`: expected a log-scale `logs` of shape \
                         (1, 3, 1)";
        let bad: Vec<Bad> = vec![
            ("b (C,)", t(&[3]), t(&[1, 3, 1]), &b0, pieces(&["[3]"])),
            (
                "b (1, C)",
                t(&[1, 3]),
                t(&[1, 3, 1]),
                &b0,
                pieces(&["[1, 3]"]),
            ),
            (
                "b (2, C, 1)",
                t(&[2, 3, 1]),
                t(&[1, 3, 1]),
                &b0,
                pieces(&["[2, 3, 1]"]),
            ),
            (
                "b (1, C, 2)",
                t(&[1, 3, 2]),
                t(&[1, 3, 1]),
                &b0,
                pieces(&["[1, 3, 2]"]),
            ),
            (
                "no feature",
                t(&[1, 0, 1]),
                t(&[1, 0, 1]),
                &b0,
                pieces(&["[1, 0, 1]"]),
            ),
            (
                "integer b and logs",
                int(&[1, 3, 1]),
                int(&[1, 3, 1]),
                &b3,
                pieces(&["floating-point", "U32"]),
            ),
            (
                "integer b",
                int(&[1, 3, 1]),
                t(&[1, 3, 1]),
                &b3,
                pieces(&["floating-point", "U32"]),
            ),
            (
                "logs (1, 4, 1)",
                t(&[1, 3, 1]),
                t(&[1, 4, 1]),
                log_scale,
                pieces(&["[1, 4, 1]"]),
            ),
            (
                "logs (C,)",
                t(&[1, 3, 1]),
                t(&[3]),
                log_scale,
                pieces(&["[3]"]),
            ),
            (
                "logs (1, C, 2)",
                t(&[1, 3, 1]),
                t(&[1, 3, 2]),
                log_scale,
                pieces(&["[1, 3, 2]"]),
            ),
            (
                "logs of another dtype",
                t(&[1, 3, 1]),
                filled(&[1, 3, 1], other),
                log_scale,
                vec![
                    format!("{dtype:?}, on Cpu like `b`"),
                    format!("{other:?}, on Cpu"),
                ],
            ),
        ];
        for (what, b, logs, start, pieces) in bad {
            let what = format!("{what} {dtype:?}");
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let m = shape_error(
                &what,
                ActNorm::from_tensors("mine", b.clone(), logs.clone()),
            );
            names(&m, start, &pieces);
            // The same check, unnamed: the message starts with the description alone.
            let m = shape_error(&what, ActNorm::from_tensors("", b, logs));
            let unnamed = start.replace(" at `mine`", "");
            names(&m, &unnamed, &pieces);
            assert!(!m.contains(" at `"), "{what}: an unnamed layer: {m:?}");
        }
    }
}

/// `ActNorm::new` with no features: the shape error of `validate`'s `C ≥ 1`, naming the
/// layer, before any variable is created (as `PosLinear::new` with no inputs).
#[test]
fn new_refuses_zero_features_before_creating_variables() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let m = shape_error("new", ActNorm::new(&vb.pp("block1").pp("an"), 0));
    names(&m, "ActNorm (0 features) at `block1.an`: ", &["C ≥ 1"]);
    assert!(varmap.all_vars().is_empty(), "created variables");
    let an = ActNorm::new(&vb.pp("one"), 1).unwrap();
    assert_eq!((an.features(), an.name()), (1, "one"));
    assert!(matches!(
        ActNorm::from_tensors("one", an.b.clone(), an.logs.clone()),
        Ok(ref mine) if mine.features() == 1
    ));
}
