//! The image flow's training loss with CP-Flow blocks (`ImageFlow::surrogate_loss`), f64,
//! against references built here from the flow's public layers: the logit and ActNorm maps
//! and log-dets in closed form on the host (from `alpha` and the saved weights), the squeeze
//! and the blocks' forward maps (`CpFlowBlock::forward`, candle's tracked ops — not the host
//! kernels of the training path), the factor-out split, the prior on the host. Small
//! two-scale flows on 2×4×4 (D = 32) with a convolutional potential, with and without
//! factor-out and a dense `fc_end` block, weights moved off the initialisation.
//! `cargo test -p cpflow --test integration image_surrogate_loss`.

use std::collections::HashMap;
use std::f64::consts::LN_2;

use candle_core::{DType, Device, Tensor};
use cpflow::image::{ImageFlow, ImageFlowConfig, ImageLayer, MultiscaleConfig, dequantize};
use cpflow::{CgPreconditioner, FloatType, SurrogateParams};
use icnn::ImageShape;
use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::image_common::{conv, dense};

/// Unit roundoff of `f64`.
const U64: f64 = f64::EPSILON / 2.0;
const LN_2PI: f64 = 1.837_877_066_409_345_3;
const D: usize = 32;

/// Host copy of a `(B, n)` tensor.
fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
}

fn tensor(r: &[Vec<f64>]) -> Tensor {
    let (b, d) = (r.len(), r[0].len());
    Tensor::from_vec(r.concat(), (b, d), &Device::Cpu).unwrap()
}

/// Dequantised images of seeded random grey levels, `(n, D)` f64.
fn images(n: usize, seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let k: Vec<u32> = (0..n * D).map(|_| rng.random_range(0..256u32)).collect();
    let k = Tensor::from_vec(k, (n, D), &Device::Cpu).unwrap();
    dequantize(&k, DType::F64, &mut rng).unwrap()
}

/// Two scales on 2×4×4, `nblocks = [1, 2]`, a convolutional potential (and an optional dense
/// `fc_end` block), initialised on 16 images, then every weight (init flags excluded) moved
/// by `N(0, 0.1²)` so that no check runs at the initialisation's special point (unit
/// ActNorm statistics, `sp(w₀) = 1`).
fn flow(factor_out: bool, fc_end: bool) -> ImageFlow {
    let ms = MultiscaleConfig {
        image: ImageShape::new(2, 4, 4),
        nblocks: vec![1, 2],
        logit_alpha: Some(0.05),
        factor_out,
        potential: conv(),
        fc_end: fc_end.then(dense),
        float: FloatType::F64,
        init_seed: 3,
        ..MultiscaleConfig::mnist()
    };
    let flow = ImageFlow::new(ImageFlowConfig::multiscale(&ms).unwrap(), &Device::Cpu).unwrap();
    flow.initialize(&images(16, 1)).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let moved: HashMap<String, Tensor> = flow
        .weight_tensors()
        .into_iter()
        .map(|(name, t)| {
            let t = if name.ends_with("initialized") {
                t.copy().unwrap()
            } else {
                let noise: Vec<f64> = (0..t.elem_count())
                    .map(|_| 0.1 * rng.sample::<f64, _>(StandardNormal))
                    .collect();
                let noise = Tensor::from_vec(noise, t.shape(), &Device::Cpu).unwrap();
                (t + noise).unwrap()
            };
            (name, t)
        })
        .collect();
    flow.set_weights(&moved, "").unwrap();
    flow
}

/// The flow's map `x ↦ z` composed here, with the log-dets of its logit and ActNorm layers
/// per row, and each block's input (as a tensor).
struct Reference {
    z: Vec<Vec<f64>>,
    logdet: Vec<f64>,
    block_inputs: Vec<Tensor>,
}

/// [`Reference`] at `x`: logit `y = log s − log(1 − s)`, `s = α + (1 − 2α)x`, log-det
/// `D log(1 − 2α) − Σ log s(1 − s)`; ActNorm `y = (x + b)·(e^logs + 0.001)` per channel
/// (`(C, H, W)` rows: entry `j` in channel `j / HW`) or per feature, log-det `Σ log scale`
/// over the entries; the squeeze's permutation and the blocks' tracked forward maps;
/// factor-out keeps the first half of the row and puts the second half into `z` (in order).
fn reference(flow: &ImageFlow, x: &Tensor) -> Reference {
    let weights: HashMap<String, Vec<f64>> = flow
        .weight_tensors()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f64>().unwrap()))
        .collect();
    let scales = |i: usize| -> (Vec<f64>, Vec<f64>) {
        let b = weights[&format!("layers.{i}.bias")].clone();
        let logs = &weights[&format!("layers.{i}.logs")];
        (b, logs.iter().map(|s| s.exp() + 1e-3).collect())
    };
    let mut h = rows(x);
    let n = h.len();
    let mut logdet = vec![0.0; n];
    let mut factored: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut block_inputs = Vec::new();
    for (i, layer) in flow.layers().iter().enumerate() {
        let shape = flow.layer_shapes().inputs[i];
        match layer {
            ImageLayer::Logit(t) => {
                let a = t.alpha();
                for (r, ld) in h.iter_mut().zip(&mut logdet) {
                    *ld += r.len() as f64 * (1.0 - 2.0 * a).ln();
                    for v in r.iter_mut() {
                        let s = a + (1.0 - 2.0 * a) * *v;
                        *ld -= (s * (1.0 - s)).ln();
                        *v = s.ln() - (1.0 - s).ln();
                    }
                }
            }
            ImageLayer::ActNorm(_) | ImageLayer::FeatureActNorm(_) => {
                let (b, sc) = scales(i);
                // Entry j's parameter: its channel, or the feature itself.
                let per = if matches!(layer, ImageLayer::ActNorm(_)) {
                    shape.height * shape.width
                } else {
                    1
                };
                let ld: f64 = sc.iter().map(|s| s.ln()).sum::<f64>() * per as f64;
                for (r, l) in h.iter_mut().zip(&mut logdet) {
                    *l += ld;
                    for (j, v) in r.iter_mut().enumerate() {
                        *v = (*v + b[j / per]) * sc[j / per];
                    }
                }
            }
            ImageLayer::Squeeze(s) => h = rows(&s.forward(&tensor(&h)).unwrap()),
            ImageLayer::FactorOut(k) => {
                for (r, f) in h.iter_mut().zip(&mut factored) {
                    f.extend(r.split_off(r.len() - k));
                }
            }
            ImageLayer::Cpf(blk) => {
                let t = tensor(&h);
                h = rows(&blk.forward(&t, None).unwrap().detach());
                block_inputs.push(t);
            }
        }
    }
    let z = factored
        .into_iter()
        .zip(h)
        .map(|(mut f, r)| {
            f.extend(r);
            f
        })
        .collect();
    Reference {
        z,
        logdet,
        block_inputs,
    }
}

/// `mean_b[−(log N(z_b) + log-dets_b + s_b) + D ln 256] / (D ln 2)` (bits per dimension).
fn bpd_loss(flow: &ImageFlow, r: &Reference, s: &[f64]) -> f64 {
    let log_var = flow.prior().log_var;
    let n = r.z.len() as f64;
    let total: f64 =
        r.z.iter()
            .zip(&r.logdet)
            .zip(s)
            .map(|((z, ld), s)| {
                let sq: f64 = z.iter().map(|v| v * v).sum();
                let log_n = -0.5 * sq / log_var.exp() - 0.5 * z.len() as f64 * (LN_2PI + log_var);
                log_n + ld + s
            })
            .sum();
    (-total / n + D as f64 * 256f64.ln()) / (D as f64 * LN_2)
}

/// Tight CG: `|r_j| ≤ 1e-12` per residual entry, iterations enough for D = 32.
fn tight(probes: usize, preconditioner: CgPreconditioner) -> SurrogateParams {
    SurrogateParams {
        probes,
        cg_atol: 1e-12,
        cg_max_iters: Some(4 * D),
        preconditioner,
        ..Default::default()
    }
}

/// The cases: with factor-out on the host kernels (one probe); without, with an `fc_end`
/// block, on the composed path (two probes; preconditioned in the value test); both together.
const CASES: [(bool, bool, usize); 3] = [(true, false, 1), (false, true, 2), (true, true, 1)];

/// The surrogate's value is not a bpd: with CG solved tightly each block contributes `S =
/// vᵀHu = vᵀv = d_k` (its dimension, Rademacher probes), so the loss is the bpd of the
/// non-block layers and the prior, minus `Σ_k d_k / (D ln 2)`. Tolerance: CG stops at
/// `|r_j| ≤ 1e-12` per residual entry, so `|S − d_k| ≤ d_k·1e-12` per block and row, at most
/// 112e-12 nats or 5e-12 bpd here; the rest is the rounding of sums of O(100) nats by two
/// code paths (≈ 1e-13 relative): 1e-11·(1 + |want|) bpd (the gap seen is ≤ 3e-14), while a
/// block term of the wrong sign or left out moves the loss by ≥ 1 bpd.
#[test]
fn surrogate_value_is_the_bpd_of_the_other_layers_minus_d_per_block() {
    for (factor_out, fc_end, probes) in CASES {
        let flow = flow(factor_out, fc_end);
        let x = images(4, 7);
        let pre = if probes > 1 {
            CgPreconditioner::MeanHessian
        } else {
            CgPreconditioner::None
        };
        let out = flow
            .surrogate_loss(&x, &tight(probes, pre), &mut StdRng::seed_from_u64(5))
            .unwrap();
        assert_eq!(
            out.cg.converged,
            out.cg.iterations.len(),
            "CG did not converge"
        );
        let loss = out.loss.to_scalar::<f64>().unwrap();
        let r = reference(&flow, &x);
        let dims: usize = flow.blocks().map(|b| b.dim()).sum();
        let blocks = flow.blocks().count();
        assert_eq!(blocks, 3 + usize::from(fc_end));
        let want = bpd_loss(&flow, &r, &[dims as f64; 4]);
        let tol = 1e-11 * (1.0 + want.abs());
        assert!(
            (loss - want).abs() <= tol,
            "factor_out {factor_out}, fc_end {fc_end}, probes {probes}: loss {loss} vs {want} \
             (|Δ| = {:e} > {tol:e})",
            (loss - want).abs()
        );
    }
}

/// An RNG whose every bit is 1: Rademacher probes from it are all `±𝟙`, which makes the
/// surrogate deterministic.
struct AllOnes;

impl rand::RngCore for AllOnes {
    fn next_u32(&mut self) -> u32 {
        u32::MAX
    }
    fn next_u64(&mut self) -> u64 {
        u64::MAX
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        dst.fill(0xff);
    }
}

/// Per block `k` and row `b`, the block's Jacobian `H_kb` at its input (the dense Hessian of
/// `CpFlowBlock::forward_and_hessian`), as nalgebra matrices.
fn hessians(flow: &ImageFlow, r: &Reference) -> Vec<Vec<DMatrix<f64>>> {
    flow.blocks()
        .zip(&r.block_inputs)
        .map(|(blk, h)| {
            let (_, hess) = blk.forward_and_hessian(h, None).unwrap();
            hess.to_vec3::<f64>()
                .unwrap()
                .into_iter()
                .map(|m| DMatrix::from_fn(m.len(), m.len(), |i, j| m[i][j]))
                .collect()
        })
        .collect()
}

/// The surrogate with probes `𝟙` and the CG solutions frozen at `us`: [`bpd_loss`] with
/// `s_b = Σ_k 𝟙ᵀ H_kb u_kb`, everything at the flow's current weights.
fn frozen_surrogate(flow: &ImageFlow, x: &Tensor, us: &[Vec<DVector<f64>>]) -> f64 {
    let r = reference(flow, x);
    let hs = hessians(flow, &r);
    let s: Vec<f64> = (0..r.z.len())
        .map(|b| hs.iter().zip(us).map(|(h, u)| (&h[b] * &u[b]).sum()).sum())
        .collect();
    bpd_loss(flow, &r, &s)
}

/// The derivative of `f()` in entry `at` of `var` by the five-point stencil with step `h =
/// 1e-4·max(1, |θ|)`, the variable restored after, and a bound on its error: `|d(h) −
/// d(2h)|` (15 times the truncation error, `∝ h⁴`) plus rounding `1.5·64·u·max|f|/h`.
fn param_derivative(var: &candle_core::Var, at: usize, f: impl Fn() -> f64) -> (f64, f64) {
    let base = var.as_tensor().copy().unwrap();
    let flat = base.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let fmax = std::cell::Cell::new(0.0f64);
    let value_at = |t: f64| -> f64 {
        let mut p = flat.clone();
        p[at] += t;
        var.set(&Tensor::from_vec(p, base.shape(), &Device::Cpu).unwrap())
            .unwrap();
        let v = f();
        fmax.set(fmax.get().max(v.abs()));
        v
    };
    let h = 1e-4 * flat[at].abs().max(1.0);
    let stencil = |h: f64| {
        (-value_at(2.0 * h) + 8.0 * value_at(h) - 8.0 * value_at(-h) + value_at(-2.0 * h))
            / (12.0 * h)
    };
    let (d1, d2) = (stencil(h), stencil(2.0 * h));
    var.set(&base).unwrap();
    (d1, (d1 - d2).abs() + 1.5 * 64.0 * U64 * fmax.get() / h)
}

/// The entries whose derivatives are checked: every block's `w₀` and `w₁`, and one seeded
/// entry of each of 10 other seeded variables (flow ActNorms, ICNN weights and ActNorms):
/// `(name, variable, flat index)`.
fn picks(flow: &ImageFlow) -> Vec<(String, candle_core::Var, usize)> {
    let mut rng = StdRng::seed_from_u64(11);
    let (scalars, mut others): (Vec<_>, Vec<_>) = flow
        .named_vars()
        .into_iter()
        .filter(|(name, _)| !name.ends_with("initialized"))
        .partition(|(name, _)| name.ends_with(".w0") || name.ends_with(".w1"));
    assert_eq!(scalars.len(), 2 * flow.blocks().count());
    others.shuffle(&mut rng);
    others.truncate(10);
    scalars
        .into_iter()
        .chain(others)
        .map(|(name, var)| {
            let at = rng.random_range(0..var.elem_count());
            (name, var, at)
        })
        .collect()
}

/// With probes `v = 𝟙` (an RNG of all-one bits) and CG solved tightly, the surrogate's
/// parameter gradient is the gradient of [`frozen_surrogate`] with `u_kb = H_kb⁻¹𝟙` frozen
/// (`H` from `forward_and_hessian`, solved by LU here), by central differences in the entries
/// of [`picks`]. First the value: at the current weights the reference is the loss (`𝟙ᵀHu =
/// 𝟙ᵀ𝟙`), to CG's residual, as in the value test: 1e-11·(1 + |loss|). Gradient tolerance: the
/// stencil's own error bound ([`param_derivative`], ≈ 5e-10 here) plus 1e-8·(1 + |fd|) for
/// the gap between CG's `u` and the LU solve (residual ≤ 1e-12 per entry) and the rounding of
/// two code paths (the largest gap seen is 1.3e-11); a block term of the wrong sign or left
/// out, or a gradient that misses a block's `∂H` or the path through its input, is off by
/// O(|∂ log det H|).
#[test]
fn surrogate_gradient_with_fixed_probes_matches_finite_differences() {
    for (factor_out, fc_end, probes) in CASES {
        let flow = flow(factor_out, fc_end);
        let x = images(3, 9);
        let params = tight(probes, CgPreconditioner::None);
        let out = flow.surrogate_loss(&x, &params, &mut AllOnes).unwrap();
        assert_eq!(
            out.cg.converged,
            out.cg.iterations.len(),
            "CG did not converge"
        );
        let loss = out.loss.to_scalar::<f64>().unwrap();
        let grads = out.loss.backward().unwrap();
        let r = reference(&flow, &x);
        let us: Vec<Vec<DVector<f64>>> = hessians(&flow, &r)
            .into_iter()
            .map(|hs| {
                hs.into_iter()
                    .map(|h| {
                        let ones = DVector::from_element(h.nrows(), 1.0);
                        h.lu().solve(&ones).unwrap()
                    })
                    .collect()
            })
            .collect();
        let what = format!("factor_out {factor_out}, fc_end {fc_end}, probes {probes}");
        let g0 = frozen_surrogate(&flow, &x, &us);
        let tol = 1e-11 * (1.0 + g0.abs());
        assert!(
            (loss - g0).abs() <= tol,
            "{what}: loss {loss} vs reference {g0}"
        );
        for (name, var, at) in picks(&flow) {
            let (fd, err) = param_derivative(&var, at, || frozen_surrogate(&flow, &x, &us));
            let g = grads.get(var.as_tensor()).map_or(0.0, |g| {
                g.flatten_all().unwrap().to_vec1::<f64>().unwrap()[at]
            });
            let tol = 1e-8 * (1.0 + fd.abs()) + err;
            assert!(
                (g - fd).abs() <= tol,
                "{what}: {name}[{at}]: gradient {g} vs FD {fd} (|Δ| = {:e} > {tol:e})",
                (g - fd).abs()
            );
        }
    }
}
