//! The autodiff route at the same size as `icnn.rs` (B = 1024, d = 43, width 64, depth 10,
//! f32, CPU): gradient by candle's backward of the potential, HVP by double backward with
//! `CANDLE_GRAD_DO_NOT_DETACH=1`, and the surrogate's parameter gradient by triple backward.

use candle_core::{DType, Device, Tensor, Var};
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

fn bench(c: &mut Criterion) {
    // SAFETY: set before any candle op and before criterion starts any thread.
    unsafe { std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1") };
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
    let xv = Var::from_tensor(&x).unwrap();
    let grad = |xv: &Var| {
        let f = net.potential(xv.as_tensor()).unwrap().sum_all().unwrap();
        f.backward().unwrap().get(xv.as_tensor()).unwrap().clone()
    };
    let mut g = c.benchmark_group("icnn2_b1024_d43_w64_l10_f32_autodiff");
    g.sample_size(20);
    g.bench_function("gradient(forward+backward)", |b| b.iter(|| grad(&xv)));
    let gx = grad(&xv);
    g.bench_function("hvp(backward of cached gradient graph)", |b| {
        b.iter(|| {
            (&gx * &v)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(xv.as_tensor())
                .unwrap()
                .clone()
        })
    });
    g.bench_function("surrogate_param_grad(triple backward)", |b| {
        b.iter(|| {
            let gx = grad(&xv);
            let hv = (&gx * &u)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(xv.as_tensor())
                .unwrap()
                .clone();
            (hv * &v).unwrap().sum_all().unwrap().backward().unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
