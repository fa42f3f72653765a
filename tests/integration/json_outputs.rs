//! Every `--json` output validates against its schema in `schemas/`: `plan`, `status`,
//! `runs`, `graph`, `show` and `list`, on projects in every state they can print (never
//! built, built, failed and blocked, sharded, cached, on an executor). Each carries
//! `"v": 1`, and the same thing has the same field name in every one of them.

use serde_json::{Value, json};

use crate::listing::pipeline;
use crate::test::*;

/// The schema `schemas/FILE`, checked to be a valid JSON Schema, as a validator that
/// also checks `format` (`date-time`).
fn validator(file: &str) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&crate::schemas::schema(file))
        .unwrap_or_else(|e| panic!("{file} does not compile: {e}"))
}

/// Runs `args` in `out`'s project (expecting `status`), checks stdout against
/// `schemas/SCHEMA` and `"v": 1`, and returns it.
fn checked(out: &Output, schema: &str, args: &[&str], status: i32) -> Value {
    let doc = out
        .again()
        .args(args.iter().copied())
        .expect_status(status)
        .run()
        .json();
    let errors: Vec<String> = validator(schema)
        .iter_errors(&doc)
        .map(|e| format!("  at `{}`: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "`orch {}` does not match schemas/{schema}:\n{doc:#}\n{}",
        args.join(" "),
        errors.join("\n")
    );
    assert_eq!(doc["v"], 1, "`orch {}` has no \"v\": 1", args.join(" "));
    doc
}

/// Every JSON command of the project, each checked against its schema.
fn check_all(out: &Output, show: &[&str]) {
    checked(out, "plan.v1.json", &["plan", "--json"], 0);
    checked(out, "plan.v1.json", &["plan", "--json", "--force-all"], 0);
    checked(out, "plan.v1.json", &["build", "-n", "--json"], 0);
    checked(out, "status.v1.json", &["status", "--json"], 0);
    checked(out, "runs.v1.json", &["runs", "--json"], 0);
    checked(out, "graph.v1.json", &["graph", "--format", "json"], 0);
    checked(
        out,
        "graph.v1.json",
        &["graph", "--format", "json", "--status"],
        0,
    );
    checked(out, "list.v1.json", &["list", "--json"], 0);
    for what in show {
        checked(out, "show.v1.json", &["show", "--json", what], 0);
    }
}

#[test]
fn outputs_of_a_project_never_built_validate() {
    let out = pipeline().args(["check"]).run();
    check_all(&out, &["routes", "raw/records.jsonl", "texts/a.txt"]);
    let runs = checked(&out, "runs.v1.json", &["runs", "--json"], 0);
    assert_eq!(runs["runs"], json!([]));
}

#[test]
fn outputs_of_built_and_changed_projects_validate() {
    let out = pipeline().args(["build", "-q", "--run-id", "one"]).run();
    check_all(
        &out,
        &[
            "routes[lang=fr]",
            "chunks",
            "build/report.txt",
            "out/chunks/0.jsonl",
            "build/ingest.jsonl",
            "raw/records.jsonl",
            "texts/b.txt",
        ],
    );
    // One changed record: some shards stale, some reused.
    out.write(
        "raw/records.jsonl",
        &crate::listing::RECORDS.replace("\"n\":2", "\"n\":20"),
    );
    out.write("texts/a.txt", "ANT\n");
    check_all(&out, &["routes[lang=de]", "pages", "build/report.txt"]);
    let plan = checked(&out, "plan.v1.json", &["plan", "--json", "pages"], 0);
    let pages = &plan["instances"][0];
    assert_eq!(pages["instance"], "pages");
    assert_eq!(pages["phase"], "pages");
    assert_eq!(pages["shards"]["stale"], 1);
    assert_eq!(pages["shards"]["stale_shards"][0]["key"], "texts/a.txt");
}

#[test]
fn outputs_of_failed_blocked_and_cached_builds_validate() {
    let failing = DIAMOND.replace("sed 's/^/b:/'", "exit 3; sed 's/^/b:/'");
    let out = Test::new()
        .orchfile(&failing)
        .write("raw/1.txt", "one\n")
        .write("raw/2.txt", "two\n")
        .args(["build", "-k", "-q", "--run-id", "bad"])
        .expect_status(1)
        .run();
    check_all(&out, &["b", "d", "out/a.txt"]);
    let status = checked(&out, "status.v1.json", &["status", "--json"], 0);
    let d = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["instance"] == "d")
        .unwrap();
    assert_eq!(
        (&d["status"], &d["blocked_by"]),
        (&json!("blocked"), &json!(["b"]))
    );
    let runs = checked(&out, "runs.v1.json", &["runs", "--json"], 0);
    assert_eq!(runs["runs"][0]["run_id"], "bad");
    assert_eq!(runs["runs"][0]["status"], "failed");
    // Fixed, built, then cleaned: the plan says the cache would restore it.
    out.write("Orchfile.toml", DIAMOND);
    let out = out.again().args(["build", "-q", "--run-id", "good"]).run();
    let out = out.again().args(["clean", "-q"]).run();
    let plan = checked(&out, "plan.v1.json", &["plan", "--json"], 0);
    assert_eq!(plan["instances"][0]["source"], "local");
    check_all(&out, &["a", "out/d.txt"]);
}

#[test]
fn outputs_with_an_executor_and_resources_validate() {
    let out = Test::new()
        .orchfile(
            r#"[orch]
format = 1

[executor.cluster]
kind = "slurm"

[phase.far]
description = "Runs on the cluster"
executor = "cluster"
resources = { cpus = 2, mem = "1G", time = "5m" }
run = "true"
"#,
        )
        .args(["check"])
        .run();
    check_all(&out, &["far"]);
    let list = checked(&out, "list.v1.json", &["list", "--json"], 0);
    assert_eq!(
        list["phases"][0]["executor"],
        json!({"name": "cluster", "kind": "slurm"})
    );
    assert_eq!(list["phases"][0]["executor"], show_executor(&out));
    let show = checked(&out, "show.v1.json", &["show", "--json", "far"], 0);
    assert_eq!(show["kind"], "target");
    assert_eq!(show["instances"][0]["resources"]["cpus"], 2);
}

/// `show --json`'s `executor` of `far`.
fn show_executor(out: &Output) -> Value {
    checked(out, "show.v1.json", &["show", "--json", "far"], 0)["instances"][0]["executor"].clone()
}

/// The same thing is named the same in every output: an instance is `instance`, its
/// phase `phase`, its state `status` with the same values, a run `run_id`.
#[test]
fn the_same_things_have_the_same_names() {
    let out = built_diamond();
    out.write("raw/1.txt", "uno\n");
    let plan = checked(&out, "plan.v1.json", &["plan", "--json"], 0);
    let status = checked(&out, "status.v1.json", &["status", "--json"], 0);
    let graph = checked(
        &out,
        "graph.v1.json",
        &["graph", "--format", "json", "--status"],
        0,
    );
    let show = checked(&out, "show.v1.json", &["show", "--json", "a"], 0);
    let runs = checked(&out, "runs.v1.json", &["runs", "--json"], 0);
    for (what, first) in [
        ("plan", &plan["instances"][0]),
        ("status", &status["instances"][0]),
        ("graph", &graph["instances"][0]),
        ("show", &show["instances"][0]),
    ] {
        assert_eq!(first["instance"], "a", "{what}: {first:#}");
        assert_eq!(first["phase"], "a", "{what}: {first:#}");
        assert_eq!(first["status"], "stale", "{what}: {first:#}");
    }
    assert_eq!(show["instances"][0]["last_result"]["run_id"], "first");
    assert_eq!(runs["runs"][0]["run_id"], "first");
    assert_eq!(
        show["instances"][0]["last_result"]["finished_at"]
            .as_str()
            .map(str::len),
        runs["runs"][0]["finished_at"].as_str().map(str::len)
    );
}

/// The schemas refuse what they do not describe: a document without `"v": 1`, or with
/// a field no version documents.
#[test]
fn the_schemas_are_closed() {
    let out = built_diamond();
    for (schema, args) in [
        ("plan.v1.json", &["plan", "--json"][..]),
        ("status.v1.json", &["status", "--json"][..]),
        ("runs.v1.json", &["runs", "--json"][..]),
        ("graph.v1.json", &["graph", "--format", "json"][..]),
        ("list.v1.json", &["list", "--json"][..]),
        ("show.v1.json", &["show", "--json", "b"][..]),
        ("show.v1.json", &["show", "--json", "out/b.txt"][..]),
        ("show.v1.json", &["show", "--json", "raw/1.txt"][..]),
    ] {
        let doc = checked(&out, schema, args, 0);
        let v = validator(schema);
        let mut without_v = doc.clone();
        without_v.as_object_mut().unwrap().remove("v");
        assert!(!v.is_valid(&without_v), "{schema} accepts no `v`");
        let mut extra = doc.clone();
        extra["surprise"] = json!(1);
        assert!(!v.is_valid(&extra), "{schema} accepts an unknown field");
    }
}
