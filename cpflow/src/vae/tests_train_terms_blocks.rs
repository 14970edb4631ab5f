//! `Vae::train_terms` against the ELBO built from the model's parts, for the cases that
//! `tests_train_terms` leaves out: a posterior of **two** CP-Flow blocks (layout
//! `[ActNorm, CPF, ActNorm, CPF, ActNorm]`, walked here from the variable names) and the
//! **Bernoulli** likelihood (static binary 28×28 images), whose `log p(x|z)` is computed
//! here on the host from the decoder's logits (`Σ x·l − softplus(l)`), not by the library's
//! likelihood function. f64, tiny model, fixed noise, tight CG.
//!
//! The relation (`images-vae.md` §3.5, as in `tests_train_terms`): with Rademacher probes
//! each block's surrogate is `S_k = vᵀv = d` (up to CG's residual), so
//! `loss = exact loss + β/B · Σ_b Σ_k (log det J_k(b) − d)`, and
//! `reconstruction = −Σ_b log p(x_b|z_b) / B`.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::tests::tiny_config;
use super::*;
use crate::config::SurrogateParams;

/// `ln √(2π)`.
const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_8;

/// The exact parts of the loss per image, computed outside `train_terms`.
struct Parts {
    /// `log p(x_b | z_b)` from the decoder's logits on the host.
    log_lik: Vec<f64>,
    /// Exact `log q(z_b | x_b) − log N(z_b; 0, I)`.
    kl: Vec<f64>,
    /// `Σ_k (log det J_k(b) − d)` over the CP-Flow blocks: the surrogate's offset.
    surrogate_shift: Vec<f64>,
    /// `log det J_k(b)` per block `k` and image `b`.
    block_logdet: Vec<Vec<f64>>,
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
}

fn var(vae: &Vae, name: &str) -> Option<Tensor> {
    let vars = vae.named_vars();
    let v = vars.iter().find(|(k, _)| k == name);
    v.map(|(_, v)| v.as_tensor().clone())
}

/// `Σ_pixels x·l − softplus(l)` per image, in f64 on the host (softplus in its stable form
/// `max(l, 0) + ln(1 + e^{−|l|})`).
fn host_bernoulli(logits: &Tensor, x: &Tensor) -> Vec<f64> {
    let l = rows(&logits.flatten_from(1).unwrap());
    let x = rows(&x.flatten_from(1).unwrap());
    l.iter()
        .zip(&x)
        .map(|(l, x)| {
            l.iter()
                .zip(x)
                .map(|(&l, &x)| x * l - (l.max(0.0) + (-l.abs()).exp().ln_1p()))
                .sum()
        })
        .collect()
}

/// The posterior written out layer by layer from its variables: a layer with a `logs`
/// variable is a scalar ActNorm `y = (x + b)(e^{logs} + 0.001)` (log-det
/// `d·log(e^{logs} + 0.001)`), any other is the next CP-Flow block, whose map and Jacobian
/// come from `forward_and_hessian` and whose log-det is a host LU determinant.
fn exact_parts(vae: &Vae, batch: &VaeBatch, eps: &Tensor) -> Parts {
    let e = vae.encode_for_tests(&batch.x).unwrap();
    let z0 = (&e.mu + (e.log_sigma.exp().unwrap() * eps).unwrap()).unwrap();
    let (mu, ls, z0h) = (rows(&e.mu), rows(&e.log_sigma), rows(&z0));
    let (n, d) = (mu.len(), mu[0].len());
    // log q = log N(z₀; μ, diag σ²) − Σ_layers log det J, the Gaussian in closed form of z₀.
    let mut log_q: Vec<f64> = (0..n)
        .map(|b| {
            (0..d)
                .map(|j| {
                    let s = ls[b][j].exp();
                    -ls[b][j] - 0.5 * ((z0h[b][j] - mu[b][j]) / s).powi(2) - HALF_LOG_2PI
                })
                .sum()
        })
        .collect();
    let blocks: Vec<_> = vae.posterior().blocks().collect();
    let names: Vec<String> = vae.named_vars().into_iter().map(|(k, _)| k).collect();
    let mut z = z0;
    let mut block_logdet = Vec::new();
    let mut layer = 0;
    while names
        .iter()
        .any(|k| k.starts_with(&format!("posterior.layers.{layer}.")))
    {
        let p = format!("posterior.layers.{layer}");
        if let Some(logs) = var(vae, &format!("{p}.logs")) {
            let bias = var(vae, &format!("{p}.bias")).unwrap();
            let scale = (logs.exp().unwrap() + 1e-3).unwrap();
            let s = scale.flatten_all().unwrap().to_vec1::<f64>().unwrap()[0];
            log_q.iter_mut().for_each(|l| *l -= d as f64 * s.ln());
            z = z
                .broadcast_add(&bias)
                .unwrap()
                .broadcast_mul(&scale)
                .unwrap();
        } else {
            let k = block_logdet.len();
            let (y, jac) = blocks[k].forward_and_hessian(&z, Some(&e.feature)).unwrap();
            let dets: Vec<f64> = jac
                .to_vec3::<f64>()
                .unwrap()
                .iter()
                .map(|j| nalgebra::DMatrix::from_fn(d, d, |r, c| j[r][c]).determinant())
                .collect();
            assert!(
                dets.iter().all(|&det| det > 0.0),
                "a CP-Flow Jacobian is positive definite"
            );
            let ld: Vec<f64> = dets.iter().map(|det| det.ln()).collect();
            log_q.iter_mut().zip(&ld).for_each(|(q, l)| *q -= l);
            block_logdet.push(ld);
            z = y;
        }
        layer += 1;
    }
    assert_eq!(block_logdet.len(), blocks.len(), "every block was walked");
    let logits = vae.decoder().forward(&z).unwrap();
    let log_lik = host_bernoulli(&logits, &batch.x);
    let kl = rows(&z)
        .iter()
        .zip(&log_q)
        .map(|(r, q)| q - r.iter().map(|v| -0.5 * v * v - HALF_LOG_2PI).sum::<f64>())
        .collect();
    let surrogate_shift = (0..n)
        .map(|b| block_logdet.iter().map(|ld| ld[b] - d as f64).sum())
        .collect();
    Parts {
        log_lik,
        kl,
        surrogate_shift,
        block_logdet,
    }
}

/// Static binary 28×28 images (as Caltech 101 Silhouettes): diagonal stripes whose phase
/// and period vary with the image.
fn binary_data() -> VaeData {
    let images = |n: usize, off: usize| VaeImages {
        n,
        pixels: (off..off + n)
            .flat_map(|k| (0..784).map(move |i| u8::from((i / 28 + i % 28 + k) % (2 + k % 3) == 0)))
            .collect(),
    };
    VaeData {
        name: VaeDatasetName::Caltech101,
        likelihood: VaeLikelihood::Bernoulli,
        height: 28,
        width: 28,
        train: images(4, 0),
        val: images(2, 4),
        test: images(2, 6),
        dynamic_binarization: false,
    }
}

#[test]
fn train_loss_is_the_elbo_with_two_blocks_and_the_bernoulli_likelihood() {
    let data = binary_data();
    data.check().unwrap();
    for (posterior, blocks) in [(PosteriorKind::CpFlow, 2), (PosteriorKind::Gaussian, 1)] {
        let config = VaeModelConfig {
            blocks,
            ..tiny_config(posterior)
        };
        let vae = Vae::new(&config, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let idx = [0, 1, 2, 3];
        let batch = make_batch(&vae, &data, VaeSplit::Train, &idx, &mut rng).unwrap();
        vae.initialize(&batch, &mut rng).unwrap();
        let n = idx.len() as f64;
        for beta in [0.3, 1.0] {
            // train_terms draws its noise first from the same generator.
            let eps = vae.posterior().draw_noise(4, &mut rng.clone()).unwrap();
            let params = SurrogateParams {
                probes: 1,
                cg_atol: 1e-12,
                cg_rtol: 0.0,
                cg_max_iters: Some(50),
                ..SurrogateParams::default()
            };
            let terms = vae.train_terms(&batch, beta, &params, &mut rng).unwrap();
            let parts = exact_parts(&vae, &batch, &eps);
            let rec = -parts.log_lik.iter().sum::<f64>() / n;
            let kl = parts.kl.iter().sum::<f64>() / n;
            let shift = parts.surrogate_shift.iter().sum::<f64>() / n;
            let want = rec + beta * (kl + shift);
            let got = terms.loss.to_scalar::<f64>().unwrap();
            // f64 sums of 784·4 Bernoulli terms (rec ~2·10³ nats) and a few O(1–10) KL
            // terms in different orders: ~1e-12 relative; d = 3, so CG (atol 1e-12) is
            // exact to ≤ d·atol = 3e-12 per block and image.
            let tol = 1e-10 * (1.0 + want.abs());
            assert!(
                (got - want).abs() < tol,
                "{posterior} ({blocks} blocks) β = {beta}: train_terms loss {got} vs {want} \
                 from the parts (reconstruction {rec}, KL {kl}, surrogate shift {shift})"
            );
            assert!(
                (terms.reconstruction - rec).abs() < tol,
                "{posterior} β = {beta}: reconstruction {} vs {rec} from the decoder's logits",
                terms.reconstruction
            );
            // Discriminating: the KL moves the loss far past `tol`, and with two blocks
            // each block's log-det (and its surrogate d = 3) does too.
            assert!(beta * kl.abs() > 1e3 * tol, "KL {kl}");
            if posterior == PosteriorKind::CpFlow {
                assert_eq!(parts.block_logdet.len(), 2);
                for (k, ld) in parts.block_logdet.iter().enumerate() {
                    let mean = ld.iter().sum::<f64>() / n;
                    assert!((mean - 3.0).abs() > 1e3 * tol, "block {k}: log-det {mean}");
                }
                assert_eq!(
                    terms.cg.iterations.len(),
                    8,
                    "one CG system per image and block"
                );
            } else {
                assert!(terms.cg.iterations.is_empty());
            }
        }
    }
}
