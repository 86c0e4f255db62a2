//! The `imagelab` binary: a thin wrapper around the library's CLI.

fn main() -> std::process::ExitCode {
    imagelab::cli::main()
}
