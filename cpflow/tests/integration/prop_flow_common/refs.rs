//! Test-side references built from the flow's public layers: the forward map composed layer
//! by layer, bounds on the inversion and Hutchinson errors, the ActNorm log-dets in closed
//! form, and the CG surrogate with frozen solutions and fixed probes.

use candle_core::Tensor;
use cpflow::{Flow, Layer};

use super::fd::{FD_STEP, fd_directional, fd_jacobians, log_normal, sym_log};
use super::rows;

/// Per row of `x`, `residual · Σ_k ‖A_k‖∞` with `A_k = J · P_k⁻¹` the Jacobian of the layers
/// after block `k` (`J` of the whole forward map, `P_k` of the layers up to block `k`, both
/// by central differences at `x`): how far `f(x)` can move when each block's output is off
/// by `residual` in the ∞-norm.
pub fn inversion_error_bound(
    flow: &Flow,
    x: &Tensor,
    ctx: Option<&Tensor>,
    residual: f64,
) -> Vec<f64> {
    let all = flow.layers().len();
    let jac = fd_jacobians(x, ctx, |p, c| forward_prefix(flow, p, c, all).0);
    let mut bound = vec![0.0; x.dim(0).unwrap()];
    for (i, l) in flow.layers().iter().enumerate() {
        if let Layer::Cpf(_) = l {
            let pre = fd_jacobians(x, ctx, |p, c| forward_prefix(flow, p, c, i + 1).0);
            for (b, (j, p)) in jac.iter().zip(&pre).enumerate() {
                let after = j * p.clone().try_inverse().unwrap();
                let norm = after.row_iter().map(|r| r.abs().sum()).fold(0.0, f64::max);
                bound[b] += residual * norm;
            }
        }
    }
    bound
}

/// Per row, the sum over blocks of `Σ_{i≠j} |log H|_{ij}` at the block's input, with `H` the
/// central-difference Jacobian of the block's forward map: the largest error of a Hutchinson
/// estimate of `tr log H` with Rademacher probes (`vᵀ L v = tr L + Σ_{i≠j} v_i v_j L_ij`).
pub fn hutchinson_bound(flow: &Flow, x: &Tensor, ctx: Option<&Tensor>) -> Vec<f64> {
    let (_, inputs) = forward_layers(flow, x, ctx);
    let mut bound = vec![0.0; x.dim(0).unwrap()];
    for (blk, h) in flow.blocks().zip(&inputs) {
        let jac = fd_jacobians(h, ctx, |p, c| blk.forward(p, c).unwrap().detach());
        for (b, j) in jac.iter().enumerate() {
            let l = sym_log(j);
            let d = l.nrows();
            for r in 0..d {
                for c in 0..d {
                    if r != c {
                        bound[b] += l[(r, c)].abs();
                    }
                }
            }
        }
    }
    bound
}

/// `Σ log(exp(logs) + 0.001)` over every ActNorm of the flow: the ActNorms' log-dets in
/// closed form from their weights.
pub fn actnorm_logdets(flow: &Flow) -> f64 {
    let weights = flow.weight_tensors();
    let mut total = 0.0;
    for (i, l) in flow.layers().iter().enumerate() {
        if let Layer::ActNorm(_) = l {
            let name = format!("layers.{i}.logs");
            let (_, logs) = weights.iter().find(|(k, _)| *k == name).unwrap();
            let logs = logs.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            total += logs.iter().map(|s| (s.exp() + 1e-3).ln()).sum::<f64>();
        }
    }
    total
}

/// An RNG whose every bit is 1: Rademacher probes drawn from it are all `±(1, …, 1)`
/// (whichever bit a sign is taken from), which makes the surrogate deterministic.
pub struct AllOnes;

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

/// The CG-surrogate loss with probes `v = 𝟙` and the CG solutions frozen at `us` (per
/// block, per row): `−mean_b[log N(z_b) + Σ ActNorm log-dets + Σ_k 𝟙ᵀ H_k u_kb]`, with `z`
/// and the block inputs `h_k` from the public layers and `H_k u_kb` a five-point
/// directional difference of block `k`'s forward map at `h_k` along `u_kb`.
pub fn frozen_surrogate(
    flow: &Flow,
    x: &Tensor,
    ctx: Option<&Tensor>,
    us: &[Vec<Vec<f64>>],
) -> f64 {
    let (z, inputs) = forward_layers(flow, x, ctx);
    let z = rows(&z);
    let n = z.len() as f64;
    let log_var = flow.prior().log_var;
    let prior = z.iter().map(|r| log_normal(r, log_var)).sum::<f64>() / n;
    let mut s = 0.0;
    for ((blk, h), u) in flow.blocks().zip(&inputs).zip(us) {
        let hu = fd_directional(h, ctx, u, FD_STEP, |p, c| {
            blk.forward(p, c).unwrap().detach()
        });
        s += hu.iter().flatten().sum::<f64>() / n;
    }
    -(prior + actnorm_logdets(flow) + s)
}

/// The forward map `x ↦ z` composed layer by layer from the public layer APIs
/// (`ActNorm::forward`, `CpFlowBlock::forward`: candle's tracked ops, not the host kernels of
/// the evaluation passes), detached; also each block's input.
pub fn forward_layers(flow: &Flow, x: &Tensor, ctx: Option<&Tensor>) -> (Tensor, Vec<Tensor>) {
    forward_prefix(flow, x, ctx, flow.layers().len())
}

/// [`forward_layers`] through the first `layers` layers only.
pub fn forward_prefix(
    flow: &Flow,
    x: &Tensor,
    ctx: Option<&Tensor>,
    layers: usize,
) -> (Tensor, Vec<Tensor>) {
    let mut h = x.clone();
    let mut block_inputs = Vec::new();
    for l in &flow.layers()[..layers] {
        h = match l {
            Layer::ActNorm(a) => a.forward(&h).unwrap().0,
            Layer::Cpf(b) => {
                block_inputs.push(h.detach());
                b.forward(&h, ctx).unwrap()
            }
        }
        .detach();
    }
    (h, block_inputs)
}
