//! The `docstream` binary: parses the command line and runs it.

fn main() -> std::process::ExitCode {
    docstream::cli::main()
}
