//! `orch verify`: re-executes instances in a scratch copy of the project under perturbed
//! schedules and compares their outputs with the recorded ones.

use crate::EXIT_USAGE;
use crate::cli::VerifyArgs;

use super::Global;

/// Runs `orch verify`.
pub fn run(_g: &Global, _a: VerifyArgs) -> i32 {
    crate::say!("error: `orch verify` is not available yet");
    EXIT_USAGE
}
