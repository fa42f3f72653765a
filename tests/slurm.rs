//! orch's Slurm client against a real one-node cluster on localhost (see `slurm/cluster.rs`):
//! submission, the states jobs end in, logs, cancellation, the shared-file-system check and
//! an unreachable controller.
//!
//! Slurm and munge come from `scripts/install-test-servers.sh`; when one of their programs
//! is missing the tests fail and say so. They run as root (slurmd must).

#[path = "slurm/cluster.rs"]
mod cluster;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use orch::exec::slurm::{
    CANNOT_SEE_PROJECT, Client, EndState, JobId, JobState, Resources, SlurmError, Submission,
};

/// Longer than any job here should take to end on an idle node; only reached on a bug.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// A submission of `command` in `dir`, logging to `dir/job.log`.
fn job(dir: &Path, command: &str) -> Submission {
    Submission {
        name: "orch-test".into(),
        command: command.into(),
        cwd: dir.to_owned(),
        env: Vec::new(),
        log: dir.join("job.log"),
        partition: None,
        args: Vec::new(),
        resources: Resources::default(),
        marker: None,
    }
}

/// Polls until `until` holds for the job's state, and returns that state.
fn wait_for(client: &Client, id: JobId, until: impl Fn(&JobState) -> bool) -> JobState {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let states = client.poll(&[id]).expect("polling");
        let state = states[&id].clone();
        if until(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {state} after {JOB_TIMEOUT:?}:\n{}",
            cluster::shared().logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_final(client: &Client, id: JobId) -> JobState {
    wait_for(client, id, JobState::is_final)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn a_job_completes_and_its_output_lands_in_the_log() {
    let client = cluster::shared().client();
    let dir = tempfile::tempdir().unwrap();
    let id = client
        .submit(&job(dir.path(), "echo out; echo err >&2; pwd > where"))
        .unwrap();
    assert_eq!(wait_final(&client, id), JobState::Completed);
    assert_eq!(read(&dir.path().join("job.log")), "out\nerr\n");
    // It ran in the submission's directory.
    assert_eq!(
        Path::new(read(&dir.path().join("where")).trim()),
        dir.path().canonicalize().unwrap()
    );
}

#[test]
fn a_retry_appends_to_the_log() {
    let client = cluster::shared().client();
    let dir = tempfile::tempdir().unwrap();
    for attempt in ["first", "second"] {
        let id = client
            .submit(&job(dir.path(), &format!("echo {attempt}")))
            .unwrap();
        assert_eq!(wait_final(&client, id), JobState::Completed);
    }
    assert_eq!(read(&dir.path().join("job.log")), "first\nsecond\n");
}

#[test]
fn the_exit_code_decides() {
    let client = cluster::shared().client();
    let dir = tempfile::tempdir().unwrap();
    let id = client.submit(&job(dir.path(), "exit 3")).unwrap();
    let state = wait_final(&client, id);
    assert_eq!(
        state,
        JobState::Failed {
            state: EndState::Failed,
            exit_code: Some(3),
            signal: None,
            reason: "NonZeroExitCode".into(),
        }
    );
    assert!(!state.cannot_see_project());
}

#[test]
fn a_job_killed_by_a_signal_fails_with_it() {
    let client = cluster::shared().client();
    let dir = tempfile::tempdir().unwrap();
    let id = client.submit(&job(dir.path(), "kill -KILL $$")).unwrap();
    match wait_final(&client, id) {
        JobState::Failed {
            state: EndState::Failed,
            exit_code: None,
            signal: Some(9),
            ..
        } => {}
        other => panic!("expected FAILED by signal 9, got {other:?}"),
    }
}

#[test]
fn a_cancelled_job_ends_cancelled_and_leaves_the_queue() {
    let shared = cluster::shared();
    let client = shared.client();
    let dir = tempfile::tempdir().unwrap();
    let id = client
        .submit(&job(dir.path(), "touch started; exec sleep 300"))
        .unwrap();
    // Cancel it once it really runs, so the signal path is the one taken.
    let state = wait_for(&client, id, |s| {
        s.is_final() || dir.path().join("started").exists()
    });
    assert!(!state.is_final(), "{state:?}");
    client.cancel(&[id]).unwrap();
    match wait_final(&client, id) {
        JobState::Failed {
            state: EndState::Cancelled,
            ..
        } => {}
        other => panic!("expected CANCELLED, got {other:?}"),
    }
    // squeue's default states (pending, running, completing) no longer list it.
    let output = shared
        .command("squeue")
        .args(["--noheader", "--format=%i %T", &format!("--jobs={id}")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    // Cancelling what has ended, or was never known, is not an error.
    client.cancel(&[id, JobId(999_999_999)]).unwrap();
}

#[test]
#[ignore = "takes 60 to 90 s: Slurm's time limits are whole minutes, checked every 30 s"]
fn a_job_past_its_time_limit_times_out() {
    let client = cluster::shared().client();
    let dir = tempfile::tempdir().unwrap();
    let mut s = job(dir.path(), "exec sleep 300");
    s.resources.time_minutes = Some(1);
    let id = client.submit(&s).unwrap();
    match wait_final(&client, id) {
        JobState::Failed {
            state: EndState::Timeout,
            reason,
            ..
        } => assert_eq!(reason, "TimeLimit"),
        other => panic!("expected TIMEOUT, got {other:?}"),
    }
}

#[test]
fn a_job_that_cannot_see_the_project_says_so() {
    let client = cluster::shared().client();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    std::fs::write(&marker, "written by another build\n").unwrap();
    let mut s = job(dir.path(), "touch ran");
    s.marker = Some((marker.clone(), "token-1".into()));
    let id = client.submit(&s).unwrap();
    let state = wait_final(&client, id);
    assert!(state.cannot_see_project(), "{state:?}");
    assert!(
        matches!(state, JobState::Failed { exit_code: Some(code), .. } if code == CANNOT_SEE_PROJECT)
    );
    let log = read(&dir.path().join("job.log"));
    assert!(
        log.contains(&format!(
            "this job cannot see the project at {}",
            dir.path().display()
        )) && log.contains("shared file system"),
        "{log}"
    );
    assert!(!dir.path().join("ran").exists());

    // The right token: the command runs.
    std::fs::write(&marker, "token-1\n").unwrap();
    let id = client.submit(&s).unwrap();
    assert_eq!(wait_final(&client, id), JobState::Completed);
    assert!(dir.path().join("ran").exists());
}

#[test]
fn environment_values_arrive_intact() {
    let client = cluster::shared().client();
    let dir = tempfile::tempdir().unwrap();
    let values = [
        ("QUOTES", "it's \"quoted\" and 'single'"),
        ("NEWLINES", "one\ntwo\n\nthree\n"),
        ("DOLLARS", "$HOME ${PATH} $(false) `false` \\n \\"),
        ("COMMAS", "a,b,c=d,e"),
        ("EMPTY", ""),
        ("UNICODE", "héllo wörld ✓"),
    ];
    let mut s = job(
        dir.path(),
        "for v in QUOTES NEWLINES DOLLARS COMMAS EMPTY UNICODE; do \
         eval \"printf '%s' \\\"\\$$v\\\"\" > \"$v\"; done",
    );
    s.env = values
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let id = client.submit(&s).unwrap();
    assert_eq!(
        wait_final(&client, id),
        JobState::Completed,
        "{}",
        read(&s.log)
    );
    for (name, value) in values {
        assert_eq!(read(&dir.path().join(name)), value, "{name}");
    }
}

#[test]
fn resources_and_extra_arguments_reach_the_scheduler() {
    let shared = cluster::shared();
    let client = shared.client();
    let dir = tempfile::tempdir().unwrap();
    let mut s = job(dir.path(), "exec sleep 300");
    s.partition = Some("debug".into());
    s.resources = Resources {
        cpus: Some(1),
        mem: Some("16M".into()),
        time_minutes: Some(20),
    };
    s.args = vec!["--hold".into(), "--comment=from orch".into()];
    let id = client.submit(&s).unwrap();
    let output = shared
        .command("scontrol")
        .args(["show", "job", "--oneliner", &id.to_string()])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    client.cancel(&[id]).unwrap();
    for field in [
        "Partition=debug",
        "TimeLimit=00:20:00",
        "MinMemoryNode=16M",
        "Comment=from orch",
        "Requeue=0",
        "JobState=PENDING Reason=JobHeldUser",
    ] {
        assert!(shown.contains(field), "{field} in {shown}");
    }
}

#[test]
fn what_the_cluster_cannot_run_is_rejected() {
    let client = cluster::shared().client();
    let dir = tempfile::tempdir().unwrap();
    let mut s = job(dir.path(), "true");
    s.partition = Some("no-such-partition".into());
    match client.submit(&s) {
        Err(e @ SlurmError::Rejected { .. }) => {
            assert!(!e.is_transient());
            assert!(e.to_string().contains("Invalid partition"), "{e}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn unknown_jobs_are_lost() {
    let client = cluster::shared().client();
    let dir = tempfile::tempdir().unwrap();
    let id = client.submit(&job(dir.path(), "true")).unwrap();
    let unknown = JobId(999_999_999);
    // Mixed with a known job, and alone (squeue then fails with "Invalid job id").
    let states = client.poll(&[unknown, id]).unwrap();
    assert_eq!(states[&unknown], JobState::Lost);
    assert_ne!(states[&id], JobState::Lost);
    assert_eq!(
        client.poll(&[unknown]).unwrap(),
        BTreeMap::from([(unknown, JobState::Lost)])
    );
    wait_final(&client, id);
}

#[test]
fn two_hundred_jobs_are_polled_and_cancelled_at_once() {
    let client = cluster::shared().client();
    let dir = tempfile::tempdir().unwrap();
    let mut s = job(dir.path(), "true");
    // Held: they wait without taking the node from the other tests.
    s.args = vec!["--hold".into()];
    let started = Instant::now();
    let ids: Vec<JobId> = (0..200).map(|_| client.submit(&s).unwrap()).collect();
    let submitted = started.elapsed();
    let started = Instant::now();
    let states = client.poll(&ids).unwrap();
    let polled = started.elapsed();
    assert_eq!(states.len(), 200);
    for (id, state) in &states {
        assert_eq!(
            state,
            &JobState::Pending {
                reason: "JobHeldUser".into()
            },
            "{id}"
        );
    }
    client.cancel(&ids).unwrap();
    let states = client.poll(&ids).unwrap();
    assert!(
        states.values().all(|s| matches!(
            s,
            JobState::Failed {
                state: EndState::Cancelled,
                ..
            }
        )),
        "{states:?}"
    );
    eprintln!("200 held jobs: submitted one by one in {submitted:?}, polled at once in {polled:?}");
}

#[test]
fn a_stopped_controller_is_unreachable() {
    // A cluster of its own: the shared one must keep its controller.
    let cluster = cluster::Cluster::start();
    let client = cluster.client();
    let dir = tempfile::tempdir().unwrap();
    let id = client.submit(&job(dir.path(), "true")).unwrap();
    cluster.stop_controller();
    for result in [
        client.poll(&[id]).map(drop),
        client.submit(&job(dir.path(), "true")).map(drop),
        client.cancel(&[id]),
    ] {
        match result {
            Err(e @ SlurmError::Unreachable { .. }) => {
                assert!(e.is_transient());
                assert!(
                    e.to_string().contains("Unable to contact slurm controller"),
                    "{e}"
                );
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}

#[test]
#[ignore = "a measurement, run by hand with --nocapture"]
fn measure_submit_to_completed() {
    let client = cluster::shared().client();
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..10 {
        let started = Instant::now();
        let id = client.submit(&job(dir.path(), "true")).unwrap();
        let mut seen = vec![(String::from("submitted"), started.elapsed())];
        loop {
            let state = client.poll(&[id]).unwrap()[&id].clone();
            let name = match &state {
                JobState::Pending { .. } => "PENDING".to_owned(),
                other => other.to_string(),
            };
            if seen.last().is_none_or(|(last, _)| *last != name) {
                seen.push((name, started.elapsed()));
            }
            if state.is_final() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let line: Vec<String> = seen
            .iter()
            .map(|(name, at)| format!("{name} {:.0} ms", at.as_secs_f64() * 1000.0))
            .collect();
        eprintln!("{}", line.join(", "));
    }
}
