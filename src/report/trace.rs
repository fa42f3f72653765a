//! The run as a Chrome trace (the trace event format that Perfetto and
//! `chrome://tracing` open): one complete (`X`) event per bar of the timeline, on a
//! process per kind of row (this machine, the cache, each cluster executor) and a
//! thread per row (a worker slot, a cluster job slot).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Report;
use super::timeline::Lane;

/// The process and thread ids of a row: this machine is process 1 with thread = worker
/// slot, cache restores process 2, cluster executors 3, 4, … in name order.
fn ids(lane: &Lane, executors: &BTreeMap<&str, u64>) -> (u64, u64) {
    match lane {
        Lane::Worker(w) => (1, *w as u64),
        Lane::Cache => (2, 0),
        Lane::Remote(e, k) => (executors.get(e.as_str()).copied().unwrap_or(3), *k as u64),
    }
}

/// The trace of `report`, as JSON.
pub fn trace(report: &Report) -> Value {
    let t = &report.timeline;
    let executors: BTreeMap<&str, u64> = {
        let mut names: Vec<&str> = t
            .bars
            .iter()
            .filter_map(|b| match &b.lane {
                Lane::Remote(e, _) => Some(e.as_str()),
                _ => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().zip(3..).collect()
    };
    let mut events = Vec::new();
    let mut named: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut processes: BTreeMap<u64, String> = BTreeMap::new();
    for b in &t.bars {
        let (pid, tid) = ids(&b.lane, &executors);
        named.entry((pid, tid)).or_insert_with(|| b.lane.label());
        processes.entry(pid).or_insert_with(|| match &b.lane {
            Lane::Worker(_) => "local".to_owned(),
            Lane::Cache => "cache".to_owned(),
            Lane::Remote(e, _) => e.clone(),
        });
        let mut args = json!({
            "instance": b.instance,
            "outcome": b.outcome.word(),
            "attempts": b.attempts,
            "critical": report.is_critical(&b.instance),
        });
        if let Some(id) = &b.job_id {
            args["job_id"] = json!(id);
        }
        events.push(json!({
            "name": b.name,
            "cat": b.outcome.word(),
            "ph": "X",
            "ts": b.start_ms.saturating_mul(1000),
            "dur": b.duration_ms().saturating_mul(1000),
            "pid": pid,
            "tid": tid,
            "args": args,
        }));
    }
    let mut meta = Vec::new();
    for (pid, name) in processes {
        meta.push(json!({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}}));
    }
    for ((pid, tid), name) in named {
        meta.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}));
        meta.push(json!({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid, "args": {"sort_index": tid}}));
    }
    meta.extend(events);
    json!({
        "traceEvents": meta,
        "displayTimeUnit": "ms",
        "otherData": {
            "run_id": t.run_id,
            "started": t.started,
            "status": t.status,
            "orch": env!("CARGO_PKG_VERSION"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::timeline::Timeline;

    #[test]
    fn one_complete_event_per_bar_on_its_worker() {
        let text = r#"{"type":"run_started","ts":"2026-01-01T00:00:00.000Z"}
{"type":"instance_started","instance":"a","ts":"2026-01-01T00:00:00.010Z","worker":0}
{"type":"instance_started","instance":"b[x=\"1\"]","ts":"2026-01-01T00:00:00.020Z","worker":1}
{"type":"instance_completed","instance":"a","ts":"2026-01-01T00:00:01.010Z"}
{"type":"instance_failed","instance":"b[x=\"1\"]","ts":"2026-01-01T00:00:00.520Z"}
{"type":"instance_cached","instance":"c","ts":"2026-01-01T00:00:00.030Z"}
{"type":"instance_started","instance":"r","ts":"2026-01-01T00:00:00.040Z","executor":"hpc","job_id":"77"}
"#;
        let report = Report::new(Timeline::from_events("run", text.as_bytes()), None);
        let written = serde_json::to_string(&trace(&report)).unwrap_or_default();
        let v: Value = serde_json::from_str(&written).unwrap_or(Value::Null);
        let events = v["traceEvents"].as_array().cloned().unwrap_or_default();
        let complete: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        let mut names: Vec<&str> = complete.iter().filter_map(|e| e["name"].as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["a", "b[x=\"1\"]", "c", "r"]);
        let a = complete.iter().find(|e| e["name"] == "a").cloned().cloned();
        let a = a.unwrap_or(Value::Null);
        assert_eq!(
            (a["ts"].as_u64(), a["dur"].as_u64()),
            (Some(10_000), Some(1_000_000))
        );
        assert_eq!((a["pid"].as_u64(), a["tid"].as_u64()), (Some(1), Some(0)));
        let b = complete
            .iter()
            .find(|e| e["cat"] == "failed")
            .cloned()
            .cloned();
        assert_eq!(b.and_then(|b| b["tid"].as_u64()), Some(1));
        let r = complete.iter().find(|e| e["name"] == "r").cloned().cloned();
        let r = r.unwrap_or(Value::Null);
        assert_eq!(
            (r["pid"].as_u64(), r["args"]["job_id"].as_str()),
            (Some(3), Some("77"))
        );
        for e in &complete {
            assert!(
                e["ts"].is_u64() && e["dur"].is_u64() && e["pid"].is_u64() && e["tid"].is_u64()
            );
        }
        let threads = events.iter().filter(|e| e["name"] == "thread_name").count();
        assert_eq!(threads, 4, "worker 0, worker 1, cache, hpc 0");
    }
}
