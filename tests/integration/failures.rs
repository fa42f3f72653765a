//! Failures: hard dependencies block, soft ones do not; fail-fast and `-k`; failed
//! outputs are removed and logs shown; signals and interruption.

use std::time::Duration;

use crate::test::*;

const CHAIN: &str = r#"
[orch]
format = 1

[phase.a]
run = "echo a > {output}"
outputs = ["out/a.txt"]

[phase.b]
needs = ["a"]
run = "cat {needs.a.outputs} > {output}"
outputs = ["out/b.txt"]

[phase.c]
needs = ["b"]
run = "cat {needs.b.outputs} > {output}"
outputs = ["out/c.txt"]
"#;

const FAILING_B: &str = "echo partial > {output}; echo 'boom from b' >&2; exit 3";

#[test]
fn failed_hard_dependency_blocks_downstream_and_removes_its_output() {
    let out = Test::new().orchfile(CHAIN).run();
    assert_eq!(out.read("out/b.txt"), "a\n");

    out.write(
        "Orchfile.toml",
        &CHAIN.replace("cat {needs.a.outputs} > {output}", FAILING_B),
    );
    let out = out
        .again()
        .args(["build", "--run-id", "f"])
        .expect_status(1)
        .stdout_contains("b FAILED (exit 3)")
        // The whole log, as one block.
        .stdout_contains("──── output of b (.orch/logs/f/b.log) ────\nboom from b\n────\n")
        .stdout_contains("orch: failed: b")
        .run();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("[-] c ") && l.contains("blocked by b (failed)")),
        "{}",
        out.stdout
    );
    let events = out.events("f");
    assert_eq!(ran(&events), names(&["b"]), "c must not run");
    let failed = event(&events, "instance_failed", "b");
    assert_eq!(failed["kind"], "exit");
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["log"], ".orch/logs/f/b.log");
    let blocked = event(&events, "instance_blocked", "c");
    assert_eq!(blocked["reason"], "upstream_failed");
    assert_eq!(blocked["blocked_by"], serde_json::json!(["b"]));
    let last = events.last().unwrap();
    assert_eq!(last["type"], "run_failed");
    assert_eq!(last["failed"], serde_json::json!(["b"]));
    assert_eq!(last["blocked"], serde_json::json!(["c"]));

    // Neither last run's output nor the partial one survives.
    assert!(
        !out.exists("out/b.txt"),
        "the failed phase's output is still there"
    );
    assert_eq!(out.read(".orch/logs/f/b.log"), "boom from b\n");

    let p = out.again().args(["plan", "--json"]).run().json();
    assert!(
        reasons(&p, "b").contains(&"last_failed".to_owned()),
        "{p:#}"
    );
    out.again()
        .args(["status"])
        .stdout_contains("blocked by `b`")
        .run();

    // Fixed: it builds again.
    out.write("Orchfile.toml", CHAIN);
    let out = out
        .again()
        .args(["build", "--no-cache", "--run-id", "fixed"])
        .run();
    assert!(ran(&out.events("fixed")).contains(&"b".to_owned()));
    assert_eq!(out.read("out/c.txt"), "a\n");
}

const INDEPENDENT: &str = r#"
[orch]
format = 1

[phase.a_fail]
run = "echo partial > {output}; exit 3"
outputs = ["out/a.txt"]

[phase.a_fail_child]
needs = ["a_fail"]
run = "cat {needs.a_fail.outputs} > {output}"
outputs = ["out/child.txt"]

[phase.z_ok]
run = "echo z > {output}"
outputs = ["out/z.txt"]
"#;

#[test]
fn fail_fast_starts_nothing_after_a_failure() {
    let out = Test::new()
        .orchfile(INDEPENDENT)
        .args(["build", "-j", "1", "--run-id", "ff"])
        .expect_status(1)
        .run();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("[-] z_ok ") && l.contains("not started") && l.contains("-k")),
        "{}",
        out.stdout
    );
    let events = out.events("ff");
    assert_eq!(ran(&events), names(&["a_fail"]));
    let z = event(&events, "instance_blocked", "z_ok");
    assert_eq!(z["reason"], "stopped_after_failure");
    assert_eq!(z["blocked_by"], serde_json::json!([]));
    assert_eq!(
        event(&events, "instance_blocked", "a_fail_child")["reason"],
        "upstream_failed"
    );
    assert!(!out.exists("out/z.txt"));
    assert!(!out.exists("out/a.txt"));
}

#[test]
fn fail_fast_counts_what_was_up_to_date_as_up_to_date_not_blocked() {
    // z_ok is built; a_fail fails again. With -j 1 the failure comes
    // first, before the scheduler reaches z_ok: it is still up to date, not blocked.
    let t = Test::new()
        .orchfile(INDEPENDENT)
        .args(["build", "-k", "--run-id", "first"])
        .expect_status(1)
        .run();
    let out = t
        .again()
        .args(["build", "-j", "1", "--run-id", "again"])
        .expect_status(1)
        .run();
    let events = out.events("again");
    assert!(
        blocked(&events).iter().all(|b| !b.starts_with("z_ok")),
        "{:?}",
        blocked(&events)
    );
    let end = &of_type(&events, "run_failed")[0]["counts"];
    assert_eq!(end["up_to_date"], 1, "{end}");
    assert!(!out.stdout.contains("z_ok not started"), "{}", out.stdout);
    assert!(out.stdout.contains("1 up to date"), "{}", out.stdout);
}

#[test]
fn keep_going_builds_independent_branches() {
    let out = Test::new()
        .orchfile(INDEPENDENT)
        .args(["build", "-j", "1", "-k", "--run-id", "k"])
        .expect_status(1)
        .run();
    let events = out.events("k");
    assert_eq!(ran(&events), names(&["a_fail", "z_ok"]));
    assert_eq!(out.read("out/z.txt"), "z\n");
    // A hard dependency still blocks, with -k too.
    let child = event(&events, "instance_blocked", "a_fail_child");
    assert_eq!(child["reason"], "upstream_failed");
    assert_eq!(child["blocked_by"], serde_json::json!(["a_fail"]));
    assert!(!out.exists("out/child.txt"));
    let last = events.last().unwrap();
    assert_eq!(last["type"], "run_failed");
    assert_eq!(last["counts"]["succeeded"], 1);
    assert_eq!(last["counts"]["failed"], 1);
    assert_eq!(last["counts"]["blocked"], 1);

    // The next build only retries what failed or was blocked.
    let out = out
        .again()
        .args(["build", "-k", "--run-id", "k2"])
        .expect_status(1)
        .run();
    assert_eq!(ran(&out.events("k2")), names(&["a_fail"]));
}

const SOFT: &str = r#"
[orch]
format = 1

[phase.soft]
inputs = ["flag.txt"]
run = "if grep -q fail flag.txt; then echo 'soft failed' >&2; exit 4; fi; echo soft > {output}"
outputs = ["out/soft.txt"]

[phase.down]
after = ["soft"]
run = "(cat {needs.soft.outputs} 2>/dev/null; echo down) > {output}"
outputs = ["out/down.txt"]
"#;

#[test]
fn failed_soft_dependency_does_not_block_and_is_retried_with_downstream() {
    let out = Test::new()
        .orchfile(SOFT)
        .write("flag.txt", "fail\n")
        .args(["build", "-k", "--run-id", "s1"])
        .expect_status(1)
        .stdout_contains("down runs without its soft dependency `soft`")
        .run();
    let events = out.events("s1");
    assert_eq!(ran(&events), names(&["soft", "down"]));
    let unmet = event(&events, "soft_dependency_unmet", "down");
    assert_eq!(unmet["upstream"], "soft");
    assert_eq!(unmet["upstream_status"], "failed");
    assert!(blocked(&events).is_empty());
    event(&events, "instance_completed", "down");
    assert_eq!(events.last().unwrap()["type"], "run_failed");
    assert_eq!(out.read("out/down.txt"), "down\n");

    // Fixed: both rerun, since `down` was built without `soft`.
    out.write("flag.txt", "ok\n");
    let p = out.again().args(["plan", "--json"]).run().json();
    assert_eq!(plan_entry(&p, "down")["status"], "stale");
    let out = out.again().args(["build", "--run-id", "s2"]).run();
    let events = out.events("s2");
    assert_eq!(ran(&events), names(&["soft", "down"]));
    assert_eq!(
        event(&events, "instance_invalidated", "down")["details"],
        serde_json::json!([{"reason": "upstream_changed", "subject": "soft"}])
    );
    assert_eq!(out.read("out/down.txt"), "soft\ndown\n");
    let out = out.again().args(["build", "--run-id", "s3"]).run();
    assert!(ran(&out.events("s3")).is_empty());
}

#[test]
fn missing_output_is_a_failure() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.lazy]
run = "echo 'forgot to write'"
outputs = ["out/lazy.txt", "out/other.txt"]
"#,
        )
        .args(["build", "--run-id", "m"])
        .expect_status(1)
        .stdout_contains("lazy FAILED (missing output)")
        .stdout_contains("forgot to write")
        .run();
    let events = out.events("m");
    let failed = event(&events, "instance_failed", "lazy");
    assert_eq!(failed["kind"], "missing_output");
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("out/lazy.txt"), "{message}");
}

#[test]
fn command_killed_by_a_signal() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.suicide]
run = "kill -TERM $$"
outputs = ["out/x.txt"]
"#,
        )
        .args(["build", "--run-id", "sig"])
        .expect_status(1)
        .stdout_contains("suicide FAILED (signal 15)")
        .run();
    let events = out.events("sig");
    let failed = event(&events, "instance_failed", "suicide");
    assert_eq!(failed["kind"], "signal");
    assert_eq!(failed["signal"], 15);
}

#[test]
fn interrupt_stops_the_build_with_status_130() {
    let run = format!(
        "touch started; {}; echo slow > {{output}}",
        sh_wait_until("[ -f never ]", 20)
    );
    let t = Test::new()
        .orchfile(&format!(
            r#"
[orch]
format = 1

[phase.slow]
run = "{run}"
outputs = ["out/slow.txt"]

[phase.after_slow]
needs = ["slow"]
run = "cat {{needs.slow.outputs}} > {{output}}"
outputs = ["out/after.txt"]
"#
        ))
        .args(["build", "--run-id", "int"]);
    let project = t.project().clone();
    let child = t.spawn();
    wait_until("the phase to start", Duration::from_secs(20), || {
        project.exists("started")
    });
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("orch: interrupted"), "{stdout}");
    let events = project.events("int");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "run_failed");
    assert_eq!(last["interrupted"], true);
    assert!(!ran(&events).contains(&"after_slow".to_owned()));
    assert!(!project.exists("out/slow.txt"));
}

#[test]
fn timeout_stops_a_slow_command() {
    let run = format!(
        "{}; echo late > {{output}}",
        sh_wait_until("[ -f never ]", 5)
    );
    let out = Test::new()
        .orchfile(&format!(
            r#"
[orch]
format = 1

[phase.slow]
timeout = "300ms"
run = "{run}"
outputs = ["out/slow.txt"]
"#
        ))
        .args(["build", "--run-id", "t"])
        .expect_status(1)
        .stdout_contains("slow FAILED (timeout)")
        .run();
    assert_eq!(
        event(&out.events("t"), "instance_failed", "slow")["kind"],
        "timeout"
    );
}

#[test]
fn retry_runs_a_failed_command_again() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.flaky]
retry = { attempts = 2, backoff = "10ms" }
run = "if [ -f tried ]; then echo ok > {output}; else touch tried; exit 1; fi"
outputs = ["out/flaky.txt"]
"#,
        )
        .args(["build", "--run-id", "r"])
        .run();
    let attempts: Vec<u64> = of_type(&out.events("r"), "instance_started")
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2]);
    assert_eq!(out.read("out/flaky.txt"), "ok\n");
}

#[test]
fn output_violating_its_schema_fails() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.data]
run = "echo '{{\"other\": 1}' > {output}"
outputs = [{ path = "out/data.json", schema = "schema.json" }]
"#,
        )
        .write("schema.json", r#"{"type": "object", "required": ["name"]}"#)
        .args(["build", "--run-id", "s"])
        .expect_status(1)
        .run();
    assert_eq!(
        event(&out.events("s"), "instance_failed", "data")["kind"],
        "schema"
    );
    assert!(!out.exists("out/data.json"));
}

#[test]
fn long_failure_log_shows_its_tail() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.noisy]
run = "seq 1 450; exit 2"
outputs = ["out/noisy.txt"]
"#,
        )
        .args(["build", "--run-id", "n"])
        .expect_status(1)
        .stdout_contains("… 50 earlier lines in the log file\n51\n")
        .stdout_contains("\n450\n────\n")
        .stdout_lacks("\n50\n")
        .run();
    assert_eq!(out.read(".orch/logs/n/noisy.log").lines().count(), 450);
}

/// Fail-fast wins over soft dependencies: after any failure nothing new starts, so a
/// phase whose soft dependency failed is reported `stopped_after_failure` (README,
/// "Failures"); with `-k` it runs (test above).
#[test]
fn failed_soft_dependency_without_keep_going_stops_the_build() {
    let out = Test::new()
        .orchfile(SOFT)
        .write("flag.txt", "fail\n")
        .args(["build", "--run-id", "s"])
        .expect_status(1)
        .run();
    let events = out.events("s");
    assert_eq!(ran(&events), names(&["soft"]));
    let blocked = event(&events, "instance_blocked", "down");
    assert_eq!(blocked["reason"], "stopped_after_failure");
    assert!(events.iter().all(|e| e["type"] != "soft_dependency_unmet"));
    assert!(!out.exists("out/down.txt"));
}

#[test]
fn a_log_is_written_for_commands_that_print_or_fail_only() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.quiet]
run = "echo q > {output}"
outputs = ["out/q.txt"]

[phase.loud]
run = "echo to-stdout; echo to-stderr >&2"

[phase.silent_failure]
run = "exit 4"

[phase.missing]
run = "true"
outputs = ["out/never.txt"]
"#,
        )
        .args(["build", "-k", "--run-id", "r"])
        .expect_status(1)
        .stdout_contains("silent_failure FAILED (exit 4)")
        .run();
    assert_eq!(
        out.list(".orch/logs/r"),
        ["loud.log", "missing.log", "silent_failure.log"],
        "a command that printed nothing and succeeded leaves no log"
    );
    assert_eq!(out.read(".orch/logs/r/loud.log"), "to-stdout\nto-stderr\n");
    // Every failure has the log its event names, even an empty one.
    assert_eq!(out.read(".orch/logs/r/silent_failure.log"), "");
    let events = out.events("r");
    assert_eq!(
        event(&events, "instance_failed", "missing")["log"],
        ".orch/logs/r/missing.log"
    );
}

#[test]
fn a_long_command_s_log_can_be_followed_while_it_runs() {
    let t = Test::new().orchfile(
        r#"
[orch]
format = 1

[phase.slow]
run = "echo started; while [ ! -e release ]; do sleep 0.05; done; echo done"
"#,
    );
    let t = t.args(["build", "--run-id", "r"]);
    let log = t.project().join(".orch/logs/r/slow.log");
    let release = t.project().join("release");
    let mut child = t.spawn();
    // Copied from the command's spool while it still runs (every second).
    wait_until("the log to be followed", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|s| s == "started\n")
    });
    std::fs::write(&release, "").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "started\ndone\n");
}
