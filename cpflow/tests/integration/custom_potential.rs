//! A block potential defined outside the workspace (`register_potential` +
//! `PotentialConfig::Custom`): exact densities against a finite-difference Jacobian of the
//! flow, SLQ, the surrogate's gradient against the exact NLL gradient, inversion, training,
//! save/load, and the errors of an unregistered name or a wrong dimension.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::flow_common::*;
use candle_core::{DType, Device, Tensor};
use cpflow::{
    CustomPotentialConfig, Dataset, FloatType, Flow, FlowConfig, NllEstimator, PotentialConfig,
    TrainConfig, Trainer,
};
use icnn::{ConvexPotential, HessianVectorProducts, Linear, Linearization, check_derivatives};
use rand::SeedableRng;

/// `F(x) = Σ_j s_j·softplus(w_j·x + b_j)` with `s = softplus(a) ≥ 0`: a one-hidden-layer
/// ICNN. `∇F = (s ⊙ σ(z)) W`, `∇²F v = ((s ⊙ σ'(z)) ⊙ (v Wᵀ)) W` with `z = x Wᵀ + b`.
struct Ridge {
    hidden: Linear,
    scale: Linear,
    dim: usize,
}

#[derive(Debug)]
struct RidgeHvp {
    weight: Tensor,
    curvature: Tensor,
}

impl HessianVectorProducts for RidgeHvp {
    fn hvp(&self, v: &Tensor) -> icnn::Result<Tensor> {
        Ok((v.matmul(&self.weight.t()?)? * &self.curvature)?.matmul(&self.weight)?)
    }
    fn detach(&self) -> Arc<dyn HessianVectorProducts> {
        Arc::new(RidgeHvp {
            weight: self.weight.detach(),
            curvature: self.curvature.detach(),
        })
    }
}

/// `F = Σ_j s_j·softplus(z_j)` at the pre-activations `z = x Wᵀ + …` (B, m), with
/// `s = softplus(scale)` (1, m) and `W` the `hidden` weight (m, d): value, gradient
/// `(s ⊙ σ(z)) W` and the products `((s ⊙ σ'(z)) ⊙ (v Wᵀ)) W`.
fn ridge_linearization(hidden: &Tensor, scale: &Tensor, z: &Tensor) -> icnn::Result<Linearization> {
    let s = icnn::softplus(scale)?;
    let sig = candle_nn::ops::sigmoid(z)?;
    let potential = icnn::softplus(z)?.broadcast_mul(&s)?.sum(1)?;
    let gradient = sig.broadcast_mul(&s)?.matmul(hidden)?;
    let curvature = ((&sig * (1.0 - &sig)?)?).broadcast_mul(&s)?;
    let hvp = RidgeHvp {
        weight: hidden.clone(),
        curvature,
    };
    Linearization::from_parts(potential, gradient, Arc::new(hvp))
}

impl ConvexPotential for Ridge {
    fn potential(&self, x: &Tensor) -> icnn::Result<Tensor> {
        Ok(self.linearize(x)?.potential())
    }
    fn linearize(&self, x: &Tensor) -> icnn::Result<Linearization> {
        ridge_linearization(
            &self.hidden.weight,
            &self.scale.weight,
            &self.hidden.forward(x)?,
        )
    }
    fn dim(&self) -> usize {
        self.dim
    }
}

/// Registers the ridge potential under `name` (`settings.width` hidden units; a wrong
/// `settings.report_dim` makes the builder lie about its dimension).
fn register_ridge(name: &str) {
    cpflow::register_potential(name, |vb, cfg, rng| {
        let width = cfg.settings.get("width").copied().unwrap_or(8.0) as usize;
        let hidden = Linear::new(&vb.pp("hidden"), cfg.dim, width, true, rng)?;
        let scale = Linear::new(&vb.pp("scale"), width, 1, false, rng)?;
        let dim = cfg
            .settings
            .get("report_dim")
            .map_or(cfg.dim, |d| *d as usize);
        Ok(Box::new(Ridge { hidden, scale, dim }))
    });
}

fn ridge_config(name: &str, dim: usize) -> PotentialConfig {
    PotentialConfig::Custom(CustomPotentialConfig {
        name: name.into(),
        dim,
        settings: BTreeMap::from([("width".to_string(), 32.0)]),
    })
}

fn ridge_flow(name: &str, dim: usize) -> Flow {
    let cfg = FlowConfig::tabular(dim, 2, ridge_config(name, dim)).with_float(FloatType::F64);
    Flow::new(cfg, &Device::Cpu).unwrap()
}

/// `log N(f(x)) + log|det ∂f/∂x|` at the point `row`, with `forward` the flow's map of one
/// point and its Jacobian by central differences (h = 1e-5).
fn fd_log_density(flow: &Flow, row: &[f64], forward: impl Fn(Vec<f64>) -> Vec<f64>) -> f64 {
    let (d, h) = (row.len(), 1e-5);
    let mut jac = faer::Mat::<f64>::zeros(d, d);
    for j in 0..d {
        let (mut p, mut m) = (row.to_vec(), row.to_vec());
        p[j] += h;
        m[j] -= h;
        let (fp, fm) = (forward(p), forward(m));
        for i in 0..d {
            jac[(i, j)] = (fp[i] - fm[i]) / (2.0 * h);
        }
    }
    let logdet: f64 = jac
        .partial_piv_lu()
        .U()
        .diagonal()
        .column_vector()
        .iter()
        .map(|u| u.abs().ln())
        .sum();
    let z = Tensor::from_vec(forward(row.to_vec()), (1, d), &Device::Cpu).unwrap();
    flow.prior().log_prob(&z).unwrap().to_vec1::<f64>().unwrap()[0] + logdet
}

/// The exact log-density of a 2-block flow of the custom potential equals
/// `log N(f(x)) + log|det ∂f/∂x|` with the Jacobian taken by central differences of the flow's
/// own forward map (h = 1e-5 in f64: each entry ~1e-10 off, the log-det ~1e-9; 1e-7 leaves
/// margin), SLQ agrees within its probe noise, and the built network's derivatives pass the
/// finite-difference check.
#[test]
fn exact_density_matches_finite_difference_jacobian() {
    register_ridge("ridge-density");
    let d = 3;
    let flow = ridge_flow("ridge-density", d);
    let x = data(6, d, 81);
    flow.initialize(&x).unwrap();
    let lp = flow.log_prob_exact(&x).unwrap().to_vec1::<f64>().unwrap();

    let xs = x.to_vec2::<f64>().unwrap();
    for (b, row) in xs.iter().enumerate() {
        let expected = fd_log_density(&flow, row, |r| {
            let xb = Tensor::from_vec(r, (1, d), &Device::Cpu).unwrap();
            flow.transform(&xb).unwrap().0.to_vec2::<f64>().unwrap()[0].clone()
        });
        assert!(
            (lp[b] - expected).abs() <= 1e-7,
            "row {b}: {} vs {expected}",
            lp[b]
        );
    }

    // SLQ is exact per probe at d Lanczos steps; what remains is the Hutchinson trace
    // estimator's noise, which the reported standard error measures (200 probes): within 5 of
    // them (a 5σ miss has probability < 1e-6 per row).
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let params = cpflow::SlqConfig {
        probes: 200,
        steps: d,
    };
    let slq = flow.log_prob_slq(&x, &params, &mut rng).unwrap();
    let values = slq.log_prob.to_vec1::<f64>().unwrap();
    for (b, (s, e)) in values.iter().zip(&lp).enumerate() {
        let se = slq.std_err[b];
        assert!(
            se > 0.0 && (s - e).abs() <= 5.0 * se,
            "SLQ {s} ± {se} vs exact {e}"
        );
    }

    let mut build_rng = rand::rngs::StdRng::seed_from_u64(4);
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let hidden = Linear::new(&vb.pp("hidden"), d, 12, true, &mut build_rng).unwrap();
    let scale = Linear::new(&vb.pp("scale"), 12, 1, false, &mut build_rng).unwrap();
    let net = Ridge {
        hidden,
        scale,
        dim: d,
    };
    let check = check_derivatives(&net, &x, &data(6, d, 82), 1e-5).unwrap();
    assert!(check.passes(1e-7), "{check:?}");
}

/// The CG surrogate differentiates through the custom Hessian-vector products: its
/// probe-averaged parameter gradient equals the exact NLL's (as in `training.rs` for the
/// built-in ICNNs: B = 8, P = 4000 probes, Hutchinson error ≈ 0.5%, tolerance 3%).
#[test]
fn surrogate_gradient_matches_exact_gradient() {
    register_ridge("ridge-gradient");
    let flow = ridge_flow("ridge-gradient", 3);
    let pair = surrogate_and_exact_gradients(&flow, &data(8, 3, 83), 84);
    assert!(
        pair.exact
            .iter()
            .any(|(k, _)| k.contains("icnn.hidden.weight"))
    );
    let rel = pair.relative_error();
    assert!(rel < 0.03, "relative gradient error {rel}");
}

/// Training (150 Adam steps on 8 Gaussians) lowers the validation NLL, inversion recovers the
/// data (max error ≤ 1e-8), and a
/// saved model loads back to the same densities (bit for bit) — all through the custom
/// potential.
#[test]
fn trains_inverts_saves_and_loads() {
    register_ridge("ridge-train");
    let flow = ridge_flow("ridge-train", 2);
    // A network of your own has no count from its configuration (its builder decides), so
    // neither has the flow; the built flow counts its variables.
    assert_eq!(flow.config().parameter_count(), None);
    assert!(flow.num_parameters() > 0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(61);
    let toy = |n: usize, rng: &mut rand::rngs::StdRng| {
        let pts = cpflow::toy::Toy::EightGaussians.sample(n, rng);
        Dataset::new(cpflow::toy::points_to_tensor(&pts, DType::F64, &Device::Cpu).unwrap())
    };
    let train = toy(2048, &mut rng);
    let val = toy(256, &mut rng);
    let config = TrainConfig {
        batch_size: 128,
        max_iterations: 150,
        adam: cpflow::AdamParams {
            lr: 2e-2,
            ..Default::default()
        },
        lr_schedule: cpflow::LrSchedule::Constant,
        val_every: 0,
        train_slq_every: 0,
        seed: 7,
        ..TrainConfig::default()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    flow.initialize(&train.x).unwrap();
    let before = cpflow::mean_nll(&flow, &val, &NllEstimator::Exact, 64, &mut rng).unwrap();
    let mut trainer = Trainer::new(flow, config).unwrap();
    trainer.fit(&train, Some(&val)).unwrap();
    let flow = trainer.into_flow();
    let after = cpflow::mean_nll(&flow, &val, &NllEstimator::Exact, 64, &mut rng).unwrap();
    // Measured 4.332 → 4.287: a one-layer ridge is a weak potential for 8 Gaussians; that its
    // gradient is right is checked by `surrogate_gradient_matches_exact_gradient`.
    assert!(after < before - 0.02, "validation NLL {before} → {after}");

    let (z, _) = flow.transform(&val.x).unwrap();
    let inv = flow.inverse(&z).unwrap();
    assert!(inv.report.all_converged());
    let err = max_abs_diff(&inv.x, &val.x);
    assert!(err <= 1e-8, "round trip {err}");

    let dir = std::env::temp_dir().join(format!("cpflow-custom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    flow.save(&path).unwrap();
    let loaded = Flow::load(&path, &Device::Cpu).unwrap();
    let a = flow
        .log_prob_exact(&val.x)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let b = loaded
        .log_prob_exact(&val.x)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(a, b);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An unregistered name says how to register it; a builder whose network has another
/// dimension than configured is refused, naming both.
#[test]
fn unregistered_names_and_wrong_dimensions_are_refused() {
    let cfg = FlowConfig::tabular(2, 1, ridge_config("ridge-never-registered", 2));
    let err = Flow::new(cfg, &Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("`ridge-never-registered` is not registered")
            && err.contains("cpflow::register_potential(\"ridge-never-registered\""),
        "{err}"
    );
    register_ridge("ridge-liar");
    let pot = PotentialConfig::Custom(CustomPotentialConfig {
        name: "ridge-liar".into(),
        dim: 2,
        settings: BTreeMap::from([("report_dim".to_string(), 3.0)]),
    });
    let err = Flow::new(FlowConfig::tabular(2, 1, pot), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("configured with dim = 2") && err.contains("a network of dim 3"),
        "{err}"
    );
    // Non-finite values would be saved as JSON null and never load: refused when built.
    let pot = PotentialConfig::Custom(CustomPotentialConfig {
        name: "ridge-liar".into(),
        dim: 2,
        settings: BTreeMap::from([("alpha".to_string(), f64::INFINITY)]),
    });
    let err = Flow::new(FlowConfig::tabular(2, 1, pot), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("setting `alpha`") && err.contains("must be finite"),
        "{err}"
    );
    let mut cfg = FlowConfig::tabular(2, 1, ridge_config("ridge-liar", 2));
    if let cpflow::LayerConfig::Cpf(b) = &mut cfg.layers[1] {
        b.bias_w1 = f64::NAN;
    }
    let err = Flow::new(cfg, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("bias_w1 must be finite"), "{err}");
}

/// `F(x; c) = Σ_j s_j·softplus(w_j·x + u_j·c + b_j)`: the ridge with a context entering the
/// pre-activations (convex in `x` for every `c`; the Hessian-vector products are the ridge's
/// at the shifted pre-activations).
struct ConditionalRidge {
    hidden: Linear,
    gate: Linear,
    scale: Linear,
    dim: usize,
}

impl icnn::ConditionalConvexPotential for ConditionalRidge {
    fn potential_with_context(&self, x: &Tensor, c: &Tensor) -> icnn::Result<Tensor> {
        Ok(self.linearize_with_context(x, c)?.potential())
    }
    fn linearize_with_context(&self, x: &Tensor, c: &Tensor) -> icnn::Result<Linearization> {
        let z = (self.hidden.forward(x)? + self.gate.forward(c)?)?;
        ridge_linearization(&self.hidden.weight, &self.scale.weight, &z)
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn context_dim(&self) -> usize {
        self.gate.n_in()
    }
}

/// A conditional flow of the custom conditional potential: its exact log-density equals
/// `log N(f(x; c)) + log|det ∂f/∂x|` with the Jacobian by central differences (1e-7, as
/// above), the context matters (another row's context changes log p by more than 1e-3),
/// inversion recovers x (≤ 1e-8), a save/load round trip is exact, and a missing context or
/// an unregistered name is an error naming what to do.
#[test]
fn conditional_custom_potential_in_a_conditional_flow() {
    cpflow::register_conditional_potential("cond-ridge", |vb, cfg, rng| {
        let width = 10;
        let hidden = Linear::new(&vb.pp("hidden"), cfg.dim, width, true, rng)?;
        let gate = Linear::new(&vb.pp("gate"), cfg.context_dim, width, false, rng)?;
        let scale = Linear::new(&vb.pp("scale"), width, 1, false, rng)?;
        Ok(Box::new(ConditionalRidge {
            hidden,
            gate,
            scale,
            dim: cfg.dim,
        }))
    });
    let (d, dc) = (3, 2);
    let pot = PotentialConfig::CustomConditional(cpflow::CustomConditionalConfig {
        name: "cond-ridge".into(),
        dim: d,
        context_dim: dc,
        settings: BTreeMap::new(),
    });
    let cfg = FlowConfig::tabular(d, 2, pot.clone()).with_float(FloatType::F64);
    let flow = Flow::new(cfg, &Device::Cpu).unwrap();
    assert_eq!(flow.context_dim(), Some(dc));
    let x = data(6, d, 87);
    let c = (data(6, dc, 88) * 2.0).unwrap();
    flow.initialize_given(&x, &c).unwrap();
    let lp = flow
        .log_prob_exact_given(&x, &c)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();

    let xs = x.to_vec2::<f64>().unwrap();
    for (b, row) in xs.iter().enumerate() {
        let cb = c.narrow(0, b, 1).unwrap();
        let expected = fd_log_density(&flow, row, |r| {
            let xb = Tensor::from_vec(r, (1, d), &Device::Cpu).unwrap();
            flow.transform_given(&xb, &cb)
                .unwrap()
                .0
                .to_vec2::<f64>()
                .unwrap()[0]
                .clone()
        });
        assert!(
            (lp[b] - expected).abs() <= 1e-7,
            "row {b}: {} vs {expected}",
            lp[b]
        );
    }
    // Each row's own context matters.
    let rolled = Tensor::cat(&[c.narrow(0, 1, 5).unwrap(), c.narrow(0, 0, 1).unwrap()], 0).unwrap();
    let other = flow
        .log_prob_exact_given(&x, &rolled)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert!(lp.iter().zip(&other).any(|(a, b)| (a - b).abs() > 1e-3));

    let (z, _) = flow.transform_given(&x, &c).unwrap();
    let inv = flow
        .inverse_given_with(&z, &c, &cpflow::InverseParams::default())
        .unwrap();
    assert!(inv.report.all_converged());
    assert!(max_abs_diff(&inv.x, &x) <= 1e-8);

    let dir = std::env::temp_dir().join(format!("cpflow-custom-cond-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    flow.save(&path).unwrap();
    let loaded = Flow::load(&path, &Device::Cpu).unwrap();
    let again = loaded
        .log_prob_exact_given(&x, &c)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(lp, again);
    std::fs::remove_dir_all(&dir).unwrap();

    let err = flow.log_prob_exact(&x).unwrap_err().to_string();
    assert!(err.contains("context"), "{err}");
    // An evaluation set whose context rows do not match (it failed with a raw candle
    // error, or silently used the first rows of a longer context).
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    for rows in [4, 8] {
        let both = Tensor::cat(&[c.clone(), c.clone()], 0).unwrap();
        let set = Dataset::with_context(x.clone(), both.narrow(0, 0, rows).unwrap());
        let err = cpflow::nll_estimate(&flow, &set, &NllEstimator::Exact, 4, &mut rng)
            .unwrap_err()
            .to_string();
        let expected = format!("context has {rows} rows but the data has 6");
        assert!(err.contains(&expected), "{err}");
    }
    let unknown = PotentialConfig::CustomConditional(cpflow::CustomConditionalConfig {
        name: "cond-never-registered".into(),
        dim: d,
        context_dim: dc,
        settings: BTreeMap::new(),
    });
    let err = Flow::new(FlowConfig::tabular(d, 1, unknown), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("register_conditional_potential(\"cond-never-registered\""),
        "{err}"
    );
}

/// A custom network whose products are not those of a convex function (the ridge's negated
/// and scaled by 50: the block's Jacobian has negative eigenvalues): the exact log-det refuses
/// it, and the surrogate's CG reports the breakdown in its report (`breakdown > 0`) instead of
/// passing it off as an iteration cap.
#[test]
fn a_non_convex_custom_network_is_reported_as_a_breakdown() {
    #[derive(Debug)]
    struct Negated(RidgeHvp);
    impl HessianVectorProducts for Negated {
        fn hvp(&self, v: &Tensor) -> icnn::Result<Tensor> {
            Ok((self.0.hvp(v)? * -50.0)?)
        }
        fn detach(&self) -> Arc<dyn HessianVectorProducts> {
            Arc::new(Negated(RidgeHvp {
                weight: self.0.weight.detach(),
                curvature: self.0.curvature.detach(),
            }))
        }
    }
    struct Concave(Ridge);
    impl ConvexPotential for Concave {
        fn potential(&self, x: &Tensor) -> icnn::Result<Tensor> {
            self.0.potential(x)
        }
        fn linearize(&self, x: &Tensor) -> icnn::Result<Linearization> {
            let lin = self.0.linearize(x)?;
            let m = self.0.hidden.n_out() as f64;
            let s = icnn::softplus(&self.0.scale.weight)?;
            let z = self.0.hidden.forward(x)?;
            let sig = candle_nn::ops::sigmoid(&z)?;
            let curvature = ((&sig * (1.0 - &sig)?)?.broadcast_mul(&s)? * m)?;
            let hvp = Negated(RidgeHvp {
                weight: self.0.hidden.weight.clone(),
                curvature,
            });
            Linearization::from_parts(lin.potential(), lin.gradient(), Arc::new(hvp))
        }
        fn dim(&self) -> usize {
            self.0.dim
        }
    }
    cpflow::register_potential("ridge-concave", |vb, cfg, rng| {
        let hidden = Linear::new(&vb.pp("hidden"), cfg.dim, 16, true, rng)?;
        let scale = Linear::new(&vb.pp("scale"), 16, 1, false, rng)?;
        Ok(Box::new(Concave(Ridge {
            hidden,
            scale,
            dim: cfg.dim,
        })))
    });
    let flow = ridge_flow("ridge-concave", 3);
    let x = data(32, 3, 89);
    flow.initialize(&x).unwrap();
    // Named as a potential that is not convex, in its layer (it was only "matrix of system 0
    // is not positive definite"); the log-det's error is its source.
    let err = flow.log_prob_exact(&x).unwrap_err();
    assert!(
        matches!(err, cpflow::CpflowError::NotConvex { layer: 1, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("layer 1 is not strongly convex"), "{text}");
    let source = std::error::Error::source(&err).map(|s| s.to_string());
    assert!(
        source.is_some_and(|s| s.contains("not positive definite")),
        "{err:?}"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(90);
    let sur = flow
        .surrogate_loss(&x, &cpflow::SurrogateParams::default(), &mut rng)
        .unwrap();
    assert!(sur.cg.breakdown > 0, "{:?}", sur.cg);
    assert!(sur.cg.converged + sur.cg.breakdown <= sur.cg.iterations.len());

    // The image flow names it the same way, with its layer's index in `layers()` (it was
    // only "matrix of system 0 is not positive definite").
    let ms = cpflow::image::MultiscaleConfig {
        image: icnn::ImageShape::new(1, 2, 2),
        nblocks: vec![1],
        factor_out: false,
        potential: ridge_config("ridge-concave", 4),
        float: FloatType::F64,
        ..cpflow::image::MultiscaleConfig::mnist()
    };
    let cfg = cpflow::image::ImageFlowConfig::multiscale(&ms).unwrap();
    let image_flow = cpflow::image::ImageFlow::new(cfg, &Device::Cpu).unwrap();
    let block = image_flow
        .layers()
        .iter()
        .position(|l| matches!(l, cpflow::image::ImageLayer::Cpf(_)))
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(91);
    let pixels: Vec<f64> = (0..32 * 4)
        .map(|_| rand::Rng::random_range(&mut rng, 0.05..0.95))
        .collect();
    let images = Tensor::from_vec(pixels, (32, 4), &Device::Cpu).unwrap();
    image_flow.initialize(&images).unwrap();
    let err = image_flow.log_prob_exact(&images).unwrap_err();
    assert!(
        matches!(err, cpflow::CpflowError::NotConvex { layer, .. } if layer == block),
        "{err:?} (block at layer {block})"
    );
}
