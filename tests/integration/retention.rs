//! Run retention: a build keeps the events and logs of the newest `[orch] keep_runs`
//! runs (default 100), removes older ones with their records, and never touches what
//! orch did not make.

use std::os::unix::fs::symlink;

use crate::test::*;

/// One phase that runs when `raw/x.txt` changes.
fn orchfile(keep_runs: Option<u32>) -> String {
    let keep = keep_runs
        .map(|n| format!("keep_runs = {n}\n"))
        .unwrap_or_default();
    format!(
        r#"[orch]
format = 1
{keep}
[phase.copy]
run = "cat {{inputs}} > {{output}}"
inputs = ["raw/x.txt"]
outputs = ["out/x.txt"]
"#
    )
}

fn project(keep_runs: Option<u32>) -> Test {
    Test::new()
        .orchfile(&orchfile(keep_runs))
        .write("raw/x.txt", "x\n")
}

/// The run ids `orch runs` lists.
fn listed_runs(out: &Output) -> Vec<String> {
    let runs = out.again().args(["runs"]).run();
    runs.stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn builds_keep_the_newest_runs() {
    let mut out = project(Some(3)).run();
    assert_eq!(
        out.list(".orch/logs").len(),
        1,
        "the first build ran `copy`"
    );
    let mut newest = Vec::new();
    for n in 1..105 {
        // Every 20th build has work to do, so some runs have logs.
        if n % 20 == 0 {
            out.write("raw/x.txt", &format!("{n}\n"));
        }
        out = out.again().run();
        newest.push(out.list(".orch/runs"));
    }
    let runs = out.list(".orch/runs");
    assert_eq!(runs.len(), 3, "{runs:?}");
    // The three kept are the three newest, and their records are all `orch runs` shows.
    let ids = out.run_ids();
    assert_eq!(sorted(listed_runs(&out)), sorted(ids.clone()));
    let last = out.latest_events();
    assert_eq!(last[0]["run_id"], ids[2].as_str());
    // Logs of trimmed runs are gone too: only the kept runs may have them.
    for log in out.list(".orch/logs") {
        assert!(runs.contains(&log), "{log} outlived its run: {runs:?}");
    }
    // Never more than keep_runs after any build.
    assert!(newest.iter().all(|r| r.len() <= 3), "{newest:?}");
}

#[test]
fn what_orch_did_not_make_is_left_alone() {
    let out = project(Some(1)).run();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep.txt"), "mine").unwrap();
    // A foreign directory, and symlinks named like old runs (so they sort oldest).
    out.write(".orch/runs/notes/readme.txt", "mine");
    out.write(
        ".orch/runs/20000101T000000Z-0000000a.txt",
        "a file, not a run",
    );
    let old = "20000101T000000Z-00000000";
    symlink(outside.path(), out.join(&format!(".orch/runs/{old}"))).unwrap();
    symlink(outside.path(), out.join(&format!(".orch/logs/{old}"))).unwrap();
    let out = out.again().run();
    let out = out.again().args(["build", "--run-id", "named"]).run();
    let out = out.again().run();

    let runs = out.list(".orch/runs");
    assert!(runs.contains(&"notes".to_owned()), "{runs:?}");
    assert_eq!(out.read(".orch/runs/notes/readme.txt"), "mine");
    assert!(out.exists(".orch/runs/20000101T000000Z-0000000a.txt"));
    assert!(out.join(&format!(".orch/runs/{old}")).is_symlink());
    assert!(out.join(&format!(".orch/logs/{old}")).is_symlink());
    assert_eq!(
        std::fs::read_to_string(outside.path().join("keep.txt")).unwrap(),
        "mine"
    );
    // A name given with --run-id does not sort by time: retention leaves it to `orch gc`.
    assert!(runs.contains(&"named".to_owned()), "{runs:?}");
    let generated: Vec<&String> = runs
        .iter()
        .filter(|r| r.starts_with("20") && !r.starts_with("2000"))
        .collect();
    assert_eq!(generated.len(), 1, "{runs:?}");
}

#[test]
fn the_default_keeps_one_hundred_runs() {
    let out = project(None).run();
    // 100 older runs, as earlier builds would have left them (with records for some).
    for n in 0..100 {
        let id = format!("2020010{}T0000{:02}Z-0000abcd", 1 + n / 60, n % 60);
        out.write(&format!(".orch/runs/{id}/events.jsonl"), "");
    }
    out.write(".orch/logs/20200101T000000Z-0000abcd/copy.log", "old\n");
    let out = out.again().run();
    let runs = out.list(".orch/runs");
    assert_eq!(runs.len(), 100, "{runs:?}");
    // Two builds and 100 older runs: the two oldest went, with their logs.
    assert!(!out.exists(".orch/runs/20200101T000000Z-0000abcd"));
    assert!(!out.exists(".orch/logs/20200101T000000Z-0000abcd"));
    assert!(!out.exists(".orch/runs/20200101T000001Z-0000abcd"));
    assert!(out.exists(".orch/runs/20200101T000002Z-0000abcd"));
}

#[test]
fn keep_runs_must_be_at_least_one() {
    let out = Test::new()
        .orchfile(&orchfile(Some(0)))
        .write("raw/x.txt", "x\n")
        .expect_status(2)
        .stderr_contains("`keep_runs` must be at least 1")
        .run();
    assert!(!out.exists(".orch/runs"));
}
