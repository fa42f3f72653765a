//! `orch list`: the phases with their descriptions, matrices, instances and shards.

use crate::EXIT_USAGE;
use crate::cli::ListArgs;

use super::Global;

/// Runs `orch list`.
pub fn run(_g: &Global, _a: ListArgs) -> i32 {
    crate::say!("error: `orch list` is not available yet");
    EXIT_USAGE
}
