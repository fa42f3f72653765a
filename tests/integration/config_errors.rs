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

/// Every line that reports an error starts with `error`, the code (when there is one) in
/// brackets after it: never a bare code such as `orch::orchfile::io`.
fn errors_start_alike(stderr: &str) {
    for line in stderr.lines() {
        assert!(
            !line.starts_with("orch::") && !line.contains("  × "),
            "{line:?} in:\n{stderr}"
        );
    }
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("error"), "{stderr}");
}

#[test]
fn every_error_starts_with_error_and_its_code() {
    let out = config_error("[phase.a]\nrun = \"touch ran\"\nneds = [\"b\"]\n");
    errors_start_alike(&out.stderr);
    assert!(
        out.stderr
            .starts_with("error[orchfile::unknown_key]: unknown key `neds` in `[phase.a]`\n"),
        "{}",
        out.stderr
    );
    // The snippet and the help line stay.
    assert!(out.stderr.contains("Orchfile.toml:3:1"), "{}", out.stderr);
    assert!(
        out.stderr.contains("help: did you mean `needs`?"),
        "{}",
        out.stderr
    );

    let missing = Test::new()
        .args(["-f", "nope.toml", "plan"])
        .expect_status(2)
        .run();
    errors_start_alike(&missing.stderr);
    assert!(
        missing
            .stderr
            .starts_with("error[orchfile::io]: no Orchfile at"),
        "{}",
        missing.stderr
    );
    let syntax = config_error("[phase.a]\nrun = \"x\"\nrun = \"y\"\n");
    errors_start_alike(&syntax.stderr);
    assert!(
        syntax
            .stderr
            .starts_with("error[orchfile::syntax]: `run` is set twice in one table"),
        "{}",
        syntax.stderr
    );
}

#[test]
fn type_errors_speak_of_the_orchfile_not_of_serde() {
    let out = config_error(
        r#"[orch]
jobs = "4"

[phase.a]
run = "touch ran"
timeout = 5
needs = "b"
cache = "yes"
retry = { attempts = "3" }
outputs = [3]

[phase.b]
run = "touch ran"
retry = { backoff = "1s" }
"#,
    );
    errors_start_alike(&out.stderr);
    for e in [
        "error[orchfile::type]: `jobs` in `[orch]` must be a whole number, not the string \"4\"",
        "error[orchfile::type]: `timeout` in phase `a` must be a duration in quotes like `\"30s\"`, `\"10m\"` or `\"1h\"`, not the number 5",
        "error[orchfile::type]: `needs` in phase `a` must be a list of phase names like `[\"a\", \"b\"]`, not the string \"b\"",
        "error[orchfile::type]: `cache` in phase `a` must be `true` or `false`, not the string \"yes\"",
        "error[orchfile::type]: `retry.attempts` in phase `a` must be a whole number, not the string \"3\"",
        "error[orchfile::type]: an entry of `outputs` in phase `a` must be a path string or a table",
        "error[orchfile::type]: `retry` in phase `b` needs `attempts`",
        "Orchfile.toml:6:11",
    ] {
        assert!(out.stderr.contains(e), "missing {e:?} in:\n{}", out.stderr);
    }
    for serde in [
        "invalid type",
        "expected i64",
        "missing field",
        "expected a string",
    ] {
        assert!(!out.stderr.contains(serde), "{serde:?} in:\n{}", out.stderr);
    }
}

#[test]
fn a_repeated_dependency_input_or_output_is_reported_at_the_repeat() {
    let out = config_error(
        r#"[phase.a]
run = "touch ran; touch {outputs}"
outputs = ["out/a.txt"]

[phase.b]
run = "touch ran; cat {inputs} > {outputs}"
needs = ["a", "a"]
after = ["c", "c"]
inputs = ["in.txt", "in.txt"]
outputs = ["out/b.txt", "out/b.txt"]

[phase.c]
run = "touch ran"
"#,
    );
    errors_start_alike(&out.stderr);
    for (e, at) in [
        ("phase `b` lists `a` twice in `needs`", "Orchfile.toml:7:15"),
        ("phase `b` lists `c` twice in `after`", "Orchfile.toml:8:15"),
        (
            "phase `b` lists `in.txt` twice in `inputs`",
            "Orchfile.toml:9:21",
        ),
        (
            "phase `b` lists `out/b.txt` twice in `outputs`",
            "Orchfile.toml:10:25",
        ),
    ] {
        assert!(out.stderr.contains(e), "missing {e:?} in:\n{}", out.stderr);
        assert!(
            out.stderr.contains(at),
            "missing {at:?} in:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr
            .contains("help: remove the second `a` from `needs`")
    );
    assert!(
        out.stderr
            .contains("error: 4 configuration errors; nothing was run"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_typo_in_one_key_adds_no_errors_about_keys_that_are_right() {
    let out = config_error(
        r#"[vars]
lang = 5

[phase.a]
run = "touch ran; echo a > {output}"
outputs = ["out/a.txt"]
timout = 5

[phase.b]
run = "touch ran; cat {needs.a.outputs} > {output} # {vars.lang}"
needs = ["a"]
after = ["a2"]
outputs = ["out/b.txt"]

[phase.a2]
run = "touch ran"
outputs = "out/a2.txt"

[phase.c]
run = "touch ran; cat {needs.a2.outputs}"
needs = ["a2"]
matrix = { l = "{vars.lang}" }
"#,
    );
    errors_start_alike(&out.stderr);
    assert!(
        out.stderr.contains("unknown key `timout`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("`lang` in variable"), "{}", out.stderr);
    assert!(
        out.stderr.contains("`outputs` in phase `a2`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("error: 3 configuration errors; nothing was run"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_bad_setting_keeps_the_other_settings_of_its_table() {
    let out = Test::new()
        .orchfile(
            "[orch]\njobs = \"4\"\njbos = 2\ninclude = [\"p/*.toml\"]\n\n[phase.a]\nrun = \"touch ran\"\nneeds = [\"b\"]\n",
        )
        .write("p/b.toml", "[phase.b]\nrun = \"touch ran\"\n")
        .expect_status(2)
        .stderr_contains("`jobs` in `[orch]` must be a whole number")
        .stderr_contains("unknown key `jbos` in `[orch]`")
        .stderr_contains("error: 2 configuration errors; nothing was run")
        // `include` still applies: `b` is declared.
        .stderr_lacks("which is not a phase")
        .run();
    assert!(!out.exists("ran"));
}
