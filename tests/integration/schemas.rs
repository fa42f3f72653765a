//! The published JSON Schemas of run output: every event of real builds validates against
//! `schemas/event.v1.json`, the schema names exactly the event types orch can emit, and
//! `summary.json` validates against `schemas/run-summary.v1.json`.
//!
//! The event schema lists every field of every type with `additionalProperties: false`:
//! a field added to an event fails these tests until the schema documents it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use orch::events::{BlockReason, Counts, EVENT_VERSION, Event, EventKind, FailureKind, ShardRef};
use orch::plan::{Reason, Why};
use serde_json::{Value, json};

use crate::test::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// Every event `type`, in the order of `EventKind`. Keep in step with [`type_of`] (which
/// does not compile when a variant is added) and with the schema (checked below).
const EVENT_TYPES: &[&str] = &[
    "run_started",
    "plan_ready",
    "instance_skipped",
    "instance_invalidated",
    "instance_retrying",
    "instance_cached",
    "instance_started",
    "instance_completed",
    "instance_failed",
    "instance_blocked",
    "soft_dependency_unmet",
    "input_changed_during_run",
    "shard_plan",
    "merge_completed",
    "progress",
    "watch_changes",
    "run_completed",
    "run_failed",
];

/// The `type` of an event body. No wildcard arm: a new variant stops this compiling.
fn type_of(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::RunStarted { .. } => "run_started",
        EventKind::PlanReady { .. } => "plan_ready",
        EventKind::InstanceSkipped { .. } => "instance_skipped",
        EventKind::InstanceInvalidated { .. } => "instance_invalidated",
        EventKind::InstanceRetrying { .. } => "instance_retrying",
        EventKind::InstanceCached { .. } => "instance_cached",
        EventKind::InstanceStarted { .. } => "instance_started",
        EventKind::InstanceCompleted { .. } => "instance_completed",
        EventKind::InstanceFailed { .. } => "instance_failed",
        EventKind::InstanceBlocked { .. } => "instance_blocked",
        EventKind::SoftDependencyUnmet { .. } => "soft_dependency_unmet",
        EventKind::InputChangedDuringRun { .. } => "input_changed_during_run",
        EventKind::ShardPlan { .. } => "shard_plan",
        EventKind::MergeCompleted { .. } => "merge_completed",
        EventKind::Progress { .. } => "progress",
        EventKind::WatchChanges { .. } => "watch_changes",
        EventKind::RunCompleted { .. } => "run_completed",
        EventKind::RunFailed { .. } => "run_failed",
    }
}

/// The schema `schemas/FILE`, checked to be a valid JSON Schema.
pub(crate) fn schema(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    if let Err(e) = jsonschema::meta::validate(&schema) {
        panic!("{file} is not a valid JSON Schema: {e}");
    }
    schema
}

/// A validator that also checks `format` (`date-time`).
fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("the schema does not compile: {e}"))
}

/// Validates events against `schemas/event.v1.json`.
struct EventSchema {
    all: jsonschema::Validator,
    /// The `$defs` entry of each type, for errors more telling than "not one of".
    by_type: BTreeMap<String, jsonschema::Validator>,
}

impl EventSchema {
    fn load() -> EventSchema {
        let schema = schema("event.v1.json");
        let by_type = schema_types(&schema)
            .into_iter()
            .map(|(ty, def)| {
                let one = json!({
                    "$schema": schema["$schema"],
                    "$defs": schema["$defs"],
                    "$ref": format!("#/$defs/{def}"),
                });
                (ty, validator(&one))
            })
            .collect();
        EventSchema {
            all: validator(&schema),
            by_type,
        }
    }

    /// Panics with the event and every error when it does not validate.
    fn check(&self, event: &Value, context: &str) {
        if self.all.is_valid(event) {
            return;
        }
        let ty = event["type"].as_str().unwrap_or("");
        let errors: Vec<String> = match self.by_type.get(ty) {
            Some(v) => v
                .iter_errors(event)
                .map(|e| format!("  at `{}`: {e}", e.instance_path()))
                .collect(),
            None => vec![format!("  the schema has no event type `{ty}`")],
        };
        let errors = if errors.is_empty() {
            self.all
                .iter_errors(event)
                .map(|e| format!("  {e}"))
                .collect()
        } else {
            errors
        };
        panic!(
            "{context}: event does not match schemas/event.v1.json:\n{event:#}\n{}",
            errors.join("\n")
        );
    }

    fn check_all(&self, events: &[Value], context: &str) {
        assert!(!events.is_empty(), "{context}: no events");
        for e in events {
            self.check(e, context);
        }
    }
}

/// `type` const → `$defs` name, for each branch of the schema's `oneOf`.
fn schema_types(schema: &Value) -> BTreeMap<String, String> {
    let branches = schema["oneOf"].as_array().expect("a top-level `oneOf`");
    branches
        .iter()
        .map(|b| {
            let r = b["$ref"].as_str().expect("each branch is a `$ref`");
            let def = r.strip_prefix("#/$defs/").expect("a local `$defs` ref");
            let ty = schema["$defs"][def]["properties"]["type"]["const"]
                .as_str()
                .unwrap_or_else(|| panic!("`{def}` has no `type` const"));
            (ty.to_owned(), def.to_owned())
        })
        .collect()
}

/// Every event of every run of the project.
fn all_events(out: &Output) -> Vec<Value> {
    out.run_ids().iter().flat_map(|id| out.events(id)).collect()
}

fn types_in(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().expect("a type").to_owned())
        .collect()
}

fn orchfile(phases: &str) -> String {
    format!("[orch]\nformat = 1\n{phases}")
}

/// Failures of every kind a process can give, and what they block.
const FAILING: &str = r#"
[phase.bad]
run = "echo 'some <output> & more'; exit 3"
outputs = ["out/bad.txt"]

[phase.killed]
run = "kill -9 $$"
outputs = ["out/killed.txt"]

[phase.lazy]
run = "true"
outputs = ["out/lazy.txt"]

[phase.fine]
run = "echo fine > {output}"
outputs = ["out/fine.txt"]

[phase.after_bad]
needs = ["bad"]
run = "echo > {output}"
outputs = ["out/after_bad.txt"]

[phase.after_after]
needs = ["after_bad"]
run = "echo > {output}"
outputs = ["out/after_after.txt"]
"#;

/// A soft dependency that fails.
const SOFT: &str = r#"
[phase.soft]
run = "exit 1"
outputs = ["out/soft.txt"]

[phase.user]
after = ["soft"]
run = "echo user > {output}"
outputs = ["out/user.txt"]
"#;

/// A matrix of `group`-sharded instances feeding a downstream phase, plus `files` and
/// `chunk` shards.
const SHARDED: &str = r#"
[vars]
langs = ["fr", "de"]

[phase.ingest]
run = "cp raw/records.jsonl {output}"
inputs = ["raw/records.jsonl"]
outputs = ["build/ingest.jsonl"]

[phase.routes]
needs = ["ingest"]
matrix = { lang = "{vars.langs}" }
shard = { strategy = "group", source = "build/ingest.jsonl", key = "route", parallel = 2 }
run = "{{ echo {matrix.lang} {shard.key}; cat {shard.input}; }} > {shard.output}"
outputs = ["build/routes/{matrix.lang}.jsonl"]

[phase.lines]
needs = ["routes"]
run = "cat {needs.routes.outputs} | wc -l > {output}"
outputs = ["build/lines.txt"]

[phase.pages]
shard = { strategy = "files", source = "texts/*.txt" }
run = "tr a-z A-Z < {shard.input} > {shard.output}"
outputs = ["out/pages.txt"]

[phase.chunks]
shard = { strategy = "chunk", source = "raw/records.jsonl", size = 2 }
run = "cat {shard.input} > {shard.output}"
outputs = ["out/chunks.jsonl"]
"#;

const RECORDS: &str = concat!(
    "{\"route\":\"b\",\"n\":1}\n",
    "{\"route\":\"a\",\"n\":2}\n",
    "{\"route\":10,\"n\":3}\n",
    "{\"route\":\"b\",\"n\":4}\n",
);

/// Retries (one that succeeds, one that gives up), a timeout and an output that fails
/// its schema.
const RETRIES: &str = r#"
[phase.flaky]
retry = { attempts = 3, backoff = "1ms" }
run = "if [ -f tried ]; then echo ok > {output}; else touch tried; exit 1; fi"
outputs = ["out/flaky.txt"]

[phase.broken]
retry = { attempts = 2, backoff = "1ms" }
run = "exit 7"
outputs = ["out/broken.txt"]

[phase.slow]
run = "sleep 5"
timeout = "100ms"
outputs = ["out/slow.txt"]

[phase.data]
run = "echo '{{\"other\": 1}' > {output}"
outputs = [{ path = "out/data.json", schema = "schema.json" }]
"#;

fn retries() -> Test {
    Test::new()
        .orchfile(&orchfile(RETRIES))
        .write("schema.json", r#"{"type": "object", "required": ["name"]}"#)
}

fn sharded() -> Test {
    Test::new()
        .orchfile(&orchfile(SHARDED))
        .write("raw/records.jsonl", RECORDS)
        .write("texts/a.txt", "ant\n")
        .write("texts/b.txt", "bee\n")
}

// ---------------------------------------------------------------------------------------
// The event schema

#[test]
fn the_schema_names_exactly_the_event_types() {
    let schema = schema("event.v1.json");
    let in_schema: BTreeSet<String> = schema_types(&schema).into_keys().collect();
    let expected: BTreeSet<String> = EVENT_TYPES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        EVENT_TYPES.len(),
        expected.len(),
        "EVENT_TYPES repeats a type"
    );
    assert_eq!(
        in_schema, expected,
        "schemas/event.v1.json's `oneOf` must have one branch per EventKind variant"
    );
    // Every branch closes its object, and names the envelope.
    for (ty, def) in schema_types(&schema) {
        let d = &schema["$defs"][def.as_str()];
        assert_eq!(d["additionalProperties"], false, "{ty}");
        for f in ["v", "seq", "ts", "run_id", "type"] {
            assert!(
                d["required"].as_array().unwrap().contains(&json!(f)),
                "`{ty}` does not require `{f}`"
            );
        }
    }
}

/// One event of every type, with every optional field set, built from the types
/// themselves: a new field or variant must reach the schema.
#[test]
fn every_event_type_with_every_field_validates() {
    let schema = EventSchema::load();
    let shard = || {
        Some(ShardRef {
            index: 2,
            count: 3,
            key: "route-7".to_owned(),
        })
    };
    let digest = "0123456789abcdef".repeat(4);
    let counts = Counts {
        total: 5,
        succeeded: 1,
        up_to_date: 1,
        failed: 1,
        blocked: 2,
        cached: 0,
    };
    let samples: Vec<(Option<&str>, EventKind)> = vec![
        (
            None,
            EventKind::RunStarted {
                plan_digest: digest.clone(),
                targets: vec!["t[lang=fr]".to_owned()],
                jobs: 8,
                keep_going: true,
            },
        ),
        (
            None,
            EventKind::PlanReady {
                total: 5,
                stale: 4,
                up_to_date: 1,
                up_to_date_unlisted: 1,
            },
        ),
        (
            Some("a"),
            EventKind::InstanceSkipped {
                reason: "up_to_date",
                action_key: digest.clone(),
                early_cutoff: true,
            },
        ),
        (
            Some("t[lang=fr]"),
            EventKind::InstanceInvalidated {
                reasons: vec![Reason::InputChanged, Reason::Forced],
                details: vec![
                    Why::about(Reason::InputChanged, "raw/a.txt"),
                    Why::plain(Reason::Forced),
                ],
            },
        ),
        (
            Some("t[lang=fr]#2"),
            EventKind::InstanceRetrying {
                attempt: 1,
                attempts: 3,
                delay_ms: 500,
                kind: FailureKind::Timeout,
                message: "timed out".to_owned(),
                shard: shard(),
            },
        ),
        (
            Some("t[lang=de]"),
            EventKind::InstanceCached {
                source: "remote",
                action_key: digest.clone(),
                outputs: BTreeMap::from([("out/de.jsonl".to_owned(), digest.clone())]),
                bytes: 42,
                saved_ms: 1200,
            },
        ),
        (
            Some("t[lang=fr]#2"),
            EventKind::InstanceStarted {
                attempt: 2,
                command: "cat x > y".to_owned(),
                shard: shard(),
                executor: None,
                job_id: None,
                worker: Some(1),
            },
        ),
        (
            Some("t[lang=fr]#2"),
            EventKind::InstanceCompleted {
                action_key: digest.clone(),
                outputs: BTreeMap::from([("out/x".to_owned(), digest.clone())]),
                duration_ms: 12,
                shard: shard(),
            },
        ),
        (
            Some("t[lang=fr]#2"),
            EventKind::InstanceFailed {
                kind: FailureKind::Exit,
                exit_code: Some(3),
                signal: Some(9),
                message: "the command exited with status 3".to_owned(),
                log: ".orch/logs/r/t_lang=fr_#2.log".to_owned(),
                duration_ms: 40,
                shard: shard(),
            },
        ),
        (
            Some("t[lang=fr]#2"),
            EventKind::InstanceBlocked {
                reason: BlockReason::Interrupted,
                blocked_by: Vec::new(),
                shard: shard(),
            },
        ),
        (
            Some("u"),
            EventKind::SoftDependencyUnmet {
                upstream: "t[lang=fr]".to_owned(),
                upstream_status: "failed",
            },
        ),
        (
            Some("t[lang=fr]#0"),
            EventKind::InputChangedDuringRun {
                paths: vec!["raw/a.txt".to_owned()],
                shard: Some(ShardRef {
                    index: 0,
                    count: 2,
                    key: "r1".to_owned(),
                }),
            },
        ),
        (
            Some("t[lang=fr]"),
            EventKind::ShardPlan {
                strategy: "group",
                shards: 3,
                parallel: 2,
                stale: 1,
                reused: 2,
            },
        ),
        (
            Some("t[lang=fr]"),
            EventKind::MergeCompleted {
                output: "out/t.jsonl".to_owned(),
                digest: digest.clone(),
                size: 1024,
                shards: 3,
            },
        ),
        (
            None,
            EventKind::Progress {
                done: 3,
                total: 4,
                running: 1,
            },
        ),
        (
            None,
            EventKind::WatchChanges {
                paths: vec!["src/a.txt".to_owned()],
                trigger: "files",
                tick: Some("2026-11-28T18:15:00Z".to_owned()),
            },
        ),
        (
            None,
            EventKind::RunCompleted {
                cache: Default::default(),
                counts,
                duration_ms: 99,
            },
        ),
        (
            None,
            EventKind::RunFailed {
                cache: Default::default(),
                counts,
                failed: vec!["t[lang=fr]".to_owned()],
                blocked: vec!["d".to_owned(), "e".to_owned()],
                interrupted: true,
                duration_ms: 99,
            },
        ),
    ];
    let mut seen = Vec::new();
    for (n, (instance, kind)) in samples.into_iter().enumerate() {
        let ty = type_of(&kind);
        let event = Event {
            v: EVENT_VERSION,
            seq: n as u64 + 1,
            ts: "2024-05-01T12:00:00.123Z".to_owned(),
            run_id: "20240501T120000Z-0123abcd.2".to_owned(),
            kind,
            instance: instance.map(str::to_owned),
        };
        let value = serde_json::to_value(&event).expect("events serialize");
        assert_eq!(value["type"], ty, "type_of disagrees with serde");
        schema.check(&value, "sample");
        seen.push(ty);
    }
    assert_eq!(seen, EVENT_TYPES, "one sample per type, in EventKind order");

    // And the schema is not vacuous: it rejects what orch never writes.
    let ok = json!({
        "v": 1, "seq": 1, "ts": "2024-05-01T12:00:00.123Z", "run_id": "r",
        "type": "instance_blocked", "instance": "d",
        "reason": "upstream_failed", "blocked_by": ["a"]
    });
    schema.check(&ok, "hand-written");
    let with = |field: &str, value: Value| {
        let mut e = ok.clone();
        e[field] = value;
        e
    };
    let mut no_instance = ok.clone();
    no_instance.as_object_mut().unwrap().remove("instance");
    for (what, bad) in [
        ("an unknown field", with("extra", json!(1))),
        ("an unknown type", with("type", json!("instance_exploded"))),
        ("an unknown reason", with("reason", json!("bad_luck"))),
        ("no instance", no_instance),
        ("v 2", with("v", json!(2))),
        ("seq 0", with("seq", json!(0))),
        ("a local time", with("ts", json!("2024-05-01 12:00:00"))),
        (
            "an impossible time",
            with("ts", json!("2024-13-01T12:00:00.000Z")),
        ),
    ] {
        assert!(!schema.all.is_valid(&bad), "accepts {what}: {bad}");
    }
    let exit_without_code = json!({
        "v": 1, "seq": 1, "ts": "2024-05-01T12:00:00.123Z", "run_id": "r",
        "type": "instance_failed", "instance": "a", "kind": "exit",
        "message": "m", "log": "", "duration_ms": 1
    });
    assert!(!schema.all.is_valid(&exit_without_code));
}

#[test]
fn events_of_successful_no_op_and_forced_builds_validate() {
    let schema = EventSchema::load();
    let out = diamond().args(["build", "-j", "2", "--run-id", "ok"]).run();
    let out = out.again().args(["build", "--run-id", "noop"]).run();
    let out = out
        .again()
        .args(["build", "--force", "--json", "--run-id", "forced"])
        .run();
    // `--json` prints the same events.
    schema.check_all(&parse_events(&out.stdout), "build --json");
    out.write("raw/3.txt", "three\n");
    let out = out.again().args(["build", "b", "--run-id", "target"]).run();
    // `a` makes the same bytes again: its downstreams are skipped by early cutoff.
    let out = out
        .again()
        .args(["build", "--force", "a", "d", "--run-id", "cutoff"])
        .run();
    let events = all_events(&out);
    schema.check_all(&events, "diamond");
    let types = types_in(&events);
    for ty in [
        "run_started",
        "plan_ready",
        "instance_invalidated",
        "instance_started",
        "instance_completed",
        "instance_skipped",
        "progress",
        "run_completed",
    ] {
        assert!(types.contains(ty), "no `{ty}` event: {types:?}");
    }
    let forced = out.events("forced");
    assert!(
        of_type(&forced, "instance_invalidated")
            .iter()
            .all(|e| e["reasons"] == json!(["forced"]))
    );
}

#[test]
fn events_of_failed_and_blocked_builds_validate() {
    let schema = EventSchema::load();
    let out = Test::new()
        .orchfile(&orchfile(FAILING))
        .args(["build", "-k", "--run-id", "k"])
        .expect_status(1)
        .run();
    let events = out.events("k");
    let kinds: BTreeSet<&str> = of_type(&events, "instance_failed")
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["exit", "missing_output", "signal"]));
    let reasons: BTreeSet<&str> = of_type(&events, "instance_blocked")
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["upstream_blocked", "upstream_failed"])
    );
    // Fail-fast: what never started is `stopped_after_failure`.
    let out = out
        .again()
        .args(["build", "-j", "1", "--run-id", "fast"])
        .expect_status(1)
        .run();
    assert!(
        of_type(&out.events("fast"), "instance_blocked")
            .iter()
            .any(|e| e["reason"] == "stopped_after_failure"),
        "{:#?}",
        out.events("fast")
    );
    let events = all_events(&out);
    schema.check_all(&events, "failing");
    let last_failed = of_type(&events, "instance_invalidated").iter().any(|e| {
        e["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("last_failed"))
    });
    assert!(last_failed);
    assert!(types_in(&events).contains("run_failed"));
}

#[test]
fn events_of_a_failed_soft_dependency_validate() {
    let schema = EventSchema::load();
    let out = Test::new()
        .orchfile(&orchfile(SOFT))
        .args(["build", "-k", "--run-id", "soft"])
        .expect_status(1)
        .run();
    let events = out.events("soft");
    schema.check_all(&events, "soft dependency");
    let unmet = event(&events, "soft_dependency_unmet", "user");
    assert_eq!(unmet["upstream"], "soft");
    assert_eq!(unmet["upstream_status"], "failed");
}

#[test]
fn events_of_sharded_builds_validate() {
    let schema = EventSchema::load();
    let out = sharded().args(["build", "-j", "3", "--run-id", "s1"]).run();
    // One changed record: one shard per language runs, the others are reused.
    out.write("raw/records.jsonl", &RECORDS.replace("\"n\":2", "\"n\":20"));
    let out = out.again().args(["build", "--run-id", "s2"]).run();
    let s2 = out.events("s2");
    assert!(
        of_type(&s2, "shard_plan")
            .iter()
            .any(|e| e["reused"].as_u64() > Some(0)),
        "{s2:#?}"
    );
    // A failing shard fails its instance.
    out.write(
        "Orchfile.toml",
        &orchfile(SHARDED).replace(
            "run = \"{{ echo {matrix.lang}",
            "run = \"test {shard.key} != a && {{ echo {matrix.lang}",
        ),
    );
    let out = out
        .again()
        .args(["build", "-k", "--run-id", "s3"])
        .expect_status(1)
        .run();
    let s3 = out.events("s3");
    assert!(
        of_type(&s3, "instance_failed")
            .iter()
            .any(|e| e["shard"].is_object())
    );
    assert!(
        !of_type(&s3, "instance_failed")
            .iter()
            .all(|e| e["shard"].is_object())
    );
    let events = all_events(&out);
    schema.check_all(&events, "sharded");
    let types = types_in(&events);
    for ty in ["shard_plan", "merge_completed", "instance_blocked"] {
        assert!(types.contains(ty), "no `{ty}` event: {types:?}");
    }
    let strategies: BTreeSet<&str> = of_type(&events, "shard_plan")
        .iter()
        .map(|e| e["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(strategies, BTreeSet::from(["chunk", "files", "group"]));
}

#[test]
fn events_of_retries_timeouts_and_output_schemas_validate() {
    let schema = EventSchema::load();
    let out = retries()
        .args(["build", "-k", "--run-id", "r"])
        .expect_status(1)
        .run();
    let events = out.events("r");
    schema.check_all(&events, "retries");
    assert_eq!(
        sorted(instances_of(&events, "instance_retrying")),
        names(&["broken", "flaky"])
    );
    let kinds: BTreeSet<&str> = of_type(&events, "instance_failed")
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["exit", "schema", "timeout"]));
}

// ---------------------------------------------------------------------------------------
// summary.json and the JUnit report (written by sinks `build` attaches)

/// Checks `.orch/runs/RUN/summary.json` against its schema and the run's final event;
/// returns it.
fn summary(out: &Output, run_id: &str) -> Value {
    let text = out.read(&format!(".orch/runs/{run_id}/summary.json"));
    let summary: Value = serde_json::from_str(&text).expect("summary.json is JSON");
    let v = validator(&schema("run-summary.v1.json"));
    let errors: Vec<String> = v
        .iter_errors(&summary)
        .map(|e| format!("  at `{}`: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "summary.json does not match schemas/run-summary.v1.json:\n{summary:#}\n{}",
        errors.join("\n")
    );
    let events = out.events(run_id);
    let last = events.last().unwrap();
    assert_eq!(summary["run_id"], run_id);
    assert_eq!(summary["counts"], last["counts"]);
    assert_eq!(summary["duration_ms"], last["duration_ms"]);
    assert_eq!(summary["started"], events[0]["ts"]);
    assert_eq!(summary["finished"], last["ts"]);
    assert_eq!(summary["plan_digest"], events[0]["plan_digest"]);
    summary
}

#[test]
fn summary_of_a_successful_build() {
    let out = diamond().args(["build", "--run-id", "ok"]).run();
    let s = summary(&out, "ok");
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["instances_ran"], json!(["a", "b", "c", "d"]));
    assert_eq!(s["failed"], json!([]));
    assert_eq!(
        s["durations"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["a", "b", "c", "d"]
    );
    let out = out.again().args(["build", "--run-id", "noop"]).run();
    let s = summary(&out, "noop");
    assert_eq!(s["instances_ran"], json!([]));
    assert_eq!(s["counts"]["up_to_date"], 4);
}

#[test]
fn summary_of_a_failed_build() {
    let out = Test::new()
        .orchfile(&orchfile(FAILING))
        .args(["build", "-k", "--run-id", "k"])
        .expect_status(1)
        .run();
    let s = summary(&out, "k");
    assert_eq!(s["status"], "failed");
    assert_eq!(s["instances_ran"], json!(["fine"]));
    let failed: Vec<(&str, &str)> = s["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["instance"].as_str().unwrap(), f["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        failed,
        [
            ("bad", "exit"),
            ("killed", "signal"),
            ("lazy", "missing_output")
        ]
    );
    assert_eq!(s["failed"][0]["exit_code"], 3);
    assert_eq!(s["failed"][0]["attempts"], 1);
    assert_eq!(s["failed"][1]["signal"], 9);
    assert!(out.exists(s["failed"][0]["log"].as_str().unwrap()));
    assert_eq!(
        s["blocked"],
        json!([
            {"instance": "after_after", "reason": "upstream_blocked", "blocked_by": ["after_bad"]},
            {"instance": "after_bad", "reason": "upstream_failed", "blocked_by": ["bad"]},
        ])
    );
}

#[test]
fn summary_of_retries() {
    let out = retries()
        .args(["build", "-k", "--run-id", "r"])
        .expect_status(1)
        .run();
    let s = summary(&out, "r");
    assert_eq!(s["retried"], json!([{"instance": "flaky", "attempts": 2}]));
    assert_eq!(s["instances_ran"], json!(["flaky"]));
    let failed: Vec<(&str, &str, u64)> = s["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["instance"].as_str().unwrap(),
                f["kind"].as_str().unwrap(),
                f["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        [
            ("broken", "exit", 2),
            ("data", "schema", 1),
            ("slow", "timeout", 1)
        ]
    );
}

#[test]
fn summary_of_sharded_builds() {
    let out = sharded().args(["build", "--run-id", "s1"]).run();
    let s = summary(&out, "s1");
    // 3 groups × 2 languages, 2 files, 2 chunks.
    assert_eq!(s["shards"], json!({"ran": 10, "reused": 0}));
    assert_eq!(
        s["instances_ran"],
        json!([
            "chunks",
            "ingest",
            "lines",
            "pages",
            "routes[lang=de]",
            "routes[lang=fr]"
        ])
    );
    out.write("raw/records.jsonl", &RECORDS.replace("\"n\":2", "\"n\":20"));
    let out = out.again().args(["build", "--run-id", "s2"]).run();
    let s = summary(&out, "s2");
    // Group `a` of each language and chunk 0 ran again; `pages` is up to date, unsplit.
    assert_eq!(s["shards"], json!({"ran": 3, "reused": 5}));
}

#[test]
fn summary_of_a_failed_shard_names_it() {
    let out = Test::new()
        .orchfile(&orchfile(
            r#"
[phase.pages]
shard = { strategy = "files", source = "texts/*.txt" }
run = "grep -q bad {shard.input} && exit 2; cat {shard.input} > {shard.output}"
outputs = ["out/pages.txt"]
"#,
        ))
        .write("texts/a.txt", "fine\n")
        .write("texts/b.txt", "bad\n")
        .args(["build", "-k", "--run-id", "fs"])
        .expect_status(1)
        .run();
    let s = summary(&out, "fs");
    assert_eq!(s["failed"][0]["instance"], "pages");
    assert_eq!(
        s["failed"][0]["shards"],
        json!([{"index": 1, "key": "texts/b.txt", "kind": "exit",
                "log": ".orch/logs/fs/pages#1-texts_b.txt.log"}])
    );
}

#[test]
fn summary_of_an_interrupted_build() {
    use std::time::Duration;
    let t = Test::new()
        .orchfile(&orchfile(
            "[phase.slow]\nrun = \"touch started; sleep 30\"\noutputs = [\"out/slow.txt\"]\n",
        ))
        .args(["build", "--run-id", "int"]);
    let project = t.project().clone();
    let mut child = t.spawn();
    wait_until("the command to start", Duration::from_secs(20), || {
        project.exists("started")
    });
    interrupt(child.id());
    let status = child.wait().expect("wait for orch");
    assert_eq!(status.code(), Some(130));
    let text = project.read(".orch/runs/int/summary.json");
    let s: Value = serde_json::from_str(&text).unwrap();
    assert!(
        validator(&schema("run-summary.v1.json")).is_valid(&s),
        "{s:#}"
    );
    assert_eq!(s["status"], "interrupted");
}

/// Sends SIGINT to `pid` with `kill(1)`.
fn interrupt(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok);
}

#[test]
fn junit_report() {
    let t = Test::new().orchfile(&orchfile(&format!(
        "{FAILING}\n[phase.m]\nmatrix = {{ x = [\"1\", \"2\"] }}\nrun = \"echo {{matrix.x}} > {{output}}\"\noutputs = [\"out/m{{matrix.x}}.txt\"]\n"
    )));
    let report = t.project().join("reports/junit.xml");
    let out = t
        .args([
            "build".to_owned(),
            "-k".to_owned(),
            "--junit".to_owned(),
            report.display().to_string(),
        ])
        .expect_status(1)
        .run();
    let xml = std::fs::read_to_string(&report).expect("the JUnit report is written");
    assert!(
        xml.contains(
            "<testsuite name=\"orch\" tests=\"8\" failures=\"3\" skipped=\"2\" errors=\"0\" time=\""
        ),
        "{xml}"
    );
    let cases: Vec<&str> = xml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("<testcase classname=\""))
        .map(|l| l.split('"').next().unwrap())
        .collect();
    assert_eq!(
        cases,
        [
            "after_after",
            "after_bad",
            "bad",
            "fine",
            "killed",
            "lazy",
            "m",
            "m"
        ]
    );
    assert!(xml.contains("name=\"m[x=1]\""));
    assert!(xml.contains("type=\"exit\""));
    assert!(xml.contains("some &lt;output&gt; &amp; more"), "{xml}");
    assert!(xml.contains("<skipped message=\"blocked: upstream_failed by bad\"/>"));
    // Up to date is a success.
    let out = out
        .again()
        .args([
            "build".to_owned(),
            "fine".to_owned(),
            "--junit".to_owned(),
            report.display().to_string(),
        ])
        .run();
    let xml = out.read("reports/junit.xml");
    assert!(xml.contains("failures=\"0\" skipped=\"0\""), "{xml}");
    assert!(xml.contains("<testcase classname=\"fine\" name=\"fine\" time=\"0.000\"/>"));
}
