//! Which ready work starts first when more is ready than `-j` allows: the instance on the
//! longest expected path to the end of the build (its critical path, weighted by the
//! durations recorded for each instance's last successful run).
//!
//! Pure functions over the graph and the recorded durations, but [`for_build`], which
//! reads those from the store; the scheduler only compares the numbers they return.
//! Durations are milliseconds.
//!
//! With one job nothing is ordered by history (see [`for_build`]): which instance starts
//! first then changes no wall time, and the event sequence of a `-j 1` build stays a
//! function of the project and its state, never of how long commands took last time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::graph::Graph;
use crate::model::Project;
use crate::plan::PlanEntry;
use crate::store::Store;

/// The weight of an instance with no recorded duration when nothing is recorded at all:
/// every instance then counts one, so the longest chain by count goes first.
const UNIT_MS: u64 = 1;

/// Recorded durations are compared in steps of this many milliseconds: differences below
/// it are noise (a busy machine stretches a `true` to a hundred milliseconds), and counting
/// them would reorder short commands from one build to the next for no gain.
pub const QUANTUM_MS: u64 = 250;

/// A recorded duration in [`QUANTUM_MS`] steps, rounded, at least one.
pub fn quantize(ms: u64) -> u64 {
    (ms.saturating_add(QUANTUM_MS / 2) / QUANTUM_MS).max(1)
}

/// The priority of every instance (0 for those not selected), or an empty vector when
/// priorities do not apply: one job, or too little stale work for any to wait.
pub fn for_build(
    project: &Project,
    graph: &Graph,
    plan: &BTreeMap<usize, PlanEntry>,
    selected: &BTreeSet<usize>,
    store: &Store,
    jobs: usize,
) -> Vec<u64> {
    let stale = plan.values().filter(|e| e.stale).count();
    if jobs <= 1 || stale <= jobs {
        return Vec::new();
    }
    // No history is no reason to fail a build: every instance then weighs the same.
    let recorded = store.durations().unwrap_or_default();
    let weight = expected(
        project.instances.len(),
        selected,
        &|i| plan.get(&i).is_none_or(|e| e.stale),
        &|i| {
            recorded
                .get(&project.instances[i].name)
                .copied()
                .map(quantize)
        },
    );
    critical_path(graph, selected, &weight)
}

/// The expected duration of each of `n` instances: 0 when not selected or not `stale`
/// (the plan finds it up to date: it is skipped, unless an upstream's outputs change),
/// its `recorded` duration when it has one, else the median of the recorded ones among
/// the stale selected instances (or [`UNIT_MS`] when there are none). Never below
/// [`UNIT_MS`] when stale, so a chain of instantaneous commands still outranks one.
pub fn expected(
    n: usize,
    selected: &BTreeSet<usize>,
    stale: &dyn Fn(usize) -> bool,
    recorded: &dyn Fn(usize) -> Option<u64>,
) -> Vec<u64> {
    let run: Vec<usize> = selected.iter().copied().filter(|&i| stale(i)).collect();
    let mut known: Vec<u64> = run.iter().filter_map(|&i| recorded(i)).collect();
    let default = median(&mut known).unwrap_or(UNIT_MS);
    let mut weight = vec![0; n];
    for i in run {
        weight[i] = recorded(i).unwrap_or(default).max(UNIT_MS);
    }
    weight
}

/// For each selected instance, its own weight plus the heaviest path through its selected
/// downstream instances (hard and soft edges alike: both make them wait). One pass over
/// the graph in reverse topological order.
pub fn critical_path(graph: &Graph, selected: &BTreeSet<usize>, weight: &[u64]) -> Vec<u64> {
    let n = graph.rank.len();
    let mut sel = vec![false; n];
    for &i in selected {
        sel[i] = true;
    }
    let mut prio = vec![0u64; n];
    for &i in graph.order.iter().rev().filter(|&&i| sel[i]) {
        let below = graph.downstream[i]
            .iter()
            .filter(|&&j| sel[j])
            .map(|&j| prio[j])
            .max()
            .unwrap_or(0);
        prio[i] = weight.get(i).copied().unwrap_or(0).saturating_add(below);
    }
    prio
}

/// Orders the waiting shards of one instance longest recorded first (ties and unknown
/// durations, which count as the median of the known ones, keep their index order), so
/// that under a `parallel` cap the long ones do not start last.
pub fn order_shards(waiting: &mut VecDeque<usize>, recorded: &dyn Fn(usize) -> Option<u64>) {
    let mut known: Vec<u64> = waiting.iter().filter_map(|&s| recorded(s)).collect();
    let Some(default) = median(&mut known) else {
        return;
    };
    let mut v: Vec<(u64, usize)> = waiting
        .iter()
        .map(|&s| (recorded(s).unwrap_or(default), s))
        .collect();
    v.sort_by_key(|&(ms, s)| (std::cmp::Reverse(ms), s));
    *waiting = v.into_iter().map(|(_, s)| s).collect();
}

/// The median (the lower of the two middle values), or None for no values.
fn median(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[(values.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations_weigh_the_same() {
        assert_eq!(quantize(0), 1);
        assert_eq!(quantize(3), 1);
        assert_eq!(quantize(180), 1);
        assert_eq!(quantize(300), 1);
        assert_eq!(quantize(1000), 4);
        assert_eq!(quantize(u64::MAX), u64::MAX / QUANTUM_MS);
    }

    /// A graph from edges (upstream, downstream) over `n` instances, ordered by index.
    fn graph(n: usize, edges: &[(usize, usize)]) -> Graph {
        let mut downstream = vec![Vec::new(); n];
        for &(u, d) in edges {
            downstream[u].push(d);
        }
        Graph {
            order: (0..n).collect(),
            rank: (0..n).collect(),
            downstream,
        }
    }

    fn all(n: usize) -> BTreeSet<usize> {
        (0..n).collect()
    }

    #[test]
    fn a_path_weighs_its_heaviest_branch() {
        // 0 → 1 → 3 and 0 → 2 → 3; 2 is slow.
        let g = graph(4, &[(0, 1), (0, 2), (1, 3), (2, 3)]);
        let p = critical_path(&g, &all(4), &[1, 1, 10, 2]);
        assert_eq!(p, vec![13, 3, 12, 2]);
    }

    #[test]
    fn unselected_instances_do_not_lengthen_a_path() {
        let g = graph(3, &[(0, 1), (1, 2)]);
        let p = critical_path(&g, &BTreeSet::from([0, 1]), &[1, 1, 100]);
        assert_eq!(p, vec![2, 1, 0]);
    }

    #[test]
    fn unknown_durations_count_as_the_median_and_fresh_instances_as_nothing() {
        let ms = [Some(10), None, Some(30), Some(20), None, Some(0)];
        let w = expected(7, &BTreeSet::from([0, 1, 2, 3, 4, 5]), &|i| i != 4, &|i| {
            ms.get(i).copied().flatten()
        });
        // Known among the stale: 0, 10, 20, 30; median 10. A recorded 0 still weighs 1.
        assert_eq!(w, vec![10, 10, 30, 20, 0, 1, 0]);
    }

    #[test]
    fn with_no_history_every_stale_instance_weighs_one_unit() {
        let w = expected(3, &all(3), &|_| true, &|_| None);
        assert_eq!(w, vec![UNIT_MS; 3]);
        // So the longest chain by count goes first.
        let g = graph(3, &[(1, 2)]);
        assert_eq!(critical_path(&g, &all(3), &w), vec![1, 2, 1]);
    }

    #[test]
    fn median_is_the_lower_middle() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5]), Some(5));
        assert_eq!(median(&mut [9, 1, 5, 7]), Some(5));
        assert_eq!(median(&mut [9, 1, 5]), Some(5));
    }

    #[test]
    fn shards_go_longest_first_with_ties_in_index_order() {
        let mut w: VecDeque<usize> = (0..5).collect();
        let ms = [Some(1), Some(50), None, Some(50), Some(3)];
        order_shards(&mut w, &|s| ms[s]);
        // The unknown shard 2 counts as the median, 3.
        assert_eq!(w, VecDeque::from([1, 3, 2, 4, 0]));
    }

    #[test]
    fn shards_with_no_history_keep_their_order() {
        let mut w: VecDeque<usize> = VecDeque::from([0, 2, 4]);
        order_shards(&mut w, &|_| None);
        assert_eq!(w, VecDeque::from([0, 2, 4]));
    }
}
