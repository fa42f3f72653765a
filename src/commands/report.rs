//! `orch report`: one self-contained HTML page on a run, and its Chrome trace.

use crate::EXIT_USAGE;
use crate::cli::ReportArgs;

use super::Global;

/// Runs `orch report`.
pub fn run(_g: &Global, _a: ReportArgs) -> i32 {
    crate::say!("error: `orch report` is not available yet");
    EXIT_USAGE
}
