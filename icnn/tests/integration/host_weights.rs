//! [`icnn::HostWeights`]: one host copy of a network's prepared parameters, linearized at row
//! chunks, against [`icnn::ConvexPotential::host_linearize`] of the whole batch (every dense
//! and convolutional architecture the kernels cover, f64), and the gradient leaf: chunk
//! gradients added at the leaf, then one pass through the preparation, against candle's
//! backward of the whole batch through the tracked weights.

use candle_core::{DType, Device, Tensor, Var};
use icnn::{ConvexPotential, HostWeights, ImageShape};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::{common, conv_common};

/// Rows of the test batches, split into chunks of 3 and 4 rows.
const ROWS: usize = 7;
const SPLIT: usize = 3;

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// Largest `|a − b|` over the largest `|b|` (at least 1).
fn relative_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// `(rows 0..SPLIT, rows SPLIT..)` of `t`.
fn halves(t: &Tensor) -> [Tensor; 2] {
    [
        t.narrow(0, 0, SPLIT).unwrap(),
        t.narrow(0, SPLIT, ROWS - SPLIT).unwrap(),
    ]
}

/// The two chunks' linearizations from one set of weights give the whole batch's gradient,
/// Hessian-vector products and Hessians (the same kernels on fewer rows: round-off only).
fn check_chunks_match_whole(
    name: &str,
    net: &dyn ConvexPotential,
    weights: &HostWeights,
    rng: &mut StdRng,
) {
    let d = net.dim();
    let x = common::randn(rng, (ROWS, d), 1.0);
    let w = common::randn(rng, (ROWS, d), 1.0);
    let whole = net.host_linearize(&x).unwrap().unwrap();
    let parts: Vec<_> = halves(&x)
        .iter()
        .map(|xc| weights.linearize(xc).unwrap())
        .collect();
    let cat = |f: &dyn Fn(usize) -> Tensor| Tensor::cat(&[f(0), f(1)], 0).unwrap();
    let wh = halves(&w);
    let checks = [
        (
            "gradient",
            cat(&|i| parts[i].gradient().unwrap()),
            whole.gradient().unwrap(),
        ),
        (
            "hvp",
            cat(&|i| parts[i].hvp(&wh[i]).unwrap()),
            whole.hvp(&w).unwrap(),
        ),
    ];
    for (what, got, want) in checks {
        let err = relative_diff(&flat(&got), &flat(&want));
        assert!(err < 1e-13, "{name}: {what} of the chunks off by {err:e}");
    }
    if d <= 48 {
        let got = cat(&|i| parts[i].hessian().unwrap());
        let err = relative_diff(&flat(&got), &flat(&whole.hessian().unwrap()));
        assert!(err < 1e-13, "{name}: Hessian of the chunks off by {err:e}");
    }
}

/// `Σ_b ⟨c_b, ∇F(x_b)⟩ + u_bᵀ∇²F(x_b) v_b` over the rows of `x` (the surrogate's form).
fn surrogate(lin: &icnn::HostLinearization, c: &Tensor, u: &Tensor, v: &Tensor) -> Tensor {
    let (g, q) = lin.gradient_and_bilinear(u, v).unwrap();
    ((g * c).unwrap().sum_all().unwrap() + q.sum_all().unwrap()).unwrap()
}

/// The chunks' gradients added at the leaf and back-propagated once equal candle's backward
/// of the whole batch through the tracked weights, for every parameter and for `x`.
fn check_leaf_gradients(
    name: &str,
    net: &dyn ConvexPotential,
    vars: &[(String, Var)],
    rng: &mut StdRng,
) {
    let d = net.dim();
    let x = Var::from_tensor(&common::randn(rng, (ROWS, d), 1.0)).unwrap();
    let [c, u, v] = [0, 1, 2].map(|_| common::randn(rng, (ROWS, d), 1.0));
    let direct = surrogate(
        &net.host_linearize(x.as_tensor()).unwrap().unwrap(),
        &c,
        &u,
        &v,
    )
    .backward()
    .unwrap();

    let weights = net
        .host_weights()
        .unwrap()
        .unwrap()
        .with_gradient_leaf()
        .unwrap();
    let leaf = weights.gradient_leaf().unwrap().clone();
    let (xs, cs, us, vs) = (halves(x.as_tensor()), halves(&c), halves(&u), halves(&v));
    let mut leaf_sum: Option<Tensor> = None;
    // The chunks are rows of `x`: each chunk's gradient of `x` is zero on the other rows.
    let mut x_grad: Option<Tensor> = None;
    for i in 0..2 {
        let lin = weights.linearize(&xs[i]).unwrap();
        let grads = icnn::detached_backward(&surrogate(&lin, &cs[i], &us[i], &vs[i])).unwrap();
        // Nothing reaches the network's own parameters: the graph stops at the leaf.
        for (n, var) in vars {
            assert!(
                grads.get(var.as_tensor()).is_none(),
                "{name}: {n} reached past the leaf"
            );
        }
        let g = grads.get(&leaf).unwrap().clone();
        leaf_sum = Some(match leaf_sum {
            Some(s) => (s + g).unwrap(),
            None => g,
        });
        let gx = grads.get(x.as_tensor()).unwrap().clone();
        x_grad = Some(match x_grad {
            Some(s) => (s + gx).unwrap(),
            None => gx,
        });
    }
    let through = weights.backward_from_leaf(&leaf_sum.unwrap()).unwrap();
    let mut nonzero = 0;
    for (n, var) in vars {
        let want = direct.get(var.as_tensor());
        let got = through.get(var.as_tensor());
        match (got, want) {
            (Some(a), Some(b)) => {
                let (a, b) = (flat(a), flat(b));
                let err = relative_diff(&a, &b);
                assert!(err < 1e-11, "{name}: gradient of {n} off by {err:e}");
                nonzero += usize::from(b.iter().any(|v| *v != 0.0));
            }
            (None, None) => {}
            (a, b) => panic!(
                "{name}: {n}: leaf path {:?}, direct {:?}",
                a.is_some(),
                b.is_some()
            ),
        }
    }
    assert!(
        nonzero >= 3,
        "{name}: only {nonzero} nonzero parameter gradients"
    );
    let err = relative_diff(
        &flat(&x_grad.unwrap()),
        &flat(direct.get(x.as_tensor()).unwrap()),
    );
    assert!(err < 1e-11, "{name}: gradient of x off by {err:e}");
}

#[test]
fn dense_chunks_share_one_copy_of_the_weights() {
    let mut rng = StdRng::seed_from_u64(21);
    let mut covered = 0;
    for case in common::all_cases(3, 17) {
        let net = case.net.as_ref();
        let Some(weights) = net.host_weights().unwrap() else {
            assert!(case.name.starts_with("Picnn"), "{}: declined", case.name);
            continue;
        };
        covered += 1;
        assert_eq!((weights.dim(), weights.dtype()), (3, DType::F64));
        check_chunks_match_whole(&case.name, net, &weights, &mut rng);
        let vars = common::named_vars(&case.varmap);
        check_leaf_gradients(&case.name, net, &vars, &mut rng);
    }
    assert!(covered >= 10, "only {covered} networks covered");
}

#[test]
fn conv_chunks_share_one_copy_of_the_weights() {
    let mut rng = StdRng::seed_from_u64(22);
    let images = [ImageShape::new(1, 4, 4), ImageShape::new(2, 4, 5)];
    let cases = conv_common::all_cases(&images, 5);
    assert!(cases.len() >= 6);
    for case in cases {
        let net = case.net.as_ref();
        let weights = net
            .host_weights()
            .unwrap()
            .unwrap_or_else(|| panic!("{}: declined", case.name));
        check_chunks_match_whole(&case.name, net, &weights, &mut rng);
        // Images `(B, C, H, W)` linearize as their rows do.
        let x = common::randn(&mut rng, (2, case.image.dim()), 1.0);
        let img = x
            .reshape((2, case.image.channels, case.image.height, case.image.width))
            .unwrap();
        let (a, b) = (
            weights.linearize(&x).unwrap(),
            weights.linearize(&img).unwrap(),
        );
        assert_eq!(flat(&a.gradient().unwrap()), flat(&b.gradient().unwrap()));
        let vars = conv_common::named_vars(&case.varmap);
        check_leaf_gradients(&case.name, net, &vars, &mut rng);
    }
}

/// No weights before the ActNorm initialisation (it needs data); wrong inputs and leaf
/// gradients are refused with the shapes.
#[test]
fn host_weights_refuse_what_they_cannot_take() {
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let mut rng = StdRng::seed_from_u64(3);
    let net = icnn::Icnn2::new(vb, &common::SMALL_ICNN2, &mut rng).unwrap();
    assert!(net.host_weights().unwrap().is_none());
    net.initialize(&common::randn(&mut rng, (ROWS, 3), 1.0))
        .unwrap();
    let weights = net.host_weights().unwrap().unwrap();

    let err = |r: icnn::Result<icnn::HostLinearization>| r.err().unwrap().to_string();
    let wide = common::randn(&mut rng, (2, 4), 1.0);
    assert!(err(weights.linearize(&wide)).contains("expected input of shape (B, 3)"));
    let x32 = common::randn(&mut rng, (2, 3), 1.0)
        .to_dtype(DType::F32)
        .unwrap();
    assert!(err(weights.linearize(&x32)).contains("F64"));

    assert!(weights.gradient_leaf().is_none());
    let leafy = weights.with_gradient_leaf().unwrap();
    let n = leafy.gradient_leaf().unwrap().elem_count();
    let short = Tensor::zeros(n - 1, DType::F64, &Device::Cpu).unwrap();
    let e = leafy.backward_from_leaf(&short).err().unwrap().to_string();
    assert!(e.contains(&format!("expected ({n},)")), "{e}");
}

/// f32 weights linearize f32 rows and agree with the network's own linearization exactly
/// (the same kernels).
#[test]
fn host_weights_in_f32() {
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let mut rng = StdRng::seed_from_u64(4);
    let net = icnn::Icnn2::new(vb, &common::SMALL_ICNN2, &mut rng).unwrap();
    let x = common::randn(&mut rng, (ROWS, 3), 1.0)
        .to_dtype(DType::F32)
        .unwrap();
    let whole = net.host_linearize(&x).unwrap().unwrap();
    let weights = net.host_weights().unwrap().unwrap();
    assert_eq!(weights.dtype(), DType::F32);
    let g = weights.linearize(&x).unwrap().gradient().unwrap();
    let v = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(v(g), v(whole.gradient().unwrap()));
}
