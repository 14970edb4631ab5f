//! The amortised CP-Flow posterior `q(z | x)`: its density is normalised for a fixed
//! context, the SLQ `log q` agrees with the exact one within Monte-Carlo error, gradients
//! reach a tiny linear encoder exactly (finite differences) and, through the CG surrogate,
//! in expectation.

use crate::posterior_common::*;
use candle_core::DType;
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use cpflow::posterior::{AmortizedPosterior, PosteriorConfig, reference_vae_surrogate_params};
use cpflow::{CpflowError, FloatType, InverseParams, SlqConfig, SurrogateParams};
use rand::SeedableRng;

/// For a fixed encoder output (one context row, fixed μ, σ) the 2-D density `q(z | x)`,
/// evaluated on a grid through the inverse flow, integrates to one; a second context gives
/// another density, also normalised. The grid covers the sample range plus a full range on
/// each side (≈ 10 standard deviations), so the truncated mass is far below 1e-4; the
/// midpoint rule on a smooth density with ≥ 40 cells per standard deviation-scale is
/// accurate to far better than 1e-3. Tolerance 5e-3.
#[test]
fn conditional_density_integrates_to_one() {
    let (_vm, q) = tiny_posterior(2, 3, 2, 1);
    let (mu, ls) = ([0.3f64, -0.5], [-0.2f64, 0.1]);
    let contexts = [[0.8f64, -0.4, 1.1], [-1.0, 0.5, 0.0]];
    let n_init = 256;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    // Initialise on varied contexts, as on a VAE batch (a constant context would give the
    // PICNN's context ActNorm a zero variance and a 1e6 scale).
    q.initialize(
        &repeat_row(&mu, n_init),
        &repeat_row(&ls, n_init),
        &normal(n_init, 3, 1.0, 3),
        &mut rng,
    )
    .unwrap();
    let mut logq_at_origin = Vec::new();
    for ctx in &contexts {
        // Extent of the density from 2,000 samples.
        let m = 2000;
        let s = q
            .sample_with_log_q_exact(
                &repeat_row(&mu, m),
                &repeat_row(&ls, m),
                &repeat_row(ctx, m),
                &mut rng,
            )
            .unwrap();
        let zs = s.z.to_vec2::<f64>().unwrap();
        let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
        for z in &zs {
            for j in 0..2 {
                lo[j] = lo[j].min(z[j]);
                hi[j] = hi[j].max(z[j]);
            }
        }
        let n = 110;
        let mut g = Vec::with_capacity(n * n * 2);
        let mut cell = 1.0;
        let mut axes = [vec![], vec![]];
        for j in 0..2 {
            let span = hi[j] - lo[j];
            let (a, b) = (lo[j] - span, hi[j] + span);
            let h = (b - a) / n as f64;
            cell *= h;
            axes[j] = (0..n).map(|i| a + (i as f64 + 0.5) * h).collect();
        }
        for x in &axes[0] {
            for y in &axes[1] {
                g.push(*x);
                g.push(*y);
            }
        }
        let grid = Tensor::from_vec(g, (n * n, 2), &Device::Cpu).unwrap();
        // A residual of 1e-6 moves each log q by ~1e-6 (H ⪰ sp(w₀)·I up to the ActNorm
        // scales): far below the mass tolerance.
        let params = InverseParams {
            abs_tolerance: Some(1e-6),
            ..Default::default()
        };
        let dens = q
            .log_q_exact_at(
                &grid,
                &repeat_row(&mu, n * n),
                &repeat_row(&ls, n * n),
                &repeat_row(ctx, n * n),
                &params,
            )
            .unwrap();
        assert!(dens.converged, "inversion residual {}", dens.max_residual);
        let mass: f64 = to_vec(&dens.log_q).iter().map(|l| l.exp()).sum::<f64>() * cell;
        println!(
            "context {ctx:?}: ∫ q = {mass:.8} (max inversion residual {:.1e})",
            dens.max_residual
        );
        assert!((mass - 1.0).abs() < 5e-3, "∫ q = {mass}");
        // The sampled points' log q agrees with the density evaluated through the inverse.
        let k = 16;
        let back = q
            .log_q_exact_at(
                &s.z.narrow(0, 0, k).unwrap(),
                &repeat_row(&mu, k),
                &repeat_row(&ls, k),
                &repeat_row(ctx, k),
                &params,
            )
            .unwrap();
        let d = to_vec(&(back.log_q - s.log_q.narrow(0, 0, k).unwrap()).unwrap());
        assert!(d.iter().all(|v| v.abs() < 1e-4), "{d:?}");
        let origin = q
            .log_q_exact_at(
                &zeros(1, 2),
                &repeat_row(&mu, 1),
                &repeat_row(&ls, 1),
                &repeat_row(ctx, 1),
                &params,
            )
            .unwrap();
        logq_at_origin.push(to_vec(&origin.log_q)[0]);
    }
    // Per-row contexts (the context rows follow the solver's row subsets) recover the sampled
    // log q too.
    let k = 8;
    let (mu_k, ls_k, h_k) = (repeat_row(&mu, k), repeat_row(&ls, k), normal(k, 3, 1.0, 4));
    let s = q
        .sample_with_log_q_exact(&mu_k, &ls_k, &h_k, &mut rng)
        .unwrap();
    let params = InverseParams {
        abs_tolerance: Some(1e-6),
        ..Default::default()
    };
    let back = q.log_q_exact_at(&s.z, &mu_k, &ls_k, &h_k, &params).unwrap();
    assert!(back.converged, "residual {}", back.max_residual);
    let d = to_vec(&(back.log_q - s.log_q).unwrap());
    assert!(d.iter().all(|v| v.abs() < 1e-4), "{d:?}");
    // The context changes the density.
    assert!(
        (logq_at_origin[0] - logq_at_origin[1]).abs() > 1e-2,
        "{logq_at_origin:?}"
    );
}

/// Same noise, same sample: the SLQ estimate of `log q` (1,000 Rademacher probes, `d`
/// Lanczos steps, so each probe's quadrature is exact and the estimate is unbiased) is
/// within 4 reported standard errors of the exact value for every sample, and the
/// standard errors are small enough for that to mean something.
#[test]
fn slq_log_q_agrees_with_exact_within_monte_carlo_error() {
    let (d, b) = (5, 4);
    let (_vm, q) = tiny_posterior(d, 3, 2, 11);
    let mu = normal(b, d, 0.5, 12);
    let ls = normal(b, d, 0.2, 13);
    let h = normal(b, 3, 1.0, 14);
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    q.initialize(&mu, &ls, &h, &mut rng).unwrap();
    let eps = q.draw_noise(b, &mut rng).unwrap();
    let exact = q.transform_noise_exact(&mu, &ls, &h, &eps).unwrap();
    let params = SlqConfig {
        probes: 1000,
        steps: d,
    };
    let slq = q
        .transform_noise_slq(&mu, &ls, &h, &eps, &params, &mut rng)
        .unwrap();
    assert!(max_abs(&(exact.z.detach() - &slq.z).unwrap()) < 1e-12);
    let (e, s) = (to_vec(&exact.log_q), to_vec(&slq.log_q));
    for i in 0..b {
        let se = slq.std_err[i];
        println!("sample {i}: exact {:.5}, SLQ {:.5} ± {se:.5}", e[i], s[i]);
        assert!(se > 0.0 && se < 0.05, "standard error {se}");
        assert!(
            (e[i] - s[i]).abs() < 4.0 * se,
            "sample {i}: {} vs {} ± {se}",
            e[i],
            s[i]
        );
    }
    // The flow's log-det is far larger than the error bars (the comparison is informative).
    let ld = to_vec(&exact.log_det);
    assert!(
        ld.iter()
            .zip(&slq.std_err)
            .all(|(l, se)| l.abs() > 20.0 * se),
        "{ld:?}"
    );
}

fn max_abs(t: &Tensor) -> f64 {
    to_vec(t).iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// A tiny linear "encoder" `x ↦ (μ, log σ, h)` made of candle variables.
struct Encoder {
    vars: Vec<Var>, // [A_mu, b_mu, A_ls, b_ls, A_h, b_h]
}

impl Encoder {
    fn new(dx: usize, d: usize, dc: usize, seed: u64) -> Self {
        let shapes = [(dx, d), (1, d), (dx, d), (1, d), (dx, dc), (1, dc)];
        let scales = [0.5, 0.2, 0.3, 0.1, 0.8, 0.3];
        let vars = shapes
            .iter()
            .zip(scales)
            .enumerate()
            .map(|(i, (&(r, c), s))| Var::from_tensor(&normal(r, c, s, seed + i as u64)).unwrap())
            .collect();
        Encoder { vars }
    }

    fn forward(&self, x: &Tensor) -> [Tensor; 3] {
        let lin = |k: usize| {
            x.matmul(self.vars[k].as_tensor())
                .unwrap()
                .broadcast_add(self.vars[k + 1].as_tensor())
                .unwrap()
        };
        [lin(0), lin(2), lin(4)]
    }
}

/// `Σ_b [log q(z_K | x_b) − log N(z_K; 0, I)]` (the KL estimate of the ELBO) with the exact
/// log-det, for fixed noise.
fn exact_objective(q: &AmortizedPosterior, enc: &Encoder, x: &Tensor, eps: &Tensor) -> Tensor {
    let [mu, ls, h] = enc.forward(x);
    let s = q.transform_noise_exact(&mu, &ls, &h, eps).unwrap();
    (s.log_q - standard_normal_log_prob(&s.z))
        .unwrap()
        .sum_all()
        .unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

fn grads(loss: &Tensor, vars: &[Var]) -> Vec<Vec<f64>> {
    let g = loss.backward().unwrap();
    vars.iter()
        .map(|v| match g.get(v.as_tensor()) {
            Some(t) => to_vec(t),
            None => vec![0.0; v.elem_count()],
        })
        .collect()
}

/// Central finite differences of `f` w.r.t. entry `i` of `var`.
fn central_difference(var: &Var, i: usize, step: f64, mut f: impl FnMut() -> f64) -> f64 {
    let orig = to_vec(var.as_tensor());
    let set = |delta: f64| {
        let mut v = orig.clone();
        v[i] += delta;
        var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    };
    set(step);
    let up = f();
    set(-step);
    let down = f();
    set(0.0);
    (up - down) / (2.0 * step)
}

/// The exact-log-det objective's gradient w.r.t. every encoder weight (hence w.r.t. μ,
/// log σ and, through the PICNNs' context paths, h) and w.r.t. one entry of every flow
/// variable matches central finite differences. Step 1e-5 in f64: truncation error
/// ~1e-10·|J'''| and round-off ~1e-16·|J|/1e-5 ≈ 1e-10, so a tolerance of 1e-6·(1 + |g|)
/// has a wide margin while a missing path gives O(|g|) errors.
#[test]
fn exact_gradients_reach_the_encoder_and_match_finite_differences() {
    let (dx, d, dc, b) = (3, 2, 2, 3);
    let (_vm, q) = tiny_posterior(d, dc, 2, 21);
    let enc = Encoder::new(dx, d, dc, 22);
    let x = normal(b, dx, 1.0, 23);
    let mut rng = rand::rngs::StdRng::seed_from_u64(24);
    let [mu, ls, h] = enc.forward(&x);
    q.initialize(&mu, &ls, &h, &mut rng).unwrap();
    let eps = q.draw_noise(b, &mut rng).unwrap();
    let g_enc = grads(&exact_objective(&q, &enc, &x, &eps), &enc.vars);
    let flow_vars = q.trainable_vars();
    let g_flow = grads(&exact_objective(&q, &enc, &x, &eps), &flow_vars);
    let step = 1e-5;
    let mut checked = 0;
    for (var, g) in enc.vars.iter().zip(&g_enc) {
        for (i, gi) in g.iter().enumerate() {
            let fd = central_difference(var, i, step, || {
                scalar(&exact_objective(&q, &enc, &x, &eps))
            });
            assert!(
                (gi - fd).abs() < 1e-6 * (1.0 + gi.abs()),
                "encoder entry {i}: autodiff {gi}, FD {fd}"
            );
            checked += 1;
        }
    }
    for (var, g) in flow_vars.iter().zip(&g_flow) {
        let fd = central_difference(var, 0, step, || {
            scalar(&exact_objective(&q, &enc, &x, &eps))
        });
        assert!(
            (g[0] - fd).abs() < 1e-6 * (1.0 + g[0].abs()),
            "flow var: autodiff {}, FD {fd}",
            g[0]
        );
        checked += 1;
    }
    println!("{checked} derivatives checked against finite differences");
    // The context path carries a real gradient (the check above is not vacuous for h).
    let h_norm: f64 = g_enc[4]
        .iter()
        .chain(&g_enc[5])
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt();
    assert!(
        h_norm > 1e-2,
        "gradient w.r.t. the context weights {h_norm}"
    );
}

fn rel_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let num: f64 = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let den: f64 = b.iter().flatten().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// The CG-surrogate gradient (4,000 Rademacher probes per sample, CG to 1e-12) equals the
/// exact gradient w.r.t. the encoder and the flow in expectation: the Hutchinson error is
/// O(1/√(B·P)) ≈ 1 % of the log-det gradient, so a 4 % tolerance leaves margin, while
/// dropping the log-dets moves the gradient by far more than that.
#[test]
fn surrogate_gradient_matches_exact_gradient_in_expectation() {
    let (dx, d, dc, b) = (3, 3, 2, 4);
    let (_vm, q) = tiny_posterior(d, dc, 2, 31);
    let enc = Encoder::new(dx, d, dc, 32);
    let x = normal(b, dx, 1.0, 33);
    let mut rng = rand::rngs::StdRng::seed_from_u64(34);
    let [mu, ls, h] = enc.forward(&x);
    q.initialize(&mu, &ls, &h, &mut rng).unwrap();
    let eps = q.draw_noise(b, &mut rng).unwrap();
    let mut vars = enc.vars.clone();
    vars.extend(q.trainable_vars());
    let exact = grads(&exact_objective(&q, &enc, &x, &eps), &vars);
    let params = SurrogateParams {
        probes: 4000,
        cg_atol: 1e-12,
        cg_rtol: 0.0,
        cg_max_iters: Some(d),

        ..Default::default()
    };
    let [mu, ls, h] = enc.forward(&x);
    let sur = q
        .transform_noise_surrogate(&mu, &ls, &h, &eps, &params, &mut rng)
        .unwrap();
    assert_eq!(sur.cg.converged, 2 * b * 4000);
    let loss = (sur.log_q_surrogate - standard_normal_log_prob(&sur.z))
        .unwrap()
        .sum_all()
        .unwrap();
    let approx = grads(&loss, &vars);
    let rel = rel_diff(&approx, &exact);
    let rel_enc = rel_diff(&approx[..6], &exact[..6]);
    println!("surrogate vs exact gradient: relative error {rel:.4} (encoder only {rel_enc:.4})");
    assert!(rel < 0.04 && rel_enc < 0.04, "{rel} {rel_enc}");
    // Without the blocks' log-dets the gradient is far from the exact one.
    let [mu, ls, h] = enc.forward(&x);
    let s = q.transform_noise_exact(&mu, &ls, &h, &eps).unwrap();
    let log_q0 = (s.log_q + s.log_det).unwrap();
    let no_ld = (log_q0 - standard_normal_log_prob(&s.z))
        .unwrap()
        .sum_all()
        .unwrap();
    let rel_no_ld = rel_diff(&grads(&no_ld, &vars), &exact);
    println!("gradient without the log-dets vs exact: relative difference {rel_no_ld:.4}");
    assert!(rel_no_ld > 0.2, "{rel_no_ld}");
}

/// f32 works on every path; misuse is an error, not a panic.
#[test]
fn f32_paths_and_input_errors() {
    let cfg = PosteriorConfig::reference_vae(3, 2)
        .with_blocks(1)
        .with_picnn(8, 2)
        .with_float(FloatType::F32);
    let q = AmortizedPosterior::new(&VarMap::new(), "q", &cfg, &Device::Cpu).unwrap();
    let f32t = |t: Tensor| t.to_dtype(DType::F32).unwrap();
    let (mu, ls, h) = (
        f32t(normal(6, 3, 1.0, 51)),
        f32t(normal(6, 3, 0.1, 52)),
        f32t(normal(6, 2, 1.0, 53)),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(54);
    assert!(matches!(
        q.sample_with_log_q_exact(&mu, &ls, &h, &mut rng),
        Err(CpflowError::NotInitialized)
    ));
    q.initialize(&mu, &ls, &h, &mut rng).unwrap();
    let e = q.sample_with_log_q_exact(&mu, &ls, &h, &mut rng).unwrap();
    assert_eq!((e.z.dtype(), e.log_q.dims()), (DType::F32, &[6][..]));
    let s = q
        .sample_with_log_q_slq(&mu, &ls, &h, &SlqConfig::default(), &mut rng)
        .unwrap();
    assert!(
        s.std_err.iter().all(|v| v.is_nan()),
        "one probe: no error estimate"
    );
    let t = q
        .sample_with_surrogate(&mu, &ls, &h, &reference_vae_surrogate_params(), &mut rng)
        .unwrap();
    t.log_q_surrogate.sum_all().unwrap().backward().unwrap();
    assert!(
        to_vec(&t.log_q0.to_dtype(DType::F64).unwrap())
            .iter()
            .all(|v| v.is_finite())
    );
    // Wrong context width, mismatched rows, non-finite inputs.
    let bad_h = f32t(normal(6, 3, 1.0, 55));
    assert!(matches!(
        q.sample_with_log_q_exact(&mu, &ls, &bad_h, &mut rng),
        Err(CpflowError::InvalidInput(_))
    ));
    let short = mu.narrow(0, 0, 5).unwrap();
    assert!(matches!(
        q.sample_with_log_q_exact(&short, &ls, &h, &mut rng),
        Err(CpflowError::InvalidInput(_))
    ));
    let nan = (&mu * f64::NAN).unwrap();
    assert!(matches!(
        q.sample_with_log_q_exact(&nan, &ls, &h, &mut rng),
        Err(CpflowError::InvalidInput(_))
    ));
}

/// Timings at the reference VAE's scale (d = 64, d_c = 256, 4 blocks, PICNN 64 × 5, f64,
/// batch 100). Not a check: `cargo test -p cpflow --test integration -- --ignored
/// --nocapture posterior_flow::reference_scale`.
#[test]
#[ignore]
fn reference_scale_timings() {
    let vm = VarMap::new();
    let q = AmortizedPosterior::new(
        &vm,
        "q",
        &PosteriorConfig::reference_vae(64, 256),
        &Device::Cpu,
    )
    .unwrap();
    println!("posterior parameters: {}", q.num_parameters());
    let b = 100;
    let (mu, ls, h) = (
        normal(b, 64, 1.0, 1),
        normal(b, 64, 0.1, 2),
        normal(b, 256, 1.0, 3),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    q.initialize(&mu, &ls, &h, &mut rng).unwrap();
    let time = |what: &str, f: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        f();
        println!("{what}: {:.3} s", t.elapsed().as_secs_f64());
    };
    time("surrogate forward + backward", &mut || {
        let s = q
            .sample_with_surrogate(&mu, &ls, &h, &reference_vae_surrogate_params(), &mut rng)
            .unwrap();
        println!("  mean CG iterations {:.1}", s.cg.mean_iterations());
        s.log_q_surrogate.sum_all().unwrap().backward().unwrap();
    });
    time("exact log q forward", &mut || {
        q.sample_with_log_q_exact(&mu, &ls, &h, &mut rng).unwrap();
    });
    time("exact log q forward + backward", &mut || {
        let s = q.sample_with_log_q_exact(&mu, &ls, &h, &mut rng).unwrap();
        s.log_q.sum_all().unwrap().backward().unwrap();
    });
    time("SLQ log q (1 probe, 10 steps)", &mut || {
        q.sample_with_log_q_slq(&mu, &ls, &h, &SlqConfig::default(), &mut rng)
            .unwrap();
    });
}

/// The detached evaluation path (`transform_noise_exact_detached`: row chunks of 43 for 64
/// latent dimensions, run in parallel) equals the whole-batch `transform_noise_exact` in f32
/// and f64 — every output, for 130 rows (three full chunks and a short one) with per-row
/// contexts — to a few units in the last place, and records no graph. Rows are independent;
/// only candle's products may round a row's last bit differently for another row count
/// (measured: `z` differs by 1 ulp of values ≤ 4, 5.6e-17 in f64 and 3.0e-8 in f32;
/// `z₀`, `log q` and the log-dets are identical). Tolerance: 4 ulps of the largest value.
#[test]
fn chunked_exact_evaluation_equals_the_whole_batch() {
    let (n, d, dc) = (130, 64, 3);
    for (float, tol) in [
        (FloatType::F64, 4.0 * f64::EPSILON),
        (FloatType::F32, 4.0 * 1.2e-7),
    ] {
        let cfg = PosteriorConfig::reference_vae(d, dc)
            .with_blocks(2)
            .with_picnn(8, 2)
            .with_float(float);
        let q = AmortizedPosterior::new(&VarMap::new(), "q", &cfg, &Device::Cpu).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let dt = q.dtype();
        let randn = |rows: usize, cols: usize, s: f64, rng: &mut rand::rngs::StdRng| {
            let v: Vec<f64> = (0..rows * cols)
                .map(|_| s * rand::Rng::sample::<f64, _>(rng, rand_distr::StandardNormal))
                .collect();
            Tensor::from_vec(v, (rows, cols), &Device::Cpu)
                .unwrap()
                .to_dtype(dt)
                .unwrap()
        };
        let (mu, ls, h) = (
            randn(n, d, 0.5, &mut rng),
            randn(n, d, 0.2, &mut rng),
            randn(n, dc, 1.0, &mut rng),
        );
        q.initialize(&mu, &ls, &h, &mut rng).unwrap();
        let eps = q.draw_noise(n, &mut rng).unwrap();
        let whole = q.transform_noise_exact(&mu, &ls, &h, &eps).unwrap();
        let chunked = q
            .transform_noise_exact_detached(&mu, &ls, &h, &eps)
            .unwrap();
        for (what, a, b) in [
            ("z0", &chunked.z0, &whole.z0),
            ("z", &chunked.z, &whole.z),
            ("log_q", &chunked.log_q, &whole.log_q),
            ("log_det", &chunked.log_det, &whole.log_det),
        ] {
            assert!(!a.track_op(), "{float:?} {what} is tracked");
            let (a, b) = (
                a.to_dtype(DType::F64).unwrap().flatten_all().unwrap(),
                b.to_dtype(DType::F64).unwrap().flatten_all().unwrap(),
            );
            let (a, b) = (a.to_vec1::<f64>().unwrap(), b.to_vec1::<f64>().unwrap());
            let diff = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            assert!(diff <= tol * scale, "{float:?} {what}: {diff:e}");
        }
    }
}
