//! The lazy ActNorm initialisation under concurrency: two threads make their first calls on a
//! fresh network at the same moment (a barrier), each with its own batch. Exactly one batch
//! must initialise the network, and each thread's first output must be that of the network as
//! it ends up. Before the check and the init held one lock, both threads initialised: the
//! final network was that of whichever wrote last, and a thread's first output disagreed with
//! it in 195 of 200 trials (`Icnn3`, width 64, depth 4, 512 rows).
//!
//! The comparisons are bitwise: the same network on the same input gives the same bits on any
//! thread (row-independent ops, products that split their output only), so any difference is
//! a different network, not rounding.

use std::sync::Barrier;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use icnn::{
    ConditionalConvexPotential, ConvIcnn2, ConvIcnn2Config, ConvexPotential, Icnn3, Icnn3Config,
    ImageShape, Picnn, PicnnConfig,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::common::randn;

/// Races per architecture. With the old check-then-init, a trial failed 75, 61 and 68 times
/// in 100 (`Icnn3`, `Picnn`, `ConvIcnn2` below, 2 cores): 10 trials all pass with probability
/// under 0.39¹⁰ ≈ 1e-4. With the lock none failed in 100.
const TRIALS: usize = 10;

/// One call's input: points and, for a conditional network, contexts.
struct Batch {
    x: Tensor,
    c: Option<Tensor>,
}

impl Batch {
    /// `rows` points of `dim` (and contexts of `context_dim`), `N(0, scale²)` from `seed`.
    fn new(rows: usize, dim: usize, context_dim: usize, scale: f64, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let x = randn(&mut rng, (rows, dim), scale);
        let c = (context_dim > 0).then(|| randn(&mut rng, (rows, context_dim), scale));
        Self { x, c }
    }
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .into_iter()
        .map(f64::to_bits)
        .collect()
}

fn vb(varmap: &VarMap) -> VarBuilder<'static> {
    VarBuilder::from_varmap(varmap, DType::F64, &Device::Cpu)
}

/// Races two first calls (`call` on batches `a` and `b`) on fresh networks from `build`,
/// `TRIALS` times, and checks that the network ends up as `initialize` on `a` or on `b`
/// alone makes it (on a probe batch) and that both first outputs are the final network's.
fn race<N: Sync>(
    what: &str,
    build: impl Fn() -> (VarMap, N),
    initialize: impl Fn(&N, &Batch),
    call: impl Fn(&N, &Batch) -> Vec<u64> + Sync,
    batches: [Batch; 3],
) {
    let [a, b, probe] = &batches;
    let initialised_on = |batch: &Batch| {
        let (_varmap, net) = build();
        initialize(&net, batch);
        call(&net, probe)
    };
    let (on_a, on_b) = (initialised_on(a), initialised_on(b));
    assert_ne!(
        on_a, on_b,
        "{what}: the two batches must give different inits"
    );
    for trial in 0..TRIALS {
        let (_varmap, net) = build();
        let go = Barrier::new(2);
        let first_call = |batch: &Batch| {
            go.wait();
            call(&net, batch)
        };
        let (first_a, first_b) = std::thread::scope(|s| {
            let ta = s.spawn(|| first_call(a));
            let tb = s.spawn(|| first_call(b));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let after = call(&net, probe);
        assert!(
            after == on_a || after == on_b,
            "{what}, trial {trial}: the network is neither the one batch A initialises nor \
             batch B's"
        );
        assert!(
            first_a == call(&net, a) && first_b == call(&net, b),
            "{what}, trial {trial}: a thread's first output is not the final network's"
        );
    }
}

#[test]
fn racing_first_calls_on_an_icnn3_initialise_once() {
    let cfg = Icnn3Config {
        dim: 4,
        width: 32,
        depth: 3,
        ..Default::default()
    };
    race(
        "Icnn3",
        || {
            let varmap = VarMap::new();
            let net = Icnn3::new(vb(&varmap), &cfg, &mut StdRng::seed_from_u64(0)).unwrap();
            (varmap, net)
        },
        |net, batch| net.initialize(&batch.x).unwrap(),
        |net, batch| bits(&net.potential(&batch.x).unwrap()),
        [
            Batch::new(256, 4, 0, 1.0, 1),
            Batch::new(256, 4, 0, 5.0, 2),
            Batch::new(8, 4, 0, 1.0, 3),
        ],
    );
}

#[test]
fn racing_first_calls_on_a_picnn_initialise_once() {
    let cfg = PicnnConfig {
        dim: 4,
        context_dim: 2,
        width: 32,
        depth: 3,
        ..Default::default()
    };
    let context = |batch: &Batch| batch.c.clone().unwrap();
    race(
        "Picnn",
        || {
            let varmap = VarMap::new();
            let net = Picnn::new(vb(&varmap), &cfg, &mut StdRng::seed_from_u64(0)).unwrap();
            (varmap, net)
        },
        |net, batch| net.initialize(&batch.x, &context(batch)).unwrap(),
        // The linearisation's gradient: the lazy init runs on this path too.
        |net, batch| {
            let lin = net
                .linearize_with_context(&batch.x, &context(batch))
                .unwrap();
            bits(&lin.gradient())
        },
        [
            Batch::new(256, 4, 2, 1.0, 1),
            Batch::new(256, 4, 2, 5.0, 2),
            Batch::new(8, 4, 2, 1.0, 3),
        ],
    );
}

#[test]
fn racing_first_calls_on_a_conv_icnn2_initialise_once() {
    let image = ImageShape::new(2, 6, 6);
    let cfg = ConvIcnn2Config {
        image,
        width: 8,
        depth: 2,
    };
    let d = image.dim();
    race(
        "ConvIcnn2",
        || {
            let varmap = VarMap::new();
            let net = ConvIcnn2::new(vb(&varmap), &cfg, &mut StdRng::seed_from_u64(0)).unwrap();
            assert!(!net.is_initialized().unwrap());
            (varmap, net)
        },
        |net, batch| net.initialize(&batch.x).unwrap(),
        |net, batch| bits(&net.potential(&batch.x).unwrap()),
        [
            Batch::new(64, d, 0, 1.0, 1),
            Batch::new(64, d, 0, 5.0, 2),
            Batch::new(8, d, 0, 1.0, 3),
        ],
    );
}
