//! `orch man`: the man page, generated from the command-line definition.

use crate::EXIT_USAGE;

/// Runs `orch man`.
pub fn run() -> i32 {
    crate::say!("error: `orch man` is not available yet");
    EXIT_USAGE
}
