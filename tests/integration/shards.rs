//! Sharding: the `files`, `chunk` and `group` strategies, the ordered merge, per-shard
//! keys (one changed record reruns one shard), strict JSON Lines, `merge = "none"`, the
//! `parallel` cap, failure isolation across a matrix, shard counts in `plan` and
//! `status`, and the configuration errors of the `shard` table.
//!
//! Tests that need shards to overlap use markers and bounded waits (as `parallel.rs`
//! does), never timing, for their result.

use serde_json::{Value, json};

use crate::test::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// Events of type `ty` about the shards of `instance` (named `instance#N`), in order.
fn shard_events<'a>(events: &'a [Value], ty: &str, instance: &str) -> Vec<&'a Value> {
    let prefix = format!("{instance}#");
    events
        .iter()
        .filter(|e| {
            e["type"] == ty
                && e["instance"]
                    .as_str()
                    .is_some_and(|i| i.starts_with(&prefix))
        })
        .collect()
}

/// The `{shard.key}` of each shard of `instance` that started, in start order.
fn started_keys(events: &[Value], instance: &str) -> Vec<String> {
    shard_events(events, "instance_started", instance)
        .iter()
        .map(|e| e["shard"]["key"].as_str().expect("a shard key").to_owned())
        .collect()
}

/// Every shard, of any instance, whose command started.
fn shards_started(events: &[Value]) -> Vec<String> {
    ran(events)
        .into_iter()
        .filter(|n| n.contains('#'))
        .collect()
}

/// `(shards, stale, reused)` of the `shard_plan` event of `instance`.
fn plan_counts(events: &[Value], instance: &str) -> (u64, u64, u64) {
    let p = event(events, "shard_plan", instance);
    let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("no `{k}` in {p}"));
    (n("shards"), n("stale"), n("reused"))
}

/// The `seq` of an event.
fn seq(e: &Value) -> u64 {
    e["seq"].as_u64().expect("a seq")
}

/// `.part` files kept for `instance` under `.orch/shards/`.
fn parts(out: &Output, instance: &str) -> Vec<String> {
    out.list(&format!(".orch/shards/{instance}/out"))
        .into_iter()
        .filter(|n| n.ends_with(".part"))
        .collect()
}

/// JSON Lines, one record per line, each line ending with a newline.
fn jsonl(records: &[&str]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// An Orchfile of `[orch] format = 1` followed by `phases`.
fn orchfile(phases: &str) -> String {
    format!("[orch]\nformat = 1\n{phases}")
}

// ---------------------------------------------------------------------------------------
// `group`: merge order and content

const GROUPED: &str = r#"
[phase.ingest]
run = "cp raw/records.jsonl {output}"
inputs = ["raw/records.jsonl"]
outputs = ["build/ingest.jsonl"]

[phase.routes]
needs = ["ingest"]
shard = { strategy = "group", source = "build/ingest.jsonl", key = "route" }
run = '''{{ echo '##' {shard.key} {shard.index}/{shard.count} $ORCH_SHARD_INDEX/$ORCH_SHARD_COUNT; cat {shard.input}; }} > {shard.output}'''
outputs = ["build/routes.jsonl"]

[phase.lines]
needs = ["routes"]
run = "grep -c route {needs.routes.outputs} > {output}"
outputs = ["build/lines.txt"]
"#;

/// Routes in file order `b a 10 b "9" true a`; the last line has no newline.
const GROUPED_RECORDS: &str = concat!(
    "{\"route\":\"b\",\"n\":1}\n",
    "{\"route\":\"a\",\"n\":2}\n",
    "{\"route\":10,\"n\":3}\n",
    "{\"route\":\"b\",\"n\":4}\n",
    "{\"route\":\"9\",\"n\":5}\n",
    "{\"route\":true,\"n\":6}\n",
    "{\"route\":\"a\",\"n\":7}",
);

#[test]
fn group_merges_groups_in_sorted_key_order_keeping_record_order() {
    let out = Test::new()
        .orchfile(&orchfile(GROUPED))
        .write("raw/records.jsonl", GROUPED_RECORDS)
        .args(["build", "-j", "3", "--run-id", "g"])
        .run();
    // Keys sorted as strings ("10" < "9" < "a" < "b" < "true"); non-string values as
    // their JSON text; records in file order within a group; every slice ends with a
    // newline, even the one holding the unterminated last line.
    let expected = concat!(
        "## 10 0/5 0/5\n",
        "{\"route\":10,\"n\":3}\n",
        "## 9 1/5 1/5\n",
        "{\"route\":\"9\",\"n\":5}\n",
        "## a 2/5 2/5\n",
        "{\"route\":\"a\",\"n\":2}\n",
        "{\"route\":\"a\",\"n\":7}\n",
        "## b 3/5 3/5\n",
        "{\"route\":\"b\",\"n\":1}\n",
        "{\"route\":\"b\",\"n\":4}\n",
        "## true 4/5 4/5\n",
        "{\"route\":true,\"n\":6}\n",
    );
    assert_eq!(out.read("build/routes.jsonl"), expected);
    assert_eq!(out.read("build/lines.txt"), "7\n");

    let events = out.events("g");
    let plan = event(&events, "shard_plan", "routes");
    assert_eq!(plan["strategy"], "group");
    assert_eq!(plan["shards"], 5);
    assert_eq!(plan["stale"], 5);
    assert_eq!(plan["reused"], 0);
    assert_eq!(plan["parallel"], 3, "no `parallel`: `-j` caps the shards");

    let keys = ["10", "9", "a", "b", "true"];
    for (index, key) in keys.iter().enumerate() {
        let name = format!("routes#{index}");
        let shard = json!({ "index": index, "count": 5, "key": key });
        assert_eq!(event(&events, "instance_started", &name)["shard"], shard);
        assert_eq!(event(&events, "instance_completed", &name)["shard"], shard);
    }
    assert_eq!(
        sorted(started_keys(&events, "routes")),
        sorted(names(&keys))
    );

    // The merge follows every shard and precedes the instance's own completion.
    let merge = event(&events, "merge_completed", "routes");
    assert_eq!(merge["output"], "build/routes.jsonl");
    assert_eq!(merge["shards"], 5);
    assert_eq!(merge["size"], expected.len());
    let done = event(&events, "instance_completed", "routes");
    assert_eq!(done["outputs"]["build/routes.jsonl"], merge["digest"]);
    assert!(done.get("shard").is_none(), "{done}");
    for e in shard_events(&events, "instance_completed", "routes") {
        assert!(
            seq(e) < seq(merge),
            "a shard completed after the merge: {e}"
        );
    }
    assert!(seq(merge) < seq(done));
    assert!(
        seq(done) < seq(event(&events, "instance_started", "lines")),
        "the downstream phase started before the merge"
    );
    assert_eq!(parts(&out, "routes").len(), 5);

    let out = out
        .again()
        .args(["build", "--run-id", "again"])
        .stdout_contains("nothing to do (3 up to date)")
        .run();
    assert!(ran(&out.events("again")).is_empty());
}

#[test]
fn shard_keys_are_shell_quoted_in_the_command() {
    let out = Test::new()
        .orchfile(&orchfile(
            r#"
[phase.quoted]
shard = { strategy = "group", source = "data/in.jsonl", key = "k" }
run = '''printf '[%s]\n' {shard.key} > {shard.output}'''
outputs = ["out/quoted.txt"]
"#,
        ))
        .write(
            "data/in.jsonl",
            &jsonl(&[
                r#"{"k":"it's $HOME; a b"}"#,
                r#"{"k":"plain"}"#,
                r#"{"k":"*"}"#,
            ]),
        )
        .run();
    assert_eq!(
        out.read("out/quoted.txt"),
        "[*]\n[it's $HOME; a b]\n[plain]\n"
    );
}

// ---------------------------------------------------------------------------------------
// `chunk`: fixed-size shards

const CHUNKED: &str = r#"
[phase.chunks]
shard = { strategy = "chunk", source = "data/records.jsonl", size = 3 }
run = '''{{ echo "== {shard.key} $(wc -l < {shard.input} | tr -d ' ')"; cat {shard.input}; }} > {shard.output}'''
outputs = ["out/chunks.txt"]
"#;

fn numbered(range: std::ops::RangeInclusive<u32>) -> String {
    range.map(|n| format!("{{\"n\":{n}}}\n")).collect()
}

#[test]
fn chunk_splits_into_shards_of_size_records_in_order() {
    let out = Test::new()
        .orchfile(&orchfile(CHUNKED))
        .write("data/records.jsonl", &numbered(1..=10))
        .args(["build", "--run-id", "c"])
        .run();
    let expected = concat!(
        "== 0 3\n{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n",
        "== 1 3\n{\"n\":4}\n{\"n\":5}\n{\"n\":6}\n",
        "== 2 3\n{\"n\":7}\n{\"n\":8}\n{\"n\":9}\n",
        "== 3 1\n{\"n\":10}\n",
    );
    assert_eq!(out.read("out/chunks.txt"), expected);
    let events = out.events("c");
    assert_eq!(plan_counts(&events, "chunks"), (4, 4, 0));
    assert_eq!(event(&events, "shard_plan", "chunks")["strategy"], "chunk");
    assert_eq!(
        sorted(started_keys(&events, "chunks")),
        names(&["0", "1", "2", "3"])
    );

    // Appending a record changes only the last chunk.
    out.write("data/records.jsonl", &numbered(1..=11));
    let out = out.again().args(["build", "--run-id", "append"]).run();
    let events = out.events("append");
    assert_eq!(started_keys(&events, "chunks"), ["3"]);
    assert_eq!(plan_counts(&events, "chunks"), (4, 1, 3));
    assert!(
        out.read("out/chunks.txt")
            .ends_with("== 3 2\n{\"n\":10}\n{\"n\":11}\n")
    );

    // Editing a record in the middle reruns its chunk only.
    out.write(
        "data/records.jsonl",
        &numbered(1..=11).replace("{\"n\":5}", "{\"n\":50}"),
    );
    let out = out.again().args(["build", "--run-id", "edit"]).run();
    assert_eq!(started_keys(&out.events("edit"), "chunks"), ["1"]);
    assert!(
        out.read("out/chunks.txt")
            .contains("== 1 3\n{\"n\":4}\n{\"n\":50}\n{\"n\":6}\n")
    );

    // Inserting a record at the front shifts every chunk.
    out.write(
        "data/records.jsonl",
        &format!("{{\"n\":0}}\n{}", numbered(1..=11)),
    );
    let out = out.again().args(["build", "--run-id", "shift"]).run();
    assert_eq!(
        sorted(started_keys(&out.events("shift"), "chunks")),
        names(&["0", "1", "2", "3"])
    );
    assert!(
        out.read("out/chunks.txt")
            .starts_with("== 0 3\n{\"n\":0}\n")
    );
    assert_eq!(
        parts(&out, "chunks").len(),
        4,
        "parts of old shards were kept"
    );
}

#[test]
fn an_empty_source_has_no_shards_and_merges_to_an_empty_output() {
    let out = Test::new()
        .orchfile(&orchfile(CHUNKED))
        .write("data/records.jsonl", "")
        .args(["build", "--run-id", "empty"])
        .run();
    assert_eq!(out.read("out/chunks.txt"), "");
    let events = out.events("empty");
    assert_eq!(plan_counts(&events, "chunks"), (0, 0, 0));
    assert!(shards_started(&events).is_empty());
    assert_eq!(event(&events, "merge_completed", "chunks")["shards"], 0);
}

// ---------------------------------------------------------------------------------------
// `files`: one shard per file

const PER_FILE: &str = r#"
[phase.pages]
shard = { strategy = "files", source = "texts/*.txt" }
run = "{{ echo {shard.input} {shard.key}; tr a-z A-Z < {shard.input}; }} > {shard.output}"
outputs = ["out/pages.txt"]
"#;

#[test]
fn files_gives_one_shard_per_file_in_path_order() {
    let out = Test::new()
        .orchfile(&orchfile(PER_FILE))
        .write("texts/b.txt", "bee\n")
        .write("texts/a.txt", "ant\n")
        .write("texts/c.txt", "cat\n")
        .write("texts/notes.md", "not a shard\n")
        .args(["build", "--run-id", "f1"])
        .run();
    assert_eq!(
        out.read("out/pages.txt"),
        "texts/a.txt texts/a.txt\nANT\ntexts/b.txt texts/b.txt\nBEE\ntexts/c.txt texts/c.txt\nCAT\n"
    );
    let events = out.events("f1");
    assert_eq!(plan_counts(&events, "pages"), (3, 3, 0));
    assert_eq!(event(&events, "shard_plan", "pages")["strategy"], "files");
    for (i, key) in ["texts/a.txt", "texts/b.txt", "texts/c.txt"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            event(&events, "instance_started", &format!("pages#{i}"))["shard"],
            json!({ "index": i, "count": 3, "key": key })
        );
    }

    // A new file that sorts first: only its shard runs, though every index moves.
    out.write("texts/0.txt", "zero\n");
    let out = out.again().args(["build", "--run-id", "f2"]).run();
    let events = out.events("f2");
    assert_eq!(shards_started(&events), ["pages#0"]);
    assert_eq!(started_keys(&events, "pages"), ["texts/0.txt"]);
    assert_eq!(plan_counts(&events, "pages"), (4, 1, 3));
    assert_eq!(
        out.read("out/pages.txt"),
        "texts/0.txt texts/0.txt\nZERO\ntexts/a.txt texts/a.txt\nANT\ntexts/b.txt texts/b.txt\nBEE\ntexts/c.txt texts/c.txt\nCAT\n"
    );

    // A removed file: nothing runs, its part leaves the merge.
    out.remove("texts/b.txt");
    let out = out.again().args(["build", "--run-id", "f3"]).run();
    let events = out.events("f3");
    assert!(shards_started(&events).is_empty(), "{events:#?}");
    assert_eq!(plan_counts(&events, "pages"), (3, 0, 3));
    assert_eq!(event(&events, "merge_completed", "pages")["shards"], 3);
    assert_eq!(
        out.read("out/pages.txt"),
        "texts/0.txt texts/0.txt\nZERO\ntexts/a.txt texts/a.txt\nANT\ntexts/c.txt texts/c.txt\nCAT\n"
    );
    assert_eq!(parts(&out, "pages").len(), 3);

    // A changed file reruns its shard only.
    out.write("texts/c.txt", "cow\n");
    let out = out.again().args(["build", "--run-id", "f4"]).run();
    assert_eq!(started_keys(&out.events("f4"), "pages"), ["texts/c.txt"]);
    assert!(out.read("out/pages.txt").ends_with("COW\n"));

    out.again()
        .args(["build"])
        .stdout_contains("nothing to do")
        .run();
}

#[test]
fn a_command_using_the_shard_index_reruns_shards_whose_position_moved() {
    let out = Test::new()
        .orchfile(&orchfile(
            r#"
[phase.pages]
shard = { strategy = "files", source = "texts/*.txt" }
run = "echo {shard.index}/{shard.count} {shard.key} > {shard.output}"
outputs = ["out/pages.txt"]
"#,
        ))
        .write("texts/a.txt", "a\n")
        .write("texts/b.txt", "b\n")
        .run();
    assert_eq!(
        out.read("out/pages.txt"),
        "0/2 texts/a.txt\n1/2 texts/b.txt\n"
    );
    out.write("texts/0.txt", "0\n");
    let out = out.again().args(["build", "--run-id", "moved"]).run();
    assert_eq!(plan_counts(&out.events("moved"), "pages"), (3, 3, 0));
    assert_eq!(
        out.read("out/pages.txt"),
        "0/3 texts/0.txt\n1/3 texts/a.txt\n2/3 texts/b.txt\n"
    );
}

/// `split` writes `build/parts/p1.txt` … `pN.txt` (N read from `count.txt`) into a
/// directory output; `shout` has one shard per part.
const SPLIT: &str = r#"
[phase.split]
run = "mkdir -p build/parts && for i in $(seq 1 $(cat count.txt)); do echo part $i > build/parts/p$i.txt; done"
inputs = ["count.txt"]
outputs = ["build/parts/"]

[phase.shout]
needs = ["split"]
shard = { strategy = "files", source = "build/parts/*.txt" }
run = "tr a-z A-Z < {shard.input} > {shard.output}"
outputs = ["build/shout.txt"]
"#;

#[test]
fn files_shards_over_an_upstream_directory_output() {
    let out = Test::new()
        .orchfile(&orchfile(SPLIT))
        .write("count.txt", "2\n")
        .args(["plan"])
        .stdout_contains("shards are known once its upstreams have run")
        .run();
    let out = out.again().args(["build", "--run-id", "s1"]).run();
    assert_eq!(out.read("build/shout.txt"), "PART 1\nPART 2\n");
    assert_eq!(plan_counts(&out.events("s1"), "shout"), (2, 2, 0));

    // The glob is expanded again once `split` has run: the new part is merged.
    out.write("count.txt", "3\n");
    let out = out.again().args(["build", "--run-id", "s2"]).run();
    assert_eq!(plan_counts(&out.events("s2"), "shout").0, 3);
    assert_eq!(out.read("build/shout.txt"), "PART 1\nPART 2\nPART 3\n");
    out.again()
        .args(["build"])
        .stdout_contains("nothing to do")
        .run();
}

/// One new file in an upstream's directory output reruns that file's shard only, as a
/// new plain input file does.
#[test]
fn a_new_file_in_an_upstream_directory_output_runs_only_its_shard() {
    let out = Test::new()
        .orchfile(&orchfile(SPLIT))
        .write("count.txt", "2\n")
        .run();
    out.write("count.txt", "3\n");
    let out = out.again().args(["build", "--run-id", "s2"]).run();
    let events = out.events("s2");
    assert_eq!(started_keys(&events, "shout"), ["build/parts/p3.txt"]);
    assert_eq!(plan_counts(&events, "shout"), (3, 1, 2));
}

// ---------------------------------------------------------------------------------------
// Strict JSON Lines

const ROUTES: &str = r#"
[phase.routes]
shard = { strategy = "group", source = "data/in.jsonl", key = "route" }
run = "cat {shard.input} > {shard.output}"
outputs = ["out/routes.jsonl"]

[phase.count]
needs = ["routes"]
run = "wc -l < {needs.routes.outputs} | tr -d ' ' > {output}"
outputs = ["out/count.txt"]
"#;

const GOOD_ROUTES: &str = "{\"route\":\"a\",\"n\":1}\n{\"route\":\"b\",\"n\":2}\n";

/// Builds `ROUTES` with `data`, expecting the split to fail with a message that starts
/// with `message`.
fn invalid_input(out: &Output, data: &str, run_id: &str, message: &str) {
    out.write("data/in.jsonl", data);
    let plan = out.again().args(["plan", "--json"]).run().json();
    let error = plan_entry(&plan, "routes")["shards"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no shard error in {plan:#}"))
        .to_owned();
    assert!(error.starts_with(message), "{error}");
    out.again()
        .args(["plan"])
        .stdout_contains(&format!("cannot split: {message}"))
        .run();

    let out = out
        .again()
        .args(["build", "--run-id", run_id])
        .expect_status(1)
        .stdout_contains("routes FAILED (invalid input)")
        .stdout_contains(message)
        .run();
    let events = out.events(run_id);
    let failed = event(&events, "instance_failed", "routes");
    assert_eq!(failed["kind"], "invalid_input", "{failed}");
    assert_eq!(failed["message"], error.as_str());
    assert!(shards_started(&events).is_empty(), "a shard ran");
    assert!(
        of_type(&events, "shard_plan").is_empty(),
        "shards were planned"
    );
    let blocked = event(&events, "instance_blocked", "count");
    assert_eq!(blocked["reason"], "upstream_failed");
    assert!(
        !out.exists("out/routes.jsonl"),
        "the last merged output survived a failed split"
    );
}

#[test]
fn a_record_without_the_group_key_fails_before_any_shard_runs() {
    let out = Test::new()
        .orchfile(&orchfile(ROUTES))
        .write("data/in.jsonl", GOOD_ROUTES)
        .run();
    assert_eq!(out.read("out/count.txt"), "2\n");

    invalid_input(
        &out,
        "{\"route\":\"a\",\"n\":1}\n{\"text\":\"no route here\"}\n{\"route\":\"b\",\"n\":2}\n",
        "nokey",
        "`data/in.jsonl` line 2 has no field `route` to group by",
    );

    // Fixed: the shards recorded before still stand; only the merge runs.
    out.write("data/in.jsonl", GOOD_ROUTES);
    let out = out
        .again()
        .args(["build", "--no-cache", "--run-id", "fixed"])
        .run();
    let events = out.events("fixed");
    assert_eq!(plan_counts(&events, "routes"), (2, 0, 2));
    assert!(shards_started(&events).is_empty());
    assert_eq!(out.read("out/routes.jsonl"), GOOD_ROUTES);
}

#[test]
fn a_line_that_is_not_json_fails_before_any_shard_runs() {
    let out = Test::new()
        .orchfile(&orchfile(ROUTES))
        .write("data/in.jsonl", GOOD_ROUTES)
        .run();
    invalid_input(
        &out,
        "{\"route\":\"a\",\"n\":1}\n{\"route\":\"b\",\"n\":2}\n{\"route\":\"c\"\n",
        "notjson",
        "`data/in.jsonl` line 3 is not JSON",
    );
}

#[test]
fn an_empty_line_fails_before_any_shard_runs() {
    let out = Test::new()
        .orchfile(&orchfile(ROUTES))
        .write("data/in.jsonl", GOOD_ROUTES)
        .run();
    invalid_input(
        &out,
        "{\"route\":\"a\",\"n\":1}\n\n{\"route\":\"b\",\"n\":2}\n",
        "emptyline",
        "`data/in.jsonl` line 2 is not JSON: the line is empty",
    );
}

#[test]
fn chunk_sources_must_be_json_lines_too() {
    let out = Test::new()
        .orchfile(&orchfile(CHUNKED))
        .write("data/records.jsonl", "{\"n\":1}\nn=2\n")
        .args(["build", "--run-id", "bad"])
        .expect_status(1)
        .run();
    let events = out.events("bad");
    let failed = event(&events, "instance_failed", "chunks");
    assert_eq!(failed["kind"], "invalid_input");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .starts_with("`data/records.jsonl` line 2 is not JSON"),
        "{failed}"
    );
    assert!(shards_started(&events).is_empty());
}

#[test]
fn a_missing_group_source_fails_the_instance() {
    let out = Test::new()
        .orchfile(&orchfile(ROUTES))
        .args(["build", "--run-id", "missing"])
        .expect_status(1)
        .stdout_contains("the shard source `data/in.jsonl` does not exist")
        .run();
    let events = out.events("missing");
    assert_eq!(
        event(&events, "instance_failed", "routes")["kind"],
        "invalid_input"
    );
    assert!(shards_started(&events).is_empty());
}

// ---------------------------------------------------------------------------------------
// Per-shard keys

const INCREMENTAL: &str = r#"
[phase.routes]
shard = { strategy = "group", source = "data/in.jsonl", key = "route" }
run = "sed -f dict.sed {shard.input} > {shard.output}"
inputs = ["dict.sed"]
outputs = ["out/routes.jsonl"]

[phase.count]
needs = ["routes"]
run = "wc -l < {needs.routes.outputs} | tr -d ' ' > {output}"
outputs = ["out/count.txt"]
"#;

/// Twelve records over routes a–e.
fn incremental_records() -> Vec<String> {
    let routes = ["c", "a", "e", "b", "d", "a", "c", "e", "b", "d", "a", "c"];
    routes
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{{\"route\":\"{r}\",\"text\":\"hello {i}\"}}"))
        .collect()
}

fn write_records(out: &Project, records: &[String]) {
    out.write(
        "data/in.jsonl",
        &records.iter().map(|r| format!("{r}\n")).collect::<String>(),
    );
}

/// The merged output as `routes` should produce it from `records` and `hello → hi`.
fn expected_routes(records: &[String], greeting: &str) -> String {
    let mut by_route: Vec<(String, usize, String)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let v: Value = serde_json::from_str(r).unwrap();
            (
                v["route"].as_str().unwrap().to_owned(),
                i,
                r.replace("hello", greeting),
            )
        })
        .collect();
    by_route.sort();
    by_route.into_iter().map(|(_, _, r)| r + "\n").collect()
}

#[test]
fn one_changed_record_reruns_one_shard_and_the_merge() {
    let mut records = incremental_records();
    let t = Test::new()
        .orchfile(&orchfile(INCREMENTAL))
        .write("dict.sed", "s/hello/hi/\n");
    write_records(t.project(), &records);
    let out = t.args(["build", "--run-id", "first"]).run();
    assert_eq!(
        out.read("out/routes.jsonl"),
        expected_routes(&records, "hi")
    );
    assert_eq!(plan_counts(&out.events("first"), "routes"), (5, 5, 0));

    // No change: nothing starts at all, not even the merge.
    let out = out
        .again()
        .args(["build", "--run-id", "noop"])
        .stdout_contains("nothing to do (2 up to date)")
        .run();
    let events = out.events("noop");
    assert!(ran(&events).is_empty(), "{events:#?}");
    assert!(of_type(&events, "shard_plan").is_empty());
    assert!(of_type(&events, "merge_completed").is_empty());

    // One record of route `d` changes.
    records[4] = r#"{"route":"d","text":"hello again"}"#.to_owned();
    write_records(&out, &records);
    let out = out.again().args(["build", "--run-id", "one"]).run();
    let events = out.events("one");
    assert_eq!(ran(&events), ["routes", "routes#3", "count"]);
    assert_eq!(started_keys(&events, "routes"), ["d"]);
    assert_eq!(plan_counts(&events, "routes"), (5, 1, 4));
    assert_eq!(event(&events, "merge_completed", "routes")["shards"], 5);
    let merged = out.read("out/routes.jsonl");
    assert_eq!(merged, expected_routes(&records, "hi"));
    assert!(merged.contains(r#"{"route":"d","text":"hi again"}"#));

    // Only the order of whole groups in the file changes: the same slices, no shard runs.
    let mut reordered: Vec<String> = records.clone();
    reordered.sort_by_key(|r| r.contains("\"e\""));
    write_records(&out, &reordered);
    let out = out.again().args(["build", "--run-id", "reorder"]).run();
    let events = out.events("reorder");
    assert_eq!(plan_counts(&events, "routes"), (5, 0, 5));
    assert_eq!(out.read("out/routes.jsonl"), merged);
    assert!(
        of_type(&events, "instance_skipped")
            .iter()
            .any(|e| e["instance"] == "count" && e["early_cutoff"] == true),
        "identical merged bytes should cut off `count`: {events:#?}"
    );

    // A record moving from route `b` to route `e` changes both groups.
    records[3] = records[3].replace("\"b\"", "\"e\"");
    write_records(&out, &records);
    let out = out.again().args(["build", "--run-id", "move"]).run();
    let events = out.events("move");
    assert_eq!(sorted(started_keys(&events, "routes")), names(&["b", "e"]));
    assert_eq!(plan_counts(&events, "routes"), (5, 2, 3));
    assert_eq!(
        out.read("out/routes.jsonl"),
        expected_routes(&records, "hi")
    );

    // An input every shard reads (outside the source) reruns every shard.
    out.write("dict.sed", "s/hello/salut/\n");
    let out = out.again().args(["build", "--run-id", "dict"]).run();
    assert_eq!(plan_counts(&out.events("dict"), "routes"), (5, 5, 0));
    assert_eq!(
        out.read("out/routes.jsonl"),
        expected_routes(&records, "salut")
    );

    // A whole group disappearing: nothing runs, its part leaves the merge.
    records.retain(|r| !r.contains("\"a\""));
    write_records(&out, &records);
    let out = out.again().args(["build", "--run-id", "gone"]).run();
    let events = out.events("gone");
    assert_eq!(plan_counts(&events, "routes"), (4, 0, 4));
    assert!(shards_started(&events).is_empty());
    assert_eq!(
        out.read("out/routes.jsonl"),
        expected_routes(&records, "salut")
    );
    assert_eq!(parts(&out, "routes").len(), 4);
    assert_eq!(
        out.list(".orch/shards/routes/in").len(),
        4,
        "slices of old shards were kept"
    );
}

#[test]
fn a_hand_edited_merged_output_is_restored_from_the_recorded_parts() {
    let records = incremental_records();
    let t = Test::new()
        .orchfile(&orchfile(INCREMENTAL))
        .write("dict.sed", "s/hello/hi/\n");
    write_records(t.project(), &records);
    let out = t.run();
    let merged = out.read("out/routes.jsonl");

    out.write("out/routes.jsonl", "edited by hand\n");
    out.again()
        .args(["status"])
        .stdout_contains("output_modified")
        .stdout_contains("0 of 5 shards stale")
        .run();
    let out = out
        .again()
        .args(["build", "--no-cache", "--run-id", "restore"])
        .run();
    let events = out.events("restore");
    assert_eq!(plan_counts(&events, "routes"), (5, 0, 5));
    assert!(shards_started(&events).is_empty());
    assert_eq!(out.read("out/routes.jsonl"), merged);

    // A part lost from `.orch/shards/` reruns that shard only.
    let part = parts(&out, "routes")[0].clone();
    out.remove(&format!(".orch/shards/routes/out/{part}"));
    out.remove("out/routes.jsonl");
    let out = out
        .again()
        .args(["build", "--no-cache", "--run-id", "lost"])
        .run();
    let events = out.events("lost");
    assert_eq!(plan_counts(&events, "routes"), (5, 1, 4));
    assert_eq!(out.read("out/routes.jsonl"), merged);
}

#[test]
fn a_failed_shard_with_keep_going_is_the_only_one_to_rerun() {
    let out = Test::new()
        .orchfile(&orchfile(
            r#"
[phase.routes]
shard = { strategy = "group", source = "data/in.jsonl", key = "route" }
run = '''if grep -q broken {shard.input} && [ ! -f fixed ]; then echo "cannot translate {shard.key}" >&2; exit 4; fi; cat {shard.input} > {shard.output}'''
outputs = ["out/routes.jsonl"]

[phase.count]
needs = ["routes"]
run = "wc -l < {needs.routes.outputs} | tr -d ' ' > {output}"
outputs = ["out/count.txt"]
"#,
        ))
        .write(
            "data/in.jsonl",
            &jsonl(&[
                r#"{"route":"a"}"#,
                r#"{"route":"b","text":"broken"}"#,
                r#"{"route":"c"}"#,
            ]),
        )
        .args(["build", "-k", "-j", "1", "--run-id", "k"])
        .expect_status(1)
        .stdout_contains("routes#1 (b) FAILED (exit 4)")
        .stdout_contains("cannot translate b")
        .stdout_contains("1 of 3 shards failed")
        .run();
    let events = out.events("k");
    assert_eq!(
        sorted(started_keys(&events, "routes")),
        names(&["a", "b", "c"]),
        "-k runs the other shards"
    );
    let failed = event(&events, "instance_failed", "routes#1");
    assert_eq!(failed["kind"], "exit");
    assert_eq!(failed["exit_code"], 4);
    assert_eq!(
        failed["shard"],
        json!({ "index": 1, "count": 3, "key": "b" })
    );
    let log = failed["log"].as_str().unwrap();
    assert_eq!(out.read(log), "cannot translate b\n");
    let whole = event(&events, "instance_failed", "routes");
    assert_eq!(
        whole["message"],
        "1 of 3 shards failed; first: #1 (b): the command exited with status 4"
    );
    assert!(whole.get("shard").is_none());
    assert_eq!(
        event(&events, "instance_blocked", "count")["blocked_by"],
        json!(["routes"])
    );
    assert!(!out.exists("out/routes.jsonl"));

    // Fixed outside the key: the successful shards are reused.
    out.write("fixed", "");
    let out = out.again().args(["build", "--run-id", "again"]).run();
    let events = out.events("again");
    assert_eq!(started_keys(&events, "routes"), ["b"]);
    assert_eq!(plan_counts(&events, "routes"), (3, 1, 2));
    assert_eq!(out.read("out/count.txt"), "3\n");
}

/// `--force` reruns every selected instance; for a sharded one that means its shards'
/// commands, not only the merge of the recorded parts.
#[test]
fn force_reruns_every_shard() {
    let records = incremental_records();
    let t = Test::new()
        .orchfile(&orchfile(INCREMENTAL))
        .write("dict.sed", "s/hello/hi/\n");
    write_records(t.project(), &records);
    let out = t.run();
    let out = out
        .again()
        .args(["build", "--force", "--run-id", "forced"])
        .run();
    assert_eq!(plan_counts(&out.events("forced"), "routes"), (5, 5, 0));
    let out = out
        .again()
        .args(["build", "--from", "routes", "--run-id", "from"])
        .run();
    assert_eq!(plan_counts(&out.events("from"), "routes"), (5, 5, 0));
}

// ---------------------------------------------------------------------------------------
// A matrix of sharded instances: failures stay within their language

const LANGS: &str = r#"
[phase.ingest]
run = "cp raw/records.jsonl {output}"
inputs = ["raw/records.jsonl"]
outputs = ["build/ingest.jsonl"]

[phase.translate]
needs = ["ingest"]
matrix = { lang = ["de", "fr", "it"] }
shard = { strategy = "group", source = "build/ingest.jsonl", key = "route", parallel = 2 }
run = '''[ {matrix.lang} != fr ] || {{ echo "no dictionary for fr" >&2; exit 7; }}; sed 's/hello/hello-{matrix.lang}/' {shard.input} > {shard.output}'''
outputs = ["build/translate/{matrix.lang}.jsonl"]

[phase.report]
needs = ["translate"]
matrix = { lang = ["de", "fr", "it"] }
run = "wc -l < {needs.translate.outputs} | tr -d ' ' > {output}"
outputs = ["build/report/{matrix.lang}.txt"]
"#;

fn langs() -> Test {
    Test::new().orchfile(&orchfile(LANGS)).write(
        "raw/records.jsonl",
        &jsonl(&[
            r#"{"route":"r1","text":"hello"}"#,
            r#"{"route":"r2","text":"hello"}"#,
            r#"{"route":"r1","text":"hello again"}"#,
            r#"{"route":"r3","text":"hello"}"#,
        ]),
    )
}

#[test]
fn a_failing_language_blocks_only_its_own_instances_with_keep_going() {
    let out = langs()
        .args(["build", "-k", "-j", "4", "--run-id", "k"])
        .expect_status(1)
        .stdout_contains("no dictionary for fr")
        .run();
    let events = out.events("k");
    let failed = event(&events, "instance_failed", "translate[lang=fr]");
    assert_eq!(
        failed["message"],
        "3 of 3 shards failed; first: #0 (r1): the command exited with status 7"
    );
    assert_eq!(
        shard_events(&events, "instance_failed", "translate[lang=fr]").len(),
        3
    );
    let block = event(&events, "instance_blocked", "report[lang=fr]");
    assert_eq!(block["reason"], "upstream_failed");
    assert_eq!(block["blocked_by"], json!(["translate[lang=fr]"]));
    assert_eq!(blocked(&events), ["report[lang=fr]"]);
    for lang in ["de", "it"] {
        event(
            &events,
            "merge_completed",
            &format!("translate[lang={lang}]"),
        );
        event(
            &events,
            "instance_completed",
            &format!("report[lang={lang}]"),
        );
        assert_eq!(out.read(&format!("build/report/{lang}.txt")), "4\n");
        assert_eq!(
            out.read(&format!("build/translate/{lang}.jsonl")),
            format!(
                "{{\"route\":\"r1\",\"text\":\"hello-{lang}\"}}\n{{\"route\":\"r1\",\"text\":\"hello-{lang} again\"}}\n{{\"route\":\"r2\",\"text\":\"hello-{lang}\"}}\n{{\"route\":\"r3\",\"text\":\"hello-{lang}\"}}\n"
            )
        );
    }
    assert!(!out.exists("build/translate/fr.jsonl"));
    assert!(!out.exists("build/report/fr.txt"));
    let last = events.last().unwrap();
    assert_eq!(last["type"], "run_failed");
    assert_eq!(last["failed"], json!(["translate[lang=fr]"]));
    assert_eq!(last["blocked"], json!(["report[lang=fr]"]));
}

#[test]
fn a_failing_shard_stops_the_build_without_keep_going() {
    let out = langs()
        .args(["build", "-j", "1", "--run-id", "ff"])
        .expect_status(1)
        .run();
    let events = out.events("ff");
    let first_failure = events
        .iter()
        .find(|e| e["type"] == "instance_failed")
        .expect("a failure");
    assert_eq!(first_failure["instance"], "translate[lang=fr]#0");
    for e in of_type(&events, "instance_started") {
        assert!(
            seq(e) < seq(first_failure),
            "started after the failure: {e}"
        );
    }
    assert_eq!(
        started_keys(&events, "translate[lang=fr]"),
        ["r1"],
        "fail-fast starts no other shard"
    );
    assert_eq!(
        event(&events, "instance_failed", "translate[lang=fr]")["message"],
        "1 of 3 shards failed; first: #0 (r1): the command exited with status 7"
    );
    assert_eq!(
        event(&events, "instance_blocked", "report[lang=fr]")["reason"],
        "upstream_failed"
    );
    // Everything else is either done or reported as not started; nothing is lost.
    let last = events.last().unwrap();
    assert_eq!(last["type"], "run_failed");
    assert_eq!(last["failed"], json!(["translate[lang=fr]"]));
    let counts = &last["counts"];
    assert_eq!(
        counts["succeeded"].as_u64().unwrap()
            + counts["failed"].as_u64().unwrap()
            + counts["blocked"].as_u64().unwrap(),
        7
    );
}

// ---------------------------------------------------------------------------------------
// `parallel`

/// `n` groups with one record each.
fn groups(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"route\":\"r{i}\"}}\n"))
        .collect()
}

/// A shard command that fails if more than `max` markers exist in `running/` (itself
/// counted) and records the count it saw in `peaks/`. Shards whose index is below
/// `waiters` first wait (up to `wait_steps` × 10 ms, without failing) until `max`
/// markers exist, so that the shards started first are seen together.
fn capped_shard(marker: &str, max: usize, waiters: usize, wait_steps: u32) -> String {
    format!(
        "mkdir -p running peaks; touch running/{marker}; \
         if [ $ORCH_SHARD_INDEX -lt {waiters} ]; then i=0; \
         while [ $(ls running | wc -l) -lt {max} ] && [ $i -lt {wait_steps} ]; do i=$((i+1)); sleep 0.01; done; fi; \
         sleep 0.05; n=$(ls running | wc -l | tr -d ' '); echo $n > peaks/{marker}; \
         rm running/{marker}; \
         [ $n -le {max} ] || {{{{ echo too many shards at once: $n >&2; exit 1; }}}}; \
         cat {{shard.input}} > {{shard.output}}"
    )
}

fn peaks(out: &Output) -> Vec<usize> {
    out.list("peaks")
        .iter()
        .map(|f| out.read(&format!("peaks/{f}")).trim().parse().unwrap())
        .collect()
}

#[test]
fn parallel_caps_the_running_shards_of_one_instance() {
    let out = Test::new()
        .orchfile(&orchfile(&format!(
            r#"
[phase.routes]
shard = {{ strategy = "group", source = "data/in.jsonl", key = "route", parallel = 2 }}
run = "{}"
outputs = ["out/routes.jsonl"]
"#,
            capped_shard("$ORCH_SHARD_INDEX", 2, 2, 2000)
        )))
        .write("data/in.jsonl", &groups(6))
        .args(["build", "-j", "8", "--run-id", "p2"])
        .run();
    assert_eq!(out.read("out/routes.jsonl"), groups(6));
    let p = peaks(&out);
    assert_eq!(p.len(), 6);
    assert!(p.iter().all(|&n| n <= 2), "{p:?}");
    // Shards 0 and 1 start first and wait for each other: they did overlap.
    assert_eq!(p.iter().max(), Some(&2), "{p:?}");
    assert_eq!(
        event(&out.events("p2"), "shard_plan", "routes")["parallel"],
        2
    );
}

#[test]
fn parallel_shards_of_one_instance_run_at_once() {
    let wait = sh_wait_until("[ $(ls running | wc -l) -ge 4 ]", 20);
    let out = Test::new()
        .orchfile(&orchfile(&format!(
            r#"
[phase.routes]
shard = {{ strategy = "group", source = "data/in.jsonl", key = "route", parallel = 4 }}
run = "mkdir -p running && touch running/$ORCH_SHARD_INDEX && {wait} && cat {{shard.input}} > {{shard.output}}"
outputs = ["out/routes.jsonl"]
"#
        )))
        .write("data/in.jsonl", &groups(4))
        .args(["build", "-j", "8", "--run-id", "p4"])
        .run();
    assert_eq!(out.list("running"), names(&["0", "1", "2", "3"]));
    let events = out.events("p4");
    assert_eq!(event(&events, "shard_plan", "routes")["parallel"], 4);
    let first_done = seq(shard_events(&events, "instance_completed", "routes")[0]);
    assert!(
        shard_events(&events, "instance_started", "routes")
            .iter()
            .all(|e| seq(e) < first_done),
        "all four shards started before any finished"
    );
}

#[test]
fn jobs_cap_shards_across_instances() {
    let out = Test::new()
        .orchfile(&orchfile(&format!(
            r#"
[phase.routes]
matrix = {{ lang = ["de", "fr"] }}
shard = {{ strategy = "group", source = "data/in.jsonl", key = "route", parallel = 4 }}
run = "{}"
outputs = ["out/{{matrix.lang}}.jsonl"]
"#,
            capped_shard("{matrix.lang}-$ORCH_SHARD_INDEX", 2, 3, 50)
        )))
        .write("data/in.jsonl", &groups(3))
        .args(["build", "-j", "2", "--run-id", "j2"])
        .run();
    let p = peaks(&out);
    assert_eq!(p.len(), 6);
    assert!(p.iter().all(|&n| n <= 2), "{p:?}");
    let events = out.events("j2");
    for lang in ["de", "fr"] {
        assert_eq!(
            event(&events, "shard_plan", &format!("routes[lang={lang}]"))["parallel"],
            2,
            "`parallel` is capped by -j"
        );
        assert_eq!(out.read(&format!("out/{lang}.jsonl")), groups(3));
    }
}

// ---------------------------------------------------------------------------------------
// `merge = "none"`

fn per_route(extra: &str) -> String {
    orchfile(&format!(
        r#"
[phase.routes]
shard = {{ strategy = "group", source = "data/in.jsonl", key = "route", merge = "none" }}
run = "{extra}wc -l < {{shard.input}} | tr -d ' ' > out/per/{{shard.key}}.txt"
outputs = ["out/per/{{shard.key}}.txt"]

[phase.summary]
needs = ["routes"]
run = '''for f in {{inputs}}; do printf '%s=%s\n' $f $(cat $f); done > {{output}}'''
inputs = ["out/per/*.txt"]
outputs = ["out/summary.txt"]
"#
    ))
}

#[test]
fn merge_none_shards_write_their_own_outputs() {
    let out = Test::new()
        .orchfile(&per_route(""))
        .write(
            "data/in.jsonl",
            &jsonl(&[
                r#"{"route":"a"}"#,
                r#"{"route":"b"}"#,
                r#"{"route":"a"}"#,
                r#"{"route":"c"}"#,
            ]),
        )
        .args(["build", "--run-id", "n1"])
        .run();
    assert_eq!(out.list("out/per"), names(&["a.txt", "b.txt", "c.txt"]));
    assert_eq!(out.read("out/per/a.txt"), "2\n");
    assert_eq!(out.read("out/per/b.txt"), "1\n");
    assert_eq!(
        out.read("out/summary.txt"),
        "out/per/a.txt=2\nout/per/b.txt=1\nout/per/c.txt=1\n"
    );
    let events = out.events("n1");
    assert_eq!(plan_counts(&events, "routes"), (3, 3, 0));
    assert!(of_type(&events, "merge_completed").is_empty());
    let done = event(&events, "instance_completed", "routes");
    let outputs: Vec<&String> = done["outputs"].as_object().unwrap().keys().collect();
    assert_eq!(outputs, ["out/per/a.txt", "out/per/b.txt", "out/per/c.txt"]);
    assert_eq!(
        event(&events, "instance_completed", "routes#1")["outputs"],
        json!({ "out/per/b.txt": done["outputs"]["out/per/b.txt"] })
    );
    out.again()
        .args(["build"])
        .stdout_contains("nothing to do")
        .run();

    // Group `c` disappears, `d` appears, `a` changes.
    out.write(
        "data/in.jsonl",
        &jsonl(&[r#"{"route":"a"}"#, r#"{"route":"b"}"#, r#"{"route":"d"}"#]),
    );
    let out = out.again().args(["build", "--run-id", "n2"]).run();
    let events = out.events("n2");
    assert_eq!(sorted(started_keys(&events, "routes")), names(&["a", "d"]));
    assert_eq!(plan_counts(&events, "routes"), (3, 2, 1));
    assert_eq!(out.list("out/per"), names(&["a.txt", "b.txt", "d.txt"]));
    assert_eq!(
        out.read("out/summary.txt"),
        "out/per/a.txt=1\nout/per/b.txt=1\nout/per/d.txt=1\n"
    );
    assert!(ran(&events).contains(&"summary".to_owned()));

    // A deleted per-shard output reruns its shard only.
    out.remove("out/per/b.txt");
    out.again()
        .args(["status"])
        .stdout_contains("output_missing (out/per/b.txt)")
        .stdout_contains("1 of 3 shards stale")
        .run();
    let out = out
        .again()
        .args(["build", "--no-cache", "--run-id", "n3"])
        .run();
    assert_eq!(started_keys(&out.events("n3"), "routes"), ["b"]);
    assert_eq!(out.read("out/per/b.txt"), "1\n");
}

/// A per-shard output written by a shard that succeeded in a failed build, for a group
/// that is gone by the next successful build, must not survive it: the downstream glob
/// would read it as a result.
#[test]
fn merge_none_removes_outputs_of_groups_gone_after_a_failed_build() {
    let out = Test::new()
        .orchfile(&per_route(
            "if grep -q broken {shard.input}; then exit 4; fi; ",
        ))
        .write(
            "data/in.jsonl",
            &jsonl(&[r#"{"route":"a"}"#, r#"{"route":"b"}"#]),
        )
        .run();
    out.write(
        "data/in.jsonl",
        &jsonl(&[
            r#"{"route":"a"}"#,
            r#"{"route":"c","text":"broken"}"#,
            r#"{"route":"d"}"#,
        ]),
    );
    let out = out.again().args(["build", "-k"]).expect_status(1).run();
    out.write("data/in.jsonl", &jsonl(&[r#"{"route":"a"}"#]));
    let out = out.again().run();
    assert_eq!(out.list("out/per"), names(&["a.txt"]));
    assert_eq!(out.read("out/summary.txt"), "out/per/a.txt=1\n");
}

// ---------------------------------------------------------------------------------------
// Configuration errors

/// Checks `orch build` on a one-phase Orchfile fails with exit 2, runs nothing and
/// reports `message` (with a position and a help line).
fn shard_config_error(phase: &str, message: &str) -> Output {
    let out = Test::new()
        .orchfile(&orchfile(&format!("\n[phase.p]\n{phase}\n")))
        .write("data/in.jsonl", "{\"k\":1}\n")
        .write("texts/a.txt", "a\n")
        .expect_status(2)
        .stderr_contains(message)
        .stderr_contains("Orchfile.toml:")
        .stderr_contains("help:")
        .run();
    assert!(!out.exists("ran"), "a command ran");
    assert!(!out.exists(".orch/runs"), "a run was recorded");
    out
}

const CMD: &str = r#"run = "touch ran; cat {shard.input} > {shard.output}""#;

#[test]
fn shard_table_errors_are_configuration_errors() {
    let cases: &[(String, &str)] = &[
        (
            format!("shard = {{ strategy = \"group\", key = \"k\" }}\n{CMD}\noutputs = [\"o.txt\"]"),
            "shard strategy `group` of phase `p` needs a `source`",
        ),
        (
            format!("shard = {{ strategy = \"chunk\", source = \"data/in.jsonl\" }}\n{CMD}\noutputs = [\"o.txt\"]"),
            "shard strategy `chunk` of phase `p` needs `size`, the records per shard",
        ),
        (
            format!("shard = {{ strategy = \"group\", source = \"data/in.jsonl\" }}\n{CMD}\noutputs = [\"o.txt\"]"),
            "shard strategy `group` of phase `p` needs `key`, the field to group records by",
        ),
        (
            format!("shard = {{ strategy = \"group\", source = \"data/in.jsonl\", key = \"k\", parallel = 0 }}\n{CMD}\noutputs = [\"o.txt\"]"),
            "`shard.parallel` must be at least 1",
        ),
        (
            format!("shard = {{ strategy = \"random\", source = \"data/in.jsonl\" }}\n{CMD}\noutputs = [\"o.txt\"]"),
            "unknown shard strategy `random`",
        ),
        (
            format!("shard = {{ strategy = \"files\", source = \"texts/*.txt\", merge = \"zip\" }}\n{CMD}\noutputs = [\"o.txt\"]"),
            "unknown merge mode `zip`",
        ),
        (
            format!("shard = {{ strategy = \"files\", source = \"texts/*.txt\" }}\n{CMD}\noutputs = [\"o.txt\", \"p.txt\"]"),
            "the shards of phase `p` are merged into one output, but it declares 2",
        ),
        (
            format!("shard = {{ strategy = \"files\", source = \"texts/*.txt\" }}\n{CMD}"),
            "the shards of phase `p` are merged into one output, but it declares 0",
        ),
        (
            "shard = { strategy = \"files\", source = \"texts/*.txt\" }\nrun = \"touch ran; cat {shard.input} > {output}\"\noutputs = [\"o.txt\"]".to_owned(),
            "the command of sharded phase `p` does not write `{shard.output}`",
        ),
        (
            "run = \"touch ran; cat {shard.input} > {output}\"\noutputs = [\"o.txt\"]".to_owned(),
            "`{shard.input}` needs a `shard` table with a `files`, `chunk` or `group` strategy",
        ),
        (
            "shard = { strategy = \"full\" }\nrun = \"touch ran; echo {shard.index} > {output}\"\noutputs = [\"o.txt\"]".to_owned(),
            "`{shard.index}` needs a `shard` table with a `files`, `chunk` or `group` strategy",
        ),
        (
            format!("shard = {{ strategy = \"chunk\", source = \"data/*.jsonl\", size = 2 }}\n{CMD}\noutputs = [\"o.txt\"]"),
            "the `chunk` source `data/*.jsonl` must be one file, not a glob",
        ),
        (
            format!("shard = {{ strategy = \"group\", source = \"data/*.jsonl\", key = \"k\" }}\n{CMD}\noutputs = [\"o.txt\"]"),
            "the `group` source `data/*.jsonl` must be one file, not a glob",
        ),
        (
            format!("shard = {{ strategy = \"group\", source = \"../in.jsonl\", key = \"k\" }}\n{CMD}\noutputs = [\"o.txt\"]"),
            "shard source `../in.jsonl` is not inside the project",
        ),
        (
            "shard = { strategy = \"group\", source = \"data/in.jsonl\", key = \"k\" }\nrun = \"touch ran; cat {shard.input} > {shard.bogus}\"\noutputs = [\"o.txt\"]".to_owned(),
            "unknown placeholder `{shard.bogus}`",
        ),
        (
            "shard = { strategy = \"files\", source = \"texts/*.txt\", merge = \"none\" }\nrun = \"touch ran; cat {shard.input} > {shard.output}\"\noutputs = [\"o/{shard.key}\"]".to_owned(),
            "with `merge = \"none\"` shards write their own outputs; `{shard.output}` is for shards merged into one output",
        ),
        (
            "shard = { strategy = \"files\", source = \"texts/*.txt\", merge = \"none\" }\nrun = \"touch ran; cat {shard.input} > o.txt\"\noutputs = [\"o.txt\"]".to_owned(),
            "with `merge = \"none\"`, output `o.txt` of phase `p` is the same for every shard",
        ),
        (
            "shard = { strategy = \"files\", source = \"texts/*.txt\", merge = \"none\" }\nrun = \"touch ran; cp {shard.input} o/\"\noutputs = [\"o/{shard.key}\"]\n\n[phase.q]\nneeds = [\"p\"]\nrun = \"cat {needs.p.outputs} > {output}\"\noutputs = [\"q.txt\"]".to_owned(),
            "`{needs.p.outputs}`: the shards of `p` write their own outputs (`merge = \"none\"`), so there is no fixed list to insert",
        ),
    ];
    for (phase, message) in cases {
        shard_config_error(phase, message);
    }
}

/// An invalid `shard` table is reported once; the `{shard.*}` placeholders of the
/// command are not each reported as lacking a shard table (there is one).
#[test]
fn an_invalid_shard_table_is_reported_once() {
    let out = shard_config_error(
        &format!(
            "shard = {{ strategy = \"chunk\", source = \"data/in.jsonl\" }}\n{CMD}\noutputs = [\"o.txt\"]"
        ),
        "needs `size`",
    );
    assert!(
        !out.stderr.contains("needs a `shard` table"),
        "{}",
        out.stderr
    );
    let errors = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error"))
        .count();
    assert_eq!(errors, 1, "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------
// `plan` and `status`

#[test]
fn plan_counts_shards_once_the_upstream_of_the_source_is_fresh() {
    let t = Test::new()
        .orchfile(&orchfile(GROUPED))
        .write("raw/records.jsonl", GROUPED_RECORDS);
    let project = t.project().clone();
    // Before anything ran, the source is another phase's output.
    let out = t
        .args(["plan"])
        .stdout_contains("shards are known once its upstreams have run")
        .run();
    let p = out.again().args(["plan", "--json"]).run().json();
    assert_eq!(
        plan_entry(&p, "routes")["shards"],
        json!({ "after_upstream": true })
    );
    assert!(plan_entry(&p, "ingest").get("shards").is_none());
    assert!(!project.exists(".orch"), "plan wrote state");
    // `--dry-run` writes nothing either, shards included.
    out.again()
        .args(["build", "--dry-run"])
        .stdout_contains("shards are known once its upstreams have run")
        .run();
    assert!(!project.exists(".orch"));
    assert!(!project.exists("build"));

    let out = out.again().run();
    // One record of route `b` changes; once `ingest` is built, the shards can be counted.
    out.write(
        "raw/records.jsonl",
        &GROUPED_RECORDS.replace("\"n\":4", "\"n\":40"),
    );
    let p = out.again().args(["plan", "--json"]).run().json();
    assert_eq!(
        plan_entry(&p, "routes")["shards"],
        json!({ "after_upstream": true })
    );
    out.again().args(["build", "ingest"]).run();
    out.again()
        .args(["plan"])
        .stdout_contains("1 of 5 shards stale")
        .run();
    let p = out.again().args(["plan", "--json"]).run().json();
    assert_eq!(
        plan_entry(&p, "routes")["shards"],
        json!({
            "stale": 1,
            "total": 5,
            "stale_shards": [{ "index": 3, "key": "b", "reason": "not_recorded" }],
        })
    );
    assert!(plan_entry(&p, "lines").get("shards").is_none());
    let out = out.again().args(["build", "--run-id", "rest"]).run();
    let events = out.events("rest");
    assert_eq!(plan_counts(&events, "routes"), (5, 1, 4));
    assert_eq!(started_keys(&events, "routes"), ["b"]);
}

/// A sharded phase reading a plain file: `plan` and `status` count its stale shards.
#[test]
fn plan_and_status_show_how_many_shards_are_stale() {
    let records = incremental_records();
    let t = Test::new()
        .orchfile(&orchfile(INCREMENTAL))
        .write("dict.sed", "s/hello/hi/\n");
    write_records(t.project(), &records);
    let out = t
        .args(["plan"])
        .stdout_contains("never_built, 5 of 5 shards stale")
        .run();
    let out = out.again().run();

    let mut changed = records.clone();
    changed[0] = changed[0].replace("hello", "bye");
    write_records(&out, &changed);
    let p = out.again().args(["plan", "--json"]).run().json();
    assert_eq!(
        plan_entry(&p, "routes")["shards"],
        json!({
            "stale": 1,
            "total": 5,
            "stale_shards": [{ "index": 2, "key": "c", "reason": "not_recorded" }],
        })
    );
    assert_eq!(reasons(&p, "routes"), ["input_changed"]);
    assert!(plan_entry(&p, "count").get("shards").is_none());
    out.again()
        .args(["plan"])
        .stdout_contains("input_changed (data/in.jsonl), 1 of 5 shards stale: #2 (c)\n")
        .run();
    out.again()
        .args(["status"])
        .stdout_contains("stale: input_changed (data/in.jsonl), 1 of 5 shards stale: #2 (c)\n")
        .run();
    let s = out.again().args(["status", "--json"]).run().json();
    assert_eq!(
        plan_entry(&s, "routes")["shards"],
        json!({
            "stale": 1,
            "total": 5,
            "stale_shards": [{ "index": 2, "key": "c", "reason": "not_recorded" }],
        })
    );
    // Neither wrote anything: the build still finds one stale shard.
    let out = out.again().args(["build", "--run-id", "b"]).run();
    assert_eq!(plan_counts(&out.events("b"), "routes"), (5, 1, 4));
    let p = out.again().args(["plan", "--json"]).run().json();
    assert_eq!(p["stale"], 0);
    assert!(plan_entry(&p, "routes").get("shards").is_none());
}

// ---------------------------------------------------------------------------------------
// Determinism

const MANY: &str = r#"
[phase.routes]
shard = { strategy = "group", source = "data/in.jsonl", key = "route", parallel = 8 }
run = '''sleep 0.0$(( (15 - ORCH_SHARD_INDEX) % 10 )); awk '{{ print NR ": " $0 }' {shard.input} > {shard.output}'''
outputs = ["out/routes.txt"]
"#;

fn many_records() -> String {
    (0..64)
        .map(|i| format!("{{\"route\":\"r{:02}\",\"i\":{i}}}\n", (i * 7) % 16))
        .collect()
}

#[test]
fn the_merged_output_does_not_depend_on_jobs() {
    let build = |jobs: &str| {
        Test::new()
            .orchfile(&orchfile(MANY))
            .write("data/in.jsonl", &many_records())
            .args(["build", "-j", jobs, "--run-id", "same"])
            .run()
    };
    let one = build("1");
    let eight = build("8");
    let merged = one.read("out/routes.txt");
    assert_eq!(merged, eight.read("out/routes.txt"));
    // 16 groups of 4 records, in key order.
    assert_eq!(merged.lines().count(), 64);
    assert!(
        merged.starts_with("1: {\"route\":\"r00\",\"i\":0}\n2: {\"route\":\"r00\",\"i\":16}\n")
    );
    assert!(merged.ends_with("4: {\"route\":\"r15\",\"i\":57}\n"));
    let digest =
        |out: &Output| event(&out.events("same"), "merge_completed", "routes")["digest"].clone();
    assert_eq!(digest(&one), digest(&eight));

    // With one job, two builds of the same state emit the same events but for times.
    let again = build("1");
    let strip = |out: &Output| -> Vec<Value> {
        out.events("same")
            .into_iter()
            .map(|mut e| {
                let o = e.as_object_mut().unwrap();
                o.remove("ts");
                o.remove("duration_ms");
                e
            })
            .collect()
    };
    assert_eq!(strip(&one), strip(&again));
}

// ---------------------------------------------------------------------------------------
// Interruption

/// Shards that finished before an interrupt are recorded: the next build runs only the
/// shards that did not.
#[test]
fn shards_finished_before_an_interrupt_are_reused() {
    // Shard `a` finishes at once; shard `b` waits (for a file that never comes) until
    // the build is interrupted, unless `release` exists.
    let wait = sh_wait_until("[ -f release ]", 20);
    let t = Test::new()
        .orchfile(&orchfile(&format!(
            r#"
[phase.routes]
shard = {{ strategy = "group", source = "data/in.jsonl", key = "route", parallel = 1 }}
run = "if [ {{shard.key}} = b ]; then touch started-b; {wait}; fi; cat {{shard.input}} > {{shard.output}}"
outputs = ["out/routes.jsonl"]
"#
        )))
        .write(
            "data/in.jsonl",
            &jsonl(&[r#"{"route":"b"}"#, r#"{"route":"a"}"#, r#"{"route":"c"}"#]),
        )
        .args(["build", "-j", "4", "--run-id", "int"]);
    let project = t.project().clone();
    let child = t.spawn();
    wait_until(
        "shard `b` to start",
        std::time::Duration::from_secs(20),
        || project.exists("started-b"),
    );
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
    let events = project.events("int");
    assert_eq!(
        started_keys(&events, "routes"),
        ["a", "b"],
        "`parallel = 1` runs the shards in order"
    );
    event(&events, "instance_completed", "routes#0");
    // A shard killed because of the interrupt did not fail on its own: it and its
    // instance are reported interrupted, and nothing is recorded as failed.
    assert_eq!(
        event(&events, "instance_blocked", "routes#1")["reason"],
        "interrupted"
    );
    assert_eq!(
        event(&events, "instance_blocked", "routes")["reason"],
        "interrupted"
    );
    assert!(events.iter().all(|e| e["type"] != "instance_failed"));
    assert_eq!(events.last().unwrap()["interrupted"], true);
    assert!(!project.exists("out/routes.jsonl"));

    project.write("release", "");
    let out = project.test().args(["build", "--run-id", "resume"]).run();
    let events = out.events("resume");
    assert_eq!(started_keys(&events, "routes"), ["b", "c"]);
    assert_eq!(plan_counts(&events, "routes"), (3, 2, 1));
    assert_eq!(
        out.read("out/routes.jsonl"),
        jsonl(&[r#"{"route":"a"}"#, r#"{"route":"b"}"#, r#"{"route":"c"}"#])
    );
}
