//! The parsers and the job script, on output captured from a real Slurm 22.05 cluster.

use super::*;

/// Lines squeue printed (`--Format` as in [`SQUEUE_FORMAT`]) on the tests' cluster:
/// exit 0, exit 3, `kill -9 $$`, scancel of a `sleep`, `--time=1` reached, an output
/// file in a missing directory, a held job, a running one.
const CAPTURED: &str = "\
1|COMPLETED|0|None|
2|FAILED|768|NonZeroExitCode|
3|FAILED|9|JobLaunchFailure|
4|CANCELLED|36608|None|
5|TIMEOUT|15|TimeLimit|
8|FAILED|4021|JobLaunchFailure|
9|PENDING|0|JobHeldUser|
6|RUNNING|0|None|
";

#[test]
fn squeue_lines_become_states() {
    let states = parse_squeue(CAPTURED).unwrap();
    let failed = |state, exit_code, signal, reason: &str| JobState::Failed {
        state,
        exit_code,
        signal,
        reason: reason.into(),
    };
    let expected = BTreeMap::from([
        (JobId(1), JobState::Completed),
        (
            JobId(2),
            failed(EndState::Failed, Some(3), None, "NonZeroExitCode"),
        ),
        (
            JobId(3),
            failed(EndState::Failed, None, Some(9), "JobLaunchFailure"),
        ),
        (
            JobId(4),
            failed(EndState::Cancelled, Some(143), None, "None"),
        ),
        (
            JobId(5),
            failed(EndState::Timeout, None, Some(15), "TimeLimit"),
        ),
        (
            JobId(6),
            JobState::Running {
                state: "RUNNING".into(),
            },
        ),
        (
            JobId(8),
            failed(EndState::Failed, None, Some(53), "JobLaunchFailure"),
        ),
        (
            JobId(9),
            JobState::Pending {
                reason: "JobHeldUser".into(),
            },
        ),
    ]);
    assert_eq!(states, expected);
}

#[test]
fn every_end_state_slurm_reports_is_final() {
    for name in [
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "PREEMPTED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    ] {
        let state = job_state(name, 0, "None");
        assert!(state.is_final(), "{name}: {state:?}");
        assert_eq!(EndState::parse(name).unwrap().as_str(), name);
    }
    for name in [
        "PENDING",
        "RUNNING",
        "COMPLETING",
        "CONFIGURING",
        "REQUEUED",
    ] {
        assert!(!job_state(name, 0, "None").is_final(), "{name}");
    }
    // COMPLETED with a non-zero status is not a success.
    assert!(matches!(
        job_state("COMPLETED", 256, "None"),
        JobState::Failed {
            exit_code: Some(1),
            ..
        }
    ));
}

#[test]
fn reasons_may_hold_the_separator() {
    let states = parse_squeue("7|PENDING|0|ReqNodeNotAvail, a|b|\n").unwrap();
    assert_eq!(
        states[&JobId(7)],
        JobState::Pending {
            reason: "ReqNodeNotAvail, a|b".into()
        }
    );
}

#[test]
fn unreadable_squeue_lines_are_errors() {
    for line in ["x|RUNNING|0|None|", "1|RUNNING|", "1|RUNNING|zero|None|"] {
        assert!(
            matches!(parse_squeue(line), Err(SlurmError::Parse { .. })),
            "{line}"
        );
    }
    assert!(parse_squeue("").unwrap().is_empty());
}

#[test]
fn parsable_output_gives_the_id() {
    assert_eq!(parse_parsable("42\n").unwrap(), JobId(42));
    assert_eq!(parse_parsable("42;cluster\n").unwrap(), JobId(42));
    assert!(parse_parsable("Submitted batch job 42\n").is_err());
    assert!(parse_parsable("").is_err());
}

#[test]
fn unreachable_messages_are_told_apart_from_refusals() {
    assert!(is_unreachable(
        "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    ));
    assert!(is_unreachable(
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
    ));
    assert!(!is_unreachable(
        "sbatch: error: Batch job submission failed: Requested node configuration is not available"
    ));
    assert!(!is_unreachable(
        "slurm_load_jobs error: Invalid job id specified"
    ));
}

fn submission() -> Submission {
    Submission {
        name: "translate[fr]".into(),
        command: "echo \"$GREETING\" > out.txt".into(),
        cwd: "/shared/project".into(),
        env: vec![("GREETING".into(), "it's $HOME,\n\"quoted\"".into())],
        log: "/shared/project/.orch/logs/translate.log".into(),
        partition: Some("debug".into()),
        args: vec!["--time=30:00".into()],
        resources: Resources {
            cpus: Some(2),
            mem: Some("4G".into()),
            time_minutes: Some(20),
        },
        marker: Some(("/shared/project/.orch/marker".into(), "t0k'en".into())),
    }
}

#[test]
fn the_users_arguments_come_last() {
    let args = sbatch_args(&submission());
    let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
    assert_eq!(
        args,
        [
            "--parsable",
            "--job-name=translate[fr]",
            "--chdir=/shared/project",
            "--output=/shared/project/.orch/logs/translate.log",
            "--error=/shared/project/.orch/logs/translate.log",
            "--open-mode=append",
            "--no-requeue",
            "--partition=debug",
            "--cpus-per-task=2",
            "--mem=4G",
            "--time=20",
            "--time=30:00",
        ]
    );
}

#[test]
fn the_script_quotes_every_value() {
    let script = job_script(&submission()).unwrap();
    assert!(script.starts_with("#!/bin/sh\n"), "{script}");
    assert!(
        script.contains("export GREETING='it'\\''s $HOME,\n\"quoted\"'\n"),
        "{script}"
    );
    assert!(
        script.contains("exec /bin/sh -c 'echo \"$GREETING\" > out.txt'\n"),
        "{script}"
    );
    assert!(script.contains("!= 't0k'\\''en' ]"), "{script}");
    assert!(
        script.contains(&format!("exit {CANNOT_SEE_PROJECT}")),
        "{script}"
    );
}

#[test]
fn the_script_runs_under_sh() {
    // The script itself, run by the local sh against a temporary project: the marker
    // check, the cd, the exports and the command, without Slurm.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    std::fs::write(&marker, "token\n").unwrap();
    let mut s = submission();
    s.cwd = dir.path().to_owned();
    s.command = "printf '%s' \"$GREETING\" > out.txt; exit 5".into();
    s.marker = Some((marker.clone(), "token".into()));
    let run = |s: &Submission| {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(job_script(s).unwrap())
            .output()
            .unwrap()
    };
    let output = run(&s);
    assert_eq!(output.status.code(), Some(5));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "it's $HOME,\n\"quoted\""
    );

    s.marker = Some((marker, "another".into()));
    let output = run(&s);
    assert_eq!(output.status.code(), Some(CANNOT_SEE_PROJECT));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot see the project at ") && stderr.contains("shared file system"),
        "{stderr}"
    );
}

#[test]
fn bad_environment_names_and_nul_bytes_are_refused() {
    let mut s = submission();
    s.env = vec![("A-B".into(), "x".into())];
    assert!(matches!(job_script(&s), Err(SlurmError::Invalid { .. })));
    s.env = vec![("A".into(), "x\0y".into())];
    assert!(matches!(job_script(&s), Err(SlurmError::Invalid { .. })));
    s.env = vec![("_A1".into(), String::new())];
    assert!(job_script(&s).is_ok());
}

#[test]
fn wait_statuses_decode() {
    assert_eq!(decode_wait_status(0), (Some(0), None));
    assert_eq!(decode_wait_status(768), (Some(3), None));
    assert_eq!(decode_wait_status(9), (None, Some(9)));
    assert_eq!(decode_wait_status(36608), (Some(143), None));
}
