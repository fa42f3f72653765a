//! The dependency graph of instances: cycle detection (naming the whole cycle),
//! deterministic topological order, target selection and downstream closure.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::model::{Implied, Project};
use crate::orchfile::Span;
use crate::orchfile::source::{ConfigError, ErrorKind, did_you_mean};

pub mod targets;

/// Instances and their edges, acyclic by construction.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Graph {
    /// Instances in a topological order; ties broken by name.
    pub order: Vec<usize>,
    /// Position of each instance in `order`.
    pub rank: Vec<usize>,
    /// Downstream instances of each instance, sorted.
    pub downstream: Vec<Vec<usize>>,
}

/// Builds the graph, reporting every dependency cycle.
pub fn build(project: &Project) -> Result<Graph, Vec<ConfigError>> {
    let errors = phase_cycles(project);
    if !errors.is_empty() {
        return Err(errors);
    }
    let n = project.instances.len();
    let mut downstream = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for (i, inst) in project.instances.iter().enumerate() {
        for d in &inst.deps {
            downstream[d.upstream].push(i);
            indegree[i] += 1;
        }
    }
    for d in &mut downstream {
        d.sort_unstable();
    }
    // Kahn's algorithm with a min-heap: the order is a pure function of the project.
    let mut heap: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = heap.pop() {
        order.push(i);
        for &j in &downstream[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                heap.push(Reverse(j));
            }
        }
    }
    let mut rank = vec![0; n];
    for (pos, &i) in order.iter().enumerate() {
        rank[i] = pos;
    }
    Ok(Graph {
        order,
        rank,
        downstream,
    })
}

/// Edges of a cycle labelled in its diagnostic, besides the one that closes it.
const MAX_CYCLE_LABELS: usize = 16;

/// Why one phase depends on another, for a cycle's labels.
enum Why<'a> {
    /// Listed in `needs` or `after`, at this span.
    Declared(&'a Span),
    /// Implied: an input can match the upstream's output.
    Files(&'a Implied),
}

impl Why<'_> {
    /// The span to label and the label, for `down` depending on `up`.
    fn label(&self, up: &str, down: &str) -> (Span, String) {
        match self {
            Why::Declared(s) => ((*s).clone(), format!("`{down}` depends on `{up}`")),
            Why::Files(e) if e.input == e.output => (
                e.span.clone(),
                format!("`{down}` reads `{}`, which `{up}` writes", e.input),
            ),
            Why::Files(e) => (
                e.span.clone(),
                format!(
                    "`{down}` reads `{}`, which matches `{}` that `{up}` writes",
                    e.input, e.output
                ),
            ),
        }
    }
}

/// Finds cycles among phases, through declared and implied dependencies; each is
/// reported once, starting at its smallest name.
pub fn phase_cycles(project: &Project) -> Vec<ConfigError> {
    let mut g: DiGraph<&str, ()> = DiGraph::new();
    let mut idx: BTreeMap<&str, NodeIndex> = BTreeMap::new();
    for name in project.phases.keys() {
        idx.insert(name, g.add_node(name));
    }
    // (upstream, downstream) -> why; a declared dependency is named before a file.
    let mut why: BTreeMap<(&str, &str), Why> = BTreeMap::new();
    for (name, p) in &project.phases {
        for (dep, span) in p.needs.iter().chain(&p.after) {
            why.entry((dep.as_str(), name.as_str()))
                .or_insert(Why::Declared(span));
        }
    }
    for inst in &project.instances {
        for e in &inst.implied {
            if let Some(up) = project.instances.get(e.upstream) {
                why.entry((up.phase.as_str(), inst.phase.as_str()))
                    .or_insert(Why::Files(e));
            }
        }
    }
    for (up, down) in why.keys() {
        if let (Some(&from), Some(&to)) = (idx.get(up), idx.get(down)) {
            g.add_edge(from, to, ());
        }
    }
    let mut errors = Vec::new();
    // Kosaraju walks with explicit stacks; petgraph's Tarjan recurses once per node of a
    // chain and overflows the stack on deep graphs.
    let mut sccs = kosaraju_scc(&g);
    for scc in &mut sccs {
        scc.sort_by_key(|n| g[*n]);
    }
    sccs.sort_by_key(|scc| scc.first().map(|n| g[*n]));
    for scc in sccs {
        let is_cycle = scc.len() > 1 || scc.first().is_some_and(|&n| g.contains_edge(n, n));
        if !is_cycle {
            continue;
        }
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        let start = scc[0];
        let path = shortest_cycle(&g, start, &members);
        let names: Vec<&str> = path.iter().map(|n| g[*n]).collect();
        let shown = names
            .iter()
            .chain(names.first())
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(" → ");
        // Label the dependency entry that closes the cycle back to the start: in the
        // downstream phase's list, the name of its upstream.
        let (up, down) = (names[names.len() - 1], names[0]);
        let (up, down) = if names.len() == 1 {
            (down, down)
        } else {
            (up, down)
        };
        let (span, label) = match why.get(&(up, down)) {
            Some(w) => w.label(up, down),
            None => (
                project.phases[down].span.clone(),
                format!("`{down}` depends on `{up}`"),
            ),
        };
        let through_files = names
            .iter()
            .zip(names.iter().skip(1).chain(names.first()))
            .any(|(u, d)| matches!(why.get(&(*u, *d)), Some(Why::Files(_))));
        let help = if through_files {
            "remove one of these dependencies; phases must form a directed acyclic graph. An input that can match another phase's output is a dependency too: narrow the input pattern, or move the output"
        } else {
            "remove one of these dependencies; phases must form a directed acyclic graph"
        };
        let mut err = ConfigError::new(ErrorKind::Cycle, format!("dependency cycle: {shown}"))
            .at(&span, format!("{label}, closing the cycle"))
            .help(help);
        // The message names the whole cycle; labels beyond the first few add nothing, and
        // rendering each one rereads the file (a 20,000-phase cycle took minutes).
        for w in names.windows(2).take(MAX_CYCLE_LABELS) {
            let (u, d) = (w[0], w[1]);
            if let Some(x) = why.get(&(u, d)) {
                let (s, label) = x.label(u, d);
                if s.file == span.file {
                    err = err.also(&s, label);
                }
            }
        }
        errors.push(err);
    }
    errors
}

/// The shortest cycle through `start` within `members`, as the list of nodes in
/// dependency order (each one an upstream of the next), starting at `start`.
fn shortest_cycle(
    g: &DiGraph<&str, ()>,
    start: NodeIndex,
    members: &BTreeSet<NodeIndex>,
) -> Vec<NodeIndex> {
    if g.contains_edge(start, start) {
        return vec![start];
    }
    let mut prev: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut succ: Vec<NodeIndex>;
    while let Some(n) = queue.pop_front() {
        succ = g.neighbors(n).filter(|m| members.contains(m)).collect();
        succ.sort_by_key(|m| g[*m]);
        for m in succ {
            if m == start {
                let mut path = vec![n];
                let mut cur = n;
                while let Some(&p) = prev.get(&cur) {
                    path.push(p);
                    cur = p;
                }
                path.reverse();
                return path;
            }
            if m != start && !prev.contains_key(&m) {
                prev.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    vec![start]
}

/// Resolves command-line targets to instances, with paths relative to the project root.
/// See [`resolve_targets_from`].
pub fn resolve_targets(
    project: &Project,
    targets: &[String],
) -> Result<BTreeSet<usize>, Box<ConfigError>> {
    resolve_targets_from(project, targets, "")
}

/// Resolves command-line targets to instances. Empty targets select everything.
/// A target is `phase` (all its instances), `phase[axis=value,...]` (the instances with
/// those values), or else a declared output path (the instance that produces it),
/// relative to `cwd` (project-relative, "" for the root). A phase name wins over a path
/// of the same text. Returns the targets themselves, without dependencies.
pub fn resolve_targets_from(
    project: &Project,
    targets: &[String],
    cwd: &str,
) -> Result<BTreeSet<usize>, Box<ConfigError>> {
    if targets.is_empty() {
        return Ok((0..project.instances.len()).collect());
    }
    let mut out = BTreeSet::new();
    for t in targets {
        let (phase_name, filter) = match t.find('[') {
            Some(pos) if t.ends_with(']') => (&t[..pos], Some(&t[pos + 1..t.len() - 1])),
            _ => (t.as_str(), None),
        };
        let Some(phase) = project.phases.get(phase_name) else {
            let path = targets::project_path(&project.root, cwd, t);
            let producers = path
                .as_deref()
                .map(|p| targets::producers(project, p))
                .unwrap_or_default();
            if producers.is_empty() {
                return Err(Box::new(unknown_target(project, t, path.as_deref(), cwd)));
            }
            out.extend(producers);
            continue;
        };
        let mut wanted: BTreeMap<&str, &str> = BTreeMap::new();
        if let Some(filter) = filter {
            for part in filter.split(',').filter(|p| !p.is_empty()) {
                let Some((a, v)) = part.split_once('=') else {
                    return Err(Box::new(
                        ConfigError::new(ErrorKind::UnknownTarget, format!("invalid target `{t}`"))
                            .help(
                                "write a matrix target as `phase[axis=value]` or `phase[a=x,b=y]`",
                            ),
                    ));
                };
                if !phase.axes.iter().any(|x| x == a.trim()) {
                    return Err(Box::new(
                        ConfigError::new(
                            ErrorKind::UnknownTarget,
                            format!("phase `{phase_name}` has no matrix axis `{}`", a.trim()),
                        )
                        .help(format!(
                            "its axes are: {}",
                            if phase.axes.is_empty() {
                                "none".to_owned()
                            } else {
                                phase.axes.join(", ")
                            }
                        )),
                    ));
                }
                wanted.insert(a.trim(), v.trim());
            }
        }
        let before = out.len();
        for &i in &phase.instances {
            let m = &project.instances[i].matrix;
            if wanted
                .iter()
                .all(|(a, v)| m.get(*a).map(String::as_str) == Some(*v))
            {
                out.insert(i);
            }
        }
        if out.len() == before && !phase.instances.iter().any(|i| out.contains(i)) {
            return Err(Box::new(
                ConfigError::new(
                    ErrorKind::UnknownTarget,
                    format!("target `{t}` matches no instance of `{phase_name}`"),
                )
                .help("run `orch status` to list the instances"),
            ));
        }
    }
    Ok(out)
}

/// The error for a target that is neither a phase nor a declared output, with the most
/// useful help: the file is a source (and who reads it), or a near name, or where to look.
fn unknown_target(project: &Project, t: &str, path: Option<&str>, cwd: &str) -> ConfigError {
    let err = ConfigError::new(
        ErrorKind::UnknownTarget,
        format!("unknown target `{t}`: no phase is named so and no phase declares it as an output"),
    );
    if let Some(p) = path {
        let readers = targets::readers(project, p);
        let mut phases: Vec<&str> = readers
            .iter()
            .map(|r| project.instances[r.instance].phase.as_str())
            .collect();
        phases.dedup();
        if !phases.is_empty() {
            let shown: Vec<String> = phases.iter().take(3).map(|p| format!("`{p}`")).collect();
            let more = match phases.len().saturating_sub(3) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            return err.help(format!(
                "`{t}` is a source, read by {}{more}: name a phase to build, or run `orch show {t}` to see what reads it",
                shown.join(", ")
            ));
        }
    }
    // A root-relative path typed in a subdirectory.
    if !cwd.is_empty()
        && let Some(p) = targets::project_path(&project.root, "", t)
        && !targets::producers(project, &p).is_empty()
    {
        return err.help(format!(
            "did you mean `{}`? paths are relative to the current directory",
            crate::model::path::relative_to(cwd, &p)
        ));
    }
    // Outputs as the user would type them from where they are.
    let outputs: BTreeSet<String> = project
        .instances
        .iter()
        .flat_map(|i| &i.outputs)
        .map(|o| crate::model::path::relative_to(cwd, &o.path))
        .collect();
    let names = project
        .phases
        .keys()
        .map(String::as_str)
        .chain(outputs.iter().map(String::as_str));
    // `nope[axis=v]` is compared by its phase name.
    let query = match t.find('[') {
        Some(pos) if t.ends_with(']') => &t[..pos],
        _ => t.trim_start_matches("./"),
    };
    match did_you_mean(query, names) {
        Some(s) => err.help(format!("did you mean `{s}`?")),
        None => err.help(
            "run `orch graph` or `orch status` to list the phases; a target may also be a declared output path",
        ),
    }
}

/// The targets plus everything they depend on (hard and soft), transitively.
pub fn with_upstream(project: &Project, targets: &BTreeSet<usize>) -> BTreeSet<usize> {
    let mut out = targets.clone();
    let mut stack: Vec<usize> = targets.iter().copied().collect();
    while let Some(i) = stack.pop() {
        for d in &project.instances[i].deps {
            if out.insert(d.upstream) {
                stack.push(d.upstream);
            }
        }
    }
    out
}

/// The given instances plus everything downstream of them, transitively.
pub fn with_downstream(graph: &Graph, from: &BTreeSet<usize>) -> BTreeSet<usize> {
    let mut out = from.clone();
    let mut stack: Vec<usize> = from.iter().copied().collect();
    while let Some(i) = stack.pop() {
        for &j in &graph.downstream[i] {
            if out.insert(j) {
                stack.push(j);
            }
        }
    }
    out
}

#[cfg(test)]
mod proptests;
