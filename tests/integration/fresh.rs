//! `.orch/fresh.bin`: a no-op build vouched for by stats alone. Each change that must
//! make the next build plan again does, and then that build does what a build without
//! the record would; the shortcut writes the same records as the ordinary no-op.
//!
//! The record is written only once every stat it holds is older than the racy window,
//! so each test first builds until it exists (a condition, not a fixed sleep).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::test::*;

const ORCHFILE: &str = r#"[orch]
format = 1
env = ["FRESH_VAR"]
include = ["pipelines/*.toml"]

[phase.cat]
run = "cat src/*.txt > out/all.txt"
inputs = ["src/*.txt"]
outputs = ["out/all.txt"]

[phase.dep]
run = "cat inc/h.txt > {output} && echo 'out/dep.txt: inc/h.txt' > {depfile}"
outputs = ["out/dep.txt"]
depfile = "out/dep.d"

[phase.last]
needs = ["cat"]
run = "cp out/all.txt out/last.txt"
outputs = ["out/last.txt"]
"#;

const FRAGMENT: &str = r#"[phase.extra]
run = "cp data/plain.txt {output}"
inputs = ["data/plain.txt"]
outputs = ["out/extra.txt"]
"#;

/// The project of these tests, not built yet.
fn project() -> Test {
    Test::new()
        .orchfile(ORCHFILE)
        .write("pipelines/extra.toml", FRAGMENT)
        .write("src/a.txt", "aaaa\n")
        .write("src/b.txt", "bbbb\n")
        .write("inc/h.txt", "header\n")
        .write("data/plain.txt", "plain\n")
        .env_remove("FRESH_VAR")
}

/// A built project whose next no-op build takes the shortcut.
fn settled() -> Output {
    let out = project().run();
    settle(&out);
    out
}

/// Builds until `.orch/fresh.bin` exists (every stat older than the racy window).
fn settle(out: &Output) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.exists(".orch/fresh.bin") {
        assert!(Instant::now() < deadline, "no .orch/fresh.bin after 30 s");
        std::thread::sleep(Duration::from_millis(200));
        out.again()
            .env_remove("FRESH_VAR")
            .stdout_contains("nothing to do")
            .run();
    }
}

/// A build with stage timings on, which name the `fresh` stage only on the shortcut.
fn build(out: &Output, run_id: &str) -> Test {
    build_with(out, run_id, &[])
}

/// [`build`] with more arguments.
fn build_with(out: &Output, run_id: &str, more: &[&str]) -> Test {
    let mut args = vec!["build", "--run-id", run_id];
    args.extend(more);
    out.again()
        .args(args)
        .env("ORCH_TIMINGS", "1")
        .env_remove("FRESH_VAR")
}

/// The next build plans (no shortcut) and runs exactly `expected` (without the cache,
/// which would restore rather than run).
fn replans_and_runs(out: &Output, run_id: &str, expected: &[&str]) -> Output {
    let next = build_with(out, run_id, &["--no-cache"])
        .stderr_lacks("orch timings: fresh")
        .run();
    let mut ran = ran(&next.events(run_id));
    ran.sort();
    assert_eq!(ran, expected, "{}", next.stderr);
    next
}

/// The next build takes the shortcut.
fn shortcut(out: &Output, run_id: &str) -> Output {
    build(out, run_id)
        .stderr_contains("orch timings: fresh")
        .stdout_contains("nothing to do (4 up to date)")
        .run()
}

#[test]
fn an_unchanged_project_takes_the_shortcut_and_records_the_same_run() {
    let out = settled();
    // The ordinary no-op, for comparison: without the record it plans (and writes the
    // record again).
    std::fs::remove_file(out.join(".orch/fresh.bin")).unwrap();
    let slow = build_with(&out, "slow", &["--json"])
        .stderr_lacks("orch timings: fresh")
        .run();
    settle(&out);
    let fast = build_with(&out, "fast", &["--json"])
        .stderr_contains("orch timings: fresh")
        .run();
    let strip = |events: Vec<Value>| -> Vec<Value> {
        events
            .into_iter()
            .map(|mut e| {
                for k in ["ts", "run_id", "duration_ms"] {
                    e.as_object_mut().unwrap().remove(k);
                }
                e
            })
            .collect()
    };
    assert_eq!(strip(out.events("slow")), strip(out.events("fast")));
    assert_eq!(
        strip(parse_events(&slow.stdout)),
        strip(parse_events(&fast.stdout))
    );
    let summary = |id: &str| -> Value {
        let mut s: Value =
            serde_json::from_str(&out.read(&format!(".orch/runs/{id}/summary.json"))).unwrap();
        for k in ["run_id", "started", "finished", "duration_ms"] {
            s.as_object_mut().unwrap().remove(k);
        }
        s
    };
    assert_eq!(summary("slow"), summary("fast"));
    let runs = out.again().args(["runs", "--json"]).run().json();
    let row = |id: &str| -> Value {
        let mut r = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["run_id"] == id)
            .unwrap_or_else(|| panic!("no run {id} in {runs:#}"))
            .clone();
        for k in [
            "run_id",
            "started_at",
            "finished_at",
            "duration_ms",
            "started_at_ns",
            "finished_at_ns",
        ] {
            r.as_object_mut().unwrap().remove(k);
        }
        r
    };
    assert_eq!(row("slow"), row("fast"));
    // `--keep-going` has its own plan digest, as in a planned build.
    let plain = out.events("fast")[0]["plan_digest"].clone();
    build_with(&out, "kg", &["-k"])
        .stderr_contains("orch timings: fresh")
        .run();
    assert_ne!(out.events("kg")[0]["plan_digest"], plain);
}

#[test]
fn an_input_rewritten_with_its_size_and_mtime_put_back_replans() {
    let out = settled();
    let mtime = out.mtime("src/a.txt");
    out.write("src/a.txt", "AAAA\n");
    out.set_mtime("src/a.txt", mtime);
    replans_and_runs(&out, "r", &["cat", "last"]);
}

#[test]
fn a_file_added_to_or_removed_from_a_glob_directory_replans() {
    let out = settled();
    out.write("src/c.txt", "cccc\n");
    replans_and_runs(&out, "added", &["cat", "last"]);
    settle(&out);
    out.remove("src/b.txt");
    replans_and_runs(&out, "removed", &["cat", "last"]);
}

#[test]
fn an_output_deleted_or_edited_replans() {
    let out = settled();
    out.remove("out/last.txt");
    replans_and_runs(&out, "deleted", &["last"]);
    settle(&out);
    out.write("out/extra.txt", "edited\n");
    replans_and_runs(&out, "edited", &["extra"]);
}

#[test]
fn a_discovered_header_edited_replans() {
    let out = settled();
    let mtime = out.mtime("inc/h.txt");
    out.write("inc/h.txt", "HEADER\n");
    out.set_mtime("inc/h.txt", mtime);
    replans_and_runs(&out, "r", &["dep"]);
}

#[test]
fn the_orchfile_or_a_fragment_edited_replans() {
    let out = settled();
    out.write(
        "Orchfile.toml",
        &ORCHFILE.replace("cp out/all.txt", "cp  out/all.txt"),
    );
    replans_and_runs(&out, "orchfile", &["last"]);
    settle(&out);
    out.write(
        "pipelines/extra.toml",
        &FRAGMENT.replace("cp data", "cp  data"),
    );
    replans_and_runs(&out, "fragment", &["extra"]);
    settle(&out);
    // A new fragment the include pattern now matches.
    out.write(
        "pipelines/more.toml",
        "[phase.more]\nrun = \"echo more > {output}\"\noutputs = [\"out/more.txt\"]\n",
    );
    replans_and_runs(&out, "new-fragment", &["more"]);
}

#[test]
fn an_inherited_variable_changed_replans() {
    let out = settled();
    let next = out
        .again()
        .args(["build", "--run-id", "r", "--no-cache"])
        .env("ORCH_TIMINGS", "1")
        .env("FRESH_VAR", "set now")
        .stderr_lacks("orch timings: fresh")
        .run();
    let mut ran = ran(&next.events("r"));
    ran.sort();
    assert_eq!(ran, ["cat", "dep", "extra", "last"]);
}

#[test]
fn the_value_key_removed_replans() {
    let out = settled();
    out.remove(".orch/key");
    // An unset variable compares as unset whatever the key: nothing is stale.
    replans_and_runs(&out, "unset", &[]);
    // With a value, a new key makes it read as changed.
    let set = |id: &str| {
        out.again()
            .args(["build", "--run-id", id, "--no-cache"])
            .env("ORCH_TIMINGS", "1")
            .env("FRESH_VAR", "v")
            .stderr_lacks("orch timings: fresh")
            .run()
    };
    set("set");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.exists(".orch/fresh.bin") {
        assert!(Instant::now() < deadline, "no .orch/fresh.bin after 30 s");
        std::thread::sleep(Duration::from_millis(200));
        out.again().env("FRESH_VAR", "v").run();
    }
    out.remove(".orch/key");
    let mut ran = ran(&set("new-key").events("new-key"));
    ran.sort();
    assert_eq!(ran, ["cat", "dep", "extra", "last"]);
}

#[test]
fn clean_then_build_replans() {
    let out = settled();
    out.again().args(["clean"]).run();
    assert!(!out.exists(".orch/fresh.bin"));
    replans_and_runs(&out, "r", &["cat", "dep", "extra", "last"]);
}

#[test]
fn a_failing_build_after_a_good_one_replans() {
    let out = settled();
    // Fails without touching any file the record lists: only its result changes.
    out.again()
        .args(["build", "--force", "extra"])
        .env("PATH", "/nonexistent")
        .expect_status(1)
        .run();
    replans_and_runs(&out, "r", &["extra"]);
}

#[test]
fn a_result_changed_by_another_writer_replans() {
    let out = settled();
    {
        let db = rusqlite::Connection::open(out.join(".orch/state.db")).unwrap();
        db.execute(
            "UPDATE instances SET last_status = 'failed' WHERE name = 'dep'",
            [],
        )
        .unwrap();
    }
    assert!(out.exists(".orch/fresh.bin"));
    replans_and_runs(&out, "r", &["dep"]);
}

#[test]
fn a_state_database_of_the_previous_schema_replans() {
    let out = settled();
    {
        let db = rusqlite::Connection::open(out.join(".orch/state.db")).unwrap();
        db.execute_batch(
            "DROP TRIGGER instances_inserted; DROP TRIGGER instances_updated;
             DROP TRIGGER instances_deleted; DROP TRIGGER shard_results_inserted;
             DROP TRIGGER shard_results_updated; DROP TRIGGER shard_results_deleted;
             DROP TABLE generation;
             UPDATE instances SET last_status = 'failed' WHERE name = 'extra';
             PRAGMA user_version = 6;",
        )
        .unwrap();
    }
    replans_and_runs(&out, "r", &["extra"]);
    settle(&out);
    shortcut(&out, "again");
}

#[test]
fn a_damaged_or_foreign_record_only_means_planning() {
    let out = settled();
    let good = std::fs::read(out.join(".orch/fresh.bin")).unwrap();
    let damaged: Vec<Vec<u8>> = vec![
        good[..good.len() / 2].to_vec(),
        Vec::new(),
        good.iter()
            .enumerate()
            .map(|(i, b)| if i == good.len() / 3 { b ^ 1 } else { *b })
            .collect(),
        vec![0xff; 4096],
    ];
    for (n, bytes) in damaged.into_iter().enumerate() {
        std::fs::write(out.join(".orch/fresh.bin"), bytes).unwrap();
        build(&out, &format!("damaged-{n}"))
            .stderr_lacks("orch timings: fresh")
            .stdout_contains("nothing to do (4 up to date)")
            .run();
    }
    // Another project's record, with an edit here it knows nothing of.
    let other = settled();
    settle(&out);
    out.write("src/a.txt", "changed\n");
    std::fs::copy(other.join(".orch/fresh.bin"), out.join(".orch/fresh.bin")).unwrap();
    replans_and_runs(&out, "foreign", &["cat", "last"]);
}

#[test]
fn a_directory_above_an_input_swapped_for_a_symlink_outside_replans() {
    let out = settled();
    let outside = tempfile::tempdir().unwrap();
    // Moved, not copied: the file keeps its inode and stat, only the path changed.
    std::fs::rename(out.join("data"), outside.path().join("data")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("data"), out.join("data")).unwrap();
    let done = build(&out, "r").command().output().unwrap();
    let shortcut_taken = String::from_utf8_lossy(&done.stderr).contains("orch timings: fresh");
    assert!(
        !shortcut_taken,
        "a symlink out of the root passed as unchanged"
    );
}

#[test]
fn plan_and_status_neither_use_nor_remove_the_record() {
    let out = settled();
    out.again().args(["plan"]).run();
    out.again().args(["status"]).run();
    out.again().args(["build", "--dry-run"]).run();
    assert!(out.exists(".orch/fresh.bin"));
    shortcut(&out, "r");
}

#[test]
fn a_directory_output_gets_no_record() {
    // A tree's digest is not vouched for by the directory's own stat.
    let out = Test::new()
        .orchfile(
            "[orch]\nformat = 1\n\n[phase.tree]\nrun = \"mkdir -p gen && echo x > gen/x.txt\"\noutputs = [\"gen/\"]\n",
        )
        .run();
    // Past the racy window, when any other project would have its record: a negative
    // has no condition to wait on but time.
    let mut tries = 0;
    while tries < 3 {
        std::thread::sleep(Duration::from_millis(1100));
        out.again().stdout_contains("nothing to do").run();
        tries += 1;
    }
    assert!(!out.exists(".orch/fresh.bin"));
    out.write("gen/x.txt", "edited\n");
    let next = out
        .again()
        .args(["build", "--run-id", "r", "--no-cache"])
        .run();
    assert_eq!(ran(&next.events("r")), ["tree"]);
}

#[test]
fn the_first_build_remembers_the_project_for_the_next() {
    let out = project().run();
    // Before any `.orch/` existed: the next build must not parse the Orchfile again.
    assert!(out.exists(".orch/project.cache"));
    // A dry run remembers nothing, not even the folder.
    let dry = Test::new()
        .orchfile(ORCHFILE)
        .write("pipelines/extra.toml", FRAGMENT)
        .args(["build", "--dry-run"])
        .run();
    assert!(!dry.exists(".orch/project.cache"));
}
