//! `orch report`: one self-contained HTML page on a run, and its Chrome trace; also the
//! page `orch build --timings` writes when the build ends.

use std::path::{Path, PathBuf};

use crate::cli::ReportArgs;
use crate::model::{self, Project};
use crate::orchfile::{self, Sources};
use crate::report::{self, Report, timeline::Timeline};
use crate::store::Layout;
use crate::{EXIT_FAILED, EXIT_OK};

use super::log::resolve_run;
use super::runs::open_store;
use super::{Global, report_error};

/// Runs `orch report`.
pub fn run(g: &Global, a: ReportArgs) -> i32 {
    let start = g.start_dir();
    let orchfile = match orchfile::find_orchfile(&start, g.file.as_deref()) {
        Ok(p) => std::path::absolute(&p).unwrap_or(p),
        Err(e) => return super::report(vec![*e], &Sources::default()),
    };
    let Some(root) = orchfile.parent().map(Path::to_path_buf) else {
        return report_error("cannot find the project", &orchfile.display());
    };
    let layout = Layout::new(&root);
    let store = match open_store(&layout) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let run_id = match resolve_run(&store, &layout, a.run.as_deref()) {
        Ok(id) => id,
        Err(code) => return code,
    };
    // The page reads the Orchfile only for the dependencies between instances: one
    // that no longer loads costs the critical path its links, not the page.
    let project = quiet_load(&layout, &orchfile);
    let html = a
        .output
        .unwrap_or_else(|| layout.run_dir(&run_id).join("report.html"));
    let trace = a.trace.unwrap_or_else(|| beside(&html, "trace.json"));
    match write(&layout, &run_id, project.as_ref(), &html, &trace, "error") {
        Ok(()) => {
            outln!("report: {}", html.display());
            outln!("trace:  {}", trace.display());
            EXIT_OK
        }
        Err(code) => code,
    }
}

/// `--timings`: writes run `run_id`'s page and trace to their default places and says
/// where on one line of stderr. A report that cannot be written is a warning: the build
/// itself went as its exit status says.
pub(super) fn after_build(layout: &Layout, run_id: &str, project: Option<&Project>) {
    let html = layout.run_dir(run_id).join("report.html");
    let trace = beside(&html, "trace.json");
    if write(layout, run_id, project, &html, &trace, "warning").is_ok() {
        crate::say!(
            "orch: timings report written to {} (Chrome trace: trace.json beside it)",
            html.display()
        );
    }
}

/// Reads run `run_id`'s events and writes its page and trace; a failure to write is
/// printed as `level` (an error of `orch report`, a warning after a build).
fn write(
    layout: &Layout,
    run_id: &str,
    project: Option<&Project>,
    html: &Path,
    trace: &Path,
    level: &str,
) -> Result<(), i32> {
    let events = layout.events(run_id);
    let text = std::fs::read(&events).map_err(|e| {
        report_error(
            &format!(
                "the events of run `{run_id}` cannot be read (`.orch/runs/{run_id}/events.jsonl`)"
            ),
            &e,
        )
    })?;
    let upstreams = project.map(report::upstreams_of);
    let r = Report::new(Timeline::from_events(run_id, &text), upstreams.as_ref());
    report::write(&r, &layout.root, html, trace).map_err(|e| {
        crate::say!(
            "{level}: cannot write the report `{}` or `{}`: {e}",
            html.display(),
            trace.display()
        );
        EXIT_FAILED
    })
}

/// `name` in the folder of `path`.
fn beside(path: &Path, name: &str) -> PathBuf {
    match path.parent() {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// The project as the Orchfile declares it now, or None when it does not load; says
/// nothing either way.
fn quiet_load(layout: &Layout, orchfile: &Path) -> Option<Project> {
    if let Some((project, _)) = model::cache::read(&layout.dir, orchfile) {
        return Some(project);
    }
    let raw = orchfile::load(orchfile).ok()?;
    let (project, errors) = model::validate_all(raw);
    errors.is_empty().then_some(project)
}
