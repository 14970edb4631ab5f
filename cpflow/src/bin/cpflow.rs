//! `cpflow`: the command line of [`cpflow::cli`].

/// mimalloc, keeping freed memory (`cpflow::allocator`): glibc returned the pages of freed
/// tensors to the kernel and faulted fresh zeroed ones back in at the next use.
#[global_allocator]
static GLOBAL: cpflow::allocator::MiMalloc = cpflow::allocator::MiMalloc;

fn main() -> anyhow::Result<()> {
    cpflow::cli::main()
}
