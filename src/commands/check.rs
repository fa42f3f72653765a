//! `orch check`: validate the Orchfile without running anything; with `-v`, list the
//! dependencies implied by files and the file behind each.

use crate::EXIT_OK;
use crate::events::human::Verbosity;

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
            if g.verbosity == Verbosity::Verbose {
                let p = &l.project;
                for inst in &p.instances {
                    for e in &inst.implied {
                        let up = &p.instances[e.upstream].name;
                        outln!(
                            "{} <- {up} (input `{}` matches output `{}`)",
                            inst.name,
                            e.input,
                            e.output
                        );
                    }
                }
            }
            EXIT_OK
        }
        Err(code) => code,
    }
}
