//! Colour maps (`t ∈ [0, 1]` → RGB), piecewise linear between anchor colours.

use plotters::style::RGBColor;

fn interpolate(anchors: &[(u8, u8, u8)], t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let s = t * (anchors.len() - 1) as f64;
    let k = (s.floor() as usize).min(anchors.len() - 2);
    let f = s - k as f64;
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (anchors[k], anchors[k + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// matplotlib's `BuPu` (white → blue → purple), the reference's density colour map.
///
/// ```
/// use plotters::style::RGBColor;
/// assert_eq!(cpflow::plot::bupu(0.0), RGBColor(247, 252, 253)); // near white
/// assert_eq!(cpflow::plot::bupu(1.0), RGBColor(77, 0, 75)); // dark purple
/// assert_eq!(cpflow::plot::bupu(2.0), cpflow::plot::bupu(1.0)); // clamped
/// ```
pub fn bupu(t: f64) -> RGBColor {
    const A: [(u8, u8, u8); 9] = [
        (247, 252, 253),
        (224, 236, 244),
        (191, 211, 230),
        (158, 188, 218),
        (140, 150, 198),
        (140, 107, 177),
        (136, 65, 157),
        (129, 15, 124),
        (77, 0, 75),
    ];
    interpolate(&A, t)
}

/// Viridis (dark purple → yellow), used for potentials.
///
/// ```
/// use plotters::style::RGBColor;
/// assert_eq!(cpflow::plot::viridis(0.0), RGBColor(68, 1, 84));
/// assert_eq!(cpflow::plot::viridis(1.0), RGBColor(254, 232, 37));
/// // Piecewise linear: halfway between the first two anchors.
/// assert_eq!(cpflow::plot::viridis(1.0 / 14.0), RGBColor(69, 26, 106));
/// assert_eq!(cpflow::plot::viridis(f64::NAN), cpflow::plot::viridis(0.0));
/// ```
pub fn viridis(t: f64) -> RGBColor {
    const A: [(u8, u8, u8); 8] = [
        (68, 1, 84),
        (70, 50, 127),
        (54, 92, 141),
        (39, 127, 143),
        (31, 162, 136),
        (74, 194, 110),
        (160, 219, 57),
        (254, 232, 37),
    ];
    interpolate(&A, t)
}

/// A rainbow (purple → blue → green → yellow → red), for colouring points by rank as the
/// reference does with `cm.rainbow`.
///
/// ```
/// use plotters::style::RGBColor;
/// assert_eq!(cpflow::plot::rainbow(0.0), RGBColor(128, 0, 255)); // purple
/// assert_eq!(cpflow::plot::rainbow(1.0), RGBColor(255, 0, 0)); // red
/// assert_eq!(cpflow::plot::rainbow(-3.0), cpflow::plot::rainbow(0.0));
/// ```
pub fn rainbow(t: f64) -> RGBColor {
    const A: [(u8, u8, u8); 6] = [
        (128, 0, 255),
        (38, 120, 240),
        (26, 204, 204),
        (128, 255, 128),
        (255, 178, 74),
        (255, 0, 0),
    ];
    interpolate(&A, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_maps_hit_their_end_points_and_clamp() {
        assert_eq!(bupu(0.0), RGBColor(247, 252, 253));
        assert_eq!(bupu(1.0), RGBColor(77, 0, 75));
        assert_eq!(viridis(2.0), viridis(1.0));
        assert_eq!(rainbow(-1.0), rainbow(0.0));
        assert_eq!(viridis(f64::NAN), viridis(0.0));
    }
}
