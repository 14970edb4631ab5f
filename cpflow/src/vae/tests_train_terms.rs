//! `Vae::train_terms`, the training loss, against an independent computation from the
//! model's parts: encoder heads, the posterior's variables (ActNorm maps written out, the
//! block's dense Jacobian with a host LU log-det), the decoder's likelihood, and the closed
//! forms of the Gaussian densities (f64, tiny model, fixed noise, tight CG).
//!
//! The relation checked (`images-vae.md` §3.5): with `log q` the exact posterior density,
//! `loss = (−Σ_b log p(x_b|z_b) + β Σ_b (log q̃_b − log p(z_b))) / B` where the surrogate
//! `log q̃` replaces each block's `log det J_k` by `S_k = mean_probes (J u)ᵀv`, `u = J⁻¹v`:
//! with Rademacher probes `S_k = vᵀv = d` exactly (up to CG's residual), so
//! `loss = exact loss + β/B · Σ_b Σ_k (log det J_k(b) − d)`, and the value of
//! `reconstruction` is `−Σ_b log p(x_b|z_b) / B`.

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::tests::{fake_data, tiny_config};
use super::*;
use crate::config::SurrogateParams;

/// CG to machine precision: `d = 3`, so CG is exact after 3 steps in exact arithmetic; the
/// surrogate's value is `vᵀv − rᵀv` with `|rᵀv| ≤ d·atol` per block and image.
fn tight_cg(probes: usize) -> SurrogateParams {
    SurrogateParams {
        probes,
        cg_atol: 1e-12,
        cg_rtol: 0.0,
        cg_max_iters: Some(50),
        ..SurrogateParams::default()
    }
}

/// The exact parts of the loss per image, computed outside `train_terms`.
struct ExactParts {
    /// `log p(x_b | z_b)`.
    log_lik: Vec<f64>,
    /// Exact `log q(z_b | x_b)`.
    log_q: Vec<f64>,
    /// `log N(z_b; 0, I)`.
    log_prior: Vec<f64>,
    /// `Σ_k log det J_k(b)` over the CP-Flow blocks (ActNorms excluded).
    block_logdet: Vec<f64>,
    /// Number of CP-Flow blocks.
    blocks: usize,
}

impl ExactParts {
    /// `(−Σ log p(x|z) + β Σ (log q − log p(z))) / B` with the exact `log q`.
    fn exact_loss(&self, beta: f64) -> f64 {
        let b = self.log_lik.len() as f64;
        let rec: f64 = self.log_lik.iter().map(|l| -l).sum();
        let kl: f64 = self
            .log_q
            .iter()
            .zip(&self.log_prior)
            .map(|(q, p)| q - p)
            .sum();
        (rec + beta * kl) / b
    }

    /// `Σ (log q − log p(z)) / B` with the exact `log q`.
    fn kl(&self) -> f64 {
        let kl: f64 = self
            .log_q
            .iter()
            .zip(&self.log_prior)
            .map(|(q, p)| q - p)
            .sum();
        kl / self.log_q.len() as f64
    }
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
}

fn var(vae: &Vae, name: &str) -> Tensor {
    let vars = vae.named_vars();
    let v = vars.iter().find(|(k, _)| k == name);
    v.unwrap_or_else(|| panic!("no variable {name}"))
        .1
        .as_tensor()
        .clone()
}

/// The reference posterior layout `[ActNorm, CPF, ActNorm]` (one block) written out: the
/// ActNorm `y = (x + b)(e^{logs} + 0.001)`, log-det `d·log(e^{logs} + 0.001)`, from its
/// variables; the block's map and Jacobian `(B, d, d)` from `forward_and_hessian`.
fn exact_parts(vae: &Vae, batch: &VaeBatch, eps: &Tensor) -> ExactParts {
    let e = vae.encode_for_tests(&batch.x).unwrap();
    let z0 = (&e.mu + (e.log_sigma.exp().unwrap() * eps).unwrap()).unwrap();
    let (mu, ls, z0h) = (rows(&e.mu), rows(&e.log_sigma), rows(&z0));
    let d = mu[0].len();
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    // log N(z₀; μ, diag σ²) in the closed form of z₀ (not of ε).
    let log_q0: Vec<f64> = (0..mu.len())
        .map(|b| {
            (0..d)
                .map(|j| {
                    let s = ls[b][j].exp();
                    -ls[b][j] - 0.5 * ((z0h[b][j] - mu[b][j]) / s).powi(2) - half_log_2pi
                })
                .sum()
        })
        .collect();
    let mut z = z0;
    let mut log_det = vec![0.0; mu.len()];
    let mut block_logdet = vec![0.0; mu.len()];
    let blocks: Vec<_> = vae.posterior().blocks().collect();
    if !blocks.is_empty() {
        assert_eq!(blocks.len(), 1, "the layout below is the one-block one");
        let names: Vec<String> = vae.named_vars().into_iter().map(|(k, _)| k).collect();
        assert!(
            names
                .iter()
                .filter(|k| k.starts_with("posterior"))
                .all(|k| [
                    "posterior.layers.0.",
                    "posterior.layers.1.",
                    "posterior.layers.2."
                ]
                .iter()
                .any(|p| k.starts_with(p))),
            "{names:?}"
        );
        let actnorm = |z: &Tensor, i: usize, log_det: &mut Vec<f64>| -> Tensor {
            let bias = var(vae, &format!("posterior.layers.{i}.bias"));
            let logs = var(vae, &format!("posterior.layers.{i}.logs"));
            let scale = (logs.exp().unwrap() + 1e-3).unwrap();
            let s = scale.flatten_all().unwrap().to_vec1::<f64>().unwrap()[0];
            log_det.iter_mut().for_each(|l| *l += d as f64 * s.ln());
            z.broadcast_add(&bias)
                .unwrap()
                .broadcast_mul(&scale)
                .unwrap()
        };
        z = actnorm(&z, 0, &mut log_det);
        let (y, jac) = blocks[0].forward_and_hessian(&z, Some(&e.feature)).unwrap();
        let jac = jac.to_vec3::<f64>().unwrap();
        for (b, j) in jac.iter().enumerate() {
            let m = nalgebra::DMatrix::from_fn(d, d, |r, c| j[r][c]);
            let det = m.determinant();
            assert!(det > 0.0, "a CP-Flow Jacobian is positive definite");
            log_det[b] += det.ln();
            block_logdet[b] += det.ln();
        }
        z = actnorm(&y, 2, &mut log_det);
    }
    let log_lik = vae
        .log_likelihood(batch, &z)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let log_prior = rows(&z)
        .iter()
        .map(|r| r.iter().map(|v| -0.5 * v * v - half_log_2pi).sum())
        .collect();
    ExactParts {
        log_lik,
        log_q: log_q0.iter().zip(&log_det).map(|(q, l)| q - l).collect(),
        log_prior,
        block_logdet,
        blocks: blocks.len(),
    }
}

/// A tiny VAE on three fabricated Frey faces (256-way likelihood), initialised.
fn tiny_vae(posterior: PosteriorKind) -> (Vae, VaeBatch, StdRng) {
    let vae = Vae::new(
        &tiny_config(posterior),
        VaeLikelihood::Categorical256,
        (28, 20),
        &Device::Cpu,
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let batch = make_batch(&vae, &fake_data(), VaeSplit::Train, &[0, 1, 2], &mut rng).unwrap();
    vae.initialize(&batch, &mut rng).unwrap();
    (vae, batch, rng)
}

#[test]
fn train_loss_is_the_elbo_with_the_surrogate_constant() {
    for posterior in [PosteriorKind::Gaussian, PosteriorKind::CpFlow] {
        for beta in [0.3, 1.0] {
            let (vae, batch, mut rng) = tiny_vae(posterior);
            // train_terms draws its noise first from the same generator.
            let eps = vae.posterior().draw_noise(3, &mut rng.clone()).unwrap();
            let terms = vae
                .train_terms(&batch, beta, &tight_cg(1), &mut rng)
                .unwrap();
            let parts = exact_parts(&vae, &batch, &eps);
            let d = vae.config().latent_dim as f64;
            // Each block's surrogate is vᵀv = d instead of log det J_k.
            let shift: f64 = parts
                .block_logdet
                .iter()
                .map(|l| l - parts.blocks as f64 * d)
                .sum::<f64>()
                / 3.0;
            let want = parts.exact_loss(beta) + beta * shift;
            let got = terms.loss.to_scalar::<f64>().unwrap();
            // f64 sums of ~560·3 terms of O(1–10) nats (loss ~10³) in different orders:
            // ~1e-12 relative; CG's residual adds ≤ d·atol = 3e-12 per image.
            let tol = 1e-10 * (1.0 + want.abs());
            assert!(
                (got - want).abs() < tol,
                "{posterior} β = {beta}: train_terms loss {got} vs {want} from the parts"
            );
            let rec = -parts.log_lik.iter().sum::<f64>() / 3.0;
            assert!(
                (terms.reconstruction - rec).abs() < tol,
                "{posterior}: reconstruction {} vs {rec}",
                terms.reconstruction
            );
            // The test is discriminating: β and the log-dets move the loss well past `tol`.
            assert!((parts.exact_loss(beta) - parts.exact_loss(0.0)).abs() > 1e3 * tol);
            if posterior == PosteriorKind::CpFlow {
                assert!(shift.abs() > 1e3 * tol, "shift {shift}");
                assert_eq!(terms.cg.iterations.len(), 3, "one CG system per image");
            } else {
                assert!(terms.cg.iterations.is_empty());
            }
        }
    }
}

/// Delegates to `inner` for its first `noise_draws` draws (the posterior noise), then answers
/// every draw from `signs` in turn (cyclically): `u32::MAX` for `+1`, `0` for `−1`, so a
/// Rademacher probe reads the scripted sign whichever bit it tests.
struct ScriptedProbes {
    inner: StdRng,
    noise_draws: usize,
    draws: usize,
    signs: Vec<bool>,
}

impl ScriptedProbes {
    fn word(&mut self) -> Option<u64> {
        self.draws += 1;
        if self.draws <= self.noise_draws {
            return None;
        }
        let k = self.draws - self.noise_draws - 1;
        Some(if self.signs[k % self.signs.len()] {
            u64::MAX
        } else {
            0
        })
    }
}

impl RngCore for ScriptedProbes {
    fn next_u32(&mut self) -> u32 {
        match self.word() {
            Some(w) => w as u32,
            None => self.inner.next_u32(),
        }
    }
    fn next_u64(&mut self) -> u64 {
        self.word().unwrap_or_else(|| self.inner.next_u64())
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        match self.word() {
            Some(w) => dst.fill(w as u8),
            None => self.inner.fill_bytes(dst),
        }
    }
}

/// Counts the draws of `inner`.
struct Counting<'a> {
    inner: &'a mut StdRng,
    draws: usize,
}

impl RngCore for Counting<'_> {
    fn next_u32(&mut self) -> u32 {
        self.draws += 1;
        self.inner.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.draws += 1;
        self.inner.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.draws += 1;
        self.inner.fill_bytes(dst)
    }
}

/// The variables (and one entry each) whose gradients are checked: encoder trunk and `μ`
/// head, decoder, and the posterior's block (`w₁`, a PICNN weight, the context layers and
/// the zero-initialised gates `Wczs`, `Wcxs`) and ActNorms. The context trunk `Wcs` is left
/// out: its loss has a large third derivative, so central differences at `h = 1e-5` are off
/// by 2.8e-3 (−24.6047 against −24.6075), at 1e-6 by 2.8e-5, at 1e-7 by 7e-6 (rounding):
/// O(h²) truncation converging to the gradient, not a gradient error.
const CHECKED: [(&str, usize); 10] = [
    ("encoder.q_z_nn.2.h.bias", 1),
    ("encoder.q_z_mean.weight", 4),
    ("decoder.p_x_nn.0.g.weight", 2),
    ("posterior.layers.1.w1", 0),
    ("posterior.layers.1.icnn.Wzs.1.weight", 3),
    ("posterior.layers.1.icnn.Wczs.1.weight", 3),
    ("posterior.layers.1.icnn.Wcxs.0.weight", 1),
    ("posterior.layers.1.icnn.Wccs.0.weight", 0),
    ("posterior.layers.0.logs", 0),
    ("posterior.layers.2.bias", 0),
];

#[test]
fn train_loss_gradient_is_the_exact_elbo_gradient_with_orthogonal_probes() {
    // With 4 probes per image whose sign patterns are the rows of a 4×4 Hadamard matrix
    // (first d = 3 columns), mean_p v_p v_pᵀ = I, so the surrogate's gradient
    // mean_p v_pᵀ ∂J J⁻¹ v_p is exactly tr(J⁻¹ ∂J) = ∂ log det J: the loss's gradient must
    // equal that of the exact-log-q objective, checked by central differences of the
    // independent computation at the same noise, at β = 0.3 and β = 1.
    let (vae, batch, rng) = tiny_vae(PosteriorKind::CpFlow);
    let mut noise_rng = rng.clone();
    let mut counting = Counting {
        inner: &mut noise_rng,
        draws: 0,
    };
    let eps = vae.posterior().draw_noise(3, &mut counting).unwrap();
    let noise_draws = counting.draws;
    let parts = exact_parts(&vae, &batch, &eps);
    let shift: f64 = parts.block_logdet.iter().map(|l| l - 3.0).sum::<f64>() / 3.0;
    let vars = vae.named_vars();
    let var = |name: &str| {
        let v = vars.iter().find(|(k, _)| k == name);
        v.unwrap_or_else(|| panic!("no variable {name}")).1.clone()
    };
    // train_terms's gradient at the checked entries, for the scripted probes.
    let train_gradient = |beta: f64| -> Vec<f64> {
        let hadamard = [[1, 1, 1], [1, -1, 1], [1, 1, -1], [1, -1, -1]];
        let mut scripted = ScriptedProbes {
            inner: rng.clone(),
            noise_draws,
            draws: 0,
            signs: hadamard.iter().flatten().map(|&s| s > 0).collect(),
        };
        let terms = vae
            .train_terms(&batch, beta, &tight_cg(4), &mut scripted)
            .unwrap();
        // 3 images × 4 probes × 3 entries, one block: every scripted sign was read.
        assert_eq!(scripted.draws - noise_draws, 36);
        // The value: 4 probes average to the same vᵀv = d.
        let got = terms.loss.to_scalar::<f64>().unwrap();
        let want = parts.exact_loss(beta) + beta * shift;
        assert!(
            (got - want).abs() < 1e-10 * (1.0 + want.abs()),
            "{got} vs {want}"
        );
        let grads = terms.loss.backward().unwrap();
        CHECKED
            .iter()
            .map(|&(name, index)| {
                let g = grads.get(var(name).as_tensor());
                g.unwrap_or_else(|| panic!("no gradient for {name}"))
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()[index]
            })
            .collect()
    };
    let (g03, g1) = (train_gradient(0.3), train_gradient(1.0));
    for (k, &(name, index)) in CHECKED.iter().enumerate() {
        let v = var(name);
        let base = v
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let h = 1e-5;
        let parts_at = |delta: f64| {
            let mut w = base.clone();
            w[index] += delta;
            v.set(&Tensor::from_vec(w, v.shape(), &Device::Cpu).unwrap())
                .unwrap();
            exact_parts(&vae, &batch, &eps)
        };
        let (plus, minus) = (parts_at(h), parts_at(-h));
        v.set(&Tensor::from_vec(base, v.shape(), &Device::Cpu).unwrap())
            .unwrap();
        let fd = |f: &dyn Fn(&ExactParts) -> f64| (f(&plus) - f(&minus)) / (2.0 * h);
        // The whole loss at β = 0.3: central differences (h = 1e-5) of a loss of ~3·10³
        // summed over 1680 pixels carry rounding ~1e-11/h ≈ 1e-6; truncation h²·f''' and
        // CG's residual (≤ 1e-11) are far below.
        let fd03 = fd(&|p| p.exact_loss(0.3));
        assert!(
            (g03[k] - fd03).abs() <= 2e-6 + 1e-5 * fd03.abs(),
            "{name}[{index}] β = 0.3: train_terms gradient {} vs FD of the exact loss {fd03}",
            g03[k]
        );
        // The KL part alone, free of the reconstruction's rounding: g(1) − g(0.3) is
        // 0.7·∇(Σ KL)/B. Its differences (values O(10)) carry rounding ~1e-15/h = 1e-10;
        // truncation h²·f'''/6 reaches ~2e-8 relative for the encoder trunk's bias.
        let fd_kl = 0.7 * fd(&|p| p.kl());
        let g_kl = g1[k] - g03[k];
        assert!(
            (g_kl - fd_kl).abs() <= 1e-9 + 1e-6 * fd_kl.abs(),
            "{name}[{index}]: KL part of the train_terms gradient {g_kl} vs FD of the exact \
             KL {fd_kl}"
        );
    }
}
