//! `orch status`: every instance, up to date / stale (reasons) / failed / blocked.

use std::collections::BTreeMap;

use serde_json::json;

use crate::cli::StatusArgs;
use crate::events::human::Verbosity;
use crate::model::Project;
use crate::plan::Reason;
use crate::store::Layout;
use crate::{EXIT_FAILED, EXIT_OK};

use super::plan::{Planned, entry_json, planned, reasons_text, with_description};
use super::{Global, load};

/// Runs `orch status`.
pub fn run(g: &Global, a: StatusArgs) -> i32 {
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let layout = Layout::new(&l.project.root);
    let all = (0..l.project.instances.len()).collect();
    let entries = match planned(&l, &layout, &all, Default::default()) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let state = states(&l.project, &entries);
    let mut counts: BTreeMap<&str, usize> = STATES.iter().map(|s| (*s, 0)).collect();
    for p in &entries {
        *counts.entry(state[&p.entry.instance].0).or_default() += 1;
    }
    let all_up_to_date = counts["up_to_date"] == entries.len();
    let code = if a.check && !all_up_to_date {
        EXIT_FAILED
    } else {
        EXIT_OK
    };
    if a.json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|p| {
                let (s, by) = &state[&p.entry.instance];
                let mut v = entry_json(&l.project, p);
                v["status"] = json!(s);
                v["blocked_by"] = json!(by);
                v
            })
            .collect();
        // The counts sit beside `instances`, as in `plan --json` and `plan_ready`.
        let mut doc = json!({ "v": 1, "total": entries.len(), "instances": rows });
        for (k, n) in &counts {
            doc[*k] = json!(n);
        }
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return code;
    }
    if g.verbosity == Verbosity::Quiet {
        return code;
    }
    let verbose = g.verbosity >= Verbosity::Verbose;
    let width = entries
        .iter()
        .map(|p| p.entry.instance.len())
        .max()
        .unwrap_or(0);
    for p in &entries {
        let e = &p.entry;
        let (s, by) = &state[&e.instance];
        let detail = match *s {
            "up_to_date" => "up to date".to_owned(),
            "blocked" => format!(
                "blocked by {}",
                by.iter()
                    .map(|b| format!("`{b}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => format!("{other}: {}", reasons_text(p)),
        };
        let line = format!("{:width$}  {detail}", e.instance);
        outln!("{}", with_description(&l.project, p.index, line, verbose));
    }
    let summary: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, v)| format!("{v} {}", k.replace('_', " ")))
        .collect();
    if summary.is_empty() {
        outln!("no instances");
    } else {
        outln!("{}", summary.join(", "));
    }
    code
}

/// Every state an instance can be in, as `status --json` and `graph --status` write it.
pub const STATES: [&str; 4] = ["blocked", "failed", "stale", "up_to_date"];

/// The state of each planned instance (by name), with what blocks it: `failed` when its
/// last attempt failed; `blocked` when stale and downstream (through `needs`) of a failed
/// or blocked instance, which are named; else `stale` or `up_to_date`. `entries` must be
/// in topological order, as [`planned`] returns them.
pub fn states(
    project: &Project,
    entries: &[Planned],
) -> BTreeMap<String, (&'static str, Vec<String>)> {
    let mut state: BTreeMap<String, (&'static str, Vec<String>)> = BTreeMap::new();
    for p in entries {
        let e = &p.entry;
        let Some(inst) = project.instances.get(p.index) else {
            continue;
        };
        let failed = e.reasons.iter().any(|w| w.reason == Reason::LastFailed);
        let blockers: Vec<String> = inst
            .deps
            .iter()
            .filter(|d| d.hard)
            .map(|d| project.instances[d.upstream].name.clone())
            .filter(|n| {
                state
                    .get(n)
                    .is_some_and(|(s, _)| *s == "failed" || *s == "blocked")
            })
            .collect();
        let status = if failed {
            "failed"
        } else if e.stale && !blockers.is_empty() {
            "blocked"
        } else if e.stale {
            "stale"
        } else {
            "up_to_date"
        };
        state.insert(e.instance.clone(), (status, blockers));
    }
    state
}
