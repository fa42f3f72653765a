//! `orch log [RUN]`: the events of a run (default: the latest), one line each, or the
//! raw JSON Lines of `.orch/runs/RUN/events.jsonl` with `--json`.

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::Value;

use crate::cli::LogArgs;
use crate::events::human::duration;
use crate::events::shard_name::{display_key, escape_key};
use crate::store::{Layout, Store};
use crate::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

use super::runs::open_store;
use super::{Global, load, report_diagnostic, report_error};

/// How many recent runs an "unknown run" message lists.
const RECENT: usize = 5;

/// Runs `orch log`.
pub fn run(g: &Global, a: LogArgs) -> i32 {
    let l = match load(g) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let layout = Layout::new(&l.project.root);
    let store = match open_store(&layout) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let run_id = match resolve_run(&store, &layout, a.run.as_deref()) {
        Ok(id) => id,
        Err(code) => return code,
    };
    let path = layout.events(&run_id);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) => {
            return report_error(
                &format!(
                    "the events of run `{run_id}` cannot be read (`.orch/runs/{run_id}/events.jsonl`)"
                ),
                &e,
            );
        }
    };
    if a.json {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&text).and_then(|()| out.flush());
        return EXIT_OK;
    }
    let text = String::from_utf8_lossy(&text);
    let events: Vec<Result<Value, String>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|_| l.to_owned()))
        .collect();
    let width = events
        .iter()
        .filter_map(|e| e.as_ref().ok())
        .filter_map(|e| e["instance"].as_str())
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0);
    for (n, e) in events.iter().enumerate() {
        match e {
            Ok(v) => outln!("{}", line(v, width)),
            // A build killed mid-write leaves a partial last line.
            Err(raw) => outln!("?            unreadable line {}: {raw}", n + 1),
        }
    }
    EXIT_OK
}

/// The run `wanted` names (an id, or a unique prefix of one), else the latest run.
pub(super) fn resolve_run(
    store: &Store,
    layout: &Layout,
    wanted: Option<&str>,
) -> Result<String, i32> {
    let recent = store
        .runs(RECENT)
        .map_err(|e| report_diagnostic(&e, EXIT_FAILED))?;
    let Some(wanted) = wanted else {
        return match recent.first() {
            Some(r) => Ok(r.run_id.clone()),
            None => {
                crate::say!("error: no runs are recorded yet; `orch build` records one");
                Err(EXIT_USAGE)
            }
        };
    };
    let plain = !wanted.is_empty()
        && !wanted.starts_with('.')
        && wanted
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain {
        let known = store
            .run(wanted)
            .map_err(|e| report_diagnostic(&e, EXIT_FAILED))?
            .is_some();
        // A run directory survives a state database that was set aside.
        if known || layout.events(wanted).is_file() {
            return Ok(wanted.to_owned());
        }
        let all = store
            .runs(usize::MAX)
            .map_err(|e| report_diagnostic(&e, EXIT_FAILED))?;
        let matching: Vec<&str> = all
            .iter()
            .map(|r| r.run_id.as_str())
            .filter(|id| id.starts_with(wanted))
            .collect();
        if let [one] = matching.as_slice() {
            return Ok((*one).to_owned());
        }
        if matching.len() > 1 {
            crate::say!(
                "error: `{wanted}` names more than one run: {}",
                matching.join(", ")
            );
            return Err(EXIT_USAGE);
        }
    }
    crate::say!("error: there is no run `{wanted}`");
    if recent.is_empty() {
        crate::say!("help: no runs are recorded yet; `orch build` records one");
    } else {
        let ids: Vec<&str> = recent.iter().map(|r| r.run_id.as_str()).collect();
        crate::say!("help: recent runs (newest first): {}", ids.join(", "));
        crate::say!("help: `orch runs` lists them all");
    }
    Err(EXIT_USAGE)
}

/// One event as a line: time, type, instance, the fields that matter.
fn line(e: &Value, width: usize) -> String {
    let ts = e["ts"].as_str().unwrap_or("");
    // `2026-01-31T12:00:00.123Z` → `12:00:00.123`.
    let time = ts
        .split_once('T')
        .map_or(ts, |(_, t)| t.trim_end_matches('Z'));
    let ty = e["type"].as_str().unwrap_or("?");
    let instance = e["instance"].as_str().unwrap_or("");
    let text = format!("{time:12}  {ty:21}  {instance:width$}  {}", details(e));
    text.trim_end().to_owned()
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn ms(v: &Value) -> String {
    v.as_u64().map_or_else(|| "?".to_owned(), duration)
}

fn short(v: &Value) -> String {
    v.as_str()
        .map_or_else(String::new, |s| s.chars().take(12).collect())
}

fn counts(c: &Value) -> String {
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    format!(
        "{} succeeded, {} up to date, {} failed, {} blocked",
        n("succeeded"),
        n("up_to_date"),
        n("failed"),
        n("blocked")
    )
}

/// ` (shard src/mem.c)`: the key escaped and shortened as the build display shows it,
/// since it is untrusted text (a group value from a data file); "" for a chunk's index.
fn shard(e: &Value) -> String {
    let key = e["shard"]["key"].as_str();
    let index = e["shard"]["index"].as_u64().map(|i| i.to_string());
    match key {
        Some(k) if index.as_deref() != Some(k) => format!(" (shard {})", display_key(k)),
        _ => String::new(),
    }
}

/// The fields of an event that matter, in words; unknown types show their fields as JSON.
fn details(e: &Value) -> String {
    let ty = e["type"].as_str().unwrap_or("");
    match ty {
        "run_started" => {
            let targets = str_list(&e["targets"]);
            let mut s = format!(
                "run {}, targets: {}, jobs {}",
                e["run_id"].as_str().unwrap_or("?"),
                if targets.is_empty() {
                    "all".to_owned()
                } else {
                    targets.join(" ")
                },
                e["jobs"]
            );
            if e["keep_going"] == true {
                s.push_str(", keep going");
            }
            s
        }
        "plan_ready" => {
            let mut s = format!(
                "{} selected, {} stale, {} up to date",
                e["total"], e["stale"], e["up_to_date"]
            );
            // Those get no line below: every selected instance without one was up to date.
            match e["up_to_date_unlisted"].as_u64() {
                Some(n) if n > 0 => {
                    let _ = write!(s, " ({n} not listed below)");
                }
                _ => {}
            }
            s
        }
        "instance_skipped" => {
            let mut s = format!("up to date, key {}", short(&e["action_key"]));
            if e["early_cutoff"] == true {
                s.push_str(" (early cutoff: upstreams reproduced identical outputs)");
            }
            s
        }
        "instance_invalidated" => {
            let whys: Vec<String> = e["details"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|w| {
                            let code = w["reason"].as_str().unwrap_or("?");
                            match w["subject"].as_str() {
                                Some(s) => format!("{code} ({s})"),
                                None => code.to_owned(),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let whys = if whys.is_empty() {
                str_list(&e["reasons"])
            } else {
                whys
            };
            whys.join(", ")
        }
        "instance_started" => {
            let attempt = e["attempt"].as_u64().unwrap_or(1);
            let mut s = String::new();
            if attempt > 1 {
                s.push_str(&format!("attempt {attempt}: "));
            }
            s.push_str("$ ");
            // A command expands `{shard.key}`, which is data: no raw control characters.
            s.push_str(&escape_key(e["command"].as_str().unwrap_or("")));
            s
        }
        "instance_retrying" => format!(
            "attempt {}/{} failed ({}: {}), retrying in {}{}",
            e["attempt"],
            e["attempts"],
            e["kind"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or(""),
            ms(&e["delay_ms"]),
            shard(e)
        ),
        "instance_completed" => {
            let outputs = e["outputs"].as_object().map_or(0, |o| o.len());
            format!(
                "ok in {}, key {}, {outputs} output{}{}",
                ms(&e["duration_ms"]),
                short(&e["action_key"]),
                if outputs == 1 { "" } else { "s" },
                shard(e)
            )
        }
        "instance_failed" => {
            let kind = e["kind"].as_str().unwrap_or("?");
            let how = match (e["exit_code"].as_i64(), e["signal"].as_i64()) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => kind.to_owned(),
            };
            let mut s = format!(
                "failed ({how}) after {}: {}",
                ms(&e["duration_ms"]),
                e["message"].as_str().unwrap_or("")
            );
            if let Some(log) = e["log"].as_str().filter(|l| !l.is_empty()) {
                s.push_str(&format!("; log {log}"));
            }
            s.push_str(&shard(e));
            s
        }
        "instance_blocked" => {
            let by = str_list(&e["blocked_by"]);
            let reason = e["reason"].as_str().unwrap_or("?");
            let text = if by.is_empty() {
                reason.to_owned()
            } else {
                let by: Vec<String> = by.iter().map(|b| format!("`{b}`")).collect();
                format!("{reason}, blocked by {}", by.join(", "))
            };
            text + &shard(e)
        }
        "soft_dependency_unmet" => format!(
            "soft dependency `{}` {}; runs without it",
            e["upstream"].as_str().unwrap_or("?"),
            e["upstream_status"].as_str().unwrap_or("?")
        ),
        "input_changed_during_run" => format!(
            "{} changed while the command ran; not recorded{}",
            str_list(&e["paths"]).join(", "),
            shard(e)
        ),
        "shard_plan" => format!(
            "{} shards ({}), {} to run, {} reused, at most {} at once",
            e["shards"],
            e["strategy"].as_str().unwrap_or("?"),
            e["stale"],
            e["reused"],
            e["parallel"]
        ),
        "merge_completed" => format!(
            "merged {} shards into {} ({} bytes, digest {})",
            e["shards"],
            e["output"].as_str().unwrap_or("?"),
            e["size"],
            short(&e["digest"])
        ),
        "progress" => format!(
            "{}/{} done, {} running",
            e["done"], e["total"], e["running"]
        ),
        "run_completed" => format!(
            "succeeded in {}: {}",
            ms(&e["duration_ms"]),
            counts(&e["counts"])
        ),
        "run_failed" => {
            let mut s = format!(
                "{} after {}: {}",
                if e["interrupted"] == true {
                    "interrupted"
                } else {
                    "failed"
                },
                ms(&e["duration_ms"]),
                counts(&e["counts"])
            );
            let failed = str_list(&e["failed"]);
            if !failed.is_empty() {
                s.push_str(&format!("; failed: {}", failed.join(", ")));
            }
            let blocked = str_list(&e["blocked"]);
            if !blocked.is_empty() {
                s.push_str(&format!("; blocked: {}", blocked.join(", ")));
            }
            s
        }
        _ => {
            // A type this orch does not know: its own fields, as written.
            let mut rest = e.as_object().cloned().unwrap_or_default();
            for k in ["v", "seq", "ts", "run_id", "type", "instance"] {
                rest.remove(k);
            }
            if rest.is_empty() {
                String::new()
            } else {
                Value::Object(rest).to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_name_the_fields_that_matter() {
        let failed = json!({"v":1,"seq":9,"ts":"2026-01-31T12:00:00.123Z","run_id":"r",
            "type":"instance_failed","kind":"exit","exit_code":3,"message":"exited with 3",
            "log":".orch/logs/r/b.log","duration_ms":1500,"instance":"b"});
        assert_eq!(
            line(&failed, 3),
            "12:00:00.123  instance_failed        b    failed (exit code 3) after 1.5s: exited with 3; log .orch/logs/r/b.log"
        );
        let blocked = json!({"ts":"2026-01-31T12:00:00.123Z","type":"instance_blocked",
            "reason":"upstream_failed","blocked_by":["a"],"instance":"c"});
        assert!(line(&blocked, 1).ends_with("c  upstream_failed, blocked by `a`"));
        let shard = json!({"type":"instance_completed","duration_ms":5,"action_key":"ab",
            "outputs":{},"instance":"g#1","shard":{"index":1,"count":2,"key":"fr\n\u{1b}[2J"}});
        assert!(
            line(&shard, 3).ends_with("(shard fr\\n\\u{1b}[2J)"),
            "{}",
            line(&shard, 3)
        );
        let chunk = json!({"type":"instance_completed","duration_ms":5,"action_key":"ab",
            "outputs":{},"instance":"c#1","shard":{"index":1,"count":2,"key":"1"}});
        assert!(!line(&chunk, 3).contains("(shard"), "{}", line(&chunk, 3));
        let why = json!({"type":"instance_invalidated","reasons":["input_changed"],
            "details":[{"reason":"input_changed","subject":"raw/1.txt"}]});
        assert_eq!(details(&why), "input_changed (raw/1.txt)");
        let unknown = json!({"v":1,"seq":1,"ts":"t","run_id":"r","type":"cache_hit","from":"x"});
        assert_eq!(details(&unknown), r#"{"from":"x"}"#);
    }
}
