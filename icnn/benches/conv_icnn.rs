//! CPU f32 benchmarks of the convolutional ICNN (`ConvIcnn`, the `train_img.py` default
//! width 64, depth 3) on the MNIST flow's first-scale block (1×28×28) and last-scale block
//! (16×7×7), batch 16: potential, linearize (forward + gradient), value_and_gradient, one
//! HVP on the detached cache (the CG inner loop), and the parameter gradient of the surrogate
//! `uᵀHv`. Compare `hvp(detached)` with `potential` for the HVP cost in forwards.
//!
//! Run: `cargo bench -p icnn --bench conv_icnn` (set `CANDLE_NUM_THREADS` to the cores).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{Criterion, criterion_group, criterion_main};
use icnn::{ConvIcnn, ConvIcnnConfig, ConvexPotential, ImageShape};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

const B: usize = 16;

fn randn(rng: &mut StdRng, shape: (usize, usize)) -> Tensor {
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| StandardNormal.sample(rng))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn bench_image(c: &mut Criterion, image: ImageShape) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = ConvIcnnConfig {
        image,
        ..Default::default()
    };
    let mut rng = StdRng::seed_from_u64(0);
    let net = ConvIcnn::new(vb.pp("icnn"), &cfg, &mut rng).unwrap();
    let d = image.dim();
    let (x, u, v) = (
        randn(&mut rng, (B, d)),
        randn(&mut rng, (B, d)),
        randn(&mut rng, (B, d)),
    );
    net.potential(&x).unwrap();
    let name = format!(
        "conv_icnn_{}x{}x{}_w64_l3_b{B}_f32",
        image.channels, image.height, image.width
    );
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
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

fn bench(c: &mut Criterion) {
    bench_image(c, ImageShape::new(1, 28, 28));
    bench_image(c, ImageShape::new(16, 7, 7));
}

criterion_group!(benches, bench);
criterion_main!(benches);
