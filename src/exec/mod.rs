//! Executing a plan: the build loop that starts each instance as soon as its upstreams
//! allow, on a rayon pool of `-j` threads, decides at that moment (with the outputs its
//! upstreams really produced) whether it must run, and records results.
//!
//! Fail-fast by default: after a failure nothing new starts, running commands finish,
//! and instances never started are reported blocked (`stopped_after_failure`).

pub mod runner;
pub mod scheduler;
pub mod signal;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::events::{BlockReason, Counts, EventKind, EventLog, FailureKind};
use crate::fs::{self, Digest, PathDigest};
use crate::model::Instance;
use crate::plan::{self, Freshness, KeyParts, Manifest, OutputMeta, PlanEntry, Success};
use crate::snapshot::{Snapshot, cached_to_row};
use crate::store::{DigestRow, Layout, OutputRecord, ResultUpdate, Store, SuccessRecord};
pub use runner::{Exit, Job, ProcessRunner, Runner};
use scheduler::Scheduler;

/// Options of one build.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// Parallel jobs.
    pub jobs: usize,
    /// Keep building what is not blocked after a failure.
    pub keep_going: bool,
    /// The run id.
    pub run_id: String,
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

/// What a worker sends back.
struct Done {
    instance: usize,
    exit: Exit,
    outputs: Vec<(String, Result<PathDigest, std::io::Error>)>,
    duration: Duration,
}

/// A started instance's key, kept until its command finishes.
struct Started {
    parts: KeyParts,
    key: Digest,
}

/// Writes that are flushed to the store in batches.
#[derive(Default)]
struct Pending {
    results: Vec<ResultUpdate>,
    outputs: Vec<OutputRecord>,
    digests: Vec<(String, Option<DigestRow>)>,
    since: Option<Instant>,
}

impl Pending {
    fn len(&self) -> usize {
        self.results.len() + self.outputs.len() + self.digests.len()
    }

    fn flush(&mut self, store: &mut Store) {
        let r = store
            .write_results(&self.results)
            .and_then(|_| store.write_outputs(&self.outputs))
            .and_then(|_| store.write_digests(&self.digests));
        if let Err(e) = r {
            // Lost records only mean work is redone next time; never that it is skipped.
            eprintln!("warning: could not record results in `.orch/state.db`: {e}");
        }
        self.results.clear();
        self.outputs.clear();
        self.digests.clear();
        self.since = None;
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
    let project = snap.project;
    let root = project.root.clone();
    let started_at = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .thread_name(|i| format!("orch-job-{i}"))
        .build()
        .map_err(std::io::Error::other)?;
    let (tx, rx) = crossbeam_channel::unbounded::<Done>();
    let mut sched = Scheduler::new(project, snap.graph, selected);
    let mut outcome: Vec<Option<Outcome>> = vec![None; project.instances.len()];
    // Instances whose outputs are exactly as recorded before this run (skipped as planned).
    let mut from_record = vec![false; project.instances.len()];
    let mut started: BTreeMap<usize, Started> = BTreeMap::new();
    let mut report = Report {
        counts: Counts {
            total: selected.len(),
            ..Counts::default()
        },
        ..Report::default()
    };
    let mut pending = Pending::default();
    let planned_total = plan.values().filter(|e| e.stale).count();
    let mut done_planned = 0usize;
    let mut stop = false;
    std::fs::create_dir_all(layout.log_dir(&opts.run_id))?;

    loop {
        while !stop && started.len() < opts.jobs.max(1) {
            let Some(i) = sched.pop() else { break };
            let inst = &project.instances[i];
            let name = inst.name.as_str();
            // Hard upstreams that did not succeed block this instance.
            let mut failed_by = Vec::new();
            let mut blocked_by = Vec::new();
            for d in inst.deps.iter().filter(|d| d.hard) {
                match outcome[d.upstream] {
                    Some(Outcome::Failed) => {
                        failed_by.push(project.instances[d.upstream].name.clone())
                    }
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
                events.emit(
                    Some(name),
                    EventKind::InstanceBlocked {
                        reason,
                        blocked_by: failed_by,
                    },
                );
                outcome[i] = Some(Outcome::Blocked);
                report.counts.blocked += 1;
                report.blocked.push(name.to_owned());
                if plan.get(&i).is_some_and(|e| e.stale) {
                    done_planned += 1;
                }
                sched.finish(i);
                continue;
            }
            for d in inst.deps.iter().filter(|d| !d.hard) {
                let status = match outcome[d.upstream] {
                    Some(Outcome::Failed) => "failed",
                    Some(Outcome::Blocked) => "blocked",
                    _ => continue,
                };
                events.emit(
                    Some(name),
                    EventKind::SoftDependencyUnmet {
                        upstream: project.instances[d.upstream].name.clone(),
                        upstream_status: status,
                    },
                );
            }

            // Planned up to date and nothing upstream ran: the plan's key still holds.
            if let Some(e) = plan.get(&i)
                && !e.stale
                && inst.deps.iter().all(|d| from_record[d.upstream])
            {
                events.emit(
                    Some(name),
                    EventKind::InstanceSkipped {
                        reason: "up_to_date",
                        action_key: e.key.to_hex(),
                        early_cutoff: false,
                    },
                );
                let outs = snap.records[i]
                    .success
                    .as_ref()
                    .map(Success::output_digests)
                    .unwrap_or_default();
                outcome[i] = Some(Outcome::Succeeded(outs));
                from_record[i] = true;
                report.counts.up_to_date += 1;
                sched.finish(i);
                continue;
            }

            // The real key, from what upstreams produced in this run.
            let (files, now) = match snap.current_inputs(i) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("warning: {e}; using the inputs found when the build started");
                    (snap.inputs[i].clone(), BTreeMap::new())
                }
            };
            let digest_of = |p: &str| match now.get(p) {
                Some(d) => *d,
                None => snap.digest(p),
            };
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
            match fresh {
                Freshness::Fresh => {
                    let early_cutoff = plan.get(&i).is_some_and(|e| e.stale);
                    if early_cutoff {
                        done_planned += 1;
                    }
                    events.emit(
                        Some(name),
                        EventKind::InstanceSkipped {
                            reason: "up_to_date",
                            action_key: key.to_hex(),
                            early_cutoff,
                        },
                    );
                    let outs = snap.records[i]
                        .success
                        .as_ref()
                        .map(Success::output_digests)
                        .unwrap_or_default();
                    outcome[i] = Some(Outcome::Succeeded(outs));
                    report.counts.up_to_date += 1;
                    sched.finish(i);
                }
                Freshness::Stale(whys) => {
                    events.emit(
                        Some(name),
                        EventKind::InstanceInvalidated {
                            reasons: plan::reason::codes(&whys),
                            details: whys,
                        },
                    );
                    let job = Job {
                        name: name.to_owned(),
                        command: {
                            let present: Vec<&str> =
                                parts.inputs.keys().map(String::as_str).collect();
                            inst.command_line(&present).unwrap_or_default()
                        },
                        cwd: if inst.cwd.is_empty() {
                            root.clone()
                        } else {
                            root.join(&inst.cwd)
                        },
                        env: job_env(inst, &opts.run_id),
                        log: layout.log_file(&opts.run_id, name),
                    };
                    events.emit(
                        Some(name),
                        EventKind::InstanceStarted {
                            attempt: 1,
                            command: job.command.clone(),
                        },
                    );
                    let prepared = prepare_outputs(&root, inst);
                    started.insert(i, Started { parts, key });
                    let tx = tx.clone();
                    let runner = Arc::clone(&runner);
                    let root = root.clone();
                    let outputs: Vec<String> =
                        inst.outputs.iter().map(|o| o.path.clone()).collect();
                    let has_run = inst.run.is_some();
                    pool.spawn(move || {
                        let t0 = Instant::now();
                        let exit = match prepared {
                            Err(e) => Exit::Spawn(e),
                            Ok(()) if has_run => runner.run(&job),
                            Ok(()) => Exit::Success,
                        };
                        let outputs = if exit == Exit::Success {
                            let digests = fs::digest_paths(&root, &outputs, |_| None);
                            outputs.into_iter().zip(digests).collect()
                        } else {
                            Vec::new()
                        };
                        let _ = tx.send(Done {
                            instance: i,
                            exit,
                            outputs,
                            duration: t0.elapsed(),
                        });
                    });
                }
            }
        }

        if started.is_empty() {
            break;
        }
        let done = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(d) => d,
            Err(RecvTimeoutError::Timeout) => {
                if signal::interrupted() && !report.interrupted {
                    report.interrupted = true;
                    stop = true;
                    runner.interrupt_all();
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let i = done.instance;
        let Some(st) = started.remove(&i) else {
            continue;
        };
        let inst = &project.instances[i];
        let name = inst.name.as_str();
        let duration_ms = done.duration.as_millis() as u64;
        let log = layout
            .log_file(&opts.run_id, name)
            .strip_prefix(&root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        done_planned += 1;

        let failure = match &done.exit {
            Exit::Success => {
                let missing: Vec<&str> = done
                    .outputs
                    .iter()
                    .filter(|(_, r)| !matches!(r, Ok(PathDigest::Present { .. })))
                    .map(|(p, _)| p.as_str())
                    .collect();
                if missing.is_empty() {
                    None
                } else {
                    Some((
                        FailureKind::MissingOutput,
                        None,
                        None,
                        format!(
                            "the command succeeded but did not produce {}",
                            missing
                                .iter()
                                .map(|m| format!("`{m}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                }
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
        };

        let now = fs::now_ns();
        match failure {
            None => {
                let mut outputs = BTreeMap::new();
                let mut metas = BTreeMap::new();
                for (path, r) in done.outputs {
                    if let Ok(PathDigest::Present {
                        stat,
                        digest,
                        refreshed,
                    }) = r
                    {
                        outputs.insert(path.clone(), digest);
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
                            pending.digests.push((path, Some(cached_to_row(&c))));
                        }
                    }
                }
                let built_from =
                    serde_json::json!({ "inputs": st.parts.inputs, "upstream": st.parts.upstream })
                        .to_string();
                for (path, meta) in &metas {
                    pending.outputs.push(OutputRecord {
                        path: path.clone(),
                        digest: meta.digest.0,
                        size: meta.size,
                        instance: name.to_owned(),
                        action_key: st.key.0,
                        run_id: opts.run_id.clone(),
                        built_from: built_from.clone(),
                        recorded_at_ns: now,
                    });
                }
                let manifest = Manifest {
                    parts: st.parts,
                    outputs: metas,
                };
                pending.results.push(ResultUpdate::Succeeded {
                    instance: name.to_owned(),
                    record: SuccessRecord {
                        action_key: st.key.0,
                        manifest: manifest.encode(),
                        run_id: opts.run_id.clone(),
                        finished_at_ns: now,
                    },
                });
                events.emit(
                    Some(name),
                    EventKind::InstanceCompleted {
                        action_key: st.key.to_hex(),
                        outputs: outputs
                            .iter()
                            .map(|(p, d)| (p.clone(), d.to_hex()))
                            .collect(),
                        duration_ms,
                    },
                );
                outcome[i] = Some(Outcome::Succeeded(outputs));
                report.counts.succeeded += 1;
            }
            Some((kind, exit_code, signal, message)) => {
                remove_outputs(&root, inst);
                pending.results.push(ResultUpdate::Failed {
                    instance: name.to_owned(),
                    run_id: opts.run_id.clone(),
                    finished_at_ns: now,
                });
                events.emit(
                    Some(name),
                    EventKind::InstanceFailed {
                        kind,
                        exit_code,
                        signal,
                        message,
                        log,
                        duration_ms,
                    },
                );
                outcome[i] = Some(Outcome::Failed);
                report.counts.failed += 1;
                report.failed.push(name.to_owned());
                if !opts.keep_going {
                    stop = true;
                }
            }
        }
        events.emit(
            None,
            EventKind::Progress {
                done: done_planned,
                total: planned_total.max(done_planned),
                running: started.len(),
            },
        );
        sched.finish(i);
        if pending.since.is_none() {
            pending.since = Some(Instant::now());
        }
        if pending.len() >= 256
            || pending
                .since
                .is_some_and(|t| t.elapsed() > Duration::from_secs(1))
        {
            pending.flush(store);
        }
        if signal::interrupted() && !report.interrupted {
            report.interrupted = true;
            stop = true;
            runner.interrupt_all();
        }
    }
    pending.flush(store);

    // Whatever never started: blocked by a failed upstream, or by the stop.
    for i in sched.unstarted() {
        let inst = &project.instances[i];
        let mut by = Vec::new();
        let mut any_failed = false;
        for d in inst.deps.iter().filter(|d| d.hard) {
            match outcome[d.upstream] {
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
        } else if report.interrupted {
            BlockReason::Interrupted
        } else {
            BlockReason::StoppedAfterFailure
        };
        events.emit(
            Some(&inst.name),
            EventKind::InstanceBlocked {
                reason,
                blocked_by: by,
            },
        );
        outcome[i] = Some(Outcome::Blocked);
        report.counts.blocked += 1;
        report.blocked.push(inst.name.clone());
    }
    let duration_ms = started_at.elapsed().as_millis() as u64;
    if report.counts.failed == 0 && report.counts.blocked == 0 && !report.interrupted {
        events.emit(
            None,
            EventKind::RunCompleted {
                counts: report.counts,
                duration_ms,
            },
        );
    } else {
        events.emit(
            None,
            EventKind::RunFailed {
                counts: report.counts,
                failed: report.failed.clone(),
                blocked: report.blocked.clone(),
                interrupted: report.interrupted,
                duration_ms,
            },
        );
    }
    events.flush();
    Ok(report)
}

fn job_env(inst: &Instance, run_id: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("ORCH_RUN_ID".to_owned(), run_id.to_owned()),
        ("ORCH_PHASE".to_owned(), inst.phase.clone()),
        ("ORCH_INSTANCE".to_owned(), inst.name.clone()),
    ];
    for (k, v) in &inst.env {
        if let crate::model::EnvValue::Set(s) = v {
            env.push((k.clone(), s.clone()));
        }
    }
    env
}

/// Creates output parent directories and removes old file outputs, so a command that
/// fails to write an output is caught instead of leaving last run's file in place.
fn prepare_outputs(root: &std::path::Path, inst: &Instance) -> Result<(), String> {
    for o in &inst.outputs {
        let path = root.join(&o.path);
        let parent = if o.dir {
            Some(path.as_path())
        } else {
            path.parent()
        };
        if let Some(p) = parent {
            std::fs::create_dir_all(p)
                .map_err(|e| format!("cannot create directory `{}`: {e}", p.display()))?;
        }
        if !o.dir {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove old output `{}`: {e}", o.path)),
            }
        }
    }
    Ok(())
}

/// Removes a failed instance's outputs so a half-written file is never taken for a result.
fn remove_outputs(root: &std::path::Path, inst: &Instance) {
    for o in &inst.outputs {
        let path = root.join(&o.path);
        let _ = if o.dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}
