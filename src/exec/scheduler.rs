//! The ready queue: pure bookkeeping of which selected instances may start.
//!
//! An instance is ready when every selected upstream has finished (whatever its outcome;
//! the executor decides between running, skipping and blocking). Ready instances come
//! out highest priority first (the longest expected path below them, see
//! [`super::priority`]), ties in topological rank order; with no priorities (one job)
//! the order is the rank order alone, a function of the graph.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use crate::graph::Graph;
use crate::model::Project;

/// Tracks unfinished upstreams of each selected instance.
#[derive(Debug)]
pub struct Scheduler {
    waiting_on: Vec<usize>,
    selected: Vec<bool>,
    popped: Vec<bool>,
    finished: Vec<bool>,
    /// Ready instances as (priority, reversed rank, instance): a max-heap.
    ready: BinaryHeap<(u64, Reverse<usize>, usize)>,
    rank: Vec<usize>,
    priority: Vec<u64>,
    downstream: Vec<Vec<usize>>,
}

impl Scheduler {
    /// A scheduler over the `selected` instances; `priority` is indexed by instance (an
    /// empty one, or missing entries, count as 0).
    pub fn new(
        project: &Project,
        graph: &Graph,
        selected: &BTreeSet<usize>,
        priority: Vec<u64>,
    ) -> Scheduler {
        let n = project.instances.len();
        let mut sel = vec![false; n];
        for &i in selected {
            sel[i] = true;
        }
        let mut waiting_on = vec![0; n];
        let mut ready = BinaryHeap::new();
        let prio = |i: usize| priority.get(i).copied().unwrap_or(0);
        for &i in selected {
            waiting_on[i] = project.instances[i]
                .deps
                .iter()
                .filter(|d| sel[d.upstream])
                .count();
            if waiting_on[i] == 0 {
                ready.push((prio(i), Reverse(graph.rank[i]), i));
            }
        }
        Scheduler {
            waiting_on,
            selected: sel,
            popped: vec![false; n],
            finished: vec![false; n],
            ready,
            rank: graph.rank.clone(),
            priority,
            downstream: graph.downstream.clone(),
        }
    }

    /// The next ready instance: highest priority first, then lowest rank.
    pub fn pop(&mut self) -> Option<usize> {
        let (_, _, i) = self.ready.pop()?;
        self.popped[i] = true;
        Some(i)
    }

    /// The next ready instance for which `can_start` holds, highest priority first; those
    /// passed over stay ready.
    pub fn pop_where(&mut self, can_start: impl Fn(usize) -> bool) -> Option<usize> {
        let mut aside = Vec::new();
        let mut found = None;
        while let Some(entry) = self.ready.pop() {
            if can_start(entry.2) {
                found = Some(entry.2);
                break;
            }
            aside.push(entry);
        }
        self.ready.extend(aside);
        let i = found?;
        self.popped[i] = true;
        Some(i)
    }

    /// Marks `i` finished, making downstream instances ready when all their upstreams are.
    pub fn finish(&mut self, i: usize) {
        // Finishing twice must not count downstream waits twice.
        if std::mem::replace(&mut self.finished[i], true) {
            return;
        }
        for &j in &self.downstream[i] {
            if self.selected[j] {
                self.waiting_on[j] -= 1;
                if self.waiting_on[j] == 0 {
                    let p = self.priority.get(j).copied().unwrap_or(0);
                    self.ready.push((p, Reverse(self.rank[j]), j));
                }
            }
        }
    }

    /// Every selected instance never popped, in rank order.
    pub fn unstarted(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.selected.len())
            .filter(|&i| self.selected[i] && !self.popped[i])
            .collect();
        v.sort_by_key(|&i| self.rank[i]);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::priority;
    use crate::{graph, model};

    /// Short `q*` phases declared before a chain `head → slow`; every phase is stale.
    const CHAIN: &str = r#"
[phase.q1]
run = "true"
[phase.q2]
run = "true"
[phase.q3]
run = "true"
[phase.head]
run = "true"
[phase.slow]
run = "sleep 1"
needs = ["head"]
"#;

    fn load(text: &str) -> Result<(tempfile::TempDir, Project, Graph), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("Orchfile.toml"), text)?;
        let raw = crate::orchfile::load(&dir.path().join("Orchfile.toml"))
            .map_err(|e| format!("{e:?}"))?;
        let project = model::validate(raw).map_err(|e| format!("{e:?}"))?;
        let graph = graph::build(&project).map_err(|e| format!("{e:?}"))?;
        Ok((dir, project, graph))
    }

    /// Pops everything, finishing each instance as soon as it is popped (one job).
    fn drain(s: &mut Scheduler) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(i) = s.pop() {
            out.push(i);
            s.finish(i);
        }
        out
    }

    fn names(p: &Project, order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| p.instances[i].name.clone()).collect()
    }

    #[test]
    fn without_priorities_ready_instances_come_in_rank_order()
    -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, p, g) = load(CHAIN)?;
        let all: BTreeSet<usize> = (0..p.instances.len()).collect();
        let mut s = Scheduler::new(&p, &g, &all, Vec::new());
        let order = drain(&mut s);
        let mut by_rank = order.clone();
        by_rank.sort_by_key(|&i| g.rank[i]);
        assert_eq!(order, by_rank);
        Ok(())
    }

    #[test]
    fn the_head_of_the_longest_recorded_path_comes_first() -> Result<(), Box<dyn std::error::Error>>
    {
        let (_dir, p, g) = load(CHAIN)?;
        let all: BTreeSet<usize> = (0..p.instances.len()).collect();
        let recorded = |i: usize| {
            Some(if p.instances[i].name == "slow" {
                1000
            } else {
                5
            })
        };
        let w = priority::expected(p.instances.len(), &all, &|_| true, &recorded);
        let mut s = Scheduler::new(&p, &g, &all, priority::critical_path(&g, &all, &w));
        // Two jobs: the first two pops start together.
        let first = s.pop().ok_or("nothing ready")?;
        assert_eq!(p.instances[first].name, "head");
        let second = s.pop().ok_or("nothing ready")?;
        // `slow` waits for `head`; the short ones follow in rank order.
        s.finish(first);
        s.finish(second);
        let mut order = vec![first, second];
        order.extend(drain(&mut s));
        assert_eq!(names(&p, &order)[..3], ["head", "q1", "slow"]);
        Ok(())
    }

    #[test]
    fn with_no_history_a_longer_chain_by_count_comes_first()
    -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, p, g) = load(CHAIN)?;
        let all: BTreeSet<usize> = (0..p.instances.len()).collect();
        let w = priority::expected(p.instances.len(), &all, &|_| true, &|_| None);
        let mut s = Scheduler::new(&p, &g, &all, priority::critical_path(&g, &all, &w));
        assert_eq!(s.pop().map(|i| p.instances[i].name.as_str()), Some("head"));
        Ok(())
    }

    #[test]
    fn equal_priorities_keep_the_rank_order() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, p, g) = load(CHAIN)?;
        let all: BTreeSet<usize> = (0..p.instances.len()).collect();
        let mut plain = Scheduler::new(&p, &g, &all, Vec::new());
        let mut flat = Scheduler::new(&p, &g, &all, vec![7; p.instances.len()]);
        assert_eq!(drain(&mut plain), drain(&mut flat));
        Ok(())
    }
}
