//! A seeded digest of a few thousand ordinary CG solves (nalgebra, faer and, with feature
//! `candle`, tensors in f32, f64 and bf16; no preconditioner and Jacobi; plain and
//! re-orthogonalised CG; several tolerances and scales of `b` and `H`), for checking that a
//! change leaves their results bit for bit as they were. Not part of the suite (ignored):
//! `cargo test -p krylov --features candle --test integration cg_digest -- --ignored --nocapture`
//! before and after the change, and compare the printed digests. The run itself asserts
//! that the solves are deterministic: each backend's grid is solved twice, with one digest.
#![allow(clippy::type_complexity, clippy::unnecessary_cast)]

use crate::common::*;
use faer::Mat;
use krylov::{
    BatchVectors, CgParams, CgResult, DenseFaerOperator, DenseNalgebraOperator, Preconditioner, cg,
};
use nalgebra::DMatrix;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// Hashes everything a solve reports: `x` (bits of its host copy), iterations, residual
/// norms, terminations, applications and operator calls.
fn hash_result<V: BatchVectors>(h: &mut DefaultHasher, res: &CgResult<V>) {
    for v in res.x.to_host().unwrap() {
        v.to_bits().hash(h);
    }
    res.iterations.hash(h);
    for v in &res.residual_norms {
        v.to_bits().hash(h);
    }
    format!("{:?}", res.termination).hash(h);
    res.applications.hash(h);
    res.operator_calls.hash(h);
}

/// One backend's solve of `(c·H_i, s·b)` for `params`.
type Solver<'a> = dyn Fn(&[Mat<f64>], &[f64], &CgParams, &mut DefaultHasher) + 'a;

/// A solver on nalgebra (`$dense = DenseNalgebraOperator`) or faer matrices of element `$t`.
macro_rules! host_solver {
    ($t:ty, nalgebra) => {
        Box::new(
            |mats: &[Mat<f64>], b: &[f64], params: &CgParams, h: &mut DefaultHasher| {
                let d = mats[0].nrows();
                let bsz = mats.len();
                let op = DenseNalgebraOperator::new(
                    mats.iter()
                        .map(|m| DMatrix::from_fn(d, d, |i, j| m[(i, j)] as $t))
                        .collect(),
                )
                .unwrap();
                let bv = DMatrix::from_fn(d, bsz, |i, j| b[j * d + i] as $t);
                hash_result(h, &cg(&op, &bv, params).unwrap());
            },
        ) as Box<Solver<'static>>
    };
    ($t:ty, faer) => {
        Box::new(
            |mats: &[Mat<f64>], b: &[f64], params: &CgParams, h: &mut DefaultHasher| {
                let d = mats[0].nrows();
                let bsz = mats.len();
                let op = DenseFaerOperator::new(
                    mats.iter()
                        .map(|m| Mat::from_fn(d, d, |i, j| m[(i, j)] as $t))
                        .collect(),
                )
                .unwrap();
                let bv = faer_batch(b, d, bsz, |v| v as $t);
                hash_result(h, &cg(&op, &bv, params).unwrap());
            },
        ) as Box<Solver<'static>>
    };
}

#[cfg(feature = "candle")]
fn tensor_solver(dtype: candle_core::DType) -> Box<Solver<'static>> {
    use candle_core::{Device, Tensor};
    use krylov::DenseTensorOperator;
    Box::new(move |mats, b, params, h| {
        let d = mats[0].nrows();
        let bsz = mats.len();
        let flat: Vec<f64> = mats
            .iter()
            .flat_map(|m| (0..d * d).map(move |k| m[(k / d, k % d)]))
            .collect();
        let ht = Tensor::from_vec(flat, (bsz, d, d), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let op = DenseTensorOperator::new(ht).unwrap();
        let bt = Tensor::from_vec(b.to_vec(), (bsz, d), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        hash_result(h, &cg(&op, &bt, params).unwrap());
    })
}

#[test]
#[ignore = "digest for bit-identity checks; run by hand"]
fn cg_digest() {
    #[cfg_attr(not(feature = "candle"), allow(unused_mut))]
    let mut backends: Vec<(&str, Box<Solver<'static>>)> = vec![
        ("nalgebra f32", host_solver!(f32, nalgebra)),
        ("nalgebra f64", host_solver!(f64, nalgebra)),
        ("faer f32", host_solver!(f32, faer)),
        ("faer f64", host_solver!(f64, faer)),
    ];
    #[cfg(feature = "candle")]
    {
        use candle_core::DType;
        backends.push(("candle f32", tensor_solver(DType::F32)));
        backends.push(("candle f64", tensor_solver(DType::F64)));
        backends.push(("candle bf16", tensor_solver(DType::BF16)));
    }
    let bsz = 8;
    let mut total = DefaultHasher::new();
    let mut solves = 0usize;
    for (name, solve) in &backends {
        let digest = backend_digest(solve.as_ref(), bsz, &mut solves);
        assert_eq!(
            digest,
            backend_digest(solve.as_ref(), bsz, &mut 0),
            "{name}: a second run of the same solves gave other bits"
        );
        println!("digest {name}: {digest:016x}");
        digest.hash(&mut total);
    }
    println!("digest total over {solves} solves: {:016x}", total.finish());
}

/// The digest of one backend's grid of solves (counted in `solves`).
fn backend_digest(solve: &Solver<'static>, bsz: usize, solves: &mut usize) -> u64 {
    let mut per_backend = DefaultHasher::new();
    for (seed, d) in [(1u64, 4usize), (2, 12), (3, 12), (4, 30)] {
        let mut r = rng(1000 + seed);
        let base: Vec<Mat<f64>> = (0..bsz)
            .map(|i| {
                let m = random_spd(&mut r, d, 2.0 * 300f64.powf(i as f64 / 7.0)).0;
                let sc: Vec<f64> = (0..d)
                    .map(|k| 10f64.powf(k as f64 / (d - 1) as f64 - 0.5))
                    .collect();
                Mat::from_fn(d, d, |a, c| sc[a] * m[(a, c)] * sc[c])
            })
            .collect();
        let b0 = gaussian(&mut r, d * bsz);
        for c in [1.0, 1e6] {
            let mats: Vec<Mat<f64>> = base
                .iter()
                .map(|m| Mat::from_fn(d, d, |a, k| c * m[(a, k)]))
                .collect();
            for s in [1.0, 1e-8, 1e8, 1e-30, 1e30] {
                let b: Vec<f64> = b0.iter().map(|v| s * v).collect();
                for pre in [Preconditioner::None, Preconditioner::Jacobi] {
                    for reorth in [false, true] {
                        for rtol in [1e-2, 1e-5, 0.0] {
                            let params = CgParams::default()
                                .with_rtol(rtol)
                                .with_preconditioner(pre)
                                .with_reorthogonalize(reorth);
                            solve(&mats, &b, &params, &mut per_backend);
                            *solves += 1;
                        }
                    }
                }
            }
        }
    }
    per_backend.finish()
}
