//! `orch runs`: recent runs, newest first: id, start, duration, status and counts
//! (succeeded, cached, up to date, failed, blocked: together, every selected instance).
//!
//! Also the small helpers the history commands share (times, sizes, run status).

use std::fs::{File, TryLockError};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::cli::RunsArgs;
use crate::events::human::duration;
use crate::store::{Layout, RunRecord, Store};
use crate::{EXIT_FAILED, EXIT_OK};

use super::{Global, load, report_diagnostic};

/// Runs `orch runs`.
pub fn run(g: &Global, a: RunsArgs) -> i32 {
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let layout = Layout::new(&l.project.root);
    let store = match open_store(&layout) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let runs = match store.runs(a.limit) {
        Ok(r) => r,
        Err(e) => return report_diagnostic(&e, EXIT_FAILED),
    };
    let newest = match store.runs(1) {
        Ok(r) => r.into_iter().next().map(|r| r.run_id),
        Err(e) => return report_diagnostic(&e, EXIT_FAILED),
    };
    let held = lock_held(&layout);
    let rows: Vec<Row> = runs
        .iter()
        .map(|r| Row::new(r, held && newest.as_deref() == Some(r.run_id.as_str())))
        .collect();
    if a.json {
        let runs: Vec<Value> = rows.iter().map(Row::json).collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "v": 1, "runs": runs })).unwrap_or_default()
        );
        return EXIT_OK;
    }
    if rows.is_empty() {
        outln!("no runs recorded yet (`orch build` records one)");
        return EXIT_OK;
    }
    let table: Vec<[String; 9]> = rows.iter().map(Row::cells).collect();
    let header = [
        "RUN",
        "STARTED",
        "DURATION",
        "STATUS",
        "SUCCEEDED",
        "CACHED",
        "UP TO DATE",
        "FAILED",
        "BLOCKED",
    ];
    let mut widths = header.map(str::len);
    for cells in &table {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (k, (c, w)) in cells.iter().zip(widths).enumerate() {
            if k + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:w$}  "));
            }
        }
        s.trim_end().to_owned()
    };
    outln!("{}", line(&header));
    for cells in &table {
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        outln!("{}", line(&cells));
    }
    EXIT_OK
}

/// One run as shown.
struct Row<'a> {
    run: &'a RunRecord,
    status: String,
    summary: Value,
}

impl<'a> Row<'a> {
    fn new(run: &'a RunRecord, running: bool) -> Row<'a> {
        let summary = run
            .summary
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        Row {
            run,
            status: run_status(run, running).to_owned(),
            summary,
        }
    }

    fn duration_ms(&self) -> Option<u64> {
        let end = self.run.finished_at_ns?;
        Some((end.saturating_sub(self.run.started_at_ns).max(0) / 1_000_000) as u64)
    }

    fn count(&self, key: &str) -> Option<u64> {
        self.summary["counts"][key].as_u64()
    }

    /// The table's cells; the counts (succeeded, restored from the cache, up to date,
    /// failed, blocked) add up to the run's selection.
    fn cells(&self) -> [String; 9] {
        let count = |k: &str| {
            self.count(k)
                .map_or_else(|| "-".to_owned(), |n| n.to_string())
        };
        let took = match self.duration_ms() {
            Some(ms) => duration(ms),
            None if self.status == "running" => {
                let ms = crate::fs::now_ns().saturating_sub(self.run.started_at_ns) / 1_000_000;
                format!("{}…", duration(ms.max(0) as u64))
            }
            None => "-".to_owned(),
        };
        [
            self.run.run_id.clone(),
            time_text(self.run.started_at_ns),
            took,
            self.status.clone(),
            count("succeeded"),
            count("cached"),
            count("up_to_date"),
            count("failed"),
            count("blocked"),
        ]
    }

    fn json(&self) -> Value {
        let list = |k: &str| match &self.summary[k] {
            Value::Array(a) => Value::Array(a.clone()),
            _ => json!([]),
        };
        json!({
            "run_id": self.run.run_id,
            "status": self.status,
            "started_at": time_json(self.run.started_at_ns),
            "finished_at": self.run.finished_at_ns.map(time_json),
            "duration_ms": self.duration_ms(),
            "targets": self.run.targets,
            "plan_digest": self.run.plan_digest,
            "counts": self.summary.get("counts").cloned().unwrap_or(Value::Null),
            "failed": list("failed"),
            "blocked": list("blocked"),
        })
    }
}

/// `succeeded`, `failed`, `interrupted`; for a run with no recorded end, `running` when
/// it is the newest run and the build lock is held, else `unfinished` (it crashed or was
/// killed).
pub(super) fn run_status(run: &RunRecord, newest_and_locked: bool) -> &str {
    match (&run.status, run.finished_at_ns) {
        (Some(s), Some(_)) => s.as_str(),
        _ if newest_and_locked => "running",
        _ => "unfinished",
    }
}

/// Opens the state database for reading (an empty one when none exists yet).
pub(super) fn open_store(layout: &Layout) -> Result<Store, i32> {
    let (store, warning) =
        Store::open_existing_or_empty(layout).map_err(|e| report_diagnostic(&e, EXIT_FAILED))?;
    if let Some(w) = warning {
        crate::say!("warning: {w}");
    }
    Ok(store)
}

/// Whether another process holds the build lock now (without waiting or writing).
pub(super) fn lock_held(layout: &Layout) -> bool {
    let Ok(file) = File::open(layout.lock()) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}

/// `2026-01-31T12:00:00Z`, for people.
pub(super) fn time_text(ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `2026-01-31T12:00:00.123Z`, for JSON.
pub(super) fn time_json(ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`.
pub(super) fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: Option<&str>, finished: Option<i64>) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            plan_digest: String::new(),
            targets: Vec::new(),
            started_at_ns: 1,
            finished_at_ns: finished,
            status: status.map(str::to_owned),
            summary: None,
        }
    }

    #[test]
    fn status_of_unfinished_runs() {
        assert_eq!(run_status(&record(Some("failed"), Some(2)), true), "failed");
        assert_eq!(run_status(&record(None, None), true), "running");
        assert_eq!(run_status(&record(None, None), false), "unfinished");
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(bytes_text(0), "0 B");
        assert_eq!(bytes_text(1023), "1023 B");
        assert_eq!(bytes_text(1536), "1.5 KiB");
        assert_eq!(bytes_text(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(time_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(time_json(1_500_000_000), "1970-01-01T00:00:01.500Z");
    }

    #[test]
    fn lock_is_seen_while_held() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        assert!(!lock_held(&layout), "no lock file: not held");
        layout.ensure()?;
        let lock = crate::store::BuildLock::acquire(&layout.lock(), || {})?;
        assert!(lock_held(&layout));
        drop(lock);
        assert!(!lock_held(&layout));
        Ok(())
    }
}
