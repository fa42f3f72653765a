//! Jobs on a Slurm cluster: [`SlurmBackend`] submits each instance or shard as one batch
//! job (`sbatch`), learns how all of them stand from one `squeue` per poll, and cancels
//! them with `scancel`. The work around each command (preparing its outputs, hashing
//! them, retries, the cache) stays on this machine, in [`super::job`], as for local jobs:
//! the cluster must see the project through a shared file system, which a marker file
//! written here and checked by every job makes sure of.
//!
//! No thread waits on one job: a few workers prepare, submit and conclude jobs, and one
//! monitor polls every job in flight at once, quickly after a change and more slowly
//! while nothing moves.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::backend::Backend;
use super::job::{self, Step};
use super::slurm::{self, Client, EndState, JobId, JobState, SlurmError, Submission};
use super::{Exit, Job, JobPlan, Msg, Work, signal};
use crate::events::FailureKind;
use crate::fs;
use crate::model::{Executor, Resources};

/// The first pause between polls, after a submission or a change.
const POLL_MIN: Duration = Duration::from_millis(100);
/// The longest pause between polls while nothing changes.
const POLL_MAX: Duration = Duration::from_secs(1);
/// How long polls may fail in a row (the controller unreachable) before the jobs in
/// flight are given up as failed.
const POLL_GRACE: Duration = Duration::from_secs(60);
/// Workers preparing, submitting and concluding jobs: file work on this machine, and
/// `sbatch` calls of ~15 ms each.
const WORKERS: usize = 4;

/// What one backend shares between its workers and its monitor.
struct Shared {
    name: String,
    client: Client,
    partition: Option<String>,
    args: Vec<String>,
    root: PathBuf,
    /// The shared-file-system check: the file every job must find, and what it holds.
    marker: (PathBuf, String),
    tx: Sender<Msg>,
    /// Prepares, submits and concludes jobs.
    pool: rayon::ThreadPool,
    state: Mutex<State>,
    /// Wakes the monitor: a job was submitted, the build was interrupted, or it ends.
    wake: Condvar,
}

/// The jobs in flight, and what the build asked for.
#[derive(Default)]
struct State {
    jobs: BTreeMap<JobId, InFlight>,
    /// The build was interrupted: jobs are cancelled, nothing more is submitted.
    cancelled: bool,
    /// The backend was dropped: the monitor stops.
    closed: bool,
}

/// One submitted job, with everything needed to conclude it.
struct InFlight {
    work: Work,
    job: Job,
    plan: JobPlan,
    /// What it asks for, again on a retry.
    resources: Resources,
    attempt: u32,
    /// When the job's first attempt began.
    started: Instant,
    /// When this attempt began (files its depfile lists that change after it count).
    started_ns: i64,
    /// When a poll first saw it running: its timeout counts from there, not from the
    /// time it waited in the queue.
    running_since: Option<Instant>,
    /// It was cancelled because it ran longer than its timeout.
    timed_out: bool,
}

/// Instances and shards as jobs on one Slurm cluster, `max_jobs` at once. Nothing
/// touches the cluster until the first job is submitted: a build whose cluster phases
/// are all up to date needs no Slurm at all.
pub(super) struct SlurmBackend {
    executor: Executor,
    root: PathBuf,
    orch_dir: PathBuf,
    run_id: String,
    /// What each instance asks for, by instance.
    resources: Vec<Resources>,
    tx: Sender<Msg>,
    /// Started at the first submission; Err says why it could not be.
    running: Option<Result<Running, String>>,
}

/// A started backend: its workers and its monitor.
struct Running {
    shared: Arc<Shared>,
    monitor: Option<JoinHandle<()>>,
}

impl SlurmBackend {
    /// A backend for `executor`, for a build of run `run_id` of the project at `root`
    /// (state in `orch_dir`); `resources[i]` is what instance `i` asks for.
    pub(super) fn new(
        executor: &Executor,
        root: PathBuf,
        orch_dir: PathBuf,
        run_id: String,
        resources: Vec<Resources>,
        tx: Sender<Msg>,
    ) -> SlurmBackend {
        SlurmBackend {
            executor: executor.clone(),
            root,
            orch_dir,
            run_id,
            resources,
            tx,
            running: None,
        }
    }

    /// Finds Slurm's commands, writes the marker file every job checks, and starts the
    /// workers and the monitor.
    fn start(&self) -> Result<Running, String> {
        let name = &self.executor.name;
        let client = Client::new().map_err(|e| format!("executor `{name}`: {e}"))?;
        let marker = write_marker(&self.orch_dir, name, &self.run_id).map_err(|e| {
            format!("executor `{name}`: cannot write the marker file its jobs check: {e}")
        })?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(WORKERS)
            .thread_name(|i| format!("orch-slurm-{i}"))
            .build()
            .map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            name: name.clone(),
            client,
            partition: self.executor.partition.clone(),
            args: self.executor.args.clone(),
            root: self.root.clone(),
            marker,
            tx: self.tx.clone(),
            pool,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let for_monitor = Arc::clone(&shared);
        let monitor = std::thread::Builder::new()
            .name("orch-slurm-monitor".to_owned())
            .spawn(move || monitor(&for_monitor))
            .map_err(|e| e.to_string())?;
        Ok(Running {
            shared,
            monitor: Some(monitor),
        })
    }
}

impl Backend for SlurmBackend {
    fn name(&self) -> &str {
        &self.executor.name
    }

    fn remote(&self) -> bool {
        true
    }

    fn capacity(&self) -> usize {
        self.executor.max_jobs.max(1) as usize
    }

    fn submit(&mut self, work: Work, job: Job, plan: JobPlan) {
        let i = match work {
            Work::Whole(i) | Work::Shard(i, _) => i,
        };
        let resources = self.resources.get(i).cloned().unwrap_or_default();
        if self.running.is_none() {
            self.running = Some(self.start());
        }
        let shared = match &self.running {
            Some(Ok(r)) => Arc::clone(&r.shared),
            Some(Err(why)) => {
                // No Slurm to submit to: the job fails to start, as a missing shell would.
                let _ = self.tx.send(Msg::Attempt {
                    work,
                    attempt: 1,
                    command: job.command.clone(),
                    job_id: None,
                });
                let _ = self.tx.send(Msg::Done(super::Done {
                    work,
                    outputs: Vec::new(),
                    failure: Some((FailureKind::Spawn, None, None, why.clone())),
                    duration: Duration::ZERO,
                    changed: Vec::new(),
                    depfile: Default::default(),
                }));
                return;
            }
            None => return,
        };
        let first = Attempt {
            work,
            job,
            plan,
            resources,
            attempt: 1,
            started: Instant::now(),
        };
        let for_job = Arc::clone(&shared);
        shared.pool.spawn(move || begin(&for_job, first));
    }

    fn cancel_all(&self) {
        let Some(Ok(running)) = &self.running else {
            return;
        };
        let shared = &running.shared;
        let ids: Vec<JobId> = {
            let mut state = lock(&shared.state);
            state.cancelled = true;
            state.jobs.keys().copied().collect()
        };
        // The monitor sees them end as CANCELLED and reports them interrupted; if the
        // controller cannot be reached now, the monitor's own polls decide.
        let _ = shared.client.cancel(&ids);
        shared.wake.notify_all();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_all();
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
        let _ = std::fs::remove_file(&self.shared.marker.0);
    }
}

/// One attempt of a job, before it is submitted.
struct Attempt {
    work: Work,
    job: Job,
    plan: JobPlan,
    resources: Resources,
    attempt: u32,
    started: Instant,
}

/// Prepares an attempt's files and submits it; what cannot be submitted concludes at
/// once (a failure to start, retried per the instance's `retry`).
fn begin(shared: &Arc<Shared>, a: Attempt) {
    let started_ns = fs::now_ns();
    if lock(&shared.state).cancelled || signal::interrupted() {
        // Interrupted before it reached the cluster: reported as stopped by orch.
        return conclude(shared, a, started_ns, Exit::Signal(libc::SIGTERM));
    }
    if let Err(e) = (a.plan.prepare)() {
        return conclude(shared, a, started_ns, Exit::Spawn(e));
    }
    if !a.plan.has_run {
        return conclude(shared, a, started_ns, Exit::Success);
    }
    let submission = Submission {
        name: a.job.name.clone(),
        command: a.job.command.clone(),
        cwd: a.job.cwd.clone(),
        env: a.job.env.clone(),
        log: a.job.log.clone(),
        partition: shared.partition.clone(),
        args: shared.args.clone(),
        resources: slurm_resources(&a.resources),
        marker: Some(shared.marker.clone()),
    };
    match shared.client.submit(&submission) {
        Ok(id) => {
            let _ = shared.tx.send(Msg::Attempt {
                work: a.work,
                attempt: a.attempt,
                command: a.job.command.clone(),
                job_id: Some(id.to_string()),
            });
            let mut state = lock(&shared.state);
            state.jobs.insert(
                id,
                InFlight {
                    work: a.work,
                    job: a.job,
                    plan: a.plan,
                    resources: a.resources,
                    attempt: a.attempt,
                    started: a.started,
                    started_ns,
                    running_since: None,
                    timed_out: false,
                },
            );
            let cancelled = state.cancelled;
            drop(state);
            if cancelled {
                // Interrupted while sbatch ran: the monitor's cancel may have missed it.
                let _ = shared.client.cancel(&[id]);
            }
            shared.wake.notify_all();
        }
        Err(e) => {
            let why = submit_error(&shared.name, &e);
            conclude(shared, a, started_ns, Exit::Spawn(why));
        }
    }
}

/// Concludes an attempt that ended with `exit`: another attempt after the backoff, or
/// the job's end reported to the build.
fn conclude(shared: &Arc<Shared>, a: Attempt, started_ns: i64, exit: Exit) {
    let step = job::conclude(
        a.work,
        &a.job,
        &a.plan,
        &shared.root,
        &exit,
        a.attempt,
        started_ns,
        a.started,
    );
    match step {
        Step::Done(done) => {
            let _ = shared.tx.send(Msg::Done(done));
        }
        Step::Retry {
            attempt,
            attempts,
            delay,
            failure,
        } => {
            let _ = shared.tx.send(Msg::Retrying {
                work: a.work,
                attempt,
                attempts,
                delay,
                failure,
            });
            job::keep_attempt_log(&a.job, attempt);
            job::wait_unless_interrupted(delay);
            begin(
                shared,
                Attempt {
                    attempt: attempt + 1,
                    ..a
                },
            );
        }
    }
}

/// Polls the jobs in flight until the backend is dropped, concluding those that ended
/// and cancelling those that ran past their timeout.
fn monitor(shared: &Arc<Shared>) {
    let mut pause = POLL_MIN;
    let mut failing_since: Option<Instant> = None;
    loop {
        let ids: Vec<JobId> = {
            let mut state = lock(&shared.state);
            if state.closed {
                return;
            }
            if state.jobs.is_empty() {
                pause = POLL_MIN;
                state = shared
                    .wake
                    .wait_while(state, |s| s.jobs.is_empty() && !s.closed)
                    .unwrap_or_else(|e| e.into_inner());
                if state.closed {
                    return;
                }
            }
            state.jobs.keys().copied().collect()
        };
        let polled = shared.client.poll(&ids);
        let changed = match polled {
            Ok(states) => {
                failing_since = None;
                settle(shared, states)
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= POLL_GRACE {
                    give_up(shared, &ids, &e);
                    failing_since = None;
                    true
                } else {
                    false
                }
            }
        };
        pause = if changed {
            POLL_MIN
        } else {
            (pause * 3 / 2).min(POLL_MAX)
        };
        let state = lock(&shared.state);
        if state.closed {
            return;
        }
        // A submission or an interrupt wakes the monitor early.
        let _ = shared.wake.wait_timeout(state, pause);
    }
}

/// Applies one poll: jobs that ended are concluded on the workers, running ones have
/// their timeout checked. True when anything changed.
fn settle(shared: &Arc<Shared>, states: BTreeMap<JobId, JobState>) -> bool {
    let mut ended = Vec::new();
    let mut overdue = Vec::new();
    let mut changed = false;
    {
        let mut state = lock(&shared.state);
        let cancelled = state.cancelled;
        for (id, js) in states {
            let Some(f) = state.jobs.get_mut(&id) else {
                continue;
            };
            match &js {
                JobState::Running { .. } => {
                    if f.running_since.is_none() {
                        f.running_since = Some(Instant::now());
                        changed = true;
                    }
                    if let (Some(t), Some(since)) = (f.job.timeout, f.running_since)
                        && since.elapsed() > t
                        && !f.timed_out
                    {
                        f.timed_out = true;
                        overdue.push(id);
                    }
                }
                JobState::Pending { .. } => {}
                _ => {
                    if let Some(f) = state.jobs.remove(&id) {
                        let exit = exit_of(id, &js, &f, cancelled, &shared.root);
                        ended.push((f, exit));
                        changed = true;
                    }
                }
            }
        }
    }
    if !overdue.is_empty() {
        let _ = shared.client.cancel(&overdue);
    }
    for (f, exit) in ended {
        let for_job = Arc::clone(shared);
        // Concluding hashes outputs: not on the monitor, which must keep polling.
        shared.pool.spawn(move || {
            let a = Attempt {
                work: f.work,
                job: f.job,
                plan: f.plan,
                resources: f.resources,
                attempt: f.attempt,
                started: f.started,
            };
            conclude(&for_job, a, f.started_ns, exit);
        });
    }
    changed
}

/// The controller could not be reached for [`POLL_GRACE`]: every job in flight fails
/// (cancelled if the controller comes back to hear it).
fn give_up(shared: &Arc<Shared>, ids: &[JobId], e: &SlurmError) {
    let _ = shared.client.cancel(ids);
    let lost: Vec<InFlight> = {
        let mut state = lock(&shared.state);
        ids.iter().filter_map(|id| state.jobs.remove(id)).collect()
    };
    for f in lost {
        let message = format!(
            "orch lost track of Slurm job {} on executor `{}`: {e} (for {} s); it was cancelled if the controller heard",
            f.job.name,
            shared.name,
            POLL_GRACE.as_secs()
        );
        let a = Attempt {
            work: f.work,
            job: f.job,
            plan: f.plan,
            resources: f.resources,
            attempt: f.attempt,
            started: f.started,
        };
        conclude(shared, a, f.started_ns, Exit::Scheduler(message));
    }
}

/// How a job that left the queue ended, as a command's exit.
fn exit_of(id: JobId, js: &JobState, f: &InFlight, cancelled: bool, root: &Path) -> Exit {
    match js {
        JobState::Completed => Exit::Success,
        _ if js.cannot_see_project() => Exit::Spawn(format!(
            "Slurm job {id} cannot see the project at {}: the cluster's nodes need the project on a shared file system at the same path (its log says more)",
            root.display()
        )),
        JobState::Failed {
            state: EndState::Cancelled,
            ..
        } if f.timed_out => Exit::Timeout(f.job.timeout.unwrap_or_default()),
        JobState::Failed {
            state: EndState::Cancelled,
            ..
        } if cancelled => Exit::Signal(libc::SIGTERM),
        JobState::Failed {
            state: EndState::Failed,
            exit_code,
            signal,
            reason,
        } => match (signal, exit_code) {
            (Some(s), _) => Exit::Signal(*s),
            (None, Some(c)) if *c != 0 => Exit::Code(*c),
            _ => Exit::Scheduler(format!(
                "Slurm job {id} FAILED ({reason}) before its command ran; if the log is missing, the node may not see the project at {}",
                root.display()
            )),
        },
        JobState::Failed {
            state: EndState::Timeout,
            reason,
            ..
        } => Exit::Scheduler(format!(
            "Slurm stopped job {id} at its time limit: TIMEOUT ({reason}); raise `resources.time`"
        )),
        other => Exit::Scheduler(format!("Slurm job {id} ended {other}")),
    }
}

/// Why a job could not be submitted, for its failure message.
fn submit_error(executor: &str, e: &SlurmError) -> String {
    match e {
        SlurmError::Unreachable { .. } => {
            format!("cannot submit to executor `{executor}`: {e}")
        }
        _ => format!("executor `{executor}`: {e}"),
    }
}

/// What a phase's `resources` ask of Slurm: memory rounded up to whole KiB, time to
/// whole minutes (Slurm's units).
fn slurm_resources(r: &Resources) -> slurm::Resources {
    slurm::Resources {
        cpus: r.cpus,
        mem: r.mem.map(|b| {
            if b % 1024 == 0 {
                crate::model::mem_text(b)
            } else {
                format!("{}K", b.div_ceil(1024))
            }
        }),
        time_minutes: r.time.map(|t| t.as_secs().div_ceil(60).max(1)),
    }
}

/// Writes `.orch/cluster/NAME.marker` holding a token only this build knows; a job
/// that does not find it there is not looking at this project.
fn write_marker(
    orch_dir: &Path,
    executor: &str,
    run_id: &str,
) -> std::io::Result<(PathBuf, String)> {
    let dir = orch_dir.join("cluster");
    // orch writes only where it means to: a `.orch/cluster` or marker that is a symlink
    // (leading anywhere) is refused, not followed.
    match dir.symlink_metadata() {
        Ok(m) if !m.is_dir() => {
            return Err(std::io::Error::other(format!(
                "`{}` is not a directory (a symlink?); remove it",
                dir.display()
            )));
        }
        Ok(_) => {}
        Err(_) => std::fs::create_dir(&dir)?,
    }
    let token = format!(
        "{run_id}-{}",
        &fs::hash_bytes(format!("{run_id}{}{:?}", std::process::id(), Instant::now()).as_bytes())
            .to_hex()[..16]
    );
    let path = dir.join(format!("{executor}.marker"));
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    std::io::Write::write_all(&mut file, token.as_bytes())?;
    Ok((path, token))
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_rounded_up_to_slurms_units() {
        let r = slurm_resources(&Resources {
            cpus: Some(2),
            mem: Some(4 << 30),
            time: Some(Duration::from_secs(61)),
        });
        assert_eq!(r.cpus, Some(2));
        assert_eq!(r.mem.as_deref(), Some("4G"));
        assert_eq!(r.time_minutes, Some(2));
        let odd = slurm_resources(&Resources {
            cpus: None,
            mem: Some(1500),
            time: Some(Duration::from_secs(1)),
        });
        assert_eq!(odd.mem.as_deref(), Some("2K"));
        assert_eq!(odd.time_minutes, Some(1));
    }
}
