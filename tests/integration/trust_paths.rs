//! Output paths resolve beneath the project root: a command that replaces an output's
//! directory with a symlink to elsewhere cannot make orch remove, write or merge a file
//! outside the project.

use crate::test::*;

/// A directory outside the project holding a file that must survive every build.
fn outside() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("orch-outside-")
        .tempdir()
        .expect("create a temporary directory");
    std::fs::write(dir.path().join("target.txt"), "keep me\n").expect("write victim");
    dir
}

#[test]
fn pre_run_removal_does_not_follow_a_parent_replaced_by_a_symlink() {
    let away = outside();
    let orchfile = format!(
        r#"
[orch]
format = 1

[phase.evil]
run = "rm -rf build/d && ln -s '{away}' build/d && echo done > {{output}}"
outputs = ["build/evil.txt"]

[phase.victim]
needs = ["evil"]
run = "echo built > {{output}}"
outputs = ["build/d/target.txt"]
"#,
        away = away.path().display()
    );
    let out = Test::new()
        .orchfile(&orchfile)
        .write("build/d/keep", "")
        .args(["build", "--run-id", "r"])
        .expect_status(1)
        .stdout_contains("leads outside the project")
        .run();
    assert_eq!(
        std::fs::read_to_string(away.path().join("target.txt")).unwrap(),
        "keep me\n",
        "the file outside the project must be untouched"
    );
    let events = out.events("r");
    let failed = event(&events, "instance_failed", "victim");
    assert!(
        failed["message"]
            .as_str()
            .is_some_and(|m| m.contains("build/d/target.txt")),
        "{failed}"
    );
}

#[test]
fn a_shard_merge_does_not_write_through_a_symlinked_parent() {
    let away = outside();
    // The shard command itself swaps the merged output's directory for a symlink, after
    // orch prepared it: the merge is the first write to land there.
    let orchfile = format!(
        r#"
[orch]
format = 1

[phase.split]
shard = {{ strategy = "files", source = "in/*.txt" }}
run = "cp {{shard.input}} {{shard.output}} && mkdir -p build && rm -rf build/m && ln -sfn '{away}' build/m"
outputs = ["build/m/target.txt"]
"#,
        away = away.path().display()
    );
    let out = Test::new()
        .orchfile(&orchfile)
        .write("in/a.txt", "a\n")
        .write("in/b.txt", "b\n")
        .args(["build", "-j", "1", "--run-id", "r"])
        .expect_status(1)
        .stdout_contains("leads outside the project")
        .run();
    assert_eq!(
        std::fs::read_to_string(away.path().join("target.txt")).unwrap(),
        "keep me\n"
    );
    let names: Vec<String> = std::fs::read_dir(away.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["target.txt"],
        "no temporary file left outside either"
    );
    let events = out.events("r");
    assert_eq!(of_type(&events, "merge_completed").len(), 0);
}

#[test]
fn failed_outputs_are_removed_without_following_a_symlinked_parent() {
    let away = outside();
    // The command writes its output, then replaces the directory with a symlink and
    // fails: removing the failed output must not delete the file outside.
    let orchfile = format!(
        r#"
[orch]
format = 1

[phase.p]
run = "echo x > {{output}} && rm -rf build/d && ln -s '{away}' build/d && exit 1"
outputs = ["build/d/target.txt"]
"#,
        away = away.path().display()
    );
    Test::new()
        .orchfile(&orchfile)
        .args(["build"])
        .expect_status(1)
        .run();
    assert_eq!(
        std::fs::read_to_string(away.path().join("target.txt")).unwrap(),
        "keep me\n"
    );
}

#[test]
fn symlinked_directories_that_stay_inside_the_project_still_work() {
    let t = Test::new()
        .orchfile(
            r#"
[orch]
format = 1

[phase.p]
run = "echo x > {output}"
outputs = ["build/link/out.txt"]
"#,
        )
        .write("real/.keep", "")
        .write("build/.keep", "");
    std::os::unix::fs::symlink("../real", t.project().join("build/link")).unwrap();
    let out = t.args(["build"]).run();
    assert_eq!(out.read("real/out.txt"), "x\n");
}

#[test]
fn an_output_that_is_a_fifo_fails_saying_so_without_hanging() {
    let out = Test::new()
        .orchfile(
            r#"
[phase.a]
run = "mkdir -p out && mkfifo {output}"
outputs = ["out/a.txt"]
"#,
        )
        .args(["build", "--run-id", "r"])
        .expect_status(1)
        .stdout_contains("did not produce `out/a.txt` as a file it can read (it is a FIFO")
        .run();
    let events = out.events("r");
    assert_eq!(
        event(&events, "instance_failed", "a")["kind"],
        "missing_output"
    );
}

#[test]
fn merge_none_removes_only_outputs_orch_wrote() {
    let out = Test::new()
        .orchfile(
            r#"
[phase.p]
shard = { strategy = "group", source = "data/in.jsonl", key = "k", merge = "none" }
run = "cat {shard.input} > data/{shard.key}.jsonl"
outputs = ["data/{shard.key}.jsonl"]
"#,
        )
        .write("data/in.jsonl", "{\"k\":\"x\"}\n")
        .write("data/other.jsonl", "keep\n")
        .args(["build"])
        .run();
    // The source and a file of the user's match the output template; neither is orch's.
    assert_eq!(out.read("data/in.jsonl"), "{\"k\":\"x\"}\n");
    assert_eq!(out.read("data/other.jsonl"), "keep\n");
    assert_eq!(out.read("data/x.jsonl"), "{\"k\":\"x\"}\n");
    // A group that goes away takes its output with it.
    out.write("data/in.jsonl", "{\"k\":\"y\"}\n");
    let out = out.again().args(["build"]).run();
    assert!(!out.exists("data/x.jsonl"));
    assert!(out.exists("data/y.jsonl"));
    assert_eq!(out.read("data/other.jsonl"), "keep\n");
}
