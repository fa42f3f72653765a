//! `orch status`: every instance, up to date / stale (reasons) / failed / blocked.

use std::collections::BTreeMap;

use serde_json::json;

use crate::EXIT_OK;
use crate::cli::StatusArgs;
use crate::plan::Reason;
use crate::store::Layout;

use super::plan::{entry_json, planned, reasons_text};
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
    // An instance whose last attempt failed is `failed`; a stale one downstream of a
    // failed or blocked instance is `blocked` by it.
    let mut state: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for p in &entries {
        let e = &p.entry;
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
            .map(|p| {
                let (s, by) = &state[&p.entry.instance];
                let mut v = entry_json(p);
                v["status"] = json!(s);
                v["blocked_by"] = json!(by);
                v
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "instances": rows })).unwrap_or_default()
        );
        return EXIT_OK;
    }
    let width = entries
        .iter()
        .map(|p| p.entry.instance.len())
        .max()
        .unwrap_or(0);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &entries {
        let e = &p.entry;
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
            other => format!("{other}: {}", reasons_text(p)),
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
