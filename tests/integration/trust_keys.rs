//! Never wrongly up to date: every file that shapes a result is in its key (output
//! schemas too), and the digest cache sees an in-place rewrite whose mtime was put back.

use crate::test::*;

fn orchfile(phases: &str) -> String {
    format!("[orch]\nformat = 1\n{phases}")
}

fn plan(out: &Output) -> serde_json::Value {
    out.again().args(["plan", "--json"]).run().json()
}

/// The `details` of an instance's plan entry, as `code subject` strings.
fn details(plan: &serde_json::Value, instance: &str) -> Vec<String> {
    plan_entry(plan, instance)["details"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    format!(
                        "{} {}",
                        d["reason"].as_str().unwrap_or(""),
                        d["subject"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Output schemas are in the key

const SCHEMA_CHECKED: &str = r#"
[phase.emit]
run = "printf '{{\"a\":1}}' > out.json"
outputs = [{ path = "out.json", schema = "schemas/out.json" }]
"#;

#[test]
fn tightening_an_output_schema_makes_the_phase_stale() {
    let out = Test::new()
        .orchfile(&orchfile(SCHEMA_CHECKED))
        .write("schemas/out.json", r#"{"type":"object"}"#)
        .args(["build"])
        .run();
    assert_eq!(plan(&out)["stale"], 0);

    out.write("schemas/out.json", r#"{"type":"object","required":["b"]}"#);
    let p = plan(&out);
    assert_eq!(p["stale"], 1, "{p:#}");
    assert_eq!(
        details(&p, "emit"),
        ["input_changed schemas/out.json"],
        "{p:#}"
    );
    out.again()
        .args(["explain", "emit"])
        .stdout_contains("schema   changed   schemas/out.json")
        .run();
    // The build agrees with the plan: the output no longer satisfies the schema.
    out.again().args(["build"]).expect_status(1).run();
}

#[test]
fn a_schema_of_per_shard_outputs_is_in_every_shard_key() {
    let out = Test::new()
        .orchfile(&orchfile(
            r#"
[phase.pages]
shard = { strategy = "files", source = "texts/*.txt", merge = "none" }
run = "printf '{{\"k\":\"%s\"}}' {shard.key} > out/{shard.key}.json"
outputs = [{ path = "out/{shard.key}.json", schema = "schemas/page.json" }]
"#,
        ))
        .write("texts/a.txt", "a\n")
        .write("texts/b.txt", "b\n")
        .write("schemas/page.json", r#"{"type":"object"}"#)
        .args(["build"])
        .run();
    assert_eq!(plan(&out)["stale"], 0);
    out.write(
        "schemas/page.json",
        r#"{"type":"object","required":["missing"]}"#,
    );
    let p = plan(&out);
    assert_eq!(
        details(&p, "pages"),
        ["input_changed schemas/page.json"],
        "{p:#}"
    );
    // Every shard reruns against the new schema, none is reused, and they fail.
    let out = out
        .again()
        .args(["build", "--run-id", "tight"])
        .expect_status(1)
        .run();
    let events = out.events("tight");
    assert_eq!(event(&events, "shard_plan", "pages")["reused"], 0);
}

// ---------------------------------------------------------------------------------------
// The digest cache and ctime

const COPY: &str = r#"
[phase.copy]
run = "cat in.txt > out.txt"
inputs = ["in.txt"]
outputs = ["out.txt"]
"#;

#[test]
fn an_in_place_rewrite_with_its_mtime_put_back_is_seen() {
    let t = Test::new()
        .orchfile(&orchfile(COPY))
        .write("in.txt", "aaaa");
    // Old enough that the digest cache trusts its entry by stat alone.
    t.project().set_mtime_ago("in.txt", 3600);
    let out = t.args(["build"]).run();
    let mtime = out.mtime("in.txt");
    let ino =
        std::fs::metadata(out.join("in.txt")).map(|m| std::os::unix::fs::MetadataExt::ino(&m));

    // Same size, same inode, same mtime: only the content and the ctime differ.
    out.write("in.txt", "bbbb");
    out.set_mtime("in.txt", mtime);
    assert_eq!(out.mtime("in.txt"), mtime);
    let ino_now =
        std::fs::metadata(out.join("in.txt")).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    assert_eq!(ino.ok(), ino_now.ok());

    let p = plan(&out);
    assert_eq!(details(&p, "copy"), ["input_changed in.txt"], "{p:#}");
    let out = out.again().args(["build", "--run-id", "r"]).run();
    assert_eq!(ran(&out.events("r")), ["copy"]);
    assert_eq!(out.read("out.txt"), "bbbb");
}
