//! `Flow::initialize` / `initialize_given` are all or nothing: when a later layer fails
//! (here the last ActNorm, whose input overflows, or a block whose forward pass fails) after
//! earlier layers were initialised, every variable — weights, ActNorm statistics, the
//! `initialized` flags — is bit for bit what it was before the call. Before, the earlier
//! layers kept their new statistics and flags: a fresh flow was half initialised, an
//! initialised one half re-initialised, and the error did not say so. The same holds for
//! `ImageFlow::initialize` and `AmortizedPosterior::initialize_from_noise`.

use std::collections::BTreeMap;

use crate::flow_common::*;
use candle_core::{DType, Device, Tensor, Var};
use cpflow::{CpflowError, CustomPotentialConfig, FloatType, Flow, FlowConfig, PotentialConfig};
use icnn::{ConvexPotential, IcnnError, Linearization};

/// Every variable's name and the bits of its values (f64), in name order.
fn snapshot(flow: &Flow) -> Vec<(String, Vec<u64>)> {
    snapshot_vars(flow.named_vars())
}

/// [`snapshot`] of any model's variables.
fn snapshot_vars(vars: Vec<(String, Var)>) -> Vec<(String, Vec<u64>)> {
    vars.into_iter()
        .map(|(name, var)| {
            let bits = var
                .as_tensor()
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
                .into_iter()
                .map(f64::to_bits)
                .collect();
            (name, bits)
        })
        .collect()
}

/// The names of the variables whose bits differ between two snapshots.
fn changed(a: &[(String, Vec<u64>)], b: &[(String, Vec<u64>)]) -> Vec<String> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .filter(|((na, va), (nb, vb))| {
            assert_eq!(na, nb);
            va != vb
        })
        .map(|((n, _), _)| n.clone())
        .collect()
}

fn var(flow: &Flow, name: &str) -> Var {
    flow.named_vars()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no variable {name}"))
}

/// Sets the `(1,)` variable `name` to `value` (f64 flows).
fn set_scalar(flow: &Flow, name: &str, value: f64) {
    var(flow, name)
        .set(&Tensor::new(&[value], &Device::Cpu).unwrap())
        .unwrap();
}

/// The `initialized` flags that are set.
fn set_flags(flow: &Flow) -> Vec<String> {
    snapshot(flow)
        .into_iter()
        .filter(|(n, bits)| n.ends_with("initialized") && f64::from_bits(bits[0]) != 0.0)
        .map(|(n, _)| n)
        .collect()
}

/// `[AN, CPF, AN, CPF, AN]` (f64) on an Icnn3, or on a PICNN with 2 context features.
fn flow(conditional: bool) -> Flow {
    let pot = if conditional {
        PotentialConfig::Picnn(icnn::PicnnConfig {
            dim: 2,
            context_dim: 2,
            width: 6,
            depth: 2,
            ..Default::default()
        })
    } else {
        icnn3(2, 6, 2)
    };
    let cfg = FlowConfig::tabular(2, 2, pot)
        .with_float(FloatType::F64)
        .with_init_seed(3);
    Flow::new(cfg, &Device::Cpu).unwrap()
}

fn initialize(flow: &Flow, x: &Tensor, ctx: Option<&Tensor>) -> cpflow::Result<()> {
    match ctx {
        Some(c) => flow.initialize_given(x, c),
        None => flow.initialize(x),
    }
}

/// The last block's `w₁` set to 1e200 makes its output `sp(w₁)∇F + sp(w₀)x` about 1e200 per
/// unit of gradient: its variance (~1e400) overflows f64, which the last ActNorm (layer 4)
/// refuses — after layers 0–3 (two ActNorms, two ICNNs' inner ActNorms) were initialised.
/// A fresh flow stays uninitialised with every value as built, for `initialize` and for
/// `initialize_given`. On the old code layers 0–3 kept their new values and flags.
#[test]
fn a_fresh_flow_whose_last_layer_fails_stays_as_built() {
    for conditional in [false, true] {
        let flow = flow(conditional);
        set_scalar(&flow, "layers.3.w1", 1e200);
        let before = snapshot(&flow);
        let (x, c) = (data(16, 2, 1), data(16, 2, 2));
        let ctx = conditional.then_some(&c);
        let err = initialize(&flow, &x, ctx).unwrap_err();
        assert!(
            matches!(&err, CpflowError::InvalidInput(m) if m.contains("overflows F64")),
            "{err}"
        );
        assert_eq!(changed(&before, &snapshot(&flow)), Vec::<String>::new());
        assert!(!flow.is_initialized().unwrap());
        assert_eq!(set_flags(&flow), Vec::<String>::new());
        // The failure is the data's (through the bad weight), not a broken flow: with an
        // ordinary w₁ the same batch initialises every layer.
        set_scalar(&flow, "layers.3.w1", 0.0);
        initialize(&flow, &x, ctx).unwrap();
        assert!(flow.is_initialized().unwrap());
        let flags = set_flags(&flow);
        assert!(
            flags.contains(&"layers.0.initialized".to_string())
                && flags.iter().any(|f| f.starts_with("layers.1.icnn")),
            "{flags:?}"
        );
    }
}

/// An initialised flow whose re-initialisation fails at its last layer keeps its first
/// initialisation: every variable bit for bit, and so the same log-densities. On the old
/// code layers 0–3 held the statistics of the second batch.
#[test]
fn a_failed_re_initialisation_keeps_the_previous_one() {
    for conditional in [false, true] {
        let flow = flow(conditional);
        let (x, c) = (data(16, 2, 1), data(16, 2, 2));
        let ctx = conditional.then_some(&c);
        initialize(&flow, &x, ctx).unwrap();
        let log_prob = |f: &Flow| {
            match ctx {
                Some(c) => f.log_prob_exact_given(&x, c),
                None => f.log_prob_exact(&x),
            }
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
        };
        let lp = log_prob(&flow);
        set_scalar(&flow, "layers.3.w1", 1e200);
        let before = snapshot(&flow);
        // Another batch (other statistics in every layer), scaled so that layers 0–3 do
        // change when they are initialised from it.
        let (x2, c2) = ((data(24, 2, 7) * 3.0).unwrap(), data(24, 2, 8));
        let err = initialize(&flow, &x2, conditional.then_some(&c2)).unwrap_err();
        assert!(matches!(err, CpflowError::InvalidInput(_)), "{err}");
        assert_eq!(changed(&before, &snapshot(&flow)), Vec::<String>::new());
        assert!(flow.is_initialized().unwrap());
        set_scalar(&flow, "layers.3.w1", 0.0);
        assert_eq!(log_prob(&flow), lp);
    }
}

/// A custom potential whose every evaluation fails: the block's forward pass (layer 1)
/// fails after the first ActNorm was initialised.
struct Refusing {
    dim: usize,
}

impl ConvexPotential for Refusing {
    fn potential(&self, _x: &Tensor) -> icnn::Result<Tensor> {
        Err(IcnnError::Shape(
            "this test's network refuses every batch".into(),
        ))
    }
    fn linearize(&self, _x: &Tensor) -> icnn::Result<Linearization> {
        Err(IcnnError::Shape(
            "this test's network refuses every batch".into(),
        ))
    }
    fn dim(&self) -> usize {
        self.dim
    }
}

/// A block that fails in the middle of the initialisation (its potential's error, after the
/// first ActNorm was initialised) leaves the flow uninitialised with the values it was built
/// with. On the old code the first ActNorm kept its statistics and flag.
#[test]
fn a_failing_block_leaves_the_earlier_actnorm_as_it_was() {
    cpflow::register_potential("flow-initialize-atomic-refusing", |_vb, cfg, _rng| {
        Ok(Box::new(Refusing { dim: cfg.dim }))
    });
    let pot = PotentialConfig::Custom(CustomPotentialConfig {
        name: "flow-initialize-atomic-refusing".into(),
        dim: 2,
        settings: BTreeMap::new(),
    });
    let cfg = FlowConfig::tabular(2, 1, pot).with_float(FloatType::F64);
    let flow = Flow::new(cfg, &Device::Cpu).unwrap();
    let before = snapshot(&flow);
    let err = flow.initialize(&data(8, 2, 1)).unwrap_err();
    assert!(err.to_string().contains("refuses every batch"), "{err}");
    assert_eq!(changed(&before, &snapshot(&flow)), Vec::<String>::new());
    assert!(!flow.is_initialized().unwrap());
}

/// The first `w₁` (in name order) of a model set to 1e200: that block's output overflows the
/// variance of the ActNorm after it, once the layers before it were initialised.
fn blow_up_first_w1(vars: &[(String, Var)]) -> String {
    let (name, var) = vars
        .iter()
        .find(|(n, _)| n.ends_with(".w1"))
        .expect("a CP-Flow block");
    var.set(&Tensor::new(&[1e200f64], &Device::Cpu).unwrap())
        .unwrap();
    name.clone()
}

/// A multi-scale image flow (logit, ActNorms, convolutional blocks, squeeze, factor-out on
/// 2×4×4) whose first block overflows: `ImageFlow::initialize` fails and every variable is
/// as built. On the old code the ActNorm before that block kept its statistics and flag.
#[test]
fn an_image_flow_whose_initialisation_fails_stays_as_built() {
    use cpflow::image::{ImageFlow, ImageFlowConfig, MultiscaleConfig};
    let ms = MultiscaleConfig {
        image: icnn::ImageShape::new(2, 4, 4),
        nblocks: vec![1, 2],
        logit_alpha: Some(0.05),
        factor_out: true,
        potential: PotentialConfig::ConvIcnn(icnn::ConvIcnnConfig {
            width: 4,
            depth: 2,
            ..Default::default()
        }),
        float: FloatType::F64,
        init_seed: 3,
        ..MultiscaleConfig::mnist()
    };
    let flow = ImageFlow::new(ImageFlowConfig::multiscale(&ms).unwrap(), &Device::Cpu).unwrap();
    let w1 = blow_up_first_w1(&flow.named_vars());
    let before = snapshot_vars(flow.named_vars());
    // Pixels in (0, 1), away from the logit's ends.
    let x = ((data(6, 32, 4).tanh().unwrap() * 0.4).unwrap() + 0.5).unwrap();
    let err = flow.initialize(&x).unwrap_err();
    assert!(matches!(err, CpflowError::InvalidInput(_)), "{err}");
    assert_eq!(
        changed(&before, &snapshot_vars(flow.named_vars())),
        Vec::<String>::new()
    );
    assert!(!flow.is_initialized().unwrap());
    // With an ordinary w₁ the same images initialise the flow.
    let var = flow
        .named_vars()
        .into_iter()
        .find(|(n, _)| *n == w1)
        .unwrap()
        .1;
    var.set(&Tensor::new(&[0.0f64], &Device::Cpu).unwrap())
        .unwrap();
    flow.initialize(&x).unwrap();
    assert!(flow.is_initialized().unwrap());
}

/// The amortised posterior `[AN, CPF, AN, CPF, AN]` whose first block overflows:
/// `initialize_from_noise` fails and every variable is as built. On the old code the first
/// ActNorm kept its statistics and flag.
#[test]
fn a_posterior_whose_initialisation_fails_stays_as_built() {
    use crate::posterior_common::{normal, tiny_posterior};
    let (_vm, q) = tiny_posterior(3, 4, 2, 11);
    blow_up_first_w1(&q.named_vars());
    let before = snapshot_vars(q.named_vars());
    let (mu, ls, h, eps) = (
        normal(8, 3, 1.0, 1),
        normal(8, 3, 0.1, 2),
        normal(8, 4, 1.0, 3),
        normal(8, 3, 1.0, 4),
    );
    let err = q.initialize_from_noise(&mu, &ls, &h, &eps).unwrap_err();
    assert!(matches!(err, CpflowError::InvalidInput(_)), "{err}");
    assert_eq!(
        changed(&before, &snapshot_vars(q.named_vars())),
        Vec::<String>::new()
    );
}
