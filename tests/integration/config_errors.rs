//! Configuration errors: exit status 2, a diagnostic with `file:line:col`, a label and a
//! help line, every error at once, and nothing run.

use crate::test::*;

/// Runs `orch build` on `orchfile`, expecting a configuration error; checks nothing ran.
fn config_error(orchfile: &str) -> Output {
    let out = Test::new().orchfile(orchfile).expect_status(2).run();
    assert!(!out.exists("out"), "an output directory was created");
    assert!(!out.exists("ran"), "a command ran");
    assert!(!out.exists(".orch/runs"), "a run was recorded");
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
    out
}

#[test]
fn cycle_names_the_whole_cycle() {
    let out = config_error(
        r#"[orch]
format = 1

[phase.a]
needs = ["c"]
run = "touch ran; echo a > {output}"
outputs = ["out/a.txt"]

[phase.b]
needs = ["a"]
run = "touch ran; echo b > {output}"
outputs = ["out/b.txt"]

[phase.c]
needs = ["b"]
run = "touch ran; echo c > {output}"
outputs = ["out/c.txt"]

[phase.free]
run = "touch ran; echo free > {output}"
outputs = ["out/free.txt"]
"#,
    );
    assert!(
        out.stderr
            .contains("dependency cycle: `a` → `b` → `c` → `a`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Orchfile.toml:5:10"), "{}", out.stderr);
    assert!(
        out.stderr.contains("`a` depends on `c`, closing the cycle"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("help:"), "{}", out.stderr);
}

#[test]
fn self_dependency_is_a_cycle() {
    let out = config_error(
        r#"[orch]
format = 1

[phase.me]
after = ["me"]
run = "touch ran"
"#,
    );
    assert!(
        out.stderr.contains("dependency cycle: `me` → `me`"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_key_has_its_position_and_a_suggestion() {
    let out = config_error(
        r#"[orch]
format = 1

[phase.a]
run = "touch ran; echo a > {output}"
outputs = ["out/a.txt"]

[phase.b]
run = "touch ran; echo b > {output}"
neds = ["a"]
outputs = ["out/b.txt"]
"#,
    );
    assert!(
        out.stderr.contains("unknown key `neds` in `[phase.b]`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Orchfile.toml:10:1"), "{}", out.stderr);
    assert!(out.stderr.contains("unknown key"), "{}", out.stderr);
    assert!(
        out.stderr.contains("help: did you mean `needs`?"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_keys_everywhere_are_reported_together() {
    let out = config_error(
        r#"[orch]
format = 1
jbos = 2

[phase.a]
run = "touch ran"
desciption = "x"

[phase.b]
run = "touch ran"
outptus = ["out/b.txt"]
"#,
    );
    for (key, at, hint) in [
        ("jbos", "Orchfile.toml:3:1", "did you mean `jobs`?"),
        (
            "desciption",
            "Orchfile.toml:7:1",
            "did you mean `description`?",
        ),
        ("outptus", "Orchfile.toml:11:1", "did you mean `outputs`?"),
    ] {
        assert!(
            out.stderr.contains(&format!("unknown key `{key}`")),
            "{key}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(at), "{at}: {}", out.stderr);
        assert!(out.stderr.contains(hint), "{hint}: {}", out.stderr);
    }
    assert!(
        out.stderr
            .contains("error: 3 configuration errors; nothing was run"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_dependency_suggests_the_closest_phase() {
    let out = config_error(
        r#"[orch]
format = 1

[phase.compile]
run = "touch ran; echo c > {output}"
outputs = ["out/c.txt"]

[phase.test]
needs = ["compil"]
run = "touch ran"
"#,
    );
    assert!(
        out.stderr
            .contains("phase `test` needs `compil`, which is not a phase"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Orchfile.toml:9:10"), "{}", out.stderr);
    assert!(out.stderr.contains("unknown phase"), "{}", out.stderr);
    assert!(
        out.stderr.contains("help: did you mean `compile`?"),
        "{}",
        out.stderr
    );
}

#[test]
fn toml_syntax_error_has_its_position() {
    let out = config_error("[orch]\nformat = 1\n\n[phase.a]\nrun = \"touch ran\n");
    assert!(out.stderr.contains("invalid TOML"), "{}", out.stderr);
    assert!(out.stderr.contains("Orchfile.toml:5:"), "{}", out.stderr);
    assert!(out.stderr.contains("help:"), "{}", out.stderr);
}

#[test]
fn two_phases_declaring_one_output() {
    let out = config_error(
        r#"[orch]
format = 1

[phase.one]
run = "touch ran; echo 1 > {output}"
outputs = ["out/same.txt"]

[phase.two]
run = "touch ran; echo 2 > {output}"
outputs = ["./out//same.txt"]
"#,
    );
    assert!(
        out.stderr
            .contains("output `out/same.txt` is declared by both `one` and `two`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Orchfile.toml:10:12"), "{}", out.stderr);
    assert!(out.stderr.contains("first declared here"), "{}", out.stderr);
}

#[test]
fn matrix_output_without_the_axis_collides() {
    let out = config_error(
        r#"[orch]
format = 1

[phase.t]
matrix = { lang = ["fr", "de"] }
run = "touch ran; echo {matrix.lang} > {output}"
outputs = ["out/t.txt"]
"#,
    );
    assert!(
        out.stderr.contains("both declare output `out/t.txt`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("{matrix.AXIS}"), "{}", out.stderr);
}

#[test]
fn output_paths_must_stay_inside_the_project() {
    let out = config_error(
        r#"[orch]
format = 1

[phase.up]
run = "touch ran; echo x > ../escaped.txt"
outputs = ["sub/../../escaped.txt"]

[phase.abs]
run = "touch ran; echo x > /tmp/orch-it-absolute.txt"
outputs = ["/tmp/orch-it-absolute.txt"]
"#,
    );
    assert!(
        out.stderr
            .contains("output `sub/../../escaped.txt` is not inside the project"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("`..` leaves the project root"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Orchfile.toml:6:12"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("output `/tmp/orch-it-absolute.txt` is not inside the project"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("absolute paths leave the project root"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Orchfile.toml:10:12"), "{}", out.stderr);
}

#[test]
fn several_errors_are_reported_at_once_in_file_order() {
    let out = config_error(
        r#"[orch]
format = 1

[phase.a]
needs = ["nope"]
run = "touch ran; echo a > out/a.txt"
outputs = ["out/a.txt"]

[phase.b]
run = "touch ran; echo {unknown} > out/a.txt"
outputs = ["out/a.txt"]

[phase.c]
run = "touch ran"
outputs = ["../c.txt"]
inputs = ["/etc/passwd"]
"#,
    );
    let expected = [
        "phase `a` needs `nope`, which is not a phase",
        "unknown placeholder `{unknown}` in phase `b`",
        "output `out/a.txt` is declared by both `a` and `b`",
        "output `../c.txt` is not inside the project",
        "input `/etc/passwd` is not inside the project",
    ];
    let mut last = 0;
    for e in expected {
        let at = out
            .stderr
            .find(e)
            .unwrap_or_else(|| panic!("missing {e:?} in:\n{}", out.stderr));
        assert!(at >= last, "{e:?} is out of file order:\n{}", out.stderr);
        last = at;
    }
    assert!(
        out.stderr
            .contains("error: 5 configuration errors; nothing was run"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_placeholder_suggests_the_closest() {
    let out = config_error(
        r#"[orch]
format = 1

[phase.a]
inputs = ["x.txt"]
run = "touch ran; cat {input} > {output}"
outputs = ["out/a.txt"]
"#,
    );
    assert!(
        out.stderr
            .contains("unknown placeholder `{input}` in phase `a`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Orchfile.toml:6:23"), "{}", out.stderr);
    assert!(
        out.stderr.contains("did you mean `{inputs}`?"),
        "{}",
        out.stderr
    );
}

#[test]
fn needs_placeholder_must_name_a_dependency() {
    let out = config_error(
        r#"[orch]
format = 1

[phase.a]
run = "touch ran; echo a > {output}"
outputs = ["out/a.txt"]

[phase.b]
run = "touch ran; cat {needs.a.outputs} > {output}"
outputs = ["out/b.txt"]
"#,
    );
    assert!(
        out.stderr
            .contains("which phase `b` does not list in `needs` or `after`"),
        "{}",
        out.stderr
    );
}

#[test]
fn unsupported_format_version() {
    let out = config_error("[orch]\nformat = 2\n\n[phase.a]\nrun = \"touch ran\"\n");
    assert!(
        out.stderr.contains("unsupported Orchfile format `2`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Orchfile.toml:2:10"), "{}", out.stderr);
}

#[test]
fn every_command_refuses_a_broken_orchfile() {
    let broken = "[orch]\nformat = 1\n\n[phase.a]\nneeds = [\"a\"]\nrun = \"touch ran\"\n";
    let t = Test::new().orchfile(broken);
    let project = t.project().clone();
    for args in [
        vec!["build"],
        vec!["build", "--dry-run"],
        vec!["plan"],
        vec!["status"],
        vec!["explain", "a"],
        vec!["graph"],
        vec!["check"],
    ] {
        project
            .test()
            .args(args)
            .expect_status(2)
            .stderr_contains("dependency cycle")
            .run();
    }
    assert!(!project.exists("ran"));
}

#[test]
fn missing_orchfile_is_a_usage_error() {
    Test::new()
        .expect_status(2)
        .stderr_contains("could not find `Orchfile.toml`")
        .stderr_contains("orch init")
        .run();
}

#[test]
fn bad_command_line_is_a_usage_error() {
    built_diamond()
        .again()
        .args(["build", "-j", "0"])
        .expect_status(2)
        .run();
    built_diamond()
        .again()
        .args(["frobnicate"])
        .expect_status(2)
        .run();
}

#[test]
fn rejected_output_is_reported_once() {
    let out = config_error(
        r#"[orch]
format = 1

[phase.x]
run = "touch ran; echo x > {output}"
outputs = ["../x.txt"]
"#,
    );
    assert!(
        out.stderr
            .contains("output `../x.txt` is not inside the project"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("declares 0"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("configuration errors"),
        "one error only:\n{}",
        out.stderr
    );
}

#[test]
fn errors_of_every_stage_are_reported_together() {
    let out = config_error(
        r#"[orch]
format = 1

[phase.a]
needs = ["b"]
run = "touch ran"

[phase.b]
needs = ["a"]
run = "touch ran"

[phase.c]
needs = ["nope"]
run = "touch ran"

[phase.d]
run = "touch ran"
desciption = "typo"
"#,
    );
    for e in [
        "dependency cycle: `a` → `b` → `a`",
        "phase `c` needs `nope`, which is not a phase",
        "unknown key `desciption`",
    ] {
        assert!(out.stderr.contains(e), "missing {e:?} in:\n{}", out.stderr);
    }
    assert!(
        out.stderr
            .contains("error: 3 configuration errors; nothing was run"),
        "{}",
        out.stderr
    );
}
