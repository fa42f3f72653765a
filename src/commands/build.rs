//! `orch build`: plan under the build lock, then execute and record the run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::Arc;

use crate::cache::Cache;
use crate::cli::{BuildArgs, MAX_JOBS};
use crate::events::human::{Human, Verbosity};
use crate::events::junit::Junit;
use crate::events::progress::{self, Printer, Progress};
use crate::events::sink::{JsonFile, JsonStdout};
use crate::events::summary::Summary;
use crate::events::{EventKind, EventLog};
use crate::exec::{self, ExecOptions, ProcessRunner};
use crate::model::Project;
use crate::plan::{PlanEntry, plan_static};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::store::{BuildLock, Layout, RunRecord, Store, retention};
use crate::timings::Timings;
use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

use super::{
    Force, Global, Loaded, load_project, plan, report_diagnostic, report_error, selection,
};

/// Runs `orch build`.
pub fn run(g: &Global, a: BuildArgs) -> i32 {
    run_with(g, a, true)
}

/// Runs one build; `exiting` says the process ends right after (`orch build`), so large
/// structures need not be freed.
pub fn run_with(g: &Global, a: BuildArgs, exiting: bool) -> i32 {
    let mut t = Timings::start();
    // A dry run writes nothing, not even the remembered project.
    let l = match load_project(g, !a.dry_run) {
        Ok(l) => l,
        Err(code) => return code,
    };
    t.mark("load");
    let code = run_loaded(g, a, &l, &mut FullSnapshots, exiting, t);
    if exiting {
        std::mem::forget(l);
    }
    code
}

/// Where a build's snapshot comes from, and what hears of the build's end: `orch build`
/// takes a full snapshot; `orch watch` keeps what it knows between builds.
pub(super) trait Snapshots {
    /// The snapshot to plan `selected` from.
    fn take<'p>(
        &mut self,
        l: &'p Loaded,
        selected: &BTreeSet<usize>,
        forced: BTreeSet<usize>,
        store: &Store,
    ) -> Result<Snapshot<'p>, SnapshotError>;

    /// The build ran and its run is recorded: the snapshot it planned from, its plan,
    /// and the store it recorded in. Not called when the build stopped on an error.
    fn built(
        &mut self,
        snap: Snapshot<'_>,
        planned: &BTreeMap<usize, PlanEntry>,
        store: &Store,
        run_id: &str,
    );
}

/// A full snapshot every time.
struct FullSnapshots;

impl Snapshots for FullSnapshots {
    fn take<'p>(
        &mut self,
        l: &'p Loaded,
        selected: &BTreeSet<usize>,
        forced: BTreeSet<usize>,
        store: &Store,
    ) -> Result<Snapshot<'p>, SnapshotError> {
        Snapshot::take(&l.project, &l.graph, selected, forced, store)
    }

    fn built(&mut self, _: Snapshot<'_>, _: &BTreeMap<usize, PlanEntry>, _: &Store, _: &str) {}
}

/// Runs one build of the loaded project `l`, its snapshot from `snapshots`.
pub(super) fn run_loaded(
    g: &Global,
    a: BuildArgs,
    l: &Loaded,
    snapshots: &mut dyn Snapshots,
    exiting: bool,
    mut t: Timings,
) -> i32 {
    let (selected, forced) =
        match selection(g, l, &a.targets, Force::of(a.force, a.force_all), &a.from) {
            Ok(s) => s,
            Err(code) => return code,
        };
    let layout = Layout::new(&l.project.root);
    if a.dry_run {
        return plan::print_plan(
            l,
            &layout,
            &selected,
            forced,
            &a.targets,
            false,
            g.verbosity,
        );
    }
    if let Err(e) = layout.ensure() {
        return report_error("cannot create `.orch/`", &e);
    }
    if let Err(e) = layout.ensure_value_key() {
        crate::say!(
            "warning: cannot create `.orch/key` ({e}); variable values will read as changed"
        );
    }
    let _lock = match BuildLock::acquire(&layout.lock(), || {
        let holder = BuildLock::holder_pid(&layout.lock())
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        crate::say!("orch: waiting for another build to finish{holder}; it holds `.orch/lock`");
    }) {
        Ok(l) => l,
        Err(e) => return report_diagnostic(&e, EXIT_FAILED),
    };
    let (mut store, warning) = match Store::open(&layout) {
        Ok(s) => s,
        Err(e) => return report_diagnostic(&e, EXIT_FAILED),
    };
    if let Some(w) = warning {
        crate::say!("warning: {w}");
    }
    // From here on Ctrl-C is a flag the work polls, hashing included, so the build
    // stops within moments and exits 130 (installed only now: a wait for the lock above
    // must stay interruptible the ordinary way).
    exec::signal::install();
    let snap = match snapshots.take(l, &selected, forced.clone(), &store) {
        // A damaged row that only shows when read: the same recovery as a damaged file.
        Err(SnapshotError::Store(e)) if e.is_damage() => {
            let warning;
            (store, warning) = match store.replace_damaged(&layout, &e) {
                Ok(s) => s,
                Err(e) => return report_diagnostic(&e, EXIT_FAILED),
            };
            crate::say!("warning: {warning}");
            snapshots.take(l, &selected, forced, &store)
        }
        other => other,
    };
    let snap = match snap {
        Ok(s) => s,
        Err(e) => return report_diagnostic(&e, e.exit_code()),
    };
    t.mark("snapshot");
    let planned = plan_static(&snap.order, &snap);
    let stale = planned.values().filter(|e| e.stale).count();
    // Up to date before anything runs: counted by `plan_ready`, not an event each.
    let unlisted = exec::unlisted_up_to_date(&l.project, &snap.order, &planned);

    t.mark("plan");
    let jobs = effective_jobs(a.jobs, &l.project);
    let options = [
        // `all` for `--force-all`, so the digests of builds without it stay as they were.
        (
            "force",
            if a.force_all {
                "all".to_owned()
            } else {
                a.force.to_string()
            },
        ),
        ("from", a.from.join(",")),
        ("keep_going", a.keep_going.to_string()),
    ];
    let plan_digest = snap.plan_digest(&a.targets, &options);
    let run_id = match &a.run_id {
        Some(id) => {
            if let Err(why) = check_run_id(id) {
                crate::say!("error: invalid --run-id `{id}`: {why}");
                return EXIT_USAGE;
            }
            if layout.run_dir(id).exists() {
                crate::say!(
                    "error: run id `{id}` is already used by an earlier run (see `.orch/runs/{id}`); choose another, or omit --run-id"
                );
                return EXIT_USAGE;
            }
            id.clone()
        }
        None => unique_run_id(&layout, &plan_digest.to_hex()[..8]),
    };
    let started_at = crate::fs::now_ns();
    let record = RunRecord {
        run_id: run_id.clone(),
        plan_digest: plan_digest.to_hex(),
        targets: a.targets.clone(),
        started_at_ns: started_at,
        finished_at_ns: None,
        status: None,
        summary: None,
    };
    if let Err(e) = store
        .begin_run(&record)
        .and_then(|_| store.write_digests(&snap.digest_updates))
    {
        return report_diagnostic(&e, EXIT_FAILED);
    }

    t.mark("run record");
    let mut events = EventLog::new(run_id.clone());
    match JsonFile::create(&layout.events(&run_id)) {
        Ok(f) => events.add(Box::new(f)),
        Err(e) => return report_error("cannot write the event log", &e),
    }
    events.add(Box::new(Summary::new(
        layout.run_dir(&run_id).join("summary.json"),
    )));
    if let Some(path) = &a.junit {
        let path = if path.is_absolute() {
            path.clone()
        } else {
            g.start_dir().join(path)
        };
        let names = unlisted
            .iter()
            .map(|&i| l.project.instances[i].name.as_str());
        events.add(Box::new(
            Junit::new(path, l.project.root.clone()).up_to_date(names),
        ));
    }
    // The live display's printer: lines above its bars.
    let mut printer: Option<Printer> = None;
    if a.json {
        events.add(Box::new(JsonStdout::new()));
        events.add(Box::new(Human::new(
            std::io::stderr(),
            l.project.root.clone(),
            g.verbosity.min(Verbosity::Quiet),
        )));
    } else if progress::is_live(std::io::stdout().is_terminal()) {
        let live = Progress::new(
            l.project.root.clone(),
            g.verbosity,
            progress::color_enabled(),
        );
        printer = Some(live.printer());
        events.add(Box::new(live));
    } else {
        events.add(Box::new(Human::new(
            std::io::stdout(),
            l.project.root.clone(),
            g.verbosity,
        )));
    }
    events.emit(
        None,
        EventKind::RunStarted {
            plan_digest: plan_digest.to_hex(),
            targets: a.targets.clone(),
            jobs,
            keep_going: a.keep_going,
        },
    );
    events.emit(
        None,
        EventKind::PlanReady {
            total: selected.len(),
            stale,
            up_to_date: selected.len() - stale,
            up_to_date_unlisted: unlisted.len(),
        },
    );

    // -v: every line a command prints, as it prints it, prefixed with the instance.
    let to_stderr = a.json;
    let stream: Option<exec::Stream> = (g.verbosity == Verbosity::Verbose).then(|| {
        Arc::new(move |name: &str, line: &str| {
            use std::io::Write as _;
            if let Some(p) = &printer {
                p.print(&format!("{name} | {line}"));
            } else if to_stderr {
                let _ = writeln!(std::io::stderr().lock(), "{name} | {line}");
            } else {
                let _ = writeln!(std::io::stdout().lock(), "{name} | {line}");
            }
        }) as exec::Stream
    });
    let cache = (!a.no_cache).then(|| Arc::new(open_cache(&l.project, &layout)));
    let opts = ExecOptions {
        cache,
        jobs,
        keep_going: a.keep_going,
        run_id: run_id.clone(),
        stream,
    };
    let report = match exec::execute(
        &snap,
        &planned,
        &selected,
        &mut store,
        &layout,
        Arc::new(ProcessRunner::default()),
        &mut events,
        &opts,
    ) {
        Ok(r) => r,
        Err(e) => return report_error("the build could not run", &e),
    };
    t.mark("execute");
    drop(events);

    let status = if report.interrupted {
        "interrupted"
    } else if report.counts.failed > 0 || report.counts.blocked > 0 {
        "failed"
    } else {
        "succeeded"
    };
    let summary = serde_json::json!({ "counts": report.counts, "failed": report.failed, "blocked": report.blocked }).to_string();
    // Retention: older runs lose their events and logs, and then their records, in the
    // commit that ends this run (`orch runs` lists no run whose events are gone).
    let trimmed = retention::trim_runs(&layout, l.project.keep_runs, &run_id);
    for (dir, e) in &trimmed.errors {
        crate::say!(
            "warning: cannot remove the old run `{}`: {e}",
            dir.display()
        );
    }
    if let Err(e) = store.finish_run_forgetting(
        &run_id,
        crate::fs::now_ns(),
        status,
        &summary,
        &trimmed.removed,
    ) {
        crate::say!("warning: could not record the end of the run: {e}");
    }
    t.mark("finish");
    // The process ends right after this; freeing tens of thousands of small allocations
    // one by one would only add to every build's wall time.
    if exiting {
        std::mem::forget(planned);
        std::mem::forget(snap);
    } else {
        snapshots.built(snap, &planned, &store, &run_id);
    }
    if report.interrupted {
        exec::signal::exit_status()
    } else if status == "failed" {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

/// How many instances run at once: `-j` (the CLI keeps it within [`MAX_JOBS`]), else
/// `[orch] jobs` (validation keeps it within the cap), else one per CPU, never above
/// `MAX_JOBS`.
pub fn effective_jobs(cli: Option<u32>, project: &Project) -> usize {
    cli.map(|j| j as usize)
        .or(project.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(MAX_JOBS as usize)
}

/// The project's cache: the local store (`[cache] dir`, default `.orch/cache`) and the
/// remote (`[cache] remote`), opened when first needed (if it cannot be, one warning and
/// local only).
pub fn open_cache(project: &crate::model::Project, layout: &Layout) -> Cache {
    Cache::new(
        &crate::cache::local_dir(project, layout),
        project.cache.remote.clone(),
        project.cache.push,
        project.cache.max_blob,
    )
}

/// A run id names a directory under `.orch/runs/`, so it must be a plain file name.
pub(super) fn check_run_id(id: &str) -> Result<(), &'static str> {
    let mut chars = id.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err("it must start with a letter or digit");
    }
    if id.len() > 128 {
        return Err("it is longer than 128 characters");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err("use only letters, digits, `.`, `_` and `-`");
    }
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ-` and 8 hex digits of the plan digest; a suffix keeps two runs
/// within one second apart. It is one above the highest suffix of that second in
/// `.orch/runs/` (whatever the digest; none counts as 1), so run ids sort by time, which
/// retention relies on, even after it removed the older runs of that second.
fn unique_run_id(layout: &Layout, short_digest: &str) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = now.chars().filter(|c| *c != '-' && *c != ':').collect();
    let base = format!("{compact}-{short_digest}");
    // One listing (retention keeps it short) instead of probing name after name.
    let highest = std::fs::read_dir(layout.dir.join("runs"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| suffix_in_second(&compact, &e.file_name().to_string_lossy()))
        .max();
    let Some(highest) = highest else {
        return base;
    };
    (highest.saturating_add(1)..)
        .map(|n| format!("{base}.{n}"))
        .find(|id| !layout.run_dir(id).exists())
        .unwrap_or(base)
}

/// The suffix of run id `name` if it began in the second `stamp` (none is 1, `.N` is N).
fn suffix_in_second(stamp: &str, name: &str) -> Option<u64> {
    let rest = name.strip_prefix(stamp)?.strip_prefix('-')?;
    let (digest, n) = match rest.split_once('.') {
        Some((digest, n)) => (digest, n.parse().ok()?),
        None => (rest, 1),
    };
    (digest.len() == 8).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_count_every_run_of_the_second() {
        let s = "20260101T120000Z";
        assert_eq!(suffix_in_second(s, "20260101T120000Z-0123abcd"), Some(1));
        assert_eq!(suffix_in_second(s, "20260101T120000Z-ffffffff.7"), Some(7));
        assert_eq!(suffix_in_second(s, "20260101T120001Z-0123abcd"), None);
        assert_eq!(suffix_in_second(s, "20260101T120000Z-mine"), None);
        assert_eq!(suffix_in_second(s, "20260101T120000Z-0123abcd.x"), None);
    }

    #[test]
    fn a_run_id_sorts_after_the_runs_of_its_second() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let first = unique_run_id(&layout, "0123abcd");
        assert!(first.ends_with("-0123abcd"), "{first}");
        std::fs::create_dir_all(layout.run_dir(&format!("{first}.5"))).unwrap();
        let next = unique_run_id(&layout, "ffffffff");
        // Unless the clock moved on to the next second meanwhile.
        if next.starts_with(&first[..16]) {
            assert_eq!(next, format!("{}-ffffffff.6", &first[..16]));
        }
    }
}
