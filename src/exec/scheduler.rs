//! The ready queue: pure bookkeeping of which selected instances may start.
//!
//! An instance is ready when every selected upstream has finished (whatever its outcome;
//! the executor decides between running, skipping and blocking). Ready instances come
//! out in topological rank order, so with one job the order is a function of the graph.

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
    ready: BinaryHeap<Reverse<(usize, usize)>>,
    rank: Vec<usize>,
    downstream: Vec<Vec<usize>>,
}

impl Scheduler {
    /// A scheduler over the `selected` instances.
    pub fn new(project: &Project, graph: &Graph, selected: &BTreeSet<usize>) -> Scheduler {
        let n = project.instances.len();
        let mut sel = vec![false; n];
        for &i in selected {
            sel[i] = true;
        }
        let mut waiting_on = vec![0; n];
        let mut ready = BinaryHeap::new();
        for &i in selected {
            waiting_on[i] = project.instances[i]
                .deps
                .iter()
                .filter(|d| sel[d.upstream])
                .count();
            if waiting_on[i] == 0 {
                ready.push(Reverse((graph.rank[i], i)));
            }
        }
        Scheduler {
            waiting_on,
            selected: sel,
            popped: vec![false; n],
            finished: vec![false; n],
            ready,
            rank: graph.rank.clone(),
            downstream: graph.downstream.clone(),
        }
    }

    /// The next ready instance, lowest rank first.
    pub fn pop(&mut self) -> Option<usize> {
        let Reverse((_, i)) = self.ready.pop()?;
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
                    self.ready.push(Reverse((self.rank[j], j)));
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
