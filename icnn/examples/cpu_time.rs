//! CPU-time (not wall-clock) measurements of the benchmark workload, for machines whose
//! cores are shared: `Icnn2`, B = 1024, d = 43, width 64, depth 10, f32, CPU.
//!
//! ```text
//! cargo run -p icnn --release --example cpu_time              # explicit route
//! cargo run -p icnn --release --example cpu_time -- autodiff  # candle higher-order autodiff
//! ```
//! Each line reports the mean wall time and the mean process CPU time (user + system, from
//! `/proc/self/stat`) per call, over at least one CPU-second.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use icnn::{ConvexPotential, Icnn2, Icnn2Config};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// Process CPU time (user + system) in seconds (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(p) = s.rfind(')') else { return 0.0 };
    let f: Vec<&str> = s[p + 2..].split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn measure<T, F: FnMut() -> T>(name: &str, mut f: F) -> f64 {
    for _ in 0..2 {
        f();
    }
    let (t, c) = (Instant::now(), cpu_seconds());
    let mut n = 0usize;
    while (cpu_seconds() - c < 1.0 && t.elapsed().as_secs_f64() < 20.0) || n < 5 {
        f();
        n += 1;
    }
    let wall = t.elapsed().as_secs_f64() * 1e3 / n as f64;
    let cpu = (cpu_seconds() - c) * 1e3 / n as f64;
    println!("{name:48} wall {wall:9.2} ms   cpu {cpu:9.2} ms   ({n} calls)");
    cpu
}

fn randn(rng: &mut StdRng, shape: (usize, usize)) -> Tensor {
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| Distribution::<f32>::sample(&StandardNormal, rng))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

fn main() -> icnn::Result<()> {
    let autodiff = std::env::args().any(|a| a == "autodiff");
    if autodiff {
        // SAFETY: single-threaded at this point; read by candle on the first backward.
        unsafe { std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1") };
    }
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = Icnn2Config {
        dim: 43,
        width: 64,
        depth: 10,
        ..Default::default()
    };
    let mut rng = StdRng::seed_from_u64(0);
    let net = Icnn2::new(vb.pp("icnn"), &cfg, &mut rng)?;
    let (x, u, v) = (
        randn(&mut rng, (1024, 43)),
        randn(&mut rng, (1024, 43)),
        randn(&mut rng, (1024, 43)),
    );
    net.potential(&x)?;
    let pot = measure("potential", || net.potential(&x));
    if autodiff {
        let xv = Var::from_tensor(&x)?;
        let grad = |xv: &Var| -> icnn::Result<Tensor> {
            let f = net.potential(xv.as_tensor())?.sum_all()?;
            let g = f.backward()?;
            g.get(xv.as_tensor())
                .cloned()
                .ok_or_else(|| icnn::IcnnError::Shape("no gradient".into()))
        };
        measure("autodiff gradient (forward + backward)", || grad(&xv));
        let gx = grad(&xv)?;
        let hvp = measure("autodiff hvp (backward of cached gradient graph)", || {
            (&gx * &v)?.sum_all()?.backward()
        });
        measure("autodiff surrogate param-grad (3 backwards)", || {
            let gx = grad(&xv)?;
            let g = (&gx * &u)?.sum_all()?.backward()?;
            let hv = g
                .get(xv.as_tensor())
                .cloned()
                .ok_or_else(|| icnn::IcnnError::Shape("no hvp".into()))?;
            Ok::<_, icnn::IcnnError>((hv * &v)?.sum_all()?.backward()?)
        });
        println!("autodiff hvp / potential (cpu): {:.2}", hvp / pot);
    } else {
        measure("linearize (forward + gradient)", || net.linearize(&x));
        measure("value_and_gradient", || net.value_and_gradient(&x));
        let lin = net.linearize(&x)?.detach();
        let hvp = measure("hvp (detached cache)", || lin.hvp(&v));
        measure("surrogate param-grad (linearize+hvp+backward)", || {
            let lin = net.linearize(&x)?;
            Ok::<_, icnn::IcnnError>((lin.hvp(&u)? * &v)?.sum_all()?.backward()?)
        });
        println!("explicit hvp / potential (cpu): {:.2}", hvp / pot);
    }
    Ok(())
}
