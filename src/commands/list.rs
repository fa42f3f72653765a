//! `orch list`: the phases with their descriptions, matrices, instances and shards.
//!
//! Phases are listed in dependency order (a phase after everything it needs or follows,
//! ties by name), so the list reads as the pipeline runs, and the same Orchfile always
//! lists the same way, whichever files its phases were included from.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use crate::EXIT_OK;
use crate::cli::ListArgs;
use crate::events::human::Verbosity;
use crate::model::Project;
use crate::shard::{Merge, ShardSpec, Strategy};

use super::{Global, load};

/// Runs `orch list`.
pub fn run(g: &Global, a: ListArgs) -> i32 {
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let p = &l.project;
    let order = phase_order(p);
    if a.json {
        let phases: Vec<Value> = order.iter().map(|name| phase_json(p, name)).collect();
        let doc = json!({ "v": 1, "phases": phases });
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return EXIT_OK;
    }
    if g.verbosity == Verbosity::Quiet {
        for name in &order {
            outln!("{name}");
        }
        return EXIT_OK;
    }
    if order.is_empty() {
        outln!("no phases declared");
        return EXIT_OK;
    }
    let width = order.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let pad = " ".repeat(width + 2);
    for name in &order {
        let Some(phase) = p.phases.get(name) else {
            continue;
        };
        match &phase.description {
            Some(d) => outln!("{name:width$}  {d}"),
            None => outln!("{name}"),
        }
        for line in details(p, name, g.verbosity >= Verbosity::Verbose) {
            outln!("{pad}{line}");
        }
    }
    outln!(
        "{}, {}",
        count(order.len(), "phase"),
        count(p.instances.len(), "instance")
    );
    EXIT_OK
}

/// `1 phase`, `3 phases`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The lines shown under a phase's name: its matrix, shards and executor, each only when
/// it has one; with `verbose`, also its `needs` and `after`.
fn details(p: &Project, name: &str, verbose: bool) -> Vec<String> {
    let mut out = Vec::new();
    let Some(phase) = p.phases.get(name) else {
        return out;
    };
    for (key, deps) in [("needs", &phase.needs), ("after", &phase.after)] {
        if verbose && !deps.is_empty() {
            let mut names: Vec<&str> = deps.iter().map(|(n, _)| n.as_str()).collect();
            names.sort_unstable();
            out.push(format!("{key}: {}", names.join(", ")));
        }
    }
    let axes = matrix(p, name);
    if !axes.is_empty() {
        let values: Vec<String> = axes
            .iter()
            .map(|(axis, vals)| {
                let vals: Vec<&str> = vals.iter().map(String::as_str).collect();
                format!("{axis} = {}", vals.join(", "))
            })
            .collect();
        out.push(format!(
            "matrix: {} ({})",
            values.join("; "),
            count(phase.instances.len(), "instance")
        ));
    }
    if let Some(spec) = shard_spec(p, name) {
        out.push(format!("shard: {}", shard_text(spec)));
    }
    if let Some(e) = executor(p, name) {
        out.push(format!("executor: {} ({})", e.name, e.kind.name()));
    }
    out
}

/// The phase names, each after every phase it depends on (declared or implied by
/// files); of the phases ready at each step, the first by name comes first.
pub fn phase_order(p: &Project) -> Vec<String> {
    let names: Vec<&str> = p.phases.keys().map(String::as_str).collect();
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(k, n)| (*n, k)).collect();
    let mut waiting = vec![0usize; names.len()];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for (k, ph) in p.phases.values().enumerate() {
        let declared = ph.needs.iter().chain(&ph.after).map(|(n, _)| n.as_str());
        let implied = ph.instances.iter().flat_map(|&i| {
            p.instances[i]
                .deps
                .iter()
                .map(|d| p.instances[d.upstream].phase.as_str())
        });
        let ups: BTreeSet<usize> = declared
            .chain(implied)
            .filter_map(|u| index.get(u).copied())
            .filter(|&u| u != k)
            .collect();
        waiting[k] = ups.len();
        for u in ups {
            downstream[u].push(k);
        }
    }
    // Names are sorted, so the smallest ready index is the first ready name.
    let mut ready: BTreeSet<usize> = (0..names.len()).filter(|&k| waiting[k] == 0).collect();
    let mut order = Vec::with_capacity(names.len());
    let mut placed = vec![false; names.len()];
    while let Some(k) = ready.pop_first() {
        order.push(names[k].to_owned());
        placed[k] = true;
        for &d in &downstream[k] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.insert(d);
            }
        }
    }
    // Phases are acyclic once loaded; should a cycle slip through, the rest is listed by
    // name rather than dropped.
    order.extend(
        (0..names.len())
            .filter(|&k| !placed[k])
            .map(|k| names[k].to_owned()),
    );
    order
}

/// Each matrix axis of the phase with its values, sorted.
fn matrix(p: &Project, name: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut axes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if let Some(phase) = p.phases.get(name) {
        for axis in &phase.axes {
            axes.entry(axis.clone()).or_default();
        }
        for &i in &phase.instances {
            for (axis, value) in &p.instances[i].matrix {
                axes.entry(axis.clone()).or_default().insert(value.clone());
            }
        }
    }
    axes
}

/// The phase's `shard` table (the same for each of its instances).
fn shard_spec<'p>(p: &'p Project, name: &str) -> Option<&'p ShardSpec> {
    let phase = p.phases.get(name)?;
    phase
        .instances
        .first()
        .and_then(|&i| p.instances[i].shard.as_ref())
}

/// The phase's executor, when it is not `local`.
fn executor<'p>(p: &'p Project, name: &str) -> Option<&'p crate::model::Executor> {
    let phase = p.phases.get(name)?;
    let i = *phase.instances.first()?;
    match p.executor_of(i, None) {
        crate::model::ExecutorRef::Local => None,
        crate::model::ExecutorRef::Declared(e) => Some(e),
    }
}

fn merge_name(m: Merge) -> &'static str {
    match m {
        Merge::Concat => "concat",
        Merge::None => "none",
    }
}

/// `files texts/*.txt`, `chunk raw/r.jsonl, 100 records each, merge none, 4 at once`.
fn shard_text(spec: &ShardSpec) -> String {
    let mut s = match &spec.strategy {
        Strategy::Files { pattern } => format!("files {pattern}, one per file"),
        Strategy::Chunk { source, size } => {
            format!("chunk {source}, {} each", count(*size, "record"))
        }
        Strategy::Group { source, key } => format!("group {source} by `{key}`"),
    };
    if spec.merge == Merge::None {
        s.push_str(", merge none");
    }
    if let Some(n) = spec.parallel {
        s.push_str(&format!(", {n} at once"));
    }
    s
}

/// The `shard` object of `list --json`: what the Orchfile says.
fn shard_json(spec: &ShardSpec) -> Value {
    let mut v = json!({
        "strategy": spec.strategy.name(),
        "merge": merge_name(spec.merge),
        "parallel": spec.parallel,
    });
    match &spec.strategy {
        Strategy::Files { pattern } => v["source"] = json!(pattern),
        Strategy::Chunk { source, size } => {
            v["source"] = json!(source);
            v["size"] = json!(size);
        }
        Strategy::Group { source, key } => {
            v["source"] = json!(source);
            v["key"] = json!(key);
        }
    }
    v
}

/// One phase of `list --json`.
fn phase_json(p: &Project, name: &str) -> Value {
    let Some(phase) = p.phases.get(name) else {
        return Value::Null;
    };
    fn names(deps: &[(String, crate::orchfile::Span)]) -> Vec<&str> {
        let mut v: Vec<&str> = deps.iter().map(|(n, _)| n.as_str()).collect();
        v.sort_unstable();
        v
    }
    json!({
        "phase": name,
        "description": phase.description,
        "needs": names(&phase.needs),
        "after": names(&phase.after),
        "matrix": matrix(p, name),
        "instances": phase.instances.iter().map(|&i| p.instances[i].name.as_str()).collect::<Vec<_>>(),
        "shard": shard_spec(p, name).map(shard_json),
        // The same object as `show --json` gives.
        "executor": executor(p, name).map(|e| json!({ "name": e.name, "kind": e.kind.name() })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(strategy: Strategy, merge: Merge, parallel: Option<usize>) -> ShardSpec {
        ShardSpec {
            strategy,
            parallel,
            merge,
        }
    }

    #[test]
    fn shard_strategies_read_as_written() {
        let files = Strategy::Files {
            pattern: "texts/*.txt".into(),
        };
        assert_eq!(
            shard_text(&spec(files, Merge::Concat, None)),
            "files texts/*.txt, one per file"
        );
        let chunk = Strategy::Chunk {
            source: "r.jsonl".into(),
            size: 1,
        };
        assert_eq!(
            shard_text(&spec(chunk, Merge::None, Some(4))),
            "chunk r.jsonl, 1 record each, merge none, 4 at once"
        );
        let group = Strategy::Group {
            source: "r.jsonl".into(),
            key: "route".into(),
        };
        let v = shard_json(&spec(group, Merge::Concat, None));
        assert_eq!(
            v,
            json!({"strategy": "group", "merge": "concat", "parallel": null,
                   "source": "r.jsonl", "key": "route"})
        );
    }

    #[test]
    fn counts_are_singular_or_plural() {
        assert_eq!(count(1, "phase"), "1 phase");
        assert_eq!(count(0, "phase"), "0 phases");
        assert_eq!(count(3, "instance"), "3 instances");
    }
}
