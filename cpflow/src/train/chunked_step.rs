//! The gradient of a batch's loss (the CG surrogate, or the exact NLL), computed over row
//! chunks in parallel.
//!
//! Rows of a batch are independent once the flow is initialised (ActNorm uses its stored
//! scale and shift), so `∇ mean(−log p)` is the sum over row chunks of `∇ (−Σ_chunk log p)/B`.
//! Each chunk runs its forward pass, its CG solves and its backward pass on one thread of
//! rayon's pool with its own probe stream (seeded from the trainer's RNG in chunk order), and
//! the gradients are added. On 2 cores this keeps both busy with whole chunks instead of
//! splitting every small matrix product in two (see
//! [`crate::cpu_threads::GEMM_THREADING_THRESHOLD`]); the result depends on
//! [`STEP_CHUNK_ROWS`], never on the thread count.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use rand::Rng;

use super::Trainer;
use crate::block::CgReport;
use crate::error::{CpflowError, Result};
use crate::flow::{map_row_chunks, parallel_chunk_rows};
use crate::probe_source::ChunkProbes;
use crate::rng::FlowRng;
use crate::surrogate_preconditioner::flow_preconditioners;

/// Rows per chunk of a CG-surrogate training step. 256 rows keep the element-wise ops of a
/// chunk (256 × width) large enough to amortise per-op costs and give a batch of 1,024 four
/// chunks to spread over the cores.
pub const STEP_CHUNK_ROWS: usize = 256;

/// Rows per chunk of an exact-NLL training step (`Objective::ExactNll`): each row carries a
/// dense `d × d` Hessian through the forward and backward passes, so chunks are smaller than
/// [`STEP_CHUNK_ROWS`]; 64 rows split the OT experiment's batch of 128 in two.
pub const EXACT_STEP_CHUNK_ROWS: usize = 64;

impl Trainer {
    /// `(loss, gradients, CG report)` of the CG surrogate on batch `x` (`ctx` for a
    /// conditional flow): the mean over rows of `−log N(z) − Σ surrogate terms`.
    pub(super) fn surrogate_gradients(
        &mut self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<(f64, GradStore, CgReport)> {
        let n = x.dim(0)?;
        let seeds: Vec<u64> = (0..n.div_ceil(STEP_CHUNK_ROWS))
            .map(|_| self.rng.random())
            .collect();
        let (flow, params) = (&self.flow, &self.config.surrogate);
        // One host copy of each block's prepared weights for all chunks, whose gradients stop
        // at a leaf: the chunks' leaf gradients are added, then back-propagated through the
        // preparation once.
        let weights = flow
            .host_weights(ctx)?
            .iter()
            .map(|w| {
                w.as_ref()
                    .map(icnn::HostWeights::with_gradient_leaf)
                    .transpose()
            })
            .collect::<icnn::Result<Vec<_>>>()?;
        // The CG preconditioners (if asked for) from the batch's first rows, once for all chunks.
        let pre = flow_preconditioners(flow, x, ctx, params, &weights)?;
        let outcomes = if n > 0 && !icnn::takes_host_kernels(x.device()) {
            // Off the host kernels (a GPU) the chunks would run one after the other, as
            // four times as many small kernels: the batch runs as one pass, with the probes
            // its chunks would have drawn (`ChunkProbes`), so the estimate is the chunked one.
            let mut probes = ChunkProbes::new(&seeds, n, STEP_CHUNK_ROWS)?;
            let (lp, cg) = flow.surrogate_terms(x, ctx, params, &mut probes, &weights, &pre)?;
            let (value, grads) = chunk_share(&lp, n)?;
            vec![(value, grads, cg)]
        } else {
            map_row_chunks(x, ctx, STEP_CHUNK_ROWS, |i, xc, cc| {
                let mut rng = FlowRng::seed_from_u64(seeds[i]);
                let (lp, cg) = flow.surrogate_terms(xc, cc, params, &mut rng, &weights, &pre)?;
                let (value, grads) = chunk_share(&lp, n)?;
                Ok((value, grads, cg))
            })?
        };
        let leaves: Vec<&Tensor> = weights
            .iter()
            .flatten()
            .filter_map(icnn::HostWeights::gradient_leaf)
            .collect();
        let (loss, mut grads, cg) = self.merge_chunks(outcomes, &leaves)?;
        for w in weights.iter().flatten() {
            let Some(leaf) = w.gradient_leaf() else {
                continue;
            };
            let Some(g) = grads.remove(leaf) else {
                continue;
            };
            let through = w.backward_from_leaf(&g)?;
            drop(g);
            self.add_gradients(&mut grads, &through)?;
        }
        Ok((loss, grads, cg))
    }

    /// `(loss, gradients)` of the exact NLL (dense Hessian log-dets) on batch `x` (`ctx` for
    /// a conditional flow), over row chunks of [`EXACT_STEP_CHUNK_ROWS`] in parallel on the
    /// CPU (one batch on an accelerator); no CG.
    pub(super) fn exact_gradients(
        &mut self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<(f64, GradStore, CgReport)> {
        let n = x.dim(0)?;
        let flow = &self.flow;
        let rows = parallel_chunk_rows(x, EXACT_STEP_CHUNK_ROWS)?;
        let outcomes = map_row_chunks(x, ctx, rows, |_, xc, cc| {
            let lp = flow.exact_log_prob_tracked(xc, cc)?;
            let (value, grads) = chunk_share(&lp, n)?;
            Ok((value, grads, CgReport::default()))
        })?;
        self.merge_chunks(outcomes, &[])
    }

    /// The chunks' shares of the loss and their gradients (of the flow's variables and of
    /// `leaves`) added up in chunk order; CG reports joined.
    fn merge_chunks(
        &self,
        outcomes: Vec<(f64, GradStore, CgReport)>,
        leaves: &[&Tensor],
    ) -> Result<(f64, GradStore, CgReport)> {
        let mut outcomes = outcomes.into_iter();
        let (mut loss, mut grads, mut cg) = outcomes
            .next()
            .ok_or_else(|| CpflowError::InvalidInput("a training batch needs rows".into()))?;
        let vars = self.flow.named_vars();
        let keys: Vec<&Tensor> = vars
            .iter()
            .map(|(_, v)| v.as_tensor())
            .chain(leaves.iter().copied())
            .collect();
        for (v, g, c) in outcomes {
            loss += v;
            cg.extend(&c);
            for &t in &keys {
                if let Some(gi) = g.get(t) {
                    add_gradient(&mut grads, t, gi)?;
                }
            }
        }
        Ok((loss, grads, cg))
    }

    /// `grads += more` on the flow's variables.
    fn add_gradients(&self, grads: &mut GradStore, more: &GradStore) -> Result<()> {
        for (_, var) in self.flow.named_vars() {
            let t = var.as_tensor();
            if let Some(g) = more.get(t) {
                add_gradient(grads, t, g)?;
            }
        }
        Ok(())
    }
}

/// `grads[t] += g` (`g` where `t` has no gradient yet).
fn add_gradient(grads: &mut GradStore, t: &Tensor, g: &Tensor) -> Result<()> {
    let sum = match grads.remove(t) {
        Some(s) => (s + g)?,
        None => g.clone(),
    };
    grads.insert(t, sum);
    Ok(())
}

/// A chunk's share `−Σ_chunk log p / B` of a batch of `n` rows' mean loss: its value and its
/// gradients.
fn chunk_share(log_prob: &Tensor, n: usize) -> Result<(f64, GradStore)> {
    let share = log_prob.sum_all()?.affine(-1.0 / n as f64, 0.0)?;
    let value = share.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok((value, icnn::detached_backward(&share)?))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::config::TrainConfig;
    use crate::flow::Flow;
    use crate::flow_config::FlowConfig;
    use crate::potential::PotentialConfig;

    fn trainer(seed: u64) -> (Trainer, Tensor) {
        let pot = PotentialConfig::Icnn3(icnn::Icnn3Config {
            dim: 3,
            width: 8,
            depth: 2,
            ..Default::default()
        });
        let flow = Flow::new(FlowConfig::single_block(pot), &Device::Cpu).unwrap();
        // 2.5 chunks of rows: the last chunk is short.
        let n = 2 * STEP_CHUNK_ROWS + STEP_CHUNK_ROWS / 2;
        let mut r = FlowRng::seed_from_u64(7);
        let v: Vec<f64> = (0..n * 3).map(|_| r.random::<f64>() * 2.0 - 1.0).collect();
        let x = Tensor::from_vec(v, (n, 3), &Device::Cpu).unwrap();
        flow.initialize(&x).unwrap();
        let cfg = TrainConfig {
            seed,
            ..Default::default()
        };
        (Trainer::new(flow, cfg).unwrap(), x)
    }

    fn grad_vec(t: &Trainer, g: &GradStore) -> Vec<f64> {
        t.flow
            .named_vars()
            .iter()
            .filter_map(|(_, v)| g.get(v.as_tensor()))
            .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f64>().unwrap())
            .collect()
    }

    /// The chunk-parallel gradient equals the gradient of the whole batch's mean loss built
    /// as one graph from the same per-chunk probe streams (so the merge, the `1/B` scaling
    /// and the short last chunk are right), and does not depend on the thread count.
    #[test]
    fn chunked_gradient_equals_one_graph_and_ignores_thread_count() {
        let (mut t, x) = trainer(3);
        let mut rng = t.rng.clone();
        let (loss, grads, cg) = t.surrogate_gradients(&x, None).unwrap();
        let n = x.dim(0).unwrap();
        assert_eq!(cg.iterations.len(), n);

        // One graph over the batch, the same seeds in chunk order.
        let mut parts = Vec::new();
        for start in (0..n).step_by(STEP_CHUNK_ROWS) {
            let len = STEP_CHUNK_ROWS.min(n - start);
            let mut r = FlowRng::seed_from_u64(rng.random());
            let xc = x.narrow(0, start, len).unwrap();
            let (lp, _) = t
                .flow
                .surrogate_terms(&xc, None, &t.config.surrogate, &mut r, &[], &[])
                .unwrap();
            parts.push(lp);
        }
        let whole = Tensor::cat(&parts, 0)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap();
        assert_equals_one_graph(&t, loss, &grads, &whole);
        assert_thread_count_independent(3, 0, |t, x| t.surrogate_gradients(x, None));
    }

    /// The one-pass step that a GPU takes (the whole batch at once, its probes from the
    /// chunks' streams through [`ChunkProbes`]) gives the chunked step's loss, gradients and
    /// per-system CG iterations: the same probes and the same per-system solves, summed in
    /// another order (f64 round-off only). With the probes of one stream instead, the
    /// gradient would differ at the first digit.
    #[test]
    fn one_pass_step_equals_the_chunked_step() {
        let (mut t, x) = trainer(5);
        let mut rng = t.rng.clone();
        let (loss, grads, cg) = t.surrogate_gradients(&x, None).unwrap();
        let n = x.dim(0).unwrap();
        let seeds: Vec<u64> = (0..n.div_ceil(STEP_CHUNK_ROWS))
            .map(|_| rng.random())
            .collect();
        let mut probes = ChunkProbes::new(&seeds, n, STEP_CHUNK_ROWS).unwrap();
        let (lp, one_cg) = t
            .flow
            .surrogate_terms(&x, None, &t.config.surrogate, &mut probes, &[], &[])
            .unwrap();
        assert_eq!(cg.iterations, one_cg.iterations);
        let whole = lp.mean_all().unwrap().neg().unwrap();
        assert_equals_one_graph(&t, loss, &grads, &whole);
    }

    /// The exact-NLL gradient over chunks of [`EXACT_STEP_CHUNK_ROWS`] (here 10 chunks, the
    /// last short) equals the gradient of the whole batch's mean exact NLL as one graph, to
    /// f64 round-off (the same terms summed in another order), and does not depend on the
    /// thread count.
    #[test]
    fn chunked_exact_gradient_equals_one_graph_and_ignores_thread_count() {
        // 615 rows: nine full chunks and a short one.
        let (mut t, x) = trainer(4);
        let x = x.narrow(0, 0, x.dim(0).unwrap() - 25).unwrap();
        let n = x.dim(0).unwrap();
        assert!(n > 2 * EXACT_STEP_CHUNK_ROWS && n % EXACT_STEP_CHUNK_ROWS != 0);
        let (loss, grads, cg) = t.exact_gradients(&x, None).unwrap();
        assert!(cg.iterations.is_empty());
        let whole = t
            .flow
            .exact_log_prob_tracked(&x, None)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap();
        assert_equals_one_graph(&t, loss, &grads, &whole);
        assert_thread_count_independent(4, 25, |t, x| t.exact_gradients(x, None));
    }

    /// The chunked `loss` and `grads` against the whole batch's mean loss `whole` built as
    /// one graph: sums of the same terms in another order, so f64 round-off only.
    fn assert_equals_one_graph(t: &Trainer, loss: f64, grads: &GradStore, whole: &Tensor) {
        let whole_grads = whole.backward().unwrap();
        let whole_loss = whole.to_scalar::<f64>().unwrap();
        assert!((loss - whole_loss).abs() < 1e-12 * whole_loss.abs().max(1.0));
        let (a, b) = (grad_vec(t, grads), grad_vec(t, &whole_grads));
        assert_eq!(a.len(), b.len());
        assert!(!a.is_empty());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// `step` on [`trainer`]`(seed)`'s batch less its last `drop_rows` rows, on pools of one
    /// and of two threads: bit-identical loss and gradients.
    fn assert_thread_count_independent(
        seed: u64,
        drop_rows: usize,
        step: impl Fn(&mut Trainer, &Tensor) -> Result<(f64, GradStore, CgReport)> + Sync,
    ) {
        let run = |threads: usize| {
            let (mut t, x) = trainer(seed);
            let x = x.narrow(0, 0, x.dim(0).unwrap() - drop_rows).unwrap();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (l, g, _) = pool.install(|| step(&mut t, &x)).unwrap();
            (l, grad_vec(&t, &g))
        };
        let (l1, g1) = run(1);
        let (l2, g2) = run(2);
        assert_eq!(l1.to_bits(), l2.to_bits());
        assert_eq!(g1, g2);
    }
}
