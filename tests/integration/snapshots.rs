//! What users read, pinned with insta: diagnostics, `--help`, `plan`, `explain`, `status`
//! and the plain build display. Review changes with `cargo insta review`, or rerun with
//! `INSTA_UPDATE=always` and read the diff.

use crate::test::Test;

/// Replaces durations (`12ms`, `1.2s`) so snapshots do not depend on the machine.
fn scrub(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_inclusive([' ', '\n']) {
        let (core, tail) = word.split_at(word.trim_end_matches([' ', '\n', ':']).len());
        let is_duration = (core.ends_with("ms") && core[..core.len() - 2].parse::<u64>().is_ok())
            || (core.ends_with('s')
                && core[..core.len() - 1].parse::<f64>().is_ok()
                && core.contains('.'));
        out.push_str(if is_duration { "[time]" } else { core });
        out.push_str(tail);
    }
    out
}

const DIAMOND: &str = r#"[orch]
format = 1

[phase.src]
run = "cat {inputs} > {output}"
inputs = ["in/*.txt"]
outputs = ["out/src.txt"]

[phase.left]
needs = ["src"]
run = "tr a-z A-Z < {needs.src.outputs} > {output}"
outputs = ["out/left.txt"]

[phase.right]
needs = ["src"]
run = "rev < {needs.src.outputs} > {output}"
outputs = ["out/right.txt"]

[phase.join]
needs = ["left", "right"]
run = "cat {needs.left.outputs} {needs.right.outputs} > {output}"
outputs = ["out/join.txt"]
"#;

#[test]
fn unknown_key_diagnostic() {
    let out = Test::new()
        .orchfile("[orch]\nformat = 1\n\n[phase.a]\nrun = \"true\"\nneds = [\"b\"]\n")
        .args(["check"])
        .expect_status(2)
        .run();
    insta::assert_snapshot!(out.stderr);
}

#[test]
fn cycle_and_unknown_dependency_diagnostics() {
    let out = Test::new()
        .orchfile("[phase.a]\nrun = \"true\"\nneeds = [\"c\"]\n\n[phase.b]\nrun = \"true\"\nneeds = [\"a\"]\n\n[phase.c]\nrun = \"true\"\nneeds = [\"b\", \"sorce\"]\n\n[phase.source]\nrun = \"true\"\n")
        .args(["check"])
        .expect_status(2)
        .run();
    insta::assert_snapshot!(out.stderr);
}

#[test]
fn build_help() {
    let out = Test::new().args(["build", "--help"]).expect_status(0).run();
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn build_display_plan_explain_and_status() {
    let first = Test::new()
        .orchfile(DIAMOND)
        .write("in/a.txt", "abc\n")
        .write("in/b.txt", "xyz\n")
        .args(["build", "-j", "1", "--run-id", "one"])
        .expect_status(0)
        .run();
    insta::assert_snapshot!("first_build", scrub(&first.stdout));
    first.project.write("in/b.txt", "xyz!\n");
    first.project.write("in/c.txt", "new\n");
    let plan = first.again().args(["plan"]).expect_status(0).run();
    insta::assert_snapshot!("plan_after_edit", plan.stdout);
    let explain = first
        .again()
        .args(["explain", "src"])
        .expect_status(0)
        .run();
    // Digests depend only on content, so they are stable.
    insta::assert_snapshot!("explain_after_edit", explain.stdout);
    let status = first.again().args(["status"]).expect_status(0).run();
    insta::assert_snapshot!("status_after_edit", status.stdout);
}
