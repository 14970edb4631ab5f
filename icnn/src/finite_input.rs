//! Rejecting NaN/±∞ input with a typed error, at the cost of one pass over the input.

use candle_core::{CpuStorage, DType, Storage, Tensor};

use crate::error::{IcnnError, Result};

/// Whether every entry of `x` is finite, without copying where `x` is a contiguous f32/f64
/// CPU tensor (one pass over its values); otherwise one reduction on `x`'s device (`x − x` is 0
/// where `x` is finite and NaN elsewhere, so its sum is finite exactly when every entry is,
/// and cannot overflow) and one scalar copied back.
fn all_finite(x: &Tensor) -> Result<bool> {
    if x.elem_count() == 0 {
        return Ok(true);
    }
    {
        let (storage, layout) = x.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            match cpu {
                CpuStorage::F64(v) => return Ok(v[start..end].iter().all(|e| e.is_finite())),
                CpuStorage::F32(v) => return Ok(v[start..end].iter().all(|e| e.is_finite())),
                _ => {}
            }
        }
    }
    let s = x
        .sub(x)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok(s.is_finite())
}

/// Checks that `x` (rank ≥ 1, one point per row along dimension 0) holds no NaN or `±∞`;
/// otherwise [`IcnnError::NonFiniteInput`] named `input`, with the number of non-finite
/// values and the first one's row and column (the column indexes the row flattened, e.g.
/// `c·H·W + h·W + w` for images `(B, C, H, W)`).
///
/// The built-in networks do not call this on their inputs: their rows are independent, so a
/// non-finite row gives non-finite outputs in that row only, and the flows rely on that to
/// score the other rows of a batch in which one overflowed. Call it first to reject such
/// input. It costs one pass over `x` (`B·d` values, against `B·width·depth` multiply-adds for
/// a forward pass); a contiguous f32/f64 CPU tensor is read in place.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use icnn::{check_finite, IcnnError};
/// # fn main() -> icnn::Result<()> {
/// let ok = Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
/// check_finite("x", &ok)?;
/// let bad = Tensor::new(&[[1.0f64, 2.0], [f64::NAN, f64::INFINITY]], &Device::Cpu)?;
/// match check_finite("x", &bad) {
///     Err(IcnnError::NonFiniteInput { input, count, row, column }) => {
///         assert_eq!((input.as_str(), count, row, column), ("x", 2, 1, 0));
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
pub fn check_finite(input: &str, x: &Tensor) -> Result<()> {
    if all_finite(x)? {
        return Ok(());
    }
    // The error path only: where and how many.
    let cols = x.dims().iter().skip(1).product::<usize>().max(1);
    let v = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let first = v.iter().position(|e| !e.is_finite()).unwrap_or(0);
    Err(IcnnError::NonFiniteInput {
        input: input.to_string(),
        count: v.iter().filter(|e| !e.is_finite()).count(),
        row: first / cols,
        column: first % cols,
    })
}

#[cfg(test)]
mod tests {
    use super::check_finite;
    use crate::IcnnError;
    use candle_core::{DType, Device, Tensor};

    fn located(r: crate::Result<()>) -> (usize, usize, usize) {
        match r {
            Err(IcnnError::NonFiniteInput {
                count, row, column, ..
            }) => (count, row, column),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn finds_every_non_finite_value_in_f32_and_f64_layouts() {
        for dtype in [DType::F64, DType::F32] {
            let rows = [
                [0.0, 1.0, -2.0],
                [3.0, f64::NEG_INFINITY, 1e30],
                [f64::NAN, 0.5, f64::INFINITY],
            ];
            let x = Tensor::new(&rows, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            assert_eq!(located(check_finite("x", &x)), (3, 1, 1));
            // A view (not contiguous): the transpose's row 0 is column 0 of x.
            assert_eq!(located(check_finite("x", &x.t().unwrap())), (3, 0, 2));
            // A narrowed view starting at row 2: its offset is honoured.
            assert_eq!(
                located(check_finite("x", &x.narrow(0, 2, 1).unwrap())),
                (2, 0, 0)
            );
            check_finite("x", &x.narrow(0, 0, 1).unwrap()).unwrap();
            check_finite("x", &x.narrow(0, 0, 0).unwrap()).unwrap();
            // Images (B, C, H, W): the column indexes the flattened row.
            let mut img = vec![0.0f64; 2 * 2 * 2 * 2];
            img[8 + 4 + 3] = f64::NAN; // image 1, channel 1, pixel (1, 1)
            let img = Tensor::from_vec(img, (2, 2, 2, 2), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            assert_eq!(located(check_finite("x", &img)), (1, 1, 7));
        }
        // f16 takes the reduction path.
        let h = Tensor::new(&[[1.0f32, f32::NAN]], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        assert_eq!(located(check_finite("x", &h)), (1, 0, 1));
        // Large finite f32 values do not overflow the reduction path either.
        let big = Tensor::new(&[[3e38f32, 3e38]], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        check_finite("x", &big).unwrap();
    }
}

#[cfg(test)]
mod network_tests {
    use super::check_finite;
    use crate::{
        ConvIcnn, ConvIcnnConfig, ConvexPotential, Icnn2, Icnn2Config, IcnnError, ImageShape,
    };
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Rows 0 and 2 of `t` (a `(3, …)` batch) as f64 values, and whether row 1 is all finite.
    fn outer_rows(t: &Tensor) -> (Vec<f64>, bool) {
        let v = t
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_from(1)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        let mut outer = v[0].clone();
        outer.extend(&v[2]);
        (outer, v[1].iter().all(|e| e.is_finite()))
    }

    /// The contract the flows rely on: once initialised, a network computes a NaN/±∞ row
    /// without an error, non-finite in that row only, the other rows exactly as without it;
    /// `check_finite` is what refuses it, naming the row.
    fn rows_stay_independent<N: ConvexPotential>(net: &N, d: usize, dtype: DType) {
        let vals: Vec<f64> = (0..3 * d).map(|k| (k as f64 * 0.7).sin()).collect();
        let x = Tensor::from_vec(vals, (3, d), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        net.potential(&x).unwrap(); // initialises on a finite batch
        let v = x.cos().unwrap();
        let reference = net.linearize(&x).unwrap();
        for bad in [f64::NAN, f64::INFINITY] {
            let mut mask = vec![0.0f64; 3 * d];
            mask[d + d / 2] = bad;
            let poisoned = (&x
                + Tensor::from_vec(mask, (3, d), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap())
            .unwrap();
            match check_finite("x", &poisoned) {
                Err(IcnnError::NonFiniteInput {
                    count, row, column, ..
                }) => assert_eq!((count, row, column), (1, 1, d / 2)),
                other => panic!("{dtype:?} {bad}: unexpected {other:?}"),
            }
            let lin = net.linearize(&poisoned).unwrap();
            let pairs = [
                (lin.potential(), reference.potential()),
                (lin.gradient(), reference.gradient()),
                (lin.hvp(&v).unwrap(), reference.hvp(&v).unwrap()),
                (net.potential(&poisoned).unwrap(), reference.potential()),
            ];
            for (got, want) in pairs {
                let (got, row1_finite) = outer_rows(&got.unsqueeze(1).unwrap());
                assert!(!row1_finite, "{dtype:?} {bad}");
                assert_eq!(got, outer_rows(&want.unsqueeze(1).unwrap()).0);
            }
        }
    }

    #[test]
    fn networks_compute_non_finite_rows_alone_and_check_finite_refuses_them() {
        for dtype in [DType::F64, DType::F32] {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
            let mut rng = StdRng::seed_from_u64(0);
            let config = Icnn2Config {
                dim: 3,
                width: 8,
                depth: 2,
                ..Default::default()
            };
            let net = Icnn2::new(vb.pp("dense"), &config, &mut rng).unwrap();
            rows_stay_independent(&net, 3, dtype);
            let config = ConvIcnnConfig {
                image: ImageShape::new(1, 3, 3),
                width: 4,
                depth: 2,
                num_pooling: 0,
            };
            let net = ConvIcnn::new(vb.pp("conv"), &config, &mut rng).unwrap();
            rows_stay_independent(&net, 9, dtype);
        }
    }
}
