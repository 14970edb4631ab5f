//! The size and the text of a figure, and the font every figure is drawn with.

use super::PlotError;
use std::path::Path;
use std::sync::OnceLock;

/// Family name under which the embedded DejaVu Sans is registered with plotters.
pub(crate) const FONT_FAMILY: &str = "cpflow DejaVu Sans";

/// DejaVu Sans 2.37 (Bitstream Vera licence with public-domain DejaVu changes; see
/// `cpflow/assets/LICENSE-DejaVu.txt`).
static FONT_TTF: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the embedded font with plotters once per process.
pub(crate) fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, plotters::style::FontStyle::Normal, FONT_TTF)
            .is_ok()
    });
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

/// Size and text of one figure: a square canvas of `size` pixels with a title, axis labels
/// and tick labels.
///
/// Every plotting function takes `impl Into<Figure>`, so a bare pixel size works too
/// (`scatter_png(path, &pts, bounds, 2, 400)`): the title is then the file name without its
/// extension and the axes get the function's default labels (`x₁`, `x₂` for the plane, `x`,
/// `y` for line charts).
///
/// ```
/// use cpflow::plot::Figure;
/// let f = Figure::new(400).title("8 Gaussians: model density").labels("x₁", "x₂");
/// assert_eq!(f.size, 400);
/// assert_eq!(f.title.as_deref(), Some("8 Gaussians: model density"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Figure {
    /// Width and height of the PNG in pixels (at least 64 are used).
    pub size: u32,
    /// Title above the plot; `None` = the file name without its extension.
    pub title: Option<String>,
    /// Label of the horizontal axis; `None` = the function's default.
    pub x_label: Option<String>,
    /// Label of the vertical axis; `None` = the function's default.
    pub y_label: Option<String>,
}

impl Figure {
    /// A `size × size` figure with the default title and labels.
    pub fn new(size: u32) -> Self {
        Self {
            size,
            title: None,
            x_label: None,
            y_label: None,
        }
    }

    /// Sets the title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets both axis labels.
    pub fn labels(mut self, x: impl Into<String>, y: impl Into<String>) -> Self {
        self.x_label = Some(x.into());
        self.y_label = Some(y.into());
        self
    }
}

impl From<u32> for Figure {
    fn from(size: u32) -> Self {
        Self::new(size)
    }
}

/// A [`Figure`] with every default filled in, and the pixel sizes derived from its size.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedFigure {
    pub size: u32,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Title font size (px).
    pub title_px: f64,
    /// Tick-label font size (px).
    pub tick_px: f64,
    /// Axis-label font size (px).
    pub label_px: f64,
    /// Outer margin (px).
    pub margin: u32,
    /// Height of the band under the plot that holds the x tick labels and the x label.
    pub x_area: u32,
    /// Plot area with the data's aspect ratio (maps of the plane) instead of the largest one.
    pub equal_aspect: bool,
}

/// Margins and label bands of one chart (px), from [`ResolvedFigure::layout`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub top: u32,
    pub bottom: u32,
    pub left: u32,
    pub right: u32,
    pub x_area: u32,
    pub y_area: u32,
}

impl ResolvedFigure {
    /// A map of the plane: default labels `x₁`, `x₂`, equal aspect ratio.
    pub(crate) fn plane(fig: Figure, path: &Path) -> Self {
        Self::new(fig, path, ("x₁", "x₂"), true)
    }

    /// A chart of y against x: default labels `x`, `y`, the plot area as large as fits.
    pub(crate) fn chart(fig: Figure, path: &Path) -> Self {
        Self::new(fig, path, ("x", "y"), false)
    }

    /// Fills the defaults: the title from `path`'s file stem, the labels from `labels`.
    fn new(fig: Figure, path: &Path, labels: (&str, &str), equal_aspect: bool) -> Self {
        let size = fig.size.max(64);
        let s = size as f64;
        let title_px = (s / 28.0).clamp(10.0, 32.0);
        let tick_px = (s / 45.0).clamp(8.0, 22.0);
        let label_px = (s / 40.0).clamp(9.0, 24.0);
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pick = |v: Option<String>, default: &str| {
            v.filter(|t| !t.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        Self {
            size,
            title: pick(fig.title, &stem),
            x_label: pick(fig.x_label, labels.0),
            y_label: pick(fig.y_label, labels.1),
            title_px,
            tick_px,
            label_px,
            margin: (size / 80).max(3),
            x_area: (tick_px * 1.4 + label_px * 1.5 + 6.0).round() as u32,
            equal_aspect,
        }
    }

    /// Height of plotters' caption band: the text height (`px / 1.24`) plus its padding.
    pub(crate) fn caption_height(&self) -> u32 {
        let text_h = (self.title_px / 1.24) as u32;
        text_h + 2 * (text_h / 2).min(5)
    }

    /// Margins and label bands for a chart over `bounds`: the y band fits the widest tick
    /// label; with `equal_aspect` the spare room is split evenly so that one unit of x and
    /// of y are as many pixels.
    pub(crate) fn layout(&self, bounds: super::Bounds, tick: impl Fn(f64) -> String) -> Layout {
        let chars = (0..=10)
            .map(|k| bounds.y.0 + (bounds.y.1 - bounds.y.0) * k as f64 / 10.0)
            .map(|v| tick(v).chars().count())
            .max()
            .unwrap_or(1);
        let y_area =
            (chars as f64 * 0.62 * self.tick_px + 8.0 + self.label_px * 1.5).round() as u32;
        let m = self.margin;
        // Half of the last x tick label sticks out right of the plot area.
        let (mut top, mut bottom, mut left, mut right) = (m, m, m, m + self.tick_px as u32);
        let avail_w = self.size.saturating_sub(left + right + y_area).max(1) as f64;
        let avail_h = self
            .size
            .saturating_sub(top + bottom + self.caption_height() + self.x_area)
            .max(1) as f64;
        if self.equal_aspect {
            let aspect = ((bounds.x.1 - bounds.x.0) / (bounds.y.1 - bounds.y.0)).clamp(0.25, 4.0);
            if avail_w > avail_h * aspect {
                let spare = (avail_w - avail_h * aspect) as u32;
                left += spare / 2;
                right += spare - spare / 2;
            } else {
                let spare = (avail_h - avail_w / aspect) as u32;
                top += spare / 2;
                bottom += spare - spare / 2;
            }
        }
        Layout {
            top,
            bottom,
            left,
            right,
            x_area: self.x_area,
            y_area,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_file_name_and_the_function() {
        let r = ResolvedFigure::plane(Figure::new(300), Path::new("/tmp/out/density.png"));
        assert_eq!(
            (r.title.as_str(), r.x_label.as_str(), r.y_label.as_str()),
            ("density", "x₁", "x₂")
        );
        let r = ResolvedFigure::chart(
            Figure::new(10).title("T").labels("u", " "),
            Path::new("p.png"),
        );
        assert_eq!((r.title.as_str(), r.x_label.as_str()), ("T", "u"));
        assert_eq!(r.y_label, "y", "a blank label falls back to the default");
        assert_eq!(r.size, 64, "tiny canvases are enlarged to fit the text");
        assert!(ensure_font().is_ok());
    }

    #[test]
    fn plane_layouts_have_equal_aspect() {
        for (size, bounds) in [
            (120, super::super::Bounds::square(4.0)),
            (
                500,
                super::super::Bounds {
                    x: (-4.0, 4.0),
                    y: (-1.0, 1.0),
                },
            ),
        ] {
            let r = ResolvedFigure::plane(Figure::new(size), Path::new("p.png"));
            let l = r.layout(bounds, |v| format!("{v:.1}"));
            let w = size - l.left - l.right - l.y_area;
            let h = size - l.top - l.bottom - r.caption_height() - l.x_area;
            let aspect = (bounds.x.1 - bounds.x.0) / (bounds.y.1 - bounds.y.0);
            // Integer pixels: the split of the spare room rounds down by at most 2 px.
            assert!(
                (w as f64 - aspect * h as f64).abs() <= 2.0 * aspect,
                "{w}×{h}"
            );
            assert!(
                w >= size / 2,
                "the plot area keeps most of the canvas: {w} of {size}"
            );
        }
    }
}
