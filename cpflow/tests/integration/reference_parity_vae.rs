//! Whole-VAE parity with the authors' PyTorch code on Frey Faces: encoder, posterior (Gaussian
//! = their `-f no_flow`, CP-Flow = `-f cpflow`), decoder with its 256-way categorical
//! likelihood, and the single-sample −ELBO with β = 1, on the same weights and noise.
//!
//! The fixtures `tests/fixtures/reference/vae_full_{gaussian,cpflow}.safetensors` were
//! written by `benchmarks/reference_parity/export_vae_full.py`, which runs their
//! `train_vae.py` model (`VAE.VAE` / `VAE.CPFVAE`, float64, defaults: z = 64, 4 blocks of
//! PICNN 64 × 5) in eval mode with the exact log-det, on four images of their Frey Faces test
//! split, with every weight set by a formula (the model has 3.2 M parameters; the fixture
//! holds only the formula's constants, the key names and shapes, the inputs and their
//! outputs). Here the same weights are built by name, loaded into our [`Vae`] with
//! [`load_reference_vae_state_dict`], and every quantity is compared.
//!
//! Tolerance: `|ours − theirs| ≤ TOL·(1 + |theirs|)`, `TOL = 1e-10`, as in
//! `reference_parity.rs`: both sides evaluate the same f64 formulas in different orders
//! (candle's im2col convolutions and our fused 5×5∘1×1 decoder head versus PyTorch's
//! convolutions; our analytic PICNN Hessians and Cholesky versus their double backward and
//! LU), so the results agree to rounding: measured ≤ 9e-14 absolute on μ, σ², h, z₀, z_K
//! and ≤ 7e-15 relative on the log-densities, the KL and the −ELBO
//! (`docs/results/reference-parity.md`). A change in a formula does not fit in the bound:
//! `vae_parity_detects_a_small_weight_change` moves weights by one part in 10⁸ and the
//! comparisons fail by factors of 13–384.
//!
//! Devices: the tests that build a VAE run per device (`test_device!`), as in
//! `reference_parity.rs`: the state_dict is built on the CPU and the loader puts it on the
//! VAE's device (checked), the fixture's inputs move to the device, and every output is
//! checked to be on the device before the comparison on the host.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use cpflow::FloatType;
use cpflow::vae::{
    PosteriorKind, Vae, VaeArchitecture, VaeData, VaeDatasetName, VaeImages, VaeLikelihood,
    VaeModelConfig, VaeSplit, load_reference_vae_state_dict, make_batch,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::reference_parity::{Fixture, TOL, assert_vars_on, differences, host, host_on};

/// A `vae_*` fixture: the reference parity tests' fixture file (tensors and metadata).
pub(super) type VaeFixture = Fixture;

/// Their `state_dict` keys and shapes, in `state_dict` order (the formula's key index).
fn formula_keys(fx: &VaeFixture) -> Vec<(String, Vec<usize>)> {
    serde_json::from_str(fx.meta("keys")).unwrap()
}

/// `2u − 1` for element `k` of key `i`: `u = (splitmix64((i << 32) + k) >> 11)·2⁻⁵³`, the
/// exporter's `unit_values` (integer arithmetic, then exact float operations: bit for bit).
fn unit(i: u64, k: u64) -> f64 {
    let mut z = ((i << 32) + k).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    2.0 * ((z >> 11) as f64 * 2f64.powi(-53)) - 1.0
}

/// The reference `state_dict` of the fixture, rebuilt from the formula
/// `w = offset_i + scale_i·(2u − 1)`, and checked against the exporter's per-key sums.
pub(super) fn formula_state_dict(fx: &VaeFixture) -> HashMap<String, Tensor> {
    let (scale, offset) = (fx.values("formula.scale"), fx.values("formula.offset"));
    let (sums, sumsqs) = (fx.values("formula.sum"), fx.values("formula.sumsq"));
    let keys = formula_keys(fx);
    assert_eq!(keys.len(), scale.len());
    keys.into_iter()
        .enumerate()
        .map(|(i, (key, shape))| {
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n as u64)
                .map(|k| offset[i] + scale[i] * unit(i as u64, k))
                .collect();
            // Sums in another order: equal to rounding (1e-12 of the sum of |values|).
            let (s, s2) = (v.iter().sum::<f64>(), v.iter().map(|x| x * x).sum::<f64>());
            let l1: f64 = v.iter().map(|x| x.abs()).sum();
            assert!(
                (s - sums[i]).abs() <= 1e-12 * l1,
                "{key}: sum {s} vs {}",
                sums[i]
            );
            assert!(
                (s2 - sumsqs[i]).abs() <= 1e-12 * s2,
                "{key}: sum of squares"
            );
            (key, Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
        })
        .collect()
}

/// Our VAE on `dev` with the fixture's settings (their `train_vae.py` defaults; the
/// reference's widths, f64) and `state_dict` (host tensors) loaded: Frey Faces (256-way,
/// 28×20) or Caltech 101 Silhouettes (Bernoulli, 28×28).
pub(super) fn reference_vae(
    fx: &VaeFixture,
    state_dict: &HashMap<String, Tensor>,
    dev: &Device,
) -> Vae {
    let (likelihood, hw) = match fx.meta("dataset") {
        "freyfaces" => (VaeLikelihood::Categorical256, (28, 20)),
        "caltech" => (VaeLikelihood::Bernoulli, (28, 28)),
        d => panic!("no VAE dataset {d}"),
    };
    let posterior = match fx.meta("flow") {
        "no_flow" => PosteriorKind::Gaussian,
        "cpflow" => PosteriorKind::CpFlow,
        f => panic!("no cpflow posterior for -f {f}"),
    };
    let mut cfg = VaeModelConfig {
        latent_dim: fx.meta_usize("z_size"),
        architecture: VaeArchitecture::reference(),
        posterior,
        network_float: FloatType::F64,
        posterior_float: FloatType::F64,
        ..Default::default()
    };
    assert_eq!(cfg.architecture.feature_dim, fx.meta_usize("context_dim"));
    if posterior == PosteriorKind::CpFlow {
        assert_eq!(fx.meta("icnn_type"), "PICNN");
        cfg.blocks = fx.meta_usize("num_flows");
        cfg.width = fx.meta_usize("icnn_dimh");
        cfg.depth = fx.meta_usize("num_icnn_layers");
        // VaeModelConfig's posterior is the reference's (gaussian softplus, zero shift,
        // symmetric first activation, scalar ActNorms): the fixture must agree.
        let pc = cfg.posterior_config();
        assert_eq!(fx.meta("softplus_type"), "gaussian_softplus");
        assert_eq!(
            pc.activation,
            icnn::ActivationKind::GaussianSoftplus,
            "posterior activation"
        );
        assert_eq!(pc.zero_shift, fx.meta("zero_softplus") == "1");
        assert_eq!(pc.symm_act_first, fx.meta("symm_act_first") == "1");
        assert_eq!(pc.actnorm, fx.meta("actnorm") == "1");
    }
    let vae = Vae::new(&cfg, likelihood, hw, dev).unwrap();
    assert_eq!(vae.num_parameters(), fx.meta_usize("parameters"));
    let report = load_reference_vae_state_dict(&vae, state_dict).unwrap();
    assert_eq!(report.loaded, state_dict.len());
    assert_vars_on(dev, &vae.named_vars());
    vae
}

/// The fixture's images (`in.pixels`) as the test split of a [`VaeData`] of its dataset:
/// Frey Faces (grey levels 0..=255) or Caltech silhouettes (static binary, 0 or 1).
pub(super) fn fixture_data(fx: &VaeFixture) -> VaeData {
    let (name, likelihood, (height, width), top) = match fx.meta("dataset") {
        "freyfaces" => (
            VaeDatasetName::FreyFaces,
            VaeLikelihood::Categorical256,
            (28, 20),
            255.0,
        ),
        "caltech" => (
            VaeDatasetName::Caltech101,
            VaeLikelihood::Bernoulli,
            (28, 28),
            1.0,
        ),
        d => panic!("no dataset {d}"),
    };
    let pixels: Vec<u8> = fx
        .values("in.pixels")
        .iter()
        .map(|&g| {
            assert!(g.fract() == 0.0 && (0.0..=top).contains(&g), "{g}");
            g as u8
        })
        .collect();
    let images = VaeImages {
        n: pixels.len() / (height * width),
        pixels,
    };
    VaeData {
        name,
        likelihood,
        height,
        width,
        train: images.clone(),
        val: images.clone(),
        test: images,
        dynamic_binarization: false,
    }
}

/// `log N(z; 0, I)` per row, normalised.
pub(super) fn log_standard_normal(z: &[f64], d: usize) -> Vec<f64> {
    let c = 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln();
    z.chunks(d)
        .map(|r| -0.5 * r.iter().map(|v| v * v).sum::<f64>() - c)
        .collect()
}

pub(super) fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Every compared quantity: (name, ours, theirs).
type Rows = Vec<(&'static str, Vec<f64>, Vec<f64>)>;

/// Our values of every quantity the fixture holds, next to theirs (ours computed on the
/// VAE's device).
fn evaluate(fx: &VaeFixture, vae: &Vae) -> Rows {
    let dev = vae.device();
    let on = |what: &str, t: &Tensor| host_on(dev, what, t);
    let data = fixture_data(fx);
    let b = data.test.n;
    let idx: Vec<usize> = (0..b).collect();
    let mut rng = StdRng::seed_from_u64(0); // unused: Frey images are not binarised
    let batch = make_batch(vae, &data, VaeSplit::Test, &idx, &mut rng).unwrap();
    let d = vae.config().latent_dim;
    let e = vae.encode(&batch.x).unwrap();
    let var = (e.log_sigma.clone() * 2.0).unwrap().exp().unwrap();
    let s = vae
        .posterior()
        .transform_noise_exact(
            &e.mu,
            &e.log_sigma,
            &e.feature,
            &fx.tensor_on("in.eps", dev),
        )
        .unwrap();
    let log_q0 = (&s.log_q + &s.log_det).unwrap();
    // The decoder alone, at their z_K; and on our own z_K for the ELBO.
    let ll_at_theirs = vae
        .log_likelihood(&batch, &fx.tensor_on("out.zk", dev))
        .unwrap();
    let ll = on("log p(x|z)", &vae.log_likelihood(&batch, &s.z).unwrap());
    let z = on("zK", &s.z);
    let log_pz = log_standard_normal(&z, d);
    let log_q = on("log q", &s.log_q);
    let kl: Vec<f64> = log_q.iter().zip(&log_pz).map(|(q, p)| q - p).collect();
    let neg_elbo: Vec<f64> = ll.iter().zip(&kl).map(|(l, k)| k - l).collect();
    // calculate_loss: batch means, bits/dim = mean −ELBO / (560 ln 2).
    let loss = mean(&neg_elbo);
    let bpd = loss / (560.0 * std::f64::consts::LN_2);
    let rec = -mean(&ll);
    vec![
        ("x", on("x", &batch.x), fx.values("in.x")),
        ("mu", on("mu", &e.mu), fx.values("out.mu")),
        ("var", on("var", &var), fx.values("out.var")),
        ("h", on("h", &e.feature), fx.values("out.h")),
        ("z0", on("z0", &s.z0), fx.values("out.z0")),
        ("zK", z, fx.values("out.zk")),
        ("logdet", on("logdet", &s.log_det), fx.values("out.logdet")),
        ("log q0", on("log q0", &log_q0), fx.values("out.log_q0")),
        ("log q", log_q, fx.values("out.log_q")),
        ("log p(z)", log_pz, fx.values("out.log_pz")),
        (
            "log p(x|z)",
            on("log p(x|z) at their zK", &ll_at_theirs),
            fx.values("out.log_px"),
        ),
        ("KL", kl.clone(), fx.values("out.kl")),
        ("-ELBO", neg_elbo, fx.values("out.neg_elbo")),
        ("loss", vec![loss], fx.values("out.loss")),
        ("rec", vec![rec], fx.values("out.rec")),
        ("kl mean", vec![mean(&kl)], fx.values("out.kl_mean")),
        ("bpd", vec![bpd], fx.values("out.bpd")),
    ]
}

fn vae_parity(name: &'static str, dev: &Device) {
    let fx = VaeFixture::load(name);
    let sd = formula_state_dict(&fx);
    let vae = reference_vae(&fx, &sd, dev);
    let data = fixture_data(&fx);
    // The class targets are the grey levels (their `(x·255).long()`).
    let idx: Vec<usize> = (0..data.test.n).collect();
    let targets = data
        .batch_targets(VaeSplit::Test, &idx, dev)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    assert_eq!(host_on(dev, "targets", &targets), fx.values("in.pixels"));
    for (what, ours, theirs) in evaluate(&fx, &vae) {
        let (max_abs, max_rel, worst) = differences(&ours, &theirs);
        eprintln!("parity {name:<18} {what:<11} max abs {max_abs:.3e}  max rel {max_rel:.3e}");
        if what == "x" {
            // The same f32(pixel/255) values: no rounding at all.
            assert_eq!(max_abs, 0.0, "{name}: inputs differ");
        }
        assert!(
            worst <= TOL,
            "{name} {what}: |ours − theirs|/(1 + |theirs|) reaches {worst:.3e} (max abs \
             {max_abs:.3e}) > {TOL:e}"
        );
    }
    // Our public −ELBO (`Vae::neg_elbo_exact`, which draws ε itself) is the composition
    // compared above: with ε from the same seeded draws the two agree.
    let batch = make_batch(
        &vae,
        &data,
        VaeSplit::Test,
        &idx,
        &mut StdRng::seed_from_u64(0),
    )
    .unwrap();
    let ne = vae
        .neg_elbo_exact(&batch, &mut StdRng::seed_from_u64(7))
        .unwrap();
    let eps = vae
        .posterior()
        .draw_noise(idx.len(), &mut StdRng::seed_from_u64(7))
        .unwrap();
    let mut fx2 = VaeFixture::load(name);
    fx2.tensors.insert("in.eps".into(), eps);
    let composed = evaluate(&fx2, &vae);
    let row = |w: &str| composed.iter().find(|r| r.0 == w).unwrap().1.clone();
    for (what, ours, composed) in [
        ("-ELBO", &ne.neg_elbo, row("-ELBO")),
        ("KL", &ne.kl, row("KL")),
    ] {
        let (_, _, worst) = differences(ours, &composed);
        assert!(worst <= TOL, "neg_elbo_exact {what}: {worst:e}");
    }
}

fn vae_gaussian_posterior_matches_reference(dev: &Device) {
    vae_parity("vae_full_gaussian", dev);
}
test_device!(
    vae_gaussian_posterior_matches_reference,
    vae_gaussian_posterior_matches_reference_cpu,
    vae_gaussian_posterior_matches_reference_cuda
);

fn vae_cpflow_posterior_matches_reference(dev: &Device) {
    vae_parity("vae_full_cpflow", dev);
}
test_device!(
    vae_cpflow_posterior_matches_reference,
    vae_cpflow_posterior_matches_reference_cpu,
    vae_cpflow_posterior_matches_reference_cuda
);

/// The comparison can fail. One scalar weight changed by one part in 10⁸ (the first block's
/// `w0`) moves z_K, the log-det and log q out of `TOL` by factors of 13–40; scaling the first
/// encoder convolution's kernel by 1 + 1e-8 moves μ, σ², h and z_K out by 44–384×, and the
/// decoder's 5×5 head kernel moves log p(x|z) and the −ELBO out by ~40×. (A single one of
/// the decoder's 10⁶ weights moved by 1e-8 relative changes log p(x|z) by ~4e-8 nats, inside
/// the bound's 4e-7 on values of ~4,000; the measured differences are 1e-11 nats.)
fn vae_parity_detects_a_small_weight_change(dev: &Device) {
    let fx = VaeFixture::load("vae_full_cpflow");
    let controls: [(&str, bool, &[&str]); 3] = [
        ("flow.flows.1.w0", false, &["zK", "logdet", "log q"]),
        ("q_z_nn.0.h.weight", true, &["mu", "var", "h", "zK"]),
        ("p_x_mean.0.weight", true, &["log p(x|z)", "-ELBO"]),
    ];
    let mut failures = Vec::new();
    for (key, whole_tensor, watched) in controls {
        let mut sd = formula_state_dict(&fx);
        let t = &sd[key];
        let mut v = host(t);
        let n = if whole_tensor { v.len() } else { 1 };
        for x in &mut v[..n] {
            *x *= 1.0 + 1e-8;
        }
        sd.insert(
            key.into(),
            Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap(),
        );
        let vae = reference_vae(&fx, &sd, dev);
        for (what, ours, theirs) in evaluate(&fx, &vae) {
            let (max_abs, _, worst) = differences(&ours, &theirs);
            if watched.contains(&what) {
                eprintln!(
                    "control {key:<31} {what:<11} max abs {max_abs:.2e}, {:.0}× TOL",
                    worst / TOL
                );
                failures.extend((worst <= 10.0 * TOL).then(|| format!("{key} {what}: {worst:e}")));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
test_device!(
    vae_parity_detects_a_small_weight_change,
    vae_parity_detects_a_small_weight_change_cpu,
    vae_parity_detects_a_small_weight_change_cuda
);

/// Our Frey Faces loader with the reference seed gives their test split: the fixture's
/// images are test images `in.test_index` of `load_vae_data(FreyFaces, …, 123)` (the
/// shared data folder `../shared/data`, as every test that reads real data).
#[test]
fn vae_fixture_images_are_our_frey_test_split() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let fx = VaeFixture::load("vae_full_gaussian");
    assert_eq!(
        fx.meta_usize("freyseed") as u64,
        cpflow::vae::FREY_REFERENCE_SEED
    );
    let data = cpflow::vae::load_vae_data(
        VaeDatasetName::FreyFaces,
        &root,
        cpflow::vae::FREY_REFERENCE_SEED,
    )
    .unwrap();
    let ours: Vec<f64> = fx
        .values("in.test_index")
        .iter()
        .flat_map(|&i| data.test.image(i as usize).iter().map(|&g| f64::from(g)))
        .collect();
    assert_eq!(ours, fx.values("in.pixels"));
}
