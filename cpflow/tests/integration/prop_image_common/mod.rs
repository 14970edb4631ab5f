//! Builders and independent references for the property tests of `prop_image_posterior.rs`:
//! random tiny image flows and amortised posteriors (f64), the flow minus its logit layer,
//! the logit's closed form, and a batched central-difference Jacobian.

#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use cpflow::FloatType;
use cpflow::image::{
    ConvArch, ImageFlow, ImageFlowConfig, ImageLayerConfig, ImageModelConfig, MultiscaleConfig,
    dequantize,
};
use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
use icnn::{ActivationKind, ImageShape};
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// `ln 2π`.
pub const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// Images the flows are initialised on (and evaluated at): a dense `fc_end` block and its
/// per-feature ActNorm need at least 2.
pub const INIT_IMAGES: usize = 4;

/// One random multi-scale image flow on `channels × 4 × 4` images (D ≤ 32), f64.
#[derive(Clone, Debug)]
pub struct ImageCase {
    pub arch: ConvArch,
    /// ConvICNN3's activation (unused by the other two).
    pub activation: ActivationKind,
    pub channels: usize,
    /// Blocks per scale (1 to 3 scales: 4×4, 2×2, 1×1).
    pub nblocks: Vec<usize>,
    pub actnorm: bool,
    pub factor_out: bool,
    pub fc_end: bool,
    /// `None`: no logit layer (and no init ActNorm).
    pub logit_alpha: Option<f64>,
    pub width: usize,
    pub depth: usize,
    pub init_seed: u64,
    pub data_seed: u64,
}

/// Random [`ImageCase`]s: every conv architecture, 1 or 2 channels, 1–3 scales of 0–2 blocks
/// (at least one block on the first), with or without ActNorms, factor-out, a dense `fc_end`
/// block and a logit (α = 0, 1e-6 or in [1e-3, 0.2)), width 2 or 4 (even: ConvICNN2/3 split
/// their channels), depth 1–2.
pub fn image_case() -> impl Strategy<Value = ImageCase> {
    (
        prop_oneof![
            Just(ConvArch::ConvIcnn),
            Just(ConvArch::ConvIcnn2),
            Just(ConvArch::ConvIcnn3)
        ],
        prop_oneof![
            Just(ActivationKind::Softplus),
            Just(ActivationKind::GaussianSoftplus)
        ],
        1usize..=2,
        prop::collection::vec(0usize..=2, 1..=3),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(None),
            Just(Some(0.0)),
            Just(Some(1e-6)),
            (1e-3f64..0.2).prop_map(Some)
        ],
        prop_oneof![Just(2usize), Just(4)],
        1usize..=2,
        0u64..1000,
        0u64..1000,
    )
        .prop_map(
            |(
                arch,
                activation,
                channels,
                mut nblocks,
                actnorm,
                factor_out,
                fc_end,
                logit_alpha,
                width,
                depth,
                init_seed,
                data_seed,
            )| {
                nblocks[0] = nblocks[0].max(1);
                ImageCase {
                    arch,
                    activation,
                    channels,
                    nblocks,
                    actnorm,
                    factor_out,
                    fc_end,
                    logit_alpha,
                    width,
                    depth,
                    init_seed,
                    data_seed,
                }
            },
        )
}

impl ImageCase {
    pub fn shape(&self) -> ImageShape {
        ImageShape::new(self.channels, 4, 4)
    }

    /// `D = C·H·W`.
    pub fn dim(&self) -> usize {
        self.shape().dim()
    }

    /// The multi-scale configuration, with the potentials an image run's model section
    /// builds (`ImageModelConfig::potential`, `fc_end_potential`).
    pub fn config(&self) -> ImageFlowConfig {
        let model = ImageModelConfig {
            arch: self.arch,
            width: self.width,
            depth: self.depth,
            activation: self.activation,
            fc_end: self.fc_end,
            float: FloatType::F64,
            ..Default::default()
        };
        let ms = MultiscaleConfig {
            image: self.shape(),
            nblocks: self.nblocks.clone(),
            logit_alpha: self.logit_alpha,
            actnorm: self.actnorm,
            factor_out: self.factor_out,
            potential: model.potential().unwrap(),
            fc_end: model.fc_end_potential(),
            trainable_w0: true,
            float: FloatType::F64,
            init_seed: self.init_seed,
        };
        ImageFlowConfig::multiscale(&ms).unwrap()
    }

    /// `n` dequantised images `(n, D)` of random grey levels 0..=255 (seeded).
    pub fn images(&self, n: usize, seed: u64) -> Tensor {
        let mut rng = StdRng::seed_from_u64(seed);
        let k: Vec<u32> = (0..n * self.dim())
            .map(|_| rng.random_range(0u32..256))
            .collect();
        let k = Tensor::from_vec(k, (n, self.dim()), &Device::Cpu).unwrap();
        dequantize(&k, DType::F64, &mut rng).unwrap()
    }

    /// The flow, initialised on [`INIT_IMAGES`] images, and those images.
    pub fn build(&self) -> (ImageFlow, Tensor) {
        let flow = ImageFlow::new(self.config(), &Device::Cpu).unwrap();
        let x = self.images(INIT_IMAGES, self.data_seed);
        flow.initialize(&x).unwrap();
        (flow, x)
    }
}

/// `flow` without its first layer, with the same weights (layer `i + 1` of `flow` is layer
/// `i` here): for a logit flow, the map from logit space `y` to `z`.
pub fn without_first_layer(flow: &ImageFlow) -> ImageFlow {
    let mut cfg = flow.config().clone();
    cfg.layers.remove(0);
    let rest = ImageFlow::new(cfg, &Device::Cpu).unwrap();
    let renamed: HashMap<String, Tensor> = flow
        .weight_tensors()
        .into_iter()
        .map(|(name, t)| {
            let (i, tail) = name
                .strip_prefix("layers.")
                .unwrap()
                .split_once('.')
                .unwrap();
            let i: usize = i.parse().unwrap();
            (format!("layers.{}.{tail}", i - 1), t)
        })
        .collect();
    assert_eq!(renamed.len(), rest.named_vars().len());
    rest.set_weights(&renamed, "").unwrap();
    rest
}

/// The first layer's logit offset, if the flow starts with a logit.
pub fn logit_alpha(flow: &ImageFlow) -> Option<f64> {
    match flow.config().layers.first() {
        Some(ImageLayerConfig::Logit { alpha }) => Some(*alpha),
        _ => None,
    }
}

/// The logit on the host: `y_j = ln s_j − ln(1 − s_j)` with `s = α + (1 − 2α)x`, and its
/// log-Jacobian `Σ_j [ln(1 − 2α) − ln s_j − ln(1 − s_j)]` (closed form).
pub fn host_logit(x: &[f64], alpha: f64) -> (Vec<f64>, f64) {
    let mut log_jac = 0.0;
    let y = x
        .iter()
        .map(|&v| {
            let s = alpha + (1.0 - 2.0 * alpha) * v;
            log_jac += (1.0 - 2.0 * alpha).ln() - s.ln() - (1.0 - s).ln();
            s.ln() - (1.0 - s).ln()
        })
        .collect();
    (y, log_jac)
}

/// `Σ_j log N(v_j; 0, 1)`.
pub fn standard_normal_log_density(v: &[f64]) -> f64 {
    v.iter().map(|a| -0.5 * a * a - 0.5 * LN_2PI).sum()
}

/// One `(1, d)` f64 row.
pub fn row(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), (1, v.len()), &Device::Cpu).unwrap()
}

/// The rows `idx` of a 2-D tensor, in that order.
pub fn take_rows(t: &Tensor, idx: &[usize]) -> Tensor {
    let idx: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let idx = Tensor::from_vec(idx.clone(), idx.len(), &Device::Cpu).unwrap();
    t.index_select(&idx, 0).unwrap()
}

/// One random amortised posterior `q(z | x)` (f64): `[AN, CPF(PICNN), …, AN]` or without
/// ActNorms, 0–2 blocks.
#[derive(Clone, Debug)]
pub struct PosteriorCase {
    pub latent: usize,
    pub context: usize,
    pub blocks: usize,
    pub width: usize,
    pub depth: usize,
    pub actnorm: bool,
    pub init_seed: u64,
    pub data_seed: u64,
}

/// Latent dimension 1–4, context 1–3, 0–2 blocks, PICNN width 2–4 and depth 1–2.
pub fn posterior_case() -> impl Strategy<Value = PosteriorCase> {
    (
        1usize..=4,
        1usize..=3,
        0usize..=2,
        2usize..=4,
        1usize..=2,
        any::<bool>(),
        0u64..1000,
        0u64..1000,
    )
        .prop_map(
            |(latent, context, blocks, width, depth, actnorm, init_seed, data_seed)| {
                PosteriorCase {
                    latent,
                    context,
                    blocks,
                    width,
                    depth,
                    actnorm,
                    init_seed,
                    data_seed,
                }
            },
        )
}

/// Encoder outputs and noise of one batch: `μ`, `log σ`, context `h`, `ε`.
#[derive(Clone, Debug)]
pub struct PosteriorBatch {
    pub mu: Vec<f64>,
    pub log_sigma: Vec<f64>,
    pub h: Vec<f64>,
    pub eps: Vec<f64>,
}

impl PosteriorCase {
    /// The posterior, initialised on 16 rows of varied contexts (a constant context would give
    /// the PICNN's context ActNorm a zero variance). As `posterior_common::tiny_posterior`,
    /// the context gates `W_cz`, `W_cx` (zero at init in the reference) are drawn N(0, 0.4²)
    /// and `w₁ = 1`, so the context reaches every gate.
    pub fn build(&self) -> AmortizedPosterior {
        let cfg = PosteriorConfig::reference_vae(self.latent, self.context)
            .with_blocks(self.blocks)
            .with_picnn(self.width, self.depth)
            .with_actnorm(self.actnorm)
            .with_init_seed(self.init_seed);
        let q = AmortizedPosterior::new(&VarMap::new(), "q", &cfg, &Device::Cpu).unwrap();
        let mut rng = StdRng::seed_from_u64(self.init_seed ^ 0x5eed);
        for (name, var) in q.named_vars() {
            if name.contains("Wczs") || name.contains("Wcxs") {
                let v: Vec<f64> = (0..var.elem_count())
                    .map(|_| 0.4 * rng.sample::<f64, _>(StandardNormal))
                    .collect();
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
            } else if name.ends_with("w1") {
                var.set(&Tensor::new(&[1.0f64], &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        let b = self.batch(16, self.data_seed ^ 0x1417);
        let [mu, ls, h, eps] = self.tensors(&b);
        q.initialize_from_noise(&mu, &ls, &h, &eps).unwrap();
        q
    }

    /// `n` rows: `μ ~ N(0, 0.5²)`, `log σ ~ U[−0.5, 0.5]`, `h ~ N(0, 1)`, `ε ~ N(0, 1)`.
    pub fn batch(&self, n: usize, seed: u64) -> PosteriorBatch {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut normal = |k: usize, scale: f64| -> Vec<f64> {
            (0..k)
                .map(|_| scale * rng.sample::<f64, _>(StandardNormal))
                .collect()
        };
        let (d, dc) = (self.latent, self.context);
        let mu = normal(n * d, 0.5);
        let h = normal(n * dc, 1.0);
        let eps = normal(n * d, 1.0);
        let log_sigma = (0..n * d).map(|_| rng.random_range(-0.5..0.5)).collect();
        PosteriorBatch {
            mu,
            log_sigma,
            h,
            eps,
        }
    }

    /// `[μ, log σ, h, ε]` as `(n, d)`, `(n, d)`, `(n, d_c)`, `(n, d)` tensors.
    pub fn tensors(&self, b: &PosteriorBatch) -> [Tensor; 4] {
        let (d, dc) = (self.latent, self.context);
        let n = b.mu.len() / d;
        let t = |v: &[f64], m: usize| Tensor::from_vec(v.to_vec(), (n, m), &Device::Cpu).unwrap();
        [t(&b.mu, d), t(&b.log_sigma, d), t(&b.h, dc), t(&b.eps, d)]
    }
}

impl PosteriorBatch {
    /// The rows `idx`, in that order (`d` latent, `dc` context entries a row).
    pub fn rows(&self, idx: &[usize], d: usize, dc: usize) -> PosteriorBatch {
        let pick = |v: &[f64], m: usize| -> Vec<f64> {
            idx.iter()
                .flat_map(|&i| v[i * m..(i + 1) * m].to_vec())
                .collect()
        };
        PosteriorBatch {
            mu: pick(&self.mu, d),
            log_sigma: pick(&self.log_sigma, d),
            h: pick(&self.h, dc),
            eps: pick(&self.eps, d),
        }
    }
}
