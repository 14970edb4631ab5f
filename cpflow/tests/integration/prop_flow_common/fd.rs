//! Finite differences and small dense linear algebra for the references of `prop_flow.rs`:
//! Jacobians and directional derivatives of row-wise maps, parameter derivatives with an
//! error bound, log-determinants, matrix logarithms, Gaussian log-densities, column
//! statistics (f64, host, nalgebra).

use candle_core::{Device, Tensor};
use cpflow::Flow;
use nalgebra::DMatrix;

use super::{U64, rows};

/// The entries of the flow's variables (init flags excluded) that `picks` name (each taken
/// modulo the number of entries): `(name, variable, flat index)`.
pub fn pick_entries(flow: &Flow, picks: &[u64]) -> Vec<(String, candle_core::Var, usize)> {
    let vars: Vec<_> = flow
        .named_vars()
        .into_iter()
        .filter(|(k, _)| !k.ends_with("initialized"))
        .collect();
    let total: u64 = vars.iter().map(|(_, v)| v.elem_count() as u64).sum();
    picks
        .iter()
        .map(|pick| {
            let mut at = (pick % total) as usize;
            for (name, var) in &vars {
                if at < var.elem_count() {
                    return (name.clone(), var.clone(), at);
                }
                at -= var.elem_count();
            }
            unreachable!("the picks are reduced modulo the entry count")
        })
        .collect()
}

/// The derivative of `f()` in entry `at` of `var` by the five-point stencil with step `h =
/// rel_step · max(1, |θ|)`, the variable restored after, and a bound on its error: `(d(h),
/// err)`. The stencil's truncation error is `∝ h⁴`, so in its asymptotic range `|d(h) −
/// d(2h)|` is 15 times the error of `d(h)` (some parameters bend the loss on a scale of
/// 1e-3 — an inner ActNorm scale of e^4.7 = 110 on a near-constant context unit —, where a
/// step of 1e-3 was off by 1.6e-4 relative); its rounding error is `(18/12)·ε/h` for values
/// `f` off by `ε`, taken as `64·u·max|f|` (a loss summed over rows whose log-densities reach
/// −2e9 at points far out in a random flow leaves no digits for a difference there).
pub fn param_derivative(
    var: &candle_core::Var,
    at: usize,
    rel_step: f64,
    f: impl Fn() -> f64,
) -> (f64, f64) {
    let base = var.as_tensor().copy().unwrap();
    let flat = base.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let fmax = std::cell::Cell::new(0.0f64);
    let value_at = |t: f64| -> f64 {
        let mut p = flat.clone();
        p[at] += t;
        var.set(&Tensor::from_vec(p, base.shape(), &Device::Cpu).unwrap())
            .unwrap();
        let v = f();
        fmax.set(fmax.get().max(v.abs()));
        v
    };
    let h = rel_step * flat[at].abs().max(1.0);
    let stencil = |h: f64| {
        (-value_at(2.0 * h) + 8.0 * value_at(h) - 8.0 * value_at(-h) + value_at(-2.0 * h))
            / (12.0 * h)
    };
    let (d1, d2) = (stencil(h), stencil(2.0 * h));
    var.set(&base).unwrap();
    let rounding = 1.5 * 64.0 * U64 * fmax.get() / h;
    (d1, (d1 - d2).abs() + rounding)
}

/// Per column of `h` (`(n, d)`), the mean and the biased standard deviation (two-pass, f64).
pub fn column_stats(h: &[Vec<f64>]) -> Vec<(f64, f64)> {
    let n = h.len() as f64;
    (0..h[0].len())
        .map(|j| {
            let m = h.iter().map(|r| r[j]).sum::<f64>() / n;
            let v = h.iter().map(|r| (r[j] - m).powi(2)).sum::<f64>() / n;
            (m, v.sqrt())
        })
        .collect()
}

/// The relative step of the finite differences ([`fd_jacobians`]): the five-point stencil's
/// truncation `h⁴/30·|f⁽⁵⁾|` and rounding `1.5·u·|f|/h` balance near `h ≈ 1e-3` for O(1)
/// derivatives; the flows here bend faster (Jacobian singular values up to ~1e3), so a
/// smaller step: `1e-4 · max(1, |x_j|)`, where the rounding is ≈ 2e-12·|f|.
pub const FD_STEP: f64 = 1e-4;

/// Finite-difference Jacobians `∂f(x_b)/∂x_b` of a row-wise map `f` at each row of `x`
/// (`(B, d)`; contexts `ctx` repeated for the shifted copies) by the five-point stencil
/// `(−f(x+2h) + 8f(x+h) − 8f(x−h) + f(x−2h)) / 12h` (central differences with one
/// Richardson step: error O(h⁴)), `h = rel_step · max(1, |x_bj|)`, from one call of `f` on
/// all `4·d·B` shifted rows.
pub fn fd_jacobians_with_step(
    x: &Tensor,
    ctx: Option<&Tensor>,
    rel_step: f64,
    f: impl Fn(&Tensor, Option<&Tensor>) -> Tensor,
) -> Vec<DMatrix<f64>> {
    const SHIFTS: [f64; 4] = [2.0, 1.0, -1.0, -2.0];
    const WEIGHTS: [f64; 4] = [-1.0, 8.0, -8.0, 1.0];
    let xs = rows(x);
    let (b, d) = (xs.len(), x.dim(1).unwrap());
    let per_row = SHIFTS.len() * d;
    let mut shifted = Vec::with_capacity(per_row * b * d);
    let mut steps = Vec::with_capacity(b * d);
    let mut owner = Vec::with_capacity(per_row * b);
    for (r, row) in xs.iter().enumerate() {
        for j in 0..d {
            let h = rel_step * row[j].abs().max(1.0);
            steps.push(h);
            for k in SHIFTS {
                let mut p = row.clone();
                p[j] += k * h;
                shifted.extend(p);
                owner.push(r as u32);
            }
        }
    }
    let shifted = Tensor::from_vec(shifted, (per_row * b, d), &Device::Cpu).unwrap();
    let ctx = ctx.map(|c| {
        let idx = Tensor::from_vec(owner, per_row * b, &Device::Cpu).unwrap();
        c.index_select(&idx, 0).unwrap()
    });
    let out = rows(&f(&shifted, ctx.as_ref()));
    (0..b)
        .map(|r| {
            DMatrix::from_fn(d, d, |i, j| {
                let k0 = (r * d + j) * SHIFTS.len();
                let sum: f64 = (0..SHIFTS.len()).map(|k| WEIGHTS[k] * out[k0 + k][i]).sum();
                sum / (12.0 * steps[r * d + j])
            })
        })
        .collect()
}

/// [`fd_jacobians_with_step`] at [`FD_STEP`].
pub fn fd_jacobians(
    x: &Tensor,
    ctx: Option<&Tensor>,
    f: impl Fn(&Tensor, Option<&Tensor>) -> Tensor,
) -> Vec<DMatrix<f64>> {
    fd_jacobians_with_step(x, ctx, FD_STEP, f)
}

/// Per row `b` of `x`, the derivative of `f` along `dirs[b]` by the five-point stencil
/// (as [`fd_jacobians_with_step`]) with step `rel_step · max(1, |x_b|∞) / |dirs_b|∞`.
pub fn fd_directional(
    x: &Tensor,
    ctx: Option<&Tensor>,
    dirs: &[Vec<f64>],
    rel_step: f64,
    f: impl Fn(&Tensor, Option<&Tensor>) -> Tensor,
) -> Vec<Vec<f64>> {
    const SHIFTS: [f64; 4] = [2.0, 1.0, -1.0, -2.0];
    const WEIGHTS: [f64; 4] = [-1.0, 8.0, -8.0, 1.0];
    let xs = rows(x);
    let (b, d) = (xs.len(), x.dim(1).unwrap());
    let mut shifted = Vec::with_capacity(SHIFTS.len() * b * d);
    let mut steps = Vec::with_capacity(b);
    for (row, dir) in xs.iter().zip(dirs) {
        let xmax = row.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let dmax = dir.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
        let h = rel_step * xmax / dmax;
        steps.push(h);
        for k in SHIFTS {
            shifted.extend(row.iter().zip(dir).map(|(x, v)| x + k * h * v));
        }
    }
    let shifted = Tensor::from_vec(shifted, (SHIFTS.len() * b, d), &Device::Cpu).unwrap();
    let ctx = ctx.map(|c| {
        let idx: Vec<u32> = (0..b as u32).flat_map(|r| [r; 4]).collect();
        let idx = Tensor::from_vec(idx, SHIFTS.len() * b, &Device::Cpu).unwrap();
        c.index_select(&idx, 0).unwrap()
    });
    let out = rows(&f(&shifted, ctx.as_ref()));
    (0..b)
        .map(|r| {
            (0..out[0].len())
                .map(|i| {
                    let k0 = r * SHIFTS.len();
                    let sum: f64 = (0..SHIFTS.len()).map(|k| WEIGHTS[k] * out[k0 + k][i]).sum();
                    sum / (12.0 * steps[r])
                })
                .collect()
        })
        .collect()
}

/// `(sign, log|det A|)` by LU with partial pivoting (nalgebra).
pub fn sign_logdet(a: &DMatrix<f64>) -> (f64, f64) {
    let lu = a.clone().lu();
    let u = lu.u();
    let mut sign = if lu.p().determinant::<f64>() < 0.0 {
        -1.0
    } else {
        1.0
    };
    let mut ld = 0.0;
    for i in 0..a.nrows() {
        let v = u[(i, i)];
        if v < 0.0 {
            sign = -sign;
        }
        ld += v.abs().ln();
    }
    (sign, ld)
}

/// `log N(z; 0, e^{log_var} I)` of one row.
pub fn log_normal(z: &[f64], log_var: f64) -> f64 {
    let d = z.len() as f64;
    let sq: f64 = z.iter().map(|v| v * v).sum();
    -0.5 * sq / log_var.exp() - 0.5 * d * ((2.0 * std::f64::consts::PI).ln() + log_var)
}

/// The matrix logarithm of the symmetric part of `a` (which must be positive definite), by
/// nalgebra's symmetric eigendecomposition.
pub fn sym_log(a: &DMatrix<f64>) -> DMatrix<f64> {
    let s = (a + a.transpose()) * 0.5;
    let eig = s.symmetric_eigen();
    assert!(
        eig.eigenvalues.iter().all(|&l| l > 0.0),
        "not positive definite: {:?}",
        eig.eigenvalues
    );
    let logs = DMatrix::from_diagonal(&eig.eigenvalues.map(f64::ln));
    &eig.eigenvectors * logs * eig.eigenvectors.transpose()
}
