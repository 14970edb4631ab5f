//! Training an image flow on its CG-surrogate loss (`ImageFlow::surrogate_loss`) lowers the
//! exact bits/dim of images it was not trained on: a tiny two-scale conv flow (1×4×4, the
//! `image_train` model), f64, a few dozen Adam steps, the exact (dense log-det) bpd of
//! held-out images of the training distribution (and of the training images themselves:
//! the surrogate loss's *value* is not a bpd, each block contributing `S ≈ D` instead of its
//! log-det, so the training objective is tracked by the exact bpd) before and after. A wrong
//! sign of the blocks' surrogate term, or a gradient that misses the blocks, leaves only the
//! logit, ActNorm and prior parts to train and the bpd falls far less.
//! `cargo test -p cpflow --test integration image_train_improves_bpd`.

use candle_core::{DType, Device, Tensor};
use cpflow::image::{ImageFlow, ImageSet, bits_per_dim};
use cpflow::{Adam, AdamParams, FloatType, SurrogateParams};
use icnn::ImageShape;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::image_train::tiny_flow;

/// `n` structured 1×4×4 images starting at index `offset` of one sequence: a bright diagonal
/// on a dark background, its brightness and the background varying with the index (the
/// `image_train` data). Images of disjoint index ranges are held out from each other.
fn images(n: usize, offset: usize) -> ImageSet {
    let mut v = Vec::with_capacity(n * 16);
    for i in offset..offset + n {
        for y in 0..4 {
            for x in 0..4 {
                let k = if x == y {
                    150 + (7 * i) % 100
                } else {
                    (13 * i + 3 * x) % 40
                };
                v.push(k as u8);
            }
        }
    }
    ImageSet::new(ImageShape::new(1, 4, 4), v).unwrap()
}

/// Mean exact bits/dim of the rows `x`.
fn exact_bpd(flow: &ImageFlow, x: &Tensor) -> f64 {
    let lp = flow.log_prob_exact(x).unwrap().to_vec1::<f64>().unwrap();
    lp.iter().map(|&l| bits_per_dim(l, flow.dim())).sum::<f64>() / lp.len() as f64
}

/// Exact mean bpd `(held-out, training)` before and after `STEPS` Adam steps on the
/// surrogate loss, from seed `seed` (dequantisation, CG probes).
fn train(seed: u64) -> [(f64, f64); 2] {
    let dev = Device::Cpu;
    let flow = ImageFlow::new(tiny_flow(FloatType::F64), &dev).unwrap();
    let (n_train, batch) = (16, 8);
    let train = images(n_train, 0);
    let held_out = images(8, 100);
    let mut rng = StdRng::seed_from_u64(seed);
    // One fixed dequantisation of each evaluation set: before and after see the same points.
    let x_held = held_out
        .dequantized_range(0, held_out.len(), DType::F64, &dev, &mut rng)
        .unwrap();
    let x_train = train
        .dequantized_range(0, n_train, DType::F64, &dev, &mut rng)
        .unwrap();
    flow.initialize(&x_train.narrow(0, 0, batch).unwrap())
        .unwrap();
    let before = (exact_bpd(&flow, &x_held), exact_bpd(&flow, &x_train));
    let mut adam = Adam::new(
        flow.named_vars(),
        AdamParams {
            lr: 1e-2,
            ..AdamParams::default()
        },
    )
    .unwrap();
    let params = SurrogateParams::default();
    for step in 0..STEPS {
        let start = (step * batch) % n_train;
        let x = train
            .dequantized_range(start, start + batch, DType::F64, &dev, &mut rng)
            .unwrap();
        let out = flow.surrogate_loss(&x, &params, &mut rng).unwrap();
        let mut grads = icnn::detached_backward(&out.loss).unwrap();
        // The reference's clipping at norm 1 (the loss is in bits/dim for this reason).
        adam.clip_grad_norm(&mut grads, 1.0).unwrap();
        adam.step(&grads).unwrap();
    }
    [
        before,
        (exact_bpd(&flow, &x_held), exact_bpd(&flow, &x_train)),
    ]
}

#[test]
fn surrogate_training_lowers_the_exact_bpd_of_held_out_images() {
    let [(held0, train0), (held1, train1)] = train(0);
    // Measured (seeds 0..8, 40 steps): the training images' exact bpd falls by 2.31–2.55
    // (6.88 → ~4.5) and the held-out images' by 0.31–1.39 (seed 0: 0.99), the flow
    // overfitting 16 images. With the blocks' surrogate term of the wrong sign the blocks
    // learn to shrink their log-dets and only the logit, ActNorm and prior parts help:
    // falls of 0.25–0.26 (training) and 0.07–0.08 (held-out) for every seed. The margins
    // sit between the two.
    assert!(
        train1 < train0 - 1.0,
        "training did not lower the exact bpd of its training images: {train0} -> {train1}"
    );
    assert!(
        held1 < held0 - 0.2,
        "training did not lower the exact bpd of held-out images: {held0} -> {held1}"
    );
}

/// Adam steps: ~0.5 s in the dev profile.
const STEPS: usize = 40;
