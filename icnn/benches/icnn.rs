//! CPU f32 benchmarks at the reference tabular default: B = 1024, d = 43, width 64, depth 10
//! (`Icnn2`). Explicit route: potential, linearize (forward + gradient), HVP on the detached
//! cache, and the parameter gradient of the surrogate `uᵀHv`. The autodiff route (candle's
//! higher-order backward) is in `icnn_autodiff.rs` (it needs `CANDLE_GRAD_DO_NOT_DETACH=1`,
//! which would slow this file's backward passes).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{Criterion, criterion_group, criterion_main};
use icnn::{ConvexPotential, Icnn2, Icnn2Config};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

const B: usize = 1024;
const D: usize = 43;

fn randn(rng: &mut StdRng, shape: (usize, usize)) -> Tensor {
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| StandardNormal.sample(rng))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn setup() -> (VarMap, Icnn2, Tensor, Tensor, Tensor) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = Icnn2Config {
        dim: D,
        width: 64,
        depth: 10,
        ..Default::default()
    };
    let mut rng = StdRng::seed_from_u64(0);
    let net = Icnn2::new(vb.pp("icnn"), &cfg, &mut rng).unwrap();
    let x = randn(&mut rng, (B, D));
    let u = randn(&mut rng, (B, D));
    let v = randn(&mut rng, (B, D));
    net.potential(&x).unwrap();
    (varmap, net, x, u, v)
}

fn bench(c: &mut Criterion) {
    let (_varmap, net, x, u, v) = setup();
    let mut g = c.benchmark_group("icnn2_b1024_d43_w64_l10_f32");
    g.sample_size(30);
    g.bench_function("potential", |b| b.iter(|| net.potential(&x).unwrap()));
    g.bench_function("linearize(forward+gradient)", |b| {
        b.iter(|| net.linearize(&x).unwrap())
    });
    g.bench_function("value_and_gradient", |b| {
        b.iter(|| net.value_and_gradient(&x).unwrap())
    });
    let lin = net.linearize(&x).unwrap().detach();
    g.bench_function("hvp(detached)", |b| b.iter(|| lin.hvp(&v).unwrap()));
    g.bench_function("surrogate_param_grad(linearize+hvp+backward)", |b| {
        b.iter(|| {
            let lin = net.linearize(&x).unwrap();
            let s = (lin.hvp(&u).unwrap() * &v).unwrap().sum_all().unwrap();
            s.backward().unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
