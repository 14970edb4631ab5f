//! What a command line prints for the error that ends it, and its exit status.
//!
//! `fn main() -> anyhow::Result<()>` prints the error with `{:?}`, and anyhow adds a stack
//! backtrace of 40-odd frames to it whenever `RUST_BACKTRACE=1`, a setting many Rust users
//! keep for panics: a missing file or a misspelt config key then ends in a screen of
//! frames. The project's binaries (`cpflow`, `cargo xtask`) print the message and its causes
//! only ([`error_report`]), and the backtrace when `RUST_LIB_BACKTRACE` asks for it (anyhow's
//! own switch for error backtraces; panics keep `RUST_BACKTRACE`).

use std::error::Error;
use std::fmt::Debug;
use std::process::ExitCode;

/// The environment variable that turns error backtraces on (anything but `0`).
pub const ERROR_BACKTRACE_VAR: &str = "RUST_LIB_BACKTRACE";

/// `Error: <message>`, then the chain of causes under `Caused by:` (numbered when there are
/// several), as anyhow's `{:?}` lays them out, without a backtrace.
///
/// ```
/// use cpflow::exit_report::error_report;
/// let io = std::io::Error::other("No such file or directory");
/// let err = anyhow::Error::new(io).context("reading data.npy");
/// assert_eq!(
///     error_report(err.as_ref()),
///     "Error: reading data.npy\n\nCaused by:\n    No such file or directory"
/// );
/// let err = err.context("loading the run");
/// assert_eq!(
///     error_report(err.as_ref()),
///     "Error: loading the run\n\nCaused by:\n    0: reading data.npy\n    1: No such file or directory"
/// );
/// ```
pub fn error_report(err: &(dyn Error + 'static)) -> String {
    let mut text = format!("Error: {err}");
    let mut causes = Vec::new();
    let mut next = err.source();
    while let Some(cause) = next {
        causes.push(cause.to_string());
        next = cause.source();
    }
    match causes.as_slice() {
        [] => {}
        [only] => text.push_str(&format!("\n\nCaused by:\n    {only}")),
        many => {
            text.push_str("\n\nCaused by:");
            for (i, cause) in many.iter().enumerate() {
                text.push_str(&format!("\n    {i}: {cause}"));
            }
        }
    }
    text
}

/// Whether `value`, the value of [`ERROR_BACKTRACE_VAR`] (`None`: unset), asks for error
/// backtraces: set and not `0`, as anyhow reads it.
///
/// ```
/// use cpflow::exit_report::backtrace_requested;
/// assert!(!backtrace_requested(None));
/// assert!(!backtrace_requested(Some("0".as_ref())));
/// assert!(backtrace_requested(Some("1".as_ref())));
/// ```
pub fn backtrace_requested(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| v != "0")
}

/// The exit status of a command that returned `result`: success, or failure after printing
/// [`error_report`] to stderr (with `RUST_LIB_BACKTRACE` set and not `0`: the error's
/// `Debug` text, which for anyhow has the backtrace).
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     cpflow::exit_report::exit_code(cpflow::cli::main())
/// }
/// ```
pub fn exit_code<E>(result: Result<(), E>) -> ExitCode
where
    E: AsRef<dyn Error + Send + Sync + 'static> + Debug,
{
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if backtrace_requested(std::env::var_os(ERROR_BACKTRACE_VAR).as_deref()) {
                eprintln!("Error: {e:?}");
            } else {
                eprintln!("{}", error_report(e.as_ref()));
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    /// A typed error's chain is walked through `source`, not anyhow's context alone.
    #[test]
    fn a_typed_error_prints_its_source() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_report(&e), "Error: outer\n\nCaused by:\n    inner");
        let plain = std::io::Error::other("alone");
        assert_eq!(error_report(&plain), "Error: alone");
    }
}
