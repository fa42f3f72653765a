//! `orch explain TARGET`: how an instance's key differs from its last successful run,
//! part by part: command, each input file, each variable (by keyed digest only), each
//! output schema, each upstream output, and each discovered input (a file the depfile
//! listed) whose content moved since it was recorded.

use std::collections::{BTreeMap, BTreeSet};

use crate::cli::ExplainArgs;
use crate::fs::Digest;
use crate::graph;
use crate::plan::{KeyParts, PlanSource, Success, Upstream, plan_static};
use crate::snapshot::Snapshot;
use crate::store::{Layout, Store};
use crate::{EXIT_FAILED, EXIT_OK};

use super::{Global, load, report_diagnostic, resolve};

/// Runs `orch explain`.
pub fn run(g: &Global, a: ExplainArgs) -> i32 {
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let targets = match resolve(g, &l, std::slice::from_ref(&a.target)) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let selected = graph::with_upstream(&l.project, &targets);
    let layout = Layout::new(&l.project.root);
    let (store, warning) = match Store::open_existing_or_empty(&layout) {
        Ok(s) => s,
        Err(e) => return report_diagnostic(&e, EXIT_FAILED),
    };
    if let Some(w) = warning {
        crate::say!("warning: {w}");
    }
    let snap = match Snapshot::take(&l.project, &l.graph, &selected, BTreeSet::new(), &store) {
        Ok(s) => s,
        Err(e) => return report_diagnostic(&e, e.exit_code()),
    };
    let plan = plan_static(&snap.order, &snap);
    let mut first = true;
    for &i in &targets {
        if !first {
            outln!();
        }
        first = false;
        let name = &l.project.instances[i].name;
        let rec = snap.recorded(i);
        let upstream = |j: usize| {
            snap.recorded(j)
                .success
                .as_ref()
                .map(Success::output_digests)
        };
        let now = snap.parts(i, &upstream);
        let stale = plan.get(&i).is_some_and(|e| e.stale);
        let raw = snap.raw_records.get(name);
        match &rec.success {
            None => {
                outln!("{name}: never built successfully");
                if rec.last_failed {
                    outln!(
                        "  its last attempt failed (run {})",
                        raw.map_or("?", |r| r.last_run_id.as_str())
                    );
                }
                continue;
            }
            Some(success) => {
                let run = raw
                    .and_then(|r| r.success.as_ref())
                    .map_or("?", |s| s.run_id.as_str());
                outln!("{name}: {}", if stale { "stale" } else { "up to date" });
                outln!("  last success: run {run}, key {}", success.key.short());
                if rec.last_failed {
                    outln!(
                        "  its last attempt failed (run {})",
                        raw.map_or("?", |r| r.last_run_id.as_str())
                    );
                }
                let mut lines = match success.parts() {
                    Some(old) => diff_lines(&now, old, snap.values_known()),
                    None => vec![
                        "  the recorded key parts are unreadable (written by another orch version)"
                            .to_owned(),
                    ],
                };
                for (path, was) in &success.discovered {
                    let now = snap.digest_now(path);
                    match (was, now) {
                        (Some(a), Some(b)) if *a == b => {}
                        (None, None) => {}
                        (None, Some(_)) => {
                            lines.push(format!("  discovered added    {path}  (listed by the depfile, absent when built)"))
                        }
                        (Some(_), None) => lines.push(format!("  discovered removed  {path}")),
                        (a, b) => lines.push(format!(
                            "  discovered changed  {path}  ({} → {})",
                            short(a.as_ref()),
                            short(b.as_ref())
                        )),
                    }
                }
                for (path, meta) in &success.outputs {
                    match snap.output_now(path) {
                        None => lines.push(format!("  output   missing   {path}")),
                        Some(d) if d != meta.digest => lines.push(format!(
                            "  output   modified  {path}  (built {}, now {})",
                            meta.digest.short(),
                            d.short()
                        )),
                        _ => {}
                    }
                }
                for j in l.project.instances[i].deps.iter().map(|d| d.upstream) {
                    if plan.get(&j).is_some_and(|e| e.stale) {
                        lines.push(format!("  upstream will run first: `{}` (its new outputs decide whether this runs)", l.project.instances[j].name));
                    }
                }
                if lines.is_empty() {
                    outln!(
                        "  nothing differs: same command, inputs, environment and upstream outputs"
                    );
                } else {
                    for line in lines {
                        outln!("{line}");
                    }
                }
            }
        }
    }
    EXIT_OK
}

fn short(d: Option<&Digest>) -> String {
    d.map_or_else(|| "-".to_owned(), Digest::short)
}

/// Human lines for every difference between `now` and `old`; without the project's key
/// (`values_known` false) variable values cannot be compared, and say so.
fn diff_lines(now: &KeyParts, old: &KeyParts, values_known: bool) -> Vec<String> {
    let mut lines = Vec::new();
    if now.command != old.command {
        lines.push("  command  changed".to_owned());
        lines.push(format!("    - {}", old.command));
        lines.push(format!("    + {}", now.command));
    }
    if now.cwd != old.cwd {
        lines.push(format!(
            "  cwd      changed   `{}` → `{}`",
            old.cwd, now.cwd
        ));
    }
    if now.outputs != old.outputs {
        lines.push(format!(
            "  outputs  changed   [{}] → [{}]",
            old.outputs.join(", "),
            now.outputs.join(", ")
        ));
    }
    let keys: BTreeSet<&String> = now.env.keys().chain(old.env.keys()).collect();
    for k in keys {
        match (old.env.get(k), now.env.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (None, Some(_)) => lines.push(format!("  env      added     {k}")),
            (Some(_), None) => lines.push(format!("  env      removed   {k}")),
            (Some(Some(_)), Some(Some(_))) if !values_known => lines.push(format!(
                "  env      unknown   {k}  (`.orch/key` is missing: values cannot be compared)"
            )),
            (a, b) => lines.push(format!(
                "  env      changed   {k}  (value digest {} → {})",
                short(a.and_then(Option::as_ref)),
                short(b.and_then(Option::as_ref))
            )),
        }
    }
    let paths: BTreeSet<&String> = now.inputs.keys().chain(old.inputs.keys()).collect();
    for p in paths {
        match (old.inputs.get(p), now.inputs.get(p)) {
            (Some(a), Some(b)) if a == b => {}
            (None, Some(_)) => lines.push(format!("  input    added     {p}")),
            (Some(_), None) => lines.push(format!("  input    removed   {p}")),
            (a, b) => lines.push(format!(
                "  input    changed   {p}  ({} → {})",
                short(a),
                short(b)
            )),
        }
    }
    let schemas: BTreeSet<&String> = now.schemas.keys().chain(old.schemas.keys()).collect();
    for p in schemas {
        match (old.schemas.get(p), now.schemas.get(p)) {
            (Some(a), Some(b)) if a == b => {}
            (None, Some(_)) => lines.push(format!("  schema   added     {p}")),
            (Some(_), None) => lines.push(format!("  schema   removed   {p}")),
            (a, b) => lines.push(format!(
                "  schema   changed   {p}  ({} → {})",
                short(a),
                short(b)
            )),
        }
    }
    let ups: BTreeSet<&String> = now.upstream.keys().chain(old.upstream.keys()).collect();
    for u in ups {
        match (old.upstream.get(u), now.upstream.get(u)) {
            (Some(a), Some(b)) if a == b => {}
            (None, Some(_)) => lines.push(format!("  upstream added    {u}")),
            (Some(_), None) => lines.push(format!("  upstream removed  {u}")),
            (Some(a), Some(b)) => lines.extend(upstream_lines(u, a, b)),
            (None, None) => {}
        }
    }
    lines
}

fn upstream_lines(name: &str, old: &Upstream, now: &Upstream) -> Vec<String> {
    let empty = BTreeMap::new();
    let outs = |u: &Upstream| match u {
        Upstream::Present { outputs, .. } => outputs.clone(),
        Upstream::Absent => empty.clone(),
    };
    match (old, now) {
        (Upstream::Absent, Upstream::Present { .. }) => vec![format!(
            "  upstream present  {name}  (was absent: the soft dependency had not succeeded)"
        )],
        (Upstream::Present { .. }, Upstream::Absent) => vec![format!(
            "  upstream absent   {name}  (the soft dependency has not succeeded)"
        )],
        _ => {
            let (a, b) = (outs(old), outs(now));
            let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            let mut lines = Vec::new();
            for p in paths {
                if a.get(p) != b.get(p) {
                    lines.push(format!(
                        "  upstream changed  {name}: {p}  ({} → {})",
                        short(a.get(p)),
                        short(b.get(p))
                    ));
                }
            }
            if lines.is_empty() {
                lines.push(format!("  upstream changed  {name}  (dependency kind)"));
            }
            lines
        }
    }
}
