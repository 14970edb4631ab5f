//! How the commands print a score (an NLL, a −ELBO, bits per dimension), its standard error
//! and the differences between scores in their text summaries: at a fixed number of decimal
//! places (`2.9063 ± 0.0090`), or in scientific notation when that would print dozens of
//! digits (an f64 run on data spread 1e39 printed its NLL of ~1e71 as a 72-digit decimal)
//! or none that is not zero. JSON outputs keep their full-precision numbers.

/// The validation numbers of `train`'s report.json and final line.
pub mod validation_numbers;

/// From this magnitude on, a score is printed in scientific notation.
const SCIENTIFIC_FROM: f64 = 1e6;
/// Below this magnitude (and above 0), a score is printed in scientific notation.
const SCIENTIFIC_BELOW: f64 = 1e-4;

/// Whether `v` is printed in scientific notation: finite, and `|v| ≥ 1e6` or `0 < |v| < 1e-4`.
fn scientific(v: f64) -> bool {
    let m = v.abs();
    m.is_finite() && (m >= SCIENTIFIC_FROM || (m > 0.0 && m < SCIENTIFIC_BELOW))
}

/// `v` at `decimals` places (`2.9063`), or in scientific notation with `decimals` places in
/// the mantissa (`9.3034e70`, `3.2000e-7`) when `|v| ≥ 1e6` or `0 < |v| < 1e-4`.
pub fn score(v: f64, decimals: usize) -> String {
    if scientific(v) {
        format!("{v:.decimals$e}")
    } else {
        format!("{v:.decimals$}")
    }
}

/// [`score`] with its sign always written (`+0.1234`, `-2.5000e9`): a difference of scores.
pub fn signed_score(v: f64, decimals: usize) -> String {
    if scientific(v) {
        format!("{v:+.decimals$e}")
    } else {
        format!("{v:+.decimals$}")
    }
}

/// ` ± 0.0123` (the standard error at `decimals` places, as [`score`] writes it), or a note
/// that there is none: a mean over a single image has no standard error (its `NaN`).
pub fn plus_minus(std_err: f64, decimals: usize) -> String {
    if std_err.is_finite() {
        format!(" ± {}", score(std_err, decimals))
    } else {
        " (one sample: no standard error)".into()
    }
}

/// `; CG unconverged in U of N steps` for a summary line when `unconverged` of the run's
/// `steps` (its iterations) left CG systems unconverged (their gradient was approximate): the
/// warnings said so during training, but they scroll away. `since` (`" since iteration 5"`,
/// in `unit`s) when the count starts at a resume from a checkpoint without it; empty when
/// every step converged.
pub fn cg_unconverged_clause(
    unconverged: usize,
    steps: usize,
    since: Option<usize>,
    unit: &str,
) -> String {
    if unconverged == 0 {
        return String::new();
    }
    let counted = steps.saturating_sub(since.unwrap_or(0));
    let scope = since.map_or(String::new(), |s| format!(" since {unit} {s}"));
    format!("; CG unconverged in {unconverged} of {counted} steps{scope}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ordinary values keep the fixed format (the README's `2.9063 ± 0.0090`, zero, negative
    /// NLLs, the edges just inside the range); huge and tiny ones go to scientific notation
    /// (the 72-digit NLL of an f64 run on data spread 1e39), with the sign when asked.
    #[test]
    fn scores_are_fixed_unless_huge_or_tiny() {
        assert_eq!(
            format!("{}{}", score(2.906_28, 4), plus_minus(0.009, 4)),
            "2.9063 ± 0.0090"
        );
        assert_eq!(score(0.0, 4), "0.0000");
        assert_eq!(score(-96.674, 3), "-96.674");
        assert_eq!(score(999_999.0, 4), "999999.0000");
        assert_eq!(score(1e-4, 4), "0.0001");
        assert_eq!(score(f64::INFINITY, 4), "inf");
        assert_eq!(score(f64::NAN, 4), "NaN");

        let nll = 93_033_820_756_427_377_928_990_361_723_624_404_736_832_525_757_959_790_709_847_419_617_542_144.0;
        assert_eq!(score(nll, 4), "9.3034e70");
        assert_eq!(score(-nll, 3), "-9.303e70");
        assert_eq!(score(1e6, 4), "1.0000e6");
        assert_eq!(score(3.2e-7, 4), "3.2000e-7");
        assert_eq!(score(-3.2e-7, 4), "-3.2000e-7");
        assert_eq!(signed_score(nll, 4), "+9.3034e70");
        assert_eq!(signed_score(-0.12345, 4), "-0.1235");
        assert_eq!(signed_score(0.5, 4), "+0.5000");
        assert_eq!(plus_minus(1.587e70, 4), " ± 1.5870e70");
    }

    #[test]
    fn plus_minus_names_a_missing_standard_error() {
        assert_eq!(plus_minus(0.01234, 3), " ± 0.012");
        // One image: the standard error is NaN; it was printed as "± NaN".
        let one = plus_minus(f64::NAN, 4);
        assert!(
            !one.contains("NaN") && one.contains("no standard error"),
            "{one}"
        );
    }
}
