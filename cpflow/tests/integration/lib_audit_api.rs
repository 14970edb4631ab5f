//! Library-API audit: bad input through the public entry points is a typed error naming the
//! problem (never a candle error, a silent change of the model or a NaN), empty batches give
//! empty results in every flow type, and the passes agree with each other.

use candle_core::{DType, Device, Tensor};
use cpflow::image::{ImageFlow, ImageModelConfig};
#[cfg(feature = "plot")]
use cpflow::ot::{OtError, forward_map, transport_cost};
use cpflow::{CpflowError, FloatType, Flow, FlowConfig, FlowRng, PotentialConfig, SlqConfig};
use icnn::{ImageShape, PicnnConfig};

#[cfg(feature = "plot")]
use crate::flow_common::icnn3;
use crate::flow_common::{data, max_abs_diff, two_block_flow};

/// A one-block flow without ActNorm layers (the OT model), f64.
#[cfg(feature = "plot")]
fn single_block(dim: usize) -> Flow {
    let cfg = FlowConfig::single_block(icnn3(dim, 4, 2)).with_float(FloatType::F64);
    Flow::new(cfg, &Device::Cpu).unwrap()
}

#[test]
#[cfg(feature = "plot")] // the `ot` module
fn forward_map_refuses_an_uninitialised_flow_and_leaves_it_so() {
    // The flow's only layer is a CP-Flow block: no ActNorm refuses first, and the ICNN's
    // inner ActNorms initialise on the first forward call. Before the fix `forward_map` and
    // `transport_cost` returned a value and had initialised the model on the rows passed.
    let flow = single_block(2);
    let x = data(8, 2, 1);
    let err = forward_map(&flow, &x).unwrap_err();
    assert!(
        matches!(err, OtError::Cpflow(CpflowError::NotInitialized)),
        "{err:?}"
    );
    let err = transport_cost(&flow, &x).unwrap_err();
    assert!(
        matches!(err, OtError::Cpflow(CpflowError::NotInitialized)),
        "{err:?}"
    );
    assert!(!flow.is_initialized().unwrap());
}

#[test]
#[cfg(feature = "plot")] // the `ot` module
fn transport_cost_validates_its_rows_like_the_flow() {
    let flow = single_block(2);
    let x = data(8, 2, 1);
    flow.initialize(&x).unwrap();
    let cost = transport_cost(&flow, &x).unwrap();
    // A NaN row was a NaN cost (no error).
    let mut v = x.to_vec2::<f64>().unwrap();
    v[3][0] = f64::NAN;
    let bad = Tensor::new(v, &Device::Cpu).unwrap();
    for err in [
        transport_cost(&flow, &bad).unwrap_err(),
        forward_map(&flow, &bad).map(|_| ()).unwrap_err(),
    ] {
        assert!(
            matches!(&err, OtError::Cpflow(CpflowError::InvalidInput(m)) if m.contains("NaN")),
            "{err:?}"
        );
    }
    // f32 rows for an f64 flow are converted, as by `log_prob` (were a candle dtype error):
    // the cost differs from the f64 rows' only by the rounding of the inputs to f32
    // (relative 6e-8 per coordinate; the map is Lipschitz with a constant near 1 here).
    let c32 = transport_cost(&flow, &x.to_dtype(DType::F32).unwrap()).unwrap();
    assert!(
        (c32 - cost).abs() <= 1e-5 * cost.max(1.0),
        "{c32} vs {cost}"
    );
    // Wrong width: a typed input error naming the columns, not a candle shape error.
    let err = transport_cost(&flow, &data(8, 3, 1)).unwrap_err();
    assert!(
        matches!(&err, OtError::Cpflow(CpflowError::InvalidInput(m)) if m.contains("3 columns")),
        "{err:?}"
    );
    // A transposed (non-contiguous) view gives the same cost as its contiguous copy.
    let xt = x.t().unwrap().contiguous().unwrap().t().unwrap();
    assert!(!xt.is_contiguous());
    assert_eq!(transport_cost(&flow, &xt).unwrap(), cost);
}

fn picnn_flow() -> Flow {
    let pot = PotentialConfig::Picnn(PicnnConfig {
        dim: 2,
        context_dim: 3,
        width: 8,
        depth: 2,
        ..Default::default()
    });
    let cfg = FlowConfig::tabular(2, 1, pot).with_float(FloatType::F64);
    Flow::new(cfg, &Device::Cpu).unwrap()
}

#[test]
fn sample_given_names_a_context_that_is_not_a_matrix() {
    let flow = picnn_flow();
    let (x, c) = (data(6, 2, 1), data(6, 3, 2));
    flow.initialize_given(&x, &c).unwrap();
    // A scalar context was candle's "dimension index 0 out of range for shape []".
    let scalar = Tensor::new(1.0f64, &Device::Cpu).unwrap();
    let err = flow
        .sample_given(&scalar, &mut FlowRng::seed_from_u64(0))
        .unwrap_err();
    assert!(
        matches!(&err, CpflowError::InvalidInput(m) if m.contains("context") && m.contains("(samples, 3)")),
        "{err:?}"
    );
    // The RNG is untouched by a refused call: the next draw is the first of the stream.
    let mut rng = FlowRng::seed_from_u64(5);
    assert!(flow.sample_given(&scalar, &mut rng).is_err());
    let a = flow.sample_given(&c, &mut rng).unwrap();
    let b = flow
        .sample_given(&c, &mut FlowRng::seed_from_u64(5))
        .unwrap();
    assert_eq!(a.x.to_vec2::<f64>().unwrap(), b.x.to_vec2::<f64>().unwrap());
    // An unconditional flow says so, whatever the context's shape.
    let plain = two_block_flow(2, 0);
    plain.initialize(&x).unwrap();
    for ctx in [&scalar, &c] {
        let err = plain
            .sample_given(ctx, &mut FlowRng::seed_from_u64(0))
            .unwrap_err();
        assert!(
            matches!(&err, CpflowError::InvalidInput(m) if m.contains("unconditional")),
            "{err:?}"
        );
    }
}

/// A one-block image flow on 4×4 grey images (logit first), f64, initialised.
fn small_image_flow() -> (ImageFlow, Tensor) {
    let model = ImageModelConfig {
        width: 4,
        depth: 2,
        nblocks: vec![1],
        float: FloatType::F64,
        ..Default::default()
    };
    let cfg = model.flow_config(ImageShape::new(1, 4, 4), 0.05).unwrap();
    let flow = ImageFlow::new(cfg, &Device::Cpu).unwrap();
    let x = crate::image_common::uniform_rows(4, 16, 0.05, 0.95, 3);
    flow.initialize(&x).unwrap();
    (flow, x)
}

#[test]
fn image_flow_passes_take_zero_images_like_flow() {
    // `Flow` gives empty results for 0 rows (a sample of 0 points); `ImageFlow` refused them
    // ("latents is empty (0 rows)"), so `sample(0, ..)` failed.
    let (flow, x) = small_image_flow();
    let s = flow.sample(0, 1.0, &mut FlowRng::seed_from_u64(0)).unwrap();
    assert_eq!(s.x.dims(), &[0, 16]);
    assert!(s.report.converged.is_empty() && s.report.blocks.is_empty());
    let none = x.narrow(0, 0, 0).unwrap();
    assert_eq!(flow.inverse(&none).unwrap().x.dims(), &[0, 16]);
    assert_eq!(flow.forward(&none).unwrap().dims(), &[0, 16]);
    let (z, ld) = flow.transform(&none).unwrap();
    assert_eq!((z.dims(), ld.dims()), (&[0, 16][..], &[0][..]));
    assert_eq!(flow.log_prob_exact(&none).unwrap().dims(), &[0]);
    let slq = flow
        .log_prob_slq(&none, &SlqConfig::default(), &mut FlowRng::seed_from_u64(0))
        .unwrap();
    assert_eq!(slq.log_prob.dims(), &[0]);
    assert!(slq.std_err.is_empty());
    // 0 images as (0, C, H, W) too; initialisation still needs images.
    let none4 = Tensor::zeros((0, 1, 4, 4), DType::F64, &Device::Cpu).unwrap();
    assert_eq!(flow.log_prob_exact(&none4).unwrap().dims(), &[0]);
    assert!(matches!(
        flow.initialize(&none),
        Err(CpflowError::InvalidInput(_))
    ));
    // Non-empty batches are scored as before.
    assert_eq!(flow.log_prob_exact(&x).unwrap().dims(), &[4]);
}

/// The exact log-det of the whole flow against `log det` of a central-difference Jacobian of
/// `transform`'s `z` (d = 2..5, f64), and SLQ with `steps = d` and many probes against the
/// exact value within its standard error.
#[test]
fn exact_slq_and_finite_difference_log_dets_agree() {
    for d in 2..=5 {
        let flow = two_block_flow(d, 10 + d as u64);
        let x = data(4, d, 20 + d as u64);
        flow.initialize(&x).unwrap();
        let (_, ld) = flow.transform(&x).unwrap();
        let ld = ld.to_vec1::<f64>().unwrap();
        let h = 1e-5;
        for (i, row) in x.to_vec2::<f64>().unwrap().iter().enumerate() {
            let mut pts = Vec::with_capacity(2 * d);
            for j in 0..d {
                for s in [h, -h] {
                    let mut p = row.clone();
                    p[j] += s;
                    pts.push(p);
                }
            }
            let (z, _) = flow
                .transform(&Tensor::new(pts, &Device::Cpu).unwrap())
                .unwrap();
            let z = z.to_vec2::<f64>().unwrap();
            let jac = nalgebra::DMatrix::from_fn(d, d, |k, j| {
                (z[2 * j][k] - z[2 * j + 1][k]) / (2.0 * h)
            });
            // Central differences: O(h²) ≈ 1e-10 truncation plus 1e-16/h ≈ 1e-11 rounding
            // per entry; measured differences are below 1e-10.
            let fd = jac.determinant().ln();
            assert!(
                (ld[i] - fd).abs() < 1e-7,
                "d {d} row {i}: {} vs {fd}",
                ld[i]
            );
        }
        let exact = flow.log_prob_exact(&x).unwrap().to_vec1::<f64>().unwrap();
        let slq = flow
            .log_prob_slq(
                &x,
                &SlqConfig {
                    probes: 64,
                    steps: d,
                },
                &mut FlowRng::seed_from_u64(3),
            )
            .unwrap();
        let est = slq.log_prob.to_vec1::<f64>().unwrap();
        for i in 0..exact.len() {
            // Lanczos with d steps is exact per probe; what is left is the probes'
            // Monte-Carlo error: 5 standard errors (plus rounding).
            let tol = 5.0 * slq.std_err[i] + 1e-9;
            assert!((est[i] - exact[i]).abs() <= tol, "d {d} row {i}");
        }
    }
}

#[test]
fn a_logit_image_flow_scores_its_own_samples() {
    // The logit's inverse maps ℝ onto [−α/(1−2α), (1−α)/(1−2α)] ⊃ [0, 1] (α = 0.05 here:
    // [−0.056, 1.056]), so samples leave [0, 1]; `log_prob_exact`/`forward` refused them
    // ("a logit flow models dequantised images in [0, 1]"), so sample → log_prob failed.
    let (flow, _) = small_image_flow();
    let mut rng = FlowRng::seed_from_u64(1);
    let s = flow.sample(8, 1.0, &mut rng).unwrap();
    assert!(s.report.all_converged());
    let v = s.x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let (lo, hi) = (-0.05 / 0.9, 0.95 / 0.9);
    assert!(
        v.iter().any(|p| !(0.0..=1.0).contains(p)),
        "seed 1 draws pixels outside [0, 1]"
    );
    assert!(v.iter().all(|p| (lo..=hi).contains(p)));
    let lp = flow.log_prob_exact(&s.x).unwrap().to_vec1::<f64>().unwrap();
    assert!(lp.iter().all(|l| l.is_finite()), "{lp:?}");
    // The samples invert back to their latents (f64 image tolerance 1e-11 per block,
    // amplified by the ActNorm and logit inverses).
    let eps = flow
        .prior()
        .sample(
            8,
            16,
            DType::F64,
            &Device::Cpu,
            &mut FlowRng::seed_from_u64(1),
        )
        .unwrap();
    assert!(max_abs_diff(&flow.forward(&s.x).unwrap(), &eps) < 1e-8);
    // Beyond the logit's range the input is still refused, naming the range.
    let out = Tensor::full(1.1f64, (1, 16), &Device::Cpu).unwrap();
    let err = flow.log_prob_exact(&out).unwrap_err();
    assert!(
        matches!(&err, CpflowError::InvalidInput(m) if m.contains("logit's range")),
        "{err:?}"
    );
}
