//! Property tests (fixed seeds): the per-sample solvers are batch invariant. `InversionResult::
//! concat` documents that Newton–CG and the batched L-BFGS give "every sample the same
//! iterates whatever else is in its batch" (cpflow splits batches into chunks on that
//! promise), so a row solved inside a batch, alone, or in a permuted batch must give
//! bit-identical solutions, iteration counts, residuals and reasons — with working-set
//! compaction off, at its default and always on. (The flattened L-BFGS shares its line search
//! and stopping test across the batch and promises no such thing.)

use crate::closed_form::{
    RotatedQuartic, case_rng, fixed_config, gaussian_vector, orthogonal, rows_tensor, spd,
};
use candle_core::{DType, Device, Tensor};
use convex_opt::{
    BatchedLbfgsParams, BatchedPotential, InversionOptions, InversionResult, NewtonCgParams,
    QuadraticPotential, invert_lbfgs_batched, invert_newton_cg,
};
use nalgebra::DVector;
use proptest::prelude::*;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, StandardNormal};

/// Everything a row's result consists of, with floats as bits.
#[derive(Debug, PartialEq, Eq)]
struct RowOutcome {
    x: Vec<u64>,
    iterations: usize,
    residual: u64,
    tolerance: u64,
    converged: bool,
    termination: String,
}

fn outcomes(res: &InversionResult) -> Vec<RowOutcome> {
    let x = res.x.to_vec2::<f64>().unwrap();
    (0..x.len())
        .map(|i| RowOutcome {
            x: x[i].iter().map(|v| v.to_bits()).collect(),
            iterations: res.iterations[i],
            residual: res.residual_inf[i].to_bits(),
            tolerance: res.tolerance[i].to_bits(),
            converged: res.converged[i],
            termination: format!("{:?}", res.termination[i]),
        })
        .collect()
}

type Solve<'a> = Box<dyn Fn(&Tensor) -> InversionResult + 'a>;

/// The batch, each row alone and the permuted batch give the same per-row outcomes.
fn check_invariance(
    name: &str,
    solve: &Solve<'_>,
    y: &Tensor,
    perm: &[usize],
) -> Result<(), TestCaseError> {
    let n = y.dim(0).unwrap();
    let whole = outcomes(&solve(y));
    for (i, want) in whole.iter().enumerate() {
        let alone = outcomes(&solve(&y.narrow(0, i, 1).unwrap()));
        prop_assert_eq!(
            &alone[0],
            want,
            "{}: row {} alone vs in its batch of {}",
            name,
            i,
            n
        );
    }
    let idx = Tensor::from_vec(
        perm.iter().map(|&p| p as u32).collect::<Vec<_>>(),
        perm.len(),
        &Device::Cpu,
    )
    .unwrap();
    let permuted = outcomes(&solve(&y.index_select(&idx, 0).unwrap()));
    for (k, &p) in perm.iter().enumerate() {
        prop_assert_eq!(
            &permuted[k],
            &whole[p],
            "{}: row {} at position {} of a permuted batch",
            name,
            p,
            k
        );
    }
    Ok(())
}

fn potential(kind: u8, d: usize, rng: &mut StdRng) -> Box<dyn BatchedPotential> {
    match kind {
        0 => {
            let cond = 10f64.powf(rng.random_range(0.0..=3.0));
            let a = spd(d, 1.0, cond, rng);
            let b = gaussian_vector(d, 1.0, rng);
            Box::new(QuadraticPotential::new(&a, Some(&b), DType::F64, &Device::Cpu).unwrap())
        }
        _ => {
            // 1: separable (element-wise arithmetic only), 2: rotated (row-times-matrix products).
            let q = (kind == 2).then(|| orthogonal(d, rng));
            let alpha = DVector::from_fn(d, |_, _| 10f64.powf(rng.random_range(-2.0..=0.0)));
            let m = gaussian_vector(d, 1.0, rng);
            let b = gaussian_vector(d, 1.0, rng);
            Box::new(RotatedQuartic::new(q, alpha, m, b, 1.0))
        }
    }
}

proptest! {
    #![proptest_config(fixed_config(96, 0xBA_0001))]

    #[test]
    fn prop_per_sample_solvers_are_batch_invariant(
        d in 1usize..=5,
        n in 2usize..=6,
        seed in any::<u64>(),
        kind in 0u8..=2,
        log_scale in -3.0f64..=3.0,
        compaction in prop_oneof![Just(0.0f64), Just(0.5), Just(1.0)],
    ) {
        let mut rng = case_rng(seed);
        let pot = potential(kind, d, &mut rng);
        // Rows of mixed magnitudes (a factor 100 between rows), so that they converge after
        // different numbers of iterations and the working set shrinks.
        let rows: Vec<DVector<f64>> = (0..n)
            .map(|_| {
                let s = 10f64.powf(log_scale + rng.random_range(-1.0..=1.0));
                DVector::from_fn(d, |_, _| s * Distribution::<f64>::sample(&StandardNormal, &mut rng))
            })
            .collect();
        let y = rows_tensor(&rows, d);
        let mut perm: Vec<usize> = (0..n).collect();
        perm.shuffle(&mut rng);
        let opts = InversionOptions::default();
        let newton = NewtonCgParams::default().with_compaction_threshold(compaction);
        let lbfgs = BatchedLbfgsParams::default().with_compaction_threshold(compaction);
        let solve_newton: Solve<'_> =
            Box::new(|y| invert_newton_cg(&pot, y, &opts, &newton).unwrap());
        let solve_lbfgs: Solve<'_> =
            Box::new(|y| invert_lbfgs_batched(&pot, y, &opts, &lbfgs).unwrap());
        check_invariance("newton", &solve_newton, &y, &perm)?;
        check_invariance("batched", &solve_lbfgs, &y, &perm)?;
    }
}

/// Negative control: a potential whose rows are coupled by a tiny amount (`1e-12` times the
/// batch's mean added to every gradient) is caught, so the equality above is not vacuous.
#[test]
fn coupled_rows_break_batch_invariance() {
    struct Coupled;
    impl BatchedPotential for Coupled {
        fn value_and_gradient(
            &self,
            x: &Tensor,
        ) -> Result<(Tensor, Tensor), convex_opt::ConvexOptError> {
            let value = (x.sqr()?.sum(1)? * 0.5)?;
            let coupling = (x.mean_keepdim(0)? * 1e-12)?;
            Ok((value, x.broadcast_add(&coupling)?))
        }
        fn hvp(&self, _x: &Tensor, v: &Tensor) -> Result<Tensor, convex_opt::ConvexOptError> {
            Ok(v.clone())
        }
    }
    let pot = Coupled;
    let y = Tensor::new(&[[1.0f64, -2.0], [3.0, 0.5], [-0.25, 4.0]], &Device::Cpu).unwrap();
    let opts = InversionOptions::default();
    let solve: Solve<'_> =
        Box::new(|y| invert_newton_cg(&pot, y, &opts, &NewtonCgParams::default()).unwrap());
    assert!(check_invariance("coupled", &solve, &y, &[2, 0, 1]).is_err());
}
