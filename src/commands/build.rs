//! `orch build`: plan under the build lock, then execute and record the run; or, when
//! `.orch/fresh.bin` vouches that nothing changed since a build found everything up to
//! date, record the same no-op run without planning.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use crate::cache::Cache;
use crate::cli::{BuildArgs, MAX_JOBS};
use crate::events::color;
use crate::events::human::{Human, Verbosity};
use crate::events::junit::Junit;
use crate::events::progress::{self, Printer, Progress};
use crate::events::sink::{JsonFile, JsonStdout};
use crate::events::summary::Summary;
use crate::events::{Counts, EventKind, EventLog};
use crate::exec::{self, ExecOptions, ProcessRunner};
use crate::fresh;
use crate::fs::Digest;
use crate::model::Project;
use crate::plan::{PlanEntry, plan_static};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::store::{BuildLock, DigestRow, Layout, RunRecord, Store, retention};
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
    if may_be_noop(g, &a)
        && let Some(code) = vouched_noop(g, &a, &mut t)
    {
        return code;
    }
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

    /// Whether the snapshots are full ones, walked and statted afresh: only those can
    /// vouch for the next no-op in `.orch/fresh.bin`.
    fn is_full(&self) -> bool {
        true
    }
}

/// A full snapshot every time.
pub(super) struct FullSnapshots;

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
    t: Timings,
) -> i32 {
    run_perturbed(g, a, l, snapshots, exiting, t, &Perturb::default())
}

/// How `orch verify` bends a build away from its usual course.
#[derive(Clone, Debug, Default)]
pub(super) struct Perturb {
    /// Shuffles the ready order of instances and shards with this seed.
    pub shuffle: Option<u64>,
    /// Variables every command gets on top of its own (another `TZ`, say).
    pub env: Vec<(String, String)>,
}

/// A runner that gives every command a few more variables.
struct WithEnv {
    inner: ProcessRunner,
    env: Vec<(String, String)>,
}

impl exec::Runner for WithEnv {
    fn run(&self, job: &exec::Job) -> exec::Exit {
        let mut job = job.clone();
        job.env.extend(self.env.iter().cloned());
        self.inner.run(&job)
    }

    fn interrupt_all(&self) {
        self.inner.interrupt_all();
    }
}

/// [`run_loaded`], perturbed as `how` says.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_perturbed(
    g: &Global,
    a: BuildArgs,
    l: &Loaded,
    snapshots: &mut dyn Snapshots,
    exiting: bool,
    mut t: Timings,
    how: &Perturb,
) -> i32 {
    if let Some(name) = &a.executor
        && let Err(why) = l.project.check_executor(name)
    {
        crate::say!("error: {why}");
        return EXIT_USAGE;
    }
    let (selected, forced) =
        match selection(g, l, &a.targets, Force::of(a.force, a.force_all), &a.from) {
            Ok(s) => s,
            Err(code) => return code,
        };
    let layout = Layout::new(&l.project.root);
    if a.dry_run {
        // `--json` keeps stdout for machines: the plan as `plan --json` prints it.
        let how = plan::PlanOutput {
            targets: &a.targets,
            json: a.json,
            verbosity: g.verbosity,
            exit_code: false,
            commands: g.verbosity >= Verbosity::Verbose,
        };
        return plan::print_plan(l, &layout, &selected, forced, &how);
    }
    if let Err(e) = layout.ensure() {
        return report_error("cannot create `.orch/`", &e);
    }
    if let Err(e) = layout.ensure_value_key() {
        crate::say!(
            "warning: cannot create `.orch/key` ({e}); variable values will read as changed"
        );
    }
    let _lock = match take_lock(&layout) {
        Ok(l) => l,
        Err(e) => return report_diagnostic(&e, EXIT_FAILED),
    };
    // This build may change what is up to date: the record of the last no-op goes first.
    fresh::forget(&layout.dir);
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
    // Read before the results: unchanged at the end, it says no result moved meanwhile.
    let mut generation = store.generation().ok().flatten();
    let snap = match snapshots.take(l, &selected, forced.clone(), &store) {
        // A damaged row that only shows when read: the same recovery as a damaged file.
        Err(SnapshotError::Store(e)) if e.is_damage() => {
            let warning;
            (store, warning) = match store.replace_damaged(&layout, &e) {
                Ok(s) => s,
                Err(e) => return report_diagnostic(&e, EXIT_FAILED),
            };
            crate::say!("warning: {warning}");
            generation = store.generation().ok().flatten();
            snapshots.take(l, &selected, forced.clone(), &store)
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
    let plan_digest = snap.plan_digest(&a.targets, &options(&a, a.keep_going));
    let counts = PlanCounts {
        total: selected.len(),
        stale,
        unlisted: unlisted.len(),
    };
    let names = unlisted
        .iter()
        .map(|&i| l.project.instances[i].name.as_str());
    let mut rec = match begin(
        g,
        &a,
        &Begin {
            layout: &layout,
            root: &l.project.root,
            plan_digest,
            jobs,
            counts,
            digest_updates: &snap.digest_updates,
        },
        &mut store,
        names,
        &mut t,
    ) {
        Ok(r) => r,
        Err(code) => return code,
    };

    // -v: every line a command prints, as it prints it, prefixed with the instance.
    let to_stderr = a.json;
    let printer = rec.printer.take();
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
        run_id: rec.run_id.clone(),
        stream,
        executor: a.executor.clone(),
        shuffle: how.shuffle,
    };
    let runner: Arc<dyn exec::Runner> = if how.env.is_empty() {
        Arc::new(ProcessRunner::default())
    } else {
        Arc::new(WithEnv {
            inner: ProcessRunner::default(),
            env: how.env.clone(),
        })
    };
    let report = match exec::execute(
        &snap,
        &planned,
        &selected,
        &mut store,
        &layout,
        runner,
        &mut rec.events,
        &opts,
    ) {
        Ok(r) => r,
        Err(e) => return report_error("the build could not run", &e),
    };
    t.mark("execute");
    drop(rec.events);
    let code = finish(
        &layout,
        &mut store,
        &rec.run_id,
        &report,
        l.project.keep_runs,
        &mut t,
    );
    if a.timings {
        super::report::after_build(&layout, &rec.run_id, Some(&l.project));
    }

    // Everything was up to date before the build and nothing was recorded meanwhile:
    // the next no-op can be vouched for by stats alone.
    let whole_noop = may_be_noop(g, &a)
        && selected.len() == l.project.instances.len()
        && forced.is_empty()
        && stale == 0
        && unlisted.len() == selected.len()
        && !report.interrupted
        && report.counts.up_to_date == selected.len();
    if whole_noop
        && snapshots.is_full()
        && let Some(generation) = generation
        && store.generation().ok().flatten() == Some(generation)
    {
        let digests = [false, true].map(|k| snap.plan_digest(&a.targets, &options(&a, k)));
        // A record that cannot be written only costs the next no-op its shortcut.
        let _ = fresh::write(&snap, generation, digests);
        t.mark("record");
    }
    // The process ends right after this; freeing tens of thousands of small allocations
    // one by one would only add to every build's wall time.
    if exiting {
        std::mem::forget(planned);
        std::mem::forget(snap);
    } else {
        snapshots.built(snap, &planned, &store, &rec.run_id);
    }
    code
}

/// Whether this build could be a no-op of the whole project: no targets, nothing forced,
/// a real run, and no report that needs the project (`--junit` names every instance).
/// `--executor` needs the project too: its name is checked against the Orchfile.
/// `--set` changes the project: `.orch/fresh.bin` vouches only for the Orchfile's own.
fn may_be_noop(g: &Global, a: &BuildArgs) -> bool {
    g.sets.is_empty()
        && a.executor.is_none()
        && a.targets.is_empty()
        && !a.force
        && !a.force_all
        && a.from.is_empty()
        && !a.dry_run
        && a.junit.is_none()
}

/// The no-op build that `.orch/fresh.bin` vouches for: checked by stats, then recorded
/// and reported exactly as the ordinary path records and reports a no-op, without loading
/// the project, walking, reading results or planning. None (having written nothing)
/// when there is no record or anything differs: then the ordinary path decides.
fn vouched_noop(g: &Global, a: &BuildArgs, t: &mut Timings) -> Option<i32> {
    let orchfile = crate::orchfile::find_orchfile(&g.start_dir(), g.file.as_deref()).ok()?;
    let orchfile = std::path::absolute(&orchfile).unwrap_or(orchfile);
    let root = orchfile.parent()?.to_path_buf();
    let layout = Layout::new(&root);
    if !fresh::path(&layout.dir).is_file() {
        return None;
    }
    // Checked under the lock: a build running meanwhile forgets the record first.
    let lock = take_lock(&layout).ok()?;
    let noop = fresh::check(&orchfile)?;
    let (mut store, warning) = Store::open(&layout).ok()?;
    if let Some(w) = warning {
        // The database was replaced: the generation cannot match.
        crate::say!("warning: {w}");
        return None;
    }
    if store.generation().ok()?? != noop.generation {
        return None;
    }
    t.mark("fresh");
    let jobs = effective_jobs_of(a.jobs, noop.jobs);
    let counts = PlanCounts {
        total: noop.total,
        stale: 0,
        unlisted: noop.unlisted,
    };
    let begun = Begin {
        layout: &layout,
        root: &root,
        plan_digest: noop.plan_digest(a.keep_going),
        jobs,
        counts,
        digest_updates: &[],
    };
    let mut rec = match begin(g, a, &begun, &mut store, std::iter::empty(), t) {
        Ok(r) => r,
        Err(code) => return Some(code),
    };
    let ran = std::time::Instant::now();
    let report = exec::Report {
        counts: Counts {
            total: noop.total,
            up_to_date: noop.total,
            ..Counts::default()
        },
        ..exec::Report::default()
    };
    rec.events.emit(
        None,
        EventKind::RunCompleted {
            cache: Default::default(),
            counts: report.counts,
            duration_ms: ran.elapsed().as_millis() as u64,
        },
    );
    drop(rec.events);
    let code = finish(&layout, &mut store, &rec.run_id, &report, noop.keep_runs, t);
    if a.timings {
        super::report::after_build(&layout, &rec.run_id, None);
    }
    drop(lock);
    Some(code)
}

/// Takes the build lock, saying so while another build holds it.
fn take_lock(layout: &Layout) -> Result<BuildLock, crate::store::StoreError> {
    BuildLock::acquire(&layout.lock(), || {
        let holder = BuildLock::holder_pid(&layout.lock())
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        crate::say!("orch: waiting for another build to finish{holder}; it holds `.orch/lock`");
    })
}

/// The options that enter the plan digest, with this `--keep-going`.
fn options(a: &BuildArgs, keep_going: bool) -> [(&'static str, String); 3] {
    [
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
        ("keep_going", keep_going.to_string()),
    ]
}

/// What `plan_ready` counts.
#[derive(Clone, Copy)]
struct PlanCounts {
    total: usize,
    stale: usize,
    unlisted: usize,
}

/// What a run records before its first instance, however its plan was made.
struct Begin<'a> {
    layout: &'a Layout,
    root: &'a Path,
    plan_digest: Digest,
    jobs: usize,
    counts: PlanCounts,
    /// Digest-cache changes written with the run row.
    digest_updates: &'a [(String, Option<DigestRow>)],
}

/// A run being recorded.
struct Recording {
    run_id: String,
    events: EventLog,
    /// The live display's printer: lines above its bars.
    printer: Option<Printer>,
}

/// Starts a run: its id, its row (with the digest-cache changes), its event log and
/// sinks, and its first two events. `up_to_date` names the instances skipped without an
/// event, for `--junit`.
fn begin<'n>(
    g: &Global,
    a: &BuildArgs,
    b: &Begin<'_>,
    store: &mut Store,
    up_to_date: impl Iterator<Item = &'n str>,
    t: &mut Timings,
) -> Result<Recording, i32> {
    let layout = b.layout;
    let run_id = match &a.run_id {
        Some(id) => {
            if let Err(why) = check_run_id(id) {
                crate::say!("error: invalid --run-id `{id}`: {why}");
                return Err(EXIT_USAGE);
            }
            if layout.run_dir(id).exists() {
                crate::say!(
                    "error: run id `{id}` is already used by an earlier run (see `.orch/runs/{id}`); choose another, or omit --run-id"
                );
                return Err(EXIT_USAGE);
            }
            id.clone()
        }
        None => unique_run_id(layout, &b.plan_digest.to_hex()[..8]),
    };
    let record = RunRecord {
        run_id: run_id.clone(),
        plan_digest: b.plan_digest.to_hex(),
        targets: a.targets.clone(),
        started_at_ns: crate::fs::now_ns(),
        finished_at_ns: None,
        status: None,
        summary: None,
    };
    if let Err(e) = store
        .begin_run(&record)
        .and_then(|_| store.write_digests(b.digest_updates))
    {
        return Err(report_diagnostic(&e, EXIT_FAILED));
    }

    t.mark("run record");
    let mut events = EventLog::new(run_id.clone());
    match JsonFile::create(&layout.events(&run_id)) {
        Ok(f) => events.add(Box::new(f)),
        Err(e) => return Err(report_error("cannot write the event log", &e)),
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
        events.add(Box::new(
            Junit::new(path, b.root.to_path_buf()).up_to_date(up_to_date),
        ));
    }
    let mut printer: Option<Printer> = None;
    // The plain display is coloured only when asked (`--color always`, `CLICOLOR_FORCE`):
    // CI logs and pipes rarely want escape sequences, even when they reach a terminal.
    let plain_color = color::enabled(false);
    if a.json {
        // Events on stdout; people (and CI logs) still read the plain display on stderr.
        events.add(Box::new(JsonStdout::new()));
        events.add(Box::new(Human::new(
            std::io::stderr(),
            b.root.to_path_buf(),
            g.verbosity,
            plain_color,
        )));
    } else if progress::is_live(std::io::stdout().is_terminal()) {
        let live = Progress::new(b.root.to_path_buf(), g.verbosity, color::enabled(true));
        printer = Some(live.printer());
        events.add(Box::new(live));
    } else {
        events.add(Box::new(Human::new(
            std::io::stdout(),
            b.root.to_path_buf(),
            g.verbosity,
            plain_color,
        )));
    }
    events.emit(
        None,
        EventKind::RunStarted {
            plan_digest: b.plan_digest.to_hex(),
            targets: a.targets.clone(),
            jobs: b.jobs,
            keep_going: a.keep_going,
        },
    );
    let c = b.counts;
    events.emit(
        None,
        EventKind::PlanReady {
            total: c.total,
            stale: c.stale,
            up_to_date: c.total - c.stale,
            up_to_date_unlisted: c.unlisted,
        },
    );
    Ok(Recording {
        run_id,
        events,
        printer,
    })
}

/// Ends a run whose events are closed: its status and summary in its row, and older
/// runs trimmed (their events and logs, then their rows, in the commit that ends this
/// run, so `orch runs` lists no run whose events are gone). Returns the exit status.
fn finish(
    layout: &Layout,
    store: &mut Store,
    run_id: &str,
    report: &exec::Report,
    keep_runs: usize,
    t: &mut Timings,
) -> i32 {
    let status = if report.interrupted {
        "interrupted"
    } else if report.counts.failed > 0 || report.counts.blocked > 0 {
        "failed"
    } else {
        "succeeded"
    };
    let summary = serde_json::json!({ "counts": report.counts, "failed": report.failed, "blocked": report.blocked }).to_string();
    let trimmed = retention::trim_runs(layout, keep_runs, run_id);
    for (dir, e) in &trimmed.errors {
        crate::say!(
            "warning: cannot remove the old run `{}`: {e}",
            dir.display()
        );
    }
    if let Err(e) = store.finish_run_forgetting(
        run_id,
        crate::fs::now_ns(),
        status,
        &summary,
        &trimmed.removed,
    ) {
        crate::say!("warning: could not record the end of the run: {e}");
    }
    t.mark("finish");
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
    effective_jobs_of(cli, project.jobs)
}

/// [`effective_jobs`] from `[orch] jobs` alone.
fn effective_jobs_of(cli: Option<u32>, configured: Option<usize>) -> usize {
    cli.map(|j| j as usize)
        .or(configured)
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
