//! `orch watch`: wiring between the CLI, the watch session (`crate::watch`) and `build`,
//! and what the session keeps between builds: the loaded project and the last snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::cli::{BuildArgs, WatchArgs};
use crate::events::human::Verbosity;
use crate::plan::{PlanEntry, plan_static};
use crate::snapshot::{Kept, Snapshot, SnapshotError};
use crate::store::{Layout, Store};
use crate::timings::Timings;
use crate::watch::{self, Check, Options, WatchSpec};
use crate::{EXIT_FAILED, EXIT_USAGE};

use super::build::Snapshots;
use super::{Force, Global, Loaded, load_project, report_diagnostic, selection};

/// Runs `orch watch`.
pub fn run(g: &Global, a: WatchArgs) -> i32 {
    if a.every.is_some_and(|d| d.is_zero()) {
        crate::say!("error: `--every` must be longer than zero");
        return EXIT_USAGE;
    }
    let opts = Options {
        debounce: Duration::from_millis(a.debounce),
        every: a.every,
        align: a.align,
        restart: a.restart,
        json: a.json,
        quiet: g.verbosity == Verbosity::Quiet,
    };
    let host = Host {
        g: Global {
            dir: g.dir.clone(),
            file: g.file.clone(),
            verbosity: g.verbosity,
            color: g.color,
            sets: g.sets.clone(),
        },
        a,
        warm: Mutex::new(None),
    };
    watch::run(Arc::new(host), opts)
}

/// Loads, checks and builds for the session, keeping the loaded project and what the
/// last snapshot found between builds (see [`Kept`]).
struct Host {
    g: Global,
    a: WatchArgs,
    /// None until loaded, and after changes may have been missed.
    warm: Mutex<Option<Warm>>,
}

/// What the session knows between builds.
struct Warm {
    loaded: Loaded,
    selected: BTreeSet<usize>,
    kept: Kept,
    /// The newest run in the store when `kept` was read from it or built: another run
    /// since (a build in another terminal, a deleted `.orch/`) means the records kept
    /// may not be the store's, and the next snapshot is a full one.
    newest_run: Option<String>,
}

impl Host {
    fn lock(&self) -> MutexGuard<'_, Option<Warm>> {
        self.warm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The loaded project, loaded afresh when nothing is kept.
    fn warm<'a>(&self, warm: &'a mut Option<Warm>) -> Result<&'a mut Warm, i32> {
        if warm.is_none() {
            let loaded = load_project(&self.g, true)?;
            let (selected, _) = selection(&self.g, &loaded, &self.a.targets, Force::None, &[])?;
            *warm = Some(Warm {
                loaded,
                selected,
                kept: Kept::default(),
                newest_run: None,
            });
        }
        warm.as_mut().ok_or(EXIT_USAGE)
    }

    fn build_args(&self) -> BuildArgs {
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
            executor: self.a.executor.clone(),
            timings: false,
        }
    }
}

/// The id of the newest run in `store`; Err when it cannot be read (then nothing kept is
/// trusted).
fn newest_run(store: &Store) -> Result<Option<String>, ()> {
    store
        .runs(1)
        .map(|runs| runs.into_iter().next().map(|r| r.run_id))
        .map_err(|_| ())
}

/// The snapshot from what is kept when the store is as the session left it, else a full
/// one.
fn snapshot<'p>(
    l: &'p Loaded,
    selected: &BTreeSet<usize>,
    forced: BTreeSet<usize>,
    kept: &mut Kept,
    newest_run: &Option<String>,
    store: &Store,
) -> Result<Snapshot<'p>, SnapshotError> {
    // With `ORCH_TIMINGS`, which of the two it was, and how long it took.
    let mut t = Timings::start();
    let trusted = newest_run
        .as_ref()
        .is_some_and(|run| newest_run_is(store, run));
    if trusted
        && let Some(snap) =
            Snapshot::take_warm(&l.project, &l.graph, selected, forced.clone(), kept)
    {
        t.mark("warm snapshot");
        return snap;
    }
    let snap = Snapshot::take(&l.project, &l.graph, selected, forced, store);
    t.mark("full snapshot");
    snap
}

fn newest_run_is(store: &Store, run: &str) -> bool {
    newest_run(store).is_ok_and(|n| n.as_deref() == Some(run))
}

impl watch::Host for Host {
    fn load(&self) -> Result<WatchSpec, i32> {
        let mut warm = self.lock();
        let w = self.warm(&mut warm)?;
        WatchSpec::new(&w.loaded.project, &w.selected).map_err(|e| {
            crate::say!("error: cannot watch the inputs: {e}");
            EXIT_USAGE
        })
    }

    fn changed(&self, paths: &BTreeSet<String>, complete: bool) {
        let mut warm = self.lock();
        match warm.as_mut() {
            Some(w) if complete => w.kept.report(paths),
            _ => *warm = None,
        }
    }

    fn check(&self) -> Check {
        let mut warm = self.lock();
        let Ok(w) = self.warm(&mut warm) else {
            return Check::Error;
        };
        let Warm {
            loaded,
            selected,
            kept,
            newest_run: newest,
        } = w;
        let layout = Layout::new(&loaded.project.root);
        let store = match Store::open_existing_or_empty(&layout) {
            Ok((store, warning)) => {
                if let Some(w) = warning {
                    crate::say!("warning: {w}");
                }
                store
            }
            Err(e) => {
                report_diagnostic(&e, EXIT_FAILED);
                return Check::Error;
            }
        };
        let snap = match snapshot(loaded, selected, BTreeSet::new(), kept, newest, &store) {
            Ok(s) => s,
            Err(e) => {
                report_diagnostic(&e, e.exit_code());
                return Check::Error;
            }
        };
        let stale = plan_static(&snap.order, &snap).values().any(|e| e.stale);
        *newest = newest_run(&store).ok().flatten();
        kept.keep(snap, false, &BTreeSet::new(), BTreeMap::new());
        if stale { Check::Stale } else { Check::UpToDate }
    }

    fn build(&self) -> i32 {
        let mut warm = self.lock();
        let w = match self.warm(&mut warm) {
            Ok(w) => w,
            Err(code) => return code,
        };
        let Warm {
            loaded,
            kept,
            newest_run,
            ..
        } = w;
        let mut snapshots = KeptSnapshots { kept, newest_run };
        super::build::run_loaded(
            &self.g,
            self.build_args(),
            loaded,
            &mut snapshots,
            // The session goes on: free what the build allocated.
            false,
            Timings::start(),
        )
    }
}

/// A build's snapshots from what the session keeps.
struct KeptSnapshots<'a> {
    kept: &'a mut Kept,
    newest_run: &'a mut Option<String>,
}

impl Snapshots for KeptSnapshots<'_> {
    fn take<'p>(
        &mut self,
        l: &'p Loaded,
        selected: &BTreeSet<usize>,
        forced: BTreeSet<usize>,
        store: &Store,
    ) -> Result<Snapshot<'p>, SnapshotError> {
        snapshot(l, selected, forced, self.kept, self.newest_run, store)
    }

    // A kept snapshot reuses stats and listings from earlier builds: it does not vouch
    // for the next no-op.
    fn is_full(&self) -> bool {
        false
    }

    fn built(
        &mut self,
        snap: Snapshot<'_>,
        planned: &BTreeMap<usize, PlanEntry>,
        store: &Store,
        run_id: &str,
    ) {
        // The records of what ran changed; every other one is as the snapshot read it.
        let ran: BTreeSet<usize> = planned
            .iter()
            .filter(|(_, e)| e.stale)
            .map(|(&i, _)| i)
            .collect();
        let names: Vec<&str> = ran
            .iter()
            .map(|&i| snap.project.instances[i].name.as_str())
            .collect();
        match store.load_results_of(&names) {
            Ok(fresh) => {
                self.kept.keep(snap, true, &ran, fresh);
                *self.newest_run = Some(run_id.to_owned());
            }
            // Not kept: the next snapshot is a full one.
            Err(_) => *self.newest_run = None,
        }
    }
}
