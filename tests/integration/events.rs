//! The event log: `.orch/runs/RUN/events.jsonl` and `build --json`.

use serde_json::Value;

use crate::test::*;

/// Checks the envelope every event log must have; returns the run id.
fn check_envelope(events: &[Value], last_type: &str) -> String {
    assert!(!events.is_empty());
    let run_id = events[0]["run_id"].as_str().expect("run_id").to_owned();
    for (n, e) in events.iter().enumerate() {
        assert_eq!(e["v"], 1, "{e}");
        assert_eq!(e["seq"], n as u64 + 1, "seq is not 1, 2, …: {e}");
        assert_eq!(e["run_id"], run_id.as_str(), "{e}");
        assert!(e["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
        let ty = e["type"].as_str().expect("type");
        if ty.starts_with("instance_") || ty == "soft_dependency_unmet" {
            assert!(e["instance"].is_string(), "no instance: {e}");
        }
    }
    assert_eq!(events[0]["type"], "run_started");
    assert_eq!(events[1]["type"], "plan_ready");
    assert_eq!(events.last().unwrap()["type"], last_type);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "run_completed" || e["type"] == "run_failed")
            .count(),
        1
    );
    run_id
}

#[test]
fn event_log_of_a_successful_run() {
    let out = diamond().args(["build", "-j", "2", "--run-id", "ok"]).run();
    let events = out.events("ok");
    assert_eq!(check_envelope(&events, "run_completed"), "ok");
    let started = &events[0];
    assert_eq!(started["jobs"], 2);
    assert_eq!(started["keep_going"], false);
    assert_eq!(started["targets"], serde_json::json!([]));
    assert_eq!(events[1]["total"], 4);
    assert_eq!(events[1]["stale"], 4);
    // Each instance: invalidated, started, completed, in that order.
    for n in ["a", "b", "c", "d"] {
        let seq = |ty: &str| event(&events, ty, n)["seq"].as_u64().unwrap();
        assert!(seq("instance_invalidated") < seq("instance_started"));
        assert!(seq("instance_started") < seq("instance_completed"));
        assert_eq!(
            event(&events, "instance_invalidated", n)["reasons"],
            serde_json::json!(["never_built"])
        );
    }
    assert_eq!(
        event(&events, "instance_started", "b")["command"],
        "sed 's/^/b:/' out/a.txt > out/b.txt"
    );
    // Output digests are BLAKE3 of the bytes.
    let done = event(&events, "instance_completed", "d");
    assert_eq!(
        done["outputs"]["out/d.txt"],
        blake3::hash(out.read("out/d.txt").as_bytes())
            .to_hex()
            .as_str()
    );
    assert_eq!(done["action_key"].as_str().unwrap().len(), 64);
    let progress = of_type(&events, "progress");
    assert_eq!(progress.len(), 4);
    assert_eq!(progress.last().unwrap()["done"], 4);
    assert_eq!(progress.last().unwrap()["total"], 4);
    let end = events.last().unwrap();
    assert_eq!(
        end["counts"],
        serde_json::json!({"total": 4, "succeeded": 4, "up_to_date": 0, "failed": 0, "blocked": 0, "cached": 0})
    );
}

#[test]
fn event_log_of_a_failed_run() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.bad]
run = "exit 1"
outputs = ["out/bad.txt"]

[phase.after_bad]
needs = ["bad"]
run = "echo > {output}"
outputs = ["out/after.txt"]
"#,
        )
        .args(["build", "--run-id", "bad"])
        .expect_status(1)
        .run();
    let events = out.events("bad");
    check_envelope(&events, "run_failed");
    let end = events.last().unwrap();
    assert_eq!(end["failed"], serde_json::json!(["bad"]));
    assert_eq!(end["blocked"], serde_json::json!(["after_bad"]));
    assert_eq!(end["interrupted"], false);
}

#[test]
fn event_log_of_a_no_op_run() {
    let out = built_diamond();
    let out = out.again().args(["build", "--run-id", "noop"]).run();
    let events = out.events("noop");
    check_envelope(&events, "run_completed");
    assert_eq!(events[1]["stale"], 0);
    assert_eq!(events[1]["up_to_date"], 4);
    // No line per up-to-date instance: the plan counts them.
    assert_eq!(events[1]["up_to_date_unlisted"], 4);
    assert_eq!(events.len(), 2 + 1, "{events:#?}");
    let summary: serde_json::Value =
        serde_json::from_str(&out.read(".orch/runs/noop/summary.json")).unwrap();
    assert_eq!(summary["counts"]["up_to_date"], 4);
}

#[test]
fn json_flag_prints_exactly_the_event_log() {
    let out = diamond().args(["build", "--json", "--run-id", "j"]).run();
    let file = out.events_text("j");
    assert_eq!(out.stdout, file);
    check_envelope(&parse_events(&out.stdout), "run_completed");
    // The human display moves to stderr and stays quiet.
    assert!(!out.stdout.contains("orch:"));

    // A failing build too.
    out.write("Orchfile.toml", &DIAMOND.replace("sed 's/^/c:/'", "false"));
    let out = out
        .again()
        .args(["build", "--json", "--run-id", "j2"])
        .expect_status(1)
        .stderr_contains("c FAILED")
        .run();
    assert_eq!(out.stdout, out.events_text("j2"));
}

#[test]
fn derived_run_ids_are_distinct() {
    let out = built_diamond();
    let out = out.again().run();
    let out = out.again().run();
    let ids = out.run_ids();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let latest = out.latest_events();
    assert_eq!(latest.last().unwrap()["type"], "run_completed");
    for id in ids.iter().filter(|id| *id != "first") {
        assert_eq!(out.events(id)[0]["run_id"], id.as_str());
    }
}

/// With `-j 1`, two runs of the same state emit the same events apart from times, run
/// ids and durations.
#[test]
fn events_are_deterministic_with_one_job() {
    let strip = |events: Vec<Value>| -> Vec<Value> {
        events
            .into_iter()
            .map(|mut e| {
                let o = e.as_object_mut().unwrap();
                o.remove("ts");
                o.remove("run_id");
                o.remove("duration_ms");
                e
            })
            .collect()
    };
    let out = diamond()
        .args(["build", "-j", "1", "--run-id", "one"])
        .run();
    let out = out
        .again()
        .args(["build", "-j", "1", "--force", "--run-id", "two"])
        .run();
    let out = out
        .again()
        .args(["build", "-j", "1", "--force", "--run-id", "three"])
        .run();
    assert_eq!(strip(out.events("two")), strip(out.events("three")));
    assert_eq!(
        ran(&out.events("one")),
        ran(&out.events("two")),
        "same order"
    );
}
