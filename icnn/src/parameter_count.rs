//! Counting a network's parameters from its configuration, before anything is allocated.
//!
//! Every architecture's config has a `parameter_count()` (scalar parameters, the
//! `initialized` flag excluded: the count a built model reports), and every constructor
//! refuses a configuration whose count exceeds [`MAX_MODEL_PARAMETERS`] before it creates
//! its first layer. Without that check an absurd depth (say `10⁸`) built layers for
//! minutes, gigabytes deep, before anything said what was wrong, and a depth near
//! `usize::MAX` panicked with "capacity overflow".
//!
//! Counts saturate at `usize::MAX` instead of overflowing, so any configuration, however
//! large its numbers, gets a count that the check can refuse.

use crate::error::{IcnnError, Result};

/// The most scalar parameters one model may have: 2³² (16 GiB of weights in f32, 32 GiB in
/// f64, before gradients and optimiser state). The paper's largest flows have a few million;
/// a configuration past this bound is a mistake, not an allocation to attempt.
///
/// ```
/// use icnn::{Icnn3Config, MAX_MODEL_PARAMETERS};
/// let absurd = Icnn3Config { dim: 2, width: 32, depth: 100_000_000, ..Default::default() };
/// assert!(absurd.parameter_count() > MAX_MODEL_PARAMETERS);
/// ```
pub const MAX_MODEL_PARAMETERS: usize = 1 << 32;

/// Refuse a model of `count` parameters when it exceeds [`MAX_MODEL_PARAMETERS`]; `model`
/// names it in the message (for example `"Icnn3 (dim 2, width 32, depth 100000000)"`).
///
/// ```
/// use icnn::{IcnnError, MAX_MODEL_PARAMETERS, check_parameter_count};
/// assert!(check_parameter_count("a small net", 1_000).is_ok());
/// let err = check_parameter_count("a huge net", MAX_MODEL_PARAMETERS + 1).unwrap_err();
/// assert!(matches!(err, IcnnError::InvalidConfig(_)));
/// ```
pub fn check_parameter_count(model: &str, count: usize) -> Result<()> {
    if count <= MAX_MODEL_PARAMETERS {
        return Ok(());
    }
    let shown = shown_parameter_count(count);
    Err(IcnnError::InvalidConfig(format!(
        "{model} would have {shown} parameters; a model may have at most \
         {MAX_MODEL_PARAMETERS} (2^32): check the depth, width and number of blocks of the \
         configuration"
    )))
}

/// A saturating parameter count as the size refusals show it: the number and its order of
/// magnitude, or "more than usize::MAX" for a count that saturated.
///
/// ```
/// use icnn::shown_parameter_count;
/// assert_eq!(shown_parameter_count(5_338_001_160_314), "5338001160314 (5.3e12)");
/// assert_eq!(shown_parameter_count(usize::MAX), "more than usize::MAX");
/// ```
pub fn shown_parameter_count(count: usize) -> String {
    if count == usize::MAX {
        "more than usize::MAX".to_string()
    } else {
        format!("{count} ({:.1e})", count as f64)
    }
}

/// `a·b`, saturating.
pub(crate) fn mul(a: usize, b: usize) -> usize {
    a.saturating_mul(b)
}

/// The sum of `counts`, saturating.
pub(crate) fn sum<const N: usize>(counts: [usize; N]) -> usize {
    counts.into_iter().fold(0, usize::saturating_add)
}

/// A dense layer `n_in → n_out`: weight `(n_out, n_in)` and optionally a bias `(n_out,)`.
pub(crate) fn linear(n_in: usize, n_out: usize, bias: bool) -> usize {
    sum([mul(n_in, n_out), if bias { n_out } else { 0 }])
}

/// A convolution `n_in → n_out` channels with a `kernel × kernel` window: weight
/// `(n_out, n_in, k, k)` and optionally a bias `(n_out,)`.
pub(crate) fn conv(n_in: usize, n_out: usize, kernel: usize, bias: bool) -> usize {
    sum([
        mul(mul(n_in, n_out), mul(kernel, kernel)),
        if bias { n_out } else { 0 },
    ])
}

/// An ActNorm over `features` units: `b` and `logs`.
pub(crate) fn actnorm(features: usize) -> usize {
    mul(2, features)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::{
        ConvIcnn, ConvIcnn2, ConvIcnn2Config, ConvIcnn3, ConvIcnn3Config, ConvIcnnConfig,
        DenseIcnn2, DenseIcnn2Config, Icnn, Icnn2, Icnn2Config, Icnn3, Icnn3Config, IcnnConfig,
        ImageShape, Picnn, PicnnConfig,
    };

    /// Scalar parameters of everything built into `varmap`, `initialized` flags excluded.
    fn built_count(varmap: &VarMap) -> usize {
        let data = varmap.data().lock().expect("varmap lock");
        data.iter()
            .filter(|(name, _)| !name.ends_with("initialized"))
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// Build `net` into a fresh varmap and return the count it holds.
    fn count_built(build: impl FnOnce(VarBuilder, &mut StdRng) -> Result<()>) -> usize {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        build(vb.pp("net"), &mut StdRng::seed_from_u64(0)).expect("small configs build");
        built_count(&varmap)
    }

    // Small grids of dimensions, widths and depths (depth 1 is the edge case of every
    // recursion: no hidden layer). The counts must agree exactly with what the constructors
    // create, so a layer added to an architecture without its count fails here.
    const DIMS: [usize; 2] = [1, 3];
    const WIDTHS: [usize; 2] = [2, 6];
    const DEPTHS: [usize; 3] = [1, 2, 4];

    #[test]
    fn dense_counts_match_built_networks() {
        for (d, h, l) in grid() {
            let c = IcnnConfig {
                dim: d,
                width: h,
                depth: l,
            };
            let built = count_built(|vb, rng| Icnn::new(vb, &c, rng).map(drop));
            assert_eq!(c.parameter_count(), built, "Icnn {c:?}");

            let c = Icnn2Config {
                dim: d,
                width: h,
                depth: l,
                ..Default::default()
            };
            let built = count_built(|vb, rng| Icnn2::new(vb, &c, rng).map(drop));
            assert_eq!(c.parameter_count(), built, "Icnn2 {c:?}");

            let c = Icnn3Config {
                dim: d,
                width: h,
                depth: l,
                ..Default::default()
            };
            let built = count_built(|vb, rng| Icnn3::new(vb, &c, rng).map(drop));
            assert_eq!(c.parameter_count(), built, "Icnn3 {c:?}");

            let c = DenseIcnn2Config {
                dim: d,
                width: h,
                depth: l,
                ..Default::default()
            };
            let built = count_built(|vb, rng| DenseIcnn2::new(vb, &c, rng).map(drop));
            assert_eq!(c.parameter_count(), built, "DenseIcnn2 {c:?}");

            for context_dim in [1, 4] {
                let c = PicnnConfig {
                    dim: d,
                    context_dim,
                    width: h,
                    depth: l,
                    ..Default::default()
                };
                let built = count_built(|vb, rng| Picnn::new(vb, &c, rng).map(drop));
                assert_eq!(c.parameter_count(), built, "Picnn {c:?}");
            }
        }
    }

    #[test]
    fn conv_counts_match_built_networks() {
        for (channels, h, l) in grid() {
            let image = ImageShape::new(channels, 6, 6);
            for num_pooling in [0, 1, 2] {
                let c = ConvIcnnConfig {
                    image,
                    width: h,
                    depth: l,
                    num_pooling,
                };
                let built = count_built(|vb, rng| ConvIcnn::new(vb, &c, rng).map(drop));
                assert_eq!(c.parameter_count(), built, "ConvIcnn {c:?}");
            }
            let c = ConvIcnn2Config {
                image,
                width: h,
                depth: l,
            };
            let built = count_built(|vb, rng| ConvIcnn2::new(vb, &c, rng).map(drop));
            assert_eq!(c.parameter_count(), built, "ConvIcnn2 {c:?}");

            let c = ConvIcnn3Config {
                image,
                width: h,
                depth: l,
                ..Default::default()
            };
            let built = count_built(|vb, rng| ConvIcnn3::new(vb, &c, rng).map(drop));
            assert_eq!(c.parameter_count(), built, "ConvIcnn3 {c:?}");
        }
    }

    fn grid() -> impl Iterator<Item = (usize, usize, usize)> {
        DIMS.into_iter().flat_map(|d| {
            WIDTHS
                .into_iter()
                .flat_map(move |h| DEPTHS.into_iter().map(move |l| (d, h, l)))
        })
    }

    /// Absurd sizes are refused at once, before any layer is allocated: each of these took
    /// minutes and gigabytes (depth 10⁸) or panicked with "capacity overflow" (depth near
    /// `usize::MAX`) before the check.
    #[test]
    fn absurd_sizes_are_refused_before_building() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
        let mut rng = StdRng::seed_from_u64(0);
        for depth in [100_000_000, usize::MAX / 2, usize::MAX] {
            let c = Icnn3Config {
                dim: 2,
                width: 32,
                depth,
                ..Default::default()
            };
            let err = Icnn3::new(vb.pp("a"), &c, &mut rng)
                .unwrap_err()
                .to_string();
            assert!(err.contains("a model may have at most"), "{err}");
            let c = Icnn2Config {
                dim: 2,
                width: 32,
                depth,
                ..Default::default()
            };
            assert!(Icnn2::new(vb.pp("b"), &c, &mut rng).is_err());
            let c = DenseIcnn2Config {
                dim: 2,
                width: 4,
                depth,
                ..Default::default()
            };
            assert!(DenseIcnn2::new(vb.pp("c"), &c, &mut rng).is_err());
            let c = IcnnConfig {
                dim: 2,
                width: 32,
                depth,
            };
            assert!(Icnn::new(vb.pp("d"), &c, &mut rng).is_err());
            let c = PicnnConfig {
                dim: 2,
                context_dim: 2,
                width: 32,
                depth,
                ..Default::default()
            };
            assert!(Picnn::new(vb.pp("e"), &c, &mut rng).is_err());
            let image = ImageShape::new(1, 4, 4);
            let c = ConvIcnnConfig {
                image,
                width: 32,
                depth,
                num_pooling: 0,
            };
            assert!(ConvIcnn::new(vb.pp("f"), &c, &mut rng).is_err());
            let c = ConvIcnnConfig {
                image,
                width: 2,
                depth: 1,
                num_pooling: depth,
            };
            assert!(ConvIcnn::new(vb.pp("g"), &c, &mut rng).is_err());
            let c = ConvIcnn2Config {
                image,
                width: 32,
                depth,
            };
            assert!(ConvIcnn2::new(vb.pp("h"), &c, &mut rng).is_err());
            let c = ConvIcnn3Config {
                image,
                width: 32,
                depth,
                ..Default::default()
            };
            assert!(ConvIcnn3::new(vb.pp("i"), &c, &mut rng).is_err());
        }
        // Refused before the first layer: nothing was created.
        assert!(varmap.all_vars().is_empty());
    }

    /// The bound itself: a count at the limit passes, one more is refused, and a saturated
    /// count says so instead of printing `usize::MAX`.
    #[test]
    fn the_bound_is_inclusive() {
        assert!(check_parameter_count("m", MAX_MODEL_PARAMETERS).is_ok());
        let err = check_parameter_count("m", MAX_MODEL_PARAMETERS + 1).unwrap_err();
        assert!(err.to_string().contains("4294967297 (4.3e9)"), "{err}");
        let err = check_parameter_count("m", usize::MAX).unwrap_err();
        assert!(err.to_string().contains("more than usize::MAX"), "{err}");
        assert_eq!(linear(usize::MAX, 2, true), usize::MAX);
        assert_eq!(conv(3, 4, 3, true), 3 * 4 * 9 + 4);
    }
}
