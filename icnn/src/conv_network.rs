//! The generic convolutional network every conv ICNN is built from: parameter preparation,
//! forward pass, data-dependent ActNorm initialisation and input handling.
//!
//! A network is a list of *nodes* (feature maps `(B, C_j, H_j, W_j)`), evaluated in order.
//! Node 0 is the input image `x`. Node `j ≥ 1` computes
//! ```text
//! p_j = Σ_{inputs} conv_i(concat_channels(z_s for s in sources_i)) + bias_j
//! a_j = γ_j ⊙ (p_j + β_j)                      (per-channel ActNorm, when present)
//! z_j = s_j(a_j)                               (or z_j = a_j: identity nodes)
//! F   = Σ_{readout nodes j} mean_{H,W} Σ_c z_j  (spatial mean, channel sum)
//! ```
//! `conv_i` is a plain convolution ([`Conv2d`]) or a positive one ([`PosConv2d`]). ActNorm's
//! positive scale `γ` is folded into the kernels and biases once per call, so the derivative
//! recursions (`conv_linearization`) never see it. A convolution over a channel
//! concatenation is split into one kernel block per source (convolution is linear in the
//! input channels).

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::activation::Activation;
use crate::actnorm::ActNorm;
use crate::actnorm_init::{ActNormInit, check_input_images};
use crate::conv_geometry::{ConvGeometry, ImageShape};
use crate::conv_layers::{Conv2d, PosConv2d, PreparedConv};
use crate::error::{IcnnError, Result};
use crate::init_lock::InitLock;
use crate::params;
use crate::scaled_kernel::{KernelGraph, KernelMap, fused_scaled_kernel};

/// A convolution of a node input: unconstrained or positive.
#[derive(Debug, Clone)]
pub(crate) enum ConvOp {
    Plain(Conv2d),
    Positive(PosConv2d),
}

impl ConvOp {
    fn n_in(&self) -> usize {
        match self {
            Self::Plain(c) => c.n_in(),
            Self::Positive(c) => c.n_in(),
        }
    }

    fn n_out(&self) -> usize {
        match self {
            Self::Plain(c) => c.n_out(),
            Self::Positive(c) => c.n_out(),
        }
    }

    fn geometry(&self) -> ConvGeometry {
        match self {
            Self::Plain(c) => c.geometry,
            Self::Positive(c) => c.geometry,
        }
    }

    fn kernel(&self) -> Result<Tensor> {
        match self {
            Self::Plain(c) => Ok(c.weight.clone()),
            Self::Positive(c) => c.effective_weight(),
        }
    }

    /// The weight and what `kernel()` applies to it, for [`fused_scaled_kernel`].
    fn weight_and_map(&self) -> (&Tensor, KernelMap) {
        match self {
            Self::Plain(c) => (&c.weight, KernelMap::Identity),
            Self::Positive(c) => (
                &c.weight,
                KernelMap::Softplus {
                    inv_fan_in: 1.0 / c.fan_in() as f64,
                },
            ),
        }
    }

    fn bias(&self) -> Result<Option<Tensor>> {
        match self {
            Self::Plain(c) => Ok(c.bias.clone()),
            Self::Positive(c) => c.effective_bias(),
        }
    }
}

/// One input of a node: a convolution applied to the channel concatenation of `sources`.
#[derive(Debug, Clone)]
pub(crate) struct ConvInput {
    pub op: ConvOp,
    pub sources: Vec<usize>,
}

impl ConvInput {
    pub(crate) fn plain(conv: Conv2d, sources: Vec<usize>) -> Self {
        Self {
            op: ConvOp::Plain(conv),
            sources,
        }
    }

    pub(crate) fn positive(conv: PosConv2d, sources: Vec<usize>) -> Self {
        Self {
            op: ConvOp::Positive(conv),
            sources,
        }
    }
}

/// Static description of one node.
#[derive(Debug, Clone)]
pub(crate) struct ConvNode {
    pub inputs: Vec<ConvInput>,
    pub actnorm: Option<ActNorm>,
    /// `None`: identity.
    pub act: Option<Activation>,
    /// Whether `mean_{H,W} Σ_c z_j` is added to the potential.
    pub readout: bool,
}

/// One kernel block of a prepared node, reading node `source`.
#[derive(Debug, Clone)]
pub(crate) struct PreparedBlock {
    pub source: usize,
    pub conv: PreparedConv,
}

/// A node with its effective (γ-folded, softplus-reparametrised) kernels.
#[derive(Debug, Clone)]
pub(crate) struct PreparedNode {
    pub blocks: Vec<PreparedBlock>,
    /// `(C,)`.
    pub bias: Option<Tensor>,
    pub act: Option<Activation>,
    /// `1/(H·W)` for readout nodes.
    pub readout: Option<f64>,
    /// `(C, H, W)` of the node's map.
    pub shape: (usize, usize, usize),
}

impl PreparedNode {
    pub(crate) fn detach(&self) -> Self {
        Self {
            blocks: self
                .blocks
                .iter()
                .map(|b| PreparedBlock {
                    source: b.source,
                    conv: b.conv.detach(),
                })
                .collect(),
            bias: self.bias.as_ref().map(Tensor::detach),
            act: self.act,
            readout: self.readout,
            shape: self.shape,
        }
    }

    /// `Σ_blocks conv(z_source) + bias`.
    pub(crate) fn pre_activation(&self, zs: &[Tensor]) -> Result<Tensor> {
        let mut acc: Option<Tensor> = None;
        for b in &self.blocks {
            let t = b.conv.forward(&zs[b.source])?;
            acc = Some(match acc {
                Some(a) => (a + t)?,
                None => t,
            });
        }
        let acc = acc.ok_or_else(|| IcnnError::InvalidConfig("node without inputs".into()))?;
        Ok(match &self.bias {
            Some(b) => crate::gemm_conv::add_channel_bias(&acc, b)?,
            None => acc,
        })
    }
}

/// `mean_{H,W} Σ_c z` per sample, `(B,)`.
pub(crate) fn readout_value(z: &Tensor, scale: f64) -> Result<Tensor> {
    Ok(z.flatten_from(1)?.sum(1)?.affine(scale, 0.0)?)
}

/// A convolutional network: nodes (node 0 = the input), map shapes and the ActNorm flag.
#[derive(Debug, Clone)]
pub(crate) struct ConvNetwork {
    nodes: Vec<ConvNode>,
    image: ImageShape,
    /// `(C, H, W)` per node.
    shapes: Vec<(usize, usize, usize)>,
    /// `(1,)` variable: 0 before the data-dependent init, 1 after.
    initialized: Tensor,
    /// Held across the check of `initialized` and the init (shared by clones).
    init_lock: InitLock,
}

impl ConvNetwork {
    /// Validates the graph (sources before consumers, matching channels and spatial sizes)
    /// and creates the `initialized` flag under `vb`. `nodes[0]` must be the input node
    /// (no inputs).
    pub(crate) fn new(vb: &VarBuilder, image: ImageShape, nodes: Vec<ConvNode>) -> Result<Self> {
        let bad = |m: String| IcnnError::InvalidConfig(m);
        if image.dim() == 0 {
            return Err(bad(format!("empty image shape {image:?}")));
        }
        if nodes.first().is_none_or(|n| !n.inputs.is_empty()) {
            return Err(bad("node 0 must be the input".into()));
        }
        let mut shapes = vec![(image.channels, image.height, image.width)];
        for (j, node) in nodes.iter().enumerate().skip(1) {
            let mut out: Option<(usize, usize, usize)> = None;
            for inp in &node.inputs {
                let mut channels = 0;
                let mut hw: Option<(usize, usize)> = None;
                for &s in &inp.sources {
                    let &(c, h, w) = shapes
                        .get(s)
                        .ok_or_else(|| bad(format!("node {j} reads node {s} before it exists")))?;
                    if hw.is_some_and(|x| x != (h, w)) {
                        return Err(bad(format!("node {j}: sources of different sizes")));
                    }
                    hw = Some((h, w));
                    channels += c;
                }
                let hw = hw.ok_or_else(|| bad(format!("node {j}: input without sources")))?;
                if channels != inp.op.n_in() {
                    return Err(bad(format!(
                        "node {j}: convolution expects {} channels, sources give {channels}",
                        inp.op.n_in()
                    )));
                }
                let (h, w) = inp.op.geometry().output_hw(hw)?;
                let shape = (inp.op.n_out(), h, w);
                if out.is_some_and(|o| o != shape) {
                    return Err(bad(format!("node {j}: inputs of different output shapes")));
                }
                out = Some(shape);
            }
            let out = out.ok_or_else(|| bad(format!("node {j} has no inputs")))?;
            if node.actnorm.as_ref().is_some_and(|a| a.features() != out.0) {
                return Err(bad(format!(
                    "node {j}: ActNorm width differs from {}",
                    out.0
                )));
            }
            shapes.push(out);
        }
        if !nodes.iter().any(|n| n.readout) {
            return Err(bad("network without readout".into()));
        }
        let has_actnorm = nodes.iter().any(|n| n.actnorm.is_some());
        let flag = if has_actnorm { 0.0 } else { 1.0 };
        let initialized = params::constant(vb, 1, "initialized", flag)?;
        Ok(Self {
            nodes,
            image,
            shapes,
            initialized,
            init_lock: InitLock::default(),
        })
    }

    /// The input image shape.
    pub(crate) fn image(&self) -> ImageShape {
        self.image
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

    /// `x` as `(B, C, H, W)`: accepts flattened rows `(B, C·H·W)` or images `(B, C, H, W)`.
    pub(crate) fn to_image(&self, x: &Tensor) -> Result<Tensor> {
        let im = self.image;
        if x.dtype() != self.dtype() {
            return Err(IcnnError::Shape(format!(
                "input dtype {:?} differs from the parameters' dtype {:?}",
                x.dtype(),
                self.dtype()
            )));
        }
        crate::layer_input::check_device("input", x, &self.initialized)?;
        match *x.dims() {
            [b, d] if d == im.dim() => Ok(x.reshape((b, im.channels, im.height, im.width))?),
            [_, c, h, w] if (c, h, w) == (im.channels, im.height, im.width) => Ok(x.clone()),
            _ => Err(IcnnError::Shape(format!(
                "expected input of shape (B, {}) or (B, {}, {}, {}), got {:?}",
                im.dim(),
                im.channels,
                im.height,
                im.width,
                x.dims()
            ))),
        }
    }

    /// Effective kernels of node `j`; `with_actnorm = false` leaves the ActNorm out (used by
    /// the data-dependent init). `graph` says how a kernel and its ActNorm scale are
    /// multiplied (the same values either way).
    fn prepare_node(
        &self,
        j: usize,
        with_actnorm: bool,
        graph: KernelGraph,
    ) -> Result<PreparedNode> {
        let node = &self.nodes[j];
        let (c, h, w) = self.shapes[j];
        let an = match (&node.actnorm, with_actnorm) {
            (Some(an), true) => Some((an.scale()?, an.shift()?)),
            _ => None,
        };
        let mut blocks = Vec::new();
        let mut bias: Option<Tensor> = None;
        for inp in &node.inputs {
            let kernel = match &an {
                Some((gamma, _)) => {
                    let (w, map) = inp.op.weight_and_map();
                    match fused_scaled_kernel(w, gamma, map, graph)? {
                        Some(k) => k,
                        None => inp
                            .op
                            .kernel()?
                            .broadcast_mul(&gamma.reshape((c, 1, 1, 1))?)?,
                    }
                }
                None => inp.op.kernel()?,
            };
            let mut off = 0;
            for &s in &inp.sources {
                let (cs, hs, ws) = self.shapes[s];
                let block = if inp.sources.len() == 1 {
                    kernel.clone()
                } else {
                    kernel.narrow(1, off, cs)?.contiguous()?
                };
                off += cs;
                blocks.push(PreparedBlock {
                    source: s,
                    conv: PreparedConv::new(block, inp.op.geometry(), (hs, ws))?,
                });
            }
            if let Some(b) = inp.op.bias()? {
                bias = Some(match bias {
                    Some(a) => (a + b)?,
                    None => b,
                });
            }
        }
        if let Some((gamma, beta)) = &an {
            bias = Some(match bias {
                Some(b) => ((b + beta)? * gamma)?,
                None => (beta * gamma)?,
            });
        }
        Ok(PreparedNode {
            blocks,
            bias,
            act: node.act,
            readout: node.readout.then(|| 1.0 / (h * w) as f64),
            shape: (c, h, w),
        })
    }

    /// Effective kernels of every node (index 0, the input, is a placeholder), by composed
    /// candle ops: differentiable any number of times.
    pub(crate) fn prepare(&self) -> Result<Vec<PreparedNode>> {
        self.prepare_with(KernelGraph::Composed)
    }

    /// [`Self::prepare`] with `graph`.
    fn prepare_with(&self, graph: KernelGraph) -> Result<Vec<PreparedNode>> {
        (0..self.nodes.len())
            .map(|j| {
                if j == 0 {
                    Ok(PreparedNode {
                        blocks: Vec::new(),
                        bias: None,
                        act: None,
                        readout: None,
                        shape: self.shapes[0],
                    })
                } else {
                    self.prepare_node(j, true, graph)
                }
            })
            .collect()
    }

    /// The data-dependent ActNorm init: a forward pass on `x` (detached) that computes every
    /// ActNorm from the per-channel statistics of its input over the batch and the pixels,
    /// node after node, then writes them all and sets the flag. An unusable batch (non-finite
    /// values, no image, images that are constant and equal, a node on which no channel
    /// varies) is an [`IcnnError::Initialization`] that writes nothing. Writes under the init
    /// lock.
    pub(crate) fn initialize(&self, x: &Tensor) -> Result<()> {
        let stats = self.init_statistics(x)?;
        self.init_lock.write(|| self.write_init(&stats))
    }

    /// The ActNorm statistics of the init on `x`, per ActNorm node; nothing is written.
    fn init_statistics(&self, x: &Tensor) -> Result<Vec<(&ActNorm, ActNormInit)>> {
        let x = self.to_image(x)?.detach();
        if self.nodes.iter().any(|n| n.actnorm.is_some()) {
            check_input_images("input", &x)?;
        }
        let mut zs: Vec<Tensor> = vec![x];
        let mut stats = Vec::new();
        for (j, node) in self.nodes.iter().enumerate().skip(1) {
            let pre = self
                .prepare_node(j, false, KernelGraph::Composed)?
                .pre_activation(&zs)?;
            let a = match &node.actnorm {
                Some(an) => {
                    let (b, c, h, w) = pre.dims4()?;
                    let rows = pre
                        .permute((0, 2, 3, 1))?
                        .contiguous()?
                        .reshape((b * h * w, c))?;
                    let init = an.statistics(&rows)?;
                    let shift = init.shift.reshape((1, c, 1, 1))?;
                    let scale = init.scale()?.reshape((1, c, 1, 1))?;
                    stats.push((an, init));
                    pre.broadcast_add(&shift)?.broadcast_mul(&scale)?.detach()
                }
                None => pre,
            };
            zs.push(match node.act {
                Some(act) => act.value(&a)?,
                None => a,
            });
        }
        Ok(stats)
    }

    /// Writes statistics from [`Self::init_statistics`] and sets the flag.
    fn write_init(&self, stats: &[(&ActNorm, ActNormInit)]) -> Result<()> {
        for (an, init) in stats {
            an.write(init)?;
        }
        self.set_initialized(true)
    }

    /// Runs the data-dependent init when the flag is not set yet: check and init under one
    /// lock ([`InitLock::ensure`]), so racing first calls initialise once.
    pub(crate) fn ensure_initialized(&self, x: &Tensor) -> Result<()> {
        self.init_lock.ensure(
            || self.is_initialized(),
            || self.init_statistics(x),
            |stats| self.write_init(&stats),
        )
    }

    /// `F(x)` `(B,)` (initialising the ActNorms on the first call).
    pub(crate) fn potential(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.to_image(x)?;
        self.ensure_initialized(&x)?;
        let prepared = self.prepare()?;
        let mut zs: Vec<Tensor> = vec![x];
        let mut out: Option<Tensor> = None;
        for node in prepared.iter().skip(1) {
            let a = node.pre_activation(&zs)?;
            let z = match node.act {
                Some(act) => act.value(&a)?,
                None => a,
            };
            if let Some(scale) = node.readout {
                let r = readout_value(&z, scale)?;
                out = Some(match out {
                    Some(o) => (o + r)?,
                    None => r,
                });
            }
            zs.push(z);
        }
        out.ok_or_else(|| IcnnError::InvalidConfig("network without readout".into()))
    }

    /// The cached linearisation at `x` (initialising the ActNorms on the first call).
    pub(crate) fn linearize(&self, x: &Tensor, second_order: bool) -> Result<crate::Linearization> {
        let x = self.to_image(x)?;
        self.ensure_initialized(&x)?;
        let prepared = self.prepare()?;
        crate::conv_linearization::linearize(prepared, &x, second_order)
    }

    /// The host-kernel linearisation at `x` (`None` where the kernels do not apply).
    pub(crate) fn host_linearize(&self, x: &Tensor) -> Result<Option<crate::HostLinearization>> {
        if !self.takes_host_kernels() {
            return Ok(None);
        }
        let x = self.to_image(x)?;
        self.ensure_initialized(&x)?;
        self.prepared_host_weights()?
            .map(|w| w.linearize(&x))
            .transpose()
    }

    /// The host weights of the prepared network (`None` where the kernels do not apply or
    /// the ActNorms have not been initialised yet: they need data).
    pub(crate) fn host_weights(&self) -> Result<Option<crate::HostWeights>> {
        if !self.takes_host_kernels() || !self.is_initialized()? {
            return Ok(None);
        }
        self.prepared_host_weights()
    }

    /// The host kernels' weights, each kernel times its ActNorm scale by one op
    /// ([`KernelGraph::Fused`]): the host kernels' backward is first-order anyway, and the
    /// composed ops kept several copies of a wide network's weights in a training step.
    fn prepared_host_weights(&self) -> Result<Option<crate::HostWeights>> {
        crate::HostWeights::build_conv(&self.prepare_with(KernelGraph::Fused)?)
    }

    /// Whether the host kernels can take this network (its parameters on the CPU, the
    /// kernels on): checked first, so that on a GPU neither the flag is read nor the weights
    /// prepared only to find that out.
    fn takes_host_kernels(&self) -> bool {
        crate::takes_host_kernels(self.initialized.device())
    }
}

/// Implements `ConvexPotential` and the ActNorm-init helpers for a conv architecture holding
/// a `net: ConvNetwork` field.
macro_rules! impl_conv_potential {
    ($ty:ty) => {
        impl $crate::traits::ConvexPotential for $ty {
            /// `F(x)` `(B,)`; `x` is `(B, C·H·W)` rows or `(B, C, H, W)` images.
            fn potential(&self, x: &candle_core::Tensor) -> $crate::Result<candle_core::Tensor> {
                self.net.potential(x)
            }

            /// The linearisation at `x` (`(B, C·H·W)` rows or `(B, C, H, W)` images); its
            /// gradient and Hessian-vector products are flattened rows `(B, C·H·W)`.
            fn linearize(&self, x: &candle_core::Tensor) -> $crate::Result<$crate::Linearization> {
                self.net.linearize(x, true)
            }

            /// `C·H·W`.
            fn dim(&self) -> usize {
                self.net.image().dim()
            }

            fn value_and_gradient(
                &self,
                x: &candle_core::Tensor,
            ) -> $crate::Result<(candle_core::Tensor, candle_core::Tensor)> {
                let lin = self.net.linearize(x, false)?;
                Ok((lin.potential(), lin.gradient()))
            }

            /// The host-kernel linearisation (CPU, f32/f64): rows `(B, C·H·W)` in and out.
            fn host_linearize(
                &self,
                x: &candle_core::Tensor,
            ) -> $crate::Result<Option<$crate::HostLinearization>> {
                self.net.host_linearize(x)
            }

            /// The host weights (CPU, f32/f64; after the ActNorm initialisation); they
            /// linearize rows `(B, C·H·W)` or images `(B, C, H, W)`.
            fn host_weights(&self) -> $crate::Result<Option<$crate::HostWeights>> {
                self.net.host_weights()
            }
        }

        impl $ty {
            /// The input image shape `(C, H, W)`.
            pub fn image_shape(&self) -> $crate::ImageShape {
                self.net.image()
            }

            /// Whether the ActNorm data-dependent initialisation has run (the
            /// `initialized` flag variable saved with the parameters is non-zero).
            pub fn is_initialized(&self) -> $crate::Result<bool> {
                self.net.is_initialized()
            }

            /// Sets the `initialized` flag without touching the ActNorm parameters (use it
            /// after loading weights that were trained elsewhere and lack the flag).
            pub fn mark_initialized(&self) -> $crate::Result<()> {
                self.net.set_initialized(true)
            }

            /// Runs the data-dependent ActNorm initialisation on the batch `x` (rows or
            /// images) now, even if it already ran, and sets the flag. Otherwise it runs
            /// automatically on the first `potential`/`linearize` call, whose batch becomes
            /// the normalisation for good (of threads making first calls at once, one batch
            /// initialises and all compute with it); `initialize` on a batch of your choosing
            /// decides it (it replaces any init before it, a lazy one included).
            pub fn initialize(&self, x: &candle_core::Tensor) -> $crate::Result<()> {
                self.net.initialize(x)
            }
        }
    };
}

pub(crate) use impl_conv_potential;
