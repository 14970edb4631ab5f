//! Random small tabular flows for the property tests of `prop_flow.rs` (f64, CPU): every
//! built-in potential a `FlowConfig` takes (the dense ICNNs, the PICNN with a context, the
//! convolutional ICNNs on tiny images), with or without ActNorm, 1–3 blocks; the flow's entry
//! points for flows with or without a context; host copies of tensors. The references the
//! flow's results are compared with are in `fd.rs` (finite differences, dense linear
//! algebra) and `refs.rs` (built from the public layers).
#![allow(dead_code)]

pub mod fd;
pub mod refs;

use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Tensor};
use cpflow::{
    BlockConfig, FloatType, Flow, FlowConfig, FlowInverse, FlowRng, GaussianPrior, InverseParams,
    LayerConfig, PotentialConfig, SlqConfig, SlqLogProb, SurrogateParams,
};
use icnn::{
    ActivationKind, ConvIcnn2Config, ConvIcnn3Config, ConvIcnnConfig, DenseIcnn2Config,
    Icnn2Config, Icnn3Config, IcnnConfig, ImageShape, PicnnConfig,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// Unit roundoff of `f64`.
pub const U64: f64 = f64::EPSILON / 2.0;

/// A fixed-seed configuration with `cases` cases that never writes `proptest-regressions/`
/// files and keeps shrinking short (each shrink step rebuilds a flow).
pub fn fixed_config(cases: u32, seed: u64) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 128,
        ..Config::default()
    }
}

/// The potential of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Icnn,
    Icnn2,
    Icnn3,
    DenseIcnn2,
    /// Conditional: every evaluation takes a context row per data row.
    Picnn,
    /// Convolutional ICNNs over a tiny image whose `C·H·W` is the flow's dimension.
    ConvIcnn,
    ConvIcnn2,
    ConvIcnn3,
}

pub fn any_arch() -> impl Strategy<Value = Arch> {
    prop_oneof![
        Just(Arch::Icnn),
        Just(Arch::Icnn2),
        Just(Arch::Icnn3),
        Just(Arch::DenseIcnn2),
        Just(Arch::Picnn),
        Just(Arch::ConvIcnn),
        Just(Arch::ConvIcnn2),
        Just(Arch::ConvIcnn3),
    ]
}

/// What a random flow is built from.
#[derive(Clone, Debug)]
pub struct FlowSpec {
    pub arch: Arch,
    pub dim: usize,
    /// Requested width; the architectures that halve it round it up to an even number.
    pub width: usize,
    pub depth: usize,
    pub blocks: usize,
    /// `[AN, CPF, AN, …, CPF, AN]` (the layout of `FlowConfig::tabular`) or `[CPF, …, CPF]`.
    pub actnorm: bool,
    pub gaussian: bool,
    pub zero_shift: bool,
    pub symm_act_first: bool,
    /// Conv potentials: the image is `(d, 1, 1)` (channels) instead of `(1, 1, d)`, or
    /// `(1, 2, 2)` for `d = 4`.
    pub conv_channels: bool,
    pub context_dim: usize,
    /// `BlockConfig::trainable_w0` (else `w₀` is the constant `log(e − 1)`).
    pub trainable_w0: bool,
    /// `BlockConfig::bias_w1`, the initial `w₁`.
    pub bias_w1: f64,
    /// The prior's log-variance.
    pub log_var: f64,
    /// Seeds the weights, the initialisation batch, the perturbation and the case's data.
    pub seed: u64,
}

/// Flows of dimension in `dims` (at most 5), widths 1–6, depths 1–3, 1–3 blocks, every
/// architecture and activation option, context dims 1–2, trainable or fixed `w₀`, initial
/// `w₁` in [−1, 1], prior log-variance 0 or in [−2, 2].
pub fn flow_spec(dims: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = FlowSpec> {
    (
        any_arch(),
        dims,
        (1usize..=6, 1usize..=3, 1usize..=3),
        any::<(bool, bool, bool, bool, bool)>(),
        1usize..=2,
        (
            any::<bool>(),
            -1.0f64..1.0,
            prop_oneof![Just(0.0), -2.0f64..2.0],
        ),
        any::<u64>(),
    )
        .prop_map(
            |(
                arch,
                dim,
                (width, depth, blocks),
                (actnorm, gaussian, zero_shift, symm_act_first, conv_channels),
                context_dim,
                (trainable_w0, bias_w1, log_var),
                seed,
            )| FlowSpec {
                arch,
                dim,
                width,
                depth,
                blocks,
                actnorm,
                gaussian,
                zero_shift,
                symm_act_first,
                conv_channels,
                context_dim,
                trainable_w0,
                bias_w1,
                log_var,
                seed,
            },
        )
}

impl FlowSpec {
    pub fn potential(&self) -> PotentialConfig {
        let (dim, width, depth) = (self.dim, self.width, self.depth);
        let even = 2 * width.div_ceil(2);
        let activation = if self.gaussian {
            ActivationKind::GaussianSoftplus
        } else {
            ActivationKind::Softplus
        };
        let (zero_shift, symm_act_first) = (self.zero_shift, self.symm_act_first);
        let image = match (self.conv_channels, dim) {
            (true, 4) => ImageShape::new(1, 2, 2),
            (true, _) => ImageShape::new(dim, 1, 1),
            (false, _) => ImageShape::new(1, 1, dim),
        };
        match self.arch {
            Arch::Icnn => PotentialConfig::Icnn(IcnnConfig { dim, width, depth }),
            Arch::Icnn2 => PotentialConfig::Icnn2(Icnn2Config {
                dim,
                width,
                depth,
                activation,
                zero_shift,
                symm_act_first,
            }),
            Arch::Icnn3 => PotentialConfig::Icnn3(Icnn3Config {
                dim,
                width: even,
                depth,
                activation,
                zero_shift,
                symm_act_first,
            }),
            Arch::DenseIcnn2 => PotentialConfig::DenseIcnn2(DenseIcnn2Config {
                dim,
                width,
                depth,
                activation,
                zero_shift,
                symm_act_first,
            }),
            Arch::Picnn => PotentialConfig::Picnn(PicnnConfig {
                dim,
                context_dim: self.context_dim,
                width,
                depth,
                activation,
                zero_shift,
                symm_act_first,
            }),
            Arch::ConvIcnn => PotentialConfig::ConvIcnn(ConvIcnnConfig {
                image,
                width,
                depth,
                num_pooling: 0,
            }),
            Arch::ConvIcnn2 => PotentialConfig::ConvIcnn2(ConvIcnn2Config {
                image,
                width: even,
                depth,
            }),
            Arch::ConvIcnn3 => PotentialConfig::ConvIcnn3(ConvIcnn3Config {
                image,
                width: even,
                depth,
                activation,
                zero_shift,
            }),
        }
    }

    pub fn config(&self, float: FloatType) -> FlowConfig {
        let block = LayerConfig::Cpf(BlockConfig {
            potential: self.potential(),
            trainable_w0: self.trainable_w0,
            bias_w1: self.bias_w1,
        });
        let mut layers = Vec::new();
        for _ in 0..self.blocks {
            if self.actnorm {
                layers.push(LayerConfig::ActNorm);
            }
            layers.push(block.clone());
        }
        if self.actnorm {
            layers.push(LayerConfig::ActNorm);
        }
        FlowConfig {
            dim: self.dim,
            layers,
            prior: GaussianPrior::with_log_var(self.log_var),
            float,
            init_seed: self.seed,
        }
    }

    pub fn conditional(&self) -> bool {
        self.arch == Arch::Picnn
    }
}

/// `(rows, cols)` of `scale · N(0, 1)` draws.
pub fn randn(rng: &mut StdRng, rows: usize, cols: usize, scale: f64) -> Tensor {
    let v: Vec<f64> = (0..rows * cols)
        .map(|_| scale * rng.sample::<f64, _>(StandardNormal))
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

/// A built flow with its generator (for the case's further data) and the batch it was
/// initialised on.
pub struct Case {
    pub flow: Flow,
    pub rng: StdRng,
    /// The initialisation batch, `(16, d)`: rows `m + s ⊙ N(0, I)` with a random per-feature
    /// offset `m` and spread `s`.
    pub data: Tensor,
    /// Contexts of the initialisation batch (conditional flows).
    pub data_ctx: Option<Tensor>,
}

impl Case {
    /// Context rows for `n` data rows (conditional flows), `N(0, I)`.
    pub fn ctx(&mut self, n: usize) -> Option<Tensor> {
        self.flow
            .context_dim()
            .map(|c| randn(&mut self.rng, n, c, 1.0))
    }

    /// `n` evaluation points around the data: `m + scale · s ⊙ N(0, I)`.
    pub fn points(&mut self, n: usize, scale: f64) -> Tensor {
        let d = self.flow.dim();
        let mean = self.data.mean_keepdim(0).unwrap();
        let spread = self
            .data
            .broadcast_sub(&mean)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_keepdim(0)
            .unwrap()
            .sqrt()
            .unwrap();
        randn(&mut self.rng, n, d, scale)
            .broadcast_mul(&spread)
            .unwrap()
            .broadcast_add(&mean)
            .unwrap()
    }
}

/// Builds the flow of `spec` in f64, initialises it on a 16-row batch, and — with `perturb` —
/// moves every weight (init flags excluded) by `N(0, 0.3²)` so that no check runs at the
/// initialisation's special point (unit ActNorm statistics, `sp(w₀) = 1`, zero gates).
pub fn build(spec: &FlowSpec, perturb: bool) -> Case {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let flow = Flow::new(spec.config(FloatType::F64), &Device::Cpu).unwrap();
    let d = spec.dim;
    let offsets: Vec<f64> = (0..d).map(|_| rng.random_range(-2.0..2.0)).collect();
    let spreads: Vec<f64> = (0..d)
        .map(|_| 10f64.powf(rng.random_range(-0.5..0.5)))
        .collect();
    let data = randn(&mut rng, 16, d, 1.0)
        .broadcast_mul(&Tensor::from_vec(spreads, (1, d), &Device::Cpu).unwrap())
        .unwrap()
        .broadcast_add(&Tensor::from_vec(offsets, (1, d), &Device::Cpu).unwrap())
        .unwrap();
    let data_ctx = flow.context_dim().map(|c| randn(&mut rng, 16, c, 1.0));
    match &data_ctx {
        Some(c) => flow.initialize_given(&data, c).unwrap(),
        None => flow.initialize(&data).unwrap(),
    }
    if perturb {
        perturb_weights(&flow, &mut rng, 0.3);
    }
    Case {
        flow,
        rng,
        data,
        data_ctx,
    }
}

/// Adds `N(0, scale²)` to every variable but the init flags, in name order.
pub fn perturb_weights(flow: &Flow, rng: &mut StdRng, scale: f64) {
    let moved: HashMap<String, Tensor> = flow
        .weight_tensors()
        .into_iter()
        .map(|(name, t)| {
            let t = if name.ends_with("initialized") {
                t.copy().unwrap()
            } else {
                let n = t.elem_count();
                let noise: Vec<f64> = (0..n)
                    .map(|_| scale * rng.sample::<f64, _>(StandardNormal))
                    .collect();
                let noise = Tensor::from_vec(noise, t.shape(), &Device::Cpu).unwrap();
                (t.to_dtype(DType::F64).unwrap() + noise).unwrap()
            };
            (name, t)
        })
        .collect();
    flow.set_weights(&moved, "").unwrap();
}

/// Host copy of a `(B, n)` f64 tensor.
pub fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
}

/// Host copy of a `(B,)` tensor as f64.
pub fn vec1(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
}

/// Row `r` of a `(B, n)` tensor as a `(1, n)` tensor.
pub fn row(t: &Tensor, r: usize) -> Tensor {
    t.i(r..r + 1).unwrap()
}

/// The gradients of `loss` w.r.t. the flow's variables, by name (variables without one are
/// left out).
pub fn grads_by_name(flow: &Flow, loss: &Tensor) -> HashMap<String, Vec<f64>> {
    let g = loss.backward().unwrap();
    flow.named_vars()
        .into_iter()
        .filter_map(|(k, v)| {
            g.get(v.as_tensor()).map(|t| {
                let v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                (k, v)
            })
        })
        .collect()
}

/// A unique scratch directory under the system temp dir (removed by the caller).
pub fn scratch_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("cpflow-prop-{tag}-{}-{n}", std::process::id()))
}

// The flow's entry points, for flows with or without a context; small tensor helpers.

pub fn log_prob(flow: &Flow, x: &Tensor, ctx: Option<&Tensor>) -> Vec<f64> {
    vec1(
        &match ctx {
            Some(c) => flow.log_prob_exact_given(x, c),
            None => flow.log_prob(x),
        }
        .unwrap(),
    )
}

pub fn transform(flow: &Flow, x: &Tensor, ctx: Option<&Tensor>) -> (Tensor, Tensor) {
    match ctx {
        Some(c) => flow.transform_given(x, c),
        None => flow.transform(x),
    }
    .unwrap()
}

pub fn slq(
    flow: &Flow,
    x: &Tensor,
    ctx: Option<&Tensor>,
    cfg: &SlqConfig,
    seed: u64,
) -> SlqLogProb {
    let mut rng = FlowRng::seed_from_u64(seed);
    match ctx {
        Some(c) => flow.log_prob_slq_given(x, c, cfg, &mut rng),
        None => flow.log_prob_slq(x, cfg, &mut rng),
    }
    .unwrap()
}

/// Samples of `n` points with `params` from the stream `seed` (a context row per point for
/// conditional flows) and the prior draws `z` they were inverted from (the same stream).
pub fn sample(
    flow: &Flow,
    ctx: Option<&Tensor>,
    n: usize,
    params: &InverseParams,
    seed: u64,
) -> (FlowInverse, Tensor) {
    let s = match ctx {
        Some(c) => flow.sample_given_with(c, params, &mut FlowRng::seed_from_u64(seed)),
        None => flow.sample_with(n, params, &mut FlowRng::seed_from_u64(seed)),
    }
    .unwrap();
    let z = flow
        .prior()
        .sample(
            n,
            flow.dim(),
            DType::F64,
            &Device::Cpu,
            &mut FlowRng::seed_from_u64(seed),
        )
        .unwrap();
    (s, z)
}

pub fn surrogate_loss(
    flow: &Flow,
    x: &Tensor,
    ctx: Option<&Tensor>,
    p: &SurrogateParams,
    seed: u64,
) -> Tensor {
    let mut rng = FlowRng::seed_from_u64(seed);
    match ctx {
        Some(c) => flow.surrogate_loss_given(x, c, p, &mut rng),
        None => flow.surrogate_loss(x, p, &mut rng),
    }
    .unwrap()
    .loss
}

pub fn exact_nll_loss(flow: &Flow, x: &Tensor, ctx: Option<&Tensor>) -> Tensor {
    match ctx {
        Some(c) => flow.exact_nll_loss_given(x, c),
        None => flow.exact_nll_loss(x),
    }
    .unwrap()
}

/// The rows of `t` (and of `ctx`) in the order `perm`.
pub fn permuted(t: &Tensor, perm: &[usize]) -> Tensor {
    let idx: Vec<u32> = perm.iter().map(|&i| i as u32).collect();
    let idx = Tensor::from_vec(idx, perm.len(), &Device::Cpu).unwrap();
    t.index_select(&idx, 0).unwrap()
}

/// `t` rounded to f32 (and back to f64).
pub fn round_to_f32(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F32)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
}
