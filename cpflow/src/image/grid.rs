//! A grid of images as a PNG (the sample grids of `cpflow sample --grid`; reference
//! `train_img.py:visualize`, images-vae.md §2.8).

use std::path::Path;

use crate::image_file::PngColor;
use candle_core::{DType, Tensor};

use crate::error::{CpflowError, Result};

/// Pixels between cells and around the grid (filled with [`GRID_BACKGROUND`]).
pub const GRID_PADDING: usize = 2;
/// Grey level of the padding and of empty cells.
pub const GRID_BACKGROUND: u8 = 128;

/// Quantise dequantised images `x ∈ [0, 1)` to 8-bit levels `k = ⌊256·x⌋ ∈ {0..255}` (the
/// inverse of [`crate::image::dequantize`]) and return `k/255 ∈ [0, 1]`, the display values
/// [`write_sample_grid`] takes. Any shape; values outside `[0, 1)` are clamped.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// # fn main() -> cpflow::Result<()> {
/// let x = Tensor::new(&[0.0f64, 0.5, 0.999, 1.2], &Device::Cpu)?;
/// let v = cpflow::image::quantize_pixels(&x)?.to_vec1::<f64>()?;
/// // ⌊256·x⌋ = 0, 128, 255 and (clamped) 255, divided by 255.
/// for (got, want) in v.iter().zip([0.0, 128.0 / 255.0, 1.0, 1.0]) {
///     assert!((got - want).abs() < 1e-15, "{got} vs {want}");
/// }
/// # Ok(())
/// # }
/// ```
pub fn quantize_pixels(x: &Tensor) -> Result<Tensor> {
    Ok(x.to_dtype(DType::F64)?
        .affine(256.0, 0.0)?
        .floor()?
        .clamp(0.0, 255.0)?
        .affine(1.0 / 255.0, 0.0)?)
}

/// The pixel size `(width, height)` of a `rows × cols` grid of `h × w` images:
/// `cols·w + (cols + 1)·GRID_PADDING` by `rows·h + (rows + 1)·GRID_PADDING`.
///
/// ```
/// use cpflow::image::grid::{GRID_PADDING, grid_size};
/// assert_eq!(GRID_PADDING, 2);
/// // 4 columns of 28-pixel images: 4·28 + 5·2 wide; 1 row: 28 + 2·2 high.
/// assert_eq!(grid_size(1, 4, 28, 28), (122, 32));
/// ```
pub fn grid_size(rows: usize, cols: usize, h: usize, w: usize) -> (usize, usize) {
    (
        cols * w + (cols + 1) * GRID_PADDING,
        rows * h + (rows + 1) * GRID_PADDING,
    )
}

/// The PNG bytes of `images` `(B, C, H, W)` with values in `[0, 1]` (`C` = 1: grey, `C` = 3:
/// RGB) drawn as a `rows × cols` grid, row-major (image `i` in row `i / cols`, column
/// `i % cols`), with [`GRID_PADDING`] pixels between and around the cells ([`grid_size`]). A
/// value `v` becomes the byte `round(255·v)` (clamped). `B ≤ rows·cols`; cells without an
/// image stay [`GRID_BACKGROUND`]. An 8-bit grey PNG for `C` = 1, RGB for `C` = 3.
/// [`write_sample_grid`] writes them to a file.
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// use cpflow::image::grid::{GRID_BACKGROUND, encode_sample_grid_png, grid_size};
/// # fn main() -> cpflow::Result<()> {
/// // Three white 4×4 images in a 2×2 grid: the fourth cell stays the background.
/// let imgs = Tensor::ones((3, 1, 4, 4), cpflow::candle::DType::F32, &Device::Cpu)?;
/// let png = encode_sample_grid_png(&imgs, 2, 2)?;
/// let grid = cpflow::image_file::decode_rgb8(&png).expect("a PNG");
/// assert_eq!((grid.width, grid.height), (14, 14));
/// assert_eq!(grid_size(2, 2, 4, 4), (14, 14));
/// assert_eq!(grid.pixel(2, 2), [255; 3]); // the first image's top-left pixel
/// assert_eq!(grid.pixel(8, 8), [GRID_BACKGROUND; 3]); // the empty cell
/// # Ok(())
/// # }
/// ```
pub fn encode_sample_grid_png(images: &Tensor, rows: usize, cols: usize) -> Result<Vec<u8>> {
    let (size @ (gw, gh), color, pixels) = grid_pixels(images, rows, cols)?;
    crate::image_file::encode_png(size, color, &pixels)
        .map_err(|e| CpflowError::InvalidInput(format!("the {gw}×{gh} grid cannot be a PNG: {e}")))
}

/// The grid of [`encode_sample_grid_png`] (its arguments and checks) as the size, colour
/// type and pixels that [`crate::image_file::encode_png`] takes.
fn grid_pixels(
    images: &Tensor,
    rows: usize,
    cols: usize,
) -> Result<((u32, u32), PngColor, Vec<u8>)> {
    let (b, c, h, w) = images.dims4().map_err(|_| {
        CpflowError::InvalidInput(format!(
            "a sample grid takes (B, C, H, W) images, got shape {:?}",
            images.dims()
        ))
    })?;
    if rows == 0 || cols == 0 || b > rows * cols {
        return Err(CpflowError::InvalidInput(format!(
            "{b} images do not fit a {rows}×{cols} grid"
        )));
    }
    if c != 1 && c != 3 {
        return Err(CpflowError::InvalidInput(format!(
            "a sample grid takes 1 (grey) or 3 (RGB) channels, got {c}"
        )));
    }
    let v = images
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(CpflowError::InvalidInput(
            "sample grid values must be finite".into(),
        ));
    }
    let (gw, gh) = grid_size(rows, cols, h, w);
    let mut buf = vec![GRID_BACKGROUND; gw * gh * 3];
    for i in 0..b {
        let (r0, c0) = (
            GRID_PADDING + (i / cols) * (h + GRID_PADDING),
            GRID_PADDING + (i % cols) * (w + GRID_PADDING),
        );
        for y in 0..h {
            for x in 0..w {
                let at = ((r0 + y) * gw + c0 + x) * 3;
                for ch in 0..3 {
                    let src = if c == 1 { 0 } else { ch };
                    let val = v[((i * c + src) * h + y) * w + x];
                    buf[at + ch] = (val * 255.0).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    let (gw32, gh32) = (
        u32::try_from(gw).map_err(|_| too_big(gw, gh))?,
        u32::try_from(gh).map_err(|_| too_big(gw, gh))?,
    );
    let (pixels, color) = if c == 1 {
        let grey: Vec<u8> = buf.chunks_exact(3).map(|p| p[0]).collect();
        (grey, PngColor::Gray8)
    } else {
        (buf, PngColor::Rgb8)
    };
    Ok(((gw32, gh32), color, pixels))
}

/// Writes the PNG of [`encode_sample_grid_png`] (its arguments and checks) to `path`,
/// atomically (`crate::image_file::write_png`; the directory is created when missing).
///
/// ```
/// use cpflow::candle::{Device, Tensor};
/// # fn main() -> cpflow::Result<()> {
/// let imgs = Tensor::rand(0f32, 1.0, (6, 1, 28, 28), &Device::Cpu)?;
/// let path = std::env::temp_dir().join("cpflow-grid-doctest.png");
/// cpflow::image::write_sample_grid(&imgs, 2, 3, &path)?;
/// let (w, h) = cpflow::image::grid_size(2, 3, 28, 28);
/// assert_eq!((w, h), (3 * 28 + 4 * 2, 2 * 28 + 3 * 2));
/// let png = cpflow::image::grid::encode_sample_grid_png(&imgs, 2, 3)?;
/// assert_eq!(std::fs::read(&path).unwrap(), png);
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn write_sample_grid(images: &Tensor, rows: usize, cols: usize, path: &Path) -> Result<()> {
    let (size, color, pixels) = grid_pixels(images, rows, cols)?;
    crate::image_file::write_png(path, size, color, &pixels)
}

fn too_big(w: usize, h: usize) -> CpflowError {
    CpflowError::InvalidInput(format!("a {w}×{h} grid is too large for a PNG"))
}
