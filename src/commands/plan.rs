//! `orch plan` (and `build --dry-run`): what would run, and why.

use std::collections::BTreeSet;

use serde_json::json;

use crate::cli::PlanArgs;
use crate::events::human::Verbosity;
use crate::plan::{PlanEntry, plan_static, reason};
use crate::snapshot::Snapshot;
use crate::store::{Layout, Store};
use crate::{EXIT_FAILED, EXIT_OK};

use super::{Global, Loaded, load, report_diagnostic, selection};

/// Runs `orch plan`.
pub fn run(g: &Global, a: PlanArgs) -> i32 {
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let (selected, forced) = match selection(&l, &a.targets, a.force, &a.from) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let layout = Layout::new(&l.project.root);
    print_plan(
        &l,
        &layout,
        &selected,
        forced,
        &a.targets,
        a.json,
        g.verbosity,
    )
}

/// Plans the selection against the recorded state (writing nothing) and prints it.
pub fn print_plan(
    l: &Loaded,
    layout: &Layout,
    selected: &BTreeSet<usize>,
    forced: BTreeSet<usize>,
    targets: &[String],
    as_json: bool,
    verbosity: Verbosity,
) -> i32 {
    let entries = match planned(l, layout, selected, forced) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let stale: Vec<&PlanEntry> = entries.iter().filter(|e| e.stale).collect();
    if as_json {
        let instances: Vec<serde_json::Value> = entries.iter().map(entry_json).collect();
        let doc = json!({
            "targets": targets,
            "total": entries.len(),
            "stale": stale.len(),
            "up_to_date": entries.len() - stale.len(),
            "instances": instances,
        });
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return EXIT_OK;
    }
    if stale.is_empty() {
        outln!("nothing to do: {} instances up to date", entries.len());
    } else {
        outln!("would run {} of {} instances:", stale.len(), entries.len());
        let width = stale.iter().map(|e| e.instance.len()).max().unwrap_or(0);
        for e in &stale {
            let why: Vec<String> = e.reasons.iter().map(ToString::to_string).collect();
            outln!("  {:width$}  {}", e.instance, why.join(", "));
        }
        if verbosity >= Verbosity::Verbose {
            for e in entries.iter().filter(|e| !e.stale) {
                outln!("  {:width$}  up to date", e.instance);
            }
        } else if stale.len() < entries.len() {
            outln!("{} up to date", entries.len() - stale.len());
        }
    }
    EXIT_OK
}

/// The plan of `selected`, in topological order.
pub fn planned(
    l: &Loaded,
    layout: &Layout,
    selected: &BTreeSet<usize>,
    forced: BTreeSet<usize>,
) -> Result<Vec<PlanEntry>, i32> {
    let (store, warning) =
        Store::open_existing_or_empty(layout).map_err(|e| report_diagnostic(&e, EXIT_FAILED))?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    let snap = Snapshot::take(&l.project, &l.graph, selected, forced, &store)
        .map_err(|e| report_diagnostic(&e, EXIT_FAILED))?;
    let plan = plan_static(&snap.order, &snap);
    Ok(snap
        .order
        .iter()
        .filter_map(|i| plan.get(i).cloned())
        .collect())
}

/// One plan entry as JSON.
pub fn entry_json(e: &PlanEntry) -> serde_json::Value {
    json!({
        "instance": e.instance,
        "status": if e.stale { "stale" } else { "up_to_date" },
        "reasons": reason::codes(&e.reasons),
        "details": e.reasons,
    })
}
