//! A run's timeline, read from its events: when each instance and shard started and
//! ended, on which row (worker slot, cache, cluster job), and how it ended.
//!
//! The events are untrusted input (a file anyone can edit): every field is read as
//! optional, lines that are not JSON are counted and skipped, and nothing here panics.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// How a bar (or an instance) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Ran and succeeded.
    Ok,
    /// Restored from the cache.
    Cached,
    /// Ran and failed.
    Failed,
    /// Started and never ended in this run (interrupted, or the run stopped).
    Stopped,
}

impl Outcome {
    /// The word (and CSS class) the page and the trace use.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Cached => "cached",
            Outcome::Failed => "failed",
            Outcome::Stopped => "stopped",
        }
    }
}

/// The row a bar is drawn on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    /// A worker slot on this machine.
    Worker(usize),
    /// Cache restores.
    Cache,
    /// A job slot of a cluster executor (slots numbered at report time).
    Remote(String, usize),
}

impl Lane {
    /// The row's label.
    pub fn label(&self) -> String {
        match self {
            Lane::Worker(w) => format!("worker {w}"),
            Lane::Cache => "cache".to_owned(),
            Lane::Remote(e, k) => format!("{e} {k}"),
        }
    }
}

/// One job on the timeline: a whole instance, one shard, or one cache restore.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// The name events give it (`…#INDEX` for a shard).
    pub name: String,
    /// Its instance (the name without `#INDEX`).
    pub instance: String,
    /// Its row.
    pub lane: Lane,
    /// Start, in ms from the run's start.
    pub start_ms: u64,
    /// End, in ms from the run's start.
    pub end_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Attempts made (1 without retries).
    pub attempts: u64,
    /// The cluster's id for its job.
    pub job_id: Option<String>,
}

impl Bar {
    /// How long it took.
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

/// What became of one instance in the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Its name.
    pub name: String,
    /// `ok`, `cached`, `failed`, `stopped`, `blocked` or `up to date`.
    pub status: &'static str,
    /// When it started, in ms from the run's start (None when it did not run).
    pub start_ms: Option<u64>,
    /// When it ended.
    pub end_ms: Option<u64>,
    /// Shards it ran as (0 when not sharded).
    pub shards: usize,
}

impl Item {
    /// Its wall time in the run (0 when it did not run).
    pub fn duration_ms(&self) -> u64 {
        match (self.start_ms, self.end_ms) {
            (Some(s), Some(e)) => e.saturating_sub(s),
            _ => 0,
        }
    }
}

/// A cache restore.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheHit {
    /// The instance.
    pub name: String,
    /// `local` or `remote`.
    pub source: String,
    /// Bytes restored.
    pub bytes: u64,
    /// How long building it had taken.
    pub saved_ms: u64,
}

/// A failed instance or shard.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// Its name.
    pub name: String,
    /// How it failed (`exit`, `timeout`, …).
    pub kind: String,
    /// Its exit code, for `exit`.
    pub exit_code: Option<i64>,
    /// One line for humans.
    pub message: String,
    /// Its log, project-relative.
    pub log: String,
}

/// An instance that did not run because of others.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    /// Its name.
    pub name: String,
    /// Why (`upstream_failed`, …).
    pub reason: String,
    /// The instances in its way.
    pub by: Vec<String>,
}

/// Everything the report shows about one run.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// The run id.
    pub run_id: String,
    /// When it started (RFC 3339, as events give it).
    pub started: String,
    /// Its wall time.
    pub duration_ms: u64,
    /// `succeeded`, `failed`, `interrupted` or `unfinished`.
    pub status: String,
    /// `-j`.
    pub jobs: Option<u64>,
    /// Instances by outcome, from the run's last event (`total`, `succeeded`, …).
    pub counts: BTreeMap<String, u64>,
    /// Jobs on rows, sorted by row then start.
    pub bars: Vec<Bar>,
    /// Every instance that has an event, by name.
    pub items: BTreeMap<String, Item>,
    /// Cache restores, in the order they happened.
    pub cache_hits: Vec<CacheHit>,
    /// Failures, in the order they happened.
    pub failures: Vec<Failure>,
    /// Blocked instances, in the order reported.
    pub blocked: Vec<Blocked>,
    /// Upstream links events name (`soft_dependency_unmet`): instance → upstreams.
    pub links: BTreeMap<String, BTreeSet<String>>,
    /// Lines that were not JSON objects (a partial last line, a hand edit).
    pub unreadable: usize,
}

/// A started job while its events are read.
#[derive(Default)]
struct Open {
    start: Option<u64>,
    end: Option<u64>,
    outcome: Option<Outcome>,
    attempts: u64,
    worker: Option<usize>,
    executor: Option<String>,
    job_id: Option<String>,
    shard: bool,
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn u64_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Milliseconds since the epoch of an event's `ts`.
fn ts_ms(v: &Value) -> Option<u64> {
    let ts = v.get("ts")?.as_str()?;
    let t = humantime::parse_rfc3339_weak(ts).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    u64::try_from(ms).ok()
}

/// The instance a shard's name belongs to (`a#3` → `a`).
pub fn instance_of(name: &str) -> &str {
    match name.rsplit_once('#') {
        Some((base, index)) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => {
            base
        }
        _ => name,
    }
}

impl Timeline {
    /// Reads the events of run `run_id` (the bytes of its `events.jsonl`).
    pub fn from_events(run_id: &str, text: &[u8]) -> Timeline {
        let text = String::from_utf8_lossy(text);
        let mut t = Timeline {
            run_id: run_id.to_owned(),
            status: "unfinished".to_owned(),
            ..Timeline::default()
        };
        let mut events = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Value>(line) {
                Ok(v @ Value::Object(_)) => events.push(v),
                _ => t.unreadable += 1,
            }
        }
        let origin = events
            .iter()
            .find(|e| e["type"] == "run_started")
            .and_then(ts_ms)
            .or_else(|| events.iter().filter_map(ts_ms).min())
            .unwrap_or(0);
        let at = |e: &Value| ts_ms(e).map(|ms| ms.saturating_sub(origin));
        let mut open: BTreeMap<String, Open> = BTreeMap::new();
        let mut sharded: BTreeSet<String> = BTreeSet::new();
        let mut cached: BTreeMap<String, u64> = BTreeMap::new();
        let mut skipped: BTreeSet<String> = BTreeSet::new();
        let mut blocked: BTreeSet<String> = BTreeSet::new();
        let mut last = 0;
        let mut end: Option<u64> = None;
        for e in &events {
            if let Some(ms) = at(e) {
                last = last.max(ms);
            }
            let name = str_of(e, "instance").filter(|n| !n.is_empty());
            let ty = e["type"].as_str().unwrap_or("");
            match (ty, name) {
                ("run_started", _) => {
                    t.started = str_of(e, "ts").unwrap_or_default();
                    t.jobs = u64_of(e, "jobs");
                }
                ("instance_started", Some(n)) => {
                    let o = open.entry(n.clone()).or_default();
                    o.start = o.start.or(at(e));
                    o.attempts = o.attempts.max(u64_of(e, "attempt").unwrap_or(1));
                    o.worker = o
                        .worker
                        .or_else(|| u64_of(e, "worker").and_then(|w| usize::try_from(w).ok()));
                    o.executor = o.executor.take().or_else(|| str_of(e, "executor"));
                    o.job_id = str_of(e, "job_id").or(o.job_id.take());
                    o.shard = e.get("shard").is_some_and(Value::is_object) || instance_of(&n) != n;
                    if o.shard {
                        sharded.insert(instance_of(&n).to_owned());
                    }
                }
                ("shard_plan", Some(n)) => {
                    sharded.insert(n);
                }
                ("instance_completed" | "instance_failed", Some(n)) => {
                    let failed = ty == "instance_failed";
                    let o = open.entry(n.clone()).or_default();
                    o.end = at(e);
                    o.outcome = Some(if failed { Outcome::Failed } else { Outcome::Ok });
                    if failed {
                        t.failures.push(Failure {
                            name: n,
                            kind: str_of(e, "kind").unwrap_or_default(),
                            exit_code: e.get("exit_code").and_then(Value::as_i64),
                            message: str_of(e, "message").unwrap_or_default(),
                            log: str_of(e, "log").unwrap_or_default(),
                        });
                    }
                }
                ("instance_cached", Some(n)) => {
                    cached.insert(n.clone(), at(e).unwrap_or(0));
                    t.cache_hits.push(CacheHit {
                        name: n,
                        source: str_of(e, "source").unwrap_or_default(),
                        bytes: u64_of(e, "bytes").unwrap_or(0),
                        saved_ms: u64_of(e, "saved_ms").unwrap_or(0),
                    });
                }
                ("instance_skipped", Some(n)) => {
                    skipped.insert(n);
                }
                ("instance_blocked", Some(n)) => {
                    // A shard stopped by an interruption ends here; its instance is
                    // reported blocked on its own.
                    if let Some(o) = open.get_mut(&n) {
                        o.end = o.end.or(at(e));
                        o.outcome = o.outcome.or(Some(Outcome::Stopped));
                        continue;
                    }
                    let by = e
                        .get("blocked_by")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    blocked.insert(n.clone());
                    t.blocked.push(Blocked {
                        name: n,
                        reason: str_of(e, "reason").unwrap_or_default(),
                        by,
                    });
                }
                ("soft_dependency_unmet", Some(n)) => {
                    if let Some(up) = str_of(e, "upstream") {
                        t.links.entry(n).or_default().insert(up);
                    }
                }
                ("run_completed" | "run_failed", _) => {
                    end = at(e);
                    t.status = if ty == "run_completed" {
                        "succeeded"
                    } else if e["interrupted"] == true {
                        "interrupted"
                    } else {
                        "failed"
                    }
                    .to_owned();
                    if let Some(Value::Object(c)) = e.get("counts") {
                        for (k, v) in c {
                            if let Some(n) = v.as_u64() {
                                t.counts.insert(k.clone(), n);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let run_end = end.unwrap_or(last);
        t.duration_ms = run_end;

        let mut bars = Vec::new();
        for (name, o) in &open {
            let start = o.start.unwrap_or(0);
            let end = o.end.unwrap_or(run_end).max(start);
            let outcome = o.outcome.unwrap_or(Outcome::Stopped);
            if sharded.contains(name) && !o.shard {
                // A sharded instance's own events span its shards; its shards are the bars.
                t.items.insert(
                    name.clone(),
                    Item {
                        name: name.clone(),
                        status: outcome.word(),
                        start_ms: Some(start),
                        end_ms: Some(end),
                        shards: 0,
                    },
                );
                continue;
            }
            let lane = match (&o.executor, o.worker) {
                (None, Some(w)) => Some(Lane::Worker(w)),
                _ => None,
            };
            bars.push((
                o.executor.clone(),
                lane,
                Bar {
                    name: name.clone(),
                    instance: instance_of(name).to_owned(),
                    lane: Lane::Cache,
                    start_ms: start,
                    end_ms: end,
                    outcome,
                    attempts: o.attempts.max(1),
                    job_id: o.job_id.clone(),
                },
            ));
        }
        let mut bars = assign_lanes(bars);
        for (name, &ms) in &cached {
            bars.push(Bar {
                name: name.clone(),
                instance: name.clone(),
                lane: Lane::Cache,
                start_ms: ms,
                end_ms: ms,
                outcome: Outcome::Cached,
                attempts: 0,
                job_id: None,
            });
        }
        bars.sort_by(|a, b| (&a.lane, a.start_ms, &a.name).cmp(&(&b.lane, b.start_ms, &b.name)));
        // Instances: whole ones from their bars, sharded ones from their own events
        // (entered above), widened to cover their shards.
        for b in &bars {
            if b.name != b.instance {
                let item = t.items.entry(b.instance.clone()).or_insert_with(|| Item {
                    name: b.instance.clone(),
                    status: b.outcome.word(),
                    start_ms: Some(b.start_ms),
                    end_ms: Some(b.end_ms),
                    shards: 0,
                });
                item.shards += 1;
                item.start_ms = Some(item.start_ms.map_or(b.start_ms, |s| s.min(b.start_ms)));
                item.end_ms = Some(item.end_ms.map_or(b.end_ms, |e| e.max(b.end_ms)));
                continue;
            }
            t.items.insert(
                b.name.clone(),
                Item {
                    name: b.name.clone(),
                    status: b.outcome.word(),
                    start_ms: Some(b.start_ms),
                    end_ms: Some(b.end_ms),
                    shards: 0,
                },
            );
        }
        for (set, status) in [(&skipped, "up to date"), (&blocked, "blocked")] {
            for n in set {
                t.items.entry(n.clone()).or_insert_with(|| Item {
                    name: n.clone(),
                    status,
                    start_ms: None,
                    end_ms: None,
                    shards: 0,
                });
            }
        }
        t.bars = bars;
        t
    }
}

/// Rows for jobs: this machine's recorded worker slots when every local job has one
/// (runs of older versions have none), else slots packed here (each job on the lowest
/// row free at its start); cluster jobs packed the same way per executor.
fn assign_lanes(jobs: Vec<(Option<String>, Option<Lane>, Bar)>) -> Vec<Bar> {
    let all_local_recorded = jobs
        .iter()
        .all(|(e, lane, _)| e.is_some() || lane.is_some());
    let mut out = Vec::with_capacity(jobs.len());
    let mut to_pack: BTreeMap<Option<String>, Vec<Bar>> = BTreeMap::new();
    for (executor, lane, mut bar) in jobs {
        match (executor, lane) {
            (None, Some(lane)) if all_local_recorded => {
                bar.lane = lane;
                out.push(bar);
            }
            (executor, _) => to_pack.entry(executor).or_default().push(bar),
        }
    }
    for (executor, mut bars) in to_pack {
        bars.sort_by(|a, b| (a.start_ms, &a.name).cmp(&(b.start_ms, &b.name)));
        let mut ends: Vec<u64> = Vec::new();
        for mut bar in bars {
            let k = match ends.iter().position(|&e| e <= bar.start_ms) {
                Some(k) => k,
                None => {
                    ends.push(0);
                    ends.len() - 1
                }
            };
            ends[k] = bar.end_ms;
            bar.lane = match &executor {
                Some(e) => Lane::Remote(e.clone(), k),
                None => Lane::Worker(k),
            };
            out.push(bar);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, ms: u64, rest: &str) -> String {
        format!(
            r#"{{"v":1,"seq":{seq},"ts":"2026-01-01T00:00:{:02}.{:03}Z","run_id":"r",{rest}}}"#,
            ms / 1000,
            ms % 1000
        )
    }

    #[test]
    fn bars_rows_and_outcomes() {
        let lines = [
            ev(1, 0, r#""type":"run_started","jobs":2"#),
            ev(
                2,
                10,
                r#""type":"instance_started","instance":"a","attempt":1,"command":"x","worker":0"#,
            ),
            ev(
                3,
                20,
                r#""type":"instance_started","instance":"b","attempt":1,"command":"x","worker":1"#,
            ),
            ev(
                4,
                30,
                r#""type":"instance_cached","instance":"c","source":"local","bytes":5,"saved_ms":7"#,
            ),
            ev(5, 110, r#""type":"instance_completed","instance":"a""#),
            ev(
                6,
                220,
                r#""type":"instance_failed","instance":"b","kind":"exit","exit_code":3,"message":"exited with 3","log":"l""#,
            ),
            ev(
                7,
                230,
                r#""type":"instance_blocked","instance":"d","reason":"upstream_failed","blocked_by":["b"]"#,
            ),
            "not json {".to_owned(),
            ev(
                8,
                240,
                r#""type":"run_failed","interrupted":false,"counts":{"total":4,"failed":1}"#,
            ),
        ];
        let t = Timeline::from_events("r", lines.join("\n").as_bytes());
        assert_eq!(t.unreadable, 1);
        assert_eq!(t.status, "failed");
        assert_eq!(t.duration_ms, 240);
        assert_eq!(t.counts.get("total"), Some(&4));
        let rows: Vec<(String, &str, u64, u64)> = t
            .bars
            .iter()
            .map(|b| (b.lane.label(), b.outcome.word(), b.start_ms, b.end_ms))
            .collect();
        assert_eq!(
            rows,
            [
                ("worker 0".to_owned(), "ok", 10, 110),
                ("worker 1".to_owned(), "failed", 20, 220),
                ("cache".to_owned(), "cached", 30, 30),
            ]
        );
        assert_eq!(t.failures[0].exit_code, Some(3));
        assert_eq!(t.blocked[0].by, ["b"]);
        assert_eq!(t.items.len(), 4);
        assert_eq!(t.items["d"].status, "blocked");
    }

    #[test]
    fn shards_are_bars_and_their_instance_spans_them() {
        let lines = [
            ev(1, 0, r#""type":"run_started""#),
            ev(
                2,
                5,
                r#""type":"instance_started","instance":"s","attempt":1,"command":"x""#,
            ),
            ev(3, 6, r#""type":"shard_plan","instance":"s","shards":2"#),
            ev(
                4,
                10,
                r##""type":"instance_started","instance":"s#0","attempt":1,"command":"x","shard":{"index":0,"count":2,"key":"k"},"worker":0"##,
            ),
            ev(
                5,
                12,
                r##""type":"instance_started","instance":"s#1","attempt":1,"command":"x","shard":{"index":1,"count":2,"key":"j"},"worker":1"##,
            ),
            ev(6, 50, r##""type":"instance_completed","instance":"s#0""##),
            ev(7, 60, r##""type":"instance_completed","instance":"s#1""##),
            ev(8, 70, r#""type":"instance_completed","instance":"s""#),
        ];
        let t = Timeline::from_events("r", lines.join("\n").as_bytes());
        let names: Vec<&str> = t.bars.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["s#0", "s#1"]);
        assert!(t.bars.iter().all(|b| b.instance == "s"));
        let s = &t.items["s"];
        assert_eq!((s.start_ms, s.end_ms, s.shards), (Some(5), Some(70), 2));
        assert_eq!(t.status, "unfinished");
    }

    #[test]
    fn jobs_without_recorded_workers_are_packed_on_rows() {
        let lines = [
            ev(1, 0, r#""type":"run_started""#),
            ev(2, 0, r#""type":"instance_started","instance":"a""#),
            ev(3, 1, r#""type":"instance_started","instance":"b""#),
            ev(4, 5, r#""type":"instance_completed","instance":"a""#),
            ev(5, 6, r#""type":"instance_started","instance":"c""#),
            ev(
                6,
                7,
                r#""type":"instance_started","instance":"x","executor":"hpc","job_id":"9""#,
            ),
        ];
        let t = Timeline::from_events("r", lines.join("\n").as_bytes());
        let rows: BTreeMap<&str, String> = t
            .bars
            .iter()
            .map(|b| (b.name.as_str(), b.lane.label()))
            .collect();
        assert_eq!(rows["a"], "worker 0");
        assert_eq!(rows["b"], "worker 1");
        assert_eq!(rows["c"], "worker 0");
        assert_eq!(rows["x"], "hpc 0");
        // Never ended: drawn to the run's last event.
        assert_eq!(
            t.bars.iter().find(|b| b.name == "b").map(|b| b.end_ms),
            Some(7)
        );
    }

    #[test]
    fn garbage_does_not_panic() {
        let inputs: [&[u8]; 6] = [
            b"",
            b"\xff\xfe",
            b"[1,2]\n\"s\"\n{}",
            br#"{"type":"instance_started","instance":7,"ts":5,"worker":-1}"#,
            br#"{"type":"instance_completed","instance":"z","ts":"9999-99-99"}"#,
            br#"{"type":"instance_started","instance":"q","worker":18446744073709551615,"ts":"2026-01-01T00:00:00.000Z"}"#,
        ];
        for input in inputs {
            let _ = Timeline::from_events("r", input);
        }
    }
}
