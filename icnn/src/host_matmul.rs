//! Matrix products of 2-D CPU f32/f64 tensors with faer, as a candle custom op:
//! [`host_matmul`].
//!
//! candle's CPU `matmul` runs the gemm crate's kernels (AVX2 on stable Rust) and, under the
//! threading threshold the `cpflow` binaries set (small tabular products stay on one thread),
//! on one thread for products of ~10⁸ multiply-adds as well: the VAE's full-window
//! convolutions (`(100 × 2240) · (2240 × 512)`, forward and two backward products) and its
//! merged head kernel ran serially on the driver thread while the other core waited. Here the
//! products use faer (AVX-512 where the CPU has it; `host_gemm`), split over rayon's threads
//! from [`PARALLEL_MIN_MULTIPLY_ADDS`]. The backward is the same op on transposed views of the
//! saved operands (no copies), so gradients reach both factors.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use faer::Par;

use crate::host_gemm::{GemmFloat, View, matmul_into};
use crate::{IcnnError, Result};

/// Products with at least this many multiply-adds (`m·k·n`) split over rayon's threads; smaller
/// ones run on the calling thread (a tabular step's `(1024 × 64) · (64 × 64)`, 4·10⁶, is
/// faster without the wake-ups, see `cpflow::cpu_threads::GEMM_THREADING_THRESHOLD`).
pub const PARALLEL_MIN_MULTIPLY_ADDS: usize = 1 << 24;

/// `a (m × k) · b (k × n)`, the values of candle's `a.matmul(b)` to rounding, differentiable
/// w.r.t. both by candle's autodiff (first derivatives). On CPU f32/f64 the product is faer's
/// on the operands' own strides (transposed views cost no copy), split over rayon's threads
/// from [`PARALLEL_MIN_MULTIPLY_ADDS`]; other devices and dtypes call candle's `matmul`.
///
/// # Errors
/// [`IcnnError::Shape`] when an operand is not 2-D or the inner dimensions differ; candle
/// errors (dtype mismatch, ...) otherwise.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use icnn::host_matmul;
///
/// # fn main() -> icnn::Result<()> {
/// let dev = Device::Cpu;
/// let a = Var::from_tensor(&Tensor::arange(0f64, 6.0, &dev)?.reshape((2, 3))?)?;
/// let b = Tensor::arange(0f64, 12.0, &dev)?.reshape((4, 3))?.t()?; // (3 × 4), strided
/// let y = host_matmul(a.as_tensor(), &b)?;
/// let want = a.as_tensor().matmul(&b.contiguous()?)?;
/// assert_eq!(y.to_vec2::<f64>()?, want.to_vec2::<f64>()?);
/// // d/da Σ (a·b) = 1·bᵀ: each row of the gradient holds b's row sums.
/// let g = y.sum_all()?.backward()?;
/// let ga = g.get(a.as_tensor()).expect("gradient of a").to_vec2::<f64>()?;
/// assert_eq!(ga[0], vec![18.0, 22.0, 26.0]);
/// # Ok(())
/// # }
/// ```
pub fn host_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (Ok((m, k)), Ok((k2, n))) = (a.dims2(), b.dims2()) else {
        return Err(IcnnError::Shape(format!(
            "host_matmul: operands must be 2-D, got {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    };
    if k != k2 {
        return Err(IcnnError::Shape(format!(
            "host_matmul: ({m} × {k}) · ({k2} × {n}) do not chain"
        )));
    }
    let host = crate::takes_host_kernels(a.device())
        && crate::takes_host_kernels(b.device())
        && matches!(a.dtype(), DType::F32 | DType::F64)
        && a.dtype() == b.dtype();
    if !host {
        return Ok(a.matmul(b)?);
    }
    Ok(a.apply_op2(b, HostMatmul)?)
}

/// `a · b` with faer.
#[derive(Clone, Copy, Debug)]
struct HostMatmul;

/// The `rows × cols` view of a 2-D layout over `data`.
fn view<'a, T>(data: &'a [T], l: &Layout) -> candle_core::Result<View<'a, T>> {
    let (rows, cols) = l.shape().dims2()?;
    let &[rs, cs] = l.stride() else {
        candle_core::bail!("host_matmul: expected a 2-D layout");
    };
    let data = data
        .get(l.start_offset()..)
        .ok_or_else(|| candle_core::Error::Msg("host_matmul: layout outside its storage".into()))?;
    Ok(View {
        data,
        rows,
        cols,
        rs,
        cs,
    })
}

fn product<T: GemmFloat>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
) -> candle_core::Result<Vec<T>> {
    let (a, b) = (view(a, la)?, view(b, lb)?);
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let par = if m.saturating_mul(k).saturating_mul(n) >= PARALLEL_MIN_MULTIPLY_ADDS {
        Par::rayon(rayon::current_num_threads())
    } else {
        Par::Seq
    };
    let mut out = vec![T::zero(); m * n];
    matmul_into(&mut out, a, b, false, par)?;
    Ok(out)
}

impl CustomOp2 for HostMatmul {
    fn name(&self) -> &'static str {
        "host-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, n) = (l1.shape().dims2()?.0, l2.shape().dims2()?.1);
        let out = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(product(a, l1, b, l2)?),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(product(a, l1, b, l2)?),
            (a, b) => candle_core::bail!(
                "host_matmul: expected f32 or f64 operands of one type, got {:?} and {:?}",
                a.dtype(),
                b.dtype()
            ),
        };
        Ok((out, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let da = if a.track_op() {
            Some(grad.apply_op2_no_bwd(&b.t()?, self)?)
        } else {
            None
        };
        let db = if b.track_op() {
            Some(a.t()?.apply_op2_no_bwd(grad, self)?)
        } else {
            None
        };
        Ok((da, db))
    }
}

#[cfg(test)]
mod tests {
    //! Against candle's `matmul` on contiguous copies: values and the gradients of
    //! `⟨a·b, r⟩`. Both sum `k` products per entry in their own blocking, so f64 agrees to
    //! ~1e-13 relative to the entries' scale (1e-12 held) and f32 to 1e-4.
    use super::{PARALLEL_MIN_MULTIPLY_ADDS, host_matmul};
    use candle_core::{DType, Device, Tensor, Var};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn rand(rng: &mut StdRng, r: usize, c: usize, dtype: DType) -> Tensor {
        let v: Vec<f64> = (0..r * c)
            .map(|_| 2.0 * rng.random::<f64>() - 1.0)
            .collect();
        Tensor::from_vec(v, (r, c), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
        let f = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let (a, b) = (f(a), f(b));
        let d = (&a - &b).unwrap().abs().unwrap().max_all().unwrap();
        let s = b.abs().unwrap().max_all().unwrap();
        d.to_scalar::<f64>().unwrap() / s.to_scalar::<f64>().unwrap().max(1e-300)
    }

    #[test]
    fn products_and_gradients_match_candles_matmul() {
        let mut rng = StdRng::seed_from_u64(51);
        // (m, k, n, a transposed, b transposed): plain, strided operands, a vector, and one
        // product above the parallel threshold.
        let cases = [
            (5, 7, 3, false, false),
            (6, 4, 9, true, false),
            (3, 8, 5, false, true),
            (1, 6, 1, true, true),
            (300, 300, 200, false, true),
        ];
        const { assert!(300 * 300 * 200 >= PARALLEL_MIN_MULTIPLY_ADDS) };
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-4)] {
            for (m, k, n, at, bt) in cases {
                let a = if at {
                    rand(&mut rng, k, m, dtype).t().unwrap()
                } else {
                    rand(&mut rng, m, k, dtype)
                };
                let b = if bt {
                    rand(&mut rng, n, k, dtype).t().unwrap()
                } else {
                    rand(&mut rng, k, n, dtype)
                };
                let r = rand(&mut rng, m, n, dtype);
                let run = |ours: bool| {
                    let (va, vb) = (Var::from_tensor(&a).unwrap(), Var::from_tensor(&b).unwrap());
                    let (ta, tb) = (va.as_tensor(), vb.as_tensor());
                    let y = if ours {
                        host_matmul(&ta.t().unwrap().t().unwrap(), tb).unwrap()
                    } else {
                        ta.contiguous()
                            .unwrap()
                            .matmul(&tb.contiguous().unwrap())
                            .unwrap()
                    };
                    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                    [y, g.get(ta).unwrap().clone(), g.get(tb).unwrap().clone()]
                };
                for (i, (x, y)) in run(true).iter().zip(run(false)).enumerate() {
                    let e = rel_diff(x, &y);
                    assert!(
                        e < tol,
                        "{dtype:?} {m}×{k}×{n} ({at}, {bt}) part {i}: {e:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn shape_errors_and_other_dtypes() {
        let mut rng = StdRng::seed_from_u64(52);
        let a = rand(&mut rng, 2, 3, DType::F64);
        assert!(host_matmul(&a, &rand(&mut rng, 2, 3, DType::F64)).is_err());
        assert!(host_matmul(&a, &a.flatten_all().unwrap()).is_err());
        // Mixed float types are candle's error; other dtypes take candle's matmul.
        assert!(host_matmul(&a, &rand(&mut rng, 3, 2, DType::F32)).is_err());
        let (a16, b16) = (
            a.to_dtype(DType::BF16).unwrap(),
            rand(&mut rng, 3, 2, DType::BF16),
        );
        let want = a16.matmul(&b16).unwrap();
        assert_eq!(rel_diff(&host_matmul(&a16, &b16).unwrap(), &want), 0.0);
        // Empty products: no rows, and an empty inner dimension (all zeros).
        let e = host_matmul(
            &rand(&mut rng, 0, 3, DType::F64),
            &rand(&mut rng, 3, 2, DType::F64),
        );
        assert_eq!(e.unwrap().dims(), &[0, 2]);
        let z = host_matmul(
            &rand(&mut rng, 2, 0, DType::F64),
            &rand(&mut rng, 0, 3, DType::F64),
        );
        assert_eq!(z.unwrap().to_vec2::<f64>().unwrap(), vec![vec![0.0; 3]; 2]);
    }
}
