//! 8-bit PNG files, encoded in memory with the `image` crate ([`encode_png`]): the plots and
//! the image flows' sample grids (`crate::image::grid`), written with [`write_png`]
//! (atomically with [`crate::checkpoint::write_atomic`], so an interrupted run leaves no
//! truncated figure), or as bytes that `cpflow sample --grid` stages with its other outputs.

use std::path::Path;

use image::error::{ParameterError, ParameterErrorKind};
use image::{ExtendedColorType, ImageEncoder, ImageError};

use crate::error::{CpflowError, Result};

/// The PNG bytes of `pixels` (`width × height`, row-major, `Rgb8` or `L8` as `color` says).
/// The encoder writes to memory: it fails only on what it is given (pixels that do not fill
/// the image, which the `image` crate would panic on, or sizes a PNG cannot have), never on
/// I/O.
pub(crate) fn encode_png(
    (width, height): (u32, u32),
    color: ExtendedColorType,
    pixels: &[u8],
) -> std::result::Result<Vec<u8>, ImageError> {
    // The `image` crate's (private) `ExtendedColorType::buffer_size`.
    let row_bytes = (u64::from(width) * u64::from(color.bits_per_pixel())).div_ceil(8);
    if row_bytes.saturating_mul(u64::from(height)) != pixels.len() as u64 {
        return Err(ImageError::Parameter(ParameterError::from_kind(
            ParameterErrorKind::DimensionMismatch,
        )));
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(pixels, width, height, color)?;
    Ok(png)
}

/// Writes `pixels` (as [`encode_png`] takes them) to `path` as a PNG; the directory is
/// created when missing. An image that cannot be encoded is
/// [`CpflowError::InvalidInput`] naming `path` (nothing is written); a file that cannot be
/// written, [`CpflowError::Io`].
pub(crate) fn write_png(
    path: &Path,
    size: (u32, u32),
    color: ExtendedColorType,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes decode to the pixels; `write_png` writes exactly them.
    #[test]
    fn the_written_file_is_the_encoded_png() {
        let pixels = [0u8, 64, 128, 255, 10, 20];
        let png = encode_png((3, 2), ExtendedColorType::L8, &pixels).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_luma8();
        assert_eq!(
            (img.dimensions(), img.into_raw()),
            ((3, 2), pixels.to_vec())
        );
        let path = std::env::temp_dir().join(format!("cpflow-png-{}.png", std::process::id()));
        write_png(&path, (3, 2), ExtendedColorType::L8, &pixels).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), png);
        std::fs::remove_file(&path).ok();
    }

    /// An image the encoder refuses (a zero width) is an invalid input naming the file, and
    /// nothing is written; so are pixels that do not fill the image (the `image` crate
    /// panics on those). The old code called the first an I/O error on the file, which was
    /// never touched, and panicked on the second.
    #[test]
    fn an_image_that_cannot_be_encoded_is_invalid_input() {
        let path = std::env::temp_dir().join(format!("cpflow-png-bad-{}.png", std::process::id()));
        for (size, pixels) in [((0, 2), &[][..]), ((2, 2), &[0; 3][..])] {
            let err = write_png(&path, size, ExtendedColorType::L8, pixels).unwrap_err();
            assert!(
                matches!(&err, CpflowError::InvalidInput(m)
                    if m.contains(&path.display().to_string()) && m.contains("cannot be a PNG")),
                "{size:?}: {err:?}"
            );
            assert!(!path.exists());
        }
    }
}
