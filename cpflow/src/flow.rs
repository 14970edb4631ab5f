//! The flow: a sequence of ActNorm and CP-Flow layers with a Gaussian prior, and its density
//! evaluation (exact and SLQ).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::actnorm::ActNorm;
use crate::block::CpFlowBlock;
use crate::config::FloatType;
use crate::error::{CpflowError, Result};
use crate::flow_config::{FlowConfig, LayerConfig};
use crate::non_finite_rows::{
    exact_logdet_rows, name_not_convex, or_non_finite_rows, rows_without_value,
};
use crate::prior::GaussianPrior;
use crate::rng::FlowRng;

mod input_check;
mod row_chunks;

pub(crate) use input_check::{all_finite, check_matrix, check_matrix_rows, refuse_empty};
pub(crate) use row_chunks::{
    exact_chunk_rows, exact_chunk_rows_for, map_row_chunks, parallel_chunk_rows,
};

/// Rows per chunk in the SLQ evaluation pass (and the upper bound for the exact pass, whose
/// chunks are sized by dimension). Rows are independent, so chunking changes memory use and
/// speed, not results.
pub const EVAL_CHUNK: usize = 1024;

/// Rows per chunk of the SLQ evaluation pass: small enough that a batch of a few hundred
/// rows spreads over the cores, large enough to amortise per-op costs.
/// Each chunk draws its probes from its own seeded stream, so SLQ values depend on this
/// constant (not on the thread count).
pub const SLQ_CHUNK: usize = 256;

/// Per layer of a flow (or an image flow), its shared host weights ([`Flow::host_weights`]).
pub(crate) type LayerWeights = Vec<Option<icnn::HostWeights>>;

// `Layer` allows `clippy::large_enum_variant`: a flow holds a handful of layers, once, so
// boxing the large variant would save nothing.
/// One layer of a flow.
///
/// ```
/// use cpflow::candle::Device;
/// use cpflow::{Flow, FlowConfig, Layer, PotentialConfig};
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::tabular(2, 1, pot), &Device::Cpu)?;
/// // The tabular layout: [ActNorm, CPF, ActNorm].
/// let kinds: Vec<&str> = flow
///     .layers()
///     .iter()
///     .map(|l| match l {
///         Layer::ActNorm(_) => "actnorm",
///         Layer::Cpf(_) => "cpf",
///     })
///     .collect();
/// assert_eq!(kinds, ["actnorm", "cpf", "actnorm"]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Layer {
    /// ActNorm (closed-form inverse, constant log-det).
    ActNorm(ActNorm),
    /// CP-Flow block.
    Cpf(CpFlowBlock),
}

/// A convex potential flow `x → z`: layers applied in order, then a Gaussian prior on `z`.
///
/// Build it from a [`FlowConfig`], initialise the data-dependent ActNorms on a batch with
/// [`Flow::initialize`], then evaluate, sample or train.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::{Flow, FlowConfig, PotentialConfig};
/// use cpflow::icnn::Icnn3Config;
///
/// # fn main() -> cpflow::Result<()> {
/// let pot = PotentialConfig::Icnn3(Icnn3Config { dim: 2, width: 8, depth: 2, ..Default::default() });
/// let flow = Flow::new(FlowConfig::tabular(2, 1, pot).with_float(cpflow::FloatType::F64), &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2], [-0.3, 0.8], [0.0, 0.1]], &Device::Cpu)?;
/// flow.initialize(&x)?;
/// let logp = flow.log_prob_exact(&x)?; // (B,), exact dense-Hessian log-det
/// assert_eq!(logp.dims(), &[4]);
/// # Ok(())
/// # }
/// ```
pub struct Flow {
    config: FlowConfig,
    varmap: VarMap,
    layers: Vec<Layer>,
    device: Device,
    context_dim: Option<usize>,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Flow {
    /// Build a flow (fresh weights drawn from `config.init_seed`) on `device`.
    pub fn new(config: FlowConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let varmap = VarMap::new();
        let dtype = config.float.dtype();
        let mut rng = FlowRng::seed_from_u64(config.init_seed);
        let mut layers = Vec::with_capacity(config.layers.len());
        for (i, l) in config.layers.iter().enumerate() {
            let prefix = format!("layers.{i}");
            layers.push(match l {
                LayerConfig::ActNorm => {
                    Layer::ActNorm(ActNorm::new(&varmap, &prefix, config.dim, dtype, device)?)
                }
                LayerConfig::Cpf(b) => {
                    let vb = VarBuilder::from_varmap(&varmap, dtype, device).pp(prefix);
                    Layer::Cpf(CpFlowBlock::new(vb, b, &mut rng)?)
                }
            });
        }
        let context_dim = config.context_dim()?;
        Ok(Flow {
            config,
            varmap,
            layers,
            device: device.clone(),
            context_dim,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    /// The variables (weights, ActNorm states and init flags).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// All variables sorted by name (a deterministic order for optimisers and checkpoints).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        crate::named_vars::sorted_vars(&self.varmap)
    }

    /// Number of scalar parameters (init flags excluded).
    pub fn num_parameters(&self) -> usize {
        crate::named_vars::count_parameters(&self.named_vars())
    }

    /// The layers.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The CP-Flow blocks in order.
    pub fn blocks(&self) -> impl Iterator<Item = &CpFlowBlock> {
        self.layers
            .iter()
            .filter_map(|l| if let Layer::Cpf(b) = l { Some(b) } else { None })
    }

    /// Data dimension.
    pub fn dim(&self) -> usize {
        self.config.dim
    }

    /// Context dimension (conditional flows only).
    pub fn context_dim(&self) -> Option<usize> {
        self.context_dim
    }

    /// Parameter dtype.
    pub fn dtype(&self) -> DType {
        self.config.float.dtype()
    }

    /// Float type.
    pub fn float(&self) -> FloatType {
        self.config.float
    }

    /// Device of the parameters.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The prior.
    pub fn prior(&self) -> &GaussianPrior {
        &self.config.prior
    }

    /// Whether every data-dependent initialisation (flow ActNorms and the ICNNs' inner
    /// ActNorms) has run. The flags are saved with the weights.
    pub fn is_initialized(&self) -> Result<bool> {
        for l in &self.layers {
            let ok = match l {
                Layer::ActNorm(a) => a.is_initialized()?,
                Layer::Cpf(b) => b.is_initialized()?,
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Validate and convert user data: rank 2, `d` columns, at least one row, finite; moved to
    /// the flow's device and dtype. The context (if any) likewise.
    pub fn check_input(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (x, ctx) = self.check_rows(x, ctx)?;
        refuse_empty(&x, "data")?;
        Ok((x, ctx))
    }

    /// [`Flow::check_input`] that accepts a batch of 0 rows: the evaluation and inversion
    /// passes give empty results for it (as a sample of 0 points needs).
    pub(crate) fn check_rows(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let x = check_matrix_rows(x, self.dim(), "data", self.dtype(), &self.device)?;
        let ctx = match (self.context_dim, ctx) {
            (Some(c), Some(t)) => {
                let t = check_matrix_rows(t, c, "context", self.dtype(), &self.device)?;
                if t.dim(0)? != x.dim(0)? {
                    return Err(CpflowError::InvalidInput(format!(
                        "context has {} rows but the data has {}",
                        t.dim(0)?,
                        x.dim(0)?
                    )));
                }
                Some(t)
            }
            (Some(_), None) => {
                return Err(CpflowError::InvalidInput(
                    "this flow is conditional: pass a context tensor".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(CpflowError::InvalidInput(
                    "this flow is unconditional: it takes no context".into(),
                ));
            }
            (None, None) => None,
        };
        Ok((x, ctx))
    }

    pub(crate) fn ensure_initialized(&self) -> Result<()> {
        if self.is_initialized()? {
            Ok(())
        } else {
            Err(CpflowError::NotInitialized)
        }
    }

    /// Data-dependent initialisation on a batch (reference: the first training batch): each
    /// ActNorm standardises its input, each ICNN initialises its inner ActNorms, layer by layer.
    /// Re-running it re-initialises.
    ///
    /// All or nothing: when any layer fails (an ActNorm that finds a constant or non-finite
    /// feature in its input, an ICNN whose init cannot use the batch, a block whose forward
    /// pass fails), every parameter and `initialized` flag is left exactly as before the call,
    /// earlier layers included: an uninitialised flow stays uninitialised, an initialised one
    /// keeps its values.
    ///
    /// ```
    /// use cpflow::candle::{Device, Tensor};
    /// use cpflow::{Flow, FlowConfig, PotentialConfig};
    /// # fn main() -> cpflow::Result<()> {
    /// let pot = PotentialConfig::Icnn3(cpflow::icnn::Icnn3Config { dim: 2, width: 4, depth: 2, ..Default::default() });
    /// let flow = Flow::new(FlowConfig::tabular(2, 1, pot).with_float(cpflow::FloatType::F64), &Device::Cpu)?;
    /// let x = Tensor::new(&[[0.5f64, -1.0], [1.5, 0.2], [-0.3, 0.8]], &Device::Cpu)?;
    /// flow.initialize(&x)?;
    /// let values = |f: &Flow| -> cpflow::Result<Vec<Vec<f64>>> {
    ///     f.weight_tensors().iter().map(|(_, t)| Ok(t.flatten_all()?.to_vec1::<f64>()?)).collect()
    /// };
    /// let before = values(&flow)?;
    /// // A batch whose second feature is constant cannot initialise the flow.
    /// let constant = Tensor::new(&[[0.0f64, 2.0], [1.0, 2.0]], &Device::Cpu)?;
    /// assert!(flow.initialize(&constant).is_err());
    /// assert_eq!(values(&flow)?, before); // the earlier initialisation is kept
    /// assert!(flow.is_initialized()?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn initialize(&self, x: &Tensor) -> Result<()> {
        self.initialize_given_opt(x, None)
    }

    /// [`Flow::initialize`] for a conditional flow.
    pub fn initialize_given(&self, x: &Tensor, ctx: &Tensor) -> Result<()> {
        self.initialize_given_opt(x, Some(ctx))
    }

    fn initialize_given_opt(&self, x: &Tensor, ctx: Option<&Tensor>) -> Result<()> {
        let (x, ctx) = self.check_input(x, ctx)?;
        if x.dim(0)? < 2 {
            return Err(CpflowError::InvalidInput(format!(
                "initialising from {} row: the ActNorm layers standardise each feature over \
                 the batch, which needs at least 2 rows (the trainer uses its first batch)",
                x.dim(0)?
            )));
        }
        let ctx = ctx.as_ref();
        crate::named_vars::initialize_all_or_nothing(self.named_vars(), || {
            let mut h = x.detach();
            for l in &self.layers {
                h = match l {
                    Layer::ActNorm(a) => {
                        a.initialize(&h)?;
                        a.forward(&h)?.0.detach()
                    }
                    Layer::Cpf(b) => {
                        b.initialize(&h, ctx)?;
                        b.forward(&h, ctx)?.detach()
                    }
                };
            }
            Ok(())
        })
    }

    /// Apply `f` to row chunks of `x` (and `ctx`) and concatenate the outputs along dim 0
    /// ([`map_row_chunks`]: in parallel on the CPU, independent of the thread count).
    pub(crate) fn chunked<F>(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
        rows: usize,
        f: F,
    ) -> Result<Vec<Tensor>>
    where
        F: Fn(usize, &Tensor, Option<&Tensor>) -> Result<Vec<Tensor>> + Sync,
    {
        let parts = map_row_chunks(x, ctx, rows, f)?;
        let k = parts.first().map_or(0, Vec::len);
        (0..k)
            .map(|j| {
                let cols: Vec<Tensor> = parts.iter().map(|p| p[j].clone()).collect();
                Ok(Tensor::cat(&cols, 0)?)
            })
            .collect()
    }

    /// The host weights of each layer (`None` for ActNorms and where the host kernels do not
    /// apply), built once and shared by the row chunks of a batch: one copy of the prepared
    /// parameters instead of one per chunk and thread.
    pub(crate) fn host_weights(&self, ctx: Option<&Tensor>) -> Result<LayerWeights> {
        self.layers
            .iter()
            .map(|l| match l {
                Layer::ActNorm(_) => Ok(None),
                Layer::Cpf(b) => b.host_weights(ctx),
            })
            .collect()
    }

    /// `(z, Σ log det)` with exact dense log-dets, for one chunk (detached outputs; a NaN
    /// log-det for a row that overflows, [`crate::non_finite_rows`]).
    fn transform_chunk(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
        weights: &[Option<icnn::HostWeights>],
    ) -> Result<(Tensor, Tensor)> {
        self.transform_chunk_with(x, weights, |blk, w, h, tolerate| {
            let (z, hess) = blk.forward_and_hessian_detached(h, ctx, w)?;
            let lds = exact_logdet_rows(&hess, &or_non_finite_rows(tolerate, &z)?)?;
            Ok((z, lds))
        })
    }

    /// `(z, Σ log det)` for one chunk: ActNorm log-dets in closed form, each CP-Flow block's
    /// `(z, per-row log det)` from `block_logdet(block, host weights, h, tolerate)` (exact or
    /// SLQ; given the layer's shared host weights, from [`Flow::host_weights`]), where
    /// `tolerate[i]` says that row `i` already has no finite value (its input or its log-det so
    /// far), so a failure of its log-det is its own (NaN), not the batch's. Outputs are
    /// detached.
    pub(crate) fn transform_chunk_with<F>(
        &self,
        x: &Tensor,
        weights: &[Option<icnn::HostWeights>],
        mut block_logdet: F,
    ) -> Result<(Tensor, Tensor)>
    where
        F: FnMut(
            &CpFlowBlock,
            Option<&icnn::HostWeights>,
            &Tensor,
            &[bool],
        ) -> Result<(Tensor, Vec<f64>)>,
    {
        let b = x.dim(0)?;
        let mut h = x.detach();
        let mut ld = vec![0.0f64; b];
        for (i, l) in self.layers.iter().enumerate() {
            h = match l {
                Layer::ActNorm(a) => {
                    let (y, l) = a.forward(&h)?;
                    let l = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    ld.iter_mut().for_each(|v| *v += l);
                    y.detach()
                }
                Layer::Cpf(blk) => {
                    let tolerate = rows_without_value(&h, &ld)?;
                    let w = weights.get(i).and_then(Option::as_ref);
                    let (z, lds) =
                        block_logdet(blk, w, &h, &tolerate).map_err(|e| name_not_convex(i, e))?;
                    ld.iter_mut().zip(lds).for_each(|(v, l)| *v += l);
                    z
                }
            };
        }
        let ld = Tensor::from_vec(ld, b, x.device())?.to_dtype(x.dtype())?;
        Ok((h, ld))
    }

    /// Forward transform `z = f(x)` and the exact log-determinant of its Jacobian
    /// `Σ_layers log|det J|` per sample (dense Hessians, host Cholesky; for `d` up to a few
    /// hundred). Outputs are detached. A batch of 0 rows gives `(0, d)` and `(0,)` tensors.
    ///
    /// A row that overflows the flow (a point far outside the data, e.g. `[1e308, 0.5]` in
    /// f64) gets a NaN log-det when a block's Jacobian at it is not finite, or cannot be
    /// factored where the block's input or output is not finite; the other rows of the batch
    /// are computed as without it. A finite Jacobian that is not positive definite at a point
    /// whose forward pass is finite is an error ([`crate::CpflowError::Logdet`]).
    pub fn transform(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.transform_given_opt(x, None)
    }

    /// [`Flow::transform`] for a conditional flow.
    pub fn transform_given(&self, x: &Tensor, ctx: &Tensor) -> Result<(Tensor, Tensor)> {
        self.transform_given_opt(x, Some(ctx))
    }

    pub(crate) fn transform_given_opt(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        self.ensure_initialized()?;
        let (x, ctx) = self.check_rows(x, ctx)?;
        if x.dim(0)? == 0 {
            return Ok((x.clone(), Tensor::zeros(0, x.dtype(), x.device())?));
        }
        let rows = exact_chunk_rows_for(&x, self.dim(), self.config.max_hidden_units());
        let weights = self.host_weights(ctx.as_ref())?;
        let out = self.chunked(&x, ctx.as_ref(), rows, |_, xc, cc| {
            let (z, l) = self.transform_chunk(xc, cc, &weights)?;
            Ok(vec![z, l])
        })?;
        Ok((out[0].clone(), out[1].clone()))
    }
}
