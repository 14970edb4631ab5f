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

/// The largest `--seed`: 2⁶³ − 1. A run keeps its seeds (`data.seed`, `train.seed`,
/// `model.init_seed`) in its `config.toml`, whose integers are TOML's signed 64-bit ones, so
/// `train` cannot keep a larger seed and `--resume`, `eval` and `sample` could not read it
/// back; every command takes the same range, so a seed that works for one works for all.
pub(crate) const MAX_SEED: u64 = i64::MAX as u64;

/// `--seed`: an integer in `0..=`[`MAX_SEED`], checked where the arguments are read.
pub(super) fn seed_value(s: &str) -> std::result::Result<u64, String> {
    let v = s
        .trim()
        .parse::<u64>()
        .map_err(|e| format!("`{s}` is not a seed (an integer from 0 to {MAX_SEED}): {e}"))?;
    if v > MAX_SEED {
        return Err(format!(
            "--seed {v} is too large: a run keeps its seeds in config.toml as TOML integers, \
             at most {MAX_SEED} (2^63 - 1), and every command takes the same range"
        ));
    }
    Ok(v)
}

/// A path that is kept in a TOML file (`train --out`, the run's `run.out`): TOML strings are
/// UTF-8, so a path that is not would be kept as another path (its bad bytes replaced by
/// U+FFFD) and a resume would look for the run there. Refused where the arguments are read,
/// as a non-UTF-8 `--data` is.
/// Clap's own check of a `&str` value says only "invalid UTF-8 was detected".
pub(super) fn utf8_path_parser() -> impl clap::builder::TypedValueParser<Value = std::path::PathBuf>
{
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().try_map(utf8_path)
}

/// [`utf8_path_parser`]'s check.
fn utf8_path(s: std::ffi::OsString) -> std::result::Result<std::path::PathBuf, String> {
    match s.into_string() {
        Ok(t) => Ok(std::path::PathBuf::from(t)),
        Err(s) => Err(format!(
            "{} is not valid UTF-8: the run keeps its directory in config.toml (`run.out`), \
             whose strings are UTF-8, so it would be written to, and resumed from, another \
             path; name the directory in UTF-8",
            s.to_string_lossy()
        )),
    }
}

/// `--set KEY=VALUE`: a `=` after a non-empty key, checked when the arguments are read (a
/// malformed one is a usage error, exit status 2, as every other malformed value); the value
/// itself is read as TOML when the configuration is built.
pub(super) fn set_assignment(s: &str) -> std::result::Result<String, String> {
    match s.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => Ok(s.to_string()),
        Some(_) => Err(format!(
            "`{s}` has no key before `=` (KEY=VALUE, e.g. train.seed=2)"
        )),
        None => Err(format!("`{s}` is not KEY=VALUE (e.g. train.seed=2)")),
    }
}
