//! Importance sampling stops between chunks of samples (an interrupt of a long estimate
//! waited for the whole image: minutes with millions of samples).

use super::tests::{fake_data, tiny_config};
use super::*;
use crate::CpflowError;
use candle_core::Device;
use rand::SeedableRng;

#[test]
fn the_monitor_sees_every_chunk_and_stops_the_estimate() {
    let data = fake_data();
    let vae = Vae::new(
        &tiny_config(PosteriorKind::Gaussian),
        VaeLikelihood::Categorical256,
        (28, 20),
        &Device::Cpu,
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let first = make_batch(&vae, &data, VaeSplit::Train, &[0, 1], &mut rng).unwrap();
    vae.initialize(&first, &mut rng).unwrap();
    let (mut chunks, mut images) = (Vec::new(), Vec::new());
    // 2 images of 10 samples in chunks of 4: chunks of 4, 4 and 2 each.
    let (nll, _) = split_importance_nll_monitored(
        &vae,
        &data,
        VaeSplit::Test,
        2,
        10,
        4,
        &mut rng,
        |i| {
            chunks.push(i);
            Ok(())
        },
        |done| {
            images.push(done);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!((chunks, images), (vec![0, 0, 0, 1, 1, 1], vec![1, 2]));
    assert!(nll.iter().all(|v| v.is_finite()));
    // An error at the second chunk of the first image ends the estimate there.
    let mut calls = 0;
    let stopped = split_importance_nll_monitored(
        &vae,
        &data,
        VaeSplit::Test,
        2,
        10,
        4,
        &mut rng,
        |_| {
            calls += 1;
            if calls == 2 {
                return Err(CpflowError::InvalidInput("stop".into()));
            }
            Ok(())
        },
        |_| panic!("no image was finished"),
    );
    assert!(matches!(stopped, Err(CpflowError::InvalidInput(m)) if m == "stop"));
    assert_eq!(calls, 2);
}
