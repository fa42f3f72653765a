//! One job's life on a worker: its files prepared, its command run (again, per the
//! instance's `retry`), its outputs hashed and checked, its depfile read and its result
//! stored in the cache; and the small rules every job shares (environment, failures,
//! backoff).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::depfile::{self, DepfileRead};
use super::{Done, Exit, Failure, Job, JobPlan, Msg, Work, schema, signal};
use crate::cache::{Staged, StoreRequest};
use crate::events::{EventKind, FailureKind, ShardRef};
use crate::fs::{self, Beneath, PathDigest};
use crate::model::Instance;
use crate::model::meta::{self, Provenance, Sidecar};

/// How one attempt of a job ended, once its outputs were checked.
pub(super) enum Step {
    /// It failed, and the instance's `retry` allows attempt `attempt + 1` after `delay`.
    Retry {
        attempt: u32,
        attempts: u32,
        delay: Duration,
        failure: Failure,
    },
    /// The job ended for good.
    Done(Done),
}

/// The whole life of a job whose command runs on the calling thread through `run`,
/// reported on `tx`: each attempt prepared, run and concluded, waiting out the backoff
/// between attempts here.
pub(super) fn run_here(
    work: Work,
    job: &Job,
    w: &JobPlan,
    root: &Path,
    tx: &Sender<Msg>,
    run: &dyn Fn(&Job) -> Exit,
) {
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        // Files the depfile lists that change after this moment were written while the
        // command ran.
        let started_ns = fs::now_ns();
        let exit = match (w.prepare)() {
            Err(e) => Exit::Spawn(e),
            Ok(()) if w.has_run => run(job),
            Ok(()) => Exit::Success,
        };
        match conclude(work, job, w, root, &exit, attempt, started_ns, started) {
            Step::Retry {
                attempt: failed,
                attempts,
                delay,
                failure,
            } => {
                let _ = tx.send(Msg::Retrying {
                    work,
                    attempt: failed,
                    attempts,
                    delay,
                    failure,
                });
                keep_attempt_log(job, failed);
                wait_unless_interrupted(delay);
                attempt = failed + 1;
                let _ = tx.send(Msg::Attempt {
                    work,
                    attempt,
                    command: job.command.clone(),
                    job_id: None,
                });
            }
            Step::Done(done) => {
                let _ = tx.send(Msg::Done(done));
                return;
            }
        }
    }
}

/// Keeps a failed attempt's output beside the next one's.
pub(super) fn keep_attempt_log(job: &Job, attempt: u32) {
    let _ = std::fs::rename(
        &job.log,
        job.log.with_extension(format!("attempt-{attempt}.log")),
    );
}

/// Concludes attempt `attempt` of `job`, whose command ended with `exit`: hashes its
/// outputs, checks them, reads its depfile, and either asks for another attempt or ends
/// the job, storing a success in the cache first. `started` is when the first attempt
/// began; `started_ns`, when this one did.
#[allow(clippy::too_many_arguments)]
pub(super) fn conclude(
    work: Work,
    job: &Job,
    w: &JobPlan,
    root: &Path,
    exit: &Exit,
    attempt: u32,
    started_ns: i64,
    started: Instant,
) -> Step {
    // With the cache on, outputs are copied into the store as they are hashed, so
    // storing them later reads nothing again.
    let (digests, staged) = match (&w.store, *exit == Exit::Success) {
        (_, false) => (Vec::new(), Staged::default()),
        (Some((cache, _, _)), true) => cache.digest_outputs(root, &w.outputs),
        (None, true) => (
            fs::digest_paths(root, &w.outputs, |_| None),
            Staged::default(),
        ),
    };
    let outputs: Vec<(String, Result<PathDigest, std::io::Error>)> =
        w.outputs.iter().cloned().zip(digests).collect();
    let mut read = DepfileRead::default();
    let failure = failure_of(exit, &outputs)
        .or_else(|| schema::check(root, &w.schemas).map(|m| (FailureKind::Schema, None, None, m)))
        .or_else(|| {
            let plan = w.depfile.as_ref()?;
            match depfile::read(root, plan, started_ns) {
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
    if let (Some(f), Some(r)) = (&failure, &w.retry)
        && attempt < r.attempts
        && !signal::interrupted()
    {
        return Step::Retry {
            attempt,
            attempts: r.attempts,
            delay: backoff(r, attempt),
            failure: f.clone(),
        };
    }
    // Before anything is cached: a result built from inputs that moved under the
    // command matches no key.
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
    let sidecars = match (&failure, &w.meta) {
        (None, Some((root, prov))) => write_sidecars(&job.name, root, prov, &|p| {
            outputs
                .iter()
                .find(|(o, _)| o == p)
                .and_then(|(_, r)| match r {
                    Ok(PathDigest::Present { digest, stat, .. }) => Some((*digest, stat.size)),
                    _ => None,
                })
        }),
        _ => BTreeMap::new(),
    };
    if failure.is_none()
        && changed.is_empty()
        && let Some((cache, key, decl)) = &w.store
    {
        let digests = outputs
            .iter()
            .filter_map(|(p, r)| match r {
                Ok(PathDigest::Present { digest, .. }) => Some((p.clone(), *digest)),
                _ => None,
            })
            .collect();
        if let Err(m) = cache.store(StoreRequest {
            name: job.name.clone(),
            root: root.to_path_buf(),
            key: *key,
            outputs: decl.clone(),
            digests,
            discovered: read.discovered.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
            staged,
            meta: sidecars,
        }) {
            crate::say!("warning: {}: not cached: {m}", job.name);
        }
    }
    Step::Done(Done {
        work,
        outputs,
        failure,
        duration: started.elapsed(),
        changed,
        depfile: read,
    })
}

/// Writes the sidecar of each output `prov` describes, whose digest and size `digest`
/// gives, and returns them by output path. A sidecar that cannot be written is a warning:
/// the artifact stands, and the result is cached without it.
pub(super) fn write_sidecars(
    name: &str,
    root: &Beneath,
    prov: &Provenance,
    digest: &dyn Fn(&str) -> Option<(crate::fs::Digest, u64)>,
) -> BTreeMap<String, Sidecar> {
    let (host, time) = (meta::host_name(), meta::now());
    let mut written = BTreeMap::new();
    for (path, schema) in &prov.outputs {
        let Some(d) = digest(path) else { continue };
        let sidecar = prov.sidecar((path, schema.as_deref()), d, &host, &time);
        match meta::write(root, &sidecar) {
            Ok(()) => {
                written.insert(path.clone(), sidecar);
            }
            Err(e) => crate::say!("warning: {name}: cannot write the sidecar of `{path}`: {e}"),
        }
    }
    written
}

/// The `instance_failed` event of a failure.
pub(super) fn failed_event(
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
pub(super) fn failure_of(
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
        Exit::Scheduler(m) => Some((FailureKind::Scheduler, None, None, m.clone())),
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
pub(super) fn wait_unless_interrupted(delay: Duration) {
    let end = Instant::now() + delay;
    while !signal::interrupted() {
        let now = Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

pub(super) fn job_env(
    inst: &Instance,
    run_id: &str,
    shard: Option<(usize, usize)>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("ORCH_RUN_ID".to_owned(), run_id.to_owned()),
        ("ORCH_PHASE".to_owned(), inst.phase.clone()),
        ("ORCH_INSTANCE".to_owned(), inst.name.clone()),
    ];
    env.extend(crate::snapshot::env::set_by_orch());
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
pub(super) fn ensure_log(log: &std::path::Path) {
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log);
}

/// Creates output parent directories and removes old file outputs, so a command that
/// fails to write an output is caught instead of leaving last run's file in place. Both
/// resolve beneath the root: an output directory that became a symlink to elsewhere fails
/// the instance instead of touching what lies there.
pub(super) fn prepare_outputs(
    root: &Beneath,
    outputs: &[crate::model::Output],
) -> Result<(), String> {
    for o in outputs {
        if o.dir {
            root.create_dir_all(&o.path)
        } else {
            root.create_parents(&o.path)
                .and_then(|()| root.remove_file(&o.path))
                // Last run's sidecar would describe content that is about to go.
                .and_then(|()| match o.meta {
                    true => root.remove_file(meta::sidecar_path(&o.path)),
                    false => Ok(()),
                })
        }
        .map_err(|e| format!("cannot prepare output `{}`: {e}", o.path))?;
    }
    Ok(())
}

/// The same for a shard's files.
pub(super) fn prepare_paths(root: &Beneath, paths: &[String]) -> Result<(), String> {
    for p in paths {
        root.create_parents(p)
            .and_then(|()| root.remove_file(p))
            .map_err(|e| format!("cannot prepare output `{p}`: {e}"))?;
    }
    Ok(())
}

/// Removes a failed instance's outputs so a half-written file is never taken for a result.
pub(super) fn remove_outputs(root: &Beneath, inst: &Instance) {
    for o in &inst.outputs {
        let _ = root.remove(&o.path);
        if o.meta {
            let _ = root.remove_file(meta::sidecar_path(&o.path));
        }
    }
}
