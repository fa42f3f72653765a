//! `orch -V` / `orch -vV`: the version, and with `-v` where the binary came from.

use crate::EXIT_OK;
use crate::events::human::Verbosity;

use super::Global;

/// Prints the version line (and with `-v`, the build details).
pub fn run(g: &Global) -> i32 {
    outln!("orch {}", env!("CARGO_PKG_VERSION"));
    if g.verbosity == Verbosity::Verbose {
        outln!("release: {}", env!("CARGO_PKG_VERSION"));
    }
    EXIT_OK
}
