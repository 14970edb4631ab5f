//! The crate's error type.

/// Errors returned by the `icnn` crate.
///
/// ```
/// use icnn::{ConvexPotential, Icnn2, Icnn2Config, IcnnError};
/// # use candle_core::{DType, Device, Tensor};
/// # use candle_nn::{VarBuilder, VarMap};
/// # use rand::SeedableRng;
/// # fn main() -> icnn::Result<()> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let bad = Icnn2Config { dim: 0, ..Default::default() };
/// assert!(matches!(Icnn2::new(vb.pp("bad"), &bad, &mut rng), Err(IcnnError::InvalidConfig(_))));
/// let config = Icnn2Config { dim: 2, width: 4, depth: 2, ..Default::default() };
/// let net = Icnn2::new(vb.pp("icnn"), &config, &mut rng)?;
/// // All points equal: the ActNorm init has no spread to normalise by; the input is named.
/// let same = Tensor::ones((3, 2), DType::F64, &Device::Cpu)?;
/// match net.potential(&same) {
///     Err(IcnnError::Initialization { layer, .. }) => assert_eq!(layer, "input"),
///     other => panic!("unexpected {other:?}"),
/// }
/// assert!(!net.is_initialized()?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IcnnError {
    /// An error from candle (shape mismatch, device error, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A configuration value is invalid (zero width, odd width for `Icnn3`, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An input tensor does not have the expected shape.
    #[error("shape error: {0}")]
    Shape(String),
    /// The ActNorm data-dependent initialisation cannot use the batch it was given: fewer
    /// than 2 rows, non-finite values, or a layer none of whose units varies over the batch
    /// (every point the same). Nothing is written: an uninitialised network stays
    /// uninitialised (a later call with a usable batch initialises it), an initialised one
    /// keeps its ActNorm parameters.
    #[error("ActNorm initialisation at `{layer}`: {reason}")]
    Initialization {
        /// The ActNorm (its parameter prefix, e.g. `icnn.actnorms.2`) or the input (`input`,
        /// `context`) where the batch was found unusable.
        layer: String,
        /// What is wrong with the batch.
        reason: String,
    },
    /// An input holds NaN or `±∞` values: from [`check_finite`](crate::check_finite) and
    /// [`check_derivatives`](crate::check_derivatives). (The networks themselves do not check:
    /// a non-finite row gives non-finite outputs in that row only.)
    #[error(
        "{input} holds {count} non-finite (NaN or infinite) value(s), the first in row {row}, \
         column {column}"
    )]
    NonFiniteInput {
        /// Which input (e.g. `x`, `v`, `context`).
        input: String,
        /// How many of its values are not finite.
        count: usize,
        /// The row (index along dimension 0) of the first non-finite value.
        row: usize,
        /// Its column within the row, flattened (`c·H·W + h·W + w` for images).
        column: usize,
    },
    /// A network of the user's own (a custom [`ConvexPotential`](crate::ConvexPotential) or
    /// [`HessianVectorProducts`](crate::HessianVectorProducts), a `cpflow` potential
    /// builder) failed with its own error type, kept as the
    /// [`source`](std::error::Error::source). Build it with [`IcnnError::network`].
    #[error("the network failed")]
    Network(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl IcnnError {
    /// Wraps the error of a network of the user's own, keeping it as the source (instead of
    /// flattening it into [`IcnnError::InvalidConfig`]'s text).
    ///
    /// ```
    /// use icnn::IcnnError;
    /// use std::error::Error;
    /// // E.g. in a custom network's `linearize`, or a cpflow builder reading its weights.
    /// let io = std::io::Error::other("weights file truncated");
    /// let e = IcnnError::network(io);
    /// assert_eq!(e.to_string(), "the network failed");
    /// assert_eq!(e.source().unwrap().to_string(), "weights file truncated");
    /// assert!(matches!(e, IcnnError::Network(_)));
    /// ```
    pub fn network<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        Self::Network(Box::new(e))
    }
}

/// Result alias of the crate: `Result<T>` is `std::result::Result<T, IcnnError>`.
///
/// `use icnn::*` imports it too and so shadows the prelude's two-parameter
/// `std::result::Result<T, E>` in that module (an impl of another crate's trait written with
/// `Result<T, E>` then fails with E0107). Import the names you use instead, or write
/// `std::result::Result` there.
pub type Result<T> = std::result::Result<T, IcnnError>;

#[cfg(test)]
mod tests {
    use super::IcnnError;
    use std::error::Error;

    /// A network's own error stays the source, its text printed once along the chain.
    #[test]
    fn network_errors_keep_their_source_and_print_it_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("layer 3 has no weights")]
        struct Mine;
        let e = IcnnError::network(Mine);
        assert_eq!(e.to_string(), "the network failed");
        let src = e.source().expect("the network's error is the source");
        assert!(src.downcast_ref::<Mine>().is_some());
        assert_eq!(src.to_string(), "layer 3 has no weights");
        assert!(!e.to_string().contains(&src.to_string()));
    }

    #[test]
    fn candle_errors_are_transparent_and_printed_once() {
        let e = IcnnError::from(candle_core::Error::Msg("shape mismatch".into()));
        assert_eq!(e.to_string(), "shape mismatch");
        let mut cur: Option<&(dyn Error + 'static)> = Some(&e);
        while let Some(err) = cur {
            if let Some(src) = err.source() {
                assert!(
                    !err.to_string().contains(&src.to_string()),
                    "{err} repeats {src}"
                );
            }
            cur = err.source();
        }
    }
}
