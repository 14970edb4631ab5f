//! The geometry of the convolutional networks: the shape `(C, H, W)` of an image and a
//! square convolution's kernel size, stride and padding, with the output size they give.

use serde::{Deserialize, Serialize};

use crate::error::{IcnnError, Result};

/// The shape `(C, H, W)` of one image; a batch of images is `(B, C, H, W)` or, flattened in
/// that order, `(B, C·H·W)` rows.
///
/// ```
/// use icnn::ImageShape;
/// let rgb = ImageShape::new(3, 32, 32);
/// assert_eq!(rgb.dim(), 3072); // a (B, 3, 32, 32) batch is (B, 3072) rows
/// assert_eq!(ImageShape::default(), ImageShape::new(1, 28, 28)); // MNIST
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    /// Channels `C`.
    pub channels: usize,
    /// Height `H` (pixels).
    pub height: usize,
    /// Width `W` (pixels).
    pub width: usize,
}

impl ImageShape {
    /// `(C, H, W)`.
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// The flattened dimension `C·H·W`, saturating at `usize::MAX` for a shape whose product
    /// overflows (every conv configuration's `validate` refuses such an image; see
    /// [`ImageShape::checked_dim`]).
    ///
    /// ```
    /// use icnn::ImageShape;
    /// let absurd = ImageShape::new(1, 1 << 33, 1 << 33);
    /// assert_eq!((absurd.dim(), absurd.checked_dim()), (usize::MAX, None));
    /// ```
    pub fn dim(&self) -> usize {
        self.checked_dim().unwrap_or(usize::MAX)
    }

    /// `C·H·W`, or `None` when the product overflows `usize`.
    pub fn checked_dim(&self) -> Option<usize> {
        self.channels
            .checked_mul(self.height)?
            .checked_mul(self.width)
    }
}

impl Default for ImageShape {
    /// MNIST: `1×28×28`.
    fn default() -> Self {
        Self::new(1, 28, 28)
    }
}

/// Square-kernel convolution geometry: kernel size, stride and zero padding (the same on
/// both spatial axes; dilation 1).
///
/// ```
/// use icnn::{ConvGeometry, IcnnError};
/// // 3×3, stride 1, padding 1 keeps the image size.
/// assert_eq!(ConvGeometry::SAME_3X3.output_hw((28, 20))?, (28, 20));
/// // ⌊(n + 2p − k)/s⌋ + 1: the pooling convolution of ConvIcnn maps 28 to 16.
/// let pool = ConvGeometry { kernel: 2, stride: 2, padding: 2 };
/// assert_eq!(pool.output_len(28)?, 16);
/// // A 5×5 kernel does not fit a 3-pixel unpadded input.
/// let big = ConvGeometry { kernel: 5, stride: 1, padding: 0 };
/// assert!(matches!(big.output_len(3), Err(IcnnError::InvalidConfig(_))));
/// # Ok::<(), IcnnError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvGeometry {
    /// Kernel size `k` (a `k×k` kernel).
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl ConvGeometry {
    /// The reference's default: 3×3 kernel, stride 1, padding 1 (keeps `H×W`).
    pub const SAME_3X3: Self = Self {
        kernel: 3,
        stride: 1,
        padding: 1,
    };

    /// The output length `⌊(n + 2p − k)/s⌋ + 1` of an input of length `n`.
    /// A padding so large that `n + 2p` overflows `usize` is an
    /// [`IcnnError::InvalidConfig`] too (it panicked with an arithmetic overflow).
    pub fn output_len(&self, n: usize) -> Result<usize> {
        let padded = self
            .padding
            .checked_mul(2)
            .and_then(|p| p.checked_add(n))
            .ok_or_else(|| {
                IcnnError::InvalidConfig(format!(
                    "convolution {self:?}: the padded size of an input of size {n} overflows"
                ))
            })?;
        if self.kernel == 0 || self.stride == 0 || padded < self.kernel {
            return Err(IcnnError::InvalidConfig(format!(
                "convolution {self:?} does not fit an input of size {n}"
            )));
        }
        Ok((padded - self.kernel) / self.stride + 1)
    }

    /// The output `(H', W')` of an `H×W` input.
    pub fn output_hw(&self, hw: (usize, usize)) -> Result<(usize, usize)> {
        Ok((self.output_len(hw.0)?, self.output_len(hw.1)?))
    }

    /// Whether the adjoint is a plain stride-1 convolution with the flipped kernel
    /// (stride 1 and `padding ≤ k − 1`).
    pub(crate) fn adjoint_is_flipped_conv(&self) -> bool {
        self.stride == 1 && self.padding < self.kernel
    }
}
