//! `orch status`: every instance, up to date / stale (reasons) / failed / blocked.

use std::collections::BTreeMap;

use serde_json::json;

use crate::EXIT_OK;
use crate::cli::StatusArgs;
use crate::plan::Reason;
use crate::store::Layout;

use super::{Global, load, plan::planned};

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
    // An instance whose last attempt failed is `failed`; a stale one downstream of a
    // failed or blocked instance is `blocked` by it.
    let mut state: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for e in &entries {
        let idx = l.project.instance_index(&e.instance).unwrap_or(0);
        let inst = &l.project.instances[idx];
        let failed = e.reasons.iter().any(|w| w.reason == Reason::LastFailed);
        let blockers: Vec<String> = inst
            .deps
            .iter()
            .filter(|d| d.hard)
            .map(|d| l.project.instances[d.upstream].name.clone())
            .filter(|n| {
                state
                    .get(n)
                    .is_some_and(|(s, _)| s == "failed" || s == "blocked")
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
        state.insert(e.instance.clone(), (status.to_owned(), blockers));
    }
    if a.json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let (s, by) = &state[&e.instance];
                json!({ "instance": e.instance, "status": s, "reasons": crate::plan::reason::codes(&e.reasons), "details": e.reasons, "blocked_by": by })
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "instances": rows })).unwrap_or_default()
        );
        return EXIT_OK;
    }
    let width = entries.iter().map(|e| e.instance.len()).max().unwrap_or(0);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &entries {
        let (s, by) = &state[&e.instance];
        *counts.entry(s.as_str()).or_default() += 1;
        let detail = match s.as_str() {
            "up_to_date" => "up to date".to_owned(),
            "blocked" => format!(
                "blocked by {}",
                by.iter()
                    .map(|b| format!("`{b}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => {
                let why: Vec<String> = e.reasons.iter().map(ToString::to_string).collect();
                format!("{other}: {}", why.join(", "))
            }
        };
        outln!("{:width$}  {detail}", e.instance);
    }
    let summary: Vec<String> = counts
        .iter()
        .map(|(k, v)| format!("{v} {}", k.replace('_', " ")))
        .collect();
    outln!("{}", summary.join(", "));
    EXIT_OK
}
