//! Targets that are files: an output path builds its producer (from the root, from a
//! subdirectory, inside a directory output, from a shard template), unknown paths are
//! usage errors; `--force` forces the named targets only, `--force-all` the selection;
//! `orch show` of a shard output lists its own slice, prints a repeated subtree once, and
//! on a source lists what reads it.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::test::*;

/// The diamond plus a directory output, a `files` shard phase with merge = none, and a
/// phase whose name is also a path another phase declares.
const PROJECT: &str = r#"
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
needs = ["a"]
run = "sed 's/^/c:/' {needs.a.outputs} > {output}"
outputs = ["out/c.txt"]

[phase.d]
needs = ["b", "c"]
run = "cat {needs.b.outputs} {needs.c.outputs} > {output}"
outputs = ["out/d.txt"]

[phase.gen]
run = "mkdir -p gen/sub && echo x > gen/sub/one.txt"
outputs = ["gen/"]

[phase.compile]
shard = { strategy = "files", source = "src/*.c", merge = "none" }
run = "mkdir -p obj/src && cat {shard.input} include/h.h > obj/{shard.key}.o"
inputs = ["include/h.h"]
outputs = ["obj/{shard.key}.o"]

[phase.lib]
needs = ["compile"]
run = "cat obj/src/*.o > {output}"
outputs = ["lib.a"]

[phase.report]
run = "echo report > {output}"
outputs = ["report.txt"]

[phase.other]
run = "echo other > {output}"
outputs = ["report"]
"#;

fn project() -> Test {
    Test::new()
        .orchfile(PROJECT)
        .write("raw/1.txt", "one\n")
        .write("raw/2.txt", "two\n")
        .write("src/a.c", "a\n")
        .write("src/b.c", "b\n")
        .write("src/c.c", "c\n")
        .write("include/h.h", "h\n")
        .write("sub/keep", "")
}

/// `orch ARGS` started in `rel` (a directory of the project), without `-C`.
fn run_in(p: &Project, rel: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(ORCH)
        .current_dir(p.join(rel))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run orch");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn an_output_path_builds_its_producer_and_what_it_needs() {
    let out = project()
        .args(["build", "out/b.txt", "--run-id", "t"])
        .run();
    assert_eq!(ran(&out.events("t")), names(&["a", "b"]));
    assert!(out.exists("out/b.txt"));
    assert!(!out.exists("out/c.txt"));
    // `./` and `x/../` forms are the same path.
    let out = out
        .again()
        .args(["build", "./out/../out/c.txt", "--run-id", "c"])
        .run();
    assert_eq!(ran(&out.events("c")), names(&["c"]));
}

#[test]
fn paths_are_relative_to_the_directory_orch_starts_in() {
    let p = project().project().clone();
    let (code, _, err) = run_in(&p, "sub", &["build", "../out/b.txt"]);
    assert_eq!(code, 0, "{err}");
    assert!(p.exists("out/b.txt"));
    assert!(!p.exists("out/c.txt"));
    // From a subdirectory, a root-relative spelling is another (undeclared) path; the
    // help suggests the spelling that works from there.
    let (code, _, err) = run_in(&p, "sub", &["build", "out/c.txt"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown target `out/c.txt`"), "{err}");
    assert!(err.contains("did you mean `../out/c.txt`?"), "{err}");
    // `-C sub` starts there too.
    let (code, _, err) = run_in(&p, ".", &["-C", "sub", "build", "../out/c.txt"]);
    assert_eq!(code, 0, "{err}");
    assert!(p.exists("out/c.txt"));
    // An absolute path inside the project works from anywhere.
    let abs = p.join("out/d.txt");
    let (code, _, err) = run_in(&p, "sub", &["build", abs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(p.exists("out/d.txt"));
}

#[test]
fn a_path_inside_a_directory_output_builds_the_directory() {
    let out = project()
        .args(["build", "gen/sub/one.txt", "--run-id", "g"])
        .run();
    assert_eq!(ran(&out.events("g")), names(&["gen"]));
    assert_eq!(out.read("gen/sub/one.txt"), "x\n");
}

#[test]
fn a_shard_output_builds_its_whole_instance() {
    let out = project()
        .args(["build", "obj/src/b.c.o", "--run-id", "s"])
        .run();
    let events = out.events("s");
    assert_eq!(
        sorted(ran(&events)),
        names(&["compile", "compile#0", "compile#1", "compile#2"])
    );
    assert!(out.exists("obj/src/a.c.o"));
    assert!(!out.exists("lib.a"));
}

#[test]
fn an_unknown_path_is_a_usage_error_with_help() {
    let t = project();
    let p = t.project().clone();
    t.args(["build", "out/bb.txt"])
        .expect_status(2)
        .stderr_contains(
            "unknown target `out/bb.txt`: no phase is named so and no phase declares it as an output",
        )
        .stderr_contains("did you mean `out/b.txt`?")
        .run();
    // A source says who reads it, for build, plan and explain alike.
    for cmd in ["build", "plan", "explain"] {
        p.test()
            .args([cmd, "src/a.c"])
            .expect_status(2)
            .stderr_contains("unknown target `src/a.c`")
            .stderr_contains("is a source, read by `compile`")
            .stderr_contains("orch show src/a.c")
            .run();
    }
    // Outside the project is no target either.
    p.test()
        .args(["build", "../elsewhere.txt"])
        .expect_status(2)
        .stderr_contains("unknown target `../elsewhere.txt`")
        .run();
    assert!(!p.exists(".orch/runs"), "nothing ran");
}

#[test]
fn a_phase_name_wins_over_a_path_of_the_same_text() {
    let out = project().args(["build", "report", "--run-id", "r"]).run();
    assert_eq!(ran(&out.events("r")), names(&["report"]));
    assert!(out.exists("report.txt"));
    assert!(!out.exists("report"));
    // Spelt as a path, it is the output `other` declares.
    let out = out
        .again()
        .args(["build", "./report", "--run-id", "p"])
        .run();
    assert_eq!(ran(&out.events("p")), names(&["other"]));
    assert_eq!(out.read("report"), "other\n");
}

#[test]
fn force_reruns_the_named_target_only_and_force_all_its_dependencies() {
    let out = project().args(["build", "--run-id", "first"]).run();
    let p = out
        .again()
        .args(["plan", "--json", "--force", "out/d.txt"])
        .run()
        .json();
    assert_eq!(p["stale"], 1);
    assert_eq!(reasons(&p, "d"), ["forced"]);
    for up in ["a", "b", "c"] {
        assert_eq!(plan_entry(&p, up)["status"], "up_to_date", "{up}");
    }
    let out = out
        .again()
        .args(["build", "--force", "d", "--run-id", "forced"])
        .run();
    let events = out.events("forced");
    assert_eq!(ran(&events), names(&["d"]));
    assert!(skipped(&events).is_empty(), "{events:#?}");
    assert_eq!(
        unlisted(&events, &["a", "b", "c", "d"]),
        names(&["a", "b", "c"])
    );
    let reasons_of = &event(&events, "instance_invalidated", "d")["reasons"];
    assert_eq!(reasons_of, &serde_json::json!(["forced"]));

    let p = out
        .again()
        .args(["plan", "--json", "--force-all", "d"])
        .run()
        .json();
    assert_eq!(p["stale"], 4);
    let out = out
        .again()
        .args(["build", "--force-all", "d", "--run-id", "all"])
        .run();
    assert_eq!(
        sorted(ran(&out.events("all"))),
        names(&["a", "b", "c", "d"])
    );

    // What lies between two forced targets reruns only when its key changes: `a` makes
    // the same bytes again, so `b` and `c` are cut off.
    let out = out
        .again()
        .args(["build", "--force", "a", "d", "--run-id", "ad"])
        .run();
    let events = out.events("ad");
    assert_eq!(ran(&events), names(&["a", "d"]));
    assert_eq!(sorted(skipped(&events)), names(&["b", "c"]));
}

#[test]
fn forcing_a_sharded_instance_reruns_every_shard_but_not_its_upstreams() {
    let out = project().args(["build", "--run-id", "first"]).run();
    let out = out
        .again()
        .args(["build", "--force", "lib", "--run-id", "lib"])
        .run();
    assert_eq!(ran(&out.events("lib")), names(&["lib"]));
    let out = out
        .again()
        .args(["build", "--force", "compile", "--run-id", "compile"])
        .run();
    let events = out.events("compile");
    let plan = event(&events, "shard_plan", "compile");
    assert_eq!(
        (plan["shards"].as_u64(), plan["stale"].as_u64()),
        (Some(3), Some(3))
    );
}

/// The `path` of every node of a `show --json` tree, depth first.
fn paths(node: &Value, out: &mut Vec<String>) {
    if let Some(p) = node["path"].as_str() {
        out.push(p.to_owned());
    }
    for c in node["built_from"].as_array().into_iter().flatten() {
        paths(c, out);
    }
}

#[test]
fn a_shard_output_lists_its_own_source_and_the_shared_inputs() {
    let out = project().args(["build", "compile"]).run();
    let out = out
        .again()
        .args(["show", "obj/src/b.c.o"])
        .stdout_contains("built by    compile#1 (key `src/b.c`)")
        .stdout_contains("src/b.c")
        .stdout_contains("include/h.h")
        .stdout_lacks("src/a.c")
        .stdout_lacks("src/c.c")
        .run();
    let doc = out
        .again()
        .args(["show", "--json", "obj/src/b.c.o"])
        .run()
        .json();
    let mut found = Vec::new();
    paths(&doc, &mut found);
    assert_eq!(found, ["obj/src/b.c.o", "include/h.h", "src/b.c"]);
    assert_eq!(doc["shard"]["index"], 1);
    assert_eq!(doc["shard"]["key"], "src/b.c");
    // Downstream, each object shows its own source only.
    let out = out.again().args(["build", "lib"]).run();
    let doc = out.again().args(["show", "--json", "lib.a"]).run().json();
    let mut found = Vec::new();
    paths(&doc, &mut found);
    for src in ["src/a.c", "src/b.c", "src/c.c"] {
        assert_eq!(found.iter().filter(|p| *p == src).count(), 1, "{found:?}");
    }
}

#[test]
fn a_chunk_output_lists_its_slice() {
    let out = Test::new()
        .orchfile(
            r#"
[phase.split]
shard = { strategy = "chunk", source = "data.jsonl", size = 2, merge = "none" }
run = "mkdir -p out && cp {shard.input} out/{shard.key}.jsonl"
inputs = ["cfg.txt"]
outputs = ["out/{shard.key}.jsonl"]
"#,
        )
        .write("data.jsonl", "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n")
        .write("cfg.txt", "c\n")
        .run();
    out.again()
        .args(["show", "out/1.jsonl"])
        .stdout_contains("built by    split#1 (key `1`)")
        .stdout_contains("read by shard #1 (key `1`)")
        .stdout_contains("cfg.txt")
        .run();
    let doc = out
        .again()
        .args(["show", "--json", "out/1.jsonl"])
        .run()
        .json();
    let data = doc["built_from"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["path"] == "data.jsonl")
        .expect("the source is listed");
    assert_eq!(data["shard"]["index"], 1);
    assert_ne!(data["shard"]["slice"], data["digest"]);
}

#[test]
fn a_shared_subtree_is_printed_once() {
    let out = built_diamond();
    let out = out.again().args(["show", "out/d.txt"]).run();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let a: Vec<&&str> = lines.iter().filter(|l| l.contains("out/a.txt")).collect();
    assert_eq!(a.len(), 2, "{}", out.stdout);
    assert!(!a[0].contains("(shown above)"), "{}", out.stdout);
    assert!(a[1].contains("(shown above)"), "{}", out.stdout);
    let raw = lines.iter().filter(|l| l.contains("raw/1.txt")).count();
    assert_eq!(raw, 1, "{}", out.stdout);
}

#[test]
fn show_on_a_source_lists_what_reads_it() {
    let t = project();
    let p = t.project().clone();
    t.args(["show", "src/b.c"])
        .stdout_contains("src/b.c is a source, read by: compile#1 (src/b.c)")
        .run();
    p.test()
        .args(["show", "raw/2.txt"])
        .stdout_contains("raw/2.txt is a source, read by: a")
        .run();
    p.test()
        .args(["show", "include/h.h"])
        .stdout_contains("include/h.h is a source, read by: compile")
        .run();
    let doc = p.test().args(["show", "--json", "src/c.c"]).run().json();
    assert_eq!(doc["kind"], "source");
    assert_eq!(doc["read_by"][0]["instance"], "compile");
    assert_eq!(doc["read_by"][0]["shard"]["index"], 2);
    // From a subdirectory, relative to it.
    let (code, stdout, err) = run_in(&p, "sub", &["show", "../src/a.c"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("src/a.c is a source, read by: compile#0 (src/a.c)"));
}
