//! The VAE's CP-Flow posterior with a block potential of the user's own
//! (`VaeModelConfig::custom_posterior`, a builder of `register_conditional_potential`): the
//! same network as the built-in PICNN gives the same −ELBO, a run trains, saves, reloads and
//! scores as its report, and configurations the reference cannot describe are refused.

use crate::posterior_common::made_up_caltech_data;
use candle_core::{Device, Tensor};
use cpflow::posterior::CustomPosteriorPotential;
use cpflow::vae::{
    PosteriorKind, Vae, VaeArchitecture, VaeBatch, VaeConfig, VaeDatasetName, VaeLikelihood,
    VaeModelConfig, VaeRunOptions, VaeTestParams, load_vae, reference_vae_key_mapping, run_vae_on,
    score_vae_test,
};
use icnn::{ActivationKind, Picnn, PicnnConfig};
use rand::SeedableRng;
use std::collections::BTreeMap;

/// Registers `vae-test-picnn`: icnn's PICNN sized by the settings `width` and `depth`, with
/// the reference posterior's activation options (those of the built-in blocks).
fn register() -> CustomPosteriorPotential {
    cpflow::register_conditional_potential("vae-test-picnn", |vb, cfg, rng| {
        let get = |k: &str| cfg.settings.get(k).copied().unwrap_or(4.0) as usize;
        let config = PicnnConfig {
            dim: cfg.dim,
            context_dim: cfg.context_dim,
            width: get("width"),
            depth: get("depth"),
            activation: ActivationKind::GaussianSoftplus,
            zero_shift: true,
            symm_act_first: true,
        };
        Ok(Box::new(Picnn::new(vb, &config, rng)?))
    });
    CustomPosteriorPotential {
        name: "vae-test-picnn".into(),
        settings: BTreeMap::from([("width".into(), 6.0), ("depth".into(), 2.0)]),
    }
}

fn model(custom: Option<CustomPosteriorPotential>) -> VaeModelConfig {
    VaeModelConfig {
        latent_dim: 3,
        architecture: VaeArchitecture {
            channels: 2,
            feature_dim: 4,
            head_channels: 2,
        },
        posterior: PosteriorKind::CpFlow,
        blocks: 2,
        width: 6,
        depth: 2,
        custom_posterior: custom,
        ..Default::default()
    }
}

/// The custom builder makes the same PICNN as the built-in blocks; on the same weights the
/// two posteriors' single-sample −ELBOs (same noise) agree to rounding; the custom one
/// goes through the generic block code, not the built-in PICNN's host kernels, so this
/// checks that path against the built-in one.
#[test]
fn a_custom_picnn_posterior_matches_the_built_in_one() {
    let custom = register();
    let (dev, lik) = (Device::Cpu, VaeLikelihood::Bernoulli);
    let built_in = Vae::new(&model(None), lik, (28, 28), &dev).unwrap();
    let mine = Vae::new(&model(Some(custom)), lik, (28, 28), &dev).unwrap();
    assert_eq!(built_in.num_parameters(), mine.num_parameters());
    // The builder draws from a stream of its own (seeded by one draw of the model's RNG), so
    // the initial weights differ; the variables have the same names: give it the built-in's.
    let weights = built_in.weight_tensors().into_iter().collect();
    mine.set_weights(&weights, "").unwrap();
    let x = (Tensor::arange(0f64, 3.0 * 784.0, &dev).unwrap() * 0.37)
        .unwrap()
        .sin()
        .unwrap()
        .abs()
        .unwrap()
        .reshape((3, 1, 28, 28))
        .unwrap();
    let batch = VaeBatch { x, targets: None };
    let score = |vae: &Vae| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        vae.initialize(&batch, &mut rng).unwrap();
        vae.neg_elbo_exact(&batch, &mut rng).unwrap().neg_elbo
    };
    let (a, b) = (score(&built_in), score(&mine));
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() < 1e-9 * p.abs().max(1.0), "{p} vs {q}");
    }
    // Not the agreement of an inactive posterior: the custom blocks' weights move the −ELBO.
    let mut changed = weights.clone();
    for (k, t) in changed.iter_mut() {
        if k.starts_with("posterior.layers.1.") && !k.ends_with("initialized") {
            *t = (&*t * 3.0).unwrap();
        }
    }
    mine.set_weights(&changed, "").unwrap();
    let c = score(&mine);
    let moved = b
        .iter()
        .zip(&c)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f64::max);
    assert!(moved > 1e-3, "{moved}");
}

/// One epoch with the custom posterior: the run trains, its best weights reload (the
/// registration is in place) and score as its report; the configuration round-trips through
/// the checkpoint's JSON and TOML.
#[test]
fn a_custom_posterior_run_trains_reloads_and_scores_as_its_report() {
    let custom = register();
    let data = made_up_caltech_data(&[0, 2]);
    let mut cfg = VaeConfig::reference(VaeDatasetName::Caltech101, "unused", PosteriorKind::CpFlow);
    cfg.model = model(Some(custom.clone()));
    (cfg.train.epochs, cfg.train.batch_size) = (1, 2);
    (cfg.eval.is_samples, cfg.eval.is_chunk) = (4, 4);
    let toml_text = toml::to_string(&cfg).unwrap();
    assert!(
        toml_text.contains("[model.custom_posterior]"),
        "{toml_text}"
    );
    assert_eq!(toml::from_str::<VaeConfig>(&toml_text).unwrap(), cfg);
    let out = std::env::temp_dir().join(format!("cpflow-vae-custom-{}", std::process::id()));
    let report = run_vae_on(&cfg, &data, &out, &VaeRunOptions::default()).unwrap();
    assert!(report.test_neg_elbo.mean.is_finite());
    let (vae, loaded) = load_vae(&out, &Device::Cpu).unwrap();
    assert_eq!(loaded.model.custom_posterior, Some(custom));
    let scores = score_vae_test(&vae, &data, &VaeTestParams::of_run(&loaded), |_| Ok(())).unwrap();
    assert_eq!(scores.neg_elbo, report.test_neg_elbo);
    assert_eq!(scores.is_nll, report.test_is_nll);
    std::fs::remove_dir_all(&out).ok();
}

/// What cannot be built is refused by name: a custom potential on the Gaussian posterior, and
/// the reference key mapping (train_vae.py's CPFVAE has PICNN blocks).
#[test]
fn custom_posteriors_the_reference_cannot_describe_are_refused() {
    let custom = register();
    let gaussian = VaeModelConfig {
        posterior: PosteriorKind::Gaussian,
        ..model(Some(custom.clone()))
    };
    let err = Vae::new(&gaussian, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cp-flow"), "{err}");
    let err = reference_vae_key_mapping(&model(Some(custom)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("vae-test-picnn") && err.contains("PICNN"),
        "{err}"
    );
    let unknown = CustomPosteriorPotential {
        name: "vae-never-registered".into(),
        settings: BTreeMap::new(),
    };
    let err = Vae::new(
        &model(Some(unknown)),
        VaeLikelihood::Bernoulli,
        (28, 28),
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("register_conditional_potential"), "{err}");
}
