//! Run lifecycle: timeouts kill whole process groups, Ctrl-C leaves no process behind,
//! retries back off deterministically and keep every attempt's log, `-v` streams
//! output, and output schemas apply to sharded outputs too.

use std::time::{Duration, Instant};

use crate::test::{Test, event, of_type, wait_until};

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                found.push(cmd);
            }
        }
    }
    found
}

#[test]
fn a_thirty_second_phase_is_stopped_by_a_one_second_timeout() {
    let start = Instant::now();
    let out = Test::new()
        .orchfile("[phase.slow]\nrun = \"sleep 30.0731 & sleep 30.0732\"\ntimeout = \"1s\"\n")
        .args(["build", "--run-id", "t"])
        .expect_status(1)
        .stdout_contains("slow FAILED (timeout)")
        .run();
    // The bound is the issue's "well under 10 seconds" for a 30-second command.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    let events = out.events("t");
    let failed = event(&events, "instance_failed", "slow");
    assert_eq!(failed["kind"], "timeout");
    wait_until(
        "the whole process group to be gone",
        Duration::from_secs(10),
        || processes_with("sleep 30.073").is_empty(),
    );
}

#[test]
fn interrupt_stops_every_process_group_and_records_nothing_as_failed() {
    let t = Test::new()
        .orchfile(
            "[phase.a]\nrun = \"touch a.started; sleep 61.5121 & sleep 62.5121\"\n\n[phase.b]\nrun = \"touch b.started; sleep 63.5121\"\n\n[phase.c]\nneeds = [\"a\", \"b\"]\nrun = \"true\"\n",
        )
        .args(["build", "-j", "2", "--run-id", "int"]);
    let project = t.project().clone();
    let child = t.spawn();
    wait_until("both phases to start", Duration::from_secs(20), || {
        project.exists("a.started") && project.exists("b.started")
    });
    wait_until("their processes", Duration::from_secs(20), || {
        processes_with("sleep 6")
            .iter()
            .filter(|c| c.contains(".5121"))
            .count()
            >= 3
    });
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    wait_until(
        "no child process to be left",
        Duration::from_secs(10),
        || processes_with(".5121").is_empty(),
    );
    let events = project.events("int");
    assert!(
        events.iter().all(|e| e["type"] != "instance_failed"),
        "killed commands are not failures"
    );
    assert_eq!(
        event(&events, "instance_blocked", "a")["reason"],
        "interrupted"
    );
    assert_eq!(events.last().unwrap()["type"], "run_failed");
    assert_eq!(events.last().unwrap()["interrupted"], true);
    // Nothing was recorded as failed: the instances are simply still to be built.
    let status = project.test().args(["status", "--json"]).run().json();
    for row in status["instances"].as_array().unwrap() {
        assert_eq!(row["status"], "stale", "{row}");
    }
}

#[test]
fn retries_back_off_deterministically_and_keep_each_attempts_log() {
    let out = Test::new()
        .orchfile(
            r#"[phase.flaky]
retry = { attempts = 4, backoff = "40ms", max_backoff = "100ms" }
run = "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo attempt $n; [ $n -ge 4 ] && echo ok > {output}"
outputs = ["out/flaky.txt"]
"#,
        )
        .args(["build", "--run-id", "r"])
        .stdout_contains("[~] flaky attempt 1 of 4 failed")
        .run();
    let events = out.events("r");
    let delays: Vec<u64> = of_type(&events, "instance_retrying")
        .iter()
        .map(|e| e["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(delays, [40, 80, 100]);
    let attempts: Vec<u64> = of_type(&events, "instance_started")
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3, 4]);
    assert_eq!(out.read("out/flaky.txt"), "ok\n");
    for n in 1..=3 {
        assert_eq!(
            out.read(&format!(".orch/logs/r/flaky.attempt-{n}.log")),
            format!("attempt {n}\n")
        );
    }
    assert_eq!(out.read(".orch/logs/r/flaky.log"), "attempt 4\n");
}

#[test]
fn a_phase_failing_every_attempt_fails_after_the_last() {
    let out = Test::new()
        .orchfile("[phase.broken]\nretry = { attempts = 2, backoff = \"1ms\" }\nrun = \"exit 7\"\n")
        .args(["build", "--run-id", "r"])
        .expect_status(1)
        .run();
    let events = out.events("r");
    assert_eq!(of_type(&events, "instance_retrying").len(), 1);
    assert_eq!(event(&events, "instance_failed", "broken")["exit_code"], 7);
}

#[test]
fn verbose_streams_command_output_with_the_instance_name() {
    Test::new()
        .orchfile("[phase.talk]\nrun = \"echo hello; echo world >&2\"\n")
        .args(["build", "-v"])
        .stdout_contains("talk | hello\n")
        .stdout_contains("talk | world\n")
        .run();
}

const LINE_SCHEMA: &str =
    r#"{"type": "object", "required": ["route"], "properties": {"route": {"type": "string"}}}"#;

#[test]
fn the_merged_output_of_shards_is_checked_against_its_schema() {
    let orchfile = r#"[phase.merge]
shard = { strategy = "group", source = "in.jsonl", key = "route" }
run = "sed 's/\"route\"/\"ROUTE\"/' {shard.input} > {shard.output}"
outputs = [{ path = "out/all.jsonl", schema = "line.json" }]
"#;
    let out = Test::new()
        .orchfile(orchfile)
        .write("line.json", LINE_SCHEMA)
        .write("in.jsonl", "{\"route\": \"a\"}\n{\"route\": \"b\"}\n")
        .args(["build", "--run-id", "s"])
        .expect_status(1)
        .run();
    let events = out.events("s");
    let failed = event(&events, "instance_failed", "merge");
    assert_eq!(failed["kind"], "schema");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("`out/all.jsonl` line 1"),
        "{failed}"
    );
    assert!(
        !out.exists("out/all.jsonl"),
        "an output failing its schema is removed"
    );
}

#[test]
fn per_shard_outputs_are_checked_against_their_schema() {
    let orchfile = r#"[phase.pages]
shard = { strategy = "group", source = "in.jsonl", key = "route", merge = "none" }
run = "if [ {shard.key} = b ]; then echo '{{\"x\": 1}' > out/{shard.key}.json; else echo '{{\"route\": \"a\"}' > out/{shard.key}.json; fi"
outputs = [{ path = "out/{shard.key}.json", schema = "line.json" }]
"#;
    let out = Test::new()
        .orchfile(orchfile)
        .write("line.json", LINE_SCHEMA)
        .write("in.jsonl", "{\"route\": \"a\"}\n{\"route\": \"b\"}\n")
        .args(["build", "-k", "--run-id", "s"])
        .expect_status(1)
        .run();
    let events = out.events("s");
    assert_eq!(
        event(&events, "instance_failed", "pages#1")["kind"],
        "schema"
    );
    event(&events, "instance_completed", "pages#0");
}
