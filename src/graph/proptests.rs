//! Property tests of the instance graph, target closures and the ready queue, over random
//! DAGs of phases written as Orchfile text and loaded the way the CLI loads them
//! (`orchfile::load` → `model::validate` → `graph::build`).
//!
//! A random project has phases `0..n`; phase `k` depends on a random subset of phases
//! below `k`, each edge either `needs` or `after`, and some phases have matrix axes
//! (`lang` ⊆ {de, en, fr}, `os` ⊆ {linux, mac}) so instance edges are paired on shared
//! axes or gathered. Phase names get a random letter prefix, so name order (the
//! tie-break) is unrelated to dependency direction.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;

use crate::exec::scheduler::Scheduler;
use crate::graph::{self, Graph};
use crate::model::{Dep, Project};

const LANGS: &[&str] = &["de", "en", "fr"];
const OSES: &[&str] = &["linux", "mac"];
const PREFIXES: &[&str] = &["a", "b", "m", "x", "z_"];

/// One phase of a random project.
#[derive(Clone, Debug)]
struct PhaseSpec {
    name: String,
    /// Hard dependencies (indices of lower phases).
    needs: Vec<usize>,
    /// Soft dependencies (indices of lower phases, disjoint from `needs`).
    after: Vec<usize>,
    /// Matrix axes and their values.
    axes: BTreeMap<&'static str, Vec<&'static str>>,
    /// Whether the phase has a `run` command (else it only groups dependencies).
    run: bool,
}

/// The values of `all` picked by the bits of `mask` (never empty).
fn pick(all: &[&'static str], mask: u8) -> Vec<&'static str> {
    let v: Vec<&'static str> = all
        .iter()
        .enumerate()
        .filter(|(b, _)| mask & (1 << b) != 0)
        .map(|(_, s)| *s)
        .collect();
    if v.is_empty() { vec![all[0]] } else { v }
}

type RawPhase = (usize, Vec<(Index, bool)>, Option<u8>, Option<u8>, bool);

fn raw_phase() -> impl Strategy<Value = RawPhase> {
    (
        0..PREFIXES.len(),
        prop::collection::vec((any::<Index>(), any::<bool>()), 0..5),
        prop_oneof![3 => Just(None), 2 => (1u8..8).prop_map(Some)],
        prop_oneof![4 => Just(None), 1 => (1u8..4).prop_map(Some)],
        prop::bool::weighted(0.9),
    )
}

fn to_specs(raws: Vec<RawPhase>) -> Vec<PhaseSpec> {
    raws.into_iter()
        .enumerate()
        .map(|(k, (prefix, deps, lang, os, run))| {
            let mut needs = Vec::new();
            let mut after = Vec::new();
            if k > 0 {
                for (ix, hard) in deps {
                    let up = ix.index(k);
                    if needs.contains(&up) || after.contains(&up) {
                        continue;
                    }
                    if hard {
                        needs.push(up);
                    } else {
                        after.push(up);
                    }
                }
            }
            let mut axes = BTreeMap::new();
            if let Some(m) = lang {
                axes.insert("lang", pick(LANGS, m));
            }
            if let Some(m) = os {
                axes.insert("os", pick(OSES, m));
            }
            PhaseSpec {
                name: format!("{}{k}", PREFIXES[prefix]),
                needs,
                after,
                axes,
                run,
            }
        })
        .collect()
}

fn dag(max_phases: usize) -> impl Strategy<Value = Vec<PhaseSpec>> {
    prop::collection::vec(raw_phase(), 1..max_phases).prop_map(to_specs)
}

/// A random DAG and a permutation of its phases (for writing them in another order).
fn dag_and_shuffle(max_phases: usize) -> impl Strategy<Value = (Vec<PhaseSpec>, Vec<usize>)> {
    dag(max_phases).prop_flat_map(|specs| {
        let n = specs.len();
        (Just(specs), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
    })
}

fn quoted(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let v: Vec<String> = items
        .into_iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect();
    format!("[{}]", v.join(", "))
}

/// The Orchfile text of `specs`, phases written in the order `perm`; with `reverse`, each
/// dependency list is written backwards (neither may change the project).
fn orchfile(specs: &[PhaseSpec], perm: &[usize], reverse: bool) -> String {
    let mut s = String::from("[orch]\nformat = 1\n");
    for &k in perm {
        let p = &specs[k];
        s.push_str(&format!("\n[phase.{}]\n", p.name));
        if p.run {
            s.push_str("run = \"echo {phase}\"\n");
        }
        for (key, list) in [("needs", &p.needs), ("after", &p.after)] {
            if list.is_empty() {
                continue;
            }
            let mut names: Vec<&str> = list.iter().map(|&u| specs[u].name.as_str()).collect();
            if reverse {
                names.reverse();
            }
            s.push_str(&format!("{key} = {}\n", quoted(names)));
        }
        if !p.axes.is_empty() {
            let axes: Vec<String> = p
                .axes
                .iter()
                .map(|(a, vs)| format!("{a} = {}", quoted(vs)))
                .collect();
            s.push_str(&format!("matrix = {{ {} }}\n", axes.join(", ")));
        }
    }
    s
}

/// Loads, validates and builds the graph of an Orchfile text written into `dir`.
fn load_text(dir: &Path, text: &str) -> Result<(Project, Graph), TestCaseError> {
    let path = dir.join(crate::orchfile::ORCHFILE);
    std::fs::write(&path, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let fail = |errors: Vec<crate::orchfile::ConfigError>| {
        TestCaseError::fail(format!("{errors:?}\n--- Orchfile ---\n{text}"))
    };
    let raw = crate::orchfile::load(&path).map_err(|f| fail(f.errors))?;
    let project = crate::model::validate(raw).map_err(|f| fail(f.errors))?;
    let graph = graph::build(&project).map_err(fail)?;
    Ok((project, graph))
}

fn load_specs(specs: &[PhaseSpec]) -> Result<(Project, Graph), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let perm: Vec<usize> = (0..specs.len()).collect();
    load_text(dir.path(), &orchfile(specs, &perm, false))
}

/// Every combination of a phase's axis values.
fn combos(axes: &BTreeMap<&'static str, Vec<&'static str>>) -> Vec<BTreeMap<String, String>> {
    let mut out = vec![BTreeMap::new()];
    for (a, vs) in axes {
        out = out
            .into_iter()
            .flat_map(|m| {
                vs.iter().map(move |v| {
                    let mut m2 = m.clone();
                    m2.insert((*a).to_owned(), (*v).to_owned());
                    m2
                })
            })
            .collect();
    }
    out
}

fn instance_name(phase: &str, m: &BTreeMap<String, String>) -> String {
    if m.is_empty() {
        return phase.to_owned();
    }
    let parts: Vec<String> = m.iter().map(|(a, v)| format!("{a}={v}")).collect();
    format!("{phase}[{}]", parts.join(","))
}

/// The instance names of `ids`.
fn names(project: &Project, ids: impl IntoIterator<Item = usize>) -> Vec<String> {
    ids.into_iter()
        .map(|i| project.instances[i].name.clone())
        .collect()
}

/// The selected instances, from a mode and random picks: 0 = everything, 1 = the
/// picked targets with their upstream closure, 2 = the picked instances alone (not
/// closed under dependencies).
fn selection(project: &Project, mode: u8, picks: &[Index]) -> BTreeSet<usize> {
    let n = project.instances.len();
    let picked: BTreeSet<usize> = picks.iter().map(|ix| ix.index(n)).collect();
    match mode {
        0 => (0..n).collect(),
        1 => graph::with_upstream(project, &picked),
        _ => picked,
    }
}

/// Drives a [`Scheduler`] the way the executor does, with a simulated executor: at most
/// `jobs` instances run at once, and `choices` decide which running instance finishes
/// next. After `stop_after` finishes (if given), nothing new is started, as after a
/// failure without `-k`. Returns the pop order and the scheduler.
#[allow(clippy::too_many_arguments)]
fn simulate(
    project: &Project,
    graph: &Graph,
    selected: &BTreeSet<usize>,
    priority: Vec<u64>,
    jobs: usize,
    choices: &[Index],
    stop_after: Option<usize>,
) -> Result<(Vec<usize>, Scheduler), TestCaseError> {
    let n = project.instances.len();
    let mut sched = Scheduler::new(project, graph, selected, priority);
    let mut finished = vec![false; n];
    let mut popped = vec![false; n];
    let mut running: Vec<usize> = Vec::new();
    let mut pops = Vec::new();
    let mut finishes = 0usize;
    loop {
        let stopped = stop_after.is_some_and(|s| finishes >= s);
        while !stopped && running.len() < jobs {
            let Some(i) = sched.pop() else { break };
            prop_assert!(i < n, "popped an out-of-range instance {}", i);
            prop_assert!(
                selected.contains(&i),
                "popped unselected instance `{}`",
                project.instances[i].name
            );
            prop_assert!(!popped[i], "popped `{}` twice", project.instances[i].name);
            for d in &project.instances[i].deps {
                if selected.contains(&d.upstream) {
                    prop_assert!(
                        finished[d.upstream],
                        "popped `{}` before its selected upstream `{}` finished",
                        project.instances[i].name,
                        project.instances[d.upstream].name
                    );
                }
            }
            popped[i] = true;
            pops.push(i);
            running.push(i);
        }
        if running.is_empty() {
            break;
        }
        let k = choices
            .get(finishes)
            .map_or(0, |ix| ix.index(running.len()));
        let i = running.remove(k);
        finished[i] = true;
        finishes += 1;
        sched.finish(i);
    }
    Ok((pops, sched))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// (a) `order` is a permutation of all instances and `rank` its inverse; (b) every
    /// dependency comes before its dependant; `downstream` is exactly the reverse of the
    /// dependency edges, sorted; and the order is the one Kahn's algorithm gives when it
    /// always takes the ready instance with the smallest name.
    #[test]
    fn order_is_a_topological_permutation(specs in dag(40)) {
        let (project, graph) = load_specs(&specs)?;
        let n = project.instances.len();
        prop_assert_eq!(graph.order.len(), n);
        prop_assert_eq!(graph.rank.len(), n);
        prop_assert_eq!(graph.downstream.len(), n);
        let mut seen = vec![false; n];
        for (pos, &i) in graph.order.iter().enumerate() {
            prop_assert!(i < n);
            prop_assert!(!seen[i], "instance {} twice in the order", i);
            seen[i] = true;
            prop_assert_eq!(graph.rank[i], pos);
        }
        for (i, inst) in project.instances.iter().enumerate() {
            for d in &inst.deps {
                prop_assert!(
                    graph.rank[d.upstream] < graph.rank[i],
                    "`{}` (rank {}) is not before its dependant `{}` (rank {})",
                    project.instances[d.upstream].name, graph.rank[d.upstream],
                    inst.name, graph.rank[i]
                );
            }
        }
        let mut expected_down = vec![Vec::new(); n];
        for (i, inst) in project.instances.iter().enumerate() {
            for d in &inst.deps {
                expected_down[d.upstream].push(i);
            }
        }
        for d in &mut expected_down {
            d.sort_unstable();
        }
        prop_assert_eq!(&graph.downstream, &expected_down);
        // Instances are sorted by name, so the smallest ready index is the smallest name.
        let mut placed = vec![false; n];
        for &i in &graph.order {
            let smallest_ready = (0..n)
                .find(|&j| !placed[j] && project.instances[j].deps.iter().all(|d| placed[d.upstream]));
            prop_assert_eq!(Some(i), smallest_ready);
            placed[i] = true;
        }
    }

    /// Instance edges follow the phase edges: an instance depends on exactly those
    /// instances of its `needs`/`after` phases whose matrix values agree with its own on
    /// every axis they share (axes it lacks are gathered), hard for `needs`.
    #[test]
    fn instance_edges_pair_on_shared_axes(specs in dag(25)) {
        let (project, _) = load_specs(&specs)?;
        let expected_count: usize = specs.iter().map(|p| combos(&p.axes).len()).sum();
        prop_assert_eq!(project.instances.len(), expected_count);
        for p in &specs {
            for m in combos(&p.axes) {
                let me = instance_name(&p.name, &m);
                let i = project.instance_index(&me);
                prop_assert!(i.is_some(), "no instance `{}`", me);
                let inst = &project.instances[i.unwrap_or_default()];
                let mut expected: BTreeSet<(String, bool)> = BTreeSet::new();
                for (ups, hard) in [(&p.needs, true), (&p.after, false)] {
                    for &u in ups {
                        for um in combos(&specs[u].axes) {
                            if um.iter().all(|(a, v)| m.get(a).is_none_or(|mine| mine == v)) {
                                expected.insert((instance_name(&specs[u].name, &um), hard));
                            }
                        }
                    }
                }
                let actual: BTreeSet<(String, bool)> = inst
                    .deps
                    .iter()
                    .map(|d| (project.instances[d.upstream].name.clone(), d.hard))
                    .collect();
                prop_assert_eq!(actual, expected, "deps of `{}`", me);
                let mut sorted = inst.deps.clone();
                sorted.sort();
                prop_assert_eq!(&sorted, &inst.deps, "deps of `{}` are not sorted", me);
            }
        }
    }

    /// (c) The order is deterministic: building twice gives the same order, and so does
    /// loading the same phases written in another order with dependency lists reversed.
    #[test]
    fn order_is_deterministic((specs, perm) in dag_and_shuffle(40)) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let identity: Vec<usize> = (0..specs.len()).collect();
        let (p1, g1) = load_text(dir.path(), &orchfile(&specs, &identity, false))?;
        let g1b = graph::build(&p1).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(&g1.order, &g1b.order);
        prop_assert_eq!(&g1.rank, &g1b.rank);
        prop_assert_eq!(&g1.downstream, &g1b.downstream);
        let (p2, g2) = load_text(dir.path(), &orchfile(&specs, &perm, true))?;
        prop_assert_eq!(names(&p1, g1.order.iter().copied()), names(&p2, g2.order.iter().copied()));
        let deps = |p: &Project| -> Vec<Vec<Dep>> { p.instances.iter().map(|i| i.deps.clone()).collect() };
        prop_assert_eq!(deps(&p1), deps(&p2));
    }

    /// (d) A scheduler driven by a simulated executor that finishes running instances in
    /// a random order, under any priorities, never pops an instance before all its selected upstreams finished,
    /// pops every selected instance exactly once and nothing else; with one job the pops
    /// follow the graph order.
    #[test]
    fn scheduler_pops_each_selected_instance_once_after_its_upstreams(
        specs in dag(40),
        mode in 0u8..3,
        picks in prop::collection::vec(any::<Index>(), 1..6),
        jobs in 1usize..9,
        choices in prop::collection::vec(any::<Index>(), 0..300),
        weights in prop::collection::vec(0u64..1000, 0..40),
    ) {
        let (project, graph) = load_specs(&specs)?;
        let selected = selection(&project, mode, &picks);
        // Priorities from history apply with more than one job only, as in a build.
        let priority = if jobs > 1 {
            crate::exec::priority::critical_path(&graph, &selected, &weights)
        } else {
            Vec::new()
        };
        let (pops, sched) =
            simulate(&project, &graph, &selected, priority, jobs, &choices, None)?;
        let popped: BTreeSet<usize> = pops.iter().copied().collect();
        prop_assert_eq!(popped.len(), pops.len());
        prop_assert_eq!(&popped, &selected, "not every selected instance was popped");
        prop_assert!(sched.unstarted().is_empty());
        if jobs == 1 {
            let expected: Vec<usize> =
                graph.order.iter().copied().filter(|i| selected.contains(i)).collect();
            prop_assert_eq!(names(&project, pops), names(&project, expected));
        }
    }

    /// After a stop (nothing new started once `stop_after` instances finished), the pops
    /// so far still respect dependencies, and `unstarted` is exactly the selected
    /// instances never popped, in rank order.
    #[test]
    fn scheduler_unstarted_after_a_stop(
        specs in dag(40),
        mode in 0u8..3,
        picks in prop::collection::vec(any::<Index>(), 1..6),
        jobs in 1usize..9,
        choices in prop::collection::vec(any::<Index>(), 0..300),
        stop_after in 0usize..40,
    ) {
        let (project, graph) = load_specs(&specs)?;
        let selected = selection(&project, mode, &picks);
        let (pops, sched) =
            simulate(&project, &graph, &selected, Vec::new(), jobs, &choices, Some(stop_after))?;
        let popped: BTreeSet<usize> = pops.iter().copied().collect();
        let mut expected: Vec<usize> = selected.difference(&popped).copied().collect();
        expected.sort_by_key(|&i| graph.rank[i]);
        prop_assert_eq!(names(&project, sched.unstarted()), names(&project, expected));
    }

    /// `with_upstream` is the dependency closure of the targets: it contains them, every
    /// dependency (hard or soft) of every selected instance is selected, and every
    /// selected instance is a target or an upstream of one. `with_downstream` is the
    /// same in the other direction.
    #[test]
    fn closures_are_closed_and_minimal(
        specs in dag(40),
        picks in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let (project, graph) = load_specs(&specs)?;
        let n = project.instances.len();
        let targets: BTreeSet<usize> = picks.iter().map(|ix| ix.index(n)).collect();

        let up = graph::with_upstream(&project, &targets);
        prop_assert!(up.is_superset(&targets));
        for &i in &up {
            for d in &project.instances[i].deps {
                prop_assert!(
                    up.contains(&d.upstream),
                    "`{}` is selected but its dependency `{}` is not",
                    project.instances[i].name, project.instances[d.upstream].name
                );
            }
        }
        // Minimal: walking the graph in reverse rank order, an instance is needed iff it
        // is a target or a dependency of a needed instance.
        let mut needed = vec![false; n];
        for &i in graph.order.iter().rev() {
            if targets.contains(&i) {
                needed[i] = true;
            }
            if needed[i] {
                for d in &project.instances[i].deps {
                    needed[d.upstream] = true;
                }
            }
        }
        let oracle: BTreeSet<usize> = (0..n).filter(|&i| needed[i]).collect();
        prop_assert_eq!(&up, &oracle);

        let down = graph::with_downstream(&graph, &targets);
        let mut reached = vec![false; n];
        for &i in &graph.order {
            reached[i] = targets.contains(&i)
                || project.instances[i].deps.iter().any(|d| reached[d.upstream]);
        }
        let oracle: BTreeSet<usize> = (0..n).filter(|&i| reached[i]).collect();
        prop_assert_eq!(&down, &oracle);
    }

    /// Resolving `phase` targets selects exactly that phase's instances, and
    /// `phase[axis=value]` exactly those with that value.
    #[test]
    fn phase_targets_select_their_instances(
        specs in dag(20),
        pick_phase in any::<Index>(),
        pick_value in any::<Index>(),
    ) {
        let (project, _) = load_specs(&specs)?;
        let p = &specs[pick_phase.index(specs.len())];
        let all = graph::resolve_targets(&project, std::slice::from_ref(&p.name))
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let expected: BTreeSet<String> =
            combos(&p.axes).iter().map(|m| instance_name(&p.name, m)).collect();
        prop_assert_eq!(names(&project, all).into_iter().collect::<BTreeSet<_>>(), expected);
        if let Some((axis, values)) = p.axes.iter().next() {
            let v = values[pick_value.index(values.len())];
            let t = format!("{}[{axis}={v}]", p.name);
            let some = graph::resolve_targets(&project, &[t])
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let expected: BTreeSet<String> = combos(&p.axes)
                .iter()
                .filter(|m| m.get(*axis).map(String::as_str) == Some(v))
                .map(|m| instance_name(&p.name, m))
                .collect();
            prop_assert_eq!(names(&project, some).into_iter().collect::<BTreeSet<_>>(), expected);
        }
    }
}
