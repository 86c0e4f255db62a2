//! The command line: `imagelab generate|info|models|…` and the environment-variable mode.

use std::process::ExitCode;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
