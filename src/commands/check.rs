//! `orch check`: validate the Orchfile without running anything.

use crate::EXIT_OK;

use super::{Global, load};

/// Runs `orch check`.
pub fn run(g: &Global) -> i32 {
    match load(g) {
        Ok(l) => {
            let files = l.project.sources.files().len();
            outln!(
                "{}: ok ({} phases, {} instances{})",
                l.project.sources.get(0).name,
                l.project.phases.len(),
                l.project.instances.len(),
                if files > 1 {
                    format!(", {} included files", files - 1)
                } else {
                    String::new()
                }
            );
            EXIT_OK
        }
        Err(code) => code,
    }
}
