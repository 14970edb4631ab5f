//! Property tests (fixed seeds): a row's potential, gradient, Hessian-vector product and
//! Hessian (candle recursions and host kernels) do not depend on the other rows of its batch
//! (ActNorms initialised: no batch statistics after the first call); and the PICNN is convex
//! in `x` at every context but not in the context, which it is not required to be.

use crate::common::randn;
use crate::prop_networks::{Arch, NetSpec, build, fixed_config, flat, net_spec, scaled_rows};
use candle_core::{Device, Tensor};
use icnn::{ConditionalConvexPotential, ConvexPotential, Picnn};
use proptest::prelude::*;
use rand::Rng;

/// Everything a linearisation says about its rows, flattened per kind.
struct Outputs {
    kinds: Vec<(&'static str, Vec<f64>, usize)>,
}

fn outputs(pot: &dyn ConvexPotential, x: &Tensor, v: &Tensor) -> Outputs {
    let d = pot.dim();
    let lin = pot.linearize(x).unwrap();
    let mut kinds = vec![
        ("F", flat(&lin.potential()), 1),
        ("∇F", flat(&lin.gradient()), d),
        ("∇²F·v", flat(&lin.hvp(v).unwrap()), d),
        ("∇²F", flat(&lin.hessian().unwrap()), d * d),
    ];
    if let Some(host) = pot.host_linearize(x).unwrap() {
        kinds.push(("host F", flat(&host.potential().unwrap()), 1));
        kinds.push(("host ∇F", flat(&host.gradient().unwrap()), d));
        kinds.push(("host ∇²F·v", flat(&host.hvp(v).unwrap()), d));
        kinds.push(("host ∇²F", flat(&host.hessian().unwrap()), d * d));
    }
    Outputs { kinds }
}

/// Row `a` of `got` equals row `b` of `want` to rounding: the same arithmetic on the same row,
/// where only the blocking of matrix products may change with the batch size (summation order:
/// `≲ 100` terms), so `64·ε` relative to the row's largest magnitude.
fn same_row(
    what: &str,
    got: &Outputs,
    a: usize,
    want: &Outputs,
    b: usize,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.kinds.len(), want.kinds.len());
    for ((name, g, per), (_, w, _)) in got.kinds.iter().zip(&want.kinds) {
        let (g, w) = (&g[a * per..(a + 1) * per], &w[b * per..(b + 1) * per]);
        let scale = w.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (k, (p, q)) in g.iter().zip(w).enumerate() {
            prop_assert!(
                (p - q).abs() <= 64.0 * f64::EPSILON * scale,
                "{what}: {name}[{k}] of row {b}: {p:e} vs {q:e} in the whole batch"
            );
        }
    }
    Ok(())
}

fn rows(t: &Tensor, idx: &[usize]) -> Tensor {
    let idx = Tensor::from_vec(
        idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        idx.len(),
        &Device::Cpu,
    )
    .unwrap();
    t.index_select(&idx, 0).unwrap()
}

fn batch_case(spec: &NetSpec, n: usize, log_scale: f64) -> Result<(), TestCaseError> {
    let (net, mut rng) = build(spec);
    let d = spec.dim;
    let x = scaled_rows(&mut rng, n, d, 10f64.powf(log_scale));
    let c = randn(&mut rng, (n, spec.context_dim), 1.0);
    let v = randn(&mut rng, (n, d), 1.0);
    let whole = outputs(net.at(&c).as_ref(), &x, &v);
    for i in 0..n {
        let one = [i];
        let alone = outputs(
            net.at(&rows(&c, &one)).as_ref(),
            &rows(&x, &one),
            &rows(&v, &one),
        );
        same_row("alone", &alone, 0, &whole, i)?;
    }
    // Reversed, with row 0 repeated: duplicates and order do not matter either.
    let mut order: Vec<usize> = (0..n).rev().collect();
    order.push(0);
    let permuted = outputs(
        net.at(&rows(&c, &order)).as_ref(),
        &rows(&x, &order),
        &rows(&v, &order),
    );
    for (k, &i) in order.iter().enumerate() {
        same_row("permuted", &permuted, k, &whole, i)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(fixed_config(128, 0xB0_0001))]

    #[test]
    fn prop_rows_do_not_depend_on_their_batch(
        spec in net_spec(),
        n in 2usize..=5,
        log_scale in -2.0f64..=2.0,
    ) {
        batch_case(&spec, n, log_scale)?;
    }
}

/// Second differences `(F(x, c + hu) − 2F(x, c) + F(x, c − hu))/h²` of a PICNN along random
/// context directions `u`, and the same along input directions, over random networks and
/// points.
fn second_differences(in_context: bool) -> Vec<f64> {
    let mut out = Vec::new();
    for seed in 0..6u64 {
        let spec = NetSpec {
            arch: Arch::Picnn,
            dim: 2,
            width: 6,
            depth: 3,
            gaussian: seed % 2 == 0,
            zero_shift: false,
            symm_act_first: false,
            context_dim: 2,
            seed: 900 + seed,
        };
        let (net, mut rng) = build(&spec);
        let crate::prop_networks::Net::Conditional(picnn) = &net else {
            unreachable!("a Picnn spec builds a conditional network")
        };
        let picnn: &Picnn = picnn;
        let b = 32;
        let x = randn(&mut rng, (b, 2), 1.0);
        let c = randn(&mut rng, (b, 2), 2.0);
        let u = randn(&mut rng, (b, 2), 1.0);
        let h = 1e-3 * (1.0 + rng.random::<f64>());
        let f = |x: &Tensor, c: &Tensor| flat(&picnn.potential_with_context(x, c).unwrap());
        let step = (&u * h).unwrap();
        let (fp, f0, fm) = if in_context {
            (
                f(&x, &(&c + &step).unwrap()),
                f(&x, &c),
                f(&x, &(&c - &step).unwrap()),
            )
        } else {
            (
                f(&(&x + &step).unwrap(), &c),
                f(&x, &c),
                f(&(&x - &step).unwrap(), &c),
            )
        };
        assert_eq!(ConditionalConvexPotential::context_dim(picnn), 2);
        out.extend((0..b).map(|i| (fp[i] - 2.0 * f0[i] + fm[i]) / (h * h)));
    }
    out
}

/// The PICNN is convex in `x` (every second difference along `x` ≥ −rounding: `4ε|F|/h²` with
/// `|F| ≲ 10`, `h ≥ 1e-3`, i.e. ≥ −1e-8) but not in the context: some second difference along
/// the context is clearly negative (< −1e-3), so the convexity checks above would notice a
/// convexity that held only by accident, and the PICNN needs none in `c`.
#[test]
fn picnn_is_convex_in_x_but_not_in_the_context() {
    let in_x = second_differences(false);
    let worst_x = in_x.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(
        worst_x >= -1e-8,
        "a negative second difference in x: {worst_x:e}"
    );
    let in_c = second_differences(true);
    let worst_c = in_c.iter().copied().fold(f64::INFINITY, f64::min);
    let negative = in_c.iter().filter(|&&s| s < -1e-3).count();
    assert!(
        negative > 0,
        "no negative curvature along the context in {} samples (most negative {worst_c:e})",
        in_c.len()
    );
}
