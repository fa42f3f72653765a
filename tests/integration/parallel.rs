//! Parallelism and the build lock. Phases that must overlap wait for each other on a
//! condition (a bounded loop), so these tests never depend on timing for their result.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use crate::test::*;

/// Four independent phases; each marks itself started, then waits until all four have
/// (giving up after about `secs` seconds, with exit 1).
fn rendezvous(n: usize, secs: u32, jobs_line: &str) -> String {
    let wait = sh_wait_until(&format!("[ $(ls started | wc -l) -ge {n} ]"), secs);
    let mut s = format!("[orch]\nformat = 1\n{jobs_line}\n");
    for i in 1..=n {
        s.push_str(&format!(
            "\n[phase.p{i}]\nrun = \"mkdir -p started && touch started/$ORCH_INSTANCE && {wait} && echo ok > {{output}}\"\noutputs = [\"out/p{i}.txt\"]\n"
        ));
    }
    s
}

#[test]
fn four_jobs_run_four_phases_at_once() {
    let out = Test::new()
        .orchfile(&rendezvous(4, 20, ""))
        .args(["build", "-j", "4", "--run-id", "j4"])
        .run();
    assert_eq!(out.list("started"), names(&["p1", "p2", "p3", "p4"]));
    for i in 1..=4 {
        assert_eq!(out.read(&format!("out/p{i}.txt")), "ok\n");
    }
    // All four started before any finished.
    let events = out.events("j4");
    let first_done = of_type(&events, "instance_completed")[0]["seq"]
        .as_u64()
        .unwrap();
    assert!(
        of_type(&events, "instance_started")
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() < first_done)
    );
    assert_eq!(events[0]["jobs"], 4);
}

#[test]
fn jobs_setting_in_the_orchfile_is_the_default() {
    let out = Test::new()
        .orchfile(&rendezvous(3, 20, "jobs = 3"))
        .args(["build", "--run-id", "cfg"])
        .run();
    assert_eq!(out.events("cfg")[0]["jobs"], 3);
}

/// With one job the rendezvous can never happen: the first phase gives up (after a
/// short bound) and fails. Its result does not depend on timing.
#[test]
fn one_job_runs_one_phase_at_a_time() {
    let out = Test::new()
        .orchfile(&rendezvous(2, 1, "jobs = 4"))
        .args(["build", "-j", "1", "--run-id", "j1"])
        .expect_status(1)
        .stdout_contains("gave up waiting")
        .run();
    assert_eq!(out.list("started").len(), 1);
    assert_eq!(out.events("j1")[0]["jobs"], 1);
}

#[test]
fn a_second_build_waits_for_the_lock_then_finds_nothing_to_do() {
    let wait = sh_wait_until("[ -f release ]", 30);
    let t = Test::new()
        .orchfile(&format!(
            r#"
[orch]
format = 1

[phase.slow]
run = "echo run >> count.txt; touch started; {wait}; echo slow > {{output}}"
outputs = ["out/slow.txt"]
"#
        ))
        .args(["build", "--run-id", "holder"]);
    let project = t.project().clone();
    let first = t.spawn();
    wait_until("the first build to start", Duration::from_secs(20), || {
        project.exists("started")
    });

    let mut second = project.test().args(["build", "--run-id", "waiter"]).spawn();
    // Wait until the second build says it is waiting on the lock.
    let stderr = second.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains("waiting for another build") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the second build never said it was waiting for the lock");
    assert!(
        !project.exists(".orch/runs/waiter"),
        "the second build started a run while the first held the lock"
    );

    project.write("release", "");
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{first:?}");
    let second_out = second.wait_with_output().unwrap();
    let second_err = reader.join().unwrap();
    let stdout = String::from_utf8_lossy(&second_out.stdout);
    assert!(second_out.status.success(), "{stdout}\n{second_err}");
    assert!(second_err.contains("`.orch/lock`"), "{second_err}");
    assert!(stdout.contains("nothing to do (1 up to date)"), "{stdout}");
    assert_eq!(project.read("count.txt"), "run\n", "the phase ran twice");
    assert!(ran(&project.events("waiter")).is_empty());
}
