//! `orch graph`: the instance graph as Graphviz dot, a Mermaid flowchart or JSON.
//!
//! Dependencies implied by files (an input that can match another phase's output) are
//! drawn apart from declared `needs` and `after`, and JSON gives their evidence.

use serde_json::json;

use crate::EXIT_OK;
use crate::cli::{GraphArgs, GraphFormat};

use super::{Global, load};

/// Runs `orch graph`.
pub fn run(g: &Global, a: GraphArgs) -> i32 {
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let p = &l.project;
    let mut out = String::new();
    match a.format {
        GraphFormat::Dot => {
            out.push_str("digraph orch {\n  rankdir=LR;\n  node [shape=box];\n");
            for &i in &l.graph.order {
                out.push_str(&format!("  {};\n", dot_id(&p.instances[i].name)));
            }
            for &i in &l.graph.order {
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
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for &i in &l.graph.order {
                out.push_str(&format!(
                    "  n{i}[\"{}\"]\n",
                    p.instances[i].name.replace('"', "#quot;")
                ));
            }
            for &i in &l.graph.order {
                for d in &p.instances[i].deps {
                    let arrow = match (d.implied, d.hard) {
                        (true, _) => "==>|files|",
                        (false, true) => "-->",
                        (false, false) => "-.->",
                    };
                    out.push_str(&format!("  n{} {arrow} n{i}\n", d.upstream));
                }
            }
        }
        GraphFormat::Json => {
            let instances: Vec<serde_json::Value> = l
                .graph
                .order
                .iter()
                .map(|&i| {
                    let inst = &p.instances[i];
                    json!({
                        "name": inst.name,
                        "phase": inst.phase,
                        "matrix": inst.matrix,
                        "description": p.phases.get(&inst.phase).and_then(|ph| ph.description.clone()),
                        "inputs": inst.inputs,
                        "outputs": inst.outputs.iter().map(|o| if o.dir { format!("{}/", o.path) } else { o.path.clone() }).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let mut edges = Vec::new();
            for &i in &l.graph.order {
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
            out = serde_json::to_string_pretty(&json!({ "instances": instances, "edges": edges }))
                .unwrap_or_default();
            out.push('\n');
        }
    }
    out!("{out}");
    EXIT_OK
}

fn dot_id(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}
