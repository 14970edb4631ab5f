//! Integers that the command line writes into a TOML configuration (`--seed`, `--iters`,
//! `--batch-size`, `vae --epochs`, and the integers of `--set key=value`). TOML integers are
//! 64-bit signed: a flag's `u64` above `i64::MAX` wrapped to `-1` in an `as i64` cast and
//! came back as "invalid value: integer `-1`", and such a `--set` value, not TOML, was read
//! as a string ("invalid type: string"). Both are refused here, naming the limit.

use anyhow::{Result, bail};
use std::fmt::Display;

/// `value`, given with the command-line flag `flag` (`--seed`), as a TOML integer; refused
/// when TOML cannot hold it (above `i64::MAX`), naming the flag and the limit.
pub(crate) fn flag_integer<T>(flag: &str, value: T) -> Result<toml::Value>
where
    T: TryInto<i64> + Display + Copy,
{
    match value.try_into() {
        Ok(v) => Ok(toml::Value::Integer(v)),
        Err(_) => bail!(
            "{flag} {value} is too large: the configuration holds it as a TOML integer, at \
             most {} (2^63 - 1)",
            i64::MAX
        ),
    }
}

/// Refuses the `--set key=value` whose `value` is a decimal integer (an optional sign,
/// digits, single underscores between digits, as TOML writes them) outside TOML's integer
/// range, which TOML does not parse and [`super::parse_value`] would take as a string. Any
/// other value passes (a leading zero, `007`, stays the string it was).
pub(crate) fn check_set_integer(key: &str, value: &str) -> Result<()> {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    let plain_digits = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.bytes().all(|c| c.is_ascii_digit() || c == b'_');
    if !plain_digits || (digits.len() > 1 && digits.starts_with('0')) {
        return Ok(());
    }
    let number: String = value.chars().filter(|&c| c != '_').collect();
    if number.parse::<i64>().is_err() {
        bail!(
            "--set {key}={value}: {value} is out of range: configuration values are TOML \
             integers, from {} to {} (2^63 - 1)",
            i64::MIN,
            i64::MAX
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_above_the_toml_range_are_refused_with_the_limit() {
        assert_eq!(
            flag_integer("--seed", i64::MAX as u64).unwrap(),
            toml::Value::Integer(i64::MAX)
        );
        assert_eq!(
            flag_integer("--iters", 7usize).unwrap(),
            toml::Value::Integer(7)
        );
        let e = flag_integer("--seed", u64::MAX).unwrap_err().to_string();
        assert_eq!(
            e,
            "--seed 18446744073709551615 is too large: the configuration holds it as a TOML \
             integer, at most 9223372036854775807 (2^63 - 1)"
        );
        let e = flag_integer("--batch-size", i64::MAX as usize + 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--batch-size 9223372036854775808 is too large"),
            "{e}"
        );
    }

    #[test]
    fn set_integers_outside_the_toml_range_are_refused() {
        for ok in [
            "9223372036854775807",
            "-9223372036854775808",
            "1_000",
            "007",
            "1e30",
            "99999999999999999999.0",
            "word",
            "_1",
            "1__0",
            "",
        ] {
            assert!(check_set_integer("k", ok).is_ok(), "{ok}");
        }
        for bad in [
            "9223372036854775808",
            "18446744073709551615",
            "-9223372036854775809",
            "+9_223_372_036_854_775_808",
            "123456789012345678901234567890",
        ] {
            let e = check_set_integer("data.seed", bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("--set data.seed={bad}: {bad} is out of range"))
                    && e.contains("9223372036854775807"),
                "{e}"
            );
        }
    }
}
