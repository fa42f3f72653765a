//! `orch show PATH`: where an output came from, as a tree back to source files (a
//! `merge = "none"` shard's output back to its own slice), each output expanded once.
//! `orch show SOURCE`: the instances (and `files` shards) that read a source file.
//! `orch show TARGET`: each instance's last result, key, outputs and current status.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Component, Path};

use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::ShowArgs;
use crate::exec::shards;
use crate::fs::{Digest, PathDigest, digest_paths};
use crate::graph::{self, targets::Reader};
use crate::model::Project;
use crate::plan::Success;
use crate::shard::Strategy;
use crate::snapshot::Snapshot;
use crate::store::{LastStatus, Layout, OutputRecord, Store};
use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

use super::plan::{entry_json, planned, reasons_text};
use super::runs::{bytes_text, open_store, time_json, time_text};
use super::{Global, Loaded, load, report, report_diagnostic};

/// Runs `orch show`.
pub fn run(g: &Global, a: ShowArgs) -> i32 {
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let layout = Layout::new(&l.project.root);
    let store = match open_store(&layout) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let candidates = project_paths(&l.project.root, &g.start_dir(), &a.what);
    for c in &candidates {
        match store.output(c) {
            Ok(Some(rec)) => return show_path(&l, &store, rec, a.json),
            Ok(None) => {}
            Err(e) => return report_diagnostic(&e, EXIT_FAILED),
        }
    }
    // A file inside a directory output has the directory's lineage.
    for c in &candidates {
        for dir in c
            .char_indices()
            .rev()
            .filter(|&(_, ch)| ch == '/')
            .map(|(k, _)| &c[..k])
        {
            match store.output(dir) {
                Ok(Some(rec)) => {
                    crate::say!("note: `{c}` lies inside directory output `{dir}/`");
                    return show_path(&l, &store, rec, a.json);
                }
                Ok(None) => {}
                Err(e) => return report_diagnostic(&e, EXIT_FAILED),
            }
        }
    }
    // A name orch never recorded as an output that is a target is the target, even if
    // a file of that name exists. Only phases and instances: a path is shown as a path.
    let target = (!a.what.contains('/'))
        .then(|| graph::resolve_targets(&l.project, std::slice::from_ref(&a.what)));
    if let Some(Ok(targets)) = target {
        drop(store);
        return show_target(&l, &layout, &targets, a.json);
    }
    let declared = candidates
        .iter()
        .find_map(|c| Some((c, first(graph::targets::producers(&l.project, c))?)));
    if declared.is_none()
        && let Some((path, readers)) = candidates.iter().find_map(|c| {
            let r = source_readers(&l.project.root, &l.project, c);
            (!r.is_empty()).then_some((c, r))
        })
    {
        return show_source(&l, &store, path, &readers, a.json);
    }
    let exists = candidates.iter().any(|c| l.project.root.join(c).exists());
    if a.what.contains('/') || exists || target.is_none() || declared.is_some() {
        let shown = candidates.first().map_or(a.what.as_str(), String::as_str);
        crate::say!("error: orch has no record of an output `{shown}`");
        let name = a.what.trim_start_matches("./").trim_end_matches('/');
        if let Some((path, i)) = declared {
            crate::say!(
                "help: `{path}` is declared by `{}`, which has not built it yet: `orch build {}` builds it",
                l.project.instances[i].name,
                a.what
            );
        } else if l.project.phases.contains_key(name) {
            crate::say!("help: `{name}` is a phase: `orch show {name}` shows its last result");
        } else {
            crate::say!(
                "help: `orch show` knows the outputs of successful builds; `orch status` lists the instances"
            );
        }
        return EXIT_USAGE;
    }
    crate::say!(
        "error: `{}` is neither an output orch recorded nor a target",
        a.what
    );
    match target {
        Some(Err(e)) => report(vec![*e], &l.project.sources),
        _ => EXIT_USAGE,
    }
}

/// The smallest of a set of instances.
fn first(set: BTreeSet<usize>) -> Option<usize> {
    set.into_iter().next()
}

/// The instances that read `path` as a source. A glob names only files that exist; a
/// plain input names its path whether or not it exists.
fn source_readers(root: &Path, project: &Project, path: &str) -> Vec<Reader> {
    let exists = root.join(path).exists();
    graph::targets::readers(project, path)
        .into_iter()
        .filter(|r| exists || crate::model::path::is_plain(&r.pattern))
        .collect()
}

/// One instance that reads a source, as `orch show SOURCE` reports it.
#[derive(Debug, Serialize)]
struct ReadBy {
    instance: String,
    /// The input pattern that names the file.
    input: String,
    /// For a `files` shard source: the shard that reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<ShardRead>,
    /// The file is the instance's `chunk` or `group` source, split into its shards.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    split: bool,
}

/// The shard that reads a `files` source.
#[derive(Debug, Serialize)]
struct ShardRead {
    index: usize,
    key: String,
}

/// `orch show SOURCE`: a file no instance produces, and the instances that read it.
fn show_source(l: &Loaded, store: &Store, path: &str, readers: &[Reader], as_json: bool) -> i32 {
    // The shard that reads a `files` source is its position among the files the glob
    // matches now, so those instances' inputs are walked.
    let sharded: BTreeSet<usize> = readers
        .iter()
        .filter(|r| r.shard_source)
        .map(|r| r.instance)
        .collect();
    let snap = if sharded.is_empty() {
        None
    } else {
        match Snapshot::take(&l.project, &l.graph, &sharded, BTreeSet::new(), store) {
            Ok(s) => Some(s),
            Err(e) => return report_diagnostic(&e, e.exit_code()),
        }
    };
    let mut read_by = Vec::new();
    for r in readers {
        let inst = &l.project.instances[r.instance];
        let mut entry = ReadBy {
            instance: inst.name.clone(),
            input: r.pattern.clone(),
            shard: None,
            split: false,
        };
        if r.shard_source
            && let Some(spec) = &inst.shard
        {
            match &spec.strategy {
                Strategy::Files { .. } => {
                    let files = snap
                        .as_ref()
                        .map(|s| shards::source_files(&spec.strategy, &s.inputs[r.instance]))
                        .unwrap_or_default();
                    entry.shard = files.iter().position(|f| f == path).map(|index| ShardRead {
                        index,
                        key: path.to_owned(),
                    });
                }
                Strategy::Chunk { .. } | Strategy::Group { .. } => entry.split = true,
            }
        }
        read_by.push(entry);
    }
    let exists = l.project.root.join(path).exists();
    if as_json {
        let doc = json!({
            "v": 1,
            "kind": "source",
            "path": path,
            "on_disk": if exists { "present" } else { "missing" },
            "read_by": read_by,
        });
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return EXIT_OK;
    }
    let list: Vec<String> = read_by
        .iter()
        .map(|r| match (&r.shard, r.split) {
            (Some(s), _) => format!("{}#{} ({})", r.instance, s.index, s.key),
            (None, true) => format!("{} (split into its shards)", r.instance),
            (None, false) => r.instance.clone(),
        })
        .collect();
    let missing = if exists { "" } else { " (missing on disk)" };
    outln!("{path} is a source{missing}, read by: {}", list.join(", "));
    EXIT_OK
}

/// The project-relative paths `arg` may mean: relative to the current directory when
/// that is inside the project, then relative to the project root. Absolute paths inside
/// the project work too.
fn project_paths(root: &Path, start: &Path, arg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |p: Option<String>| {
        if let Some(p) = p.filter(|p| !p.is_empty())
            && !out.contains(&p)
        {
            out.push(p);
        }
    };
    let arg_path = Path::new(arg);
    if arg_path.is_absolute() {
        let canonical = arg_path.canonicalize().ok();
        for p in [Some(arg_path.to_path_buf()), canonical]
            .into_iter()
            .flatten()
        {
            if let Ok(rel) = p.strip_prefix(root) {
                push(lexical(Path::new(""), rel));
            }
        }
        return out;
    }
    let start = start.canonicalize().unwrap_or_else(|_| start.to_path_buf());
    if let Ok(prefix) = start.strip_prefix(root) {
        push(lexical(prefix, arg_path));
    }
    push(lexical(Path::new(""), arg_path));
    out
}

/// `base/rel` with `.` and `..` resolved lexically; None when it leaves the root.
fn lexical(base: &Path, rel: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in base.components().chain(rel.components()) {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// One node of an output's lineage.
#[derive(Debug, Serialize)]
struct Node {
    /// `output` (produced by an instance), `source` (a file no instance produces) or
    /// `absent` (a soft dependency that had not succeeded).
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    /// The digest this file had where it was used (for the top node: as recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    /// The file now: `unchanged`, `modified`, `missing` or `unreadable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    on_disk: Option<&'static str>,
    /// Its digest now, when modified.
    #[serde(skip_serializing_if = "Option::is_none")]
    on_disk_digest: Option<String>,
    /// When the output was built again since it was used: the digest recorded now.
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded_at: Option<String>,
    /// For `output`: orch holds no record of it (so its lineage stops here).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    unrecorded: bool,
    /// Already shown elsewhere in the tree (its lineage is not repeated).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    repeated: bool,
    /// Its lineage goes deeper than `orch show` prints; `orch show` its path to go on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    /// For an output: the shard of its instance that wrote it (`merge = "none"`). For a
    /// source: the shard that read a slice of it (`chunk`, `group`).
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<ShardOf>,
    /// What it was built from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    built_from: Vec<Node>,
    #[serde(skip)]
    recorded_at_ns: Option<i64>,
}

impl Node {
    fn empty(kind: &'static str) -> Node {
        Node {
            kind,
            path: None,
            digest: None,
            on_disk: None,
            on_disk_digest: None,
            recorded_digest: None,
            size: None,
            instance: None,
            action_key: None,
            run_id: None,
            recorded_at: None,
            unrecorded: false,
            repeated: false,
            truncated: false,
            shard: None,
            built_from: Vec::new(),
            recorded_at_ns: None,
        }
    }

    fn source(path: &str, digest: &str) -> Node {
        Node {
            path: Some(path.to_owned()),
            digest: Some(digest.to_owned()),
            ..Node::empty("source")
        }
    }

    fn output(rec: &OutputRecord, used: &str) -> Node {
        let recorded = Digest(rec.digest).to_hex();
        let built_from: Value = serde_json::from_str(&rec.built_from).unwrap_or(Value::Null);
        Node {
            shard: ShardOf::of(&built_from),
            path: Some(rec.path.clone()),
            recorded_digest: (recorded != used).then_some(recorded),
            digest: Some(used.to_owned()),
            size: Some(rec.size),
            instance: Some(rec.instance.clone()),
            action_key: Some(Digest(rec.action_key).to_hex()),
            run_id: Some(rec.run_id.clone()),
            recorded_at: Some(time_json(rec.recorded_at_ns)),
            recorded_at_ns: Some(rec.recorded_at_ns),
            ..Node::empty("output")
        }
    }
}

/// One shard of an instance, as recorded with a `merge = "none"` output.
#[derive(Clone, Debug, Serialize)]
struct ShardOf {
    /// Its position, from 0.
    index: u64,
    /// `{shard.key}`.
    key: String,
    /// The file it read, or split its slice from.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// Digest of what it read: the file, or its slice of the file.
    slice: String,
}

impl ShardOf {
    /// The `shard` entry of a `built_from` record, if any.
    fn of(built_from: &Value) -> Option<ShardOf> {
        let s = &built_from["shard"];
        Some(ShardOf {
            index: s["index"].as_u64()?,
            key: s["key"].as_str()?.to_owned(),
            source: s["source"].as_str().map(str::to_owned),
            slice: s["slice"].as_str().unwrap_or("").to_owned(),
        })
    }
}

/// How many levels of lineage `orch show PATH` prints. A chain of thousands of phases
/// would otherwise print a tree whose indentation alone is gigabytes (and JSON nested
/// deeper than common parsers accept); the deepest node shown is marked `truncated`,
/// and `orch show` on its path continues from there.
const MAX_DEPTH: usize = 50;

/// A child about to be placed in the tree: the node, and its record when it is an
/// output whose own lineage may be expanded.
type Pending = (Node, Option<OutputRecord>);

/// Walks `built_from` records back to source files. Each recorded output is expanded
/// once; later mentions are marked `repeated` (which also ends cycles).
struct Lineage<'a> {
    store: &'a Store,
    expanded: HashSet<String>,
}

impl Lineage<'_> {
    /// The lineage of `rec` under `root`, depth first with an explicit stack (a chain of
    /// thousands of outputs must not exhaust the call stack). Children are placed in the
    /// order they are listed, each one's lineage before the next sibling's, so which
    /// mention of an output is expanded and which is `repeated` reads top to bottom.
    fn walk(&mut self, root: Node, rec: &OutputRecord) -> Result<Node, i32> {
        /// A node whose children are being placed.
        struct Frame {
            id: usize,
            depth: usize,
            pending: std::collections::VecDeque<Pending>,
        }
        self.expanded.insert(rec.path.clone());
        // Nodes in the order placed (a parent before its children), with their parent.
        let mut arena: Vec<(Option<Node>, usize)> = vec![(Some(root), 0)];
        let mut stack = vec![Frame {
            id: 0,
            depth: 0,
            pending: self.children(rec)?.into(),
        }];
        while let Some(top) = stack.last_mut() {
            let Some((mut node, rec)) = top.pending.pop_front() else {
                stack.pop();
                continue;
            };
            let (parent, depth) = (top.id, top.depth + 1);
            let id = arena.len();
            let mut below = None;
            if let Some(r) = rec {
                if self.expanded.contains(&r.path) {
                    node.repeated = true;
                } else {
                    let children = self.children(&r)?;
                    if depth >= MAX_DEPTH {
                        node.truncated = !children.is_empty();
                    } else {
                        self.expanded.insert(r.path.clone());
                        below = Some(children);
                    }
                }
            }
            arena.push((Some(node), parent));
            if let Some(children) = below {
                stack.push(Frame {
                    id,
                    depth,
                    pending: children.into(),
                });
            }
        }
        // Every child comes after its parent: moving nodes into their parents from the
        // last one back fills each node before it moves, leaving children reversed.
        for id in (1..arena.len()).rev() {
            let parent = arena[id].1;
            if let Some(node) = arena[id].0.take()
                && let Some(p) = arena[parent].0.as_mut()
            {
                p.built_from.push(node);
            }
        }
        let mut root = arena[0].0.take().unwrap_or_else(|| Node::empty("output"));
        let mut nodes = vec![&mut root];
        while let Some(n) = nodes.pop() {
            n.built_from.reverse();
            nodes.extend(n.built_from.iter_mut());
        }
        Ok(root)
    }

    /// What `rec` was built from, in the order shown: upstream outputs (and absent soft
    /// upstreams), then inputs no upstream provided.
    fn children(&self, rec: &OutputRecord) -> Result<Vec<Pending>, i32> {
        let built_from: Value = serde_json::from_str(&rec.built_from).unwrap_or(Value::Null);
        // A shard that read a slice of a file (not the whole file) says which.
        let sliced = ShardOf::of(&built_from).filter(|s| {
            built_from["inputs"][s.source.as_deref().unwrap_or("")].as_str()
                != Some(s.slice.as_str())
        });
        let mut out = Vec::new();
        let mut from_upstream = HashSet::new();
        if let Some(ups) = built_from["upstream"].as_object() {
            for (instance, u) in ups {
                let Some(outputs) = u["present"]["outputs"].as_object() else {
                    let absent = Node {
                        instance: Some(instance.clone()),
                        ..Node::empty("absent")
                    };
                    out.push((absent, None));
                    continue;
                };
                for (path, digest) in outputs {
                    from_upstream.insert(path.clone());
                    let digest = digest.as_str().unwrap_or("");
                    out.push(match self.record(path)? {
                        Some(r) => (Node::output(&r, digest), Some(r)),
                        None => (
                            Node {
                                path: Some(path.clone()),
                                digest: Some(digest.to_owned()),
                                instance: Some(instance.clone()),
                                unrecorded: true,
                                ..Node::empty("output")
                            },
                            None,
                        ),
                    });
                }
            }
        }
        if let Some(inputs) = built_from["inputs"].as_object() {
            for (path, digest) in inputs {
                if from_upstream.contains(path) {
                    continue;
                }
                let digest = digest.as_str().unwrap_or("");
                // An input glob may match another phase's output: follow it too.
                out.push(match self.record(path)? {
                    Some(r) => (Node::output(&r, digest), Some(r)),
                    None => {
                        let mut node = Node::source(path, digest);
                        node.shard = sliced
                            .clone()
                            .filter(|s| s.source.as_deref() == Some(path.as_str()));
                        (node, None)
                    }
                });
            }
        }
        // Files the command's depfile listed (headers): sources, or outputs of phases that
        // generate them. Ones recorded as absent shaped nothing.
        if let Some(found) = built_from["discovered"].as_object() {
            for (path, digest) in found {
                let Some(digest) = digest.as_str() else {
                    continue;
                };
                out.push(match self.record(path)? {
                    Some(r) => (Node::output(&r, digest), Some(r)),
                    None => (
                        Node {
                            kind: "discovered",
                            ..Node::source(path, digest)
                        },
                        None,
                    ),
                });
            }
        }
        Ok(out)
    }

    fn record(&self, path: &str) -> Result<Option<OutputRecord>, i32> {
        self.store
            .output(path)
            .map_err(|e| report_diagnostic(&e, EXIT_FAILED))
    }
}

fn show_path(l: &Loaded, store: &Store, rec: OutputRecord, as_json: bool) -> i32 {
    let root = Node::output(&rec, &Digest(rec.digest).to_hex());
    let mut lineage = Lineage {
        store,
        expanded: HashSet::new(),
    };
    let mut root = match lineage.walk(root, &rec) {
        Ok(root) => root,
        Err(code) => return code,
    };
    check_disk(&l.project.root, store, &mut root);
    if as_json {
        let mut doc = serde_json::to_value(&root).unwrap_or(Value::Null);
        doc["v"] = json!(1);
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return EXIT_OK;
    }
    let path = root.path.clone().unwrap_or_default();
    outln!("{path}");
    let disk = match root.on_disk {
        Some("unchanged") => "the file still has it".to_owned(),
        Some("modified") => format!(
            "the file was modified since: it now has {}",
            short(root.on_disk_digest.as_deref())
        ),
        Some("missing") => "the file is missing".to_owned(),
        _ => "the file cannot be read".to_owned(),
    };
    outln!("  digest      {}  ({disk})", short(root.digest.as_deref()));
    outln!("  size        {}", bytes_text(rec.size));
    let by = match &root.shard {
        Some(s) => format!("{}#{} (key `{}`)", rec.instance, s.index, s.key),
        None => rec.instance.clone(),
    };
    outln!(
        "  built by    {by} in run {} at {}",
        rec.run_id,
        time_text(rec.recorded_at_ns)
    );
    outln!("  action key  {}", Digest(rec.action_key).to_hex());
    if root.built_from.is_empty() {
        outln!("  built from  nothing (no inputs, no upstream outputs)");
    } else {
        outln!("  built from");
        print_tree(&root.built_from, "  ");
    }
    EXIT_OK
}

/// Fills `on_disk` of every node with a path (digests reuse the digest cache).
fn check_disk(root: &Path, store: &Store, tree: &mut Node) {
    let mut paths: Vec<String> = Vec::new();
    collect_paths(tree, &mut paths);
    paths.sort();
    paths.dedup();
    let cache = store.load_digests().unwrap_or_default();
    let results = digest_paths(root, &paths, |p| {
        cache.get(p).map(crate::snapshot::row_to_cached)
    });
    let now: HashMap<&str, Option<Option<Digest>>> = paths
        .iter()
        .zip(results)
        .map(|(p, r)| {
            let d = match r {
                Ok(PathDigest::Present { digest, .. }) => Some(Some(digest)),
                Ok(PathDigest::Missing) => Some(None),
                Err(_) => None,
            };
            (p.as_str(), d)
        })
        .collect();
    fill_disk(tree, &now);
}

fn collect_paths(node: &Node, out: &mut Vec<String>) {
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        if let Some(p) = &n.path {
            out.push(p.clone());
        }
        stack.extend(&n.built_from);
    }
}

fn fill_disk(node: &mut Node, now: &HashMap<&str, Option<Option<Digest>>>) {
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        if let Some(p) = &n.path {
            let (state, digest) = match now.get(p.as_str()) {
                Some(Some(Some(d))) if Some(d.to_hex()) == n.digest => ("unchanged", None),
                Some(Some(Some(d))) => ("modified", Some(d.to_hex())),
                Some(Some(None)) => ("missing", None),
                _ => ("unreadable", None),
            };
            n.on_disk = Some(state);
            n.on_disk_digest = digest;
        }
        stack.extend(n.built_from.iter_mut());
    }
}

fn short(hex: Option<&str>) -> String {
    hex.map_or_else(|| "-".to_owned(), |h| h.chars().take(12).collect())
}

/// Prints `nodes` as a tree under `indent`, depth first with an explicit stack.
fn print_tree(nodes: &[Node], indent: &str) {
    // (node, its indent, whether it is the last of its siblings), next to print on top.
    fn push<'a>(stack: &mut Vec<(&'a Node, String, bool)>, nodes: &'a [Node], indent: &str) {
        let n = nodes.len();
        for (k, node) in nodes.iter().enumerate().rev() {
            stack.push((node, indent.to_owned(), k + 1 == n));
        }
    }
    let mut stack: Vec<(&Node, String, bool)> = Vec::new();
    push(&mut stack, nodes, indent);
    while let Some((n, indent, last)) = stack.pop() {
        let (branch, more) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        outln!("{indent}{branch}{}", node_text(n));
        push(&mut stack, &n.built_from, &format!("{indent}{more}"));
    }
}

fn node_text(n: &Node) -> String {
    if n.kind == "absent" {
        return format!(
            "upstream `{}` absent (a soft dependency that had not succeeded)",
            n.instance.as_deref().unwrap_or("?")
        );
    }
    let mut s = format!(
        "{}  {}",
        n.path.as_deref().unwrap_or("?"),
        short(n.digest.as_deref())
    );
    match n.kind {
        "discovered" => s.push_str("  source, listed in the depfile"),
        "source" => match &n.shard {
            Some(sh) => s.push_str(&format!(
                "  source, slice {} read by shard #{} (key `{}`)",
                short(Some(&sh.slice)),
                sh.index,
                sh.key
            )),
            None => s.push_str("  source"),
        },
        _ if n.unrecorded => s.push_str(&format!(
            "  output of {} (no record)",
            n.instance.as_deref().unwrap_or("?")
        )),
        _ => {
            let shard = n
                .shard
                .as_ref()
                .map(|sh| format!("#{}", sh.index))
                .unwrap_or_default();
            s.push_str(&format!(
                "  {}{shard}, run {}",
                n.instance.as_deref().unwrap_or("?"),
                n.run_id.as_deref().unwrap_or("?")
            ));
            if let Some(at) = n.recorded_at_ns {
                s.push_str(&format!(" at {}", time_text(at)));
            }
        }
    }
    if let Some(r) = &n.recorded_digest {
        s.push_str(&format!("  [built again since: {}]", short(Some(r))));
    }
    match n.on_disk {
        Some("modified") => s.push_str(&format!(
            "  [modified on disk: now {}]",
            short(n.on_disk_digest.as_deref())
        )),
        Some("missing") => s.push_str("  [missing on disk]"),
        Some("unreadable") => s.push_str("  [unreadable]"),
        _ => {}
    }
    if n.repeated {
        s.push_str("  (shown above)");
    }
    if n.truncated {
        s.push_str(&format!(
            "  (lineage goes on: `orch show {}`)",
            n.path.as_deref().unwrap_or("?")
        ));
    }
    s
}

fn show_target(
    l: &Loaded,
    layout: &Layout,
    targets: &std::collections::BTreeSet<usize>,
    as_json: bool,
) -> i32 {
    let selected = graph::with_upstream(&l.project, targets);
    let entries = match planned(l, layout, &selected, Default::default()) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let store = match open_store(layout) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let results = match store.load_results() {
        Ok(r) => r,
        Err(e) => return report_diagnostic(&e, EXIT_FAILED),
    };
    let mut docs = Vec::new();
    let mut first = true;
    for &i in targets {
        let name = &l.project.instances[i].name;
        let Some(p) = entries.iter().find(|p| &p.entry.instance == name) else {
            continue;
        };
        let rec = results.get(name);
        let success = rec.and_then(|r| {
            let s = r.success.as_ref()?;
            Some((s, Success::decode(Digest(s.action_key), &s.manifest)))
        });
        let outputs: BTreeMap<String, (String, u64)> = success
            .as_ref()
            .and_then(|(_, s)| s.as_ref())
            .map(|s| {
                s.outputs
                    .iter()
                    .map(|(p, m)| (p.clone(), (m.digest.to_hex(), m.size)))
                    .collect()
            })
            .unwrap_or_default();
        if as_json {
            let mut v = entry_json(&l.project, p);
            let (executor, resources) = placement(&l.project, i);
            if let Some(e) = executor {
                v["executor"] = json!({ "name": e.name, "kind": e.kind.name() });
            }
            if let Some(r) = resources {
                v["resources"] = resources_json(r);
            }
            v["last_result"] = rec.map_or(Value::Null, |r| {
                json!({
                    "status": r.last_status.as_str(),
                    "run_id": r.last_run_id,
                    "finished_at": time_json(r.last_finished_at_ns),
                })
            });
            v["last_success"] = success.as_ref().map_or(Value::Null, |(s, _)| {
                let outs: BTreeMap<&String, Value> = outputs
                    .iter()
                    .map(|(p, (d, size))| (p, json!({ "digest": d, "size": size })))
                    .collect();
                json!({
                    "run_id": s.run_id,
                    "finished_at": time_json(s.finished_at_ns),
                    "action_key": Digest(s.action_key).to_hex(),
                    "outputs": outs,
                })
            });
            docs.push(v);
            continue;
        }
        if !first {
            outln!();
        }
        first = false;
        outln!("{name}");
        match rec {
            None => outln!("  last result  never run"),
            Some(r) => {
                outln!(
                    "  last result  {} in run {} at {}",
                    r.last_status.as_str(),
                    r.last_run_id,
                    time_text(r.last_finished_at_ns)
                );
                if r.last_status == LastStatus::Failed {
                    match &r.success {
                        Some(s) => outln!(
                            "  last success run {} at {}",
                            s.run_id,
                            time_text(s.finished_at_ns)
                        ),
                        None => outln!("  last success never"),
                    }
                }
            }
        }
        if let Some((s, _)) = &success {
            outln!("  action key   {}", Digest(s.action_key).to_hex());
        }
        if success.is_some() {
            let width = outputs.keys().map(String::len).max().unwrap_or(0);
            let mut label = "outputs";
            if outputs.is_empty() {
                outln!("  outputs      none");
            }
            for (path, (digest, size)) in &outputs {
                outln!(
                    "  {label:12} {path:width$}  {}  {}",
                    short(Some(digest)),
                    bytes_text(*size)
                );
                label = "";
            }
        }
        let (executor, resources) = placement(&l.project, i);
        if let Some(e) = executor {
            outln!("  executor     {} ({})", e.name, e.kind.name());
        }
        if let Some(r) = resources {
            outln!("  resources    {}", r.describe());
        }
        if p.entry.stale {
            outln!("  status       stale: {}", reasons_text(p));
        } else {
            outln!("  status       up to date");
        }
    }
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "v": 1, "kind": "target", "instances": docs }))
                .unwrap_or_default()
        );
    }
    EXIT_OK
}

/// The executor (with its kind) and resources of instance `i`, each only when it is not
/// the default (`local`, nothing asked for).
fn placement(
    project: &Project,
    i: usize,
) -> (
    Option<&crate::model::Executor>,
    Option<&crate::model::Resources>,
) {
    let executor = match project.executor_of(i, None) {
        crate::model::ExecutorRef::Local => None,
        crate::model::ExecutorRef::Declared(e) => Some(e),
    };
    let resources = &project.instances[i].resources;
    (executor, (!resources.is_empty()).then_some(resources))
}

/// `resources` for `--json`: only what is asked for, memory in bytes, time in ms.
fn resources_json(r: &crate::model::Resources) -> Value {
    let mut v = json!({});
    if let Some(c) = r.cpus {
        v["cpus"] = json!(c);
    }
    if let Some(m) = r.mem {
        v["mem_bytes"] = json!(m);
    }
    if let Some(t) = r.time {
        v["time_ms"] = json!(t.as_millis() as u64);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_current_directory_then_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("sub/dir")).unwrap();
        assert_eq!(project_paths(&root, &root, "./out/a.txt"), ["out/a.txt"]);
        assert_eq!(
            project_paths(&root, &root.join("sub"), "x.txt"),
            ["sub/x.txt", "x.txt"]
        );
        assert_eq!(
            project_paths(&root, &root.join("sub/dir"), "../y"),
            ["sub/y"]
        );
        let abs = root.join("out/a.txt");
        assert_eq!(
            project_paths(&root, &root, abs.to_str().unwrap()),
            ["out/a.txt"]
        );
        assert!(project_paths(&root, &root, "/elsewhere/a").is_empty());
        assert!(project_paths(&root, &root, "../outside").is_empty());
    }
}
