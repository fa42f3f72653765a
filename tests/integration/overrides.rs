//! `--set NAME=VALUE` overriding `[vars]` for one command, and `ORCH_JOBS` as the default
//! of `-j`. A `--set` build is never skipped by what orch remembers of the Orchfile's own
//! project (`.orch/project.cache`, `.orch/fresh.bin`), and never leaves a record that
//! makes a later build without it wrongly up to date.

use std::time::{Duration, Instant, SystemTime};

use crate::test::*;

const ORCHFILE: &str = r#"[vars]
lang = "fr"
langs = ["a", "b"]

[phase.hello]
run = "echo {vars.lang} > {output}"
outputs = ["out/hello.txt"]

[phase.per]
matrix = { l = "{vars.langs}" }
run = "echo {matrix.l} > {output}"
outputs = ["out/{matrix.l}.txt"]
"#;

fn project() -> Test {
    Test::new().orchfile(ORCHFILE).env_remove("ORCH_JOBS")
}

#[test]
fn set_overrides_a_variable_for_one_build_and_enters_its_key() {
    let out = project().run();
    assert_eq!(out.read("out/hello.txt"), "fr\n");
    // The first build remembered the project: the override must not be read from it.
    assert!(out.exists(".orch/project.cache"));
    out.again()
        .args(["build", "--set", "lang=de"])
        .stdout_contains("hello")
        .run();
    assert_eq!(out.read("out/hello.txt"), "de\n");
    // Nor may the override be remembered: without it, the Orchfile's value is back.
    out.again()
        .args(["status"])
        .stdout_contains("hello     stale: command_changed")
        .run();
    out.again().run();
    assert_eq!(out.read("out/hello.txt"), "fr\n");
    out.again()
        .args(["build", "--set", "lang=de"])
        .stdout_contains("restored from the local cache")
        .run();
    assert_eq!(out.read("out/hello.txt"), "de\n");
}

#[test]
fn the_last_set_wins_and_list_variables_take_commas() {
    let out = project().run();
    out.again()
        .args(["build", "--set", "lang=it", "--set", "lang=es"])
        .run();
    assert_eq!(out.read("out/hello.txt"), "es\n");
    out.again()
        .args(["plan", "--set", "langs=a, b,c"])
        .stdout_contains("per[l=c]")
        .stdout_lacks("per[l=a]")
        .run();
    out.again().args(["build", "--set", "langs=c"]).run();
    assert_eq!(out.read("out/c.txt"), "c\n");
}

#[test]
fn an_undeclared_name_is_an_error_naming_the_variables() {
    let out = project()
        .args(["build", "--set", "lnag=de"])
        .expect_status(2)
        .stderr_contains(
            "error[cli::unknown_variable]: `--set lnag=de` names `lnag`, which is not declared in `[vars]`",
        )
        .stderr_contains("did you mean `lang`? declared variables: `lang`, `langs`")
        .run();
    assert!(!out.exists("out/hello.txt"), "nothing ran");
    Test::new()
        .orchfile("[phase.a]\nrun = \"true\"\n")
        .args(["plan", "--set", "x=1"])
        .expect_status(2)
        .stderr_contains("the Orchfile declares no variables")
        .run();
}

/// Builds (without `--set`) until `.orch/fresh.bin` vouches for the next no-op.
fn settle(out: &Output) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.exists(".orch/fresh.bin") {
        assert!(Instant::now() < deadline, "no .orch/fresh.bin after 30 s");
        std::thread::sleep(Duration::from_millis(200));
        out.again().stdout_contains("nothing to do").run();
    }
}

#[test]
fn a_set_build_is_not_vouched_for_by_the_no_op_record() {
    let out = project().run();
    settle(&out);
    let next = out
        .again()
        .args(["build", "--run-id", "set", "--set", "lang=de"])
        .run();
    assert_eq!(ran(&out.events("set")), ["hello"], "{}", next.stdout);
    assert_eq!(out.read("out/hello.txt"), "de\n");
}

#[test]
fn a_set_no_op_leaves_no_record_for_builds_without_it() {
    let out = project().args(["build", "--set", "lang=de"]).run();
    assert_eq!(out.read("out/hello.txt"), "de\n");
    // No-op builds with the override, until every file is older than the racy window
    // that keeps a record from being written: only then could one be.
    let newest = |out: &Output| {
        ["out/hello.txt", "out/a.txt", "out/b.txt", "Orchfile.toml"]
            .iter()
            .map(|f| std::fs::metadata(out.join(f)).unwrap().modified().unwrap())
            .max()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        out.again()
            .args(["build", "--set", "lang=de"])
            .stdout_contains("nothing to do")
            .run();
        assert!(
            !out.exists(".orch/fresh.bin"),
            "a `--set` no-op wrote .orch/fresh.bin"
        );
        let age = SystemTime::now()
            .duration_since(newest(&out))
            .unwrap_or_default();
        if age > Duration::from_secs(3) {
            break;
        }
        assert!(Instant::now() < deadline, "files never aged");
        std::thread::sleep(Duration::from_millis(200));
    }
    out.again().args(["build", "--run-id", "plain"]).run();
    assert_eq!(out.read("out/hello.txt"), "fr\n");
}

#[test]
fn orch_jobs_is_the_default_of_j_and_the_orchfile_comes_after_it() {
    let with_jobs = ORCHFILE.replace("[vars]", "[orch]\njobs = 3\n\n[vars]");
    let out = Test::new()
        .orchfile(&with_jobs)
        .env("ORCH_JOBS", "2")
        .args(["build", "--run-id", "env"])
        .run();
    assert_eq!(out.events("env")[0]["jobs"], 2);
    out.again()
        .env("ORCH_JOBS", "2")
        .args(["build", "--run-id", "flag", "-j", "5"])
        .run();
    assert_eq!(out.events("flag")[0]["jobs"], 5);
    out.again()
        .env_remove("ORCH_JOBS")
        .args(["build", "--run-id", "file"])
        .run();
    assert_eq!(out.events("file")[0]["jobs"], 3);
    // `-j` wins even over an ORCH_JOBS that is not a number.
    out.again()
        .env("ORCH_JOBS", "many")
        .args(["build", "--run-id", "flag2", "-j", "1"])
        .run();
    assert_eq!(out.events("flag2")[0]["jobs"], 1);
}

#[test]
fn a_bad_orch_jobs_is_an_error_naming_it() {
    for (value, why) in [
        ("0", "0 jobs would run nothing"),
        ("lots", "not a whole number"),
    ] {
        project()
            .env("ORCH_JOBS", value)
            .expect_status(2)
            .stderr_contains(&format!(
                "error: the environment variable ORCH_JOBS is `{value}`, not a number of jobs"
            ))
            .stderr_contains(why)
            .stderr_contains("help: set ORCH_JOBS to a whole number")
            .run();
    }
    project()
        .env("ORCH_JOBS", "")
        .expect_status(2)
        .stderr_contains("error: the environment variable ORCH_JOBS is empty, not a number of jobs")
        .run();
    // On the command line the flag is named, as for any other flag.
    project()
        .args(["build", "-j", "0"])
        .expect_status(2)
        .stderr_contains("'--jobs <N>'")
        .stderr_lacks("ORCH_JOBS")
        .run();
}
