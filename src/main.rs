//! The `docstream` binary: parses the command line and runs it.

// Streaming builds and drops many small JSON values; mimalloc does that at a fraction of
// glibc malloc's cost (measured with `docstream bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    docstream::cli::main()
}
