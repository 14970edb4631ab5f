//! `cargo xtask` entry point (see the `xtask` library docs).

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The `cpflow` binary's allocator (see its `main.rs`): the reproduction runs the same work.
#[global_allocator]
static GLOBAL: cpflow::allocator::MiMalloc = cpflow::allocator::MiMalloc;

fn main() -> ExitCode {
    // SAFETY: first thing in `main`, before any thread is spawned: nothing else reads or
    // writes the environment.
    unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log redirected to a file or a pipe stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
    let cli = xtask::cli::Cli::parse();
    // The message and its causes; the backtrace only with RUST_LIB_BACKTRACE=1.
    cpflow::exit_report::exit_code(cpflow::cpu_threads::run_on_pool(|| xtask::cli::run(&cli)))
}
