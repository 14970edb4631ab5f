//! Training on a device (`test_device!`: the CPU here, CUDA in a `--features cuda` build,
//! where the host kernels of the surrogate step, the fused optimiser updates and the
//! likelihood ops are skipped): a few `Trainer` steps of a tabular flow, one image-flow
//! step (CG surrogate, Adam) and one VAE step (Adamax) on the device against the same
//! steps on the CPU with the same weights and seeds, each paired with a check that does
//! not use the CPU (the loss value against the exact NLL or the surrogate's closed value,
//! the optimiser's first step in closed form). f64, fixed seeds, data made here.

use std::f64::consts::LN_2;

use candle_core::{DType, Device, Tensor, Var};
use cpflow::image::{ImageFlow, ImageFlowConfig, ImageLayer, MultiscaleConfig, dequantize};
use cpflow::{
    Adam, AdamParams, Dataset, FloatType, Flow, FlowConfig, LrSchedule, Objective, PotentialConfig,
    SurrogateParams, TrainConfig, TrainReport, Trainer,
};
use icnn::{ConvIcnnConfig, ImageShape};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::device_common::{host, max_rel_diff};
use crate::flow_common::{data, icnn3};

/// Every named variable's values on the host.
fn values(vars: &[(String, Var)]) -> Vec<(String, Vec<f64>)> {
    vars.iter()
        .map(|(k, v)| (k.clone(), host(v.as_tensor())))
        .collect()
}

/// Named weights of two models agree to `tol` (relative to max(1, |value|)).
fn assert_same_values(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for ((ka, va), (kb, vb)) in a.iter().zip(b) {
        assert_eq!(ka, kb, "{what}");
        let e = max_rel_diff(va, vb);
        assert!(e <= tol, "{what}: {ka} differs by {e}");
    }
}

const D: usize = 3;

fn tabular_config() -> FlowConfig {
    FlowConfig::tabular(D, 2, icnn3(D, 8, 3))
        .with_float(FloatType::F64)
        .with_init_seed(31)
}

fn train_config(objective: Objective, batch_size: usize, steps: usize) -> TrainConfig {
    TrainConfig {
        batch_size,
        max_iterations: steps,
        objective,
        lr_schedule: LrSchedule::Constant,
        val_every: 0,
        early_stopping: None,
        train_slq_every: 0,
        log_every: 1,
        clip_grad_norm: Some(50.0),
        restore_best: false,
        seed: 7,
        ..TrainConfig::default()
    }
}

fn fit(dev: &Device, cfg: TrainConfig, x: &Tensor) -> (TrainReport, Trainer) {
    let flow = Flow::new(tabular_config(), dev).unwrap();
    let mut tr = Trainer::new(flow, cfg).unwrap();
    let rep = tr
        .fit(&Dataset::new(x.to_device(dev).unwrap()), None)
        .unwrap();
    (rep, tr)
}

/// Five CG-surrogate steps (batch 16 of 48 points, 2 blocks, d = 3) on the device and on
/// the CPU from the same configuration and seed: same batches and probes (drawn on the
/// host), so the per-step losses, gradient norms and CG iteration counts must agree. f64
/// CG to atol 1e-3 is iterative, but a count changes only if a residual falls within the
/// rounding difference (~1e-15 relative) of the tolerance: the counts are compared exactly.
/// Losses and gradient norms to 1e-9, the weights after 5 Adam steps to 1e-8 (Adam's
/// first steps are `lr·g/(|g| + ε)`, so a gradient entry at the rounding level could differ
/// by up to `lr` between devices; none of this model's gradients is that small).
fn tabular_trainer_steps_match_cpu(dev: &Device) {
    let x = data(48, D, 41);
    let cfg = train_config(Objective::CgSurrogate, 16, 5);
    let (rep_cpu, tr_cpu) = fit(&Device::Cpu, cfg.clone(), &x);
    let (rep_dev, tr_dev) = fit(dev, cfg, &x);
    assert_eq!(tr_dev.flow().device().location(), dev.location());
    assert_eq!((rep_cpu.iterations, rep_dev.iterations), (5, 5));
    assert_eq!(rep_dev.history.len(), 5);
    for (a, b) in rep_dev.history.iter().zip(&rep_cpu.history) {
        assert_eq!(a.iteration, b.iteration);
        assert!(a.loss.is_finite());
        assert!(
            max_rel_diff(&[a.loss], &[b.loss]) < 1e-9,
            "step {}: loss",
            a.iteration
        );
        assert!(
            max_rel_diff(&[a.grad_norm], &[b.grad_norm]) < 1e-9,
            "step {}: gradient norm {} vs {}",
            a.iteration,
            a.grad_norm,
            b.grad_norm
        );
        assert_eq!(a.cg_iterations, b.cg_iterations, "step {}: CG", a.iteration);
        assert_eq!(a.cg_converged, b.cg_converged, "step {}", a.iteration);
    }
    assert_eq!(rep_dev.mean_cg_iterations, rep_cpu.mean_cg_iterations);
    assert_eq!(rep_dev.cg_converged, Some(1.0));
    assert_same_values(
        &values(&tr_dev.flow().named_vars()),
        &values(&tr_cpu.flow().named_vars()),
        1e-8,
        "weights after 5 steps",
    );
}
test_device!(
    tabular_trainer_steps_match_cpu,
    tabular_trainer_cpu,
    tabular_trainer_cuda
);

/// The exact-NLL objective with the whole data set as the batch: the first step's loss is
/// the mean exact NLL of the flow initialised on the data (ActNorm statistics do not depend
/// on the row order, up to rounding: 1e-10), and its gradient norm is that of
/// `exact_nll_loss`'s backward; a second step lowers the loss (lr 1e-3, Adam's first steps
/// move every weight by ~lr against its gradient). Computed on the device alone.
fn exact_objective_loss_is_the_nll(dev: &Device) {
    let x = data(32, D, 42);
    let (rep, _) = fit(dev, train_config(Objective::ExactNll, 32, 2), &x);
    let flow = Flow::new(tabular_config(), dev).unwrap();
    let xd = x.to_device(dev).unwrap();
    flow.initialize(&xd).unwrap();
    let lp = host(&flow.log_prob_exact(&xd).unwrap());
    let nll = -lp.iter().sum::<f64>() / lp.len() as f64;
    let first = &rep.history[0];
    assert!(
        (first.loss - nll).abs() < 1e-10 * nll.abs().max(1.0),
        "{} vs {nll}",
        first.loss
    );
    let loss = flow.exact_nll_loss(&xd).unwrap();
    assert!((host(&loss)[0] - nll).abs() < 1e-10 * nll.abs().max(1.0));
    let grads = loss.backward().unwrap();
    let norm = flow
        .named_vars()
        .iter()
        .filter_map(|(_, v)| grads.get(v.as_tensor()))
        .flat_map(host)
        .map(|g| g * g)
        .sum::<f64>()
        .sqrt();
    assert!(
        (first.grad_norm - norm).abs() < 1e-9 * norm,
        "{} vs {norm}",
        first.grad_norm
    );
    assert!(rep.history[1].loss < first.loss, "{:?}", rep.history);
}
test_device!(
    exact_objective_loss_is_the_nll,
    exact_objective_loss_cpu,
    exact_objective_loss_cuda
);

/// Two scales on 1×8×8 (logit, ActNorms, a ConvIcnn block, squeeze, a ConvIcnn block on
/// 4×4×4; D = 64), f64.
fn image_config() -> ImageFlowConfig {
    let ms = MultiscaleConfig {
        image: ImageShape::new(1, 8, 8),
        nblocks: vec![1, 1],
        logit_alpha: Some(0.05),
        potential: PotentialConfig::ConvIcnn(ConvIcnnConfig {
            width: 4,
            depth: 2,
            ..Default::default()
        }),
        float: FloatType::F64,
        init_seed: 3,
        ..MultiscaleConfig::mnist()
    };
    ImageFlowConfig::multiscale(&ms).unwrap()
}

/// Dequantised images of seeded random grey levels with a smooth pattern, `(n, 64)` f64.
fn images(n: usize, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let k: Vec<u32> = (0..n * 64)
        .map(|i| ((i % 8) * 24 + rng.random_range(0..64u32) as usize) as u32)
        .collect();
    let k = Tensor::from_vec(k, (n, 64), &Device::Cpu).unwrap();
    dequantize(&k, DType::F64, &mut rng).unwrap()
}

/// One surrogate step of `flow` at `x` (probes from `seed`): loss, CG iterations, the
/// gradients by name, and the weights after one Adam step.
type ImageStep = (
    f64,
    Vec<usize>,
    Vec<(String, Vec<f64>)>,
    Vec<(String, Vec<f64>)>,
);

fn image_step(flow: &ImageFlow, x: &Tensor, params: &SurrogateParams) -> ImageStep {
    let out = flow
        .surrogate_loss(x, params, &mut StdRng::seed_from_u64(9))
        .unwrap();
    assert_eq!(out.cg.converged, out.cg.iterations.len(), "CG converged");
    let grads = icnn::detached_backward(&out.loss).unwrap();
    let vars: Vec<(String, Var)> = flow
        .named_vars()
        .into_iter()
        .filter(|(k, _)| !k.ends_with("initialized"))
        .collect();
    let g: Vec<(String, Vec<f64>)> = vars
        .iter()
        .filter_map(|(k, v)| grads.get(v.as_tensor()).map(|g| (k.clone(), host(g))))
        .collect();
    assert!(g.len() > 10, "gradients reach the weights");
    let mut adam = Adam::new(vars.clone(), AdamParams::default()).unwrap();
    adam.step(&grads).unwrap();
    (
        host(&out.loss)[0],
        out.cg.iterations.clone(),
        g,
        values(&vars),
    )
}

/// `log p(x)` minus every block's exact log-det, per image, by walking the flow's layers on
/// its device (block Jacobians by `forward_and_hessian`, log-dets by logdet on the host).
fn log_prob_without_blocks(flow: &ImageFlow, x: &Tensor) -> (Vec<f64>, usize) {
    let mut h = x.clone();
    let mut ld = vec![0.0; x.dim(0).unwrap()];
    let mut blocks = 0;
    for layer in flow.layers() {
        h = match layer {
            ImageLayer::Logit(t) => t.forward(&h).unwrap().0,
            ImageLayer::ActNorm(a) => a.forward(&h).unwrap().0,
            ImageLayer::FeatureActNorm(a) => a.forward(&h).unwrap().0,
            ImageLayer::Squeeze(s) => s.forward(&h).unwrap(),
            ImageLayer::FactorOut(_) => panic!("no factor-out in this flow"),
            ImageLayer::Cpf(b) => {
                let (z, jac) = b
                    .forward_and_hessian(&h.contiguous().unwrap(), None)
                    .unwrap();
                let l = logdet::exact_logdet_tensor(&jac.detach()).unwrap();
                ld.iter_mut().zip(l).for_each(|(a, b)| *a += b);
                blocks += 1;
                z.detach()
            }
        };
    }
    let lp = host(&flow.log_prob_exact(x).unwrap());
    (lp.iter().zip(&ld).map(|(a, b)| a - b).collect(), blocks)
}

/// One image-flow training step (CG surrogate to atol 1e-10, Adam) on the device equals the
/// CPU's (flow moved with `ImageFlow::to_device`; same probes): loss to 1e-10, CG counts
/// exactly (see the tabular test), gradients and updated weights to 1e-8. Independently of
/// the CPU: with `H u = v` to 1e-10 each block's surrogate is `uᵀHv = vᵀv = D` up to
/// `D·1e-10`, so the loss is `(−mean(log p(x) − Σ log det H_b + n_b·D))/(D ln 2) + 8` (the
/// bits of `ln 256`), with the exact log-dets from the block Jacobians: 1e-8.
fn image_flow_step_matches_cpu(dev: &Device) {
    let cpu = ImageFlow::new(image_config(), &Device::Cpu).unwrap();
    let x = images(6, 1);
    cpu.initialize(&x).unwrap();
    let on_dev = cpu.to_device(dev).unwrap();
    let xd = x.to_device(dev).unwrap();
    let params = SurrogateParams {
        cg_atol: 1e-10,
        cg_rtol: 0.0,
        ..Default::default()
    };
    let lp_cpu = host(&cpu.log_prob_exact(&x).unwrap());
    assert!(max_rel_diff(&host(&on_dev.log_prob_exact(&xd).unwrap()), &lp_cpu) < 1e-10);
    let (rest, blocks) = log_prob_without_blocks(&on_dev, &xd);
    assert_eq!(blocks, 2);
    let d = 64.0;
    let mean = rest.iter().sum::<f64>() / rest.len() as f64;
    let want = -(mean + blocks as f64 * d) / (d * LN_2) + 8.0;

    let (loss_dev, cg_dev, g_dev, w_dev) = image_step(&on_dev, &xd, &params);
    assert!(
        (loss_dev - want).abs() < 1e-8,
        "surrogate loss {loss_dev} vs {want}"
    );
    let (loss_cpu, cg_cpu, g_cpu, w_cpu) = image_step(&cpu, &x, &params);
    assert!(max_rel_diff(&[loss_dev], &[loss_cpu]) < 1e-10);
    assert_eq!(cg_dev, cg_cpu, "CG iterations per image");
    assert_same_values(&g_dev, &g_cpu, 1e-8, "image gradients");
    assert_same_values(&w_dev, &w_cpu, 1e-8, "image weights after Adam");
}
test_device!(
    image_flow_step_matches_cpu,
    image_flow_step_cpu,
    image_flow_step_cuda
);

#[cfg(feature = "vae")]
mod vae_step {
    use std::collections::HashMap;

    use super::*;
    use cpflow::posterior::reference_vae_surrogate_params;
    use cpflow::vae::{
        Adamax, AdamaxParams, PosteriorKind, Vae, VaeArchitecture, VaeBatch, VaeLikelihood,
        VaeModelConfig,
    };

    /// Three made-up images on `dev`: binary 28×28 ones (`row + column + k ≡ 0 mod 3`) for
    /// the Bernoulli likelihood, 28×20 grey levels (`7i + 13k mod 256`, with the levels as
    /// class targets) for the 256-way one.
    fn batch(likelihood: VaeLikelihood, dev: &Device) -> VaeBatch {
        match likelihood {
            VaeLikelihood::Categorical256 => {
                let levels: Vec<u32> = (0..3 * 560)
                    .map(|i| (7 * i + 13 * (i / 560)) % 256)
                    .collect();
                let t = Tensor::from_vec(levels, (3, 560), dev).unwrap();
                let x = (t.to_dtype(DType::F64).unwrap() / 255.0).unwrap();
                VaeBatch {
                    x: x.reshape((3, 1, 28, 20)).unwrap(),
                    targets: Some(t),
                }
            }
            _ => {
                let px: Vec<f64> = (0..3)
                    .flat_map(|k| {
                        (0..784).map(move |i| f64::from(u8::from((i / 28 + i % 28 + k) % 3 == 0)))
                    })
                    .collect();
                VaeBatch {
                    x: Tensor::from_vec(px, (3, 1, 28, 28), dev).unwrap(),
                    targets: None,
                }
            }
        }
    }

    /// Loss, reconstruction, CG counts, gradients and weights after one Adamax step.
    type VaeStep = (
        f64,
        f64,
        Vec<usize>,
        Vec<(String, Vec<f64>)>,
        Vec<(String, Vec<f64>)>,
    );

    fn step(vae: &Vae, dev: &Device) -> VaeStep {
        let batch = batch(vae.likelihood(), dev);
        let p = AdamaxParams {
            lr: 1e-3,
            ..Default::default()
        };
        let mut rng = StdRng::seed_from_u64(5);
        let cg = reference_vae_surrogate_params();
        let t = vae.train_terms(&batch, 1.0, &cg, &mut rng).unwrap();
        let grads = icnn::detached_backward(&t.loss).unwrap();
        let vars = vae.trainable_named_vars();
        let before = values(&vars);
        let g: Vec<(String, Vec<f64>)> = vars
            .iter()
            .filter_map(|(k, v)| grads.get(v.as_tensor()).map(|g| (k.clone(), host(g))))
            .collect();
        let mut opt = Adamax::new(vars.clone(), p.clone()).unwrap();
        opt.step(&grads).unwrap();
        let after = values(&vars);
        // Adamax's first step in closed form: m = (1 − β₁)g, u = |g| + ε, and the bias
        // correction 1/(1 − β₁): Δθ = −lr·g/(|g| + ε), rounding only (1e-12·lr).
        let grad: HashMap<&str, &Vec<f64>> = g.iter().map(|(k, v)| (k.as_str(), v)).collect();
        for ((k, b), (_, a)) in before.iter().zip(&after) {
            let Some(gk) = grad.get(k.as_str()) else {
                assert_eq!(a, b, "{k} has no gradient and must not move");
                continue;
            };
            for ((a, b), g) in a.iter().zip(b).zip(gk.iter()) {
                let want = -p.lr * g / (g.abs() + p.eps);
                assert!(
                    (a - b - want).abs() <= 1e-12 * (1.0 + b.abs()),
                    "{k}: {} vs {want}",
                    a - b
                );
            }
        }
        (
            host(&t.loss)[0],
            t.reconstruction,
            t.cg.iterations,
            g,
            after,
        )
    }

    /// One VAE training step (encoder, CP-Flow posterior with the CG surrogate, decoder,
    /// Adamax) on the device equals the CPU's with the same weights (copied after the CPU
    /// model's data-dependent initialisation) and probes, for the Bernoulli and the 256-way
    /// likelihood (the CPU runs fused host ops for both): loss and reconstruction to 1e-10,
    /// CG counts exactly, gradients and weights to 1e-8 (as the tabular test); the Adamax
    /// step checked in closed form on each device; and the exact −ELBO splits into
    /// reconstruction + KL per image on the device.
    fn vae_step_matches_cpu(dev: &Device) {
        let cfg = VaeModelConfig {
            latent_dim: 2,
            architecture: VaeArchitecture {
                channels: 2,
                feature_dim: 4,
                head_channels: 2,
            },
            posterior: PosteriorKind::CpFlow,
            blocks: 1,
            width: 8,
            depth: 2,
            ..Default::default()
        };
        for (lik, hw) in [
            (VaeLikelihood::Bernoulli, (28, 28)),
            (VaeLikelihood::Categorical256, (28, 20)),
        ] {
            let cpu = Vae::new(&cfg, lik, hw, &Device::Cpu).unwrap();
            cpu.initialize(&batch(lik, &Device::Cpu), &mut StdRng::seed_from_u64(1))
                .unwrap();
            let on_dev = Vae::new(&cfg, lik, hw, dev).unwrap();
            let w: HashMap<String, Tensor> = cpu
                .weight_tensors()
                .into_iter()
                .map(|(k, t)| (k, t.copy().unwrap()))
                .collect();
            on_dev.set_weights(&w, "").unwrap();
            let e = on_dev
                .neg_elbo_exact(&batch(lik, dev), &mut StdRng::seed_from_u64(2))
                .unwrap();
            for i in 0..3 {
                let parts = e.reconstruction[i] + e.kl[i];
                assert!((e.neg_elbo[i] - parts).abs() < 1e-9, "{lik:?} image {i}");
            }
            let e_cpu = cpu
                .neg_elbo_exact(&batch(lik, &Device::Cpu), &mut StdRng::seed_from_u64(2))
                .unwrap();
            assert!(
                max_rel_diff(&e.neg_elbo, &e_cpu.neg_elbo) < 1e-10,
                "{lik:?}"
            );

            let (l_dev, r_dev, cg_dev, g_dev, w_dev) = step(&on_dev, dev);
            let (l_cpu, r_cpu, cg_cpu, g_cpu, w_cpu) = step(&cpu, &Device::Cpu);
            assert!(l_dev.is_finite());
            assert!(
                max_rel_diff(&[l_dev, r_dev], &[l_cpu, r_cpu]) < 1e-10,
                "{lik:?}"
            );
            assert_eq!(cg_dev, cg_cpu, "{lik:?}");
            assert_same_values(&g_dev, &g_cpu, 1e-8, &format!("{lik:?} gradients"));
            assert_same_values(
                &w_dev,
                &w_cpu,
                1e-8,
                &format!("{lik:?} weights after Adamax"),
            );
        }
    }
    test_device!(vae_step_matches_cpu, vae_step_cpu, vae_step_cuda);
}
