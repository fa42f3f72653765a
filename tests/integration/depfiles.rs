//! Discovered inputs (`depfile`): a compile sharded per source reruns exactly the shards
//! whose depfile listed an edited header, `plan` and `explain` name the header, system
//! headers and paths outside the project are not tracked, a command that does not write
//! its depfile fails with what to do, and the cache restores only while the discovered
//! files hold what the result was built from.

use serde_json::Value;

use crate::test::*;

/// Four sources and three headers: `a.c` and `b.c` include `a.h`, `b.c` also `b.h`,
/// `c.c` includes `c.h`, `d.c` only `<stdio.h>`.
fn c_project() -> Test {
    Test::new()
        .orchfile(
            r#"[orch]
format = 1

[phase.compile]
shard = { strategy = "files", source = "src/*.c", merge = "none" }
run = "cc -c {shard.input} -Iinc -o {output} -MD -MF {depfile}"
outputs = ["build/obj/{shard.key}.o"]
depfile = "build/obj/{shard.key}.d"
"#,
        )
        .write("inc/a.h", "#define A 1\n")
        .write("inc/b.h", "#define B 2\n")
        .write("inc/c.h", "#define C 3\n")
        .write("src/a.c", "#include \"a.h\"\nint a(void) { return A; }\n")
        .write(
            "src/b.c",
            "#include \"a.h\"\n#include \"b.h\"\nint b(void) { return A + B; }\n",
        )
        .write("src/c.c", "#include \"c.h\"\nint c(void) { return C; }\n")
        .write(
            "src/d.c",
            "#include <stdio.h>\nint d(void) { return puts(\"d\"); }\n",
        )
}

/// The `{shard.key}` of every shard that started in run `id`, sorted.
fn shards_run(out: &Output, id: &str) -> Vec<String> {
    let events = out.events(id);
    let mut keys: Vec<String> = of_type(&events, "instance_started")
        .into_iter()
        .filter_map(|e| e["shard"]["key"].as_str().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

/// The discovered inputs of every local cache entry, as JSON objects.
fn cached_discovered(out: &Output) -> Vec<Value> {
    out.list(".orch/cache/ac")
        .into_iter()
        .map(|f| {
            let entry: Value = serde_json::from_str(&out.read(&format!(".orch/cache/ac/{f}")))
                .expect("a cache entry is JSON");
            entry["discovered"].clone()
        })
        .collect()
}

#[test]
fn a_header_edit_reruns_exactly_the_shards_that_include_it() {
    let out = c_project().args(["build", "--run-id", "r1"]).run();
    assert_eq!(
        shards_run(&out, "r1"),
        ["src/a.c", "src/b.c", "src/c.c", "src/d.c"]
    );
    assert!(out.exists("build/obj/src/d.c.o"));

    // The system header `d.c` includes is listed by `cc -MD`, and not tracked.
    let discovered = cached_discovered(&out);
    assert_eq!(discovered.len(), 1, "{discovered:?}");
    let keys: Vec<&String> = discovered[0]
        .as_object()
        .expect("discovered inputs are an object")
        .keys()
        .collect();
    assert_eq!(keys, ["inc/a.h", "inc/b.h", "inc/c.h"]);

    out.again()
        .args(["build", "--run-id", "r2"])
        .stdout_lacks("compile#")
        .run();
    assert!(shards_run(&out, "r2").is_empty());

    out.write("inc/a.h", "#define A 10\n");
    let plan = out.again().args(["plan", "--json"]).run().json();
    let entry = plan_entry(&plan, "compile");
    assert_eq!(
        entry["reasons"],
        serde_json::json!(["input_changed"]),
        "{entry}"
    );
    assert_eq!(entry["details"][0]["subject"], "inc/a.h", "{entry}");
    assert_eq!(entry["shards"]["stale"], 2, "{entry}");
    assert_eq!(entry["shards"]["total"], 4, "{entry}");
    assert_eq!(
        entry["shards"]["stale_shards"][0]["reason"],
        "input_changed"
    );
    assert_eq!(entry["source"], "built", "{entry}");
    out.again()
        .args(["plan"])
        .stdout_contains("input_changed (inc/a.h)")
        .stdout_contains("2 of 4 shards stale: #0 (src/a.c), #1 (src/b.c)")
        // Neither the objects nor the cache entry match the edited header.
        .stdout_lacks("output modified")
        .stdout_lacks("restorable")
        .run();
    out.again()
        .args(["explain", "compile"])
        .stdout_contains("discovered changed  inc/a.h")
        .run();

    out.again().args(["build", "--run-id", "r3"]).run();
    assert_eq!(shards_run(&out, "r3"), ["src/a.c", "src/b.c"]);
    let events = out.events("r3");
    let invalidated = event(&events, "instance_invalidated", "compile");
    assert_eq!(
        invalidated["details"][0]["subject"], "inc/a.h",
        "{invalidated}"
    );

    // A no-op after.
    out.again()
        .args(["plan"])
        .stdout_contains("nothing to do")
        .run();
    out.again().args(["build", "--run-id", "r4"]).run();
    assert!(shards_run(&out, "r4").is_empty());

    // A header only `c.c` includes reruns `c.c` only.
    out.write("inc/c.h", "#define C 30\n");
    out.again().args(["build", "--run-id", "r5"]).run();
    assert_eq!(shards_run(&out, "r5"), ["src/c.c"]);

    // An object's lineage names its source and the headers its depfile listed, no others.
    out.again()
        .args(["show", "build/obj/src/b.c.o"])
        .stdout_contains("src/b.c")
        .stdout_contains("inc/a.h")
        .stdout_contains("inc/b.h  ")
        .stdout_contains("listed in the depfile")
        .stdout_lacks("inc/c.h")
        .stdout_lacks("src/a.c")
        .run();
}

#[test]
fn the_cache_restores_only_while_the_headers_match() {
    let out = c_project().args(["build", "--run-id", "r1"]).run();
    out.again().args(["clean"]).run();
    assert!(!out.exists("build/obj/src/a.c.o"));
    out.again().args(["build", "--run-id", "r2"]).run();
    let events = out.events("r2");
    assert_eq!(instances_of(&events, "instance_cached"), ["compile"]);
    assert!(shards_run(&out, "r2").is_empty());
    assert!(out.exists("build/obj/src/a.c.o"));

    // Same key, other header: the entry does not describe this build.
    out.again().args(["clean"]).run();
    out.write("inc/b.h", "#define B 20\n");
    out.again().args(["build", "--run-id", "r3"]).run();
    let events = out.events("r3");
    assert!(
        instances_of(&events, "instance_cached").is_empty(),
        "{events:#?}"
    );
    assert_eq!(
        shards_run(&out, "r3"),
        ["src/a.c", "src/b.c", "src/c.c", "src/d.c"]
    );
}

#[test]
fn a_command_that_does_not_write_its_depfile_fails_saying_what_to_do() {
    let out = Test::new()
        .orchfile(
            r#"[orch]
format = 1

[phase.gen]
run = "echo hi > {output}"
outputs = ["build/gen.txt"]
depfile = "build/gen.d"
"#,
        )
        .args(["build", "--run-id", "r1"])
        .expect_status(1)
        .stdout_contains("did not write its depfile `build/gen.d`")
        .stdout_contains("-MD -MF build/gen.d")
        .run();
    let events = out.events("r1");
    let failed = event(&events, "instance_failed", "gen");
    assert_eq!(failed["kind"], "depfile", "{failed}");
}

#[test]
fn an_unparsable_depfile_fails_naming_the_line() {
    Test::new()
        .orchfile(
            r#"[orch]
format = 1

[phase.gen]
run = "echo hi > {output}; printf 'gen: a.h\nno colon\n' > build/gen.d"
outputs = ["build/gen.txt"]
depfile = "build/gen.d"
"#,
        )
        .expect_status(1)
        .stdout_contains("cannot parse the depfile `build/gen.d`: line 2")
        .run();
}

/// A depfile written by hand: escaped spaces, continuations, several targets, a `-MP`
/// phony rule, a path outside the project, an absolute path inside it, and a file that
/// does not exist.
#[test]
fn a_hand_written_depfile_with_escapes_and_several_targets() {
    let out = Test::new()
        .orchfile(
            r#"[orch]
format = 1

[phase.gen]
run = '''cat "my header.h" > {output}; printf 'build/gen.txt build/gen.d: my\\ header.h \\\n  lib/x.h '"$(pwd -P)"'/lib/y.h \\\n  ../outside.h /usr/include/stdio.h later.h\n\nlib/x.h:\n' > build/gen.d'''
outputs = ["build/gen.txt"]
depfile = "build/gen.d"
"#,
        )
        .write("my header.h", "one\n")
        .write("lib/x.h", "x\n")
        .write("lib/y.h", "y\n")
        .args(["build", "--run-id", "r1"])
        .run();
    let discovered = cached_discovered(&out);
    assert_eq!(discovered.len(), 1, "{discovered:?}");
    let keys: Vec<&String> = discovered[0]
        .as_object()
        .expect("an object")
        .keys()
        .collect();
    assert_eq!(keys, ["later.h", "lib/x.h", "lib/y.h", "my header.h"]);
    assert!(discovered[0]["later.h"].is_null());

    out.again()
        .args(["plan"])
        .stdout_contains("nothing to do")
        .run();
    out.write("lib/y.h", "y2\n");
    out.again()
        .args(["plan"])
        .stdout_contains("input_changed (lib/y.h)")
        .run();
    out.again().run();
    out.write("later.h", "now here\n");
    out.again()
        .args(["plan"])
        .stdout_contains("input_added (later.h)")
        .run();
    out.again().run();
    out.remove("my header.h");
    out.write("my header.h", "two\n");
    out.again().args(["build", "--run-id", "r4"]).run();
    assert_eq!(out.read("build/gen.txt"), "two\n");
    assert_eq!(ran(&out.events("r4")), ["gen"]);
}

#[test]
fn depfile_paths_are_checked_like_outputs() {
    Test::new()
        .orchfile(
            r#"[orch]
format = 1

[phase.compile]
shard = { strategy = "files", source = "src/*.c", merge = "none" }
run = "cc -c {shard.input} -o build/{shard.key}.o"
outputs = ["build/{shard.key}.o"]
depfile = "build/all.d"
"#,
        )
        .write("src/a.c", "int a;\n")
        .expect_status(2)
        .stderr_contains("is the same for every shard")
        .run();
    Test::new()
        .orchfile(
            r#"[orch]
format = 1

[phase.gen]
run = "true"
inputs = ["src/*"]
depfile = "src/gen.d"
"#,
        )
        .expect_status(2)
        .stderr_contains("depfile `src/gen.d` is matched by input `src/*`")
        .run();
    Test::new()
        .orchfile(
            r#"[orch]
format = 1

[phase.gen]
run = "true"
depfile = "../gen.d"
"#,
        )
        .expect_status(2)
        .stderr_contains("depfile")
        .run();
    Test::new()
        .orchfile(
            r#"[orch]
format = 1

[phase.gen]
run = "cc -c src/a.c -o {output} -MD -MF {depfile}"
inputs = ["src/a.c"]
outputs = ["build/a.o"]
"#,
        )
        .write("src/a.c", "int a;\n")
        .expect_status(2)
        .stderr_contains(
            "`{depfile}` names the dependency file, but phase `gen` declares no `depfile`",
        )
        .run();
}

#[test]
fn the_depfile_placeholder_is_written_relative_to_cwd() {
    let out = Test::new()
        .orchfile(
            r#"[orch]
format = 1

[phase.gen]
cwd = "sub"
run = "echo {depfile} > ../build/said && printf 'x: in.txt\\n' > {depfile} && cp in.txt {output}"
inputs = ["sub/in.txt"]
outputs = ["build/out.txt"]
depfile = "build/gen.d"
"#,
        )
        .write("sub/in.txt", "hello\n")
        .run();
    assert_eq!(out.read("build/said"), "../build/gen.d\n");
}

#[test]
fn a_generated_file_read_without_a_dependency_on_its_writer_is_named() {
    let orchfile = |needs: &str| {
        format!(
            r#"[orch]
format = 1

[phase.gen]
run = "echo '#define V 1' > {{output}}"
inputs = ["v.txt"]
outputs = ["build/gen/config.h"]

[phase.use]
{needs}
run = "printf 'build/use.txt: build/gen/config.h v.txt' > {{depfile}}; echo ok > {{output}}"
outputs = ["build/use.txt"]
depfile = "build/use.d"
"#
        )
    };
    Test::new()
        .orchfile(&orchfile(""))
        .write("v.txt", "1\n")
        .stderr_contains(
            "warning: use: its depfile lists `build/gen/config.h`, which phase `gen` writes, but nothing makes it wait for `gen`",
        )
        .stderr_contains("add `needs = [\"gen\"]`")
        // A source the depfile lists is no one's output: nothing to say.
        .stderr_lacks("`v.txt`")
        .run();
    Test::new()
        .orchfile(&orchfile("needs = [\"gen\"]"))
        .write("v.txt", "1\n")
        .stderr_lacks("nothing makes it wait")
        .run();
}
