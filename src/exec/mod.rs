//! Executing a plan: the build loop that starts each instance as soon as its upstreams
//! allow, on a rayon pool of `-j` threads, decides at that moment (with the outputs its
//! upstreams really produced) whether it must run, and records results.
//!
//! Work items are whole instances and shards. Shards of sharded instances are started
//! round-robin across those instances (each under its `parallel` cap) before new ready
//! instances, so several sharded instances progress together; `-j` caps everything.
//! With more than one job, ready instances start longest expected path first and an
//! instance's shards longest recorded first ([`priority`]).
//!
//! Fail-fast by default: after a failure nothing new starts, running commands finish,
//! and instances never started are reported blocked (`stopped_after_failure`).

pub mod depfile;
pub mod priority;
pub mod runner;
pub mod scheduler;
pub mod schema;
pub mod shards;
pub mod signal;
pub mod slurm;
pub mod undeclared;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::cache::{Cache, Source, Staged, StoreRequest};
use crate::events::shard_name::key_suffix;
use crate::events::{BlockReason, Counts, EventKind, EventLog, FailureKind, ShardRef};
use crate::fs::{self, Beneath, Digest, PathDigest};
use crate::model::Instance;
use crate::plan::{
    self, Discovered, Freshness, KeyParts, Manifest, OutputMeta, PlanEntry, Success,
};
use crate::shard::Merge;
use crate::snapshot::{InputGuard, Snapshot, cached_to_row};
use crate::store::{
    DigestRow, DurationRecord, Layout, OutputRecord, ResultUpdate, ShardRecord, Store,
    SuccessRecord,
};
use depfile::{DepfilePlan, DepfileRead};
pub use runner::{Exit, Job, ProcessRunner, Runner};
use scheduler::Scheduler;
use shards::{PlannedShard, ShardResult};

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
    /// A further attempt starts now.
    Attempt {
        work: Work,
        attempt: u32,
        command: String,
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
}

/// A started whole instance's key, kept until its command finishes.
struct Started {
    parts: KeyParts,
    key: Digest,
}

/// A failure to report: kind, exit code, signal, message.
type Failure = (FailureKind, Option<i32>, Option<i32>, String);

/// A sharded instance in progress.
struct Sharded {
    parts: KeyParts,
    key: Digest,
    shards: Vec<PlannedShard>,
    /// Shards not started yet, in order.
    waiting: VecDeque<usize>,
    running: usize,
    cap: usize,
    results: Vec<Option<ShardResult>>,
    /// The failure of the failed shard with the lowest index (so the instance's message
    /// does not depend on which shard ended first), its log, and its slot in `shards`.
    failure: Option<(Failure, String, usize)>,
    started_at: Instant,
    /// Inputs of shards that changed while they ran: the instance is not recorded.
    unrecorded: Vec<String>,
    /// What no shard's depfile records as discovered: the key's inputs but the shard
    /// sources, and the declared outputs.
    depfile_skip: Arc<BTreeSet<String>>,
    /// The stats the instance's recorded discovered inputs were hashed from.
    depfile_known: Arc<BTreeMap<String, fs::CachedDigest>>,
}

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
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .thread_name(|i| format!("orch-job-{i}"))
        .build()
        .map_err(std::io::Error::other)?;
    let beneath = Arc::new(Beneath::open(&snap.project.root)?);
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let n = snap.project.instances.len();
    let priority = priority::for_build(snap.project, snap.graph, plan, selected, store, opts.jobs);
    let mut b = Build {
        snap,
        plan,
        store,
        layout,
        runner,
        events,
        opts,
        root: snap.project.root.clone(),
        beneath,
        pool,
        tx,
        rx,
        sched: Scheduler::new(snap.project, snap.graph, selected, priority),
        outcome: vec![None; n],
        from_record: vec![false; n],
        log_dir_made: false,
        running: 0,
        whole: BTreeMap::new(),
        sharded: BTreeMap::new(),
        rr: VecDeque::new(),
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
        stop: false,
        started_at: Instant::now(),
        producers: None,
    };
    b.run();
    Ok(b.report)
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
    runner: Arc<dyn Runner>,
    events: &'a mut EventLog,
    opts: &'a ExecOptions,
    root: PathBuf,
    /// The root, for every write and removal of an output.
    beneath: Arc<Beneath>,
    pool: rayon::ThreadPool,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    sched: Scheduler,
    outcome: Vec<Option<Outcome>>,
    /// Instances whose outputs are exactly as recorded before this run (skipped as planned).
    from_record: Vec<bool>,
    /// `.orch/logs/RUN_ID/` exists: made before the first command, so a build that runs
    /// nothing leaves no logs folder.
    log_dir_made: bool,
    /// Work items on the pool.
    running: usize,
    whole: BTreeMap<usize, Started>,
    sharded: BTreeMap<usize, Sharded>,
    /// Sharded instances with shards waiting, in round-robin order.
    rr: VecDeque<usize>,
    report: Report,
    pending: Pending,
    planned_total: usize,
    done_planned: usize,
    stop: bool,
    started_at: Instant,
    /// Who declares which outputs, made when a depfile first lists a file.
    producers: Option<undeclared::Producers>,
}

impl Build<'_, '_> {
    fn jobs(&self) -> usize {
        self.opts.jobs.max(1)
    }

    fn name(&self, i: usize) -> &str {
        &self.snap.project.instances[i].name
    }

    fn run(&mut self) {
        loop {
            while !self.stop && !signal::interrupted() && self.running < self.jobs() {
                if self.start_next_shard() {
                    continue;
                }
                let Some(i) = self.sched.pop() else { break };
                self.ready(i);
            }
            if signal::interrupted() && !self.report.interrupted {
                self.report.interrupted = true;
                self.stop = true;
                self.runner.interrupt_all();
            }
            if self.running == 0 {
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
                }) => {
                    if let Some((name, shard)) = self.work_name(work) {
                        self.events.emit(
                            Some(&name),
                            EventKind::InstanceStarted {
                                attempt,
                                command,
                                shard,
                            },
                        );
                    }
                }
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

    /// An instance whose upstreams have all finished: block, skip, run, or plan shards.
    fn ready(&mut self, i: usize) {
        let project = self.snap.project;
        let inst = &project.instances[i];
        let name = inst.name.as_str();
        // Hard upstreams that did not succeed block this instance.
        let mut failed_by = Vec::new();
        let mut blocked_by = Vec::new();
        for d in inst.deps.iter().filter(|d| d.hard) {
            match self.outcome[d.upstream] {
                Some(Outcome::Failed) => failed_by.push(project.instances[d.upstream].name.clone()),
                Some(Outcome::Blocked) => {
                    blocked_by.push(project.instances[d.upstream].name.clone())
                }
                _ => {}
            }
        }
        if !failed_by.is_empty() || !blocked_by.is_empty() {
            let reason = if failed_by.is_empty() {
                BlockReason::UpstreamBlocked
            } else {
                BlockReason::UpstreamFailed
            };
            failed_by.extend(blocked_by);
            self.events.emit(
                Some(name),
                EventKind::InstanceBlocked {
                    reason,
                    blocked_by: failed_by,
                    shard: None,
                },
            );
            self.set_blocked(i);
            return;
        }

        // Planned up to date and nothing upstream ran: the plan's key still holds. No
        // event: `plan_ready.up_to_date_unlisted` counted it (see [`unlisted_up_to_date`]),
        // so a no-op build does not write a line per instance.
        if let Some(e) = self.plan.get(&i)
            && !e.stale
            && inst.deps.iter().all(|d| self.from_record[d.upstream])
        {
            self.skip(i);
            self.from_record[i] = true;
            return;
        }

        for d in inst.deps.iter().filter(|d| !d.hard) {
            let status = match self.outcome[d.upstream] {
                Some(Outcome::Failed) => "failed",
                Some(Outcome::Blocked) => "blocked",
                _ => continue,
            };
            self.events.emit(
                Some(name),
                EventKind::SoftDependencyUnmet {
                    upstream: project.instances[d.upstream].name.clone(),
                    upstream_status: status,
                },
            );
        }

        // The real key, from what upstreams produced in this run.
        let (files, now) = match self.snap.current_inputs(i) {
            Ok(x) => x,
            Err(e) => {
                crate::say!("warning: {e}; using the inputs found when the build started");
                (self.snap.inputs[i].clone(), BTreeMap::new())
            }
        };
        let snap = self.snap;
        let digest_of = |p: &str| match now.get(p) {
            Some(d) => *d,
            None => snap.digest(p),
        };
        let outcome = &self.outcome;
        let upstream = |j: usize| match &outcome[j] {
            Some(Outcome::Succeeded(outs)) => Some(outs.clone()),
            _ => None,
        };
        let parts = snap.parts_with(i, &files, &upstream, &digest_of);
        let key = parts.action_key();
        let fresh = plan::evaluate(
            &parts,
            &key,
            &snap.records[i],
            &|p| snap.digest(p),
            snap.forced.contains(&i),
            inst.always,
        );
        let whys = match fresh {
            Freshness::Fresh => {
                let early_cutoff = self.plan.get(&i).is_some_and(|e| e.stale);
                self.events.emit(
                    Some(name),
                    EventKind::InstanceSkipped {
                        reason: "up_to_date",
                        action_key: key.to_hex(),
                        early_cutoff,
                    },
                );
                if early_cutoff {
                    self.done_planned += 1;
                }
                self.skip(i);
                return;
            }
            Freshness::Stale(whys) => whys,
        };
        self.events.emit(
            Some(name),
            EventKind::InstanceInvalidated {
                reasons: plan::reason::codes(&whys),
                details: whys,
            },
        );
        // An empty `{inputs}` is never what the command wants: `cat {inputs}` would read
        // stdin, `ar rcs lib.a {inputs}` would write an empty archive and succeed.
        if inst.uses_inputs() && parts.inputs.is_empty() {
            let patterns: Vec<String> = inst.inputs.iter().map(|p| format!("`{p}`")).collect();
            remove_outputs(&self.beneath, inst);
            self.done_planned += 1;
            self.fail(
                i,
                (
                    FailureKind::InvalidInput,
                    None,
                    None,
                    format!(
                        "no file matches its inputs ({}), so `{{inputs}}` would be empty; the command was not run",
                        patterns.join(", ")
                    ),
                ),
                String::new(),
                0,
                None,
            );
            self.sched.finish(i);
            return;
        }
        if self.try_restore(i, &parts, &key) {
            return;
        }
        if signal::interrupted() {
            // Interrupted during the cache lookup: nothing new starts.
            self.events.emit(
                Some(name),
                EventKind::InstanceBlocked {
                    reason: BlockReason::Interrupted,
                    blocked_by: Vec::new(),
                    shard: None,
                },
            );
            self.set_blocked(i);
            return;
        }
        let present: Vec<&str> = parts.inputs.keys().map(String::as_str).collect();
        if inst.shard.is_some() {
            self.events.emit(
                Some(name),
                EventKind::InstanceStarted {
                    attempt: 1,
                    command: parts.command.clone(),
                    shard: None,
                },
            );
            self.plan_shards(i, parts, key, &files, &digest_of);
            return;
        }
        self.make_log_dir();
        let job = Job {
            name: name.to_owned(),
            command: inst.command_line(&present, None).unwrap_or_default(),
            cwd: self.cwd(inst),
            env: job_env(inst, &self.opts.run_id, None),
            log: self.layout.log_file(&self.opts.run_id, name),
            timeout: inst.timeout,
            stream: self.stream_for(name),
        };
        self.events.emit(
            Some(name),
            EventKind::InstanceStarted {
                attempt: 1,
                command: job.command.clone(),
                shard: None,
            },
        );
        let guard = self.snap.input_guard(&parts);
        let depfile = inst.depfile_for(None).map(|path| {
            let mut skip: BTreeSet<String> = parts.inputs.keys().cloned().collect();
            skip.extend(inst.outputs.iter().map(|o| o.path.clone()));
            DepfilePlan {
                path,
                cwd: inst.cwd.clone(),
                skip: Arc::new(skip),
                own: Vec::new(),
                known: Arc::new(self.snap.discovered_entries(i)),
            }
        });
        self.whole.insert(i, Started { parts, key });
        let (root, declared) = (self.beneath.clone(), inst.outputs.clone());
        let dep_path = depfile.as_ref().map(|d| d.path.clone());
        let plan = JobPlan {
            store: self.cache_for(i).map(|c| {
                (
                    c,
                    key,
                    inst.outputs
                        .iter()
                        .map(|o| (o.path.clone(), o.dir))
                        .collect(),
                )
            }),
            prepare: Box::new(move || {
                prepare_outputs(&root, &declared)?;
                prepare_paths(&root, dep_path.as_slice())
            }),
            has_run: inst.run.is_some(),
            outputs: inst.outputs.iter().map(|o| o.path.clone()).collect(),
            retry: inst.retry.clone(),
            schemas: inst
                .outputs
                .iter()
                .filter_map(|o| o.schema.clone().map(|s| (o.path.clone(), s)))
                .collect(),
            guard,
            depfile,
        };
        self.spawn(Work::Whole(i), job, plan);
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

    /// Puts a job on the pool; the worker runs it and hashes its outputs.
    fn spawn(&mut self, work: Work, job: Job, w: JobPlan) {
        self.running += 1;
        let tx = self.tx.clone();
        let runner = Arc::clone(&self.runner);
        let root = self.root.clone();
        self.pool.spawn(move || {
            let started = Instant::now();
            let mut attempt = 1;
            loop {
                // Files the depfile lists that change after this moment were written
                // while the command ran.
                let started_ns = fs::now_ns();
                let exit = match (w.prepare)() {
                    Err(e) => Exit::Spawn(e),
                    Ok(()) if w.has_run => runner.run(&job),
                    Ok(()) => Exit::Success,
                };
                // With the cache on, outputs are copied into the store as they are
                // hashed, so storing them later reads nothing again.
                let (digests, staged) = match (&w.store, exit == Exit::Success) {
                    (_, false) => (Vec::new(), Staged::default()),
                    (Some((cache, _, _)), true) => cache.digest_outputs(&root, &w.outputs),
                    (None, true) => (
                        fs::digest_paths(&root, &w.outputs, |_| None),
                        Staged::default(),
                    ),
                };
                let outputs: Vec<(String, Result<PathDigest, std::io::Error>)> =
                    w.outputs.iter().cloned().zip(digests).collect();
                let mut read = DepfileRead::default();
                let failure = failure_of(&exit, &outputs)
                    .or_else(|| {
                        schema::check(&root, &w.schemas)
                            .map(|m| (FailureKind::Schema, None, None, m))
                    })
                    .or_else(|| {
                        let plan = w.depfile.as_ref()?;
                        match depfile::read(&root, plan, started_ns) {
                            Ok(r) => {
                                read = r;
                                None
                            }
                            Err(m) => Some((FailureKind::Depfile, None, None, m)),
                        }
                    });
                if failure.is_some() && w.has_run {
                    // A command that printed nothing has no log yet; a failure names one.
                    ensure_log(&job.log);
                }
                match (failure, &w.retry) {
                    (Some(f), Some(r)) if attempt < r.attempts && !signal::interrupted() => {
                        let delay = backoff(r, attempt);
                        let _ = tx.send(Msg::Retrying {
                            work,
                            attempt,
                            attempts: r.attempts,
                            delay,
                            failure: f,
                        });
                        // Earlier attempts' output is kept beside the last one's.
                        let _ = std::fs::rename(
                            &job.log,
                            job.log.with_extension(format!("attempt-{attempt}.log")),
                        );
                        wait_unless_interrupted(delay);
                        attempt += 1;
                        let _ = tx.send(Msg::Attempt {
                            work,
                            attempt,
                            command: job.command.clone(),
                        });
                    }
                    (failure, _) => {
                        // Before anything is cached: a result built from inputs that
                        // moved under the command matches no key.
                        let changed = match failure {
                            None => {
                                let mut c = w.guard.changed();
                                c.extend(read.changed.iter().cloned());
                                c.sort();
                                c.dedup();
                                c
                            }
                            Some(_) => Vec::new(),
                        };
                        if failure.is_none()
                            && changed.is_empty()
                            && let Some((cache, key, decl)) = &w.store
                        {
                            let digests = outputs
                                .iter()
                                .filter_map(|(p, r)| match r {
                                    Ok(PathDigest::Present { digest, .. }) => {
                                        Some((p.clone(), *digest))
                                    }
                                    _ => None,
                                })
                                .collect();
                            if let Err(m) = cache.store(StoreRequest {
                                name: job.name.clone(),
                                root: root.clone(),
                                key: *key,
                                outputs: decl.clone(),
                                digests,
                                discovered: read.discovered.clone(),
                                duration_ms: started.elapsed().as_millis() as u64,
                                staged,
                            }) {
                                crate::say!("warning: {}: not cached: {m}", job.name);
                            }
                        }
                        let _ = tx.send(Msg::Done(Done {
                            work,
                            outputs,
                            failure,
                            duration: started.elapsed(),
                            changed,
                            depfile: read,
                        }));
                        return;
                    }
                }
            }
        });
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
        self.sched.finish(i);
    }

    fn set_blocked(&mut self, i: usize) {
        self.outcome[i] = Some(Outcome::Blocked);
        self.report.counts.blocked += 1;
        self.report.blocked.push(self.name(i).to_owned());
        if self.plan.get(&i).is_some_and(|e| e.stale) {
            self.done_planned += 1;
        }
        self.sched.finish(i);
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
                running: self.running,
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
        self.running -= 1;
        match done.work {
            Work::Whole(i) => self.done_whole(i, done),
            Work::Shard(i, s) => self.done_shard(i, s, done),
        }
        self.maybe_flush();
    }

    fn done_whole(&mut self, i: usize, done: Done) {
        let Some(st) = self.whole.remove(&i) else {
            return;
        };
        let inst = &self.snap.project.instances[i];
        let name = inst.name.clone();
        let duration_ms = done.duration.as_millis() as u64;
        self.done_planned += 1;
        match done.failure.clone() {
            None => {
                let mut metas = BTreeMap::new();
                for (path, r) in done.outputs {
                    if let Ok(PathDigest::Present {
                        stat,
                        digest,
                        refreshed,
                    }) = r
                    {
                        metas.insert(
                            path.clone(),
                            OutputMeta {
                                digest,
                                size: if stat.is_dir { 0 } else { stat.size },
                            },
                        );
                        if let Some(c) = refreshed
                            && !stat.is_dir
                        {
                            self.pending.digests.push((path, Some(cached_to_row(&c))));
                        }
                    }
                }
                self.pending.digests.extend(done.depfile.rows);
                let project = self.snap.project;
                check_discovered(
                    &mut self.producers,
                    project,
                    i,
                    &name,
                    &done.depfile.discovered,
                );
                if done.changed.is_empty() {
                    let discovered = done.depfile.discovered;
                    let whole = BTreeMap::new();
                    self.succeed(
                        i,
                        st.parts,
                        st.key,
                        metas,
                        discovered,
                        duration_ms,
                        None,
                        whole,
                    );
                } else {
                    self.unrecorded(i, done.changed, st.key, metas, duration_ms);
                }
            }
            Some(f) if self.killed_by_us(&f) => {
                remove_outputs(&self.beneath, inst);
                self.events.emit(
                    Some(&name),
                    EventKind::InstanceBlocked {
                        reason: BlockReason::Interrupted,
                        blocked_by: Vec::new(),
                        shard: None,
                    },
                );
                self.outcome[i] = Some(Outcome::Blocked);
                self.report.counts.blocked += 1;
                self.report.blocked.push(name.clone());
            }
            Some(f) => {
                remove_outputs(&self.beneath, inst);
                let log = self.log_rel(&name);
                self.fail(i, f, log, duration_ms, None);
            }
        }
        self.progress();
        self.sched.finish(i);
    }

    /// Records a success and reports it. `lineage` holds what particular outputs were
    /// built from, when not from everything the instance read (`merge = "none"` shards).
    #[allow(clippy::too_many_arguments)]
    fn succeed(
        &mut self,
        i: usize,
        parts: KeyParts,
        key: Digest,
        metas: BTreeMap<String, OutputMeta>,
        discovered: Discovered,
        duration_ms: u64,
        cached: Option<(Source, u64, u64)>,
        lineage: BTreeMap<String, String>,
    ) {
        let name = self.name(i).to_owned();
        let now = fs::now_ns();
        let built_from = serde_json::json!({
            "inputs": parts.inputs,
            "upstream": parts.upstream,
            "discovered": discovered,
        })
        .to_string();
        for (path, meta) in &metas {
            let built_from = lineage.get(path).unwrap_or(&built_from);
            self.pending.outputs.push(OutputRecord {
                path: path.clone(),
                digest: meta.digest.0,
                size: meta.size,
                instance: name.clone(),
                action_key: key.0,
                run_id: self.opts.run_id.clone(),
                built_from: built_from.clone(),
                recorded_at_ns: now,
            });
        }
        let outputs: BTreeMap<String, Digest> =
            metas.iter().map(|(p, m)| (p.clone(), m.digest)).collect();
        let manifest = Manifest {
            parts,
            outputs: metas,
            discovered,
        };
        self.pending.results.push(ResultUpdate::Succeeded {
            instance: name.clone(),
            record: SuccessRecord {
                action_key: key.0,
                manifest: manifest.encode(),
                run_id: self.opts.run_id.clone(),
                finished_at_ns: now,
            },
        });
        let hex = outputs
            .iter()
            .map(|(p, d)| (p.clone(), d.to_hex()))
            .collect();
        if cached.is_none() {
            self.pending.durations.push(DurationRecord {
                instance: name.clone(),
                shard: String::new(),
                duration_ms,
                run_id: self.opts.run_id.clone(),
            });
        }
        let event = match cached {
            Some((source, bytes, saved_ms)) => {
                self.report.counts.cached += 1;
                EventKind::InstanceCached {
                    source: source.name(),
                    action_key: key.to_hex(),
                    outputs: hex,
                    bytes,
                    saved_ms,
                }
            }
            None => {
                self.report.counts.succeeded += 1;
                EventKind::InstanceCompleted {
                    action_key: key.to_hex(),
                    outputs: hex,
                    duration_ms,
                    shard: None,
                }
            }
        };
        self.events.emit(Some(&name), event);
        self.outcome[i] = Some(Outcome::Succeeded(outputs));
    }

    /// Completed, but an input changed while the command ran: its outputs serve this
    /// build's downstream instances, yet nothing is recorded or cached, so the next build
    /// runs it again.
    fn unrecorded(
        &mut self,
        i: usize,
        paths: Vec<String>,
        key: Digest,
        metas: BTreeMap<String, OutputMeta>,
        duration_ms: u64,
    ) {
        let name = self.name(i).to_owned();
        let outputs: BTreeMap<String, Digest> =
            metas.iter().map(|(p, m)| (p.clone(), m.digest)).collect();
        self.events.emit(
            Some(&name),
            EventKind::InputChangedDuringRun { paths, shard: None },
        );
        self.events.emit(
            Some(&name),
            EventKind::InstanceCompleted {
                action_key: key.to_hex(),
                outputs: outputs
                    .iter()
                    .map(|(p, d)| (p.clone(), d.to_hex()))
                    .collect(),
                duration_ms,
                shard: None,
            },
        );
        self.report.counts.succeeded += 1;
        self.outcome[i] = Some(Outcome::Succeeded(outputs));
    }

    /// The cache, when instance `i` may use it: not `cache = false`, `--force`, `always`.
    fn cache_for(&self, i: usize) -> Option<Arc<Cache>> {
        let inst = &self.snap.project.instances[i];
        (inst.cache && !inst.always && !self.snap.forced.contains(&i))
            .then(|| self.opts.cache.clone())
            .flatten()
    }

    /// Restores a stale instance's result from the cache when its key is there; true
    /// when it was restored (and recorded).
    fn try_restore(&mut self, i: usize, parts: &KeyParts, key: &Digest) -> bool {
        let Some(cache) = self.cache_for(i) else {
            return false;
        };
        let Some((entry, source)) = cache.lookup(key) else {
            return false;
        };
        // The key says nothing of the files the command turned out to read: the entry
        // stands only while each still holds what it was built from. Otherwise it is a
        // miss, and the run replaces it.
        if entry.discovered.keys().any(|p| !plan::is_discoverable(p))
            || !plan::discovered_whys(&entry.discovered, &|p| self.snap.digest_now(p)).is_empty()
        {
            return false;
        }
        let declared = crate::cache::Declared::of(&self.snap.project.instances[i]);
        match cache.restore(&self.beneath, key, &entry, source, &declared) {
            Ok(bytes) => {
                let lineage = self.restored_shard_lineage(i, parts);
                let metas = entry
                    .outputs
                    .iter()
                    .map(|(p, s)| {
                        (
                            p.clone(),
                            OutputMeta {
                                digest: s.digest(),
                                size: s.size(),
                            },
                        )
                    })
                    .collect();
                self.succeed(
                    i,
                    parts.clone(),
                    *key,
                    metas,
                    entry.discovered.clone(),
                    0,
                    Some((source, bytes, entry.duration_ms)),
                    lineage,
                );
                if self.plan.get(&i).is_some_and(|e| e.stale) {
                    self.done_planned += 1;
                }
                self.sched.finish(i);
                true
            }
            Err(m) => {
                crate::say!("warning: {}: {m}; running it instead", self.name(i));
                false
            }
        }
    }

    /// [`shard_lineage`] of a `merge = "none"` instance restored from the cache: its
    /// shards split again from the inputs its key was made of.
    fn restored_shard_lineage(&self, i: usize, parts: &KeyParts) -> BTreeMap<String, String> {
        let inst = &self.snap.project.instances[i];
        let Some(spec) = inst.shard.as_ref().filter(|s| s.merge == Merge::None) else {
            return BTreeMap::new();
        };
        let inputs: Vec<String> = parts.inputs.keys().cloned().collect();
        let files: Vec<(String, Digest)> = shards::source_files(&spec.strategy, &inputs)
            .into_iter()
            .filter_map(|p| parts.inputs.get(&p).map(|d| (p, *d)))
            .collect();
        let read = |p: &str| fs::digest::read_regular(&self.root.join(p));
        match crate::shard::split(&spec.strategy, &files, &read) {
            // The cache entry holds the instance's discovered inputs, not each shard's.
            Ok(split) => shard_lineage(inst, parts, split.iter().map(|s| (s, None))),
            Err(_) => BTreeMap::new(),
        }
    }

    /// A command that died of the signal orch sent it because the build was interrupted
    /// did not fail on its own: it is reported as interrupted, not recorded as failed.
    fn killed_by_us(&self, f: &Failure) -> bool {
        // The flag too: a job may report before the loop has noticed the signal.
        (self.report.interrupted || signal::interrupted())
            && f.0 == FailureKind::Signal
            && matches!(f.2, Some(libc::SIGTERM | libc::SIGKILL))
    }

    /// Records a failure and reports it; fail-fast stops the build.
    fn fail(
        &mut self,
        i: usize,
        (kind, exit_code, signal, message): Failure,
        log: String,
        duration_ms: u64,
        shard: Option<ShardRef>,
    ) {
        let name = self.name(i).to_owned();
        self.pending.results.push(ResultUpdate::Failed {
            instance: name.clone(),
            run_id: self.opts.run_id.clone(),
            finished_at_ns: fs::now_ns(),
        });
        self.events.emit(
            Some(&name),
            failed_event((kind, exit_code, signal, message), log, duration_ms, shard),
        );
        self.outcome[i] = Some(Outcome::Failed);
        self.report.counts.failed += 1;
        self.report.failed.push(name);
        if !self.opts.keep_going {
            self.stop = true;
        }
    }

    /// Splits a stale sharded instance and queues the shards that must run.
    fn plan_shards(
        &mut self,
        i: usize,
        parts: KeyParts,
        key: Digest,
        files: &[String],
        digest_of: &dyn Fn(&str) -> Option<Digest>,
    ) {
        let inst = &self.snap.project.instances[i];
        let Some(spec) = inst.shard.clone() else {
            return;
        };
        // Forced or `always`: every shard runs again, none is reused.
        let recorded = if self.snap.forced.contains(&i) || inst.always {
            Default::default()
        } else {
            self.store.shard_results(&inst.name).unwrap_or_default()
        };
        let snap = self.snap;
        let planned = match shards::plan(
            &self.root,
            &self.layout.dir,
            inst,
            &parts,
            files,
            digest_of,
            &|p| snap.digest_now(p),
            &recorded,
        ) {
            Ok(p) => p,
            Err(message) => {
                remove_outputs(&self.beneath, inst);
                self.done_planned += 1;
                self.fail(
                    i,
                    (FailureKind::InvalidInput, None, None, message),
                    String::new(),
                    0,
                    None,
                );
                self.sched.finish(i);
                return;
            }
        };
        let count = planned.len();
        let mut waiting: VecDeque<usize> = planned
            .iter()
            .enumerate()
            .filter(|(_, p)| p.reuse.is_none())
            .map(|(k, _)| k)
            .collect();
        if self.jobs() > 1 && waiting.len() > 1 {
            let ms = self.store.shard_durations(&inst.name).unwrap_or_default();
            priority::order_shards(&mut waiting, &|k| {
                ms.get(&planned[k].shard.key)
                    .copied()
                    .map(priority::quantize)
            });
        }
        let cap = spec.parallel.unwrap_or(usize::MAX).min(self.jobs()).max(1);
        self.events.emit(
            Some(&inst.name),
            EventKind::ShardPlan {
                strategy: spec.strategy.name(),
                shards: count,
                parallel: cap,
                stale: waiting.len(),
                reused: count - waiting.len(),
            },
        );
        // Shards that run are units of progress of their own.
        self.planned_total += waiting.len();
        let results = planned.iter().map(|p| p.reuse.clone()).collect();
        let has_waiting = !waiting.is_empty();
        // A shard's own source is its input; the other shards' sources are not in its
        // key, so one that its depfile lists is a discovered input like any other file.
        let sources = shards::source_files(&spec.strategy, files);
        let mut depfile_skip: BTreeSet<String> = parts.inputs.keys().cloned().collect();
        for s in &sources {
            depfile_skip.remove(s);
        }
        depfile_skip.extend(inst.outputs.iter().map(|o| o.path.clone()));
        self.sharded.insert(
            i,
            Sharded {
                parts,
                key,
                shards: planned,
                waiting,
                running: 0,
                cap,
                results,
                failure: None,
                started_at: Instant::now(),
                unrecorded: Vec::new(),
                depfile_skip: Arc::new(depfile_skip),
                depfile_known: Arc::new(self.snap.discovered_entries(i)),
            },
        );
        if has_waiting {
            self.rr.push_back(i);
        } else {
            self.finalize_sharded(i);
        }
    }

    /// Starts the next waiting shard, round-robin over sharded instances under their cap.
    fn start_next_shard(&mut self) -> bool {
        for _ in 0..self.rr.len() {
            let Some(i) = self.rr.pop_front() else {
                return false;
            };
            let Some(sh) = self.sharded.get_mut(&i) else {
                continue;
            };
            if sh.waiting.is_empty() {
                continue;
            }
            if sh.running >= sh.cap {
                self.rr.push_back(i);
                continue;
            }
            let Some(s) = sh.waiting.pop_front() else {
                continue;
            };
            sh.running += 1;
            if !sh.waiting.is_empty() {
                self.rr.push_back(i);
            }
            self.start_shard(i, s);
            return true;
        }
        false
    }

    fn start_shard(&mut self, i: usize, s: usize) {
        self.make_log_dir();
        let inst = &self.snap.project.instances[i];
        let Some(sh) = self.sharded.get(&i) else {
            return;
        };
        let p = &sh.shards[s];
        let count = sh.shards.len();
        let shard_name = format!("{}#{}", inst.name, p.shard.index);
        // Collected only for commands that use `{inputs}`: a `files` source can make the
        // input list as long as the shard list.
        let present: Vec<&str> = if inst.uses_inputs() {
            sh.parts.inputs.keys().map(String::as_str).collect()
        } else {
            Vec::new()
        };
        let values = shards::values(p, count);
        let job = Job {
            name: shard_name.clone(),
            command: inst
                .command_line(&present, Some(&values))
                .unwrap_or_default(),
            cwd: self.cwd(inst),
            env: job_env(inst, &self.opts.run_id, Some((p.shard.index, count))),
            log: self.layout.shard_log_file(
                &self.opts.run_id,
                &inst.name,
                p.shard.index,
                &p.shard.key,
            ),
            timeout: inst.timeout,
            stream: self.stream_for(&shard_name),
        };
        let outputs: Vec<String> = if p.part.is_empty() {
            p.outputs.clone()
        } else {
            vec![p.part.clone()]
        };
        let depfile = inst.depfile_for(Some(&values)).map(|path| {
            let mut own = vec![p.input.clone()];
            own.extend(outputs.iter().cloned());
            DepfilePlan {
                path,
                cwd: inst.cwd.clone(),
                skip: Arc::clone(&sh.depfile_skip),
                own,
                known: Arc::clone(&sh.depfile_known),
            }
        });
        let (root, shard_copy, paths) = (self.beneath.clone(), p.clone(), outputs.clone());
        let dep_path = depfile.as_ref().map(|d| d.path.clone());
        let prepare: Prepare = Box::new(move || {
            shards::write_slice(root.root(), &shard_copy)
                .map_err(|e| format!("cannot write the shard's input: {e}"))?;
            if let Some(d) = &dep_path
                && !plan::is_discoverable(d)
            {
                // A group key can hold anything: the expanded path must stay a project file.
                return Err(format!(
                    "the depfile `{d}` of shard `{}` is not a path inside the project, outside `.orch/`",
                    shard_copy.shard.key
                ));
            }
            prepare_paths(&root, &paths)?;
            prepare_paths(&root, dep_path.as_slice())
        });
        let shard = Some(ShardRef {
            index: p.shard.index,
            count,
            key: p.shard.key.clone(),
        });
        self.events.emit(
            Some(&shard_name),
            EventKind::InstanceStarted {
                attempt: 1,
                command: job.command.clone(),
                shard,
            },
        );
        let plan = JobPlan {
            store: None,
            prepare,
            has_run: inst.run.is_some(),
            outputs,
            retry: inst.retry.clone(),
            schemas: p.schemas.clone(),
            guard: self
                .snap
                .shard_guard(inst, &sh.parts, &p.input, p.shard.digest),
            depfile,
        };
        self.spawn(Work::Shard(i, s), job, plan);
    }

    fn done_shard(&mut self, i: usize, s: usize, done: Done) {
        let ours = done.failure.as_ref().is_some_and(|f| self.killed_by_us(f));
        let log = self
            .sharded
            .get(&i)
            .map(|sh| {
                let shard = &sh.shards[s].shard;
                let log = self.layout.shard_log_file(
                    &self.opts.run_id,
                    self.name(i),
                    shard.index,
                    &shard.key,
                );
                self.rel(&log)
            })
            .unwrap_or_default();
        let Some(sh) = self.sharded.get_mut(&i) else {
            return;
        };
        sh.running -= 1;
        let p = &sh.shards[s];
        let count = sh.shards.len();
        let shard_name = format!("{}#{}", self.snap.project.instances[i].name, p.shard.index);
        let shard = Some(ShardRef {
            index: p.shard.index,
            count,
            key: p.shard.key.clone(),
        });
        let duration_ms = done.duration.as_millis() as u64;
        let key = p.key;
        self.done_planned += 1;
        match done.failure.clone() {
            None => {
                let mut metas = BTreeMap::new();
                for (path, r) in &done.outputs {
                    if let Ok(PathDigest::Present { stat, digest, .. }) = r {
                        metas.insert(
                            path.clone(),
                            OutputMeta {
                                digest: *digest,
                                size: stat.size,
                            },
                        );
                    }
                }
                let merged = !p.part.is_empty();
                let result = if merged {
                    let m = metas.values().next().cloned().unwrap_or(OutputMeta {
                        digest: fs::hash_bytes(b""),
                        size: 0,
                    });
                    ShardResult {
                        digest: m.digest,
                        size: m.size,
                        outputs: BTreeMap::new(),
                        discovered: done.depfile.discovered.clone(),
                    }
                } else {
                    let size = metas.values().map(|m| m.size).sum();
                    ShardResult {
                        digest: shards::outputs_digest(&metas),
                        size,
                        outputs: metas.clone(),
                        discovered: done.depfile.discovered.clone(),
                    }
                };
                if !merged {
                    let _ = shards::note_written(
                        &self.layout.dir,
                        &self.snap.project.instances[i].name,
                        metas.keys(),
                    );
                }
                self.pending
                    .digests
                    .extend(done.depfile.rows.iter().cloned());
                let project = self.snap.project;
                let found = &done.depfile.discovered;
                check_discovered(&mut self.producers, project, i, &shard_name, found);
                self.pending.durations.push(DurationRecord {
                    instance: self.snap.project.instances[i].name.clone(),
                    shard: p.shard.key.clone(),
                    duration_ms,
                    run_id: self.opts.run_id.clone(),
                });
                if done.changed.is_empty() {
                    self.pending.shards.push(ShardRecord {
                        shard_key: key.0,
                        instance: self.snap.project.instances[i].name.clone(),
                        output_digest: result.digest.0,
                        size: result.size,
                        run_id: self.opts.run_id.clone(),
                        discovered: shards::encode_discovered(&result.discovered),
                    });
                } else {
                    crate::snapshot::forget_slice(&self.root, &self.layout.dir, &p.input);
                    sh.unrecorded.extend(done.changed.iter().cloned());
                    self.events.emit(
                        Some(&shard_name),
                        EventKind::InputChangedDuringRun {
                            paths: done.changed.clone(),
                            shard: shard.clone(),
                        },
                    );
                }
                sh.results[s] = Some(result);
                self.events.emit(
                    Some(&shard_name),
                    EventKind::InstanceCompleted {
                        action_key: key.to_hex(),
                        outputs: metas
                            .iter()
                            .map(|(p, m)| (p.clone(), m.digest.to_hex()))
                            .collect(),
                        duration_ms,
                        shard,
                    },
                );
            }
            Some(f) => {
                for out in done
                    .outputs
                    .iter()
                    .map(|(p, _)| p)
                    .chain(p.outputs.iter())
                    .chain(std::iter::once(&p.part).filter(|p| !p.is_empty()))
                {
                    let _ = self.beneath.remove_file(out);
                }
                if ours {
                    // Killed because the build was interrupted: not a failure of its own;
                    // the instance ends up reported as interrupted.
                    self.events.emit(
                        Some(&shard_name),
                        EventKind::InstanceBlocked {
                            reason: BlockReason::Interrupted,
                            blocked_by: Vec::new(),
                            shard: shard.clone(),
                        },
                    );
                } else {
                    if sh.failure.as_ref().is_none_or(|(_, _, first)| s < *first) {
                        sh.failure = Some((f.clone(), log.clone(), s));
                    }
                    self.events
                        .emit(Some(&shard_name), failed_event(f, log, duration_ms, shard));
                }
                if !self.opts.keep_going {
                    self.stop = true;
                }
            }
        }
        self.progress();
        let Some(sh) = self.sharded.get(&i) else {
            return;
        };
        if sh.running == 0 && (sh.waiting.is_empty() || self.stop) {
            self.finalize_sharded(i);
        }
    }

    /// All of an instance's shards have ended (or will never start): merge, or report
    /// why it did not finish.
    fn finalize_sharded(&mut self, i: usize) {
        let Some(sh) = self.sharded.remove(&i) else {
            return;
        };
        let inst = &self.snap.project.instances[i];
        let duration_ms = sh.started_at.elapsed().as_millis() as u64;
        self.done_planned += 1;
        if let Some((f, log, slot)) = sh.failure {
            let which = sh.shards.get(slot).map_or_else(String::new, |p| {
                let shard = ShardRef {
                    index: p.shard.index,
                    count: sh.shards.len(),
                    key: p.shard.key.clone(),
                };
                format!("#{}{}", p.shard.index, key_suffix(Some(&shard)))
            });
            remove_outputs(&self.beneath, inst);
            let failed = sh.shards.len()
                - sh.results.iter().filter(|r| r.is_some()).count()
                - sh.waiting.len();
            let message = format!(
                "{failed} of {} shards failed; first: {which}: {}",
                sh.shards.len(),
                f.3
            );
            self.fail(i, (f.0, f.1, f.2, message), log, duration_ms, None);
            self.sched.finish(i);
            return;
        }
        if !sh.waiting.is_empty() || sh.results.iter().any(Option::is_none) {
            let reason = if self.report.interrupted {
                BlockReason::Interrupted
            } else {
                BlockReason::StoppedAfterFailure
            };
            self.events.emit(
                Some(&inst.name),
                EventKind::InstanceBlocked {
                    reason,
                    blocked_by: Vec::new(),
                    shard: None,
                },
            );
            self.set_blocked(i);
            self.done_planned -= 1;
            return;
        }
        let Some(spec) = inst.shard.clone() else {
            return;
        };
        let results: Vec<ShardResult> = sh.results.into_iter().flatten().collect();
        // The instance's discovered inputs are those of all its shards: any of them
        // changing makes the instance stale, and the shard plan then finds which shards.
        let mut discovered = Discovered::new();
        for r in &results {
            discovered.extend(r.discovered.iter().map(|(p, d)| (p.clone(), *d)));
        }
        let mut metas = BTreeMap::new();
        match spec.merge {
            Merge::Concat => {
                let target = inst
                    .outputs
                    .first()
                    .map(|o| o.path.clone())
                    .unwrap_or_default();
                let parts: Vec<PathBuf> =
                    sh.shards.iter().map(|p| self.root.join(&p.part)).collect();
                match crate::shard::merge(&self.beneath, &parts, &target) {
                    Ok((digest, size)) => {
                        self.events.emit(
                            Some(&inst.name),
                            EventKind::MergeCompleted {
                                output: target.clone(),
                                digest: digest.to_hex(),
                                size,
                                shards: parts.len(),
                            },
                        );
                        // The schema applies to the merged output.
                        let schema = inst.outputs.first().and_then(|o| o.schema.clone());
                        if let Some(m) =
                            schema.and_then(|sc| schema::check(&self.root, &[(target.clone(), sc)]))
                        {
                            remove_outputs(&self.beneath, inst);
                            self.fail(
                                i,
                                (FailureKind::Schema, None, None, m),
                                String::new(),
                                duration_ms,
                                None,
                            );
                            self.sched.finish(i);
                            return;
                        }
                        metas.insert(target, OutputMeta { digest, size });
                    }
                    Err(e) => {
                        remove_outputs(&self.beneath, inst);
                        let f = (
                            FailureKind::MissingOutput,
                            None,
                            None,
                            format!("merging the shard outputs into `{target}` failed: {e}"),
                        );
                        self.fail(i, f, String::new(), duration_ms, None);
                        self.sched.finish(i);
                        return;
                    }
                }
            }
            Merge::None => {
                for r in &results {
                    metas.extend(r.outputs.clone());
                }
                // Outputs of shards that no longer exist (a group gone from the source).
                // Only what orch recorded as this instance's outputs: a file that merely
                // matches the template (the source itself, a file of the user's) is not
                // orch's to delete.
                let templates: Vec<String> =
                    inst.shard_outputs.iter().map(|o| o.path.clone()).collect();
                let mut ours = shards::written(&self.layout.dir, &inst.name);
                if let Some(s) = &self.snap.records[i].success {
                    ours.extend(s.outputs.keys().cloned());
                }
                let source = match &spec.strategy {
                    crate::shard::Strategy::Chunk { source, .. }
                    | crate::shard::Strategy::Group { source, .. } => Some(source.as_str()),
                    _ => None,
                };
                for path in &ours {
                    if !metas.contains_key(path)
                        && !sh.parts.inputs.contains_key(path)
                        && source != Some(path.as_str())
                        && templates.iter().any(|t| shards::matches_template(t, path))
                    {
                        let _ = self.beneath.remove_file(path);
                    }
                }
                let _ = shards::reset_written(&self.layout.dir, &inst.name, metas.keys());
            }
        }
        // Forget shard results, parts and slices that are no longer part of this instance.
        let slices: BTreeSet<PathBuf> =
            sh.shards.iter().map(|p| self.root.join(&p.input)).collect();
        let in_dir = shards::shard_dir(&self.layout.dir, &inst.name).join("in");
        for entry in std::fs::read_dir(&in_dir).into_iter().flatten().flatten() {
            if !slices.contains(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let keep: BTreeSet<[u8; 32]> = sh.shards.iter().map(|p| p.key.0).collect();
        if let Ok(recorded) = self.store.shard_results(&inst.name) {
            for k in recorded.keys().filter(|k| !keep.contains(*k)) {
                self.pending.forget_shards.push(*k);
                let part = shards::shard_dir(&self.layout.dir, &inst.name)
                    .join("out")
                    .join(format!("{}.part", Digest(*k).to_hex()));
                let _ = std::fs::remove_file(part);
            }
        }
        if !sh.unrecorded.is_empty() {
            let mut paths = sh.unrecorded;
            paths.sort();
            paths.dedup();
            self.unrecorded(i, paths, sh.key, metas, duration_ms);
            self.sched.finish(i);
            return;
        }
        if let Some(cache) = self.cache_for(i) {
            let outputs: Vec<(String, bool)> = metas.keys().map(|p| (p.clone(), false)).collect();
            let digests = metas.iter().map(|(p, m)| (p.clone(), m.digest)).collect();
            if let Err(m) = cache.store(StoreRequest {
                name: inst.name.clone(),
                root: self.root.clone(),
                key: sh.key,
                outputs,
                digests,
                discovered: discovered.clone(),
                duration_ms,
                staged: Staged::default(),
            }) {
                crate::say!("warning: {}: not cached: {m}", inst.name);
            }
        }
        let lineage = match spec.merge {
            Merge::None => shard_lineage(
                inst,
                &sh.parts,
                sh.shards
                    .iter()
                    .zip(&results)
                    .map(|(p, r)| (&p.shard, Some(&r.discovered))),
            ),
            Merge::Concat => BTreeMap::new(),
        };
        self.succeed(
            i,
            sh.parts,
            sh.key,
            metas,
            discovered,
            duration_ms,
            None,
            lineage,
        );
        self.sched.finish(i);
    }

    /// Reports every selected instance that never started.
    fn block_unstarted(&mut self) {
        let project = self.snap.project;
        for i in self.sched.unstarted() {
            let inst = &project.instances[i];
            let mut by = Vec::new();
            let mut any_failed = false;
            for d in inst.deps.iter().filter(|d| d.hard) {
                match self.outcome[d.upstream] {
                    Some(Outcome::Failed) => {
                        any_failed = true;
                        by.push(project.instances[d.upstream].name.clone());
                    }
                    Some(Outcome::Blocked) => by.push(project.instances[d.upstream].name.clone()),
                    _ => {}
                }
            }
            let reason = if any_failed {
                BlockReason::UpstreamFailed
            } else if !by.is_empty() {
                BlockReason::UpstreamBlocked
            } else if self.report.interrupted {
                BlockReason::Interrupted
            } else {
                BlockReason::StoppedAfterFailure
            };
            self.events.emit(
                Some(&inst.name),
                EventKind::InstanceBlocked {
                    reason,
                    blocked_by: by,
                    shard: None,
                },
            );
            self.outcome[i] = Some(Outcome::Blocked);
            self.report.counts.blocked += 1;
            self.report.blocked.push(inst.name.clone());
        }
    }
}

/// The `instance_failed` event of a failure.
fn failed_event(
    (kind, exit_code, signal, message): Failure,
    log: String,
    duration_ms: u64,
    shard: Option<ShardRef>,
) -> EventKind {
    EventKind::InstanceFailed {
        kind,
        exit_code,
        signal,
        message,
        log,
        duration_ms,
        shard,
    }
}

/// Why a finished job failed, if it did.
fn failure_of(
    exit: &Exit,
    outputs: &[(String, Result<PathDigest, std::io::Error>)],
) -> Option<Failure> {
    match exit {
        // Hashing stopped by Ctrl-C says nothing about the outputs: the instance was
        // interrupted, exactly as if orch had stopped its command.
        Exit::Success
            if outputs
                .iter()
                .any(|(_, r)| r.as_ref().is_err_and(crate::fs::digest::is_interrupted)) =>
        {
            Some((
                FailureKind::Signal,
                None,
                Some(libc::SIGTERM),
                "interrupted while its outputs were hashed".to_owned(),
            ))
        }
        Exit::Success => {
            // An output that exists but cannot be read (a FIFO, a device, no permission)
            // is named with the reason: "did not produce" would send the user looking
            // for a file that is there.
            let missing: Vec<String> = outputs
                .iter()
                .filter_map(|(p, r)| match r {
                    Ok(PathDigest::Present { .. }) => None,
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Some(format!("`{p}` as a file it can read ({e})"))
                    }
                    _ => Some(format!("`{p}`")),
                })
                .collect();
            (!missing.is_empty()).then(|| {
                (
                    FailureKind::MissingOutput,
                    None,
                    None,
                    format!(
                        "the command succeeded but did not produce {}",
                        missing.join(", ")
                    ),
                )
            })
        }
        Exit::Code(c) => Some((
            FailureKind::Exit,
            Some(*c),
            None,
            format!("the command exited with status {c}"),
        )),
        Exit::Signal(s) => Some((
            FailureKind::Signal,
            None,
            Some(*s),
            format!("the command was killed by signal {s}"),
        )),
        Exit::Spawn(m) => Some((FailureKind::Spawn, None, None, m.clone())),
        Exit::Timeout(t) => Some((
            FailureKind::Timeout,
            None,
            None,
            format!(
                "the command ran longer than its timeout of {}",
                humantime::format_duration(*t)
            ),
        )),
    }
}

/// The delay before attempt `attempt + 1`: `backoff` doubled for each earlier retry,
/// at most `max_backoff`. No jitter, so a build is repeatable.
pub fn backoff(r: &crate::model::Retry, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    r.backoff.saturating_mul(factor).min(r.max_backoff)
}

/// Sleeps, waking early when the build is interrupted.
fn wait_unless_interrupted(delay: Duration) {
    let end = Instant::now() + delay;
    while !signal::interrupted() {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

fn job_env(inst: &Instance, run_id: &str, shard: Option<(usize, usize)>) -> Vec<(String, String)> {
    let mut env = vec![
        ("ORCH_RUN_ID".to_owned(), run_id.to_owned()),
        ("ORCH_PHASE".to_owned(), inst.phase.clone()),
        ("ORCH_INSTANCE".to_owned(), inst.name.clone()),
    ];
    if let Some((index, count)) = shard {
        env.push(("ORCH_SHARD_INDEX".to_owned(), index.to_string()));
        env.push(("ORCH_SHARD_COUNT".to_owned(), count.to_string()));
    }
    for (k, v) in &inst.env {
        if let crate::model::EnvValue::Set(s) = v {
            env.push((k.clone(), s.clone()));
        }
    }
    env
}

/// Creates `log` empty unless it exists (the runner creates a log at the first byte).
fn ensure_log(log: &std::path::Path) {
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log);
}

/// Creates output parent directories and removes old file outputs, so a command that
/// fails to write an output is caught instead of leaving last run's file in place. Both
/// resolve beneath the root: an output directory that became a symlink to elsewhere fails
/// the instance instead of touching what lies there.
fn prepare_outputs(root: &Beneath, outputs: &[crate::model::Output]) -> Result<(), String> {
    for o in outputs {
        if o.dir {
            root.create_dir_all(&o.path)
        } else {
            root.create_parents(&o.path)
                .and_then(|()| root.remove_file(&o.path))
        }
        .map_err(|e| format!("cannot prepare output `{}`: {e}", o.path))?;
    }
    Ok(())
}

/// The same for a shard's files.
fn prepare_paths(root: &Beneath, paths: &[String]) -> Result<(), String> {
    for p in paths {
        root.create_parents(p)
            .and_then(|()| root.remove_file(p))
            .map_err(|e| format!("cannot prepare output `{p}`: {e}"))?;
    }
    Ok(())
}

/// Warns about files instance `i`'s depfile listed that another phase writes without any
/// dependency ordering the two; `producers` is made on first use.
fn check_discovered(
    producers: &mut Option<undeclared::Producers>,
    project: &crate::model::Project,
    i: usize,
    shown: &str,
    discovered: &plan::Discovered,
) {
    if discovered.is_empty() {
        return;
    }
    let producers = producers.get_or_insert_with(|| undeclared::Producers::new(project));
    for (path, p) in producers.unordered(project, i, discovered.keys()) {
        crate::say!(
            "{}",
            undeclared::warning(shown, &path, &project.instances[p].phase)
        );
    }
}

/// Removes a failed instance's outputs so a half-written file is never taken for a result.
fn remove_outputs(root: &Beneath, inst: &Instance) {
    for o in &inst.outputs {
        let _ = root.remove(&o.path);
    }
}

/// With `merge = "none"`, what each shard's outputs were built from ("built_from" JSON
/// by output path): the instance's inputs and upstream outputs that are no shard's
/// source, plus its own shard's source; for `chunk` and `group`, the source with the
/// shard's slice. Recording the whole instance's inputs instead would list every source
/// of the phase under each output.
fn shard_lineage<'a>(
    inst: &Instance,
    parts: &KeyParts,
    shards: impl IntoIterator<Item = (&'a crate::shard::Shard, Option<&'a Discovered>)>,
) -> BTreeMap<String, String> {
    use crate::shard::{Slice, expand_output};
    let shards: Vec<(&crate::shard::Shard, Option<&Discovered>)> = shards.into_iter().collect();
    let sources: BTreeSet<&str> = shards
        .iter()
        .filter_map(|(s, _)| match &s.slice {
            Slice::File(p) => Some(p.as_str()),
            Slice::Bytes(_) => None,
        })
        .collect();
    let source = inst.shard.as_ref().and_then(|spec| match &spec.strategy {
        crate::shard::Strategy::Chunk { source, .. }
        | crate::shard::Strategy::Group { source, .. } => Some(source.as_str()),
        crate::shard::Strategy::Files { .. } => None,
    });
    // What every shard shares, computed once: with thousands of `files` shards, each
    // shard then adds only its own source.
    let shared_inputs: BTreeMap<&String, &Digest> = parts
        .inputs
        .iter()
        .filter(|(p, _)| !sources.contains(p.as_str()))
        .collect();
    let mut shared_upstream = parts.upstream.clone();
    for u in shared_upstream.values_mut() {
        if let plan::Upstream::Present { outputs, .. } = u {
            outputs.retain(|p, _| !sources.contains(p.as_str()));
        }
    }
    let mut out = BTreeMap::new();
    let none = Discovered::new();
    for (s, discovered) in shards {
        let own = match &s.slice {
            Slice::File(p) => Some(p.as_str()),
            Slice::Bytes(_) => None,
        };
        let mut inputs = shared_inputs.clone();
        let mut upstream = shared_upstream.clone();
        if let Some(own) = own {
            if let Some((p, d)) = parts.inputs.get_key_value(own) {
                inputs.insert(p, d);
            }
            for (name, u) in &parts.upstream {
                if let plan::Upstream::Present { outputs, .. } = u
                    && let Some(d) = outputs.get(own)
                    && let Some(plan::Upstream::Present { outputs, .. }) = upstream.get_mut(name)
                {
                    outputs.insert(own.to_owned(), *d);
                }
            }
        }
        let text = serde_json::json!({
            "inputs": inputs,
            "upstream": upstream,
            "discovered": discovered.unwrap_or(&none),
            "shard": {
                "index": s.index,
                "key": s.key,
                "source": own.or(source),
                "slice": s.digest.to_hex(),
            },
        })
        .to_string();
        for t in &inst.shard_outputs {
            out.insert(expand_output(&t.path, s), text.clone());
        }
    }
    out
}
