//! The Monte-Carlo standard error of the VAE's importance-sampled NLL with one sample per
//! image: each image's error is the spread of its `K` weights over `√K` times their mean, so
//! with `K = 1` there is no spread to estimate it from. It was reported as 0.0 (the undefined
//! per-image errors were skipped but the sum still divided by the image count); it is now
//! undefined (`NaN` from the split's function, `None` in the test scores).

use crate::posterior_common::made_up_caltech_data;
use candle_core::Device;
use cpflow::vae::{
    PosteriorKind, Vae, VaeArchitecture, VaeData, VaeLikelihood, VaeModelConfig, VaeSplit,
    VaeTestParams, make_batch, score_vae_test, split_importance_nll,
};
use rand::SeedableRng;

/// An initialised (untrained) tiny VAE: its importance weights still vary between samples.
fn vae(data: &VaeData) -> Vae {
    let cfg = VaeModelConfig {
        latent_dim: 2,
        architecture: VaeArchitecture {
            channels: 2,
            feature_dim: 4,
            head_channels: 2,
        },
        posterior: PosteriorKind::Gaussian,
        ..Default::default()
    };
    let vae = Vae::new(&cfg, VaeLikelihood::Bernoulli, (28, 28), &Device::Cpu).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let first = make_batch(&vae, data, VaeSplit::Train, &[0, 1], &mut rng).unwrap();
    vae.initialize(&first, &mut rng).unwrap();
    vae
}

#[test]
fn one_importance_sample_has_no_monte_carlo_error() {
    let data = made_up_caltech_data(&[0, 2, 1]);
    let vae = vae(&data);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (nll, mc) =
        split_importance_nll(&vae, &data, VaeSplit::Test, 3, 1, 1, &mut rng, |_| Ok(())).unwrap();
    assert!(nll.iter().all(|v| v.is_finite()), "{nll:?}");
    assert!(mc.is_nan(), "K = 1 gave a Monte-Carlo error of {mc}");
    // With 4 samples the weights have a spread: a positive, finite error.
    let (_, mc4) =
        split_importance_nll(&vae, &data, VaeSplit::Test, 3, 4, 4, &mut rng, |_| Ok(())).unwrap();
    assert!(mc4.is_finite() && mc4 > 0.0, "{mc4}");

    let params = |is_samples| VaeTestParams {
        seed: 0,
        images: None,
        batch_size: 2,
        is_samples,
        is_chunk: 2,
        is_images: None,
    };
    let one = score_vae_test(&vae, &data, &params(1), |_| Ok(())).unwrap();
    assert!(one.is_nll.is_some_and(|m| m.mean.is_finite() && m.n == 3));
    assert_eq!(one.is_mc_std_err, None, "K = 1");
    let four = score_vae_test(&vae, &data, &params(4), |_| Ok(())).unwrap();
    assert!(four.is_mc_std_err.is_some_and(|e| e.is_finite() && e > 0.0));
    let none = score_vae_test(&vae, &data, &params(0), |_| Ok(())).unwrap();
    assert_eq!((none.is_nll, none.is_mc_std_err), (None, None));
}
