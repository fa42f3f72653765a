//! orch: a declarative, content-addressed DAG orchestrator.
//!
//! Data flows one way, one module per step:
//!
//! ```text
//! Orchfile.toml (+ includes)
//!   │ orchfile::load     text → RawProject (serde, spans kept)
//!   │ model::validate    → Project (phases, instances, templates, paths)
//!   │ graph::build       → Graph (acyclic, topological order)
//!   │ snapshot::take     → Snapshot (records, input files, digests)
//!   │ plan::plan_static  → Plan (each instance fresh or stale with reasons)
//!   │ exec::execute      → Report (run, skip or block each instance)
//!   └ store / events     → .orch/state.db, .orch/runs/RUN/events.jsonl, terminal
//! ```
//!
//! A build that found everything up to date leaves `.orch/fresh.bin` (`fresh`): the
//! next one checks it by stats alone and, when nothing moved, skips every step above.
//! `report` reads a run's events back into a timeline, an HTML page and a Chrome trace.

pub mod cache;
pub mod cli;
pub mod commands;
pub mod events;
/// Writes a line to standard error like `eprintln!`, but never panics when stderr is
/// closed or its reader is gone (a closed terminal, `2>&-`, `| head`): a warning that
/// cannot be shown must not abort a build and leave its commands running.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

pub mod exec;
pub mod fresh;
pub mod fs;
pub mod graph;
pub mod model;
pub mod orchfile;
pub mod plan;
pub mod report;
pub mod shard;
pub mod snapshot;
pub mod store;
pub mod timings;
pub mod verify;
pub mod watch;

use std::ffi::OsString;

use clap::Parser;

/// Exit status: success, or nothing to do.
pub const EXIT_OK: i32 = 0;
/// Exit status: a phase failed or was blocked.
pub const EXIT_FAILED: i32 = 1;
/// Exit status: usage or configuration error.
pub const EXIT_USAGE: i32 = 2;
/// Exit status: interrupted.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Runs orch with these arguments and returns the exit status.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    // `COMPLETE=bash orch …` is the shell asking for completions, not a command.
    if std::env::var_os(commands::complete::VAR).is_some_and(|v| !v.is_empty() && v != "0")
        && commands::complete::answer(&args)
    {
        return EXIT_OK;
    }
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if commands::jobs_from_env(&e, &args) => {
            return commands::report_bad_orch_jobs(&e);
        }
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    commands::dispatch(cli)
}
