//! The host-kernel linearisation ([`icnn::HostLinearization`]) of the dense networks against
//! the composed candle recursions (`host_check`): every architecture and activation option
//! the kernels cover (all but the partially input-convex `Picnn`, which must decline), f64.

use crate::common::{BATCH, all_cases, assert_close, flat, named_vars, perturb, randn};
use crate::host_check::{Inputs, check_host_against_composed};
use candle_core::{DType, Device, Tensor, Var};
use icnn::ConvexPotential;
use rand::SeedableRng;
use rand::rngs::StdRng;

const DIM: usize = 3;

#[test]
fn host_linearization_matches_composed_recursions_and_their_gradients() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut covered = 0;
    for case in all_cases(DIM, 5) {
        let net = case.net.as_ref();
        perturb(&case.varmap, &mut rng, 0.3);
        let inputs = Inputs::draw(BATCH, DIM, |shape| randn(&mut rng, shape, 1.0));
        let Some(host) = net.host_linearize(&inputs.x).unwrap() else {
            assert!(case.name.starts_with("Picnn"), "{}: declined", case.name);
            continue;
        };
        covered += 1;
        let vars = named_vars(&case.varmap);
        let nonzero = check_host_against_composed(&case.name, net, &host, &vars, &inputs, 1e-12);
        assert!(
            nonzero >= 3,
            "{}: only {nonzero} nonzero gradients",
            case.name
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

/// Tangents that do not belong to a linearisation are refused: another batch size, a step
/// size count that is not one per row.
#[test]
fn direction_tangents_from_elsewhere_are_errors() {
    let mut rng = StdRng::seed_from_u64(5);
    let case = all_cases(DIM, 9)
        .into_iter()
        .find(|c| c.name.starts_with("Icnn2"))
        .unwrap();
    let x = randn(&mut rng, (BATCH, DIM), 1.0);
    let x_short = randn(&mut rng, (BATCH - 1, DIM), 1.0);
    let lin = case.net.host_linearize(&x).unwrap().unwrap();
    let short = case.net.host_linearize(&x_short).unwrap().unwrap();
    let v = randn(&mut rng, (BATCH, DIM), 1.0);
    let (_, mut tv) = lin.hvp_and_tangents(&v).unwrap();
    let (_, t_short) = short
        .hvp_and_tangents(&randn(&mut rng, (BATCH - 1, DIM), 1.0))
        .unwrap();
    assert_eq!(tv.batch_size(), BATCH);
    assert!(tv.add_scaled_rows(&[1.0; BATCH], &t_short).is_err());
    assert!(tv.add_scaled_rows(&[1.0; BATCH - 1], &tv.clone()).is_err());
    assert!(
        lin.gradient_and_bilinear_given_tangents(&v, &v, &tv, &t_short)
            .is_err()
    );
}
