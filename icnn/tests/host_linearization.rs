//! The host-kernel linearisation ([`icnn::HostLinearization`]) against the composed candle
//! recursions of [`icnn::Linearization`]: the detached gradient and Hessian-vector products,
//! the bilinear form `uᵀ∇²F v`, and — the hand-written adjoint — the gradients of
//! `J = Σ ⟨c, ∇F⟩ + Σ w·uᵀ∇²F v` with respect to every parameter and to `x`, which candle's
//! backward computes through the composed graph. Every architecture and activation option the
//! kernels cover (all but the partially input-convex `Picnn`, which must decline), f64.
//! A central difference in `x` checks the input gradient independently of candle.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{BATCH, all_cases, assert_close, flat, named_vars, perturb, randn};
use icnn::ConvexPotential;
use rand::SeedableRng;
use rand::rngs::StdRng;

const DIM: usize = 3;

/// `(∇F(x), uᵀ∇²F(x) v)` per row, from the composed (candle) recursions or the host kernels.
fn gradient_and_bilinear(
    net: &dyn ConvexPotential,
    x: &Tensor,
    u: &Tensor,
    v: &Tensor,
    host: bool,
) -> (Tensor, Tensor) {
    if host {
        let lin = net.host_linearize(x).unwrap().expect("supported");
        return lin.gradient_and_bilinear(u, v).unwrap();
    }
    let lin = net.linearize(x).unwrap();
    let q = (lin.hvp(u).unwrap() * v).unwrap().sum(1).unwrap();
    (lin.gradient(), q)
}

/// `J = Σ ⟨c, ∇F⟩ + Σ w·uᵀ∇²F v`.
#[allow(clippy::too_many_arguments)]
fn objective(
    net: &dyn ConvexPotential,
    x: &Tensor,
    u: &Tensor,
    v: &Tensor,
    c: &Tensor,
    w: &Tensor,
    host: bool,
) -> Tensor {
    let (g, q) = gradient_and_bilinear(net, x, u, v, host);
    ((g * c).unwrap().sum_all().unwrap() + (q * w).unwrap().sum_all().unwrap()).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

#[test]
fn host_linearization_matches_composed_recursions_and_their_gradients() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut covered = 0;
    for case in all_cases(DIM, 5) {
        let net = case.net.as_ref();
        perturb(&case.varmap, &mut rng, 0.3);
        let x = randn(&mut rng, (BATCH, DIM), 1.0);
        let (u, v, c) = (
            randn(&mut rng, (BATCH, DIM), 1.0),
            randn(&mut rng, (BATCH, DIM), 1.0),
            randn(&mut rng, (BATCH, DIM), 1.0),
        );
        let w = randn(&mut rng, (BATCH, 1), 1.0).squeeze(1).unwrap();
        let Some(host) = net.host_linearize(&x).unwrap() else {
            assert!(case.name.starts_with("Picnn"), "{}: declined", case.name);
            continue;
        };
        covered += 1;
        let lin = net.linearize(&x).unwrap();
        let name = &case.name;
        // Detached values.
        assert_close(
            &flat(&host.gradient().unwrap()),
            &flat(&lin.gradient()),
            1e-12,
            &format!("{name}: gradient"),
        );
        assert_close(
            &flat(&host.hvp(&u).unwrap()),
            &flat(&lin.hvp(&u).unwrap()),
            1e-12,
            &format!("{name}: hvp"),
        );
        let (g, q) = host.gradient_and_bilinear(&u, &v).unwrap();
        let q_ref = (lin.hvp(&u).unwrap() * &v).unwrap().sum(1).unwrap();
        assert_close(
            &flat(&g),
            &flat(&lin.gradient()),
            1e-12,
            &format!("{name}: tracked gradient"),
        );
        assert_close(
            &flat(&q),
            &flat(&q_ref),
            1e-12,
            &format!("{name}: bilinear"),
        );

        // Gradients of J: parameters and x.
        let xv = Var::from_tensor(&x).unwrap();
        let jh = objective(net, xv.as_tensor(), &u, &v, &c, &w, true);
        let jc = objective(net, xv.as_tensor(), &u, &v, &c, &w, false);
        assert!((scalar(&jh) - scalar(&jc)).abs() < 1e-11 * scalar(&jc).abs().max(1.0));
        let (gh, gc) = (jh.backward().unwrap(), jc.backward().unwrap());
        let mut nonzero = 0;
        for (vname, var) in named_vars(&case.varmap)
            .iter()
            .chain([(String::from("x"), xv.clone())].iter())
        {
            let a = gh.get(var).map(flat);
            let b = gc.get(var).map(flat);
            match (a, b) {
                (Some(a), Some(b)) => {
                    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                    assert_close(&a, &b, 1e-10 * scale, &format!("{name}: d J / d {vname}"));
                    nonzero += usize::from(b.iter().any(|v| *v != 0.0));
                }
                (None, None) => {}
                (a, b) => {
                    // One side has no entry: the other must be zero.
                    let t = a.or(b).unwrap();
                    assert!(
                        t.iter().all(|v| v.abs() < 1e-12),
                        "{name}: {vname} only on one side"
                    );
                }
            }
        }
        assert!(nonzero >= 3, "{name}: only {nonzero} nonzero gradients");

        // x-gradient against central differences of J (candle-independent).
        let dx = randn(&mut rng, (BATCH, DIM), 1.0);
        let h = 1e-5;
        let jx = |s: f64| {
            let xs = (&x + (&dx * s).unwrap()).unwrap();
            scalar(&objective(net, &xs, &u, &v, &c, &w, true))
        };
        let fd = (jx(h) - jx(-h)) / (2.0 * h);
        let an: f64 = flat(gh.get(&xv).unwrap())
            .iter()
            .zip(flat(&dx))
            .map(|(a, b)| a * b)
            .sum();
        assert!(
            (fd - an).abs() < 1e-6 * an.abs().max(1.0),
            "{name}: x FD {fd} vs {an}"
        );
    }
    assert!(covered >= 10, "only {covered} networks covered");
}

/// f32 runs in f32 and agrees with f64 to single precision.
#[test]
fn host_linearization_f32_agrees_with_f64() {
    let mut rng = StdRng::seed_from_u64(3);
    let case = all_cases(DIM, 9)
        .into_iter()
        .find(|c| c.name.starts_with("Icnn2"))
        .unwrap();
    perturb(&case.varmap, &mut rng, 0.3);
    let x = randn(&mut rng, (BATCH, DIM), 1.0);
    let (u, v) = (
        randn(&mut rng, (BATCH, DIM), 1.0),
        randn(&mut rng, (BATCH, DIM), 1.0),
    );
    let h64 = case.net.host_linearize(&x).unwrap().unwrap();
    let (g64, q64) = h64.gradient_and_bilinear(&u, &v).unwrap();
    // The same parameters (and the initialised flag) in f32.
    let vm32 = candle_nn::VarMap::new();
    for (name, var) in case.varmap.data().lock().unwrap().iter() {
        let t = var.as_tensor().to_dtype(DType::F32).unwrap();
        vm32.data()
            .lock()
            .unwrap()
            .insert(name.clone(), Var::from_tensor(&t).unwrap());
    }
    let vb = candle_nn::VarBuilder::from_varmap(&vm32, DType::F32, &Device::Cpu);
    let cfg = icnn::Icnn2Config {
        dim: DIM,
        width: 6,
        depth: 3,
        ..Default::default()
    };
    let net32 = icnn::Icnn2::new(vb.pp("icnn"), &cfg, &mut rng).unwrap();
    let f32t = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let h32 = net32.host_linearize(&f32t(&x)).unwrap().unwrap();
    let (g32, q32) = h32.gradient_and_bilinear(&f32t(&u), &f32t(&v)).unwrap();
    assert_eq!(g32.dtype(), DType::F32);
    let up = |t: &Tensor| flat(&t.to_dtype(DType::F64).unwrap());
    let scale = flat(&q64).iter().fold(1.0f64, |m, v| m.max(v.abs()));
    assert_close(&up(&g32), &flat(&g64), 1e-4, "f32 gradient");
    assert_close(&up(&q32), &flat(&q64), 1e-4 * scale, "f32 bilinear");
}
