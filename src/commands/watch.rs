//! `orch watch`: wiring between the CLI, the watch session (`crate::watch`) and `build`.

use std::sync::Arc;
use std::time::Duration;

use crate::EXIT_USAGE;
use crate::cli::{BuildArgs, WatchArgs};
use crate::events::human::Verbosity;
use crate::store::Layout;
use crate::watch::{self, Check, Options, WatchSpec};

use super::{Force, Global, load, selection};

/// Runs `orch watch`.
pub fn run(g: &Global, a: WatchArgs) -> i32 {
    if a.every.is_some_and(|d| d.is_zero()) {
        crate::say!("error: `--every` must be longer than zero");
        return EXIT_USAGE;
    }
    let opts = Options {
        debounce: Duration::from_millis(a.debounce),
        every: a.every,
        restart: a.restart,
        json: a.json,
        quiet: g.verbosity == Verbosity::Quiet,
    };
    let host = Host {
        g: Global {
            dir: g.dir.clone(),
            file: g.file.clone(),
            verbosity: g.verbosity,
        },
        a,
    };
    watch::run(Arc::new(host), opts)
}

/// Loads, checks and builds for the session, each time afresh from the files.
struct Host {
    g: Global,
    a: WatchArgs,
}

impl watch::Host for Host {
    fn load(&self) -> Result<WatchSpec, i32> {
        let l = load(&self.g)?;
        let (selected, _) = selection(&self.g, &l, &self.a.targets, Force::None, &[])?;
        WatchSpec::new(&l.project, &selected).map_err(|e| {
            crate::say!("error: cannot watch the inputs: {e}");
            EXIT_USAGE
        })
    }

    fn check(&self) -> Check {
        let Ok(l) = load(&self.g) else {
            return Check::Error;
        };
        let Ok((selected, forced)) = selection(&self.g, &l, &self.a.targets, Force::None, &[])
        else {
            return Check::Error;
        };
        let layout = Layout::new(&l.project.root);
        match super::plan::planned(&l, &layout, &selected, forced) {
            Ok(entries) if entries.iter().any(|p| p.entry.stale) => Check::Stale,
            Ok(_) => Check::UpToDate,
            Err(_) => Check::Error,
        }
    }

    fn build(&self) -> i32 {
        super::build::run_with(
            &self.g,
            BuildArgs {
                targets: self.a.targets.clone(),
                jobs: self.a.jobs,
                keep_going: self.a.keep_going,
                force: false,
                force_all: false,
                from: Vec::new(),
                dry_run: false,
                no_cache: false,
                run_id: None,
                json: self.a.json,
                junit: None,
            },
            // The session goes on: free what the build allocated.
            false,
        )
    }
}
