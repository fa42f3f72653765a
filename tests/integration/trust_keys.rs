//! Never wrongly up to date: every file that shapes a result is in its key (output
//! schemas too), inputs that change while a command runs leave nothing recorded, the
//! digest cache sees in-place rewrites whose mtime was put back, and variable values
//! enter keys only as digests keyed with the project's secret.

use std::os::unix::fs::PermissionsExt as _;

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
// Inputs that change while the command runs

/// Rewrites its input in place and puts back the original bytes, size and mtime before
/// it exits: only the ctime and a rehash can tell.
const MUTATES_INPUT: &str = r#"
[phase.copy]
run = "cp -p in.txt keep.tmp && printf edit > in.txt && cat in.txt > out.txt && cat keep.tmp > in.txt && touch -r keep.tmp in.txt && rm keep.tmp"
inputs = ["in.txt"]
outputs = ["out.txt"]
"#;

#[test]
fn an_input_changed_during_the_run_is_not_recorded_nor_cached() {
    let out = Test::new()
        .orchfile(&orchfile(MUTATES_INPUT))
        .write("in.txt", "orig")
        .args(["build", "--run-id", "r1"])
        .stdout_contains(
            "copy: input in.txt changed while the command ran; not recorded, it will run again",
        )
        .run();
    assert_eq!(out.read("in.txt"), "orig");
    assert_eq!(out.read("out.txt"), "edit");
    let events = out.events("r1");
    let changed = event(&events, "input_changed_during_run", "copy");
    assert_eq!(changed["paths"], serde_json::json!(["in.txt"]));
    let key = event(&events, "instance_completed", "copy")["action_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!key.is_empty());
    assert!(
        !out.exists(&format!(".orch/cache/ac/{key}.json")),
        "a result built from a transient input was cached"
    );
    assert_eq!(out.list(".orch/cache/ac"), Vec::<String>::new());
    out.again()
        .args(["log", "r1"])
        .stdout_contains("in.txt changed while the command ran; not recorded")
        .run();

    let p = plan(&out);
    assert_eq!(plan_entry(&p, "copy")["status"], "stale", "{p:#}");
    let out = out.again().args(["build", "--run-id", "r2"]).run();
    assert_eq!(ran(&out.events("r2")), ["copy"]);
}

#[test]
fn a_shard_whose_input_changed_during_its_run_is_not_recorded() {
    let out = Test::new()
        .orchfile(&orchfile(
            r#"
[phase.pages]
shard = { strategy = "files", source = "texts/*.txt" }
run = "cp -p {shard.input} keep-{shard.index}.tmp && printf X > {shard.input} && cat {shard.input} > {shard.output} && cat keep-{shard.index}.tmp > {shard.input} && touch -r keep-{shard.index}.tmp {shard.input} && rm keep-{shard.index}.tmp"
outputs = ["out/pages.txt"]
"#,
        ))
        .write("texts/a.txt", "a")
        .args(["build", "--run-id", "r1"])
        .stdout_contains("input texts/a.txt changed while the command ran")
        .run();
    let events = out.events("r1");
    let changed = event(&events, "input_changed_during_run", "pages#0");
    assert_eq!(changed["paths"], serde_json::json!(["texts/a.txt"]));
    assert_eq!(changed["shard"]["index"], 0);
    event(&events, "input_changed_during_run", "pages");
    assert_eq!(out.list(".orch/cache/ac"), Vec::<String>::new());
    let p = plan(&out);
    assert_eq!(plan_entry(&p, "pages")["status"], "stale", "{p:#}");
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

// ---------------------------------------------------------------------------------------
// Variable values are keyed digests

const WITH_SECRETS: &str = r#"
[orch]
format = 1
env = ["ORCH_TEST_TOKEN"]

[phase.use]
run = "echo used > out.txt"
outputs = ["out.txt"]
env = { PASSWORD = "hunter2" }
"#;

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn plain_digests_of_values_appear_nowhere() {
    let t = Test::new().orchfile(WITH_SECRETS);
    let out = t
        .env("ORCH_TEST_TOKEN", "swordfish")
        .args(["build", "--json", "--run-id", "r1"])
        .run();
    // A second build, which remembers the project for the next when it may.
    out.again()
        .env("ORCH_TEST_TOKEN", "swordfish")
        .args(["build", "--run-id", "r2"])
        .run();
    // A changed value, so that explain and plan show digests of both.
    let explain = out
        .again()
        .env("ORCH_TEST_TOKEN", "swordfish2")
        .args(["explain", "use"])
        .stdout_contains("env      changed   ORCH_TEST_TOKEN")
        .run();
    let plan = out
        .again()
        .env("ORCH_TEST_TOKEN", "swordfish2")
        .args(["plan", "--json"])
        .run();
    let mut texts = vec![
        out.stdout.clone(),
        explain.stdout.clone(),
        plan.stdout.clone(),
    ];
    let mut blobs = Vec::new();
    for f in files_under(&out.join(".orch")) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
        blobs.push(bytes);
    }
    for value in ["hunter2", "swordfish", "swordfish2"] {
        let plain = blake3::hash(value.as_bytes());
        let hex = plain.to_hex().to_string();
        for text in &texts {
            // Explain shows 12 hex digits; 8 are enough to recognise a plain digest.
            assert!(
                !text.contains(&hex[..8]),
                "plain digest of {value} in {text}"
            );
            assert!(!text.contains(value), "{value} in {text}");
        }
        for blob in &blobs {
            assert!(!contains(blob, &plain.as_bytes()[..8]));
        }
    }
    let key = out.join(".orch/key");
    let meta = std::fs::metadata(&key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn without_the_key_values_compare_as_unknown_never_as_unchanged() {
    let out = Test::new()
        .orchfile(WITH_SECRETS)
        .env("ORCH_TEST_TOKEN", "swordfish")
        .args(["build"])
        .run();
    let p = out
        .again()
        .env("ORCH_TEST_TOKEN", "swordfish")
        .args(["plan", "--json"])
        .run()
        .json();
    assert_eq!(p["stale"], 0, "{p:#}");

    out.remove(".orch/key");
    let p = out
        .again()
        .env("ORCH_TEST_TOKEN", "swordfish")
        .args(["plan", "--json"])
        .run()
        .json();
    assert_eq!(plan_entry(&p, "use")["status"], "stale", "{p:#}");
    assert!(
        reasons(&p, "use").contains(&"env_changed".to_owned()),
        "{p:#}"
    );
    out.again()
        .env("ORCH_TEST_TOKEN", "swordfish")
        .args(["status"])
        .stdout_contains("env_changed")
        .run();
    out.again()
        .env("ORCH_TEST_TOKEN", "swordfish")
        .args(["explain", "use"])
        .stdout_contains("use: stale")
        .stdout_contains("env      unknown   ORCH_TEST_TOKEN")
        .stdout_contains("env      unknown   PASSWORD")
        .run();
    // Read-only commands leave it missing; the next build makes a new one and reruns.
    assert!(!out.exists(".orch/key"));
    let out = out
        .again()
        .env("ORCH_TEST_TOKEN", "swordfish")
        .args(["build", "--run-id", "again"])
        .run();
    assert_eq!(ran(&out.events("again")), ["use"]);
    assert!(out.exists(".orch/key"));
    let p = out
        .again()
        .env("ORCH_TEST_TOKEN", "swordfish")
        .args(["plan", "--json"])
        .run()
        .json();
    assert_eq!(p["stale"], 0, "{p:#}");
}

#[test]
fn an_upstream_output_rewritten_during_the_run_is_not_recorded() {
    // The downstream command itself stands in for anything that rewrites an upstream's
    // output while the downstream runs: it reads the rewritten bytes.
    let t = Test::new()
        .orchfile(
            r#"
[phase.a]
run = "cat src.txt > {output}"
inputs = ["src.txt"]
outputs = ["build/a.txt"]

[phase.b]
needs = ["a"]
run = "echo TAMPERED > build/a.txt; cat build/a.txt > {output}"
outputs = ["build/b.txt"]
"#,
        )
        .write("src.txt", "orig\n");
    let out = t
        .args(["build", "--run-id", "r1"])
        .stdout_contains("changed while the command ran")
        .run();
    assert_eq!(
        of_type(&out.events("r1"), "input_changed_during_run").len(),
        1
    );
    // Next build: a's output is restored, and b, never recorded, runs again.
    let out = out.again().args(["build", "--run-id", "r2"]).run();
    assert!(ran(&out.events("r2")).contains(&"b".to_owned()));
}

/// A project touching every part of a key: a matrix, a directory output, an output
/// schema, shards of both kinds, a depfile, a `cwd`, hard and soft dependencies.
const EVERY_PART: &str = r#"
[phase.gen]
matrix = { lang = ["en", "fr"] }
run = "mkdir -p out/gen-{matrix.lang} && echo {matrix.lang} > out/gen-{matrix.lang}/x && echo '\"{matrix.lang}\"' > out/name-{matrix.lang}.json"
inputs = ["src/*.c"]
outputs = ["out/gen-{matrix.lang}/", { path = "out/name-{matrix.lang}.json", schema = "name.schema.json" }]

[phase.compile]
shard = { strategy = "files", source = "src/*.c", merge = "none" }
run = "cat {shard.input} > {output} && echo {output}: {shard.input} > {depfile}"
outputs = ["build/{shard.key}.o"]
depfile = "build/{shard.key}.d"

[phase.split]
shard = { strategy = "group", source = "data/in.jsonl", key = "k" }
run = "cat {shard.input} > {shard.output}"
outputs = ["out/split.jsonl"]

[phase.link]
needs = ["gen", "compile"]
after = ["split"]
cwd = "out"
run = "ls > ../link.txt"
outputs = ["link.txt"]
"#;

/// Keys recorded by an earlier orch must still match, or every project rebuilds
/// everything after an upgrade: these were recorded before the planner streamed keys
/// into the hash instead of building their parts, and both the key a build records and
/// the one the next plan computes must equal them.
#[test]
fn action_keys_are_those_earlier_versions_recorded() {
    let out = Test::new()
        .orchfile(&orchfile(EVERY_PART))
        .write("src/a.c", "a\n")
        .write("src/b.c", "b\n")
        .write(
            "data/in.jsonl",
            "{\"k\":\"x\",\"v\":1}\n{\"k\":\"y\",\"v\":2}\n",
        )
        .write("name.schema.json", "{\"type\":\"string\"}\n")
        .run();
    let golden = [
        (
            "gen[lang=en]",
            "56d396644c17da359af299ec1c479bdb4af4c6efcbbef0a926bbdcdc2dc1b5e7",
        ),
        (
            "gen[lang=fr]",
            "4a37865c1c59eb05084912ed8a7bbe8f9061ac4cab2f8831578b4e2b00b4d41d",
        ),
        (
            "compile",
            "c070e052c295e706a8d58aa31aae68e9ddc3caa6784eaf31896daf26362af663",
        ),
        (
            "split",
            "56968bf6f859ddd32c524e5bd338b9b126df59333e468ef2c1c6bc57956b92a2",
        ),
        (
            "link",
            "1144b02f79ed3eb229728738e71bd563e71989fa9cf8f74e3fc58662e2a1da7f",
        ),
    ];
    for (instance, key) in golden {
        let shown = out.again().args(["show", instance, "--json"]).run().json();
        assert_eq!(
            shown["instances"][0]["last_success"]["action_key"], key,
            "{instance}: {shown:#}"
        );
    }
    // The planner's own key for each: equal to the recorded one, so nothing is stale.
    let p = plan(&out);
    assert_eq!(p["stale"], 0, "{p:#}");
    out.again()
        .stdout_contains("nothing to do (5 up to date)")
        .run();
}
