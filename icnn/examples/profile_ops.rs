//! Temporary: time individual candle ops at the benchmark size.
use candle_core::{DType, Device, Tensor};
use std::time::Instant;

/// Process CPU time (user + system) in seconds, from /proc/self/stat (10 ms ticks).
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn time<F: FnMut() -> Tensor>(name: &str, mut f: F) {
    for _ in 0..3 {
        f();
    }
    let t = Instant::now();
    let c = cpu_seconds();
    let mut n = 0;
    while cpu_seconds() - c < 1.0 || n < 5 {
        f();
        n += 1;
    }
    let cpu = (cpu_seconds() - c) * 1e6 / n as f64;
    println!(
        "{name:40} wall {:9.1} µs   cpu {:9.1} µs",
        t.elapsed().as_secs_f64() * 1e6 / n as f64,
        cpu
    );
}

fn main() {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1., (1024, 64), &dev).unwrap();
    let b = Tensor::randn(0f32, 1., (1024, 64), &dev).unwrap();
    let w = Tensor::randn(0f32, 1., (64, 64), &dev).unwrap();
    let x = Tensor::randn(0f32, 1., (1024, 43), &dev).unwrap();
    let wx = Tensor::randn(0f32, 1., (64, 43), &dev).unwrap();
    let bias = Tensor::randn(0f32, 1., 64, &dev).unwrap();
    time("matmul a w", || a.matmul(&w).unwrap());
    time("matmul a w.t()", || a.matmul(&w.t().unwrap()).unwrap());
    time("matmul x wx.t()", || x.matmul(&wx.t().unwrap()).unwrap());
    time("add", || (&a + &b).unwrap());
    time("mul", || (&a * &b).unwrap());
    time("broadcast_add bias", || a.broadcast_add(&bias).unwrap());
    time("exp", || a.exp().unwrap());
    time("affine", || a.affine(2.0, 1.0).unwrap());
    let wt = w.t().unwrap().contiguous().unwrap();
    time("matmul a wt(contig)", || a.matmul(&wt).unwrap());
    let wxt = wx.t().unwrap().contiguous().unwrap();
    time("matmul x wxt(contig)", || x.matmul(&wxt).unwrap());
    let wbig = Tensor::randn(0f32, 1., (43, 640), &dev).unwrap();
    time("matmul x (43x640)", || x.matmul(&wbig).unwrap());
    let big = x.matmul(&wbig).unwrap();
    let view = big.narrow(1, 64, 64).unwrap();
    time("add narrow view", || (&a + &view).unwrap());
    let act = icnn::Activation::new(icnn::ActivationKind::Softplus);
    time("fused softplus value", || act.value(&a).unwrap());
    time("fused softplus triple", || {
        act.eval(&a, true).unwrap().value
    });
    time("composed softplus value", || {
        act.eval_composed(&a, false).unwrap().value
    });
    time("softplus weights 64x64", || icnn::softplus(&w).unwrap());
    let _ = DType::F32;
    use candle_nn::{VarBuilder, VarMap};
    use icnn::ConvexPotential;
    use rand::SeedableRng;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let cfg = icnn::Icnn2Config {
        dim: 43,
        width: 64,
        depth: 10,
        ..Default::default()
    };
    let net = icnn::Icnn2::new(
        vb.pp("icnn"),
        &cfg,
        &mut rand::rngs::StdRng::seed_from_u64(0),
    )
    .unwrap();
    net.potential(&x).unwrap();
    time("potential", || net.potential(&x).unwrap());
    time("linearize", || net.linearize(&x).unwrap().gradient());
    let lin = net.linearize(&x).unwrap().detach();
    let v = x.randn_like(0.0, 1.0).unwrap();
    time("hvp", || lin.hvp(&v).unwrap());
    let lin = net.linearize(&x).unwrap();
    let s = (lin.hvp(&v).unwrap() * &v).unwrap().sum_all().unwrap();
    time("backward", || {
        s.backward().unwrap();
        v.clone()
    });
}

#[allow(dead_code)]
fn unused() {}
