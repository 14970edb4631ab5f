//! The squeeze (space-to-depth) layer `(C, H, W) → (4C, H/2, W/2)` of the reference's
//! `SqueezeLayer(2)` (images-vae.md §1.4), as a fixed permutation of the flattened row.

use candle_core::{Device, Tensor};
use icnn::ImageShape;

use crate::error::{CpflowError, Result};

/// The permutation of a squeeze on flattened `(C, H, W)` rows: entry `o` of the output row is
/// entry `perm[o]` of the input row. Output channel `4c + 2i + j` holds the input pixel
/// `(2y + i, 2x + j)` of channel `c` at position `(y, x)` (PyTorch's
/// `view(B, C, H/2, 2, W/2, 2).permute(0, 1, 3, 5, 2, 4)`, inverted by `pixel_shuffle(2)`).
///
/// ```
/// use cpflow::image::squeeze_permutation;
/// use cpflow::icnn::ImageShape;
/// // A 1×2×4 image: output channel 0 gathers the pixels (0, 0) and (0, 2), channel 1
/// // (0, 1) and (0, 3), channels 2 and 3 the same of row 1.
/// let perm = squeeze_permutation(ImageShape::new(1, 2, 4))?;
/// assert_eq!(perm, vec![0, 2, 1, 3, 4, 6, 5, 7]);
/// assert!(squeeze_permutation(ImageShape::new(1, 3, 4)).is_err()); // odd height
/// # Ok::<(), cpflow::CpflowError>(())
/// ```
pub fn squeeze_permutation(shape: ImageShape) -> Result<Vec<usize>> {
    let (c, h, w) = (shape.channels, shape.height, shape.width);
    if !h.is_multiple_of(2) || !w.is_multiple_of(2) || c == 0 || h == 0 || w == 0 {
        return Err(CpflowError::InvalidConfig(format!(
            "squeeze needs a non-empty image with even height and width, got {c}×{h}×{w}"
        )));
    }
    let (h2, w2) = (h / 2, w / 2);
    let mut perm = Vec::with_capacity(shape.dim());
    for ch in 0..c {
        for i in 0..2 {
            for j in 0..2 {
                for y in 0..h2 {
                    for x in 0..w2 {
                        perm.push(ch * h * w + (2 * y + i) * w + (2 * x + j));
                    }
                }
            }
        }
    }
    Ok(perm)
}

/// Space-to-depth by 2: `(B, C·H·W)` rows in `(C, H, W)` order become `(B, 4C·(H/2)·(W/2))`
/// rows in `(4C, H/2, W/2)` order. Volume preserving (log-det 0), exact inverse.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::image::Squeeze;
/// use cpflow::icnn::ImageShape;
/// # fn main() -> cpflow::Result<()> {
/// let sq = Squeeze::new(ImageShape::new(1, 2, 2), &Device::Cpu)?;
/// assert_eq!(sq.output_shape(), ImageShape::new(4, 1, 1));
/// let x = Tensor::new(&[[1.0f64, 2.0, 3.0, 4.0]], &Device::Cpu)?;
/// let y = sq.forward(&x)?;
/// assert_eq!(sq.inverse(&y)?.to_vec2::<f64>()?, x.to_vec2::<f64>()?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Squeeze {
    input: ImageShape,
    forward_index: Tensor,
    inverse_index: Tensor,
}

impl Squeeze {
    /// The squeeze of `input`-shaped images (height and width even), index tensors on `device`.
    pub fn new(input: ImageShape, device: &Device) -> Result<Self> {
        let perm = squeeze_permutation(input)?;
        let mut inv = vec![0u32; perm.len()];
        for (o, &i) in perm.iter().enumerate() {
            inv[i] = o as u32;
        }
        let fwd: Vec<u32> = perm.iter().map(|&i| i as u32).collect();
        let n = fwd.len();
        Ok(Squeeze {
            input,
            forward_index: Tensor::from_vec(fwd, n, device)?,
            inverse_index: Tensor::from_vec(inv, n, device)?,
        })
    }

    /// The input image shape.
    pub fn input_shape(&self) -> ImageShape {
        self.input
    }

    /// The output image shape `(4C, H/2, W/2)`.
    pub fn output_shape(&self) -> ImageShape {
        squeezed_shape(self.input)
    }

    /// Squeeze rows `(B, D)` (differentiable).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.index_select(&self.forward_index, 1)?)
    }

    /// Undo the squeeze (depth-to-space).
    pub fn inverse(&self, y: &Tensor) -> Result<Tensor> {
        Ok(y.index_select(&self.inverse_index, 1)?)
    }
}

/// `(C, H, W) → (4C, H/2, W/2)` (the shape after a [`Squeeze`]; the size `C·H·W` is kept).
///
/// ```
/// use cpflow::image::squeezed_shape;
/// use cpflow::icnn::ImageShape;
/// let s = squeezed_shape(ImageShape::new(3, 4, 6));
/// assert_eq!(s, ImageShape::new(12, 2, 3));
/// assert_eq!(s.dim(), 3 * 4 * 6);
/// ```
pub fn squeezed_shape(s: ImageShape) -> ImageShape {
    ImageShape::new(4 * s.channels, s.height / 2, s.width / 2)
}
