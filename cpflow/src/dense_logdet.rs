//! The differentiable exact log-det used by [`crate::Flow::exact_nll_loss`]: values and
//! inverses of batches of SPD Jacobians on the host (faer Cholesky), gradients through the
//! trace identity. (Plain log-det values come from `logdet::exact_logdet_tensor`.)

use candle_core::{DType, Tensor};
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

use crate::error::{CpflowError, Result};

/// Host copy of a `(B, d, d)` tensor as `B` faer matrices (f64).
fn to_host_mats(h: &Tensor) -> Result<Vec<Mat<f64>>> {
    let (b, d, d2) = h.dims3()?;
    if d != d2 {
        return Err(CpflowError::InvalidInput(format!(
            "expected square matrices, got {d}×{d2}"
        )));
    }
    let flat = h
        .detach()
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok((0..b)
        .map(|k| Mat::from_fn(d, d, |i, j| flat[k * d * d + i * d + j]))
        .collect())
}

fn cholesky(m: &Mat<f64>, k: usize) -> Result<faer::linalg::solvers::Llt<f64>> {
    m.llt(Side::Lower).map_err(|_| {
        CpflowError::InvalidInput(format!(
            "the Jacobian of sample {k} is not numerically positive definite (Cholesky failed); \
             the weights or the input are probably non-finite"
        ))
    })
}

/// The log-dets and the inverses `H_b⁻¹` (as a detached `(B, d, d)` tensor like `h`).
/// A matrix that is not numerically positive definite is [`CpflowError::InvalidInput`].
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::dense_logdet::exact_logdet_and_inverse_host;
/// # fn main() -> cpflow::Result<()> {
/// let h = Tensor::new(&[[[2.0f64, 0.0], [0.0, 4.0]]], &Device::Cpu)?; // diag(2, 4)
/// let (logdets, inv) = exact_logdet_and_inverse_host(&h)?;
/// assert!((logdets[0] - 8f64.ln()).abs() < 1e-14);
/// let inv = inv.to_vec3::<f64>()?;
/// assert!((inv[0][0][0] - 0.5).abs() < 1e-15 && (inv[0][1][1] - 0.25).abs() < 1e-15);
/// assert_eq!((inv[0][0][1], inv[0][1][0]), (0.0, 0.0));
/// // Indefinite: refused.
/// let bad = Tensor::new(&[[[1.0f64, 2.0], [2.0, 1.0]]], &Device::Cpu)?;
/// assert!(matches!(
///     exact_logdet_and_inverse_host(&bad),
///     Err(cpflow::CpflowError::InvalidInput(_))
/// ));
/// # Ok(())
/// # }
/// ```
pub fn exact_logdet_and_inverse_host(h: &Tensor) -> Result<(Vec<f64>, Tensor)> {
    let mats = to_host_mats(h)?;
    let (b, d, _) = h.dims3()?;
    let mut lds = Vec::with_capacity(b);
    let mut inv = Vec::with_capacity(b * d * d);
    for (k, m) in mats.iter().enumerate() {
        let llt = cholesky(m, k)?;
        let l = llt.L();
        lds.push(2.0 * (0..d).map(|i| l[(i, i)].ln()).sum::<f64>());
        let hi = llt.inverse();
        for i in 0..d {
            for j in 0..d {
                inv.push(hi[(i, j)]);
            }
        }
    }
    let inv = Tensor::from_vec(inv, (b, d, d), h.device())?.to_dtype(h.dtype())?;
    Ok((lds, inv))
}

/// A `(B,)` tensor whose **value** is `log det H_b` (host Cholesky) and whose **gradient** is
/// that of `log det H_b`, through the trace identity `∂ log det H = tr(H⁻¹ ∂H)`: with `H⁻¹`
/// computed on the host and detached, `T_b = Σ_ij (H⁻¹)_ji H_ij` has `∂T = tr(H⁻¹ ∂H)`, and
/// the result is `logdet + T − detach(T)`. `h` must be parameter-tracking for a gradient.
///
/// ```
/// use cpflow::candle::{Device, Var};
/// use cpflow::dense_logdet::differentiable_logdet;
/// # fn main() -> cpflow::Result<()> {
/// // H = [[2, 0.5], [0.5, 3]]: log det H = log 5.75, ∂ log det H / ∂H = H⁻¹.
/// let h = Var::from_vec(vec![2.0f64, 0.5, 0.5, 3.0], (1, 2, 2), &Device::Cpu)?;
/// let ld = differentiable_logdet(h.as_tensor())?;
/// assert!((ld.to_vec1::<f64>()?[0] - 5.75f64.ln()).abs() < 1e-14);
/// let grads = ld.sum_all()?.backward()?;
/// let g = grads.get(h.as_tensor()).expect("gradient").flatten_all()?.to_vec1::<f64>()?;
/// let inv = [3.0 / 5.75, -0.5 / 5.75, -0.5 / 5.75, 2.0 / 5.75];
/// assert!(g.iter().zip(inv).all(|(a, b)| (a - b).abs() < 1e-14));
/// # Ok(())
/// # }
/// ```
pub fn differentiable_logdet(h: &Tensor) -> Result<Tensor> {
    let (lds, inv) = exact_logdet_and_inverse_host(h)?;
    // (H⁻¹)ᵀ = H⁻¹ for symmetric H; use the transpose anyway so the identity holds as written.
    let t = (inv.transpose(1, 2)? * h)?.sum((1, 2))?;
    let ld = Tensor::from_vec(lds, t.dims1()?, h.device())?.to_dtype(h.dtype())?;
    Ok((ld + (&t - t.detach())?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn logdet_and_gradient_match_closed_forms() {
        // H = [[a, c], [c, b]]: log det = log(ab − c²); ∂/∂a = b/(ab−c²), ∂/∂c (both entries) = −2c/(ab−c²).
        let (a, b, c) = (2.0f64, 3.0, 0.5);
        let var = Var::from_vec(vec![a, c, c, b], (1, 2, 2), &Device::Cpu).unwrap();
        let ld = differentiable_logdet(var.as_tensor()).unwrap();
        let det = a * b - c * c;
        assert!((ld.to_vec1::<f64>().unwrap()[0] - det.ln()).abs() < 1e-14);
        let g = ld.sum_all().unwrap().backward().unwrap();
        let g = g
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert!((g[0] - b / det).abs() < 1e-14);
        assert!((g[3] - a / det).abs() < 1e-14);
        assert!((g[1] + c / det).abs() < 1e-14 && (g[2] + c / det).abs() < 1e-14);
    }
}
