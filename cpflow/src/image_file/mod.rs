//! 8-bit image files: PNG and JPEG decoded to RGB ([`decode_rgb8`], [`read_rgb8`]) and PNGs
//! encoded in memory ([`encode_png`]). The plots and the image flows' sample grids
//! (`crate::image::grid`) are written with `write_png` (atomically with
//! [`crate::checkpoint::write_atomic`], so an interrupted run leaves no truncated figure);
//! BSDS300's JPEGs and the toy densities' PNGs are read with [`decode_rgb8`].
//!
//! The codecs are the `png` and `zune-jpeg` crates, called as the `image` crate 0.25 calls
//! them, so the pixels are those that `image::load_from_memory(..)?.to_rgb8()` gives: PNG with
//! palettes and bit depths below 8 expanded, 16-bit samples rounded to 8 bits
//! (`round(v·255/65535)`), alpha dropped (not composited), grey replicated to RGB; JPEG in
//! its own colour space when that is grey or RGB, converted to RGB otherwise, no EXIF
//! rotation. Colour profiles are not applied (nor were they by `to_rgb8`).
//!
//! ```
//! use cpflow::image_file::{PngColor, decode_rgb8, encode_png};
//! // A 2 × 1 RGB PNG, written and read back.
//! let png = encode_png((2, 1), PngColor::Rgb8, &[255, 0, 0, 10, 20, 30])?;
//! let img = decode_rgb8(&png)?;
//! assert_eq!((img.width, img.height), (2, 1));
//! assert_eq!((img.pixel(0, 0), img.pixel(1, 0)), ([255, 0, 0], [10, 20, 30]));
//! # Ok::<(), cpflow::image_file::ImageFileError>(())
//! ```

mod decode;
mod png_encode;
#[cfg(test)]
mod tests;

pub use decode::{MAX_DECODED_BYTES, decode_rgb8, read_rgb8};
pub use png_encode::encode_png;
pub(crate) use png_encode::write_png;

/// Why an image file could not be read, decoded or encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageFileError {
    /// The file could not be read (the caller knows its path).
    #[error("I/O error")]
    Io(#[from] std::io::Error),
    /// The bytes start with neither the PNG nor the JPEG signature.
    #[error("not a PNG or JPEG file (its first bytes are neither signature)")]
    UnknownFormat,
    /// The file claims to be a `format` (PNG or JPEG) but cannot be decoded: truncated,
    /// corrupt, or a variant the decoder does not support.
    #[error("cannot decode the {format}: {reason}")]
    Decode {
        /// `"PNG"` or `"JPEG"`.
        format: &'static str,
        /// The decoder's reason.
        reason: String,
    },
    /// The decoded image would take more than [`MAX_DECODED_BYTES`].
    #[error(
        "a {width}×{height} image takes more than the {} MiB allowed decoded",
        MAX_DECODED_BYTES >> 20
    )]
    TooLarge {
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
    },
    /// The pixels cannot be a PNG: a zero or too large size, or a buffer whose length is
    /// not `width × height × channels`.
    #[error("cannot encode a PNG: {0}")]
    Encode(String),
}

/// The colour types [`encode_png`] writes: 8-bit grey or 8-bit RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PngColor {
    /// One byte a pixel (grey level).
    Gray8,
    /// Three bytes a pixel (red, green, blue).
    Rgb8,
}

impl PngColor {
    /// Bytes a pixel: 1 or 3.
    ///
    /// ```
    /// assert_eq!(cpflow::image_file::PngColor::Rgb8.channels(), 3);
    /// ```
    pub fn channels(self) -> usize {
        match self {
            PngColor::Gray8 => 1,
            PngColor::Rgb8 => 3,
        }
    }
}

/// An 8-bit RGB image, row-major, three bytes a pixel (what [`decode_rgb8`] gives).
///
/// ```
/// use cpflow::image_file::Rgb8Image;
/// let img = Rgb8Image { width: 2, height: 1, pixels: vec![200, 100, 50, 0, 0, 0] };
/// assert_eq!(img.pixel(0, 0), [200, 100, 50]);
/// assert_eq!(img.to_pil_gray(), vec![124, 0]); // PIL's convert("L")
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `height × width × 3` bytes: the rows from the top, each pixel's red, green, blue.
    pub pixels: Vec<u8>,
}

impl Rgb8Image {
    /// `(width, height)`.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The pixel in column `x` of row `y` (row 0 is the top). Panics outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) of a {}×{} image",
            self.width,
            self.height
        );
        let at = (y as usize * self.width as usize + x as usize) * 3;
        [self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]]
    }

    /// The grey levels of PIL's `convert("L")` ([`pil_luma`] of each pixel), row-major.
    pub fn to_pil_gray(&self) -> Vec<u8> {
        self.pixels
            .chunks_exact(3)
            .map(|p| pil_luma(p[0], p[1], p[2]))
            .collect()
    }
}

/// PIL's `convert("L")`: ITU-R 601-2 luma with PIL's fixed-point rounding.
///
/// ```
/// use cpflow::image_file::pil_luma;
/// // PIL: Image.new("RGB", (1, 1), c).convert("L").getpixel((0, 0))
/// assert_eq!(pil_luma(200, 100, 50), 124);
/// assert_eq!(pil_luma(255, 0, 0), 76);
/// assert_eq!((pil_luma(0, 0, 0), pil_luma(255, 255, 255)), (0, 255));
/// ```
pub fn pil_luma(r: u8, g: u8, b: u8) -> u8 {
    let l = (19_595 * u32::from(r) + 38_470 * u32::from(g) + 7_471 * u32::from(b) + 0x8000) >> 16;
    l.min(255) as u8
}
