//! Self-describing artifacts: the `PATH.meta.json` sidecar of an output declared with
//! `meta = true`: what it records, that it validates against
//! `schemas/artifact-meta.v1.json`, that it is restored with its artifact from the cache
//! and removed by `orch clean`, and that it never enters a digest or a key.

use std::path::PathBuf;

use serde_json::Value;

use crate::test::*;

const ORCHFILE: &str = r#"
[phase.shots]
run = '''mkdir -p out && printf '{{"line":"%s"}}\n' "$(head -n 1 script.txt)" > out/shots.json'''
inputs = ["script.txt"]
outputs = [{ path = "out/shots.json", schema = "schemas/shots.json", meta = true }]
env = { TOKEN = "s3cret-value" }

[phase.plan]
needs = ["shots"]
# Matches `out/shots.json`, never its sidecar.
inputs = ["out/*.json"]
run = "mkdir -p final && cp out/shots.json final/plan.json && echo plain > final/plain.txt"
outputs = [{ path = "final/plan.json", meta = true }, "final/plain.txt"]
"#;

const SCHEMA: &str = r#"{ "type": "object", "required": ["line"] }"#;

fn project() -> Test {
    Test::new()
        .orchfile(ORCHFILE)
        .write("script.txt", "a castle at dawn\n")
        .write("schemas/shots.json", SCHEMA)
}

fn sidecar(out: &Output, path: &str) -> Value {
    let text = out.read(&format!("{path}.meta.json"));
    serde_json::from_str(&text).expect("the sidecar is JSON")
}

/// Checks `doc` against `schemas/artifact-meta.v1.json`.
fn assert_valid(doc: &Value) {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/artifact-meta.v1.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(file).expect("schema")).expect("JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{doc:#}");
}

fn digest_of(out: &Output, path: &str) -> String {
    orch::fs::hash_bytes(out.read(path).as_bytes()).to_hex()
}

#[test]
fn a_sidecar_records_the_artifact_its_schema_parents_and_run() {
    let out = project().args(["build", "--run-id", "first"]).run();
    let shots = sidecar(&out, "out/shots.json");
    assert_valid(&shots);
    assert_eq!(shots["v"], 1);
    assert_eq!(shots["artifact"]["path"], "out/shots.json");
    assert_eq!(
        shots["artifact"]["digest"],
        digest_of(&out, "out/shots.json")
    );
    assert_eq!(
        shots["artifact"]["size"],
        out.read("out/shots.json").len() as u64
    );
    assert_eq!(shots["schema"]["path"], "schemas/shots.json");
    assert_eq!(
        shots["schema"]["digest"],
        digest_of(&out, "schemas/shots.json")
    );
    assert_eq!(shots["instance"], "shots");
    assert!(shots["command"].as_str().unwrap().contains("script.txt"));
    assert_eq!(shots["run_id"], "first");
    assert!(shots.get("restored_in_run").is_none());
    assert_eq!(shots["parents"][0]["path"], "script.txt");
    assert_eq!(shots["parents"][0]["digest"], digest_of(&out, "script.txt"));
    assert!(shots["parents"][0].get("from").is_none());
    // A variable by name and keyed digest: never its value.
    assert!(shots["env"]["TOKEN"].is_string());
    assert!(!out.read("out/shots.json.meta.json").contains("s3cret"));

    let plan = sidecar(&out, "final/plan.json");
    assert_valid(&plan);
    assert!(plan.get("schema").is_none());
    assert_eq!(plan["parents"][0]["path"], "out/shots.json");
    assert_eq!(plan["parents"][0]["from"], "shots");
    assert_eq!(plan["parents"][0]["digest"], shots["artifact"]["digest"]);
    // Only the outputs that asked for one.
    assert!(!out.exists("final/plain.txt.meta.json"));
}

#[test]
fn the_sidecar_enters_no_digest_nor_key() {
    let out = project().args(["build", "--run-id", "first"]).run();
    out.again()
        .args(["build", "--run-id", "second"])
        .stdout_contains("nothing to do")
        .run();
    assert_eq!(sidecar(&out, "out/shots.json")["run_id"], "first");
    // Rebuilt, `shots` gets a new sidecar (run id, time) but the same artifact: what needs
    // it stays up to date.
    out.again()
        .args(["build", "--force", "shots", "--run-id", "third"])
        .run();
    assert_eq!(sidecar(&out, "out/shots.json")["run_id"], "third");
    assert_eq!(sidecar(&out, "final/plan.json")["run_id"], "first");
    assert_eq!(ran(&out.events("third")), names(&["shots"]));
    // Nor does restoring `shots`, which writes its sidecar again with `restored_in_run`.
    out.remove("out/shots.json");
    out.again()
        .args(["build", "--run-id", "restore"])
        .stdout_contains("restored")
        .run();
    assert_eq!(cached(&out.events("restore")), names(&["shots"]));
    assert!(ran(&out.events("restore")).is_empty());
    // Editing the sidecar by hand changes nothing either.
    out.write("out/shots.json.meta.json", "{}");
    out.again()
        .args(["build", "--run-id", "fourth"])
        .stdout_contains("nothing to do")
        .run();
}

#[test]
fn a_restored_artifact_keeps_its_provenance_and_names_the_restoring_run() {
    let out = project().args(["build", "--run-id", "first"]).run();
    let built = sidecar(&out, "final/plan.json");
    out.again()
        .args(["clean"])
        .stdout_contains("removed final/plan.json.meta.json")
        .run();
    assert!(!out.exists("out/shots.json.meta.json"));
    assert!(!out.exists("final/plan.json.meta.json"));
    out.again().args(["build", "--run-id", "again"]).run();
    assert_eq!(
        sorted(cached(&out.events("again"))),
        names(&["plan", "shots"])
    );
    let restored = sidecar(&out, "final/plan.json");
    assert_valid(&restored);
    assert_eq!(restored["restored_in_run"], "again");
    assert_eq!(restored["run_id"], "first");
    assert_eq!(restored["time"], built["time"]);
    assert_eq!(restored["artifact"], built["artifact"]);
}

#[test]
fn an_output_that_asks_for_meta_later_is_built_not_restored_without_one() {
    let plain = ORCHFILE.replace(", meta = true", "");
    let out = Test::new()
        .orchfile(&plain)
        .write("script.txt", "a castle at dawn\n")
        .write("schemas/shots.json", SCHEMA)
        .run();
    assert!(!out.exists("out/shots.json.meta.json"));
    out.again().args(["clean"]).run();
    out.write("Orchfile.toml", ORCHFILE);
    out.again().args(["build", "--run-id", "meta"]).run();
    assert_eq!(sorted(ran(&out.events("meta"))), names(&["plan", "shots"]));
    assert_valid(&sidecar(&out, "out/shots.json"));
    assert_valid(&sidecar(&out, "final/plan.json"));
}

#[test]
fn a_failed_run_leaves_no_sidecar_of_the_last_success() {
    let out = project().run();
    assert!(out.exists("final/plan.json.meta.json"));
    out.write(
        "Orchfile.toml",
        &ORCHFILE.replace("cp out/shots.json final/plan.json", "exit 3"),
    );
    out.again().expect_status(1).run();
    assert!(!out.exists("final/plan.json"));
    assert!(!out.exists("final/plan.json.meta.json"));
}

#[test]
fn a_sharded_output_gets_its_sidecar_after_the_merge() {
    let out = Test::new()
        .orchfile(
            r#"
[phase.chunks]
shard = { strategy = "chunk", source = "data/records.jsonl", size = 2 }
run = "cat {shard.input} > {shard.output}"
outputs = [{ path = "out/all.jsonl", meta = true }]
"#,
        )
        .write("data/records.jsonl", "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n")
        .args(["build", "--run-id", "s"])
        .run();
    let doc = sidecar(&out, "out/all.jsonl");
    assert_valid(&doc);
    assert_eq!(doc["artifact"]["digest"], digest_of(&out, "out/all.jsonl"));
    assert_eq!(doc["run_id"], "s");
}

#[test]
fn an_output_where_a_sidecar_goes_is_a_configuration_error() {
    Test::new()
        .orchfile(
            r#"
[phase.a]
run = "echo 1 > a.json"
outputs = [{ path = "a.json", meta = true }]

[phase.b]
run = "echo 2 > a.json.meta.json"
outputs = ["a.json.meta.json"]
"#,
        )
        .expect_status(2)
        .stderr_contains("is where orch writes the sidecar of `a.json`")
        .run();
}

#[test]
fn meta_on_a_directory_output_is_a_configuration_error() {
    Test::new()
        .orchfile(
            r#"
[phase.a]
run = "mkdir -p out && echo 1 > out/a.json"
outputs = [{ path = "out/", meta = true }]
"#,
        )
        .expect_status(2)
        .stderr_contains("asks for `meta = true`, which needs one file")
        .run();
}

#[test]
fn the_sidecar_names_the_command_as_it_ran() {
    // Braces written `{{ }}` and `{inputs}` in the Orchfile: the sidecar names the command
    // the shell was given, as `instance_started` does, not the key's template.
    let out = Test::new()
        .orchfile(
            r#"
[phase.a]
inputs = ["in.txt"]
run = "printf '{{\"n\":%s}}\n' $(cat {inputs}) > {output}"
outputs = [{ path = "out/a.json", meta = true }]
"#,
        )
        .write("in.txt", "7\n")
        .args(["build", "--json"])
        .run();
    let started = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["type"] == "instance_started")
        .expect("a started event");
    let meta = sidecar(&out, "out/a.json");
    assert_eq!(meta["command"], started["command"], "{meta}");
    assert_eq!(
        meta["command"],
        "printf '{\"n\":%s}\n' $(cat in.txt) > out/a.json"
    );
    assert_eq!(out.read("out/a.json"), "{\"n\":7}\n");
}
