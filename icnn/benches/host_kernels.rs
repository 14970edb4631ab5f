//! CPU f32 benchmarks of the host kernels (`HostLinearization`, the training step's route
//! on the CPU): the forward pass with its caches (`host_linearize`), a Hessian-vector product
//! on the whole batch and on the rows CG still runs (`hvp_active`: the first half of the
//! batch, one run of rows; every third row, runs of one row), and the tracked pair
//! `(∇F, uᵀ∇²F v)` with its backward pass. Two networks: the reference tabular `Icnn2`
//! (B = 1024, d = 43, width 64, depth 10; its element-wise passes run on the calling
//! thread) and the MNIST flow's first-scale `ConvIcnn` (B = 64, 1×28×28; its passes are
//! split over the pool).
//!
//! Run: `cargo bench -p icnn --bench host_kernels` (`RAYON_NUM_THREADS` threads).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{Criterion, criterion_group, criterion_main};
use icnn::{ConvIcnn, ConvIcnnConfig, ConvexPotential, Icnn2, Icnn2Config, ImageShape};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

fn randn(rng: &mut StdRng, shape: (usize, usize)) -> Tensor {
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| StandardNormal.sample(rng))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn bench_net(c: &mut Criterion, name: &str, net: &dyn ConvexPotential, b: usize, d: usize) {
    let mut rng = StdRng::seed_from_u64(1);
    let (x, u, v) = (
        randn(&mut rng, (b, d)),
        randn(&mut rng, (b, d)),
        randn(&mut rng, (b, d)),
    );
    let first_half: Vec<bool> = (0..b).map(|i| i < b / 2).collect();
    let every_third: Vec<bool> = (0..b).map(|i| i % 3 == 0).collect();
    let mut g = c.benchmark_group(name);
    g.sample_size(20);
    g.bench_function("host_linearize", |bn| {
        bn.iter(|| net.host_linearize(&x).unwrap().unwrap())
    });
    let lin = net.host_linearize(&x).unwrap().unwrap();
    g.bench_function("hvp", |bn| bn.iter(|| lin.hvp(&v).unwrap()));
    g.bench_function("hvp_active(first half)", |bn| {
        bn.iter(|| lin.hvp_active(&v, &first_half).unwrap())
    });
    g.bench_function("hvp_active(every third)", |bn| {
        bn.iter(|| lin.hvp_active(&v, &every_third).unwrap())
    });
    g.bench_function("gradient_and_bilinear+backward", |bn| {
        bn.iter(|| {
            let (grad, q) = lin.gradient_and_bilinear(&u, &v).unwrap();
            let s = (grad.sum_all().unwrap() + q.sum_all().unwrap()).unwrap();
            s.backward().unwrap()
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    // The default width 64 and depth 10 are the reference's tabular network.
    let cfg = Icnn2Config {
        dim: 43,
        ..Default::default()
    };
    let dense = Icnn2::new(vb.pp("dense"), &cfg, &mut rng).unwrap();
    bench_net(c, "host_icnn2_b1024_d43_w64_l10_f32", &dense, 1024, 43);
    let image = ImageShape::new(1, 28, 28);
    let cfg = ConvIcnnConfig {
        image,
        ..Default::default()
    };
    let conv = ConvIcnn::new(vb.pp("conv"), &cfg, &mut rng).unwrap();
    bench_net(
        c,
        "host_conv_icnn_1x28x28_w64_l3_b64_f32",
        &conv,
        64,
        image.dim(),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
