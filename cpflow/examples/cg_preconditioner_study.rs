//! What the mean-Hessian preconditioner (`train.surrogate.preconditioner = "mean-hessian"`)
//! does to the training surrogate's CG solves on a trained flow: the first block's Jacobians
//! `H(x)` at `n` data rows, their condition numbers, and the CG iterations to the training
//! test (`‖v − Hu‖∞ ≤ 1e-3` from `u₀ = v`, Rademacher `v`, as the trainer) on the second half
//! of the rows with no preconditioner, Jacobi, and the mean Jacobian of the first `k` rows of
//! the first half (`k` = 1 … 32). Prints a markdown table.
//!
//! ```text
//! cargo run --release -p cpflow --example cg_preconditioner_study -- MODEL DATA [n]
//! ```
//! `MODEL`: a model or checkpoint (`cpflow train`'s `model.safetensors`); `DATA`: a `.npy`
//! file of rows, or `bsds300` for the validation patches of `../shared/data`'s BSDS300; `n`:
//! rows (default 512).
use candle_core::{DType, Device, Tensor};
use cpflow::datasets::{Bsds300Config, load_bsds300, read_npy_file};
use cpflow::{Flow, Layer};
use krylov::{
    CgParams, DenseNalgebraOperator, KrylovError, Preconditioner, WithPreconditioner,
    cg_with_initial_guess,
};
use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The first block's Jacobians at the rows, as `d × d` host matrices.
fn jacobians(flow: &Flow, rows: &Tensor) -> anyhow::Result<Vec<DMatrix<f64>>> {
    let mut x = rows.clone();
    for layer in flow.layers() {
        match layer {
            Layer::ActNorm(a) => x = a.forward(&x)?.0,
            Layer::Cpf(b) => {
                let (_, h) = b.forward_and_hessian(&x, None)?;
                let (n, d, _) = h.dims3()?;
                let flat = h.detach().to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
                return Ok((0..n)
                    .map(|k| DMatrix::from_row_slice(d, d, &flat[k * d * d..(k + 1) * d * d]))
                    .collect());
            }
        }
    }
    anyhow::bail!("the flow has no CP-Flow block")
}

/// The median of `cond(S⁻¹ H S⁻ᵀ)` over `hs`, `S` a Cholesky factor of `m` (identity: `None`).
fn median_condition(hs: &[DMatrix<f64>], m: Option<&DMatrix<f64>>) -> anyhow::Result<f64> {
    let l_inv = match m {
        Some(m) => {
            let l = m
                .clone()
                .cholesky()
                .ok_or_else(|| anyhow::anyhow!("M is not SPD"))?;
            Some(
                l.l()
                    .try_inverse()
                    .ok_or_else(|| anyhow::anyhow!("singular factor"))?,
            )
        }
        None => None,
    };
    let mut conds: Vec<f64> = hs
        .iter()
        .map(|h| {
            let b = match &l_inv {
                Some(li) => li * h * li.transpose(),
                None => h.clone(),
            };
            let e = b.symmetric_eigenvalues();
            e.max() / e.min()
        })
        .collect();
    conds.sort_by(f64::total_cmp);
    Ok(conds[conds.len() / 2])
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in `main`, before any thread is spawned: nothing else reads or
    // writes the environment.
    unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() >= 3,
        "usage: cg_preconditioner_study MODEL DATA [n]"
    );
    let n: usize = a.get(3).map_or(Ok(512), |s| s.parse())?;
    anyhow::ensure!(n >= 4, "n must be at least 4");
    let dev = Device::Cpu;
    let flow = Flow::load(a[1].as_ref(), &dev)?;
    let data = if a[2] == "bsds300" {
        load_bsds300("../shared/data".as_ref(), &Bsds300Config::default())?.val
    } else {
        read_npy_file(a[2].as_ref())?.to_f32()
    };
    let n = n.min(data.rows());
    let rows = data.slice_rows(0, n).to_tensor(flow.dtype(), &dev)?;
    let hs = jacobians(&flow, &rows)?;
    let d = hs[0].nrows();
    let (reference, test) = hs.split_at(n / 2);

    let mut rng = StdRng::seed_from_u64(0);
    let v = DMatrix::from_fn(
        d,
        test.len(),
        |_, _| {
            if rng.random::<bool>() { 1.0 } else { -1.0 }
        },
    );
    let op = DenseNalgebraOperator::new(test.to_vec())?;
    let params = CgParams::default()
        .with_atol(1e-3)
        .with_rtol(0.0)
        .with_max_iters(10 * d)
        .with_confirm_with_true_residual(false);
    let stats = |its: &[usize]| {
        let mean = its.iter().sum::<usize>() as f64 / its.len() as f64;
        (mean, its.iter().copied().max().unwrap_or(0))
    };
    println!(
        "{} rows of d = {d} (block 1): Jacobians at rows {}..{n}, CG from u₀ = v to ‖v − Hu‖∞ ≤ 1e-3\n",
        n,
        n / 2
    );
    println!("| preconditioner | mean CG iterations | max | median cond(M⁻¹H) |");
    println!("|---|---|---|---|");
    let plain = cg_with_initial_guess(&op, &v, &v, &params)?;
    let (mean, max) = stats(&plain.iterations);
    let cond = median_condition(test, None)?;
    println!("| none | {mean:.2} | {max} | {cond:.1} |");
    let jacobi = cg_with_initial_guess(
        &op,
        &v,
        &v,
        &params.clone().with_preconditioner(Preconditioner::Jacobi),
    )?;
    let (mean, max) = stats(&jacobi.iterations);
    println!("| Jacobi | {mean:.2} | {max} | |");
    for k in [1, 2, 4, 8, 16, 32] {
        if k > reference.len() {
            break;
        }
        let m = reference[..k]
            .iter()
            .fold(DMatrix::zeros(d, d), |s, h| s + h)
            / k as f64;
        let m_inv = m.clone().cholesky().map(|c| c.inverse());
        let m_inv = m_inv.ok_or_else(|| anyhow::anyhow!("the mean of {k} Jacobians is not SPD"))?;
        let pre = WithPreconditioner::new(
            &op,
            |r: &DMatrix<f64>, _: &[bool]| -> Result<DMatrix<f64>, KrylovError> { Ok(&m_inv * r) },
        );
        let res = cg_with_initial_guess(
            &pre,
            &v,
            &v,
            &params.clone().with_preconditioner(Preconditioner::Supplied),
        )?;
        anyhow::ensure!(
            res.all_converged(),
            "mean of {k}: not every system converged"
        );
        let (mean, max) = stats(&res.iterations);
        let cond = median_condition(test, Some(&m))?;
        println!("| mean Jacobian of {k} rows | {mean:.2} | {max} | {cond:.1} |");
    }
    Ok(())
}
