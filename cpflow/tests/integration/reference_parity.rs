//! Parity with the authors' PyTorch code on the same weights.
//!
//! The fixtures in `tests/fixtures/reference/*.safetensors` were written by
//! `benchmarks/reference_parity/export_fixtures.py`, which runs the authors' code
//! (github.com/CW-Huang/CP-Flow, commit d01303c) in float64: it builds small models with their
//! builders, trains them a few steps (so the ActNorms are initialised and the weights are away
//! from their initial values), and saves the `state_dict` (`model.*`), the inputs (`in.*`)
//! and their exact outputs (`out.*`). Here each model is rebuilt from a cpflow configuration,
//! the weights are loaded by name ([`cpflow::reference_weights`]) and our exact outputs are
//! compared with theirs. Results and the regeneration command: `docs/results/reference-parity.md`.
//!
//! Tolerances: both sides compute the same f64 formulas, but not in the same order (candle /
//! faer / host kernels versus PyTorch's, Cholesky versus LU for the log-det, our analytic
//! Hessians versus their double backward), so the outputs agree to rounding, not bit for bit.
//! Each comparison allows `|ours − theirs| ≤ tol·(1 + |theirs|)` with `tol = 1e-10`; the
//! measured differences are at most ~1e-14 on that scale (log-dets of the 784-pixel flow:
//! 6e-12 absolute on values of ~3,800, 2e-15 relative), so the bound leaves four orders of
//! magnitude for other compilers and BLAS kernels, while a real difference in the formulas
//! does not fit in it: `parity_detects_a_small_weight_change` moves one weight by 1e-8 and
//! the outputs leave the bound by factors of 40–100.
//!
//! Devices: every test that builds a model runs per device (`test_device!`: `…_cpu`, and
//! `…_cuda` in a `--features cuda` build). The fixtures load on the CPU; their inputs move to
//! the device where they enter the model, the loader puts the weights on the model's device
//! (checked: [`assert_vars_on`]), and our outputs are checked to be on the device before they
//! come back to the host ([`host_on`]). The tolerance is the same on CUDA: cuBLAS's f64 GEMMs
//! and candle's CUDA kernels are IEEE f64 too, so they differ from PyTorch only in summation
//! order, as the CPU kernels do (the log-dets' Cholesky runs on the host on either device).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use cpflow::image::{
    ConvArch, ImageFlow, ImageFlowConfig, ImageModelConfig, MultiscaleConfig, bits_per_dim,
};
use cpflow::posterior::{AmortizedPosterior, PosteriorConfig};
use cpflow::reference_weights::{KeyMapping, load_reference_state_dict};
use cpflow::{FloatType, Flow, FlowConfig, PotentialConfig};
use icnn::{
    ActivationKind, ConvIcnn2Config, ConvIcnn3Config, ConvIcnnConfig, DenseIcnn2Config,
    Icnn2Config, Icnn3Config, ImageShape,
};

/// Relative-or-absolute tolerance of every comparison (module docs).
pub(crate) const TOL: f64 = 1e-10;

/// One fixture file: tensors and the builder settings recorded by the script.
pub(crate) struct Fixture {
    pub(crate) name: &'static str,
    pub(crate) tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

impl Fixture {
    pub(crate) fn load(name: &'static str) -> Fixture {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reference")
            .join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap_or_default();
        Fixture {
            name,
            tensors,
            meta,
        }
    }

    pub(crate) fn tensor(&self, key: &str) -> Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor {key}", self.name))
            .clone()
    }

    /// [`Fixture::tensor`] moved to `dev` (an input entering a model on `dev`).
    pub(crate) fn tensor_on(&self, key: &str, dev: &Device) -> Tensor {
        self.tensor(key).to_device(dev).unwrap()
    }

    /// The values of `key`, as f64 whatever its dtype.
    pub(crate) fn values(&self, key: &str) -> Vec<f64> {
        host(&self.tensor(key))
    }

    pub(crate) fn meta(&self, key: &str) -> &str {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("{}: no metadata {key}", self.name))
    }

    pub(crate) fn meta_usize(&self, key: &str) -> usize {
        self.meta(key).parse().unwrap()
    }

    /// The reference `state_dict` (the `model.` tensors, prefix removed).
    pub(crate) fn state_dict(&self) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("model.").map(|k| (k.to_string(), v.clone())))
            .collect()
    }
}

/// Host values as f64 (the device tests' helper; other modules import it from here).
pub(crate) use crate::device_common::host;

/// The values of `t`, computed by a model on `dev`, as f64 on the host; panics (naming `what`)
/// when `t` is not on `dev`: a CUDA run whose outputs came back on the CPU would not have
/// tested the CUDA path.
pub(crate) fn host_on(dev: &Device, what: &str, t: &Tensor) -> Vec<f64> {
    assert!(
        t.device().same_device(dev),
        "{what} is on {:?}, the model on {:?}",
        t.device().location(),
        dev.location()
    );
    host(t)
}

/// Every variable of a model (`named_vars()`) lives on `dev` after loading a reference
/// `state_dict` (which the fixtures hold on the CPU).
pub(crate) fn assert_vars_on(dev: &Device, vars: &[(String, Var)]) {
    let elsewhere: Vec<&str> = vars
        .iter()
        .filter(|(_, v)| !v.device().same_device(dev))
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(
        elsewhere.is_empty(),
        "variables not on {:?}: {elsewhere:?}",
        dev.location()
    );
}

/// Largest `|ours − theirs|`, largest `|ours − theirs|/|theirs|`, and largest
/// `|ours − theirs|/(1 + |theirs|)` (the tested quantity).
pub(crate) fn differences(ours: &[f64], theirs: &[f64]) -> (f64, f64, f64) {
    assert_eq!(ours.len(), theirs.len(), "lengths differ");
    let (mut max_abs, mut max_rel, mut worst) = (0.0f64, 0.0f64, 0.0f64);
    for (a, b) in ours.iter().zip(theirs) {
        let d = (a - b).abs();
        max_abs = max_abs.max(d);
        max_rel = max_rel.max(d / b.abs().max(f64::MIN_POSITIVE));
        worst = worst.max(d / (1.0 + b.abs()));
    }
    (max_abs, max_rel, worst)
}

/// Assert `|ours − theirs| ≤ TOL·(1 + |theirs|)` element-wise; print the largest absolute and
/// relative differences (run with `--nocapture` for the table of
/// `docs/results/reference-parity.md`).
fn compare(fixture: &str, what: &str, ours: &[f64], theirs: &[f64]) {
    let (max_abs, max_rel, worst) = differences(ours, theirs);
    eprintln!("parity {fixture:<28} {what:<8} max abs {max_abs:.3e}  max rel {max_rel:.3e}");
    assert!(
        worst <= TOL,
        "{fixture} {what}: |ours − theirs|/(1 + |theirs|) reaches {worst:.3e} (max abs \
         {max_abs:.3e}) > {TOL:e}"
    );
}

// ------------------------------------------------------------------------------------------
// Tabular flows (train_tabular.py)

/// The tabular flow of fixture `name` on `dev` with the reference weights loaded.
fn tabular_flow(
    fx: &Fixture,
    dev: &Device,
    potential: impl Fn(usize, usize, usize) -> PotentialConfig,
) -> Flow {
    let (d, width, depth) = (
        fx.meta_usize("dim"),
        fx.meta_usize("dimh"),
        fx.meta_usize("nhidden"),
    );
    let cfg = FlowConfig::tabular(d, fx.meta_usize("nblocks"), potential(d, width, depth))
        .with_float(FloatType::F64);
    let flow = Flow::new(cfg, dev).unwrap();
    let report = load_reference_state_dict(
        &flow.named_vars(),
        &fx.state_dict(),
        &KeyMapping::for_flow(flow.config()),
    )
    .unwrap();
    assert_eq!(report.loaded, fx.state_dict().len());
    assert_vars_on(dev, &flow.named_vars());
    flow
}

fn tabular_parity(
    name: &'static str,
    dev: &Device,
    potential: impl Fn(usize, usize, usize) -> PotentialConfig,
) {
    let fx = Fixture::load(name);
    let flow = tabular_flow(&fx, dev, potential);
    let x = fx.tensor_on("in.x", dev);
    let (z, logdet) = flow.transform(&x).unwrap();
    let logp = flow.log_prob_exact(&x).unwrap();
    compare(name, "z", &host_on(dev, "z", &z), &fx.values("out.z"));
    let ld = host_on(dev, "logdet", &logdet);
    compare(name, "logdet", &ld, &fx.values("out.logdet"));
    let lp = host_on(dev, "log p", &logp);
    compare(name, "log p", &lp, &fx.values("out.logp"));
}

/// The ICNN settings the fixture's model was built with: activation, zero shift, symmetric
/// first activation.
fn icnn_settings(fx: &Fixture) -> (ActivationKind, bool, bool) {
    (
        activation(fx.meta("softplus_type")),
        fx.meta("zero_softplus") == "1",
        fx.meta("symm_act_first") == "1",
    )
}

fn activation(fx_value: &str) -> ActivationKind {
    match fx_value {
        "softplus" => ActivationKind::Softplus,
        "gaussian_softplus" => ActivationKind::GaussianSoftplus,
        other => panic!("no cpflow activation for the reference's {other}"),
    }
}

fn tabular_icnn2_matches_reference(dev: &Device) {
    let fx = Fixture::load("tabular_icnn2");
    assert_eq!(fx.meta("arch"), "icnn2");
    let (act, zero, symm) = icnn_settings(&fx);
    tabular_parity("tabular_icnn2", dev, |dim, width, depth| {
        PotentialConfig::Icnn2(Icnn2Config {
            dim,
            width,
            depth,
            activation: act,
            zero_shift: zero,
            symm_act_first: symm,
        })
    });
}
test_device!(
    tabular_icnn2_matches_reference,
    tabular_icnn2_matches_reference_cpu,
    tabular_icnn2_matches_reference_cuda
);

/// The comparison can fail: with one reference weight changed by one part in 10⁸ (the inner
/// ActNorm scale of the first block's first layer), `z` and `log p` move out of `TOL` by
/// factors of ~100 and ~40 (measured 1.1e-8 and 3.9e-9).
fn parity_detects_a_small_weight_change(dev: &Device) {
    let mut fx = Fixture::load("tabular_icnn2");
    let key = "model.flows.1.icnn.actnorm0.logs";
    let t = fx.tensor(key);
    fx.tensors.insert(key.into(), (t + 1e-8).unwrap());
    let flow = tabular_flow(&fx, dev, |dim, width, depth| {
        PotentialConfig::Icnn2(Icnn2Config {
            dim,
            width,
            depth,
            ..Icnn2Config::default()
        })
    });
    let x = fx.tensor_on("in.x", dev);
    let (z, _) = flow.transform(&x).unwrap();
    let logp = flow.log_prob_exact(&x).unwrap();
    let (_, _, worst_z) = differences(&host_on(dev, "z", &z), &fx.values("out.z"));
    let (_, _, worst_lp) = differences(&host_on(dev, "log p", &logp), &fx.values("out.logp"));
    assert!(
        worst_z > 10.0 * TOL && worst_lp > 10.0 * TOL,
        "{worst_z:e} {worst_lp:e}"
    );
}
test_device!(
    parity_detects_a_small_weight_change,
    parity_detects_a_small_weight_change_cpu,
    parity_detects_a_small_weight_change_cuda
);

fn tabular_icnn3_gaussian_softplus_matches_reference(dev: &Device) {
    let fx = Fixture::load("tabular_icnn3");
    assert_eq!(fx.meta("arch"), "icnn3");
    let (act, zero, symm) = icnn_settings(&fx);
    tabular_parity("tabular_icnn3", dev, |dim, width, depth| {
        PotentialConfig::Icnn3(Icnn3Config {
            dim,
            width,
            depth,
            activation: act,
            zero_shift: zero,
            symm_act_first: symm,
        })
    });
}
test_device!(
    tabular_icnn3_gaussian_softplus_matches_reference,
    tabular_icnn3_gaussian_softplus_matches_reference_cpu,
    tabular_icnn3_gaussian_softplus_matches_reference_cuda
);

fn tabular_denseicnn2_matches_reference(dev: &Device) {
    let fx = Fixture::load("tabular_denseicnn2");
    assert_eq!(fx.meta("arch"), "denseicnn2");
    let (act, zero, symm) = icnn_settings(&fx);
    tabular_parity("tabular_denseicnn2", dev, |dim, width, depth| {
        PotentialConfig::DenseIcnn2(DenseIcnn2Config {
            dim,
            width,
            depth,
            activation: act,
            zero_shift: zero,
            symm_act_first: symm,
        })
    });
}
test_device!(
    tabular_denseicnn2_matches_reference,
    tabular_denseicnn2_matches_reference_cpu,
    tabular_denseicnn2_matches_reference_cuda
);

// ------------------------------------------------------------------------------------------
// Image flows (train_img.py)

fn image_parity(name: &'static str, dev: &Device) {
    let fx = Fixture::load(name);
    let image = ImageShape::new(
        fx.meta_usize("channels"),
        fx.meta_usize("height"),
        fx.meta_usize("width"),
    );
    let (width, depth) = (fx.meta_usize("dimh"), fx.meta_usize("num_hidden_layers"));
    // train_img.py:cpflow_block_fn: --icnn 1/2/3 (ConvICNN3 with its fixed softplus and
    // zero shift), and the fc_end block ICNN2(D, dimh, num_hidden_layers) with its defaults.
    let potential = match fx.meta_usize("icnn") {
        1 => PotentialConfig::ConvIcnn(ConvIcnnConfig {
            image,
            width,
            depth,
            num_pooling: 0,
        }),
        2 => PotentialConfig::ConvIcnn2(ConvIcnn2Config {
            image,
            width,
            depth,
        }),
        3 => PotentialConfig::ConvIcnn3(ConvIcnn3Config {
            image,
            width,
            depth,
            activation: ActivationKind::Softplus,
            zero_shift: true,
        }),
        v => panic!("--icnn {v}"),
    };
    let fc_end = (fx.meta("fc_end") == "1").then(|| {
        PotentialConfig::Icnn2(Icnn2Config {
            dim: image.dim(),
            width,
            depth,
            ..Icnn2Config::default()
        })
    });
    let ms = MultiscaleConfig {
        image,
        nblocks: fx
            .meta("nblocks")
            .split('-')
            .map(|n| n.parse().unwrap())
            .collect(),
        logit_alpha: Some(fx.meta("logit_alpha").parse().unwrap()),
        actnorm: fx.meta("actnorm") == "1",
        factor_out: fx.meta("factor_out") == "1",
        potential,
        fc_end,
        trainable_w0: true,
        float: FloatType::F64,
        init_seed: 0,
    };
    let cfg = ImageFlowConfig::multiscale(&ms).unwrap();
    assert_eq!(cfg.num_blocks(), fx.meta_usize("num_blocks"));
    // The `[model]` table of a `cpflow train` image config (the CLI's and import-reference's
    // route) with the same flags builds the same flow.
    let model = ImageModelConfig {
        arch: [ConvArch::ConvIcnn, ConvArch::ConvIcnn2, ConvArch::ConvIcnn3]
            [fx.meta_usize("icnn") - 1],
        width,
        depth,
        nblocks: ms.nblocks.clone(),
        actnorm: ms.actnorm,
        factor_out: ms.factor_out,
        fc_end: ms.fc_end.is_some(),
        logit_alpha: ms.logit_alpha,
        float: FloatType::F64,
        ..ImageModelConfig::default()
    };
    assert_eq!(model.flow_config(image, f64::NAN).unwrap(), cfg, "{name}");
    let flow = ImageFlow::new(cfg, dev).unwrap();
    let mapping = KeyMapping::for_multiscale(flow.config()).unwrap();
    load_reference_state_dict(&flow.named_vars(), &fx.state_dict(), &mapping).unwrap();
    assert_vars_on(dev, &flow.named_vars());
    let x = fx.tensor_on("in.x", dev);
    let (z, logdet) = flow.transform(&x).unwrap();
    let logp = flow.log_prob_exact(&x).unwrap();
    compare(name, "z", &host_on(dev, "z", &z), &fx.values("out.z"));
    let ld = host_on(dev, "logdet", &logdet);
    compare(name, "logdet", &ld, &fx.values("out.logdet"));
    let lp = host_on(dev, "log p", &logp);
    compare(name, "log p", &lp, &fx.values("out.logp"));
    // train_img.py:compute_loss: bpd = −mean(log p(x) − D·log 256)/(D·ln 2), the mean over
    // the batch of our per-image bits_per_dim.
    let bpd = lp
        .iter()
        .map(|&l| bits_per_dim(l, image.dim()))
        .sum::<f64>()
        / lp.len() as f64;
    compare(name, "bpd", &[bpd], &fx.values("out.bpd"));
}

fn image_convicnn_mnist_matches_reference(dev: &Device) {
    image_parity("image_convicnn", dev);
}
test_device!(
    image_convicnn_mnist_matches_reference,
    image_convicnn_mnist_matches_reference_cpu,
    image_convicnn_mnist_matches_reference_cuda
);

fn image_convicnn2_factor_out_matches_reference(dev: &Device) {
    image_parity("image_convicnn2_factor_out", dev);
}
test_device!(
    image_convicnn2_factor_out_matches_reference,
    image_convicnn2_factor_out_matches_reference_cpu,
    image_convicnn2_factor_out_matches_reference_cuda
);

fn image_convicnn3_fc_end_matches_reference(dev: &Device) {
    image_parity("image_convicnn3_fc_end", dev);
}
test_device!(
    image_convicnn3_fc_end_matches_reference,
    image_convicnn3_fc_end_matches_reference_cpu,
    image_convicnn3_fc_end_matches_reference_cuda
);

// ------------------------------------------------------------------------------------------
// VAE posterior (train_vae.py -f cpflow)

fn vae_posterior_matches_reference(dev: &Device) {
    let fx = Fixture::load("vae_posterior");
    assert_eq!(fx.meta("icnn_type"), "PICNN");
    let mut cfg =
        PosteriorConfig::reference_vae(fx.meta_usize("z_size"), fx.meta_usize("context_dim"))
            .with_blocks(fx.meta_usize("num_flows"))
            .with_picnn(fx.meta_usize("icnn_dimh"), fx.meta_usize("num_icnn_layers"))
            .with_actnorm(fx.meta("actnorm") == "1")
            .with_float(FloatType::F64);
    cfg.activation = activation(fx.meta("softplus_type"));
    cfg.zero_shift = fx.meta("zero_softplus") == "1";
    cfg.symm_act_first = fx.meta("symm_act_first") == "1";
    let vm = VarMap::new();
    let q = AmortizedPosterior::new(&vm, "posterior", &cfg, dev).unwrap();
    let mapping = KeyMapping::for_vae_posterior(&cfg, "flow.", "posterior").unwrap();
    load_reference_state_dict(&q.named_vars(), &fx.state_dict(), &mapping).unwrap();
    assert_vars_on(dev, &q.named_vars());
    // z₀ = μ + σ ⊙ ε with σ = √var (their reparameterize); log σ = ½ log var.
    let log_sigma = (fx.tensor_on("in.var", dev).log().unwrap() * 0.5).unwrap();
    let s = q
        .transform_noise_exact(
            &fx.tensor_on("in.mu", dev),
            &log_sigma,
            &fx.tensor_on("in.context", dev),
            &fx.tensor_on("in.eps", dev),
        )
        .unwrap();
    let name = "vae_posterior";
    compare(name, "z0", &host_on(dev, "z0", &s.z0), &fx.values("in.z0"));
    compare(name, "z", &host_on(dev, "z", &s.z), &fx.values("out.z"));
    let ld = host_on(dev, "logdet", &s.log_det);
    compare(name, "logdet", &ld, &fx.values("out.logdet"));
    let lq = host_on(dev, "log q", &s.log_q);
    compare(name, "log q", &lq, &fx.values("out.log_q"));
}
test_device!(
    vae_posterior_matches_reference,
    vae_posterior_matches_reference_cpu,
    vae_posterior_matches_reference_cuda
);
