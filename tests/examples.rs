//! Every example project and every pipeline fragment is a real, working Orchfile: each
//! example is checked, built in a temporary copy, and rebuilt as a no-op; the project's
//! own Orchfile (with `pipelines/*.toml`) is checked.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn orch(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run orch")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".orch" || name == "build" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Orchfile.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_example_builds_then_is_a_no_op() {
    let dirs = examples();
    assert!(!dirs.is_empty(), "no examples found");
    for dir in dirs {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&dir, tmp.path());
        let check = orch(tmp.path(), &["check"]);
        assert!(
            check.status.success(),
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&check.stderr)
        );
        let first = orch(tmp.path(), &["build", "-j", "2"]);
        assert!(
            first.status.success(),
            "{}: build failed:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&first.stdout),
            String::from_utf8_lossy(&first.stderr)
        );
        let second = orch(tmp.path(), &["build"]);
        let out = String::from_utf8_lossy(&second.stdout);
        assert!(second.status.success());
        assert!(
            out.contains("nothing to do"),
            "{}: second build was not a no-op:\n{out}",
            dir.display()
        );
    }
}

#[test]
fn wordcount_report_is_right() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/wordcount"),
        tmp.path(),
    );
    assert!(orch(tmp.path(), &["build"]).status.success());
    let report = std::fs::read_to_string(tmp.path().join("build/report.md")).unwrap();
    assert!(report.starts_with("# Most frequent words\n"), "{report}");
    assert!(report.contains("      9 the\n"), "{report}");
    assert!(report.contains("9 fishermen\n"), "{report}");
}

#[test]
fn the_project_pipeline_and_its_fragments_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = orch(root, &["check"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let fragments = std::fs::read_dir(root.join("pipelines")).unwrap().count();
    assert!(
        stdout.contains(&format!("{fragments} included file")),
        "{stdout}"
    );
}
