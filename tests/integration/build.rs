//! Building: a graph runs once in dependency order, then is a no-op; targets, `--force`,
//! `--from`, `--dry-run`, matrices and the shipped example.

use std::path::Path;

use crate::test::*;

#[test]
fn diamond_builds_every_phase_once_in_dependency_order() {
    let out = built_diamond();
    assert_eq!(out.read("out/a.txt"), "one\ntwo\n");
    assert_eq!(out.read("out/b.txt"), "b:one\nb:two\n");
    assert_eq!(out.read("out/c.txt"), "c:one\nc:two\n");
    assert_eq!(out.read("out/d.txt"), "b:one\nb:two\nc:one\nc:two\n");

    let events = out.events("first");
    let ran = ran(&events);
    assert_eq!(sorted(ran.clone()), names(&["a", "b", "c", "d"]));
    let pos = |n: &str| ran.iter().position(|r| r == n).unwrap();
    assert_eq!(pos("a"), 0, "a runs first: {ran:?}");
    assert_eq!(pos("d"), 3, "d runs last: {ran:?}");
    // Every start is followed by its completion, and `d` starts only after `b` and `c`
    // completed.
    let seq = |ty: &str, n: &str| event(&events, ty, n)["seq"].as_u64().unwrap();
    assert!(seq("instance_completed", "b") < seq("instance_started", "d"));
    assert!(seq("instance_completed", "c") < seq("instance_started", "d"));
    assert!(seq("instance_completed", "a") < seq("instance_started", "b"));
    assert!(seq("instance_completed", "a") < seq("instance_started", "c"));
}

#[test]
fn human_display_prints_one_line_per_instance_and_a_summary() {
    let out = diamond().args(["build", "-j", "1"]).run();
    for (k, name) in ["a", "b", "c", "d"].iter().enumerate() {
        let prefix = format!("[{}/4] {name} ok ", k + 1);
        assert!(
            out.stdout.lines().any(|l| l.starts_with(&prefix)),
            "no line starting {prefix:?} in:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("orch: 4 built, 0 up to date"));
    assert_eq!(out.stdout.lines().count(), 5, "{}", out.stdout);
}

#[test]
fn second_build_is_a_no_op() {
    let out = built_diamond();
    let before = out.mtime("out/d.txt");
    let out = out
        .again()
        .args(["build", "--run-id", "second"])
        .stdout_contains("orch: nothing to do (4 up to date)")
        .stdout_lacks(" ok ")
        .stderr_lacks("warning")
        .run();
    let events = out.events("second");
    assert!(ran(&events).is_empty(), "{events:#?}");
    // Up to date before the build: counted by `plan_ready`, not a line each.
    assert!(skipped(&events).is_empty(), "{events:#?}");
    assert_eq!(
        unlisted(&events, &["a", "b", "c", "d"]),
        names(&["a", "b", "c", "d"])
    );
    assert_eq!(out.mtime("out/d.txt"), before, "d.txt was rewritten");
    // Nothing ran, so the run has no logs folder.
    assert!(!out.exists(".orch/logs/second"));
    assert!(
        out.exists(".orch/logs/first"),
        "{:?}",
        out.list(".orch/logs")
    );
}

#[test]
fn outputs_parent_directories_are_created() {
    Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.deep]
run = "echo deep > {output}"
outputs = ["a/b/c/deep.txt"]
"#,
        )
        .run();
}

#[test]
fn commands_run_in_the_project_root_with_orch_variables() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.where]
run = "pwd > {output}; echo \"$ORCH_PHASE $ORCH_INSTANCE $ORCH_RUN_ID {phase}\" >> {output}"
outputs = ["out/where.txt"]
"#,
        )
        .args(["build", "--run-id", "r1"])
        .run();
    let text = out.read("out/where.txt");
    let mut lines = text.lines();
    let pwd = lines.next().unwrap();
    assert_eq!(
        Path::new(pwd).canonicalize().unwrap(),
        out.path().canonicalize().unwrap()
    );
    assert_eq!(lines.next(), Some("where where r1 where"));
}

#[test]
fn double_brace_is_a_literal_brace_and_paths_are_shell_quoted() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.braces]
inputs = ["in dir/*.txt"]
run = "cat {inputs} | awk '{{ print \"<\" $0 \">\" }' > {output}"
outputs = ["out dir/braces.txt"]
"#,
        )
        .write("in dir/a b.txt", "x\n")
        .run();
    assert_eq!(out.read("out dir/braces.txt"), "<x>\n");
}

#[test]
fn target_builds_it_and_its_upstreams_only() {
    let out = diamond().args(["build", "b", "--run-id", "t"]).run();
    let events = out.events("t");
    assert_eq!(ran(&events), names(&["a", "b"]));
    assert!(out.exists("out/b.txt"));
    assert!(!out.exists("out/c.txt"));
    assert!(!out.exists("out/d.txt"));
    // The rest builds later; `a` and `b` are not redone.
    let out = out.again().args(["build", "--run-id", "rest"]).run();
    assert_eq!(ran(&out.events("rest")), names(&["c", "d"]));
}

#[test]
fn unknown_target_is_a_usage_error() {
    diamond()
        .args(["build", "nope"])
        .expect_status(2)
        .stderr_contains("unknown target `nope`")
        .run();
}

#[test]
fn force_reruns_everything_selected() {
    let out = built_diamond();
    let out = out
        .again()
        .args(["build", "--force", "--run-id", "forced"])
        .run();
    let events = out.events("forced");
    assert_eq!(sorted(ran(&events)), names(&["a", "b", "c", "d"]));
    for n in ["a", "b", "c", "d"] {
        let reasons = &event(&events, "instance_invalidated", n)["reasons"];
        assert!(
            reasons.as_array().unwrap().contains(&"forced".into()),
            "{n}: {reasons}"
        );
    }
    // --force with a target forces only that target; --force-all its dependencies too.
    let out = out
        .again()
        .args(["build", "--force", "b", "--run-id", "forced-b"])
        .run();
    assert_eq!(ran(&out.events("forced-b")), names(&["b"]));
    let out = out
        .again()
        .args(["build", "--force-all", "b", "--run-id", "forced-all-b"])
        .run();
    assert_eq!(ran(&out.events("forced-all-b")), names(&["a", "b"]));
}

#[test]
fn from_reruns_the_phase_and_everything_downstream() {
    let out = built_diamond();
    let out = out
        .again()
        .args(["build", "--from", "b", "--run-id", "from-b"])
        .run();
    let events = out.events("from-b");
    assert_eq!(ran(&events), names(&["b", "d"]));
    assert!(skipped(&events).is_empty(), "{events:#?}");
    assert_eq!(unlisted(&events, &["a", "b", "c", "d"]), names(&["a", "c"]));
}

#[test]
fn dry_run_prints_the_plan_and_runs_nothing() {
    let out = diamond()
        .args(["build", "--dry-run"])
        .stdout_contains("would run 4 of 4 instances")
        .stdout_contains("never_built")
        .run();
    assert!(!out.exists("out"), "outputs were created");
    assert!(!out.exists(".orch/runs"), ".orch/runs was created");

    // After a build, a changed input: the dry run names it and still runs nothing.
    let out = out.again().run();
    out.project.write("raw/1.txt", "uno\n");
    let out = out
        .again()
        .args(["build", "--dry-run"])
        .stdout_contains("input_changed (raw/1.txt)")
        .run();
    assert_eq!(out.read("out/a.txt"), "one\ntwo\n");
    assert_eq!(out.run_ids().len(), 1);
}

const MATRIX: &str = r#"
[orch]
format = 1

[phase.p]
matrix = { lang = ["fr", "de"] }
run = "echo {matrix.lang} > {output}"
outputs = ["out/p-{matrix.lang}.txt"]

[phase.q]
needs = ["p"]
matrix = { lang = ["fr", "de"] }
run = "sed 's/^/q:/' {needs.p.outputs} > {output}"
outputs = ["out/q-{matrix.lang}.txt"]

[phase.all]
needs = ["q"]
run = "cat {needs.q.outputs} > {output}"
outputs = ["out/all.txt"]
"#;

#[test]
fn matrix_makes_one_instance_per_value_and_pairs_shared_axes() {
    let out = Test::new()
        .orchfile(MATRIX)
        .args(["build", "--run-id", "m"])
        .run();
    let events = out.events("m");
    assert_eq!(
        sorted(ran(&events)),
        names(&[
            "all",
            "p[lang=de]",
            "p[lang=fr]",
            "q[lang=de]",
            "q[lang=fr]"
        ])
    );
    assert_eq!(out.read("out/p-fr.txt"), "fr\n");
    assert_eq!(out.read("out/p-de.txt"), "de\n");
    // Paired per language, not gathered.
    assert_eq!(out.read("out/q-fr.txt"), "q:fr\n");
    assert_eq!(out.read("out/q-de.txt"), "q:de\n");
    // A phase without the axis gathers every instance (in instance-name order).
    assert_eq!(out.read("out/all.txt"), "q:de\nq:fr\n");

    let graph = out.again().args(["graph", "--format", "json"]).run().json();
    let edges: Vec<(String, String)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(edges.contains(&("p[lang=fr]".into(), "q[lang=fr]".into())));
    assert!(edges.contains(&("p[lang=de]".into(), "q[lang=de]".into())));
    assert!(!edges.contains(&("p[lang=fr]".into(), "q[lang=de]".into())));
    assert!(!edges.contains(&("p[lang=de]".into(), "q[lang=fr]".into())));
}

#[test]
fn matrix_instance_target_builds_only_that_instance() {
    let out = Test::new()
        .orchfile(MATRIX)
        .args(["build", "p[lang=fr]", "--run-id", "fr"])
        .run();
    assert_eq!(ran(&out.events("fr")), names(&["p[lang=fr]"]));
    assert!(out.exists("out/p-fr.txt"));
    assert!(!out.exists("out/p-de.txt"));

    // `q[lang=de]` pulls in only its paired upstream.
    let out = out
        .again()
        .args(["build", "q[lang=de]", "--run-id", "de"])
        .run();
    assert_eq!(ran(&out.events("de")), names(&["p[lang=de]", "q[lang=de]"]));
    assert!(!out.exists("out/q-fr.txt"));

    // A phase target selects all its instances.
    let out = out.again().args(["build", "q", "--run-id", "q"]).run();
    assert_eq!(ran(&out.events("q")), names(&["q[lang=fr]"]));

    out.again()
        .args(["build", "p[lang=es]"])
        .expect_status(2)
        .run();
}

#[test]
fn matrix_from_a_list_variable() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[vars]
langs = ["en", "it"]
greeting = "ciao"

[phase.hello]
matrix = { lang = "{vars.langs}" }
run = "echo '{vars.greeting} {matrix.lang}' > {output}"
outputs = ["out/{matrix.lang}.txt"]
"#,
        )
        .run();
    assert_eq!(out.read("out/en.txt"), "ciao en\n");
    assert_eq!(out.read("out/it.txt"), "ciao it\n");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        // A local build of the example must not leak into the copy.
        if name == ".orch" || name == "build" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn hello_example_builds_and_then_is_up_to_date() {
    let t = Test::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
    copy_dir(&example, t.project().path());
    let out = t.args(["build", "--run-id", "one"]).run();
    assert_eq!(
        sorted(ran(&out.events("one"))),
        names(&["counts", "top", "words"])
    );
    let top = out.read("build/top.md");
    assert!(top.starts_with("# Most frequent words\n"), "{top}");
    assert!(
        out.read("build/counts.txt").lines().count() > 1,
        "counts.txt is nearly empty"
    );
    let out = out
        .again()
        .args(["build", "--run-id", "two"])
        .stdout_contains("nothing to do")
        .run();
    assert!(ran(&out.events("two")).is_empty());
    out.again()
        .args(["check"])
        .stdout_contains("ok (3 phases, 3 instances)")
        .run();
}

#[test]
fn orchfile_is_found_from_a_subdirectory() {
    let out = built_diamond();
    // `-C raw`: orch looks upwards for the Orchfile, like cargo.
    let mut cmd = std::process::Command::new(ORCH);
    cmd.arg("-C").arg(out.join("raw")).arg("status");
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("4 up to date"));
}

#[test]
fn cwd_runs_the_command_there_with_usable_paths() {
    let out = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.inside]
cwd = "sub"
inputs = ["raw/x.txt"]
run = "pwd > where.txt; cat {inputs} > {output}"
outputs = ["out/inside.txt"]
"#,
        )
        .write("raw/x.txt", "x\n")
        .write("sub/.keep", "")
        .run();
    assert!(
        out.exists("sub/where.txt"),
        "the command did not run in sub/"
    );
    assert_eq!(out.read("out/inside.txt"), "x\n");
}
