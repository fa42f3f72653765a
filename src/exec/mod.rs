//! Executing a plan: the build loop that starts each instance as soon as its upstreams
//! allow, decides at that moment (with the outputs its upstreams really produced) whether
//! it must run, and records results.
//!
//! Three concerns, three places:
//! - which instance or shard starts next, what is blocked and when the build stops
//!   (fail-fast, `-k`, interrupts, caps): the scheduling core, [`scheduling`], which knows
//!   nothing of processes;
//! - where a command runs: a [`backend::Backend`] (this machine's processes today);
//! - what a job is: its files prepared, its command run and retried, its outputs hashed,
//!   checked and cached ([`job`]), for whole instances ([`instance`]) and shards
//!   ([`shards::lifecycle`]).
//!
//! This module holds the loop that joins them and what a build records.

mod backend;
mod cluster;
pub mod depfile;
mod instance;
mod job;
pub mod priority;
pub mod runner;
pub mod scheduler;
mod scheduling;
pub mod schema;
pub mod shards;
pub mod signal;
pub mod slurm;
pub mod undeclared;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::cache::Cache;
use crate::events::{Counts, EventKind, EventLog, FailureKind, ShardRef};
use crate::fs::{Beneath, Digest, PathDigest};
use crate::model::{ExecutorKind, ExecutorRef, Instance};
use crate::plan::{KeyParts, PlanEntry, Success};
use crate::snapshot::{InputGuard, Snapshot};
use crate::store::{
    DigestRow, DurationRecord, Layout, OutputRecord, ResultUpdate, ShardRecord, Store,
};
use backend::{Backend, LocalBackend};
use cluster::SlurmBackend;
use depfile::{DepfilePlan, DepfileRead};
pub use runner::{Exit, Job, ProcessRunner, Runner};
use scheduling::{Core, End, Start};
use shards::lifecycle::Sharded;

/// Receives (instance, line) for every line a command prints (`-v`).
pub type Stream = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Options of one build.
#[derive(Clone)]
pub struct ExecOptions {
    /// Parallel jobs.
    pub jobs: usize,
    /// Keep building what is not blocked after a failure.
    pub keep_going: bool,
    /// The run id.
    pub run_id: String,
    /// Where command output goes as it is printed, besides the log (`-v`).
    pub stream: Option<Stream>,
    /// The cache (None with `--no-cache`).
    pub cache: Option<Arc<Cache>>,
    /// `--executor NAME`: where every selected instance runs, whatever its phase says.
    pub executor: Option<String>,
    /// A seed that shuffles which ready instance or shard starts first (`orch verify`
    /// perturbs schedules with it); None keeps the critical-path order.
    pub shuffle: Option<u64>,
}

/// What a build did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// By outcome.
    pub counts: Counts,
    /// Failed instances.
    pub failed: Vec<String>,
    /// Blocked instances.
    pub blocked: Vec<String>,
    /// Stopped by a signal.
    pub interrupted: bool,
}

/// How an instance ended in this run.
#[derive(Clone, Debug)]
enum Outcome {
    Succeeded(BTreeMap<String, Digest>),
    Failed,
    Blocked,
}

/// A unit of work on the pool.
#[derive(Clone, Copy, Debug)]
enum Work {
    /// A whole instance.
    Whole(usize),
    /// Shard `.1` of instance `.0`.
    Shard(usize, usize),
}

/// What a worker sends back.
enum Msg {
    /// An attempt failed; the worker waits `delay` and tries again.
    Retrying {
        work: Work,
        attempt: u32,
        attempts: u32,
        delay: Duration,
        failure: Failure,
    },
    /// An attempt starts now: a further one, or on a remote backend the first, once
    /// submitted.
    Attempt {
        work: Work,
        attempt: u32,
        command: String,
        /// The cluster's id for the job.
        job_id: Option<String>,
    },
    /// The job ended, for good.
    Done(Done),
}

/// How a job ended after all its attempts.
struct Done {
    work: Work,
    outputs: Vec<(String, Result<PathDigest, std::io::Error>)>,
    failure: Option<Failure>,
    duration: Duration,
    /// Inputs that changed while it ran (then nothing is recorded or cached).
    changed: Vec<String>,
    /// What its depfile listed, and the digest-cache rows of files hashed for it.
    depfile: DepfileRead,
}

/// Gets a job's files ready before each attempt.
type Prepare = Box<dyn Fn() -> Result<(), String> + Send>;

/// Where a job's result goes after a success: the cache, the key, the declared outputs
/// (path, is a directory).
type StoreAfter = (Arc<Cache>, Digest, Vec<(String, bool)>);

/// What a worker needs beyond the job itself.
struct JobPlan {
    /// Where to store the result after a success: the cache, the key, the outputs.
    store: Option<StoreAfter>,
    prepare: Prepare,
    has_run: bool,
    outputs: Vec<String>,
    retry: Option<crate::model::Retry>,
    schemas: Vec<(String, String)>,
    /// The inputs to re-check once the command succeeded.
    guard: InputGuard,
    /// The depfile to read once the command succeeded.
    depfile: Option<DepfilePlan>,
    /// The sidecars to write once the command succeeded, for outputs with `meta = true`.
    meta: Option<(Arc<Beneath>, crate::model::meta::Provenance)>,
}

/// A started whole instance's key, kept until its command finishes.
struct Started {
    parts: KeyParts,
    key: Digest,
}

/// A failure to report: kind, exit code, signal, message.
type Failure = (FailureKind, Option<i32>, Option<i32>, String);

/// Writes that are flushed to the store in batches.
#[derive(Default)]
struct Pending {
    results: Vec<ResultUpdate>,
    outputs: Vec<OutputRecord>,
    digests: Vec<(String, Option<DigestRow>)>,
    shards: Vec<ShardRecord>,
    forget_shards: Vec<[u8; 32]>,
    durations: Vec<DurationRecord>,
    since: Option<Instant>,
}

impl Pending {
    fn len(&self) -> usize {
        // Durations ride along with the results they belong to, not counted apart, so
        // that recording them does not make batches smaller.
        self.results.len() + self.outputs.len() + self.digests.len() + self.shards.len()
    }

    fn flush(&mut self, store: &mut Store) {
        let r = store
            .write_results(&self.results)
            .and_then(|_| store.write_outputs(&self.outputs))
            .and_then(|_| store.write_digests(&self.digests))
            .and_then(|_| store.write_shard_results(&self.shards, &self.forget_shards))
            .and_then(|_| store.write_durations(&self.durations));
        if let Err(e) = r {
            // Lost records only mean work is redone next time; never that it is skipped.
            crate::say!("warning: could not record results in `.orch/state.db`: {e}");
        }
        *self = Pending::default();
    }
}

/// Runs the selected instances of `snap`.
#[allow(clippy::too_many_arguments)]
pub fn execute(
    snap: &Snapshot<'_>,
    plan: &BTreeMap<usize, PlanEntry>,
    selected: &BTreeSet<usize>,
    store: &mut Store,
    layout: &Layout,
    runner: Arc<dyn Runner>,
    events: &mut EventLog,
    opts: &ExecOptions,
) -> std::io::Result<Report> {
    let beneath = Arc::new(Beneath::open(&snap.project.root)?);
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let n = snap.project.instances.len();
    let priority = match opts.shuffle {
        // Random priorities still respect dependencies: the scheduler only orders what
        // is ready, so any of them is an order a real build could take.
        Some(seed) => {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..n).map(|_| rng.u64(..)).collect()
        }
        None => priority::for_build(snap.project, snap.graph, plan, selected, store, opts.jobs),
    };
    let (backends, backend_of) = backends(snap.project, selected, layout, opts, runner, tx)?;
    let core = Core::new(
        snap.project,
        snap.graph,
        selected,
        priority,
        backend_of,
        backends.iter().map(|b| b.capacity()).collect(),
        opts.keep_going,
    );
    let mut b = Build {
        snap,
        plan,
        store,
        layout,
        backends,
        events,
        opts,
        root: snap.project.root.clone(),
        beneath,
        rx,
        core,
        outcome: vec![None; n],
        from_record: vec![false; n],
        log_dir_made: false,
        whole: BTreeMap::new(),
        sharded: BTreeMap::new(),
        report: Report {
            counts: Counts {
                total: selected.len(),
                ..Counts::default()
            },
            ..Report::default()
        },
        pending: Pending::default(),
        planned_total: plan.values().filter(|e| e.stale).count(),
        done_planned: 0,
        started_at: Instant::now(),
        producers: None,
        workers: Workers::new(opts.jobs),
    };
    b.run();
    Ok(b.report)
}

/// Where a build's jobs run, by backend index.
type Backends = Vec<Box<dyn Backend>>;

/// The backends a build of `selected` needs (this machine's first, then one per declared
/// executor some instance runs on, in name order), and the backend of each instance.
fn backends(
    project: &crate::model::Project,
    selected: &BTreeSet<usize>,
    layout: &Layout,
    opts: &ExecOptions,
    runner: Arc<dyn Runner>,
    tx: crossbeam_channel::Sender<Msg>,
) -> std::io::Result<(Backends, Vec<usize>)> {
    let mut backends: Vec<Box<dyn Backend>> = vec![Box::new(LocalBackend::new(
        opts.jobs,
        runner,
        project.root.clone(),
        tx.clone(),
    )?)];
    let mut backend_of = vec![0; project.instances.len()];
    let mut used: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in selected {
        if let ExecutorRef::Declared(e) = project.executor_of(i, opts.executor.as_deref()) {
            used.entry(e.name.as_str()).or_default().push(i);
        }
    }
    for (name, instances) in used {
        let Some(executor) = project.executors.get(name) else {
            continue;
        };
        let b = backends.len();
        let backend: Box<dyn Backend> = match executor.kind {
            ExecutorKind::Slurm => Box::new(SlurmBackend::new(
                executor,
                project.root.clone(),
                layout.dir.clone(),
                opts.run_id.clone(),
                project
                    .instances
                    .iter()
                    .map(|i| i.resources.clone())
                    .collect(),
                tx.clone(),
            )),
        };
        backends.push(backend);
        for i in instances {
            backend_of[i] = b;
        }
    }
    Ok((backends, backend_of))
}

/// The selected instances the build will skip without an event, in `order`: planned up
/// to date with every upstream skipped the same way (the rule [`execute`] applies,
/// decided here in topological `order` before anything runs).
pub fn unlisted_up_to_date(
    project: &crate::model::Project,
    order: &[usize],
    plan: &BTreeMap<usize, PlanEntry>,
) -> Vec<usize> {
    let mut unlisted = vec![false; project.instances.len()];
    let mut out = Vec::new();
    for &i in order {
        unlisted[i] = plan.get(&i).is_some_and(|e| !e.stale)
            && project.instances[i]
                .deps
                .iter()
                .all(|d| unlisted[d.upstream]);
        if unlisted[i] {
            out.push(i);
        }
    }
    out
}

/// The state of one build.
struct Build<'a, 's> {
    snap: &'a Snapshot<'s>,
    plan: &'a BTreeMap<usize, PlanEntry>,
    store: &'a mut Store,
    layout: &'a Layout,
    /// Where jobs run; the first is this machine.
    backends: Vec<Box<dyn Backend>>,
    events: &'a mut EventLog,
    opts: &'a ExecOptions,
    root: PathBuf,
    /// The root, for every write and removal of an output.
    beneath: Arc<Beneath>,
    rx: Receiver<Msg>,
    core: Core,
    outcome: Vec<Option<Outcome>>,
    /// Instances whose outputs are exactly as recorded before this run (skipped as planned).
    from_record: Vec<bool>,
    /// `.orch/logs/RUN_ID/` exists: made before the first command, so a build that runs
    /// nothing leaves no logs folder.
    log_dir_made: bool,
    whole: BTreeMap<usize, Started>,
    sharded: BTreeMap<usize, Sharded>,
    report: Report,
    pending: Pending,
    planned_total: usize,
    done_planned: usize,
    started_at: Instant,
    /// Who declares which outputs, made when a depfile first lists a file.
    producers: Option<undeclared::Producers>,
    /// This machine's worker slots: which job holds which.
    workers: Workers,
}

/// This machine's worker slots, 0..`-j`: a local job takes the lowest free slot when it
/// starts and gives it back when it ends, so a timeline of the run has one row per
/// slot and no two jobs overlap on a row. With `-j 1` every job is on slot 0.
#[derive(Debug)]
struct Workers {
    free: BTreeSet<usize>,
    held: BTreeMap<(usize, Option<usize>), usize>,
}

impl Workers {
    fn new(slots: usize) -> Workers {
        Workers {
            free: (0..slots.max(1)).collect(),
            held: BTreeMap::new(),
        }
    }

    fn key(work: Work) -> (usize, Option<usize>) {
        match work {
            Work::Whole(i) => (i, None),
            Work::Shard(i, s) => (i, Some(s)),
        }
    }

    /// Gives `work` the lowest free slot (none when the scheduling core let more jobs
    /// start than there are slots, which it never does).
    fn take(&mut self, work: Work) {
        if let Some(slot) = self.free.pop_first() {
            self.held.insert(Workers::key(work), slot);
        }
    }

    /// The slot `work` holds.
    fn of(&self, work: Work) -> Option<usize> {
        self.held.get(&Workers::key(work)).copied()
    }

    /// `work` ended: its slot is free again.
    fn give_back(&mut self, work: Work) {
        if let Some(slot) = self.held.remove(&Workers::key(work)) {
            self.free.insert(slot);
        }
    }
}

impl Build<'_, '_> {
    /// How many jobs the backend of instance `i` runs at once.
    fn capacity_of(&self, i: usize) -> usize {
        self.backends[self.core.backend_of(i)].capacity()
    }

    fn name(&self, i: usize) -> &str {
        &self.snap.project.instances[i].name
    }

    fn run(&mut self) {
        loop {
            while !signal::interrupted() {
                match self.core.next() {
                    Some(Start::Instance(i)) => self.ready(i),
                    Some(Start::Shard(i, s)) => self.start_shard(i, s),
                    None => break,
                }
            }
            if signal::interrupted() && !self.report.interrupted {
                self.report.interrupted = true;
                self.core.interrupt();
                for b in &self.backends {
                    b.cancel_all();
                }
            }
            if self.core.running() == 0 {
                break;
            }
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Msg::Done(done)) => self.done(done),
                Ok(Msg::Retrying {
                    work,
                    attempt,
                    attempts,
                    delay,
                    failure,
                }) => self.retrying(work, attempt, attempts, delay, failure),
                Ok(Msg::Attempt {
                    work,
                    attempt,
                    command,
                    job_id,
                }) => self.attempt(work, attempt, command, job_id),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Sharded instances whose remaining shards never started.
        let left: Vec<usize> = self.sharded.keys().copied().collect();
        for i in left {
            self.finalize_sharded(i);
        }
        // Results still being stored are in place before the run ends (and its lock is
        // released); Ctrl-C meanwhile abandons them and the run is interrupted.
        if let Some(cache) = &self.opts.cache {
            cache.finish();
            if signal::interrupted() && !self.report.interrupted {
                self.report.interrupted = true;
            }
        }
        self.pending.flush(self.store);
        self.block_unstarted();
        let duration_ms = self.started_at.elapsed().as_millis() as u64;
        let r = &self.report;
        if r.counts.failed == 0 && r.counts.blocked == 0 && !r.interrupted {
            self.events.emit(
                None,
                EventKind::RunCompleted {
                    cache: self
                        .opts
                        .cache
                        .as_ref()
                        .map(|c| c.stats())
                        .unwrap_or_default(),
                    counts: r.counts,
                    duration_ms,
                },
            );
        } else {
            self.events.emit(
                None,
                EventKind::RunFailed {
                    cache: self
                        .opts
                        .cache
                        .as_ref()
                        .map(|c| c.stats())
                        .unwrap_or_default(),
                    counts: r.counts,
                    failed: r.failed.clone(),
                    blocked: r.blocked.clone(),
                    interrupted: r.interrupted,
                    duration_ms,
                },
            );
        }
        self.events.flush();
    }

    /// Hands a job to its backend. This machine's starts it at once, so its
    /// `instance_started` is written now; a remote one reports its first attempt once
    /// the cluster took the job ([`Msg::Attempt`], with the job's id).
    fn spawn(&mut self, work: Work, job: Job, plan: JobPlan) {
        let (i, shard) = match work {
            Work::Whole(i) => (i, false),
            Work::Shard(i, _) => (i, true),
        };
        self.core.started(i, shard);
        if self.remote_executor(i).is_none() {
            self.workers.take(work);
            self.attempt(work, 1, job.command.clone(), None);
        }
        let b = self.core.backend_of(i);
        self.backends[b].submit(work, job, plan);
    }

    /// The executor of instance `i` as events name it: None for this machine.
    fn remote_executor(&self, i: usize) -> Option<String> {
        let b = &self.backends[self.core.backend_of(i)];
        b.remote().then(|| b.name().to_owned())
    }

    /// `instance_started` for an attempt of a job.
    fn attempt(&mut self, work: Work, attempt: u32, command: String, job_id: Option<String>) {
        let i = match work {
            Work::Whole(i) | Work::Shard(i, _) => i,
        };
        let executor = self.remote_executor(i);
        let worker = self.workers.of(work);
        if let Some((name, shard)) = self.work_name(work) {
            self.events.emit(
                Some(&name),
                EventKind::InstanceStarted {
                    attempt,
                    command,
                    shard,
                    executor,
                    job_id,
                    worker,
                },
            );
        }
    }

    /// Instance `i` ended as [`Build::outcome`] says: instances waiting on it may start.
    fn finish(&mut self, i: usize) {
        let end = match self.outcome[i] {
            Some(Outcome::Succeeded(_)) => End::Succeeded,
            Some(Outcome::Failed) => End::Failed,
            Some(Outcome::Blocked) | None => End::Blocked,
        };
        self.core.end(i, end);
    }

    /// `-v`: the job's output lines, prefixed with its name.
    fn stream_for(&self, name: &str) -> Option<runner::LineSink> {
        let show = self.opts.stream.clone()?;
        let name = name.to_owned();
        Some(Arc::new(move |line: &str| show(&name, line)))
    }

    fn cwd(&self, inst: &Instance) -> PathBuf {
        if inst.cwd.is_empty() {
            self.root.clone()
        } else {
            self.root.join(&inst.cwd)
        }
    }

    /// The event name of a work item, and its shard.
    fn work_name(&self, work: Work) -> Option<(String, Option<ShardRef>)> {
        match work {
            Work::Whole(i) => Some((self.name(i).to_owned(), None)),
            Work::Shard(i, s) => self.sharded.get(&i).map(|sh| {
                let p = &sh.shards[s];
                (
                    format!("{}#{}", self.name(i), p.shard.index),
                    Some(ShardRef {
                        index: p.shard.index,
                        count: sh.shards.len(),
                        key: p.shard.key.clone(),
                    }),
                )
            }),
        }
    }

    fn retrying(
        &mut self,
        work: Work,
        attempt: u32,
        attempts: u32,
        delay: Duration,
        (kind, _, _, message): Failure,
    ) {
        let Some((name, shard)) = self.work_name(work) else {
            return;
        };
        self.events.emit(
            Some(&name),
            EventKind::InstanceRetrying {
                attempt,
                attempts,
                delay_ms: delay.as_millis() as u64,
                kind,
                message,
                shard,
            },
        );
    }

    /// Creates the run's logs folder once; a failure shows as the command's own (its log
    /// cannot be created).
    fn make_log_dir(&mut self) {
        if !self.log_dir_made {
            self.log_dir_made =
                std::fs::create_dir_all(self.layout.log_dir(&self.opts.run_id)).is_ok();
        }
    }

    /// Up to date: its recorded outputs stand.
    fn skip(&mut self, i: usize) {
        let outs = self.snap.records[i]
            .success
            .as_ref()
            .map(Success::output_digests)
            .unwrap_or_default();
        self.outcome[i] = Some(Outcome::Succeeded(outs));
        self.report.counts.up_to_date += 1;
        self.finish(i);
    }

    fn set_blocked(&mut self, i: usize) {
        self.outcome[i] = Some(Outcome::Blocked);
        self.report.counts.blocked += 1;
        self.report.blocked.push(self.name(i).to_owned());
        if self.plan.get(&i).is_some_and(|e| e.stale) {
            self.done_planned += 1;
        }
        self.finish(i);
    }

    fn log_rel(&self, name: &str) -> String {
        self.rel(&self.layout.log_file(&self.opts.run_id, name))
    }

    /// `path` relative to the project root, as events name it ("" outside the root).
    fn rel(&self, path: &std::path::Path) -> String {
        path.strip_prefix(&self.root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn progress(&mut self) {
        self.events.emit(
            None,
            EventKind::Progress {
                done: self.done_planned,
                total: self.planned_total.max(self.done_planned),
                running: self.core.running(),
            },
        );
    }

    fn maybe_flush(&mut self) {
        if self.pending.since.is_none() {
            self.pending.since = Some(Instant::now());
        }
        if self.pending.len() >= 256
            || self
                .pending
                .since
                .is_some_and(|t| t.elapsed() > Duration::from_secs(1))
        {
            self.pending.flush(self.store);
        }
    }

    fn done(&mut self, done: Done) {
        self.workers.give_back(done.work);
        match done.work {
            Work::Whole(i) => {
                self.core.job_ended(i, false);
                self.done_whole(i, done);
            }
            Work::Shard(i, s) => {
                self.core.job_ended(i, true);
                self.done_shard(i, s, done);
            }
        }
        self.maybe_flush();
    }

    /// The `instance_blocked` event of the core's verdict on an instance.
    fn blocked_event(&self, blocked: &scheduling::Blocked) -> EventKind {
        EventKind::InstanceBlocked {
            reason: blocked.reason,
            blocked_by: blocked
                .by
                .iter()
                .map(|&u| self.snap.project.instances[u].name.clone())
                .collect(),
            shard: None,
        }
    }

    /// Reports every selected instance that never started.
    fn block_unstarted(&mut self) {
        if self.report.interrupted {
            self.core.interrupt();
        }
        let project = self.snap.project;
        // What was planned up to date, with every upstream keeping its record, never had
        // to start: it is up to date, not blocked, when a failure or Ctrl-C stopped the
        // build before the scheduler reached it (the rule of `ready`, in topological order).
        for &i in &self.snap.order {
            let up_to_date = self.outcome[i].is_none()
                && self.plan.get(&i).is_some_and(|e| !e.stale)
                && project.instances[i]
                    .deps
                    .iter()
                    .all(|d| self.from_record[d.upstream]);
            if up_to_date {
                self.skip(i);
                self.from_record[i] = true;
            }
        }
        for (i, blocked) in self.core.block_unstarted() {
            let inst = &project.instances[i];
            let event = self.blocked_event(&blocked);
            self.events.emit(Some(&inst.name), event);
            self.outcome[i] = Some(Outcome::Blocked);
            self.report.counts.blocked += 1;
            self.report.blocked.push(inst.name.clone());
        }
    }
}
