//! `orch schema`: print the Orchfile JSON Schema.

use crate::EXIT_OK;

/// Runs `orch schema`.
pub fn run() -> i32 {
    out!("{}", crate::orchfile::raw::json_schema());
    EXIT_OK
}
