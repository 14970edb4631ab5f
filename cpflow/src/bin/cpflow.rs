//! `cpflow`: the command line of [`cpflow::cli`].

/// mimalloc, keeping freed memory (`cpflow::allocator`): glibc returned the pages of freed
/// tensors to the kernel and faulted fresh zeroed ones back in at the next use.
#[global_allocator]
static GLOBAL: cpflow::allocator::MiMalloc = cpflow::allocator::MiMalloc;

/// An error prints its message and causes; its backtrace only with `RUST_LIB_BACKTRACE=1`
/// (`cpflow::exit_report`).
fn main() -> std::process::ExitCode {
    // SAFETY: first thing in `main`, before any thread is spawned: nothing else reads or
    // writes the environment.
    unsafe { cpflow::cpu_threads::configure_cpu_threads() };
    cpflow::exit_report::exit_code(cpflow::cli::main())
}
