//! The generic layer family every architecture is built from, its parameter preparation,
//! forward pass and data-dependent ActNorm initialisation.
//!
//! A network is a list of *groups* of units, evaluated in order. Group `j` computes
//! ```text
//! p_j = Σ_{i ∈ inputs(j)} (z_i ⊙ gz_{j,i}) Pᵀ_{j,i} + (x ⊙ gx_j) A_jᵀ + bias_j (+ ctx_j)
//! a_j = γ_j ⊙ (p_j + β_j)                    (ActNorm, when present)
//! z_j = s_j(a_j)
//! ```
//! with `P = softplus(W)/n_in ≥ 0` (the positive layer over the concatenation of the input
//! groups), optional per-sample gates `gz ≥ 0`, `gx` (partially input-convex networks) and a
//! per-sample context bias. The last group has one unit and the identity activation: it is
//! the potential. ActNorm's positive scale `γ` is folded into the weights once per call
//! (`γ ⊙ P`, `γ ⊙ A`, `γ ⊙ (bias + β)`), so the derivative recursions never see it.

use candle_core::{DType, Tensor};

use crate::activation::Activation;
use crate::actnorm::ActNorm;
use crate::actnorm_init::{ActNormInit, check_input_rows};
use crate::error::{IcnnError, Result};
use crate::init_lock::InitLock;
use crate::layers::{Linear, PosLinear};
use crate::params;
use crate::scaled_kernel::{KernelGraph, KernelMap, fused_scaled_kernel};

/// Activation of a group: a nonlinearity, or the identity (output group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum GroupAct {
    Nonlinear(Activation),
    Identity,
}

/// Static description of one group, holding parameter tensors.
#[derive(Debug, Clone)]
pub(crate) struct GroupSpec {
    /// Earlier groups whose outputs, concatenated in this order, feed `pos`.
    pub inputs: Vec<usize>,
    pub pos: Option<PosLinear>,
    pub lin: Option<Linear>,
    pub actnorm: Option<ActNorm>,
    pub act: GroupAct,
    pub width: usize,
}

/// Per-call, per-group context (gates and bias computed from a conditioning vector).
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupContext {
    /// `(B, n_in)` gate multiplying the concatenated `z` input of `pos`.
    pub gate_z: Option<Tensor>,
    /// `(B, d)` gate multiplying `x` before `lin`.
    pub gate_x: Option<Tensor>,
    /// `(B, width)` bias added before the ActNorm.
    pub bias: Option<Tensor>,
}

/// One input block of a prepared group: `(group index, P block (m, n_i), gate (B, n_i))`.
#[derive(Debug, Clone)]
pub(crate) struct PreparedInput {
    pub group: usize,
    pub weight: Tensor,
    pub gate: Option<Tensor>,
}

/// A group with its effective (γ-folded, softplus-reparameterised) weights.
#[derive(Debug, Clone)]
pub(crate) struct PreparedGroup {
    pub inputs: Vec<PreparedInput>,
    /// `(Ã (m, d), gate (B, d))`.
    pub lin: Option<(Tensor, Option<Tensor>)>,
    /// `(m,)` or `(B, m)`.
    pub bias: Option<Tensor>,
    pub act: GroupAct,
}

impl PreparedGroup {
    pub(crate) fn detach(&self) -> Self {
        Self {
            inputs: self
                .inputs
                .iter()
                .map(|i| PreparedInput {
                    group: i.group,
                    weight: i.weight.detach(),
                    gate: i.gate.as_ref().map(Tensor::detach),
                })
                .collect(),
            lin: self
                .lin
                .as_ref()
                .map(|(a, g)| (a.detach(), g.as_ref().map(Tensor::detach))),
            bias: self.bias.as_ref().map(Tensor::detach),
            act: self.act,
        }
    }

    /// `Σ_i (z_i ⊙ g_i) P_iᵀ + (x ⊙ gx) Ãᵀ + bias`.
    pub(crate) fn pre_activation(&self, zs: &[Tensor], x: &Tensor) -> Result<Tensor> {
        let mut acc: Option<Tensor> = None;
        for inp in &self.inputs {
            let z = &zs[inp.group];
            let z = match &inp.gate {
                Some(g) => (z * g)?,
                None => z.clone(),
            };
            let t = z.matmul(&inp.weight.t()?)?;
            acc = Some(match acc {
                Some(a) => (a + t)?,
                None => t,
            });
        }
        if let Some((a, g)) = &self.lin {
            let xg = match g {
                Some(g) => (x * g)?,
                None => x.clone(),
            };
            let t = xg.matmul(&a.t()?)?;
            acc = Some(match acc {
                Some(a) => (a + t)?,
                None => t,
            });
        }
        let acc = acc.ok_or_else(|| IcnnError::InvalidConfig("group without inputs".into()))?;
        Ok(match &self.bias {
            Some(b) => acc.broadcast_add(b)?,
            None => acc,
        })
    }
}

/// A network: groups plus the ActNorm-initialised flag variable.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub groups: Vec<GroupSpec>,
    pub dim: usize,
    /// `(1,)` variable: 0 before the data-dependent init, 1 after.
    pub initialized: Tensor,
    /// Held across the check of `initialized` and the init (shared by clones).
    init_lock: InitLock,
}

impl Network {
    pub(crate) fn new(
        vb: &candle_nn::VarBuilder,
        groups: Vec<GroupSpec>,
        dim: usize,
    ) -> Result<Self> {
        let has_actnorm = groups.iter().any(|g| g.actnorm.is_some());
        // Networks without ActNorm are initialised from the start.
        let flag = if has_actnorm { 0.0 } else { 1.0 };
        let initialized = params::constant(vb, 1, "initialized", flag)?;
        Ok(Self {
            groups,
            dim,
            initialized,
            init_lock: InitLock::default(),
        })
    }

    pub(crate) fn dtype(&self) -> DType {
        self.initialized.dtype()
    }

    /// Whether the ActNorm data-dependent init has run (reads the flag variable).
    pub(crate) fn is_initialized(&self) -> Result<bool> {
        params::read_flag(&self.initialized)
    }

    pub(crate) fn set_initialized(&self, value: bool) -> Result<()> {
        params::write_flag(&self.initialized, value)
    }

    pub(crate) fn check_input(&self, x: &Tensor) -> Result<()> {
        let dims = x.dims();
        if dims.len() != 2 || dims[1] != self.dim {
            return Err(IcnnError::Shape(format!(
                "expected input of shape (B, {}), got {:?}",
                self.dim, dims
            )));
        }
        if x.dtype() != self.dtype() {
            return Err(IcnnError::Shape(format!(
                "input dtype {:?} differs from the parameters' dtype {:?}",
                x.dtype(),
                self.dtype()
            )));
        }
        crate::layer_input::check_device("input", x, &self.initialized)
    }

    /// The `(1,)` flag variable: its dtype and device are the parameters'.
    pub(crate) fn initialized_flag(&self) -> &Tensor {
        &self.initialized
    }

    /// Effective weights of group `j`; `with_actnorm = false` leaves the ActNorm out (used by
    /// the data-dependent init). `graph` says how a weight and its ActNorm scale are
    /// multiplied (the same values either way).
    fn prepare_group(
        &self,
        j: usize,
        ctx: Option<&GroupContext>,
        with_actnorm: bool,
        graph: KernelGraph,
    ) -> Result<PreparedGroup> {
        let g = &self.groups[j];
        let an = if with_actnorm {
            match &g.actnorm {
                Some(an) => Some((an.scale()?, an.shift()?)),
                None => None,
            }
        } else {
            None
        };
        let scale_rows = |w: Tensor| -> Result<Tensor> {
            Ok(match &an {
                Some((gamma, _)) => w.broadcast_mul(&gamma.unsqueeze(1)?)?,
                None => w,
            })
        };
        let mut inputs = Vec::with_capacity(g.inputs.len());
        let mut bias: Option<Tensor> = None;
        let add = |acc: Option<Tensor>, t: Tensor| -> Result<Option<Tensor>> {
            Ok(Some(match acc {
                Some(a) => a.broadcast_add(&t)?,
                None => t,
            }))
        };
        // The weight times the ActNorm scale as one op where `graph` asks for it.
        let fused = |w: &Tensor, map: KernelMap| -> Result<Option<Tensor>> {
            match &an {
                Some((gamma, _)) => Ok(fused_scaled_kernel(w, gamma, map, graph)?),
                None => Ok(None),
            }
        };
        if let Some(pos) = &g.pos {
            let map = KernelMap::Softplus {
                inv_fan_in: 1.0 / pos.n_in() as f64,
            };
            let w = match fused(&pos.weight, map)? {
                Some(w) => w,
                None => scale_rows(pos.effective_weight()?)?,
            };
            let gate = ctx.and_then(|c| c.gate_z.clone());
            if g.inputs.len() == 1 {
                inputs.push(PreparedInput {
                    group: g.inputs[0],
                    weight: w,
                    gate,
                });
            } else {
                let mut off = 0;
                for &i in &g.inputs {
                    let n = self.groups[i].width;
                    inputs.push(PreparedInput {
                        group: i,
                        weight: w.narrow(1, off, n)?.contiguous()?,
                        gate: match &gate {
                            Some(gt) => Some(gt.narrow(1, off, n)?),
                            None => None,
                        },
                    });
                    off += n;
                }
            }
            if let Some(b) = pos.effective_bias()? {
                bias = add(bias, b)?;
            }
        }
        let lin = match &g.lin {
            Some(l) => {
                if let Some(b) = &l.bias {
                    bias = add(bias, b.clone())?;
                }
                let w = match fused(&l.weight, KernelMap::Identity)? {
                    Some(w) => w,
                    None => scale_rows(l.weight.clone())?,
                };
                Some((w, ctx.and_then(|c| c.gate_x.clone())))
            }
            None => None,
        };
        if let Some(b) = ctx.and_then(|c| c.bias.clone()) {
            bias = add(bias, b)?;
        }
        if let Some((gamma, beta)) = &an {
            bias = add(bias, beta.clone())?;
            bias = match bias {
                Some(b) => Some(b.broadcast_mul(gamma)?),
                None => None,
            };
        }
        Ok(PreparedGroup {
            inputs,
            lin,
            bias,
            act: g.act,
        })
    }

    /// Effective weights of every group, by composed candle ops: differentiable any number
    /// of times.
    pub(crate) fn prepare(&self, ctx: Option<&[GroupContext]>) -> Result<Vec<PreparedGroup>> {
        self.prepare_with(ctx, KernelGraph::Composed)
    }

    /// [`Self::prepare`] with `graph`.
    fn prepare_with(
        &self,
        ctx: Option<&[GroupContext]>,
        graph: KernelGraph,
    ) -> Result<Vec<PreparedGroup>> {
        (0..self.groups.len())
            .map(|j| self.prepare_group(j, ctx.map(|c| &c[j]), true, graph))
            .collect()
    }

    /// The data-dependent ActNorm init: [`Self::init_statistics`], then
    /// [`Self::write_init`] under the init lock (its writes do not interleave with those of
    /// an init on another thread).
    pub(crate) fn initialize(&self, x: &Tensor, ctx: Option<&[GroupContext]>) -> Result<()> {
        let stats = self.init_statistics(x, ctx)?;
        self.init_lock.write(|| self.write_init(&stats))
    }

    /// The lock that serialises this network's init writes (a network with context layers
    /// of its own, `Picnn`, writes those under it too).
    pub(crate) fn init_lock(&self) -> &InitLock {
        &self.init_lock
    }

    /// The ActNorm statistics of the init (one entry per group, `None` without ActNorm): a
    /// forward pass on `x` (detached) that computes every ActNorm's statistics from its
    /// input, layer after layer, applying each before the next. Nothing is written; an
    /// unusable batch (fewer than 2 rows, all rows equal, non-finite values, a layer on which
    /// no unit varies) is an [`IcnnError::Initialization`]. A network without ActNorm needs
    /// no statistics and accepts any batch.
    pub(crate) fn init_statistics(
        &self,
        x: &Tensor,
        ctx: Option<&[GroupContext]>,
    ) -> Result<Vec<Option<ActNormInit>>> {
        self.check_input(x)?;
        if self.groups.iter().all(|g| g.actnorm.is_none()) {
            return Ok(vec![None; self.groups.len()]);
        }
        check_input_rows("input", x)?;
        let x = x.detach();
        let ctx: Option<Vec<GroupContext>> = ctx.map(|c| {
            c.iter()
                .map(|g| GroupContext {
                    gate_z: g.gate_z.as_ref().map(Tensor::detach),
                    gate_x: g.gate_x.as_ref().map(Tensor::detach),
                    bias: g.bias.as_ref().map(Tensor::detach),
                })
                .collect()
        });
        let mut zs: Vec<Tensor> = Vec::with_capacity(self.groups.len());
        let mut stats = Vec::with_capacity(self.groups.len());
        for (j, g) in self.groups.iter().enumerate() {
            let c = ctx.as_ref().map(|c| &c[j]);
            let pre = self
                .prepare_group(j, c, false, KernelGraph::Composed)?
                .pre_activation(&zs, &x)?;
            let a = match &g.actnorm {
                Some(an) => {
                    let init = an.statistics(&pre)?;
                    let a = init.forward(&pre)?.detach();
                    stats.push(Some(init));
                    a
                }
                None => {
                    stats.push(None);
                    pre
                }
            };
            let z = match g.act {
                GroupAct::Nonlinear(act) => act.value(&a)?,
                GroupAct::Identity => a,
            };
            zs.push(z);
        }
        Ok(stats)
    }

    /// Writes statistics from [`Self::init_statistics`] and sets the flag.
    pub(crate) fn write_init(&self, stats: &[Option<ActNormInit>]) -> Result<()> {
        for (g, init) in self.groups.iter().zip(stats) {
            if let (Some(an), Some(init)) = (&g.actnorm, init) {
                an.write(init)?;
            }
        }
        self.set_initialized(true)
    }

    /// The potential `(B,)` from prepared groups.
    pub(crate) fn forward_prepared(prepared: &[PreparedGroup], x: &Tensor) -> Result<Tensor> {
        let mut zs: Vec<Tensor> = Vec::with_capacity(prepared.len());
        for g in prepared {
            let a = g.pre_activation(&zs, x)?;
            let z = match g.act {
                GroupAct::Nonlinear(act) => act.value(&a)?,
                GroupAct::Identity => a,
            };
            zs.push(z);
        }
        let out = zs
            .pop()
            .ok_or_else(|| IcnnError::InvalidConfig("empty network".into()))?;
        Ok(out.squeeze(1)?)
    }
}

impl Network {
    /// Runs the data-dependent init on `x` when the flag is not set yet
    /// ([`InitLock::ensure`]): of threads making their first calls at once, one writes the
    /// init of its batch and all of them then compute with the network it wrote.
    pub(crate) fn ensure_initialized(
        &self,
        x: &Tensor,
        ctx: Option<&[GroupContext]>,
    ) -> Result<()> {
        self.init_lock.ensure(
            || self.is_initialized(),
            || self.init_statistics(x, ctx),
            |stats| self.write_init(&stats),
        )
    }

    /// `F(x)` `(B,)` (initialising the ActNorms on the first call).
    pub(crate) fn potential(&self, x: &Tensor, ctx: Option<&[GroupContext]>) -> Result<Tensor> {
        self.check_input(x)?;
        self.ensure_initialized(x, ctx)?;
        let prepared = self.prepare(ctx)?;
        Self::forward_prepared(&prepared, x)
    }

    /// The cached linearisation at `x` (initialising the ActNorms on the first call).
    pub(crate) fn linearize(
        &self,
        x: &Tensor,
        ctx: Option<&[GroupContext]>,
        second_order: bool,
    ) -> Result<crate::Linearization> {
        self.check_input(x)?;
        self.ensure_initialized(x, ctx)?;
        let prepared = self.prepare(ctx)?;
        crate::Linearization::build(prepared, x, second_order)
    }

    /// The host-kernel linearisation at `x` (unconditional networks; `None` where the
    /// kernels do not apply).
    pub(crate) fn host_linearize(&self, x: &Tensor) -> Result<Option<crate::HostLinearization>> {
        if !self.takes_host_kernels() {
            return Ok(None);
        }
        self.check_input(x)?;
        self.ensure_initialized(x, None)?;
        self.prepared_host_weights()?
            .map(|w| w.linearize(x))
            .transpose()
    }

    /// The host weights of the prepared network (unconditional networks; `None` where the
    /// kernels do not apply or the ActNorms have not been initialised yet: they need data).
    pub(crate) fn host_weights(&self) -> Result<Option<crate::HostWeights>> {
        if !self.takes_host_kernels() || !self.is_initialized()? {
            return Ok(None);
        }
        self.prepared_host_weights()
    }

    fn prepared_host_weights(&self) -> Result<Option<crate::HostWeights>> {
        crate::HostWeights::build(&self.prepare_with(None, KernelGraph::Fused)?)
    }

    /// Whether the host kernels can take this network (its parameters on the CPU, the
    /// kernels on): checked first, so that on a GPU neither the flag is read nor the weights
    /// prepared only to find that out.
    fn takes_host_kernels(&self) -> bool {
        crate::takes_host_kernels(self.initialized.device())
    }
}
