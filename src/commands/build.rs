//! `orch build`: plan under the build lock, then execute and record the run.

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
use crate::plan::plan_static;
use crate::snapshot::{Snapshot, SnapshotError};
use crate::store::{BuildLock, Layout, RunRecord, Store};
use crate::timings::Timings;
use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

use super::{Force, Global, load_project, plan, report_diagnostic, report_error, selection};

/// Runs `orch build`.
pub fn run(g: &Global, a: BuildArgs) -> i32 {
    run_with(g, a, true)
}

/// Runs one build; `exiting` says the process ends right after (`orch build`), so large
/// structures need not be freed. `orch watch` builds again and again: it passes false.
pub fn run_with(g: &Global, a: BuildArgs, exiting: bool) -> i32 {
    let mut t = Timings::start();
    // A dry run writes nothing, not even the remembered project.
    let l = match load_project(g, !a.dry_run) {
        Ok(l) => l,
        Err(code) => return code,
    };
    t.mark("load");
    let (selected, forced) =
        match selection(g, &l, &a.targets, Force::of(a.force, a.force_all), &a.from) {
            Ok(s) => s,
            Err(code) => return code,
        };
    let layout = Layout::new(&l.project.root);
    if a.dry_run {
        return plan::print_plan(
            &l,
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
    let snap = match Snapshot::take(&l.project, &l.graph, &selected, forced.clone(), &store) {
        // A damaged row that only shows when read: the same recovery as a damaged file.
        Err(SnapshotError::Store(e)) if e.is_damage() => {
            let warning;
            (store, warning) = match store.replace_damaged(&layout, &e) {
                Ok(s) => s,
                Err(e) => return report_diagnostic(&e, EXIT_FAILED),
            };
            crate::say!("warning: {warning}");
            Snapshot::take(&l.project, &l.graph, &selected, forced, &store)
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
        events.add(Box::new(Junit::new(path, l.project.root.clone())));
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
    if let Err(e) = store.finish_run(&run_id, crate::fs::now_ns(), status, &summary) {
        crate::say!("warning: could not record the end of the run: {e}");
    }
    t.mark("finish");
    // The process ends right after this; freeing tens of thousands of small allocations
    // one by one would only add to every build's wall time.
    if exiting {
        std::mem::forget(planned);
        std::mem::forget(snap);
        std::mem::forget(l);
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

/// `YYYYMMDDTHHMMSSZ-` and 8 hex digits of the plan digest; a suffix keeps two runs of
/// the same state within one second apart.
fn unique_run_id(layout: &Layout, short_digest: &str) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = now.chars().filter(|c| *c != '-' && *c != ':').collect();
    let base = format!("{compact}-{short_digest}");
    if !layout.run_dir(&base).exists() {
        return base;
    }
    (2..)
        .map(|n| format!("{base}.{n}"))
        .find(|id| !layout.run_dir(id).exists())
        .unwrap_or(base)
}
