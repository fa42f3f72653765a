//! `orch graph`: the instance graph as Graphviz dot, a Mermaid flowchart or JSON — the
//! whole graph, or the targets and everything they depend on — with `--status` each node
//! coloured by the state `orch status` gives it.
//!
//! Dependencies implied by files (an input that can match another phase's output) are
//! drawn apart from declared `needs` and `after`, and JSON gives their evidence.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::EXIT_OK;
use crate::cli::{GraphArgs, GraphFormat};
use crate::graph;
use crate::store::Layout;

use super::plan::planned;
use super::status::states;
use super::{Global, load, resolve};

/// Fill colours of the states, for dot and Mermaid (light, so black text stays legible).
const COLOURS: [(&str, &str); 4] = [
    ("up_to_date", "#c8e6c9"),
    ("stale", "#fff59d"),
    ("failed", "#ef9a9a"),
    ("blocked", "#e0e0e0"),
];

/// Runs `orch graph`.
pub fn run(g: &Global, a: GraphArgs) -> i32 {
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let p = &l.project;
    let shown: BTreeSet<usize> = if a.targets.is_empty() {
        (0..p.instances.len()).collect()
    } else {
        match resolve(g, &l, &a.targets) {
            Ok(named) => graph::with_upstream(p, &named),
            Err(code) => return code,
        }
    };
    let order: Vec<usize> = l
        .graph
        .order
        .iter()
        .copied()
        .filter(|i| shown.contains(i))
        .collect();
    let status: BTreeMap<usize, &'static str> = if a.status {
        let layout = Layout::new(&p.root);
        let entries = match planned(&l, &layout, &shown, Default::default()) {
            Ok(e) => e,
            Err(code) => return code,
        };
        let by_name = states(p, &entries);
        entries
            .iter()
            .filter_map(|e| by_name.get(&e.entry.instance).map(|(s, _)| (e.index, *s)))
            .collect()
    } else {
        BTreeMap::new()
    };
    let colour = |state: &str| {
        COLOURS
            .iter()
            .find(|(s, _)| *s == state)
            .map_or("#ffffff", |(_, c)| *c)
    };
    let mut out = String::new();
    match a.format {
        GraphFormat::Dot => {
            out.push_str("digraph orch {\n  rankdir=LR;\n  node [shape=box];\n");
            for &i in &order {
                let style = status.get(&i).map_or_else(String::new, |s| {
                    format!(
                        " [style=filled, fillcolor=\"{}\", tooltip=\"{s}\"]",
                        colour(s)
                    )
                });
                out.push_str(&format!("  {}{style};\n", dot_id(&p.instances[i].name)));
            }
            for &i in &order {
                for d in &p.instances[i].deps {
                    let style = match (d.implied, d.hard) {
                        (true, _) => " [style=bold, color=gray, label=\"files\"]",
                        (false, true) => "",
                        (false, false) => " [style=dashed]",
                    };
                    out.push_str(&format!(
                        "  {} -> {}{style};\n",
                        dot_id(&p.instances[d.upstream].name),
                        dot_id(&p.instances[i].name)
                    ));
                }
            }
            if a.status {
                out.push_str("  subgraph cluster_legend {\n    label=\"legend\";\n");
                for (s, c) in COLOURS {
                    out.push_str(&format!(
                        "    \"legend:{s}\" [label=\"{}\", style=filled, fillcolor=\"{c}\"];\n",
                        s.replace('_', " ")
                    ));
                }
                out.push_str("  }\n");
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for &i in &order {
                out.push_str(&format!(
                    "  n{i}[\"{}\"]\n",
                    p.instances[i].name.replace('"', "#quot;")
                ));
            }
            for &i in &order {
                for d in &p.instances[i].deps {
                    let arrow = match (d.implied, d.hard) {
                        (true, _) => "==>|files|",
                        (false, true) => "-->",
                        (false, false) => "-.->",
                    };
                    out.push_str(&format!("  n{} {arrow} n{i}\n", d.upstream));
                }
            }
            if a.status {
                for (s, c) in COLOURS {
                    out.push_str(&format!("  classDef {s} fill:{c},color:#000\n"));
                }
                for (i, s) in &status {
                    out.push_str(&format!("  class n{i} {s}\n"));
                }
                out.push_str("  subgraph legend\n");
                for (s, _) in COLOURS {
                    out.push_str(&format!(
                        "    legend_{s}[\"{}\"]:::{s}\n",
                        s.replace('_', " ")
                    ));
                }
                out.push_str("  end\n");
            }
        }
        GraphFormat::Json => {
            let instances: Vec<serde_json::Value> = order
                .iter()
                .map(|&i| {
                    let inst = &p.instances[i];
                    let mut v = json!({
                        "instance": inst.name,
                        "phase": inst.phase,
                        "matrix": inst.matrix,
                        "description": p.phases.get(&inst.phase).and_then(|ph| ph.description.clone()),
                        "inputs": inst.inputs,
                        "outputs": inst.outputs.iter().map(|o| if o.dir { format!("{}/", o.path) } else { o.path.clone() }).collect::<Vec<_>>(),
                    });
                    if let Some(s) = status.get(&i) {
                        v["status"] = json!(s);
                    }
                    v
                })
                .collect();
            let mut edges = Vec::new();
            for &i in &order {
                let inst = &p.instances[i];
                for d in &inst.deps {
                    let (from, to) = (&p.instances[d.upstream].name, &inst.name);
                    let evidence = inst
                        .implied
                        .binary_search_by_key(&d.upstream, |e| e.upstream)
                        .ok()
                        .and_then(|k| inst.implied.get(k));
                    edges.push(match evidence {
                        Some(e) if d.implied => json!({
                            "from": from,
                            "to": to,
                            "kind": "files",
                            "input": e.input,
                            "output": e.output,
                        }),
                        _ => json!({
                            "from": from,
                            "to": to,
                            "kind": if d.hard { "needs" } else { "after" },
                        }),
                    });
                }
            }
            let doc = json!({
                "v": 1,
                "targets": a.targets,
                "instances": instances,
                "edges": edges,
            });
            out = serde_json::to_string_pretty(&doc).unwrap_or_default();
            out.push('\n');
        }
    }
    out!("{out}");
    EXIT_OK
}

fn dot_id(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::super::status::STATES;
    use super::*;

    #[test]
    fn every_state_has_a_colour() {
        for s in STATES {
            assert!(COLOURS.iter().any(|(c, _)| *c == s), "{s}");
        }
    }
}
