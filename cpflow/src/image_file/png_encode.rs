//! Pixels to PNG bytes (the `png` crate with the settings of the `image` crate's
//! `PngEncoder::new`: fast compression, adaptive filtering), and atomic PNG files.

use std::path::Path;

use super::{ImageFileError, PngColor};
use crate::error::{CpflowError, Result};

/// The PNG bytes of `pixels` (`width × height`, row-major, 1 or 3 bytes a pixel as `color`
/// says). The encoder writes to memory: it fails only on what it is given (pixels that do
/// not fill the image exactly, a zero or oversized width or height), never on I/O.
///
/// ```
/// use cpflow::image_file::{ImageFileError, PngColor, decode_rgb8, encode_png};
/// let png = encode_png((3, 1), PngColor::Gray8, &[0, 128, 255])?;
/// assert_eq!(decode_rgb8(&png)?.to_pil_gray(), vec![0, 128, 255]);
/// // 2 × 2 RGB needs 12 bytes.
/// assert!(matches!(encode_png((2, 2), PngColor::Rgb8, &[0; 11]), Err(ImageFileError::Encode(_))));
/// assert!(matches!(encode_png((0, 1), PngColor::Gray8, &[]), Err(ImageFileError::Encode(_))));
/// # Ok::<(), ImageFileError>(())
/// ```
pub fn encode_png(
    (width, height): (u32, u32),
    color: PngColor,
    pixels: &[u8],
) -> std::result::Result<Vec<u8>, ImageFileError> {
    let expected = u64::from(width) * u64::from(height) * color.channels() as u64;
    if expected != pixels.len() as u64 {
        return Err(ImageFileError::Encode(format!(
            "{} bytes for a {width}×{height} image of {} bytes a pixel ({expected} needed)",
            pixels.len(),
            color.channels()
        )));
    }
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(match color {
        PngColor::Gray8 => png::ColorType::Grayscale,
        PngColor::Rgb8 => png::ColorType::Rgb,
    });
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    encoder.set_filter(png::Filter::Adaptive);
    let encode_error = |e: png::EncodingError| ImageFileError::Encode(e.to_string());
    let mut writer = encoder.write_header().map_err(encode_error)?;
    writer.write_image_data(pixels).map_err(encode_error)?;
    writer.finish().map_err(encode_error)?;
    Ok(png)
}

/// Writes `pixels` (as [`encode_png`] takes them) to `path` as a PNG; the directory is
/// created when missing. An image that cannot be encoded is
/// [`CpflowError::InvalidInput`] naming `path` (nothing is written); a file that cannot be
/// written, [`CpflowError::Io`].
pub(crate) fn write_png(
    path: &Path,
    size: (u32, u32),
    color: PngColor,
    pixels: &[u8],
) -> Result<()> {
    let png = encode_png(size, color, pixels).map_err(|e| {
        CpflowError::InvalidInput(format!(
            "the {}×{} image for {} cannot be a PNG: {e}",
            size.0,
            size.1,
            path.display()
        ))
    })?;
    crate::checkpoint::write_atomic(path, &png)
}
