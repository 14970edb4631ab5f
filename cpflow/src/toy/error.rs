//! Errors of the toy-data module.

/// What can go wrong building or reading toy data.
///
/// ```
/// use cpflow::toy::{Toy, ToyError};
/// let err = "spiral".parse::<Toy>().unwrap_err();
/// assert!(matches!(&err, ToyError::UnknownToy(name) if name == "spiral"));
/// assert!(err.to_string().contains("known: 8gaussians"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToyError {
    /// The name is not one of [`crate::toy::Toy::ALL`].
    #[error(
        "unknown toy density `{0}` (known: 8gaussians, swissroll, 2spirals, rings, moons, checkerboard, pinwheel, circles, mafmoon)"
    )]
    UnknownToy(String),
    /// An argument is out of its domain (dimension 0, covariance not positive definite, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The PNG or JPEG could not be read or decoded (feature `toy-images`).
    #[cfg(feature = "toy-images")]
    #[error("cannot read image {path}")]
    Image {
        /// The file.
        path: String,
        /// The decoder's error.
        #[source]
        source: crate::image_file::ImageFileError,
    },
    /// The image has no mass after inversion (all pixels the same grey level).
    #[error("image {0} is uniform: no density mass after inverting the grey levels")]
    EmptyImage(String),
    /// The pixel weights of an image density cannot be sampled from.
    #[error("invalid pixel weights")]
    PixelWeights(#[source] rand::distr::weighted::Error),
    /// A candle error while converting points.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
