//! Parsers of the command line's argument values: each value is checked where the arguments
//! are read, so that a bad one is clap's error naming the flag, before anything runs.

use crate::FloatType;
use clap::builder::PossibleValue;

use super::{MAX_GRID_CELLS, model_plots};

/// `--dtype`: `f32` or `f64`, parsed by clap for every command that takes it (an unknown
/// value is refused naming the flag, with the values it takes). A configuration's
/// `model.float` is read by serde under the same names.
impl clap::ValueEnum for FloatType {
    fn value_variants<'a>() -> &'a [Self] {
        &[FloatType::F32, FloatType::F64]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(match self {
            FloatType::F32 => "f32",
            FloatType::F64 => "f64",
        }))
    }
}

/// A count of at least `MIN` (points, probes, steps, grid cells): `0` is refused when the
/// arguments are read instead of failing, or doing nothing, later.
pub(super) fn count_at_least<const MIN: usize>(s: &str) -> std::result::Result<usize, String> {
    let n = s
        .trim()
        .parse::<usize>()
        .map_err(|e| format!("`{s}` is not a count: {e}"))?;
    if n < MIN {
        return Err(format!("must be at least {MIN}, got {n}"));
    }
    Ok(n)
}

/// A count in `MIN..=MAX`: sizes that allocate in proportion (grid points, drawn points) are
/// bounded where the arguments are read, with the limit in the message, instead of growing
/// until the kernel kills the process.
pub(super) fn count_in<const MIN: usize, const MAX: usize>(
    s: &str,
) -> std::result::Result<usize, String> {
    let n = count_at_least::<MIN>(s)?;
    if n > MAX {
        return Err(format!("must be at most {MAX}, got {n}"));
    }
    Ok(n)
}

/// `--grid ROWSxCOLS` of `sample`: two positive counts, at most [`MAX_GRID_CELLS`] cells.
pub(super) fn parse_grid(s: &str) -> std::result::Result<(usize, usize), String> {
    let (r, c) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("grid `{s}` is not ROWSxCOLS (e.g. 8x8)"))?;
    let p = |v: &str| {
        count_at_least::<1>(v).map_err(|_| format!("grid `{s}`: `{v}` is not a positive integer"))
    };
    let (r, c) = (p(r)?, p(c)?);
    if r.saturating_mul(c) > MAX_GRID_CELLS {
        return Err(format!(
            "grid `{s}` has {} cells; at most {MAX_GRID_CELLS} (e.g. 64x64) are drawn into one PNG",
            r.saturating_mul(c)
        ));
    }
    Ok((r, c))
}

/// A finite number above 0 (a plot window's half-width).
pub(super) fn positive_finite(s: &str) -> std::result::Result<f64, String> {
    let v = s
        .trim()
        .parse::<f64>()
        .map_err(|e| format!("`{s}` is not a number: {e}"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("must be a finite number above 0, got {s}"));
    }
    Ok(v)
}

/// A plot window's half-width: finite, above 0, at most [`model_plots::MAX_HALF_WIDTH`].
pub(super) fn plot_half_width(s: &str) -> std::result::Result<f64, String> {
    let v = positive_finite(s)?;
    if v > model_plots::MAX_HALF_WIDTH {
        return Err(format!(
            "must be at most {:e} (far outside any data; the squared norms of the window \
             overflow f32 beyond ~1e19), got {s}",
            model_plots::MAX_HALF_WIDTH
        ));
    }
    Ok(v)
}

/// A plot window's centre `X,Y`: two finite numbers within ±[`model_plots::MAX_HALF_WIDTH`].
pub(super) fn plot_center(s: &str) -> std::result::Result<[f64; 2], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [x, y] = parts[..] else {
        return Err(format!("must be two numbers `X,Y`, got `{s}`"));
    };
    let mut c = [0.0; 2];
    for (v, t) in c.iter_mut().zip([x, y]) {
        *v = t
            .parse::<f64>()
            .map_err(|e| format!("`{t}` is not a number: {e}"))?;
        if !(v.is_finite() && v.abs() <= model_plots::MAX_HALF_WIDTH) {
            return Err(format!(
                "the centre's coordinates must be finite and within ±{:e}, got `{s}`",
                model_plots::MAX_HALF_WIDTH
            ));
        }
    }
    Ok(c)
}

/// `vae --posterior`: `gaussian` or `cp-flow` (also `cpflow`).
pub(super) fn parse_posterior(s: &str) -> std::result::Result<crate::vae::PosteriorKind, String> {
    match s {
        "gaussian" => Ok(crate::vae::PosteriorKind::Gaussian),
        "cp-flow" | "cpflow" => Ok(crate::vae::PosteriorKind::CpFlow),
        o => Err(format!("unknown posterior `{o}` (gaussian or cp-flow)")),
    }
}
