//! Input derivatives of every architecture/activation, checked against finite differences,
//! symmetry, positive semi-definiteness and convexity along segments (all in f64).

use crate::common::{BATCH, all_cases, assert_close, flat, randn, to_vec1};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;

const DIM: usize = 3;

/// Central differences of `f` at `x` along direction `e` with step `h`.
fn central<F: Fn(&Tensor) -> Tensor>(f: F, x: &Tensor, e: &Tensor, h: f64) -> Tensor {
    let xp = (x + (e * h).unwrap()).unwrap();
    let xm = (x - (e * h).unwrap()).unwrap();
    ((f(&xp) - f(&xm)).unwrap() / (2.0 * h)).unwrap()
}

fn unit(batch: usize, dim: usize, i: usize) -> Tensor {
    let mut v = vec![0.0f64; batch * dim];
    for b in 0..batch {
        v[b * dim + i] = 1.0;
    }
    Tensor::from_vec(v, (batch, dim), &Device::Cpu).unwrap()
}

#[test]
fn gradient_matches_central_differences_of_potential() {
    let mut rng = StdRng::seed_from_u64(10);
    for case in all_cases(DIM, 1) {
        let x = randn(&mut rng, (BATCH, DIM), 1.0);
        let grad = case.net.linearize(&x).unwrap().gradient();
        for i in 0..DIM {
            let e = unit(BATCH, DIM, i);
            let fd = central(|y| case.net.potential(y).unwrap(), &x, &e, 1e-5);
            let gi = grad.narrow(1, i, 1).unwrap().squeeze(1).unwrap();
            // Central-difference error ~ h²|F'''| ≈ 1e-10 plus rounding ≈ 1e-16/h ≈ 1e-11.
            assert_close(
                &to_vec1(&gi),
                &to_vec1(&fd),
                1e-7,
                &format!("{} ∂F/∂x{i}", case.name),
            );
        }
    }
}

#[test]
fn hvp_matches_central_differences_of_gradient() {
    let mut rng = StdRng::seed_from_u64(11);
    for case in all_cases(DIM, 2) {
        let x = randn(&mut rng, (BATCH, DIM), 1.0);
        let v = randn(&mut rng, (BATCH, DIM), 1.0);
        let hv = case.net.linearize(&x).unwrap().hvp(&v).unwrap();
        let fd = central(|y| case.net.linearize(y).unwrap().gradient(), &x, &v, 1e-5);
        assert_close(&flat(&hv), &flat(&fd), 1e-7, &format!("{} Hv", case.name));
    }
}

#[test]
fn hvp_is_symmetric_and_consistent_with_hessian() {
    let mut rng = StdRng::seed_from_u64(12);
    for case in all_cases(DIM, 3) {
        let x = randn(&mut rng, (BATCH, DIM), 1.0);
        let u = randn(&mut rng, (BATCH, DIM), 1.0);
        let v = randn(&mut rng, (BATCH, DIM), 1.0);
        let lin = case.net.linearize(&x).unwrap();
        let uhv = to_vec1(&(&u * lin.hvp(&v).unwrap()).unwrap().sum(1).unwrap());
        let vhu = to_vec1(&(&v * lin.hvp(&u).unwrap()).unwrap().sum(1).unwrap());
        // Exact symmetry up to rounding of a few dozen flops.
        assert_close(&uhv, &vhu, 1e-12, &format!("{} uᵀHv = vᵀHu", case.name));
        // hessian() · v = hvp(v), and the detached cache gives the same numbers.
        let h = lin.hessian().unwrap();
        let hv2 = h
            .matmul(&v.unsqueeze(2).unwrap())
            .unwrap()
            .squeeze(2)
            .unwrap();
        let hv = lin.hvp(&v).unwrap();
        assert_close(
            &flat(&hv2),
            &flat(&hv),
            1e-12,
            &format!("{} H·v", case.name),
        );
        let hvd = lin.detach().hvp(&v).unwrap();
        assert_close(
            &flat(&hvd),
            &flat(&hv),
            0.0,
            &format!("{} detached", case.name),
        );
        // hvp_many with K = 2 probes.
        let uv = Tensor::stack(&[&u, &v], 1).unwrap();
        let many = lin.hvp_many(&uv).unwrap();
        let hv_many = many.narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
        assert_close(
            &flat(&hv_many),
            &flat(&hv),
            1e-12,
            &format!("{} hvp_many", case.name),
        );
    }
}

fn min_eigenvalues(h: &Tensor) -> Vec<f64> {
    let (b, d, _) = h.dims3().unwrap();
    let data = flat(h);
    (0..b)
        .map(|k| {
            let m = nalgebra::DMatrix::from_row_slice(d, d, &data[k * d * d..(k + 1) * d * d]);
            let sym = (&m + m.transpose()) * 0.5;
            sym.symmetric_eigen().eigenvalues.min()
        })
        .collect()
}

#[test]
fn hessian_is_positive_semidefinite_at_random_points() {
    let mut rng = StdRng::seed_from_u64(13);
    for seed in 0..2 {
        for case in all_cases(DIM, 100 + seed) {
            let x = randn(&mut rng, (BATCH, DIM), 2.0);
            let h = case.net.linearize(&x).unwrap().hessian().unwrap();
            for lam in min_eigenvalues(&h) {
                assert!(lam >= -1e-10, "{}: smallest eigenvalue {lam}", case.name);
            }
        }
    }
}

#[test]
fn hessian_is_positive_semidefinite_for_larger_networks() {
    use candle_core::DType;
    use candle_nn::{VarBuilder, VarMap};
    use icnn::{ActivationKind, ConvexPotential, Icnn2, Icnn2Config, Icnn3, Icnn3Config};
    let mut rng = StdRng::seed_from_u64(14);
    let d = 12;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let cfg = Icnn2Config {
        dim: d,
        width: 32,
        depth: 6,
        ..Default::default()
    };
    let a = Icnn2::new(vb.pp("a"), &cfg, &mut rng).unwrap();
    let cfg = Icnn3Config {
        dim: d,
        width: 32,
        depth: 6,
        activation: ActivationKind::GaussianSoftplus,
        zero_shift: true,
        symm_act_first: true,
    };
    let b = Icnn3::new(vb.pp("b"), &cfg, &mut rng).unwrap();
    let x0 = randn(&mut rng, (64, d), 1.0);
    a.potential(&x0).unwrap();
    b.potential(&x0).unwrap();
    crate::common::perturb(&varmap, &mut rng, 0.5);
    let nets: [&dyn ConvexPotential; 2] = [&a, &b];
    for net in nets {
        let x = randn(&mut rng, (16, d), 2.0);
        let h = net.linearize(&x).unwrap().hessian().unwrap();
        for lam in min_eigenvalues(&h) {
            assert!(lam >= -1e-10, "smallest eigenvalue {lam}");
        }
    }
}

#[test]
fn potential_is_convex_along_random_segments() {
    let mut rng = StdRng::seed_from_u64(15);
    for case in all_cases(DIM, 4) {
        let a = randn(&mut rng, (BATCH, DIM), 2.0);
        let b = randn(&mut rng, (BATCH, DIM), 2.0);
        let fa = to_vec1(&case.net.potential(&a).unwrap());
        let fb = to_vec1(&case.net.potential(&b).unwrap());
        for k in 1..10 {
            let t = k as f64 / 10.0;
            let x = ((&a * (1.0 - t)).unwrap() + (&b * t).unwrap()).unwrap();
            let fx = to_vec1(&case.net.potential(&x).unwrap());
            for i in 0..BATCH {
                let chord = (1.0 - t) * fa[i] + t * fb[i];
                assert!(
                    fx[i] <= chord + 1e-12 * (1.0 + chord.abs()),
                    "{}: F(x_t) = {} > chord {}",
                    case.name,
                    fx[i],
                    chord
                );
            }
        }
    }
}

#[test]
fn linearization_potential_matches_potential() {
    let mut rng = StdRng::seed_from_u64(16);
    for case in all_cases(DIM, 5) {
        let x = randn(&mut rng, (BATCH, DIM), 1.0);
        let lin = case.net.linearize(&x).unwrap();
        let f = case.net.potential(&x).unwrap();
        assert_close(&to_vec1(&lin.potential()), &to_vec1(&f), 1e-14, &case.name);
        let (f2, g2) = case.net.value_and_gradient(&x).unwrap();
        assert_close(&to_vec1(&f2), &to_vec1(&f), 1e-14, &case.name);
        assert_close(&flat(&g2), &flat(&lin.gradient()), 1e-14, &case.name);
    }
}
