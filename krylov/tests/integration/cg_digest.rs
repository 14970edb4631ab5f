//! A seeded digest of a few thousand ordinary CG solves (nalgebra, faer and, with feature
//! `candle`, tensors in f32, f64 and bf16; no preconditioner and Jacobi; plain and
//! re-orthogonalised CG; several tolerances and scales of `b` and `H`), for checking that a
//! change leaves their results bit for bit as they were. Not part of the suite (ignored):
//! `cargo test -p krylov --features candle --test integration cg_digest -- --ignored --nocapture`
//! before and after the change, and compare the printed digests. The run itself asserts
//! that the solves are deterministic: each backend's grid is solved twice, with one digest.
//!
//! Digests are recorded (in commit messages) and compared across builds, so the hash is
//! FNV-1a (64-bit) over explicitly little-endian bytes, written out here: the same bits give
//! the same digest on every toolchain and platform. (`std`'s `DefaultHasher`, used before,
//! is documented as unspecified and may change with a Rust release; its digests, e.g.
//! `b70f714f3d7b3669`, are not comparable with these.)
#![allow(clippy::type_complexity, clippy::unnecessary_cast)]

use crate::common::*;
use faer::Mat;
use krylov::{
    BatchVectors, CgParams, CgResult, DenseFaerOperator, DenseNalgebraOperator, Preconditioner, cg,
};
use nalgebra::DMatrix;

/// FNV-1a, 64-bit (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`): a hash whose
/// value is fixed by its definition, unlike `std`'s `DefaultHasher`.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    /// A `u64` as its 8 little-endian bytes (`usize` values are widened to `u64` first, so
    /// 32- and 64-bit platforms agree).
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    /// A list: its length, then its items.
    fn u64s(&mut self, vs: impl ExactSizeIterator<Item = u64>) {
        self.u64(vs.len() as u64);
        for v in vs {
            self.u64(v);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The published FNV-1a 64 test vectors: a wrong constant or byte order changes them.
#[test]
fn fnv1a_matches_its_test_vectors() {
    for (input, expected) in [
        ("", 0xcbf2_9ce4_8422_2325u64),
        ("a", 0xaf63_dc4c_8601_ec8c),
        ("foobar", 0x8594_4171_f739_67e8),
    ] {
        let mut h = Fnv1a::new();
        h.bytes(input.as_bytes());
        assert_eq!(h.finish(), expected, "{input:?}: {:016x}", h.finish());
    }
    // Integers are hashed as little-endian bytes, whatever the platform.
    let (mut a, mut b) = (Fnv1a::new(), Fnv1a::new());
    a.u64(0x0102_0304_0506_0708);
    b.bytes(&[8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(a.finish(), b.finish());
}

/// Hashes everything a solve reports: `x` (bits of its host copy), iterations, residual
/// norms, terminations, applications and operator calls.
fn hash_result<V: BatchVectors>(h: &mut Fnv1a, res: &CgResult<V>) {
    let x = res.x.to_host().unwrap();
    h.u64s(x.iter().map(|v| v.to_bits()));
    h.u64s(res.iterations.iter().map(|&k| k as u64));
    h.u64s(res.residual_norms.iter().map(|v| v.to_bits()));
    let termination = format!("{:?}", res.termination);
    h.u64(termination.len() as u64);
    h.bytes(termination.as_bytes());
    h.u64s(res.applications.iter().map(|&k| k as u64));
    h.u64(res.operator_calls as u64);
}

/// One backend's solve of `(c·H_i, s·b)` for `params`.
type Solver<'a> = dyn Fn(&[Mat<f64>], &[f64], &CgParams, &mut Fnv1a) + 'a;

/// A solver on nalgebra (`$dense = DenseNalgebraOperator`) or faer matrices of element `$t`.
macro_rules! host_solver {
    ($t:ty, nalgebra) => {
        Box::new(
            |mats: &[Mat<f64>], b: &[f64], params: &CgParams, h: &mut Fnv1a| {
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
            |mats: &[Mat<f64>], b: &[f64], params: &CgParams, h: &mut Fnv1a| {
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
    let mut total = Fnv1a::new();
    let mut solves = 0usize;
    for (name, solve) in &backends {
        let digest = backend_digest(solve.as_ref(), bsz, &mut solves);
        assert_eq!(
            digest,
            backend_digest(solve.as_ref(), bsz, &mut 0),
            "{name}: a second run of the same solves gave other bits"
        );
        println!("digest {name}: {digest:016x}");
        total.u64(digest);
    }
    println!("digest total over {solves} solves: {:016x}", total.finish());
}

/// The digest of one backend's grid of solves (counted in `solves`).
fn backend_digest(solve: &Solver<'static>, bsz: usize, solves: &mut usize) -> u64 {
    let mut per_backend = Fnv1a::new();
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
