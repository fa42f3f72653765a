//! `orch init`: the files it writes, each named on stdout; `.orch/` ignored by git; the
//! `#:schema` line for editors; a warning inside another project; nothing overwritten.

use std::process::Command;

use crate::test::*;

#[test]
fn init_names_every_file_it_writes() {
    let out = Test::new()
        .args(["init"])
        .stdout_contains("created Orchfile.toml")
        .stdout_contains("created input.txt")
        .stdout_contains("created orchfile.schema.json")
        .stdout_contains("created .gitignore")
        .run();
    let mut files = out.list("");
    files.sort();
    assert_eq!(
        files,
        [
            ".gitignore",
            "Orchfile.toml",
            "input.txt",
            "orchfile.schema.json"
        ]
    );
    assert_eq!(out.read(".gitignore"), ".orch/\n");
    let orchfile = out.read("Orchfile.toml");
    assert_eq!(
        orchfile.lines().next(),
        Some("#:schema ./orchfile.schema.json")
    );
    // The schema beside the Orchfile is the one `orch schema` prints.
    let schema = out.again().args(["schema"]).run();
    assert_eq!(out.read("orchfile.schema.json"), schema.stdout);
    out.again().args(["check"]).stdout_contains("ok").run();
    // `orch clean` leaves the schema (it is not under `.orch/`).
    out.again().run();
    out.again().args(["clean"]).run();
    assert!(out.exists("orchfile.schema.json"));
}

#[test]
fn init_appends_to_gitignore_once_and_keeps_existing_files() {
    let out = Test::new()
        .write(".gitignore", "target")
        .write("input.txt", "mine\n")
        .args(["init"])
        .stdout_contains("added `.orch/` to .gitignore")
        .stdout_contains("kept input.txt")
        .stdout_lacks("created input.txt")
        .run();
    assert_eq!(out.read(".gitignore"), "target\n.orch/\n");
    assert_eq!(out.read("input.txt"), "mine\n");

    let out = Test::new()
        .write(".gitignore", "/.orch\n")
        .args(["init"])
        .stdout_lacks(".gitignore")
        .run();
    assert_eq!(out.read(".gitignore"), "/.orch\n");
}

#[test]
fn init_never_overwrites_an_orchfile() {
    let out = Test::new()
        .orchfile("[phase.a]\nrun = \"true\"\n")
        .args(["init"])
        .expect_status(2)
        .stderr_contains("error: `")
        .stderr_contains("Orchfile.toml` already exists; orch init never overwrites it")
        .run();
    assert_eq!(out.read("Orchfile.toml"), "[phase.a]\nrun = \"true\"\n");
    assert!(!out.exists(".gitignore"));
    assert!(!out.exists("input.txt"));
}

#[test]
fn init_inside_another_project_warns_and_still_creates() {
    let outer = Test::new()
        .orchfile("[phase.a]\nrun = \"true\"\n")
        .write("sub/keep.txt", "")
        .args(["check"])
        .run();
    let out = Command::new(ORCH)
        .arg("init")
        .current_dir(outer.join("sub"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run orch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let named = outer.join("Orchfile.toml");
    assert!(
        stderr.starts_with(&format!(
            "warning: `{}` already makes `{}` a project",
            named.display(),
            outer.path().display()
        )),
        "{stderr}"
    );
    assert!(outer.exists("sub/Orchfile.toml"));
    // A project of its own: check from there reads the new Orchfile.
    let check = Command::new(ORCH)
        .arg("check")
        .current_dir(outer.join("sub"))
        .output()
        .expect("run orch");
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("2 phases"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}
