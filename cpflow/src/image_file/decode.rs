//! PNG and JPEG bytes to [`Rgb8Image`], as `image::load_from_memory(..)?.to_rgb8()` (0.25)
//! gives them (see the module's documentation for what that means pixel by pixel).

use std::io::Cursor;
use std::path::Path;

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

use super::{ImageFileError, Rgb8Image};

/// The most bytes a decoded image may take (512 MiB, the `image` crate's default limit):
/// larger sizes in a header are refused before anything is allocated.
pub const MAX_DECODED_BYTES: u64 = 512 << 20;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
const JPEG_SIGNATURE: &[u8] = b"\xff\xd8\xff";

/// Decodes a PNG or a JPEG (told apart by their first bytes) to 8-bit RGB.
///
/// ```
/// use cpflow::image_file::{ImageFileError, PngColor, decode_rgb8, encode_png};
/// let png = encode_png((1, 2), PngColor::Gray8, &[7, 200])?;
/// assert_eq!(decode_rgb8(&png)?.pixels, vec![7, 7, 7, 200, 200, 200]); // grey replicated
/// assert!(matches!(decode_rgb8(b"GIF89a"), Err(ImageFileError::UnknownFormat)));
/// let cut = &png[..png.len() - 20];
/// assert!(matches!(decode_rgb8(cut), Err(ImageFileError::Decode { format: "PNG", .. })));
/// # Ok::<(), ImageFileError>(())
/// ```
pub fn decode_rgb8(bytes: &[u8]) -> Result<Rgb8Image, ImageFileError> {
    if bytes.starts_with(PNG_SIGNATURE) {
        decode_png(bytes)
    } else if bytes.starts_with(JPEG_SIGNATURE) {
        decode_jpeg(bytes)
    } else {
        Err(ImageFileError::UnknownFormat)
    }
}

/// Reads the file at `path` and decodes it with [`decode_rgb8`]. A file that cannot be read
/// is [`ImageFileError::Io`] (which does not repeat the path: the caller has it).
///
/// ```
/// use cpflow::image_file::{ImageFileError, read_rgb8};
/// let err = read_rgb8("/no/such/dir/x.png").unwrap_err();
/// assert!(matches!(err, ImageFileError::Io(_)), "{err}");
/// ```
pub fn read_rgb8(path: impl AsRef<Path>) -> Result<Rgb8Image, ImageFileError> {
    decode_rgb8(&std::fs::read(path)?)
}

/// `width × height × channels` bytes, refused above [`MAX_DECODED_BYTES`].
fn check_size(width: u64, height: u64, channels: u64) -> Result<(), ImageFileError> {
    match width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(channels))
    {
        Some(n) if n <= MAX_DECODED_BYTES => Ok(()),
        _ => Err(ImageFileError::TooLarge { width, height }),
    }
}

fn png_error(e: impl std::fmt::Display) -> ImageFileError {
    ImageFileError::Decode {
        format: "PNG",
        reason: e.to_string(),
    }
}

fn decode_png(bytes: &[u8]) -> Result<Rgb8Image, ImageFileError> {
    let limits = png::Limits {
        bytes: usize::try_from(MAX_DECODED_BYTES).unwrap_or(usize::MAX),
    };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    decoder.set_ignore_text_chunk(false);
    let info = decoder.read_header_info().map_err(png_error)?;
    let (width, height) = (info.width, info.height);
    // Palettes and bit depths below 8 expanded; 16 bits kept (rounded below, as `image` does).
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(png_error)?;
    let (color, depth) = reader.output_color_type();
    let layout = match color {
        png::ColorType::Grayscale => Layout::Gray,
        png::ColorType::GrayscaleAlpha => Layout::GrayAlpha,
        png::ColorType::Rgb => Layout::Rgb,
        png::ColorType::Rgba => Layout::Rgba,
        png::ColorType::Indexed => return Err(png_error("a palette left unexpanded")),
    };
    let sample_bytes: u64 = if depth == png::BitDepth::Sixteen {
        2
    } else {
        1
    };
    check_size(
        width.into(),
        height.into(),
        layout.channels() as u64 * sample_bytes,
    )?;
    let size = reader
        .output_buffer_size()
        .ok_or(ImageFileError::TooLarge {
            width: width.into(),
            height: height.into(),
        })?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(png_error)?;
    buf.truncate(frame.buffer_size());
    let samples: Vec<u8> = match depth {
        png::BitDepth::Eight => buf,
        png::BitDepth::Sixteen => buf
            .chunks_exact(2)
            .map(|b| u16_to_u8(u16::from_be_bytes([b[0], b[1]])))
            .collect(),
        other => {
            return Err(png_error(format!(
                "a bit depth of {other:?} after expansion to 8 bits"
            )));
        }
    };
    Ok(to_rgb8(width, height, samples, layout))
}

/// `image`'s `FromPrimitive<u16> for u8`: `round(v · 255 / 65535)`.
fn u16_to_u8(v: u16) -> u8 {
    ((u32::from(v) + 128) / 257) as u8
}

fn jpeg_error(e: impl std::fmt::Debug) -> ImageFileError {
    ImageFileError::Decode {
        format: "JPEG",
        reason: format!("{e:?}"),
    }
}

fn jpeg_options() -> DecoderOptions {
    DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX)
}

fn decode_jpeg(bytes: &[u8]) -> Result<Rgb8Image, ImageFileError> {
    let mut headers = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), jpeg_options());
    headers.decode_headers().map_err(jpeg_error)?;
    let (Some((w, h)), Some(input)) = (headers.dimensions(), headers.input_colorspace()) else {
        return Err(jpeg_error("no frame header"));
    };
    // Grey and RGB (with or without alpha) as they are; anything else (YCbCr, CMYK, ...) as RGB.
    let (out, layout) = match input {
        ColorSpace::Luma => (input, Layout::Gray),
        ColorSpace::LumaA => (input, Layout::GrayAlpha),
        ColorSpace::RGBA => (input, Layout::Rgba),
        ColorSpace::RGB => (input, Layout::Rgb),
        _ => (ColorSpace::RGB, Layout::Rgb),
    };
    let (width, height) = (w as u64, h as u64);
    check_size(width, height, layout.channels() as u64)?;
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        ZCursor::new(bytes),
        jpeg_options().jpeg_set_out_colorspace(out),
    );
    let samples = decoder.decode().map_err(jpeg_error)?;
    let expected = (width * height) as usize * layout.channels();
    if samples.len() != expected {
        return Err(jpeg_error(format!(
            "{} decoded bytes for a {width}×{height} image of {} channels",
            samples.len(),
            layout.channels()
        )));
    }
    // JPEG sizes are 16-bit: these fit.
    Ok(to_rgb8(width as u32, height as u32, samples, layout))
}

/// The channel layout of decoded 8-bit samples.
#[derive(Clone, Copy)]
enum Layout {
    Gray,
    GrayAlpha,
    Rgb,
    Rgba,
}

impl Layout {
    fn channels(self) -> usize {
        match self {
            Layout::Gray => 1,
            Layout::GrayAlpha => 2,
            Layout::Rgb => 3,
            Layout::Rgba => 4,
        }
    }
}

/// Grey replicated, alpha dropped; RGB samples are taken as they are (not copied).
fn to_rgb8(width: u32, height: u32, samples: Vec<u8>, layout: Layout) -> Rgb8Image {
    let pixels = match layout {
        Layout::Rgb => samples,
        _ => samples
            .chunks_exact(layout.channels())
            .flat_map(|p| match layout {
                Layout::Gray | Layout::GrayAlpha => [p[0], p[0], p[0]],
                Layout::Rgb | Layout::Rgba => [p[0], p[1], p[2]],
            })
            .collect(),
    };
    Rgb8Image {
        width,
        height,
        pixels,
    }
}
