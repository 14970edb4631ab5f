//! The detached Jacobian `H = a₁∇²F + a₀I` of a CP-Flow block at a fixed batch, applied by
//! Hessian-vector products (the operator CG and Lanczos solve and estimate with).

use candle_core::Tensor;
use icnn::Linearization;
use krylov::{BatchOperator, KrylovError};

use crate::error::Result;

/// Where the Hessian-vector products of a [`HessianOperator`] come from.
#[derive(Clone, Debug)]
pub(crate) enum Products {
    /// The candle recursions (any potential and device; tracked for `tracked_operator`).
    Composed(Linearization),
    /// The host kernels of dense and conv ICNNs on the CPU (detached).
    Host(icnn::HostLinearization),
}

/// The detached Jacobian `H = a₁∇²F + a₀I` of a block at a fixed batch, as products.
///
/// It is a [`krylov::BatchOperator`] on `(B, d)` tensors (one system per row), so `krylov`'s
/// CG and Lanczos and `logdet`'s SLQ and Hutchinson estimators take it as it is (see
/// [`HessianOperator::batch_shape`](krylov::BatchOperator::batch_shape)'s example).
///
/// ```
/// # use cpflow::candle::{Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let block = flow.blocks().next().expect("one block");
/// let (_z, op) = block.tracked_operator(&x, None)?;
/// assert_eq!(op.batch_size(), 2);
/// // H e₁ for sample 0 and H e₂ for sample 1: columns of the dense Jacobians.
/// let v = Tensor::new(&[[1.0f64, 0.0], [0.0, 1.0]], &Device::Cpu)?;
/// let hv = op.apply(&v)?.to_vec2::<f64>()?;
/// let h = op.dense()?.to_vec3::<f64>()?;
/// for (i, (got, want)) in [(hv[0][0], h[0][0][0]), (hv[0][1], h[0][1][0]), (hv[1][1], h[1][1][1])]
///     .into_iter()
///     .enumerate()
/// {
///     assert!((got - want).abs() < 1e-10, "entry {i}: {got} vs {want}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HessianOperator {
    pub(crate) lin: Products,
    pub(crate) a1: f64,
    pub(crate) a0: f64,
}

impl HessianOperator {
    /// `∇²F v` for `v` `(B, d)`.
    fn potential_hvp(&self, v: &Tensor) -> Result<Tensor> {
        Ok(match &self.lin {
            Products::Composed(l) => l.hvp(v)?,
            Products::Host(h) => h.hvp(v)?,
        })
    }

    /// `H v` for `v` `(B, d)`.
    pub fn apply(&self, v: &Tensor) -> Result<Tensor> {
        Ok(((self.potential_hvp(v)? * self.a1)? + (v * self.a0)?)?)
    }

    /// `H v` for `v` `(B, K, d)`.
    pub fn apply_many(&self, v: &Tensor) -> Result<Tensor> {
        let hv = match &self.lin {
            Products::Composed(l) => l.hvp_many(v)?,
            Products::Host(h) => {
                let k = v.dim(1)?;
                let cols = (0..k)
                    .map(|i| h.hvp(&v.narrow(1, i, 1)?.squeeze(1)?.contiguous()?))
                    .collect::<icnn::Result<Vec<_>>>()?;
                Tensor::stack(&cols, 1)?
            }
        };
        Ok(((hv * self.a1)? + (v * self.a0)?)?)
    }

    /// The dense `H = a₁∇²F + a₀I`, `(B, d, d)` (detached).
    pub fn dense(&self) -> Result<Tensor> {
        let hess = match &self.lin {
            Products::Composed(l) => l.hessian()?,
            Products::Host(h) => h.hessian()?,
        };
        let (b, d, _) = hess.dims3()?;
        let eye = Tensor::eye(d, hess.dtype(), hess.device())?
            .unsqueeze(0)?
            .broadcast_as((b, d, d))?;
        Ok(((hess * self.a1)? + (eye * self.a0)?)?)
    }

    /// `F(x)` at the linearisation point (detached), `(B,)`.
    pub fn potential(&self) -> Result<Tensor> {
        Ok(match &self.lin {
            Products::Composed(l) => l.potential(),
            Products::Host(h) => h.potential()?,
        })
    }

    /// Batch size.
    pub fn batch_size(&self) -> usize {
        match &self.lin {
            Products::Composed(l) => l.batch_size(),
            Products::Host(h) => h.batch_size(),
        }
    }

    /// The input dimension `d` (the operator acts on `(B, d)` batches).
    pub fn dim(&self) -> usize {
        match &self.lin {
            Products::Composed(l) => l.dim(),
            Products::Host(h) => h.dim(),
        }
    }
}

/// `H` as `krylov`'s batched operator: system `b` is row `b`. Products of the host kernels
/// skip the inactive rows (CG's converged systems), whose output rows then hold `a₀·x_b`;
/// the composed products compute every row. Call it as `BatchOperator::apply(&op, v,
/// active)`: in method syntax the inherent [`HessianOperator::apply`] (all rows) shadows it.
/// The operator's own errors (a `v` of another shape
/// or dtype) are [`KrylovError::Operator`] with the `icnn` error as the source; the declared
/// [`batch_shape`](BatchOperator::batch_shape) `(B, d)` lets the solvers refuse a batch of
/// another shape before any product.
///
/// ```
/// # use cpflow::candle::{DType, Device, Tensor};
/// # use cpflow::{Flow, FlowConfig, PotentialConfig};
/// use cpflow::krylov::BatchOperator;
/// use cpflow::logdet::{SlqParams, exact_logdet_tensor, slq_logdet};
/// use cpflow::rand::SeedableRng;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let block = flow.blocks().next().expect("one block");
/// let (_z, op) = block.tracked_operator(&x, None)?;
/// assert_eq!(op.batch_shape(), Some((2, 2)));
/// // SLQ on the block's Jacobian, no adapter: with d = 2 Lanczos steps the quadrature is
/// // exact, so the estimate is off by the probes' sampling error only.
/// let mut rng = cpflow::FlowRng::seed_from_u64(0);
/// let params = SlqParams::default().with_probes(400).with_lanczos_steps(2);
/// let slq = slq_logdet(&op, &x, &mut rng, &params)?;
/// let exact = exact_logdet_tensor(&op.dense()?)?;
/// for b in 0..2 {
///     assert!((slq.estimate[b] - exact[b]).abs() <= 4.0 * slq.std_err[b] + 1e-12);
/// }
/// # Ok(())
/// # }
/// ```
impl BatchOperator<Tensor> for HessianOperator {
    fn apply(&self, x: &Tensor, active: &[bool]) -> std::result::Result<Tensor, KrylovError> {
        let hv = match &self.lin {
            Products::Composed(l) => l.hvp(x),
            Products::Host(h) => h.hvp_active(x, active),
        }
        .map_err(KrylovError::operator)?;
        Ok(((hv * self.a1)? + (x * self.a0)?)?)
    }

    fn batch_shape(&self) -> Option<(usize, usize)> {
        Some((self.batch_size(), self.dim()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use krylov::{BatchOperator, CgParams, KrylovError, LanczosParams, cg, lanczos};
    use logdet::{SlqParams, exact_logdet_tensor, slq_logdet};
    use rand::Rng;

    use super::{HessianOperator, Products};
    use crate::{Flow, FlowConfig, FlowRng, PotentialConfig};

    /// An initialised one-block flow on `d = 4` and a batch of 6 points (seeded).
    fn flow_and_points() -> (Flow, Tensor) {
        let icnn = icnn::Icnn3Config {
            dim: 4,
            width: 8,
            depth: 2,
            ..Default::default()
        };
        let flow = Flow::new(
            FlowConfig::single_block(PotentialConfig::Icnn3(icnn)),
            &Device::Cpu,
        )
        .unwrap();
        let mut rng = FlowRng::seed_from_u64(3);
        let v: Vec<f64> = (0..24).map(|_| rng.random::<f64>() * 3.0 - 1.5).collect();
        let x = Tensor::from_vec(v, (6, 4), &Device::Cpu).unwrap();
        flow.initialize(&x).unwrap();
        (flow, x)
    }

    /// SLQ through `logdet` on a block's operator, both kinds of products (the detached
    /// host kernels and the tracked composed recursions), against the block's exact
    /// log-det (Cholesky of its dense Jacobian). With `d` Lanczos steps the Gauss quadrature
    /// is exact for each probe, so the estimate is a Hutchinson mean of `vᵀ log(H) v`:
    /// within 4 standard errors (a 4σ miss has probability ~6e-5 per row; seeded).
    #[test]
    fn slq_on_a_blocks_operator_matches_its_exact_logdet() {
        let (flow, x) = flow_and_points();
        let block = flow.blocks().next().unwrap();
        let (_, host) = block.detached_operator(&x, None).unwrap();
        assert!(matches!(host.lin, Products::Host(_)));
        let (_, composed) = block.tracked_operator(&x, None).unwrap();
        assert!(matches!(composed.lin, Products::Composed(_)));
        let exact = exact_logdet_tensor(&host.dense().unwrap()).unwrap();
        let params = SlqParams::default().with_probes(200).with_lanczos_steps(4);
        for (name, op) in [("host", &host), ("composed", &composed)] {
            assert_eq!(op.batch_shape(), Some((6, 4)));
            let mut rng = FlowRng::seed_from_u64(11);
            let slq = slq_logdet(op, &x, &mut rng, &params).unwrap();
            assert_eq!(slq.estimate.len(), 6);
            for (b, ((est, se), exact)) in slq
                .estimate
                .iter()
                .zip(&slq.std_err)
                .zip(&exact)
                .enumerate()
            {
                assert!(
                    *se > 0.0 && *se < 0.1 * exact.abs().max(1.0),
                    "{name} {b}: se {se}"
                );
                assert!(
                    (est - exact).abs() <= 4.0 * se,
                    "{name} row {b}: SLQ {est} ± {se} vs exact {exact}"
                );
            }
        }
    }

    /// CG and Lanczos take the operator as it is: `H x = b` solved to the residual asked
    /// for (checked with the operator's own product), Lanczos' full-step Ritz values inside
    /// the dense Jacobian's spectrum, and a batch of the wrong shape refused before any
    /// product by the declared `batch_shape`.
    #[test]
    fn krylov_solvers_take_the_operator_as_it_is() {
        let (flow, x) = flow_and_points();
        let block = flow.blocks().next().unwrap();
        let (_, op) = block.detached_operator(&x, None).unwrap();
        let b = Tensor::ones((6, 4), DType::F64, &Device::Cpu).unwrap();
        let res = cg(&op, &b, &CgParams::default().with_rtol(1e-10)).unwrap();
        assert!(res.all_converged());
        let r = (op.apply(&res.x).unwrap() - &b).unwrap();
        let r = r
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        // rtol 1e-10 of ‖b‖₂ = 2 per row, confirmed on the true residual (∞-norm ≤ 2-norm).
        assert!(r <= 2e-10 * 1.01, "residual {r}");
        let l = lanczos(&op, &b, &LanczosParams::default().with_steps(4)).unwrap();
        let dense = op.dense().unwrap().to_vec3::<f64>().unwrap();
        for (i, h) in dense.iter().enumerate() {
            let h = nalgebra::DMatrix::from_fn(4, 4, |r, c| h[r][c]);
            let eig = h.symmetric_eigenvalues();
            let ritz = l.ritz_values(i).unwrap();
            // Lanczos with full re-orthogonalisation: Ritz values within ~1e-12·‖H‖.
            let tol = 1e-10 * eig.amax();
            assert!(ritz[0] >= eig.min() - tol && ritz[ritz.len() - 1] <= eig.max() + tol);
        }
        let wrong = Tensor::ones((5, 4), DType::F64, &Device::Cpu).unwrap();
        assert!(matches!(
            cg(&op, &wrong, &CgParams::default()),
            Err(KrylovError::ShapeMismatch {
                expected: (6, 4),
                found: (5, 4),
                ..
            })
        ));
    }

    /// The operator's own failures keep the `icnn` error as their source.
    #[test]
    fn product_errors_are_operator_errors_with_their_source() {
        let (flow, x) = flow_and_points();
        let block = flow.blocks().next().unwrap();
        let (_, op): (_, HessianOperator) = block.detached_operator(&x, None).unwrap();
        let f32_rows = x.to_dtype(DType::F32).unwrap();
        // `BatchOperator::apply`: the inherent `apply(v)` shadows it in method syntax.
        match BatchOperator::apply(&op, &f32_rows, &[true; 6]) {
            Err(e @ KrylovError::Operator(_)) => {
                let src = std::error::Error::source(&e).unwrap();
                assert!(src.downcast_ref::<icnn::IcnnError>().is_some(), "{src}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
