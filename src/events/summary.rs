//! `.orch/runs/RUN_ID/summary.json`: one JSON document per run, written when the run
//! ends (`run_completed` or `run_failed`), built only from the run's events. Its shape is
//! `schemas/run-summary.v1.json`.
//!
//! Instance-level events make the summary; shard events (those with a `shard` field,
//! about `NAME#INDEX`) only count through `shard_plan`, since a shard's failure also
//! fails its instance with an instance-level `instance_failed`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{BlockReason, Counts, Event, EventKind, FailureKind, Sink};

/// Summary format version.
pub const SUMMARY_VERSION: u32 = 1;

/// Writes `summary.json` when the run ends.
pub struct Summary {
    path: PathBuf,
    run_id: String,
    plan_digest: String,
    targets: Vec<String>,
    jobs: usize,
    started: Option<String>,
    shards: ShardCounts,
    ran: BTreeSet<String>,
    durations: BTreeMap<String, u64>,
    failed: BTreeMap<String, Failed>,
    /// Failed shards by instance and index.
    failed_shards: BTreeMap<String, BTreeMap<usize, FailedShard>>,
    blocked: BTreeMap<String, Blocked>,
    retries: BTreeMap<String, u32>,
}

/// The document written (field order is the key order).
#[derive(Debug, Serialize)]
pub struct RunSummary {
    /// [`SUMMARY_VERSION`].
    pub v: u32,
    /// The run.
    pub run_id: String,
    /// The plan digest (`run_started`).
    pub plan_digest: String,
    /// Targets as given (empty: all).
    pub targets: Vec<String>,
    /// `succeeded`, `failed` or `interrupted`.
    pub status: &'static str,
    /// `ts` of the first event.
    pub started: String,
    /// `ts` of the last event.
    pub finished: String,
    /// Wall time, as reported by the final event.
    pub duration_ms: u64,
    /// Parallel jobs.
    pub jobs: usize,
    /// Instances by outcome, from the final event.
    pub counts: Counts,
    /// Shards run and reused, over every sharded instance.
    pub shards: ShardCounts,
    /// Cache hits, bytes downloaded and uploaded, and build time saved.
    pub cache: crate::cache::Stats,
    /// Instances that ran and succeeded, sorted.
    pub instances_ran: Vec<String>,
    /// Failed instances, sorted by name.
    pub failed: Vec<Failed>,
    /// Blocked instances, sorted by name.
    pub blocked: Vec<Blocked>,
    /// Instances that succeeded after more than one attempt, sorted by name.
    pub retried: Vec<Retried>,
    /// Wall time of each instance that ran and succeeded or failed (a sharded
    /// instance's from its split to its merge).
    pub durations: BTreeMap<String, u64>,
}

/// Shards of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShardCounts {
    /// Shards that ran.
    pub ran: usize,
    /// Shards whose recorded results were reused.
    pub reused: usize,
}

/// A failed instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failed {
    /// Its name.
    pub instance: String,
    /// How it failed.
    pub kind: FailureKind,
    /// Exit code, for `exit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal number, for `signal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// One line for humans.
    pub message: String,
    /// Its log, project-relative (empty when there is none).
    pub log: String,
    /// Attempts made.
    pub attempts: u32,
    /// For a sharded instance: its failed shards, by index, each with its key and log.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<FailedShard>,
}

/// One failed shard of a failed instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailedShard {
    /// Its position, from 0.
    pub index: usize,
    /// `{shard.key}`, as it is.
    pub key: String,
    /// How it failed.
    pub kind: FailureKind,
    /// Its log, project-relative (empty when nothing ran).
    pub log: String,
}

/// A blocked instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// Its name.
    pub instance: String,
    /// Why.
    pub reason: BlockReason,
    /// What blocked it.
    pub blocked_by: Vec<String>,
}

/// An instance that succeeded after retrying.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Retried {
    /// Its name.
    pub instance: String,
    /// Attempts made, the successful one included.
    pub attempts: u32,
}

impl Summary {
    /// A sink that writes `path` (`.orch/runs/RUN_ID/summary.json`) when the run ends.
    pub fn new(path: PathBuf) -> Summary {
        Summary {
            path,
            run_id: String::new(),
            plan_digest: String::new(),
            targets: Vec::new(),
            jobs: 0,
            started: None,
            shards: ShardCounts::default(),
            ran: BTreeSet::new(),
            durations: BTreeMap::new(),
            failed: BTreeMap::new(),
            failed_shards: BTreeMap::new(),
            blocked: BTreeMap::new(),
            retries: BTreeMap::new(),
        }
    }

    fn attempts(&self, instance: &str) -> u32 {
        1 + self.retries.get(instance).copied().unwrap_or(0)
    }

    /// The summary as of the final event `end`.
    fn summary(&self, end: &Event) -> Option<RunSummary> {
        let (status, counts, duration_ms, cache) = match &end.kind {
            EventKind::RunCompleted {
                counts,
                duration_ms,
                cache,
            } => ("succeeded", *counts, *duration_ms, *cache),
            EventKind::RunFailed {
                counts,
                interrupted,
                duration_ms,
                cache,
                ..
            } => (
                if *interrupted {
                    "interrupted"
                } else {
                    "failed"
                },
                *counts,
                *duration_ms,
                *cache,
            ),
            _ => return None,
        };
        let failed = self
            .failed
            .values()
            .map(|f| Failed {
                attempts: self.attempts(&f.instance),
                shards: self
                    .failed_shards
                    .get(&f.instance)
                    .map(|s| s.values().cloned().collect())
                    .unwrap_or_default(),
                ..f.clone()
            })
            .collect();
        let retried = self
            .ran
            .iter()
            .filter(|n| self.retries.get(*n).is_some_and(|r| *r > 0))
            .map(|n| Retried {
                instance: n.clone(),
                attempts: self.attempts(n),
            })
            .collect();
        Some(RunSummary {
            v: SUMMARY_VERSION,
            run_id: if self.run_id.is_empty() {
                end.run_id.clone()
            } else {
                self.run_id.clone()
            },
            plan_digest: self.plan_digest.clone(),
            targets: self.targets.clone(),
            status,
            started: self.started.clone().unwrap_or_else(|| end.ts.clone()),
            finished: end.ts.clone(),
            duration_ms,
            jobs: self.jobs,
            counts,
            shards: self.shards,
            cache,
            instances_ran: self.ran.iter().cloned().collect(),
            failed,
            blocked: self.blocked.values().cloned().collect(),
            retried,
            durations: self.durations.clone(),
        })
    }
}

impl Sink for Summary {
    fn event(&mut self, e: &Event) {
        if self.started.is_none() {
            self.started = Some(e.ts.clone());
        }
        let name = e.instance.as_deref().unwrap_or("");
        match &e.kind {
            EventKind::RunStarted {
                plan_digest,
                targets,
                jobs,
                ..
            } => {
                self.run_id = e.run_id.clone();
                self.plan_digest = plan_digest.clone();
                self.targets = targets.clone();
                self.jobs = *jobs;
            }
            EventKind::ShardPlan { reused, .. } => self.shards.reused += reused,
            // Shards that actually started: with fail-fast, some planned ones never do.
            EventKind::InstanceStarted {
                attempt: 1,
                shard: Some(_),
                ..
            } => self.shards.ran += 1,
            EventKind::InstanceRetrying { shard: None, .. } => {
                *self.retries.entry(name.to_owned()).or_default() += 1;
            }
            EventKind::InstanceCompleted {
                duration_ms,
                shard: None,
                ..
            } => {
                self.ran.insert(name.to_owned());
                self.durations.insert(name.to_owned(), *duration_ms);
            }
            EventKind::InstanceFailed {
                kind,
                exit_code,
                signal,
                message,
                log,
                duration_ms,
                shard: None,
            } => {
                self.durations.insert(name.to_owned(), *duration_ms);
                self.failed.insert(
                    name.to_owned(),
                    Failed {
                        instance: name.to_owned(),
                        kind: *kind,
                        exit_code: *exit_code,
                        signal: *signal,
                        message: message.clone(),
                        log: log.clone(),
                        attempts: 1,
                        shards: Vec::new(),
                    },
                );
            }
            EventKind::InstanceFailed {
                kind,
                log,
                shard: Some(shard),
                ..
            } => {
                if let Some(parent) = super::human::shard_parent(name) {
                    self.failed_shards
                        .entry(parent.to_owned())
                        .or_default()
                        .insert(
                            shard.index,
                            FailedShard {
                                index: shard.index,
                                key: shard.key.clone(),
                                kind: *kind,
                                log: log.clone(),
                            },
                        );
                }
            }
            EventKind::InstanceBlocked {
                reason,
                blocked_by,
                shard: None,
            } => {
                self.blocked.insert(
                    name.to_owned(),
                    Blocked {
                        instance: name.to_owned(),
                        reason: *reason,
                        blocked_by: blocked_by.clone(),
                    },
                );
            }
            EventKind::RunCompleted { .. } | EventKind::RunFailed { .. } => {
                if let Some(s) = self.summary(e)
                    && let Err(err) = write_json(&self.path, &s)
                {
                    crate::say!(
                        "warning: cannot write the run summary `{}`: {err}",
                        self.path.display()
                    );
                }
            }
            _ => {}
        }
    }
}

/// Writes `value` as pretty JSON to `path` through a temporary file in the same
/// directory, renamed into place: a reader sees the old file or the whole new one. Not
/// synced: the summary is a record made from `events.jsonl`, and a build must not wait
/// on the disk for it.
fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    write_renamed(path, &text, false)
}

/// Writes `bytes` to `path` through a temporary file renamed into place, creating the
/// parent directories.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_renamed(path, bytes, true)
}

/// [`write_atomically`], syncing the file before the rename only when `sync`.
fn write_renamed(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".orch-tmp-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if sync {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::ShardRef;
    use serde_json::{Value, json};

    /// Feeds `kinds` (instance, body) as a run's events, numbered and timed.
    fn feed(sink: &mut dyn Sink, kinds: Vec<(Option<&str>, EventKind)>) {
        for (n, (instance, kind)) in kinds.into_iter().enumerate() {
            sink.event(&Event {
                v: 1,
                seq: n as u64 + 1,
                ts: format!("2024-05-01T12:00:{:02}.000Z", n),
                run_id: "r1".to_owned(),
                kind,
                instance: instance.map(str::to_owned),
            });
        }
        sink.flush();
    }

    fn started() -> EventKind {
        EventKind::RunStarted {
            plan_digest: "ab".repeat(32),
            targets: vec!["d".to_owned()],
            jobs: 4,
            keep_going: true,
        }
    }

    fn shard(index: usize) -> Option<ShardRef> {
        Some(ShardRef {
            index,
            count: 3,
            key: format!("k{index}"),
        })
    }

    fn completed(ms: u64, shard: Option<ShardRef>) -> EventKind {
        EventKind::InstanceCompleted {
            action_key: "cd".repeat(32),
            outputs: BTreeMap::new(),
            duration_ms: ms,
            shard,
        }
    }

    fn failed(
        kind: FailureKind,
        code: Option<i32>,
        log: &str,
        shard: Option<ShardRef>,
    ) -> EventKind {
        EventKind::InstanceFailed {
            kind,
            exit_code: code,
            signal: (kind == FailureKind::Signal).then_some(15),
            message: "the command exited with status 3".to_owned(),
            log: log.to_owned(),
            duration_ms: 7,
            shard,
        }
    }

    fn retrying(shard: Option<ShardRef>) -> EventKind {
        EventKind::InstanceRetrying {
            attempt: 1,
            attempts: 3,
            delay_ms: 100,
            kind: FailureKind::Exit,
            message: "the command exited with status 1".to_owned(),
            shard,
        }
    }

    fn counts(
        total: usize,
        succeeded: usize,
        up_to_date: usize,
        failed: usize,
        blocked: usize,
    ) -> Counts {
        Counts {
            total,
            succeeded,
            up_to_date,
            failed,
            blocked,
            cached: 0,
        }
    }

    /// The summary at `path`, checked against `schemas/run-summary.v1.json`.
    fn read(path: &Path) -> Value {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("summary written"))
                .expect("summary is JSON");
        let schema: Value =
            serde_json::from_str(include_str!("../../schemas/run-summary.v1.json")).unwrap();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the summary schema compiles");
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{v:#}\n{errors:#?}");
        v
    }

    #[test]
    fn a_failed_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs/r1/summary.json");
        let mut s = Summary::new(path.clone());
        feed(
            &mut s,
            vec![
                (None, started()),
                (
                    None,
                    EventKind::PlanReady {
                        total: 6,
                        stale: 5,
                        up_to_date: 1,
                        up_to_date_unlisted: 1,
                    },
                ),
                (Some("b"), retrying(None)),
                (Some("b"), retrying(None)),
                (Some("b"), completed(40, None)),
                (
                    Some("t[l=fr]"),
                    EventKind::ShardPlan {
                        strategy: "group",
                        shards: 3,
                        parallel: 2,
                        stale: 2,
                        reused: 1,
                    },
                ),
                (
                    Some("t[l=fr]#0"),
                    EventKind::InstanceStarted {
                        attempt: 1,
                        command: "x".to_owned(),
                        shard: shard(0),
                        executor: None,
                        job_id: None,
                        worker: None,
                    },
                ),
                (Some("t[l=fr]#0"), retrying(shard(0))),
                (
                    Some("t[l=fr]#0"),
                    EventKind::InstanceStarted {
                        attempt: 2,
                        command: "x".to_owned(),
                        shard: shard(0),
                        executor: None,
                        job_id: None,
                        worker: None,
                    },
                ),
                (Some("t[l=fr]#0"), completed(5, shard(0))),
                (
                    Some("t[l=fr]#2"),
                    EventKind::InstanceStarted {
                        attempt: 1,
                        command: "x".to_owned(),
                        shard: shard(2),
                        executor: None,
                        job_id: None,
                        worker: None,
                    },
                ),
                (
                    Some("t[l=fr]#2"),
                    failed(
                        FailureKind::Exit,
                        Some(3),
                        ".orch/logs/r1/t_l=fr_#2.log",
                        shard(2),
                    ),
                ),
                (
                    Some("t[l=fr]"),
                    failed(
                        FailureKind::Exit,
                        Some(3),
                        ".orch/logs/r1/t_l=fr_#2.log",
                        None,
                    ),
                ),
                (Some("c"), retrying(None)),
                (
                    Some("c"),
                    failed(FailureKind::Signal, None, ".orch/logs/r1/c.log", None),
                ),
                (
                    Some("e"),
                    EventKind::InstanceBlocked {
                        reason: BlockReason::UpstreamFailed,
                        blocked_by: vec!["c".to_owned()],
                        shard: None,
                    },
                ),
                (
                    Some("d"),
                    EventKind::InstanceBlocked {
                        reason: BlockReason::StoppedAfterFailure,
                        blocked_by: vec![],
                        shard: None,
                    },
                ),
                (
                    None,
                    EventKind::RunFailed {
                        cache: Default::default(),
                        counts: counts(6, 1, 1, 2, 2),
                        failed: vec!["t[l=fr]".to_owned(), "c".to_owned()],
                        blocked: vec!["e".to_owned(), "d".to_owned()],
                        interrupted: false,
                        duration_ms: 1234,
                    },
                ),
            ],
        );
        let summary = read(&path);
        assert_eq!(
            summary,
            json!({
                "v": 1,
                "run_id": "r1",
                "plan_digest": "ab".repeat(32),
                "targets": ["d"],
                "status": "failed",
                "started": "2024-05-01T12:00:00.000Z",
                "finished": "2024-05-01T12:00:17.000Z",
                "duration_ms": 1234,
                "jobs": 4,
                "counts": {"total": 6, "succeeded": 1, "up_to_date": 1, "failed": 2, "blocked": 2, "cached": 0},
                "shards": {"ran": 2, "reused": 1},
                "cache": {"local_hits": 0, "remote_hits": 0, "bytes_down": 0, "bytes_up": 0, "saved_ms": 0},
                "instances_ran": ["b"],
                "failed": [
                    {
                        "instance": "c",
                        "kind": "signal",
                        "signal": 15,
                        "message": "the command exited with status 3",
                        "log": ".orch/logs/r1/c.log",
                        "attempts": 2
                    },
                    {
                        "instance": "t[l=fr]",
                        "kind": "exit",
                        "exit_code": 3,
                        "message": "the command exited with status 3",
                        "log": ".orch/logs/r1/t_l=fr_#2.log",
                        "attempts": 1,
                        "shards": [{
                            "index": 2,
                            "key": "k2",
                            "kind": "exit",
                            "log": ".orch/logs/r1/t_l=fr_#2.log"
                        }]
                    }
                ],
                "blocked": [
                    {"instance": "d", "reason": "stopped_after_failure", "blocked_by": []},
                    {"instance": "e", "reason": "upstream_failed", "blocked_by": ["c"]}
                ],
                "retried": [{"instance": "b", "attempts": 3}],
                "durations": {"b": 40, "c": 7, "t[l=fr]": 7}
            })
        );
        // Key order is the documented one, whatever serde_json's map does.
        let text = std::fs::read_to_string(&path).unwrap();
        let pos = |k: &str| text.find(&format!("\n  \"{k}\":")).unwrap();
        let order = [
            "v",
            "run_id",
            "plan_digest",
            "targets",
            "status",
            "started",
            "finished",
            "duration_ms",
            "jobs",
            "counts",
            "shards",
            "instances_ran",
            "failed",
            "blocked",
            "retried",
            "durations",
        ];
        assert!(order.windows(2).all(|w| pos(w[0]) < pos(w[1])), "{text}");
        // No temporary file is left next to it.
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["summary.json"]);
    }

    #[test]
    fn a_successful_and_an_interrupted_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        let mut s = Summary::new(path.clone());
        feed(
            &mut s,
            vec![
                (None, started()),
                (Some("a"), completed(3, None)),
                (
                    None,
                    EventKind::RunCompleted {
                        cache: Default::default(),
                        counts: counts(1, 1, 0, 0, 0),
                        duration_ms: 9,
                    },
                ),
            ],
        );
        let v = read(&path);
        assert_eq!(v["status"], "succeeded");
        assert_eq!(v["instances_ran"], json!(["a"]));
        assert_eq!(v["failed"], json!([]));
        assert_eq!(v["retried"], json!([]));
        assert_eq!(v["shards"], json!({"ran": 0, "reused": 0}));

        let path = dir.path().join("interrupted.json");
        let mut s = Summary::new(path.clone());
        feed(
            &mut s,
            vec![
                (None, started()),
                (
                    Some("a"),
                    EventKind::InstanceBlocked {
                        reason: BlockReason::Interrupted,
                        blocked_by: vec![],
                        shard: None,
                    },
                ),
                (
                    None,
                    EventKind::RunFailed {
                        cache: Default::default(),
                        counts: counts(1, 0, 0, 0, 1),
                        failed: vec![],
                        blocked: vec!["a".to_owned()],
                        interrupted: true,
                        duration_ms: 9,
                    },
                ),
            ],
        );
        assert_eq!(read(&path)["status"], "interrupted");
    }

    #[test]
    fn nothing_is_written_before_the_run_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        let mut s = Summary::new(path.clone());
        feed(
            &mut s,
            vec![(None, started()), (Some("a"), completed(3, None))],
        );
        assert!(!path.exists());
    }

    #[test]
    fn a_write_failure_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        // The parent "directory" is a file: the write fails with a warning.
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let path = dir.path().join("file/summary.json");
        let mut s = Summary::new(path.clone());
        feed(
            &mut s,
            vec![
                (None, started()),
                (
                    None,
                    EventKind::RunCompleted {
                        cache: Default::default(),
                        counts: counts(0, 0, 0, 0, 0),
                        duration_ms: 1,
                    },
                ),
            ],
        );
        assert!(!path.exists());
    }
}
