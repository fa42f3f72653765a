//! The scheduling core: which instance or shard starts next, which instances cannot run
//! and why, and when a build stops starting things. It knows nothing of commands,
//! processes, keys or files: the build asks it what to start, tells it what started and
//! how each instance ended, and does the work.
//!
//! The rules it owns:
//! - an instance is ready once every selected upstream has ended ([`Scheduler`]); ready
//!   instances start highest priority first;
//! - waiting shards of sharded instances start before new instances, round-robin over
//!   those instances, each under its own cap;
//! - a backend never runs more jobs than its capacity (`-j` on this machine, `max_jobs` on
//!   a cluster); an instance whose backend is full waits without holding up the others;
//! - a hard upstream that failed or was blocked blocks an instance; a soft one does not;
//! - fail-fast: after a failure nothing new starts, unless `-k`, with which everything
//!   not blocked still does; after an interrupt nothing new starts at all;
//! - what never started ends blocked: by its failed or blocked upstreams, else because
//!   the build stopped after a failure or was interrupted.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::scheduler::Scheduler;
use crate::events::BlockReason;
use crate::graph::Graph;
use crate::model::Project;

#[cfg(test)]
mod tests;

/// How an instance ended in this build, as far as scheduling goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// Its outputs stand (run, restored or up to date).
    Succeeded,
    /// It failed.
    Failed,
    /// It could not run.
    Blocked,
}

/// What to start next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Start {
    /// An instance whose upstreams have all ended: the build decides what to do with it.
    Instance(usize),
    /// Shard `.1` of sharded instance `.0`.
    Shard(usize, usize),
}

/// Why an instance cannot run, and the upstreams in its way (sorted by rank).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Blocked {
    /// The reason events give.
    pub reason: BlockReason,
    /// The hard upstreams that failed or were blocked.
    pub by: Vec<usize>,
}

/// The shards of one sharded instance still to start.
#[derive(Debug)]
struct ShardQueue {
    waiting: VecDeque<usize>,
    running: usize,
    cap: usize,
}

/// The scheduling state of one build.
#[derive(Debug)]
pub(super) struct Core {
    sched: Scheduler,
    /// Each instance's upstreams as (upstream, hard), in declaration order.
    deps: Vec<Vec<(usize, bool)>>,
    ended: Vec<Option<End>>,
    /// Which backend each instance's jobs run on.
    backend: Vec<usize>,
    capacity: Vec<usize>,
    running: Vec<usize>,
    shards: BTreeMap<usize, ShardQueue>,
    /// Sharded instances with shards waiting, in round-robin order.
    rr: VecDeque<usize>,
    keep_going: bool,
    stopped: bool,
    interrupted: bool,
}

impl Core {
    /// The core of a build of `selected`, starting ready instances by `priority` (see
    /// [`Scheduler::new`]); instance `i`'s jobs run on backend `backend[i]` (0 when
    /// missing), which runs at most `capacity[b]` at once.
    pub(super) fn new(
        project: &Project,
        graph: &Graph,
        selected: &BTreeSet<usize>,
        priority: Vec<u64>,
        backend: Vec<usize>,
        capacity: Vec<usize>,
        keep_going: bool,
    ) -> Core {
        let n = project.instances.len();
        let capacity: Vec<usize> = if capacity.is_empty() {
            vec![1]
        } else {
            capacity.into_iter().map(|c| c.max(1)).collect()
        };
        let backend = (0..n)
            .map(|i| {
                backend
                    .get(i)
                    .copied()
                    .filter(|&b| b < capacity.len())
                    .unwrap_or(0)
            })
            .collect();
        Core {
            sched: Scheduler::new(project, graph, selected, priority),
            deps: project
                .instances
                .iter()
                .map(|inst| inst.deps.iter().map(|d| (d.upstream, d.hard)).collect())
                .collect(),
            ended: vec![None; n],
            backend,
            running: vec![0; capacity.len()],
            capacity,
            shards: BTreeMap::new(),
            rr: VecDeque::new(),
            keep_going,
            stopped: false,
            interrupted: false,
        }
    }

    /// The next thing to start, or None when nothing may start now (everything ready is
    /// waiting for a full backend, nothing is ready, or the build stopped).
    pub(super) fn next(&mut self) -> Option<Start> {
        if self.stopped {
            return None;
        }
        if let Some(s) = self.next_shard() {
            return Some(s);
        }
        let (backend, running, capacity) = (&self.backend, &self.running, &self.capacity);
        if running.iter().zip(capacity).all(|(r, c)| r >= c) {
            return None;
        }
        self.sched
            .pop_where(|i| running[backend[i]] < capacity[backend[i]])
            .map(Start::Instance)
    }

    /// The next waiting shard, round-robin over sharded instances under their caps.
    fn next_shard(&mut self) -> Option<Start> {
        for _ in 0..self.rr.len() {
            let i = self.rr.pop_front()?;
            let b = self.backend[i];
            let Some(q) = self.shards.get_mut(&i) else {
                continue;
            };
            if q.waiting.is_empty() {
                continue;
            }
            if q.running >= q.cap || self.running[b] >= self.capacity[b] {
                self.rr.push_back(i);
                continue;
            }
            let s = q.waiting.pop_front()?;
            if !q.waiting.is_empty() {
                self.rr.push_back(i);
            }
            return Some(Start::Shard(i, s));
        }
        None
    }

    /// A job of instance `i` (a shard's when `shard`) was handed to its backend.
    pub(super) fn started(&mut self, i: usize, shard: bool) {
        self.running[self.backend[i]] += 1;
        if shard && let Some(q) = self.shards.get_mut(&i) {
            q.running += 1;
        }
    }

    /// A job of instance `i` (a shard's when `shard`) ended, whatever its outcome.
    pub(super) fn job_ended(&mut self, i: usize, shard: bool) {
        let b = self.backend[i];
        self.running[b] = self.running[b].saturating_sub(1);
        if shard && let Some(q) = self.shards.get_mut(&i) {
            q.running = q.running.saturating_sub(1);
        }
    }

    /// Jobs running, on every backend.
    pub(super) fn running(&self) -> usize {
        self.running.iter().sum()
    }

    /// The backend instance `i`'s jobs run on.
    pub(super) fn backend_of(&self, i: usize) -> usize {
        self.backend[i]
    }

    /// Instance `i` ended: instances waiting on it may become ready, and a failure stops
    /// the build unless `-k`. Ending twice counts once.
    pub(super) fn end(&mut self, i: usize, end: End) {
        if self.ended[i].is_some() {
            return;
        }
        self.ended[i] = Some(end);
        self.shards.remove(&i);
        if end == End::Failed {
            self.failed();
        }
        self.sched.finish(i);
    }

    /// How instance `i` ended, if it has.
    #[cfg(test)]
    pub(super) fn ended(&self, i: usize) -> Option<End> {
        self.ended[i]
    }

    /// Something failed (an instance, or one shard of an instance still running): unless
    /// `-k`, nothing new starts.
    pub(super) fn failed(&mut self) {
        if !self.keep_going {
            self.stopped = true;
        }
    }

    /// The build was interrupted: nothing new starts.
    pub(super) fn interrupt(&mut self) {
        self.stopped = true;
        self.interrupted = true;
    }

    /// Why ready instance `i` cannot run, if a hard upstream failed or was blocked: those
    /// that failed first, then those that were blocked, each in declaration order.
    pub(super) fn blocked(&self, i: usize) -> Option<Blocked> {
        let (mut by, reason) = self.hard_unmet(i)?;
        by.sort_by_key(|&u| self.ended[u] != Some(End::Failed));
        Some(Blocked { reason, by })
    }

    /// The hard upstreams of `i` that failed or were blocked, in declaration order, and
    /// the reason they give; None when there are none.
    fn hard_unmet(&self, i: usize) -> Option<(Vec<usize>, BlockReason)> {
        let by: Vec<usize> = self.deps[i]
            .iter()
            .filter(|(u, hard)| *hard && matches!(self.ended[*u], Some(End::Failed | End::Blocked)))
            .map(|&(u, _)| u)
            .collect();
        if by.is_empty() {
            return None;
        }
        let reason = if by.iter().any(|&u| self.ended[u] == Some(End::Failed)) {
            BlockReason::UpstreamFailed
        } else {
            BlockReason::UpstreamBlocked
        };
        Some((by, reason))
    }

    /// The soft upstreams of `i` that did not succeed, with how they ended.
    pub(super) fn soft_unmet(&self, i: usize) -> Vec<(usize, End)> {
        self.deps[i]
            .iter()
            .filter(|(_, hard)| !hard)
            .filter_map(|&(u, _)| match self.ended[u] {
                Some(e @ (End::Failed | End::Blocked)) => Some((u, e)),
                _ => None,
            })
            .collect()
    }

    /// Queues the shards of instance `i` that must run (in start order), at most `cap`
    /// at once.
    pub(super) fn queue_shards(&mut self, i: usize, waiting: VecDeque<usize>, cap: usize) {
        let has_waiting = !waiting.is_empty();
        self.shards.insert(
            i,
            ShardQueue {
                waiting,
                running: 0,
                cap: cap.max(1),
            },
        );
        if has_waiting {
            self.rr.push_back(i);
        }
    }

    /// Shards of `i` not started yet.
    pub(super) fn shards_waiting(&self, i: usize) -> usize {
        self.shards.get(&i).map_or(0, |q| q.waiting.len())
    }

    /// Whether sharded instance `i` has nothing running and nothing more will start: the
    /// last shard ended, or the build stopped.
    pub(super) fn shards_settled(&self, i: usize) -> bool {
        self.shards
            .get(&i)
            .is_none_or(|q| q.running == 0 && (q.waiting.is_empty() || self.stopped))
    }

    /// Ends blocked every selected instance the build was never told to start, in rank
    /// order, and says why each is: its failed or blocked hard upstreams (in declaration
    /// order; an upstream blocked here counts, being earlier in rank), else the
    /// interrupt or the failure that stopped the build.
    pub(super) fn block_unstarted(&mut self) -> Vec<(usize, Blocked)> {
        let mut out = Vec::new();
        for i in self.sched.unstarted() {
            if self.ended[i].is_some() {
                continue;
            }
            let (by, reason) = self.hard_unmet(i).unwrap_or((
                Vec::new(),
                if self.interrupted {
                    BlockReason::Interrupted
                } else {
                    BlockReason::StoppedAfterFailure
                },
            ));
            self.ended[i] = Some(End::Blocked);
            out.push((i, Blocked { reason, by }));
        }
        out
    }
}
