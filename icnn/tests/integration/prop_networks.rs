//! Random small networks of every dense architecture for the property tests (f64, CPU), the
//! fixed-seed proptest configuration, and host-side helpers.
#![allow(dead_code)]

use crate::common::{perturb, randn};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use icnn::{
    ActivationKind, ConditionalConvexPotential, ConvexPotential, DenseIcnn2, DenseIcnn2Config,
    Icnn, Icnn2, Icnn2Config, Icnn3, Icnn3Config, IcnnConfig, Linearization, Picnn, PicnnConfig,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Unit roundoff of `f64`.
pub const EPS: f64 = f64::EPSILON / 2.0;

/// A fixed-seed configuration with `cases` cases that never writes `proptest-regressions/`
/// files (no failure persistence) and keeps shrinking short.
pub fn fixed_config(cases: u32, seed: u64) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Icnn,
    Icnn2,
    Icnn3,
    DenseIcnn2,
    Picnn,
}

/// What a random network is built from.
#[derive(Clone, Debug)]
pub struct NetSpec {
    pub arch: Arch,
    pub dim: usize,
    /// Requested width; `Icnn3` (which halves it) rounds it up to an even number.
    pub width: usize,
    pub depth: usize,
    pub gaussian: bool,
    pub zero_shift: bool,
    pub symm_act_first: bool,
    pub context_dim: usize,
    pub seed: u64,
}

/// Dims 1–6, widths 1–8, depths 1–4, every architecture and option, context dims 1–3.
pub fn net_spec() -> impl Strategy<Value = NetSpec> {
    (
        prop_oneof![
            Just(Arch::Icnn),
            Just(Arch::Icnn2),
            Just(Arch::Icnn3),
            Just(Arch::DenseIcnn2),
            Just(Arch::Picnn),
        ],
        1usize..=6,
        1usize..=8,
        1usize..=4,
        any::<(bool, bool, bool)>(),
        1usize..=3,
        any::<u64>(),
    )
        .prop_map(
            |(
                arch,
                dim,
                width,
                depth,
                (gaussian, zero_shift, symm_act_first),
                context_dim,
                seed,
            )| {
                NetSpec {
                    arch,
                    dim,
                    width,
                    depth,
                    gaussian,
                    zero_shift,
                    symm_act_first,
                    context_dim,
                    seed,
                }
            },
        )
}

/// A built network: a convex potential, or a PICNN that needs a context per row.
pub enum Net {
    Plain(Box<dyn ConvexPotential>),
    Conditional(Box<Picnn>),
}

/// A PICNN at fixed context rows, as a convex potential in `x`.
pub struct AtContext<'a> {
    pub net: &'a Picnn,
    pub context: Tensor,
}

impl ConvexPotential for AtContext<'_> {
    fn potential(&self, x: &Tensor) -> icnn::Result<Tensor> {
        self.net.potential_with_context(x, &self.context)
    }
    fn linearize(&self, x: &Tensor) -> icnn::Result<Linearization> {
        self.net.linearize_with_context(x, &self.context)
    }
    fn dim(&self) -> usize {
        ConditionalConvexPotential::dim(self.net)
    }
}

impl Net {
    /// The potential in `x` for rows with contexts `c` (ignored by plain networks).
    pub fn at<'a>(&'a self, c: &Tensor) -> Box<dyn ConvexPotential + 'a> {
        match self {
            Net::Plain(n) => Box::new(Borrowed(n.as_ref())),
            Net::Conditional(p) => Box::new(AtContext {
                net: p,
                context: c.clone(),
            }),
        }
    }
}

struct Borrowed<'a>(&'a dyn ConvexPotential);

impl ConvexPotential for Borrowed<'_> {
    fn potential(&self, x: &Tensor) -> icnn::Result<Tensor> {
        self.0.potential(x)
    }
    fn linearize(&self, x: &Tensor) -> icnn::Result<Linearization> {
        self.0.linearize(x)
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn value_and_gradient(&self, x: &Tensor) -> icnn::Result<(Tensor, Tensor)> {
        self.0.value_and_gradient(x)
    }
    fn host_linearize(&self, x: &Tensor) -> icnn::Result<Option<icnn::HostLinearization>> {
        self.0.host_linearize(x)
    }
}

/// Builds the network of `spec`, initialises its ActNorms on a standard-normal batch of 16
/// rows (and contexts) and perturbs every parameter by `N(0, 0.3²)` so that no test runs at
/// the initialisation's special point (zero gates, unit statistics). Also returns the
/// generator, for the case's further random data.
pub fn build(spec: &NetSpec) -> (Net, StdRng) {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu).pp("net");
    let activation = if spec.gaussian {
        ActivationKind::GaussianSoftplus
    } else {
        ActivationKind::Softplus
    };
    let (dim, width, depth) = (spec.dim, spec.width, spec.depth);
    let (zero_shift, symm_act_first) = (spec.zero_shift, spec.symm_act_first);
    let net = match spec.arch {
        Arch::Icnn => {
            let cfg = IcnnConfig { dim, width, depth };
            Net::Plain(Box::new(Icnn::new(vb, &cfg, &mut rng).unwrap()))
        }
        Arch::Icnn2 => {
            let cfg = Icnn2Config {
                dim,
                width,
                depth,
                activation,
                zero_shift,
                symm_act_first,
            };
            Net::Plain(Box::new(Icnn2::new(vb, &cfg, &mut rng).unwrap()))
        }
        Arch::Icnn3 => {
            let cfg = Icnn3Config {
                dim,
                width: 2 * width.div_ceil(2),
                depth,
                activation,
                zero_shift,
                symm_act_first,
            };
            Net::Plain(Box::new(Icnn3::new(vb, &cfg, &mut rng).unwrap()))
        }
        Arch::DenseIcnn2 => {
            let cfg = DenseIcnn2Config {
                dim,
                width,
                depth,
                activation,
                zero_shift,
                symm_act_first,
            };
            Net::Plain(Box::new(DenseIcnn2::new(vb, &cfg, &mut rng).unwrap()))
        }
        Arch::Picnn => {
            let cfg = PicnnConfig {
                dim,
                context_dim: spec.context_dim,
                width,
                depth,
                activation,
                zero_shift,
                symm_act_first,
            };
            Net::Conditional(Box::new(Picnn::new(vb, &cfg, &mut rng).unwrap()))
        }
    };
    let x0 = randn(&mut rng, (16, dim), 1.0);
    let c0 = randn(&mut rng, (16, spec.context_dim), 1.0);
    net.at(&c0).potential(&x0).unwrap();
    perturb(&varmap, &mut rng, 0.3);
    // The variables live on in the network (candle's `Var`s are shared handles).
    drop(varmap);
    (net, rng)
}

/// Host copy of a `(B, ...)` tensor, flattened.
pub fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// A `(B, d)` batch whose rows are `10^u_b·s·N(0, I)` with `u_b ∈ [−½, ½]`.
pub fn scaled_rows(rng: &mut StdRng, b: usize, d: usize, s: f64) -> Tensor {
    use rand::Rng;
    let rows: Vec<Tensor> = (0..b)
        .map(|_| {
            let row_scale = s * 10f64.powf(rng.random_range(-0.5..=0.5));
            randn(rng, (1, d), row_scale)
        })
        .collect();
    Tensor::cat(&rows, 0).unwrap()
}
