mod common;
use common::*;
use krylov::*;
use nalgebra::DMatrix;

fn run<T>(d: usize, bsz: usize, cond: f64, rtol: f64, seed: u64)
where
    T: krylov::Real + nalgebra::Scalar + nalgebra::RealField,
    DMatrix<T>: BatchVectors,
{
    let mut r = rng(seed);
    let mats: Vec<_> = (0..bsz).map(|_| random_spd(&mut r, d, cond).0).collect();
    let b = gaussian(&mut r, d * bsz);
    let op = DenseNalgebraOperator::new(
        mats.iter().map(|m| DMatrix::<T>::from_fn(d, d, |i, j| T::lossy_from_f64(m[(i, j)]))).collect(),
    )
    .unwrap();
    let bv = DMatrix::<T>::from_iterator(d, bsz, b.iter().map(|v| T::lossy_from_f64(*v)));
    let res = cg(&op, &bv, &CgParams::default().with_rtol(rtol).with_max_iters(10 * d)).unwrap();
    let x = res.x.to_host().unwrap();
    let mut worst_eta: f64 = 0.0;
    let mut worst_rel_true: f64 = 0.0;
    let mut worst_fwd: f64 = 0.0;
    for i in 0..bsz {
        let xi = &x[i * d..(i + 1) * d];
        let bi = &b[i * d..(i + 1) * d];
        let hx = matvec(&mats[i], xi);
        let ri: Vec<f64> = bi.iter().zip(&hx).map(|(a, c)| a - c).collect();
        let eta = norm2(&ri) / (cond * norm2(xi) + norm2(bi));
        worst_eta = worst_eta.max(eta);
        worst_rel_true = worst_rel_true.max(norm_inf(&ri) / norm_inf(bi));
        let xs = faer_solve(&mats[i], bi);
        let e: Vec<f64> = xs.iter().zip(xi).map(|(a, c)| a - c).collect();
        worst_fwd = worst_fwd.max(norm2(&e) / norm2(&xs));
    }
    let maxit = res.iterations.iter().max().unwrap();
    let nconv = res.converged.iter().filter(|c| **c).count();
    eprintln!(
        "{} d={d} B={bsz} cond={cond:e} rtol={rtol:e}: conv {nconv}/{bsz} maxit {maxit} (d={d}) eta {worst_eta:.2e} (eta/u {:.1}) true_rel {worst_rel_true:.2e} fwd {worst_fwd:.2e}",
        std::any::type_name::<T>(),
        worst_eta / T::EPSILON
    );
}

#[test]
fn explore() {
    for &d in &[2usize, 10, 43, 200] {
        for &cond in &[1.0, 1e2, 1e4, 1e6] {
            let bsz = if d == 200 { 4 } else { 32 };
            run::<f64>(d, bsz, cond, 1e-10, 1);
            run::<f32>(d, bsz, cond, 1e-4, 1);
        }
    }
}
