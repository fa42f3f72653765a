//! The critical path of a run: the chain of instances, each depending on the one
//! before, whose durations add up to the most. No amount of parallelism makes the run
//! shorter than it; making one of its instances faster may.

use std::collections::{BTreeMap, BTreeSet};

/// The longest chain by total weight through the graph whose nodes are the keys of
/// `weight` and whose edges are `upstreams` (node → the nodes it depends on), first
/// node first. Ties go to the smaller name, so the answer is the same on every call.
/// Nodes on a cycle (a graph no valid Orchfile gives) are left out; upstreams that are
/// not nodes are ignored.
pub fn longest_chain(
    weight: &BTreeMap<String, u64>,
    upstreams: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    // Each node's upstreams that are nodes themselves.
    let ups: BTreeMap<&str, BTreeSet<&str>> = weight
        .keys()
        .map(|n| {
            let us = upstreams
                .get(n)
                .into_iter()
                .flatten()
                .filter(|u| weight.contains_key(*u) && *u != n)
                .map(String::as_str)
                .collect();
            (n.as_str(), us)
        })
        .collect();
    let mut downstream: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (n, us) in &ups {
        for u in us {
            downstream.entry(u).or_default().push(n);
        }
    }
    // Kahn's algorithm over the nodes, in name order for ties.
    let mut pending: BTreeMap<&str, usize> = ups.iter().map(|(n, us)| (*n, us.len())).collect();
    let mut ready: BTreeSet<&str> = pending
        .iter()
        .filter(|(_, k)| **k == 0)
        .map(|(n, _)| *n)
        .collect();
    // Best total ending at each node, and the upstream it came through.
    let mut best: BTreeMap<&str, (u64, Option<&str>)> = BTreeMap::new();
    while let Some(n) = ready.pop_first() {
        let mut from: Option<(u64, &str)> = None;
        for &u in ups.get(n).into_iter().flatten() {
            if let Some(&(total, _)) = best.get(u)
                && from.is_none_or(|(t, name)| total > t || (total == t && u < name))
            {
                from = Some((total, u));
            }
        }
        let own = weight.get(n).copied().unwrap_or(0);
        let total = own.saturating_add(from.map_or(0, |(t, _)| t));
        best.insert(n, (total, from.map(|(_, u)| u)));
        for d in downstream.get(n).into_iter().flatten() {
            if let Some(k) = pending.get_mut(d) {
                *k = k.saturating_sub(1);
                if *k == 0 {
                    ready.insert(d);
                }
            }
        }
    }
    let Some((&end, _)) = best
        .iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then_with(|| b.0.cmp(a.0)))
    else {
        return Vec::new();
    };
    let mut chain = vec![end.to_owned()];
    let mut at = end;
    while let Some(&(_, Some(u))) = best.get(at) {
        chain.push(u.to_owned());
        at = u;
    }
    chain.reverse();
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(
        nodes: &[(&str, u64)],
        edges: &[(&str, &str)],
    ) -> (BTreeMap<String, u64>, BTreeMap<String, BTreeSet<String>>) {
        let w = nodes.iter().map(|(n, d)| (n.to_string(), *d)).collect();
        let mut up: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (n, u) in edges {
            up.entry(n.to_string()).or_default().insert(u.to_string());
        }
        (w, up)
    }

    #[test]
    fn the_heaviest_chain_wins_not_the_longest() {
        // a → b → d and a → c → d; c is slow, so the path goes through c.
        let (w, up) = graph(
            &[("a", 10), ("b", 5), ("c", 50), ("d", 1), ("e", 30)],
            &[("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")],
        );
        assert_eq!(longest_chain(&w, &up), ["a", "c", "d"]);
    }

    #[test]
    fn a_lone_slow_instance_can_be_the_whole_path() {
        let (w, up) = graph(&[("a", 1), ("b", 1), ("slow", 100)], &[("b", "a")]);
        assert_eq!(longest_chain(&w, &up), ["slow"]);
    }

    #[test]
    fn zero_weight_nodes_carry_the_chain_through() {
        // b was up to date (0 ms) but still links a to c.
        let (w, up) = graph(
            &[("a", 10), ("b", 0), ("c", 10), ("x", 15)],
            &[("b", "a"), ("c", "b")],
        );
        assert_eq!(longest_chain(&w, &up), ["a", "b", "c"]);
    }

    #[test]
    fn ties_go_to_the_smaller_name_and_cycles_are_left_out() {
        let (w, up) = graph(&[("b", 5), ("a", 5)], &[]);
        assert_eq!(longest_chain(&w, &up), ["a"]);
        let (w, up) = graph(
            &[("p", 100), ("q", 100), ("r", 1), ("z", 2)],
            &[("p", "q"), ("q", "p"), ("r", "ghost")],
        );
        assert_eq!(longest_chain(&w, &up), ["z"]);
        assert!(longest_chain(&BTreeMap::new(), &BTreeMap::new()).is_empty());
    }
}
