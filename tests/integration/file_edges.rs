//! The graph from the files: an input that can match another phase's declared output
//! makes that phase an upstream (drawn apart by `graph`, listed by `check -v`, named in
//! cycles); group outputs in `{needs.G.outputs}`; placeholders that would expand to no
//! paths; `{outputs}` and `{output}` of shards that write their own outputs.

use serde_json::Value;

use crate::test::*;

/// An Orchfile of `[orch] format = 1` followed by `phases`.
fn orchfile(phases: &str) -> String {
    format!("[orch]\nformat = 1\n{phases}")
}

/// The edges of `orch graph --format json` as `(from, to, kind)`, sorted.
fn edges(t: Test) -> Vec<(String, String, String)> {
    let out = t.args(["graph", "--format", "json"]).run();
    let v: Value = serde_json::from_str(&out.stdout).expect("graph json");
    let mut e: Vec<(String, String, String)> = v["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("from"), s("to"), s("kind"))
        })
        .collect();
    e.sort();
    e
}

fn edge(from: &str, to: &str, kind: &str) -> (String, String, String) {
    (from.to_owned(), to.to_owned(), kind.to_owned())
}

/// Runs `orch check` on `orchfile`, expecting a configuration error.
fn config_error(orchfile: &str) -> Output {
    Test::new()
        .orchfile(orchfile)
        .args(["check"])
        .expect_status(2)
        .run()
}

// ---------------------------------------------------------------------------------------
// The archive case

/// Objects written by `merge = "none"` shards, archived by a phase that only globs them.
const ARCHIVE: &str = r#"
[phase.compile]
outputs = ["build/obj/{shard.key}.o"]
shard = { strategy = "files", source = "src/*.c", merge = "none" }
run = "sleep 0.2; mkdir -p build/obj/src && cp {shard.input} {output}"

[phase.archive]
inputs = ["build/obj/**/*.o"]
outputs = ["build/lib.txt"]
run = "ls {inputs} > {output}"
"#;

const OBJECTS: &str = "build/obj/src/a.c.o\nbuild/obj/src/b.c.o\nbuild/obj/src/c.c.o\n";

#[test]
fn an_archive_waits_for_every_object_its_glob_can_match() {
    let t = Test::new()
        .orchfile(&orchfile(ARCHIVE))
        .write("src/a.c", "a")
        .write("src/b.c", "b")
        .write("src/c.c", "c");
    let p = t.project().clone();
    t.args(["build", "-j", "8"]).run();
    assert_eq!(p.read("build/lib.txt"), OBJECTS);
    // Again, with every object removed and rewritten while the build runs.
    p.test()
        .args(["build", "-j", "8", "--force", "--no-cache"])
        .run();
    assert_eq!(p.read("build/lib.txt"), OBJECTS);

    assert_eq!(edges(p.test()), vec![edge("compile", "archive", "files")]);
    let out = p.test().args(["graph", "--format", "json"]).run();
    let v: Value = serde_json::from_str(&out.stdout).expect("graph json");
    assert_eq!(v["edges"][0]["input"], "build/obj/**/*.o");
    assert_eq!(v["edges"][0]["output"], "build/obj/{shard.key}.o");
    p.test()
        .args(["check", "-v"])
        .stdout_contains(
            "archive <- compile (input `build/obj/**/*.o` matches output `build/obj/{shard.key}.o`)",
        )
        .run();
    p.test()
        .args(["graph"])
        .stdout_contains("\"compile\" -> \"archive\" [style=bold, color=gray, label=\"files\"];")
        .run();
    p.test()
        .args(["graph", "--format", "mermaid"])
        .stdout_contains("==>|files|")
        .run();
    // Without `-v`, `check` says only that the Orchfile is valid.
    p.test()
        .args(["check"])
        .stdout_lacks("archive <- compile")
        .run();
}

// ---------------------------------------------------------------------------------------
// Which inputs match which outputs

#[test]
fn directories_plain_paths_and_globs_make_edges() {
    let e = edges(Test::new().orchfile(&orchfile(
        r#"
[phase.gen]
outputs = ["gen/"]
run = "mkdir -p gen && echo x > gen/data.txt"

[phase.inside]
inputs = ["gen/data.txt"]
outputs = ["out/inside.txt"]
run = "cat {inputs} > {output}"

[phase.one]
outputs = ["files/a.txt"]
run = "mkdir -p files && echo a > {output}"

[phase.glob]
inputs = ["files/*.txt"]
outputs = ["out/glob.txt"]
run = "cat {inputs} > {output}"

[phase.whole]
inputs = ["files"]
outputs = ["out/whole.txt"]
run = "ls {inputs} > {output}"

[phase.unrelated]
inputs = ["files/*.md", "gen2/x"]
outputs = ["out/unrelated.txt"]
run = "echo > {output}"
"#,
    )));
    assert_eq!(
        e,
        vec![
            edge("gen", "inside", "files"),
            edge("one", "glob", "files"),
            edge("one", "whole", "files"),
        ]
    );
}

#[test]
fn a_directory_output_is_waited_for() {
    let t = Test::new().orchfile(&orchfile(
        r#"
[phase.gen]
outputs = ["gen/"]
run = "sleep 0.2; mkdir -p gen && echo generated > gen/data.txt"

[phase.use]
inputs = ["gen/data.txt"]
outputs = ["out/use.txt"]
run = "mkdir -p out && cat {inputs} > {output}"
"#,
    ));
    let p = t.project().clone();
    t.args(["build", "-j", "4"]).run();
    assert_eq!(p.read("out/use.txt"), "generated\n");
}

#[test]
fn matrix_instances_pair_on_their_files() {
    let e = edges(Test::new().orchfile(&orchfile(
        r#"
[phase.gen]
matrix = { lang = ["de", "fr"] }
outputs = ["out/{matrix.lang}.txt"]
run = "mkdir -p out && echo {matrix.lang} > {output}"

[phase.use]
matrix = { lang = ["de", "fr"] }
inputs = ["out/{matrix.lang}.txt"]
outputs = ["use/{matrix.lang}.txt"]
run = "mkdir -p use && cat {inputs} > {output}"
"#,
    )));
    assert_eq!(
        e,
        vec![
            edge("gen[lang=de]", "use[lang=de]", "files"),
            edge("gen[lang=fr]", "use[lang=fr]", "files"),
        ]
    );
}

#[test]
fn a_glob_over_the_phase_s_own_outputs_is_no_edge() {
    let e = edges(Test::new().orchfile(&orchfile(
        r#"
[phase.compile]
inputs = ["build/obj/**/*.o"]
outputs = ["build/obj/{shard.key}.o"]
shard = { strategy = "files", source = "src/*.c", merge = "none" }
run = "mkdir -p build/obj/src && cp {shard.input} {output}"
"#,
    )));
    assert!(e.is_empty(), "{e:?}");
}

#[test]
fn a_declared_after_stays_soft() {
    let e = edges(Test::new().orchfile(&orchfile(
        r#"
[phase.gen]
outputs = ["out/a.txt"]
run = "mkdir -p out && echo a > {output}"

[phase.use]
after = ["gen"]
inputs = ["out/a.txt"]
outputs = ["use.txt"]
run = "cat {inputs} > {output}"

[phase.hard]
needs = ["gen"]
inputs = ["out/a.txt"]
outputs = ["hard.txt"]
run = "cat {inputs} > {output}"
"#,
    )));
    assert_eq!(
        e,
        vec![edge("gen", "hard", "needs"), edge("gen", "use", "after")]
    );
}

#[test]
fn a_cycle_through_files_names_the_phases_and_the_file() {
    let out = config_error(&orchfile(
        r#"
[phase.a]
inputs = ["b.txt"]
outputs = ["a.txt"]
run = "cat {inputs} > {output}"

[phase.b]
inputs = ["a*.txt"]
outputs = ["b.txt"]
run = "cat {inputs} > {output}"
"#,
    ));
    assert!(
        out.stderr.contains("dependency cycle: `a` → `b` → `a`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("`a` reads `b.txt`, which `b` writes, closing the cycle"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("`b` reads `a*.txt`, which matches `a.txt` that `a` writes"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("narrow the input pattern"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------
// Groups and placeholders that would expand to nothing

#[test]
fn a_group_stands_for_the_outputs_of_its_dependencies() {
    let t = Test::new().orchfile(&orchfile(
        r#"
[phase.a]
outputs = ["out/a.txt"]
run = "mkdir -p out && echo a > {output}"

[phase.b]
outputs = ["out/b.txt"]
run = "mkdir -p out && echo b > {output}"

[phase.ab]
needs = ["a", "b"]

[phase.outer]
needs = ["ab"]

[phase.report]
needs = ["outer"]
outputs = ["report.txt"]
run = "cat {needs.outer.outputs} > {output}"
"#,
    ));
    let p = t.project().clone();
    t.run();
    assert_eq!(p.read("report.txt"), "a\nb\n");
}

#[test]
fn placeholders_that_would_expand_to_no_paths_are_errors() {
    let cases = [
        (
            r#"
[phase.none]
run = "true"

[phase.group]
needs = ["none"]

[phase.use]
needs = ["group"]
outputs = ["lib.a"]
run = "ar rcs {output} {needs.group.outputs}"
"#,
            "`{needs.group.outputs}` would expand to nothing: group `group` and the phases it depends on declare no outputs",
        ),
        (
            r#"
[phase.none]
run = "true"

[phase.use]
needs = ["none"]
outputs = ["lib.a"]
run = "ar rcs {output} {needs.none.outputs}"
"#,
            "`{needs.none.outputs}` would expand to nothing: `none` declares no outputs",
        ),
        (
            r#"
[phase.use]
run = "echo {outputs}"
"#,
            "`{outputs}` in phase `use`, which declares no outputs, would expand to nothing",
        ),
        (
            r#"
[phase.use]
outputs = ["x.txt"]
run = "cat {inputs} > {output}"
"#,
            "`{inputs}` in phase `use`, which declares no inputs, would expand to nothing",
        ),
        (
            r#"
[phase.compile]
outputs = ["obj/{shard.key}.o"]
shard = { strategy = "files", source = "src/*.c", merge = "none" }
run = "cp {shard.input} {output}"

[phase.group]
needs = ["compile"]

[phase.use]
needs = ["group"]
outputs = ["lib.a"]
run = "ar rcs {output} {needs.group.outputs}"
"#,
            "the shards of `compile` (a dependency of group `group`) write their own outputs",
        ),
    ];
    for (text, message) in cases {
        let out = config_error(&orchfile(text));
        assert!(out.stderr.contains(message), "{message}\n{}", out.stderr);
        assert!(out.stderr.contains("help:"), "{}", out.stderr);
        assert!(out.stderr.contains("Orchfile.toml:"), "{}", out.stderr);
    }
}

#[test]
fn inputs_that_match_no_file_fail_before_the_command_runs() {
    let t = Test::new().orchfile(&orchfile(
        r#"
[phase.cat]
inputs = ["src/*.txt"]
outputs = ["all.txt"]
run = "touch ran; cat {inputs} > {output}"
"#,
    ));
    let p = t.project().clone();
    t.expect_status(1)
        .stdout_contains("no file matches its inputs (`src/*.txt`)")
        .run();
    assert!(!p.exists("ran"), "the command ran");
    assert!(!p.exists("all.txt"));
}

// ---------------------------------------------------------------------------------------
// Shards that write their own outputs

#[test]
fn outputs_of_a_merge_none_shard_are_its_own() {
    let t = Test::new()
        .orchfile(&orchfile(
            r#"
[phase.copy]
outputs = ["out/{shard.key}.txt"]
shard = { strategy = "files", source = "src/*", merge = "none" }
run = "mkdir -p out/src && cp {shard.input} {output}"

[phase.both]
outputs = ["two/{shard.key}.a", "two/{shard.key}.b"]
shard = { strategy = "files", source = "src/*", merge = "none" }
run = "mkdir -p two/src && touch {outputs}"
"#,
        ))
        .write("src/x", "x\n")
        .write("src/y", "y\n");
    let p = t.project().clone();
    t.run();
    assert_eq!(p.read("out/src/x.txt"), "x\n");
    assert_eq!(p.read("out/src/y.txt"), "y\n");
    for f in ["two/src/x.a", "two/src/x.b", "two/src/y.a", "two/src/y.b"] {
        assert!(p.exists(f), "{f}");
    }
}

#[test]
fn output_of_a_shard_with_two_outputs_is_an_error() {
    let out = config_error(&orchfile(
        r#"
[phase.both]
outputs = ["two/{shard.key}.a", "two/{shard.key}.b"]
shard = { strategy = "files", source = "src/*", merge = "none" }
run = "cp {shard.input} {output}"
"#,
    ));
    assert!(
        out.stderr
            .contains("`{output}` needs exactly one output per shard, but phase `both` declares 2"),
        "{}",
        out.stderr
    );
}
