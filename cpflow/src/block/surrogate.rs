//! The CG log-det surrogate of a [`CpFlowBlock`] (`docs/reference/cpflow-reference.md`
//! §2.3), the training path: the forward map with the per-sample surrogate
//! `S = mean_probes Σ_j (H u)_j v_j`, by the host kernels (one probe) or by candle ops.

use candle_core::Tensor;
use rand::Rng;

use crate::probe_source::ProbeSource;

use super::{CgReport, CpFlowBlock, scalar_f64};
use crate::config::SurrogateParams;
use crate::error::Result;
use crate::surrogate_cg::{host_surrogate_cg, surrogate_cg};
use crate::surrogate_preconditioner::surrogate_preconditioner;

impl CpFlowBlock {
    /// The training path (`docs/reference/cpflow-reference.md` §2.3): returns `z = ∇Φ(x)` (tracked), the
    /// per-sample CG surrogate `S = mean_probes Σ_j (H u)_j v_j` with `u ≈ H⁻¹v` detached
    /// (tracked through `H`; its gradient is an unbiased estimate of `∇ log det H`, its value
    /// is ≈ d, not a log-det), and the CG report. With `params.preconditioner =
    /// MeanHessian` the solves are preconditioned by the mean Jacobian at `x`'s first rows
    /// ([`crate::surrogate_preconditioner`]).
    pub fn forward_with_surrogate<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
        params: &SurrogateParams,
        rng: &mut R,
    ) -> Result<(Tensor, Tensor, CgReport)> {
        self.forward_with_surrogate_sharing(x, ctx, params, rng, None, None)
    }

    /// [`CpFlowBlock::forward_with_surrogate`] with the potential's host weights built once
    /// for the row chunks of a batch ([`CpFlowBlock::host_weights`]; `None`: built here) and
    /// the CG preconditioner's `M⁻¹` made once for them (`None`: made here from `x`'s rows,
    /// if `params` ask for one).
    pub(crate) fn forward_with_surrogate_sharing<R: ProbeSource + ?Sized>(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
        params: &SurrogateParams,
        rng: &mut R,
        weights: Option<&icnn::HostWeights>,
        m_inv: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, CgReport)> {
        let m_inv = match m_inv {
            Some(m) => Some(m.clone()),
            None => surrogate_preconditioner(self, x, ctx, params, weights)?,
        };
        if params.probes <= 1
            && let Some(host) = self.host_linearize_sharing(x, ctx, weights)?
        {
            return self.host_surrogate(&host, x, params, m_inv.as_ref(), rng);
        }
        self.composed_surrogate(x, ctx, params, m_inv.as_ref(), rng)
    }

    /// [`CpFlowBlock::forward_with_surrogate`] with the host kernels (one probe): CG on the
    /// cached forward pass, then `(∇F, uᵀ∇²F v)` as one op with a hand-written backward
    /// (`icnn::HostLinearization`); for convolutional potentials the tangents of `u` and `v`
    /// come from CG's products ([`host_surrogate_cg`]). `uᵀ(sp₁H + sp₀I)v` equals
    /// `((sp₁H + sp₀I)u)ᵀv` (H is symmetric), the composed path's value.
    fn host_surrogate<R: ProbeSource + ?Sized>(
        &self,
        host: &icnn::HostLinearization,
        x: &Tensor,
        params: &SurrogateParams,
        m_inv: Option<&Tensor>,
        rng: &mut R,
    ) -> Result<(Tensor, Tensor, CgReport)> {
        let (sp1, sp0) = self.weights()?;
        let (a1, a0) = (scalar_f64(&sp1)?, scalar_f64(&sp0)?);
        let (b, d) = x.dims2()?;
        let v = rng.rademacher(b, d, x)?;
        let (u, (g, q), report) = if host.prefers_tracked_tangents() {
            let (u, tu, tv, report) = host_surrogate_cg(host, &v, a1, a0, params, d, m_inv)?;
            let gq = host.gradient_and_bilinear_given_tangents(&u, &v, &tu, &tv)?;
            (u, gq, report)
        } else {
            let (u, report) = surrogate_cg(
                |w, active| host.hvp_active(w, active),
                &v,
                a1,
                a0,
                params,
                d,
                m_inv,
            )?;
            let gq = host.gradient_and_bilinear(&u, &v)?;
            (u, gq, report)
        };
        let z = self.map_from(&g, x, &sp1, &sp0)?;
        let uv = (&u * &v)?.sum(1)?;
        let s = (q.broadcast_mul(&sp1)? + uv.broadcast_mul(&sp0)?)?;
        Ok((z, s, report))
    }

    /// [`CpFlowBlock::forward_with_surrogate`] with candle ops: the tracked linearisation and
    /// tracked HVP, differentiated by candle's backward (any potential, device and probe count).
    fn composed_surrogate<R: ProbeSource + ?Sized>(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
        params: &SurrogateParams,
        m_inv: Option<&Tensor>,
        rng: &mut R,
    ) -> Result<(Tensor, Tensor, CgReport)> {
        let (sp1, sp0) = self.weights()?;
        let (a1, a0) = (scalar_f64(&sp1)?, scalar_f64(&sp0)?);
        let (b, d) = x.dims2()?;
        let p = params.probes.max(1);
        let lin = self.potential.linearize(x, ctx)?;
        let z = self.map_from(&lin.gradient(), x, &sp1, &sp0)?;
        let v = rng.rademacher(b * p, d, x)?;
        let det = lin.detach();
        let (u, report) = surrogate_cg(
            |w, _active| {
                if p == 1 {
                    det.hvp(w)
                } else {
                    det.hvp_many(&w.reshape((b, p, d))?)
                        .and_then(|t| t.reshape((b * p, d)).map_err(Into::into))
                }
            },
            &v,
            a1,
            a0,
            params,
            d,
            m_inv,
        )?;
        let hu = if p == 1 {
            lin.hvp(&u)?
        } else {
            lin.hvp_many(&u.reshape((b, p, d))?)?.reshape((b * p, d))?
        };
        let hu = (hu.broadcast_mul(&sp1)? + u.broadcast_mul(&sp0)?)?;
        let s = (hu * &v)?.sum(1)?.reshape((b, p))?.mean(1)?;
        Ok((z, s, report))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    use super::*;
    use crate::block::BlockConfig;
    use crate::potential::PotentialConfig;
    use crate::rng::FlowRng;
    use candle_nn::VarBuilder;

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    /// Normal draws `N(0, std²)` of `shape` in f64 from a seeded RNG (candle's CPU RNG cannot
    /// be seeded, and the checks below depend on the draws).
    fn normal(rng: &mut FlowRng, shape: &[usize], std: f64) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|_| std * rng.sample::<f64, _>(rand_distr::StandardNormal))
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The host-kernel surrogate gives the composed path's `z`, `S`, CG report and gradients
    /// (every variable of the block and the input), f64, away from the init: a dense `Icnn2`
    /// (tangents recomputed) and a `ConvIcnn` on 2×3×3 images (tangents followed through CG);
    /// the host path's products run on the systems CG has not frozen, the composed path's on
    /// all.
    #[test]
    fn host_surrogate_equals_composed_surrogate() {
        let dense = PotentialConfig::Icnn2(icnn::Icnn2Config {
            dim: 3,
            width: 8,
            depth: 3,
            ..Default::default()
        });
        check_host_surrogate(dense, 3, false);
        let conv = PotentialConfig::ConvIcnn(icnn::ConvIcnnConfig {
            image: icnn::ImageShape {
                channels: 2,
                height: 3,
                width: 3,
            },
            width: 4,
            depth: 2,
            num_pooling: 0,
        });
        check_host_surrogate(conv, 18, true);
    }

    fn check_host_surrogate(pot: PotentialConfig, d: usize, tracked: bool) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let mut rng = FlowRng::seed_from_u64(4);
        let block = CpFlowBlock::new(vb, &BlockConfig::new(pot), &mut rng).unwrap();
        let x = normal(&mut rng, &[16, d], 1.0);
        block.initialize(&x, None).unwrap();
        // Away from the init: perturb every variable, in name order (the VarMap is a hash
        // map: its own order changes from run to run, and with it which draw goes where).
        let mut named: Vec<(String, Var)> = {
            let data = vm.data().lock().unwrap();
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        named.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, var) in &named {
            let t = var.as_tensor();
            let noise = normal(&mut rng, t.dims(), 0.2);
            var.set(&(t + noise).unwrap()).unwrap();
        }
        let xv = Var::from_tensor(&(&x * 1.5).unwrap()).unwrap();
        let params = SurrogateParams::default();
        let host = block
            .potential
            .host_linearize(xv.as_tensor(), None)
            .unwrap()
            .expect("dense and conv ICNNs on the CPU take the host kernels");
        assert_eq!(host.prefers_tracked_tangents(), tracked);
        let (r, t) = (
            normal(&mut rng, &[16, d], 1.0),
            normal(&mut rng, &[16], 1.0),
        );
        let run = |host_path: bool| {
            let mut rng = FlowRng::seed_from_u64(9);
            let (z, s, rep) = if host_path {
                block.host_surrogate(&host, xv.as_tensor(), &params, None, &mut rng)
            } else {
                block.composed_surrogate(xv.as_tensor(), None, &params, None, &mut rng)
            }
            .unwrap();
            let loss = ((&z * &r).unwrap().sum_all().unwrap()
                + (&s * &t).unwrap().sum_all().unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            let mut gv: Vec<Vec<f64>> = vm
                .all_vars()
                .iter()
                .map(|v| grads.get(v).map(flat).unwrap_or_default())
                .collect();
            gv.push(flat(grads.get(&xv).unwrap()));
            (flat(&z), flat(&s), rep.iterations, gv)
        };
        let (zh, sh, ih, gh) = run(true);
        let (zc, sc, ic, gc) = run(false);
        assert_eq!(ih, ic);
        // The host path follows u's tangents through CG's steps: several must be taken; and
        // its products skip the systems CG has frozen: some must converge before others.
        assert!(ih.iter().any(|&k| k >= 2), "{ih:?}");
        assert!(ih.iter().min() < ih.iter().max(), "{ih:?}");
        let close = |a: &[f64], b: &[f64], tol: f64, what: &str| {
            assert_eq!(a.len(), b.len(), "{what}");
            let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= tol * scale, "{what}: {x} vs {y}");
            }
        };
        close(&zh, &zc, 1e-12, "z");
        close(&sh, &sc, 1e-12, "S");
        assert!(gc.iter().filter(|g| g.iter().any(|v| *v != 0.0)).count() >= 5);
        let vars = vm.all_vars();
        let by_id: std::collections::HashMap<_, _> = {
            let data = vm.data().lock().unwrap();
            data.iter()
                .map(|(k, v)| (v.as_tensor().id(), k.clone()))
                .collect()
        };
        let names: Vec<String> = vars
            .iter()
            .map(|v| by_id[&v.as_tensor().id()].clone())
            .chain(["x".to_string()])
            .collect();
        for ((a, b), name) in gh.iter().zip(&gc).zip(&names) {
            if b.is_empty() {
                // No path in the composed graph: the host gradient must be zero.
                assert!(a.iter().all(|v| *v == 0.0), "{name}: {a:?}");
                continue;
            }
            close(a, b, 1e-10, name);
        }
    }
}
