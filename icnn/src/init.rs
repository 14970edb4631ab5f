//! Seeded initial values for the parameters of a network of your own, drawn as the built-in
//! networks draw theirs.
//!
//! candle's random initialisers (`candle_nn::Init::Randn`, …) cannot be seeded, so a network
//! built with them is not reproducible. These functions draw the values on the host from the
//! `rand` RNG they are given (in `cpflow`, the stream a potential builder receives, seeded
//! from the flow's `init_seed`) and write them into the new variable of the
//! [`VarBuilder`]. A parameter that already exists in the builder's
//! backend (a filled `VarMap`, a loaded safetensors file) is returned as it is; the values
//! are drawn in both cases, so the other parameters' values do not depend on which ones were
//! present.

use candle_core::{Shape, Tensor};
use candle_nn::VarBuilder;
use rand::Rng;

use crate::error::{IcnnError, Result};
use crate::params;

/// The parameter `name` under `vb` with shape `shape`, its values drawn independently from
/// `U(−bound, bound)` with `rng` (PyTorch's `nn.Linear` default is `bound = 1/√n_in`), in
/// `vb`'s dtype and on its device. Errors: a `bound` that is negative or not finite, a
/// non-float `VarBuilder` or a shape of more than 2³² elements
/// ([`IcnnError::InvalidConfig`]); candle's errors otherwise.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{VarBuilder, VarMap};
/// use rand::{SeedableRng, rngs::StdRng};
/// # fn main() -> icnn::Result<()> {
/// let draw = |seed: u64| -> icnn::Result<Vec<f64>> {
///     let varmap = VarMap::new();
///     let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
///     // One scalar parameter `c` of shape (1,), e.g. a custom potential's scale.
///     let c = icnn::init::uniform(&vb, 1, "c", 0.5, &mut StdRng::seed_from_u64(seed))?;
///     assert_eq!(varmap.all_vars().len(), 1); // a variable: trained, saved with the model
///     Ok(c.to_vec1::<f64>()?)
/// };
/// let (a, b) = (draw(7)?, draw(7)?);
/// assert_eq!(a, b); // the same seed gives the same value
/// assert!(a[0].abs() <= 0.5);
/// # Ok(())
/// # }
/// ```
pub fn uniform<R: Rng + ?Sized>(
    vb: &VarBuilder,
    shape: impl Into<Shape>,
    name: &str,
    bound: f64,
    rng: &mut R,
) -> Result<Tensor> {
    if !(bound >= 0.0 && bound.is_finite()) {
        return Err(IcnnError::InvalidConfig(format!(
            "parameter {name}: the bound of U(−bound, bound) must be finite and ≥ 0, got {bound}"
        )));
    }
    params::uniform(vb, shape, name, bound, rng)
}

/// The parameter `name` under `vb` with shape `shape`, every value `value` (e.g. a bias of
/// zeros, or a log-scale of `0`). Errors as for [`uniform`], and a `value` that is not
/// finite.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{VarBuilder, VarMap};
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let bias = icnn::init::constant(&vb, (2, 3), "bias", 0.25)?;
/// assert_eq!(bias.to_vec2::<f32>()?, vec![vec![0.25f32; 3]; 2]);
/// assert!(icnn::init::constant(&vb, 1, "nan", f64::NAN).is_err());
/// # Ok(())
/// # }
/// ```
pub fn constant(
    vb: &VarBuilder,
    shape: impl Into<Shape>,
    name: &str,
    value: f64,
) -> Result<Tensor> {
    if !value.is_finite() {
        return Err(IcnnError::InvalidConfig(format!(
            "parameter {name}: the initial value must be finite, got {value}"
        )));
    }
    params::constant(vb, shape, name, value)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::uniform;
    use crate::IcnnError;

    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    /// The values are the crate's own draws: a `Linear` built from the same seed has the
    /// same weights (`U(−1/√n_in, 1/√n_in)`), so a custom network initialised with
    /// `uniform` is drawn as the built-in layers are.
    #[test]
    fn draws_as_the_built_in_layers_do() {
        let (n_in, n_out) = (4, 3);
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let lin = crate::Linear::new(
            &vb.pp("lin"),
            n_in,
            n_out,
            false,
            &mut StdRng::seed_from_u64(3),
        )
        .unwrap();
        let bound = 1.0 / (n_in as f64).sqrt();
        let w = uniform(
            &vb.pp("mine"),
            (n_out, n_in),
            "weight",
            bound,
            &mut StdRng::seed_from_u64(3),
        )
        .unwrap();
        assert_eq!(values(&w), values(&lin.weight));
        assert!(values(&w).iter().all(|v| v.abs() <= bound));
        // Distinct values (not a constant fill).
        let v = values(&w);
        assert!(v.iter().any(|x| (x - v[0]).abs() > 1e-3));
    }

    /// An existing parameter is returned as it is, and the draws are still made (the next
    /// parameter's values do not depend on whether this one existed).
    #[test]
    fn an_existing_parameter_is_kept_and_the_stream_advances() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let mut rng = StdRng::seed_from_u64(5);
        let first = uniform(&vb, 2, "a", 1.0, &mut rng).unwrap();
        let next = uniform(&vb, 2, "b", 1.0, &mut rng).unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        let again = uniform(&vb, 2, "a", 1.0, &mut rng).unwrap();
        assert_eq!(values(&again), values(&first));
        let mut rng = StdRng::seed_from_u64(5);
        let _ = uniform(&vb, 2, "a", 1.0, &mut rng).unwrap();
        let b2 = uniform(
            &VarBuilder::from_varmap(&VarMap::new(), DType::F64, &Device::Cpu),
            2,
            "b",
            1.0,
            &mut rng,
        )
        .unwrap();
        assert_eq!(values(&b2), values(&next));
    }

    #[test]
    fn invalid_bounds_are_refused_naming_the_parameter() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        for bound in [-1.0, f64::NAN, f64::INFINITY] {
            match uniform(&vb, 1, "scale", bound, &mut StdRng::seed_from_u64(0)) {
                Err(IcnnError::InvalidConfig(m)) => assert!(m.contains("scale"), "{m}"),
                other => panic!("bound {bound}: unexpected {other:?}"),
            }
        }
        assert!(vm.all_vars().is_empty());
    }
}
