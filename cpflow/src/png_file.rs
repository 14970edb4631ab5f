//! Writing 8-bit PNG files (the plots and the image flows' sample grids): encoded in memory
//! with the `image` crate, then written atomically ([`crate::checkpoint::write_atomic`]), so
//! an interrupted run leaves no truncated figure.

use std::path::Path;

use image::{ExtendedColorType, ImageEncoder};

use crate::error::{CpflowError, Result};

/// Writes `pixels` (`width × height`, row-major, `Rgb8` or `L8` as `color` says) to `path` as
/// a PNG; the directory is created when missing.
pub(crate) fn write_png(
    path: &Path,
    (width, height): (u32, u32),
    color: ExtendedColorType,
    pixels: &[u8],
) -> Result<()> {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(pixels, width, height, color)
        .map_err(|e| CpflowError::io(path, std::io::Error::other(e)))?;
    crate::checkpoint::write_atomic(path, &png)
}
