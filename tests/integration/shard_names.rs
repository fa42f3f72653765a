//! Shards by name: a shard is shown with its `{shard.key}` beside its index
//! (`compile#1 (src/mem.c)`) in the plain lines, the failure block, the closing line,
//! its log file's name and `orch log`; keys from data files are escaped; `plan` and
//! `status` name the stale shards (ten, then a count) and `plan --json` lists them all.

use serde_json::{Value, json};

use crate::test::*;

/// An Orchfile of `[orch] format = 1` followed by `phases`.
fn orchfile(phases: &str) -> String {
    format!("[orch]\nformat = 1\n{phases}")
}

/// One shard per C file; the shard of `src/mem.c` fails.
const COMPILE: &str = r#"
[phase.compile]
shard = { strategy = "files", source = "src/**/*.c" }
run = "if [ {shard.input} = src/mem.c ]; then echo 'mem.c: error'; exit 3; fi; cat {shard.input} > {shard.output}; echo compiled"
outputs = ["build/all.txt"]
"#;

fn compile() -> Test {
    Test::new()
        .orchfile(&orchfile(COMPILE))
        .write("src/a.c", "a\n")
        .write("src/mem.c", "mem\n")
        .write("src/util/io.c", "io\n")
}

/// Every event of `events` that has a `shard` object.
fn shard_events(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["shard"].is_object()).collect()
}

#[test]
fn a_failing_files_shard_is_named_by_its_path() {
    // Files in path order: src/a.c, src/mem.c, src/util/io.c.
    let out = compile()
        .args(["build", "-k", "-j", "1", "--run-id", "r"])
        .expect_status(1)
        .stdout_contains(" compile#0 (src/a.c) ok ")
        .stdout_contains(" compile#1 (src/mem.c) FAILED (exit 3) ")
        .stdout_contains(
            "──── output of compile#1 (src/mem.c) (.orch/logs/r/compile#1-src_mem.c.log) ────\n\
             mem.c: error\n────\n",
        )
        .stdout_contains(" compile#2 (src/util/io.c) ok ")
        .stdout_contains("compile FAILED (exit 3) ")
        .stdout_contains("1 of 3 shards failed; first: #1 (src/mem.c): the command exited")
        .stdout_contains("\norch: failed: compile#1 (src/mem.c)\n")
        .run();

    // The log file's name carries a safe form of the key, and the events point at it.
    let logs = out.list(".orch/logs/r");
    assert_eq!(
        logs,
        [
            "compile#0-src_a.c.log",
            "compile#1-src_mem.c.log",
            "compile#2-src_util_io.c.log"
        ]
    );
    let events = out.events("r");
    let failed = event(&events, "instance_failed", "compile#1");
    assert_eq!(failed["log"], ".orch/logs/r/compile#1-src_mem.c.log");
    assert_eq!(
        out.read(".orch/logs/r/compile#1-src_mem.c.log"),
        "mem.c: error\n"
    );
    assert_eq!(
        event(&events, "instance_failed", "compile")["log"],
        ".orch/logs/r/compile#1-src_mem.c.log"
    );
    // The run summary names the failed shard, its key whole.
    let summary: Value =
        serde_json::from_str(&out.read(".orch/runs/r/summary.json")).expect("a summary");
    assert_eq!(
        summary["failed"][0]["shards"],
        json!([{
            "index": 1,
            "key": "src/mem.c",
            "kind": "exit",
            "log": ".orch/logs/r/compile#1-src_mem.c.log"
        }])
    );
    // `orch log` shows the shard's key and finds its log.
    out.again()
        .args(["log", "r"])
        .stdout_contains("compile#1  failed (exit code 3)")
        .stdout_contains("log .orch/logs/r/compile#1-src_mem.c.log (shard src/mem.c)")
        .run();
}

#[test]
fn json_events_about_a_shard_carry_its_key_whole() {
    let deep = "src/a/very/deeply/nested/source/tree/of/modules/common/mem.c";
    let out = compile()
        .write(deep, "deep\n")
        .args(["build", "-k", "-j", "1", "--json", "--run-id", "j"])
        .expect_status(1)
        .run();
    let events = parse_events(&out.stdout);
    let shards = shard_events(&events);
    assert!(!shards.is_empty());
    for e in &shards {
        let instance = e["instance"].as_str().expect("an instance");
        let index = e["shard"]["index"].as_u64().expect("an index");
        assert_eq!(instance, format!("compile#{index}"), "{e}");
        assert!(e["shard"]["key"].is_string(), "{e}");
    }
    let keys: Vec<&str> = of_type(&events, "instance_started")
        .iter()
        .filter_map(|e| e["shard"]["key"].as_str())
        .collect();
    // Never shortened in JSON.
    assert_eq!(keys, ["src/a.c", deep, "src/mem.c", "src/util/io.c"]);
    assert_eq!(
        event(&events, "instance_failed", "compile#2")["shard"],
        json!({ "index": 2, "count": 4, "key": "src/mem.c" })
    );

    // The plain display shortens it, keeping the end of the path.
    out.again()
        .args(["build", "-k", "-j", "1", "--force"])
        .expect_status(1)
        .stdout_contains(" compile#1 (…/source/tree/of/modules/common/mem.c) ok ")
        .run();
}

/// Groups by a field whose values come from a data file.
const GROUPED: &str = r#"
[phase.routes]
shard = { strategy = "group", source = "data/in.jsonl", key = "route" }
run = "cat {shard.input} > {shard.output}; grep -q fail {shard.input} && exit 5; echo routed; : '{shard.key}'"
outputs = ["build/routes.jsonl"]
"#;

#[test]
fn a_group_key_cannot_forge_lines_or_terminal_escapes() {
    let forged = "x\n[9/9] routes ok 1ms\u{1b}[2J";
    let record = json!({ "route": forged, "fail": true }).to_string();
    let out = Test::new()
        .orchfile(&orchfile(GROUPED))
        .write("data/in.jsonl", &format!("{record}\n{{\"route\":\"a\"}}\n"))
        .args(["build", "-k", "-j", "1", "--run-id", "g"])
        .expect_status(1)
        .stdout_contains(" routes#1 (x\\n[9/9] routes ok 1ms\\u{1b}[2J) FAILED (exit 5) ")
        .stdout_contains("first: #1 (x\\n[9/9] routes ok 1ms\\u{1b}[2J): the command exited")
        .stdout_contains("orch: failed: routes#1 (x\\n[9/9] routes ok 1ms\\u{1b}[2J)\n")
        .stdout_lacks("\n[9/9] routes ok")
        .stdout_lacks("\u{1b}")
        .run();
    // The log's name holds only safe characters, and JSON has the key as it is.
    let logs = out.list(".orch/logs/g");
    assert_eq!(
        logs,
        ["routes#0-a.log", "routes#1-x__9_9__routes_ok_1ms__2J.log"]
    );
    let events = out.events("g");
    assert_eq!(
        event(&events, "instance_failed", "routes#1")["shard"]["key"],
        forged
    );
    let log = out.again().args(["log", "g"]).run();
    assert!(!log.stdout.contains('\u{1b}'), "{}", log.stdout);
    assert!(!log.stdout.contains("\n[9/9]"), "{}", log.stdout);
    assert!(
        log.stdout
            .contains("(shard x\\n[9/9] routes ok 1ms\\u{1b}[2J)"),
        "{}",
        log.stdout
    );
}

#[test]
fn chunk_shards_are_named_by_index_alone() {
    let out = Test::new()
        .orchfile(&orchfile(
            r#"
[phase.split]
shard = { strategy = "chunk", source = "data/in.jsonl", size = 1 }
run = "cat {shard.input} > {shard.output}; echo split"
outputs = ["build/all.jsonl"]
"#,
        ))
        .write("data/in.jsonl", "{\"n\":1}\n{\"n\":2}\n")
        .args(["build", "-j", "1", "--run-id", "c"])
        .stdout_contains(" split#0 ok ")
        .stdout_contains(" split#1 ok ")
        .run();
    assert_eq!(out.list(".orch/logs/c"), ["split#0.log", "split#1.log"]);
}

#[test]
fn plan_and_status_name_the_first_ten_stale_shards_and_count_the_rest() {
    let mut t = Test::new().orchfile(&orchfile(
        r#"
[phase.compile]
shard = { strategy = "files", source = "src/*.c" }
run = "cat {shard.input} > {shard.output}"
outputs = ["build/all.txt"]
"#,
    ));
    // f00.c … f13.c, so path order is index order.
    for n in 0..14 {
        t = t.write(&format!("src/f{n:02}.c"), &format!("{n}\n"));
    }
    let out = t
        .args(["plan"])
        .stdout_contains("14 of 14 shards stale\n")
        .run();
    let out = out.again().run();

    // One stale shard.
    out.write("src/f07.c", "seven\n");
    out.again()
        .args(["plan"])
        .stdout_contains(
            "  compile  input_changed (src/f07.c), 1 of 14 shards stale: #7 (src/f07.c)\n",
        )
        .run();
    out.again()
        .args(["status"])
        .stdout_contains(
            "compile  stale: input_changed (src/f07.c), 1 of 14 shards stale: #7 (src/f07.c)\n",
        )
        .run();

    // Twelve: ten named, then a count; the JSON names them all.
    for n in 1..13 {
        out.write(&format!("src/f{n:02}.c"), &format!("changed {n}\n"));
    }
    let listed: Vec<String> = (1..11).map(|n| format!("#{n} (src/f{n:02}.c)")).collect();
    out.again()
        .args(["plan"])
        .stdout_contains(&format!(
            "12 of 14 shards stale: {} and 2 more\n",
            listed.join(", ")
        ))
        .stdout_lacks("#11 (src/f11.c)")
        .run();
    let p = out.again().args(["plan", "--json"]).run().json();
    let shards = &plan_entry(&p, "compile")["shards"];
    assert_eq!(shards["stale"], 12);
    assert_eq!(shards["total"], 14);
    let stale: Vec<(u64, String)> = shards["stale_shards"]
        .as_array()
        .expect("a list of stale shards")
        .iter()
        .map(|s| {
            assert_eq!(s["reason"], "not_recorded", "{s}");
            (
                s["index"].as_u64().expect("an index"),
                s["key"].as_str().expect("a key").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(u64, String)> = (1..13).map(|n| (n, format!("src/f{n:02}.c"))).collect();
    assert_eq!(stale, expected);

    // Shards whose parts are gone are stale for that reason, which `--json` says.
    let out = out.again().run();
    for part in out.list(".orch/shards/compile/out") {
        out.remove(&format!(".orch/shards/compile/out/{part}"));
    }
    out.write("src/f13.c", "thirteen\n");
    let p = out.again().args(["plan", "--json"]).run().json();
    let stale = plan_entry(&p, "compile")["shards"]["stale_shards"]
        .as_array()
        .expect("a list of stale shards")
        .clone();
    assert_eq!(stale.len(), 14);
    assert!(
        stale[..13].iter().all(|s| s["reason"] == "output_missing"),
        "{stale:?}"
    );
    assert_eq!(stale[13]["reason"], "not_recorded");
}
