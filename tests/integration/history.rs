//! History: `orch runs`, `orch log`, `orch show` (lineage of a path, last result of a
//! target), `orch clean` and `orch gc`.

use serde_json::Value;

use crate::test::*;

/// `a` (from `raw/*.txt`) → `b`, with `c` beside them.
const TWO_PHASES: &str = r#"
[orch]
format = 1

[phase.a]
run = "cat {inputs} > {output}"
inputs = ["raw/*.txt"]
outputs = ["out/a.txt"]

[phase.b]
needs = ["a"]
run = "sed 's/^/b:/' {needs.a.outputs} > {output}"
outputs = ["out/b.txt"]

[phase.c]
run = "echo c > {output}"
outputs = ["out/c.txt"]
"#;

fn two_phases() -> Test {
    Test::new().orchfile(TWO_PHASES).write("raw/1.txt", "one\n")
}

fn hex(content: &str) -> String {
    blake3::hash(content.as_bytes()).to_hex().to_string()
}

/// The data rows of `orch runs` (after the header).
fn run_rows(stdout: &str) -> Vec<Vec<String>> {
    let mut lines = stdout.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("RUN "), "no header:\n{stdout}");
    lines
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
fn runs_lists_builds_newest_first_with_status_and_counts() {
    let out = two_phases().args(["build", "--run-id", "one"]).run();
    // The second build fails in `a`, which blocks `b`; `c` is up to date.
    out.write(
        "Orchfile.toml",
        &TWO_PHASES.replace("cat {inputs} > {output}", "exit 4"),
    );
    out.write("raw/1.txt", "uno\n");
    let out = out
        .again()
        .args(["build", "--run-id", "two", "-k"])
        .expect_status(1)
        .run();

    let listed = out.again().args(["runs"]).run();
    let rows = run_rows(&listed.stdout);
    assert_eq!(rows.len(), 2, "{}", listed.stdout);
    // RUN STARTED DURATION STATUS SUCCEEDED CACHED UP-TO-DATE FAILED BLOCKED
    assert_eq!(rows[0][0], "two");
    assert_eq!(rows[0][3], "failed");
    assert_eq!(rows[0][4..], ["0", "0", "1", "1", "1"]);
    assert_eq!(rows[1][0], "one");
    assert_eq!(rows[1][3], "succeeded");
    assert_eq!(rows[1][4..], ["3", "0", "0", "0", "0"]);

    let doc = out.again().args(["runs", "--json"]).run().json();
    let runs = doc["runs"].as_array().expect("runs array");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["run_id"], "two");
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[0]["counts"]["failed"], 1);
    assert_eq!(runs[0]["counts"]["blocked"], 1);
    assert_eq!(runs[0]["failed"], serde_json::json!(["a"]));
    assert_eq!(runs[0]["blocked"], serde_json::json!(["b"]));
    assert_eq!(runs[1]["run_id"], "one");
    assert_eq!(runs[1]["counts"]["succeeded"], 3);
    assert!(runs[1]["duration_ms"].is_u64());

    // -n limits, keeping the newest.
    let limited = out.again().args(["runs", "-n", "1"]).run();
    let rows = run_rows(&limited.stdout);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], "two");
}

#[test]
fn runs_before_any_build_and_an_unfinished_run() {
    let out = two_phases()
        .args(["runs"])
        .stdout_contains("no runs recorded yet")
        .run();
    assert!(!out.exists(".orch"), "runs wrote state");
    out.again()
        .args(["runs", "--json"])
        .stdout_contains(r#""runs": []"#)
        .run();

    // A run whose end was never recorded (orch was killed) and no build holds the lock.
    let out = out.again().args(["build", "--run-id", "one"]).run();
    let conn = rusqlite::Connection::open(out.join(".orch/state.db")).expect("open state");
    conn.execute(
        "UPDATE runs SET finished_at_ns = NULL, status = NULL, summary = NULL",
        [],
    )
    .expect("update");
    drop(conn);
    let listed = out.again().args(["runs"]).run();
    let rows = run_rows(&listed.stdout);
    assert_eq!(rows[0][0], "one");
    assert_eq!(rows[0][3], "unfinished", "{}", listed.stdout);
}

#[test]
fn log_shows_a_run_in_words_and_as_raw_json() {
    let out = two_phases().args(["build", "--run-id", "one"]).run();
    out.write("raw/1.txt", "uno\n");
    let out = out.again().args(["build", "--run-id", "two"]).run();

    // Default: the latest run.
    let latest = out.again().args(["log"]).run();
    let lines: Vec<&str> = latest.stdout.lines().collect();
    assert_eq!(lines.len(), out.events("two").len(), "{}", latest.stdout);
    assert!(lines[0].contains("run_started") && lines[0].contains("run two"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("instance_invalidated") && l.contains("input_changed (raw/1.txt)")),
        "{}",
        latest.stdout
    );
    // `c` was up to date before the build: counted, not listed.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("plan_ready") && l.ends_with("1 up to date (1 not listed below)")),
        "{}",
        latest.stdout
    );
    assert!(
        !lines.iter().any(|l| l.contains(" c ")),
        "{}",
        latest.stdout
    );
    assert!(lines.last().unwrap().contains("run_completed"));

    // A named run, and its raw events.
    let first = out.again().args(["log", "one"]).run();
    assert!(first.stdout.contains("never_built"), "{}", first.stdout);
    let raw = out.again().args(["log", "one", "--json"]).run();
    assert_eq!(raw.stdout, out.events_text("one"));
    assert_ne!(raw.stdout, out.events_text("two"));
}

#[test]
fn log_of_a_failed_run_names_exit_codes_and_blockers() {
    let out = two_phases()
        .orchfile(&TWO_PHASES.replace("cat {inputs} > {output}", "exit 4"))
        .args(["build", "--run-id", "bad", "-k"])
        .expect_status(1)
        .run();
    let log = out.again().args(["log", "bad"]).run();
    assert!(
        log.stdout
            .lines()
            .any(|l| l.contains("instance_failed") && l.contains("exit code 4")),
        "{}",
        log.stdout
    );
    assert!(
        log.stdout.lines().any(|l| l.contains("instance_blocked")
            && l.contains("upstream_failed")
            && l.contains("`a`")),
        "{}",
        log.stdout
    );
}

#[test]
fn log_of_an_unknown_run_lists_recent_runs() {
    let out = two_phases().args(["build", "--run-id", "one"]).run();
    out.again()
        .args(["log", "nope"])
        .expect_status(2)
        .stderr_contains("there is no run `nope`")
        .stderr_contains("recent runs (newest first): one")
        .run();
    out.again()
        .args(["log", "../../etc"])
        .expect_status(2)
        .stderr_contains("there is no run")
        .run();
    two_phases()
        .args(["log"])
        .expect_status(2)
        .stderr_contains("no runs are recorded yet")
        .run();
}

/// The node for `path` anywhere in a `show --json` tree.
fn find<'a>(node: &'a Value, path: &str) -> Option<&'a Value> {
    if node["path"] == path {
        return Some(node);
    }
    node["built_from"]
        .as_array()?
        .iter()
        .find_map(|c| find(c, path))
}

#[test]
fn show_path_traces_lineage_across_two_phases() {
    let out = two_phases().args(["build", "--run-id", "one"]).run();
    let (a, b) = (out.read("out/a.txt"), out.read("out/b.txt"));
    assert_eq!(b, "b:one\n");

    let doc = out
        .again()
        .args(["show", "out/b.txt", "--json"])
        .run()
        .json();
    assert_eq!(doc["kind"], "output");
    assert_eq!(doc["digest"], hex(&b));
    assert_eq!(doc["on_disk"], "unchanged");
    assert_eq!(doc["instance"], "b");
    assert_eq!(doc["run_id"], "one");
    assert_eq!(doc["size"], b.len());
    let key = doc["action_key"].as_str().expect("action key");
    assert_eq!(key.len(), 64);
    let completed = event(&out.events("one"), "instance_completed", "b").clone();
    assert_eq!(completed["action_key"], key);

    let up = &doc["built_from"][0];
    assert_eq!(up["path"], "out/a.txt");
    assert_eq!(up["kind"], "output");
    assert_eq!(up["instance"], "a");
    assert_eq!(up["digest"], hex(&a));
    let src = &up["built_from"][0];
    assert_eq!(src["path"], "raw/1.txt");
    assert_eq!(src["kind"], "source");
    assert_eq!(src["digest"], hex("one\n"));
    assert!(src.get("built_from").is_none());

    // In words: the same tree, with short digests.
    let shown = out
        .again()
        .args(["show", "./out/b.txt"])
        .stdout_contains(&format!("digest      {}", &hex(&b)[..12]))
        .stdout_contains("the file still has it")
        .stdout_contains(&format!("action key  {key}"))
        .run();
    let a_line = shown
        .stdout
        .lines()
        .position(|l| l.contains("out/a.txt") && l.contains(&hex(&a)[..12]))
        .unwrap_or_else(|| panic!("no line for out/a.txt:\n{}", shown.stdout));
    let raw_line = shown
        .stdout
        .lines()
        .position(|l| l.contains("raw/1.txt") && l.contains(&hex("one\n")[..12]))
        .unwrap_or_else(|| panic!("no line for raw/1.txt:\n{}", shown.stdout));
    assert!(raw_line > a_line, "{}", shown.stdout);

    // A source changed since: the tree says so; the output itself is still as built.
    out.write("raw/1.txt", "uno\n");
    let doc = out
        .again()
        .args(["show", "out/b.txt", "--json"])
        .run()
        .json();
    let src = find(&doc, "raw/1.txt").expect("raw/1.txt in the tree");
    assert_eq!(src["on_disk"], "modified");
    assert_eq!(src["on_disk_digest"], hex("uno\n"));
    assert_eq!(doc["on_disk"], "unchanged");

    // A path relative to the current directory, inside the project (no -C).
    let from_sub = std::process::Command::new(ORCH)
        .args(["show", "a.txt", "--json"])
        .current_dir(out.join("out"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run orch");
    assert_eq!(
        from_sub.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&from_sub.stderr)
    );
    let doc: Value = serde_json::from_slice(&from_sub.stdout).expect("json");
    assert_eq!(doc["path"], "out/a.txt");
}

#[test]
fn show_of_an_unknown_path_exits_2() {
    let out = two_phases().args(["build", "--run-id", "one"]).run();
    out.again()
        .args(["show", "out/nothing.txt"])
        .expect_status(2)
        .stderr_contains("orch has no record of an output `out/nothing.txt`")
        .run();
    // A file that exists but is neither an output nor read by any phase.
    out.write("notes.txt", "x\n");
    out.again()
        .args(["show", "notes.txt"])
        .expect_status(2)
        .stderr_contains("no record of an output `notes.txt`")
        .run();
    // A source is no output either, but orch knows what reads it.
    out.again()
        .args(["show", "raw/1.txt"])
        .stdout_contains("raw/1.txt is a source, read by: a")
        .run();
    // Looks like a path to a phase name: suggest the target.
    out.again()
        .args(["show", "./b"])
        .expect_status(2)
        .stderr_contains("`orch show b`")
        .run();
    // Neither a path nor a target.
    out.again()
        .args(["show", "zzz"])
        .expect_status(2)
        .stderr_contains("neither an output orch recorded nor a target")
        .run();
}

#[test]
fn show_target_prints_last_result_key_outputs_and_status() {
    let out = two_phases().args(["build", "--run-id", "one"]).run();
    let events = out.events("one");
    let key = event(&events, "instance_completed", "b")["action_key"]
        .as_str()
        .expect("key")
        .to_owned();
    let b = out.read("out/b.txt");
    out.again()
        .args(["show", "b"])
        .stdout_contains("last result  succeeded in run one")
        .stdout_contains(&format!("action key   {key}"))
        .stdout_contains(&format!("out/b.txt  {}", &hex(&b)[..12]))
        .stdout_contains("status       up to date")
        .run();

    out.write("raw/1.txt", "uno\n");
    let doc = out.again().args(["show", "b", "--json"]).run().json();
    let inst = &doc["instances"][0];
    assert_eq!(inst["instance"], "b");
    assert_eq!(inst["last_result"]["status"], "succeeded");
    assert_eq!(inst["last_result"]["run_id"], "one");
    assert_eq!(inst["last_success"]["action_key"], key);
    assert_eq!(
        inst["last_success"]["outputs"]["out/b.txt"]["digest"],
        hex(&b)
    );
    assert_eq!(inst["status"], "stale");
    assert_eq!(inst["reasons"], serde_json::json!(["upstream_changed"]));

    // After a failure: the failed attempt and the last success.
    out.write(
        "Orchfile.toml",
        &TWO_PHASES.replace("sed 's/^/b:/' {needs.a.outputs} > {output}", "exit 5"),
    );
    let out = out
        .again()
        .args(["build", "--run-id", "two"])
        .expect_status(1)
        .run();
    out.again()
        .args(["show", "b"])
        .stdout_contains("last result  failed in run two")
        .stdout_contains("last success run one")
        .stdout_contains("stale: ")
        .stdout_contains("last_failed")
        .run();
    two_phases()
        .args(["show", "c"])
        .stdout_contains("last result  never run")
        .stdout_contains("never_built")
        .run();
}

#[test]
fn clean_removes_outputs_and_the_next_build_rebuilds_them() {
    let out = two_phases()
        .write("keep/me.txt", "mine\n")
        .args(["build", "--run-id", "one"])
        .run();
    // One target: only its outputs go.
    out.again()
        .args(["clean", "b"])
        .stdout_contains("removed out/b.txt")
        .stdout_contains("orch: removed 1 output")
        .run();
    assert!(!out.exists("out/b.txt"));
    assert!(out.exists("out/a.txt") && out.exists("out/c.txt"));
    let plan = out.again().args(["plan", "--json"]).run().json();
    assert_eq!(reasons(&plan, "b"), ["output_missing"]);
    assert_eq!(plan_entry(&plan, "a")["status"], "up_to_date");

    // Everything: sources and other files stay, results stay in the state.
    let cleaned = out
        .again()
        .args(["clean"])
        .stdout_contains("removed out/a.txt")
        .stdout_contains("removed out/c.txt")
        .run();
    assert!(!cleaned.stdout.contains("out/b.txt"), "{}", cleaned.stdout);
    assert!(!out.exists("out/a.txt") && !out.exists("out/c.txt"));
    assert_eq!(out.read("raw/1.txt"), "one\n");
    assert_eq!(out.read("keep/me.txt"), "mine\n");
    assert!(out.exists("Orchfile.toml"));
    out.again()
        .args(["clean"])
        .stdout_contains("nothing to remove")
        .run();

    let out = out
        .again()
        .args(["build", "--no-cache", "--run-id", "two"])
        .run();
    let events = out.events("two");
    assert_eq!(sorted(ran(&events)), names(&["a", "b", "c"]));
    let why = event(&events, "instance_invalidated", "a");
    assert_eq!(why["reasons"], serde_json::json!(["output_missing"]));
    assert_eq!(out.read("out/b.txt"), "b:one\n");
}

#[test]
fn clean_removes_directory_and_sharded_outputs_and_the_local_stores() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.site]
run = "mkdir -p {outputs} && echo hi > site/index.html"
outputs = ["site/"]

[phase.pages]
inputs = ["src/*.txt"]
shard = { strategy = "files", source = "src/*.txt", merge = "none" }
run = "cp {shard.input} pages/{shard.key}.html"
outputs = ["pages/{shard.key}.html"]

[phase.joined]
inputs = ["src/*.txt"]
shard = { strategy = "files", source = "src/*.txt" }
run = "cat {shard.input} > {shard.output}"
outputs = ["joined.txt"]
"#,
        )
        .write("src/1.txt", "1\n")
        .write("src/2.txt", "2\n")
        .args(["build", "--run-id", "one"])
        .run();
    assert!(out.exists("site/index.html"));
    assert!(out.exists("pages/src/1.txt.html") && out.exists("pages/src/2.txt.html"));
    assert!(!out.list(".orch/shards").is_empty());

    out.again()
        .args(["clean", "--cache"])
        .stdout_contains("removed site/")
        .stdout_contains("removed pages/src/1.txt.html")
        .stdout_contains("removed pages/src/2.txt.html")
        .stdout_contains("removed joined.txt")
        .stdout_contains("removed .orch/shards/")
        .run();
    assert!(!out.exists("site") && !out.exists("joined.txt"));
    assert!(!out.exists("pages/src/1.txt.html"));
    assert!(!out.exists(".orch/shards"));
    assert!(out.exists("src/1.txt") && out.exists("src/2.txt"));

    let out = out.again().args(["build", "--run-id", "two"]).run();
    assert_eq!(out.read("joined.txt"), "1\n2\n");
    assert!(out.exists("pages/src/2.txt.html"));
}

#[test]
fn gc_keeps_the_newest_runs() {
    let out = two_phases().args(["build", "--run-id", "one"]).run();
    out.write("raw/1.txt", "uno\n");
    let out = out.again().args(["build", "--run-id", "two"]).run();
    out.write("raw/1.txt", "eins\n");
    let out = out.again().args(["build", "--run-id", "three"]).run();
    assert_eq!(out.list(".orch/runs").len(), 3);
    assert_eq!(out.list(".orch/logs").len(), 3);

    out.again()
        .args(["gc", "--keep", "1"])
        .stdout_contains("removed 2 runs")
        .run();
    assert_eq!(out.list(".orch/runs"), ["three"]);
    assert_eq!(out.list(".orch/logs"), ["three"]);
    let rows = run_rows(&out.again().args(["runs"]).run().stdout);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], "three");
    out.again()
        .args(["log", "one"])
        .expect_status(2)
        .stderr_contains("recent runs (newest first): three")
        .run();
    // The state still knows every result: nothing to do.
    out.again().stdout_contains("nothing to do").run();
    out.again()
        .args(["gc", "--keep", "5"])
        .stdout_contains("nothing to collect")
        .run();
}

#[test]
fn gc_removes_shard_files_of_instances_no_longer_declared() {
    const SHARDED: &str = r#"
[orch]
format = 1

[phase.joined]
inputs = ["src/*.txt"]
shard = { strategy = "files", source = "src/*.txt" }
run = "cat {shard.input} > {shard.output}"
outputs = ["joined.txt"]
"#;
    let out = Test::new()
        .orchfile(SHARDED)
        .write("src/1.txt", "1\n")
        .args(["build", "--run-id", "one"])
        .run();
    assert_eq!(out.list(".orch/shards"), ["joined"]);
    out.write(
        "Orchfile.toml",
        &SHARDED.replace("phase.joined", "phase.merged"),
    );
    let out = out.again().args(["build", "--run-id", "two"]).run();
    assert_eq!(out.list(".orch/shards"), ["joined", "merged"]);
    out.again()
        .args(["gc", "--keep", "10"])
        .stdout_contains("shard files of 1 instance")
        .run();
    assert_eq!(out.list(".orch/shards"), ["merged"]);
    assert_eq!(out.list(".orch/runs"), ["one", "two"]);
}
