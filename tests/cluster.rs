//! `orch build` with phases on a Slurm executor, against a real one-node cluster on
//! localhost (see `slurm/cluster.rs`; the project directory is the shared file system):
//! shards as jobs merged as a local build merges them, failures with the job's exit code
//! and log, cached shards never submitted, Ctrl-C and timeouts cancelling jobs,
//! `max_jobs`, and an unreachable controller.
//!
//! Slurm and munge come from `scripts/install-test-servers.sh`; the tests run as root.

// Shared with tests/slurm.rs, which uses the parts of it this file does not.
#[allow(dead_code)]
#[path = "slurm/cluster.rs"]
mod cluster;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longer than anything here takes on an idle node; only reached on a bug.
const PATIENCE: Duration = Duration::from_secs(120);

/// A project directory with an Orchfile, built against `cluster`.
struct Project {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Project {
    fn new(cluster: &cluster::Cluster, orchfile: &str) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("orch-cluster-")
            .tempdir()
            .expect("a project directory");
        std::fs::write(dir.path().join("Orchfile.toml"), orchfile).expect("the Orchfile");
        Project {
            dir,
            conf: cluster.conf().to_owned(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, text: &str) -> &Project {
        let p = self.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("a directory");
        }
        std::fs::write(p, text).expect("a file");
        self
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    fn orch(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_orch"));
        c.arg("-C")
            .arg(self.path())
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .env("NO_COLOR", "1");
        c
    }

    fn build(&self, args: &[&str]) -> Output {
        let mut all = vec!["build"];
        all.extend_from_slice(args);
        self.orch(&all).output().expect("running orch")
    }

    /// The events of the newest run.
    fn events(&self) -> Vec<Value> {
        let runs = self.path().join(".orch/runs");
        let newest = std::fs::read_dir(&runs)
            .expect(".orch/runs")
            .flatten()
            .filter(|e| e.path().join("events.jsonl").exists())
            .max_by_key(|e| {
                e.path()
                    .join("events.jsonl")
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
            })
            .expect("a run");
        events_in(&newest.path().join("events.jsonl"))
    }
}

fn events_in(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// The Slurm job ids `instance_started` events name.
fn job_ids(events: &[Value]) -> Vec<String> {
    of_type(events, "instance_started")
        .iter()
        .filter_map(|e| e["job_id"].as_str().map(str::to_owned))
        .collect()
}

fn ok(out: &Output) -> String {
    let text = format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cluster::shared().logs()
    );
    assert!(out.status.success(), "{text}");
    text
}

/// Job ids among `ids` the controller still lists as pending or running.
fn queued(cluster: &cluster::Cluster, ids: &[String]) -> Vec<String> {
    in_states(cluster, ids, "PENDING,RUNNING,COMPLETING")
}

/// Job ids among `ids` the controller lists in one of `states`.
fn in_states(cluster: &cluster::Cluster, ids: &[String], states: &str) -> Vec<String> {
    if ids.is_empty() {
        return Vec::new();
    }
    let out = cluster
        .command("squeue")
        .args(["-h", "-t", states, "-o", "%i", "-j"])
        .arg(ids.join(","))
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Waits until `cond` holds, failing the test after [`PATIENCE`].
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            cluster::shared().logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const PAGES: &str = r#"
[executor.cluster]
kind = "slurm"
max_jobs = 8

[phase.pages]
executor = "cluster"
shard = { strategy = "files", source = "texts/*.txt" }
run = "{{ echo {shard.input} {shard.key} $ORCH_SHARD_INDEX; tr a-z A-Z < {shard.input}; }} > {shard.output}"
outputs = ["out/pages.txt"]
"#;

fn pages(cluster: &cluster::Cluster) -> Project {
    let p = Project::new(cluster, PAGES);
    for (name, text) in [("a", "alpha\n"), ("b", "bravo\n"), ("c", "charlie\n")] {
        p.write(&format!("texts/{name}.txt"), text);
    }
    p
}

#[test]
fn shards_run_as_slurm_jobs_and_merge_as_a_local_build_merges_them() {
    let c = cluster::shared();
    let remote = pages(c);
    ok(&remote.build(&[]));
    let events = remote.events();
    let started: Vec<&Value> = of_type(&events, "instance_started")
        .into_iter()
        .filter(|e| e["shard"].is_object())
        .collect();
    assert_eq!(started.len(), 3, "{events:#?}");
    for e in &started {
        assert_eq!(e["executor"], "cluster", "{e}");
        assert!(
            e["job_id"]
                .as_str()
                .is_some_and(|id| id.parse::<u64>().is_ok()),
            "{e}"
        );
    }
    let ids: BTreeSet<String> = job_ids(&events).into_iter().collect();
    assert_eq!(ids.len(), 3, "one job per shard: {events:#?}");

    let local = pages(c);
    ok(&local.build(&["--executor", "local"]));
    assert!(job_ids(&local.events()).is_empty());
    assert_eq!(remote.read("out/pages.txt"), local.read("out/pages.txt"));
    assert!(!remote.read("out/pages.txt").is_empty());

    // Built on the cluster, up to date here: the executor is not part of the key.
    ok(&remote.build(&["--executor", "local"]));
    assert!(of_type(&remote.events(), "instance_started").is_empty());
}

#[test]
fn a_cached_shard_is_not_submitted_again() {
    let c = cluster::shared();
    let p = pages(c);
    ok(&p.build(&[]));
    p.write("texts/b.txt", "BRAVO two\n");
    ok(&p.build(&[]));
    let events = p.events();
    let submitted: Vec<String> = of_type(&events, "instance_started")
        .iter()
        .filter(|e| e["job_id"].is_string())
        .map(|e| e["shard"]["key"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(submitted, ["texts/b.txt"], "{events:#?}");
    let merged = String::from_utf8_lossy(&p.read("out/pages.txt")).into_owned();
    assert!(
        merged.contains("BRAVO TWO") && merged.contains("ALPHA"),
        "{merged}"
    );
}

#[test]
fn a_failing_job_fails_its_instance_with_its_exit_code_and_log() {
    let c = cluster::shared();
    let p = Project::new(
        c,
        r#"
[executor.cluster]
kind = "slurm"

[phase.doomed]
executor = "cluster"
run = "echo about to fail; exit 3"
outputs = ["out.txt"]
"#,
    );
    let out = p.build(&[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = p.events();
    let failed = of_type(&events, "instance_failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(failed[0]["kind"], "exit");
    assert_eq!(failed[0]["exit_code"], 3);
    let log = failed[0]["log"].as_str().expect("a log");
    assert!(
        String::from_utf8_lossy(&p.read(log)).contains("about to fail"),
        "the job's output is in its log"
    );
    assert_eq!(job_ids(&events).len(), 1);
}

/// A build started with `--json`, its events collected as they are written (the run's
/// events file is written in blocks).
struct Live {
    child: Child,
    seen: Arc<Mutex<Vec<Value>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Live {
    fn start(p: &Project) -> Live {
        let mut child = p
            .orch(&["build", "-j", "4", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("orch");
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stdout = child.stdout.take().expect("a piped stdout");
        let reader = {
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str(&line) {
                        seen.lock().expect("events").push(v);
                    }
                }
            })
        };
        Live {
            child,
            seen,
            reader,
        }
    }

    /// Waits until `count` jobs were submitted and are running; their ids.
    fn running(&self, c: &cluster::Cluster, count: usize) -> Vec<String> {
        let ids = || job_ids(&self.seen.lock().expect("events"));
        wait_until("the jobs submitted", || ids().len() == count);
        let submitted = ids();
        wait_until("the jobs running", || {
            in_states(c, &submitted, "RUNNING").len() == count
        });
        submitted
    }

    /// Waits for orch to exit: its exit code and every event it wrote.
    fn finish(mut self) -> (Option<i32>, Vec<Value>) {
        let status = self.child.wait().expect("orch exits");
        let _ = self.reader.join();
        let events = self.seen.lock().expect("events").clone();
        (status.code(), events)
    }
}

#[test]
fn a_job_the_scheduler_cancels_fails_with_its_state() {
    let c = cluster::shared();
    let p = Project::new(
        c,
        r#"
[executor.cluster]
kind = "slurm"

[phase.victim]
executor = "cluster"
run = "sleep 300"
"#,
    );
    let live = Live::start(&p);
    let ids = live.running(c, 1);
    // Someone else (an administrator, a preemption) cancels it.
    let out = c.command("scancel").args(&ids).output().expect("scancel");
    assert!(out.status.success());
    let (code, events) = live.finish();
    assert_eq!(code, Some(1));
    let failed = of_type(&events, "instance_failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(failed[0]["kind"], "scheduler");
    let message = failed[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("CANCELLED") && message.contains(&ids[0]),
        "{message}"
    );
}

#[test]
fn ctrl_c_cancels_the_running_jobs() {
    let c = cluster::shared();
    let p = Project::new(
        c,
        r#"
[executor.cluster]
kind = "slurm"

[phase.sleepy]
executor = "cluster"
matrix = { n = ["1", "2"] }
run = "sleep 300"
"#,
    );
    let live = Live::start(&p);
    let submitted = live.running(c, 2);
    // SAFETY: kill(2) on the PID of our own child, not yet reaped.
    unsafe { libc::kill(live.child.id() as i32, libc::SIGINT) };
    let (code, events) = live.finish();
    assert_eq!(code, Some(130));
    assert!(
        queued(c, &submitted).is_empty(),
        "jobs left behind: {:?}",
        queued(c, &submitted)
    );
    let blocked = of_type(&events, "instance_blocked");
    assert_eq!(blocked.len(), 2, "{events:#?}");
    assert!(blocked.iter().all(|e| e["reason"] == "interrupted"));
}

#[test]
fn a_timeout_cancels_its_job() {
    let c = cluster::shared();
    let p = Project::new(
        c,
        r#"
[executor.cluster]
kind = "slurm"

[phase.slow]
executor = "cluster"
timeout = "2s"
run = "sleep 300"
"#,
    );
    let out = p.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    let events = p.events();
    let failed = of_type(&events, "instance_failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(failed[0]["kind"], "timeout");
    assert!(queued(c, &job_ids(&events)).is_empty());
}

/// Shards that each record how many of them were running when they started.
fn crowd(cluster: &cluster::Cluster, max_jobs: u32) -> Project {
    let p = Project::new(
        cluster,
        &format!(
            r#"
[executor.cluster]
kind = "slurm"
max_jobs = {max_jobs}

[phase.crowd]
executor = "cluster"
shard = {{ strategy = "files", source = "in/*.txt" }}
run = "touch running/{{shard.key}}.x; ls running/in | wc -l > seen/$ORCH_SHARD_INDEX; sleep 2; rm running/{{shard.key}}.x; cat {{shard.input}} > {{shard.output}}"
outputs = ["out.txt"]
"#
        ),
    );
    for i in 0..4 {
        p.write(&format!("in/{i}.txt"), &format!("{i}\n"));
    }
    std::fs::create_dir_all(p.path().join("running/in")).expect("running/");
    std::fs::create_dir_all(p.path().join("seen")).expect("seen/");
    p
}

fn most_seen(p: &Project) -> u32 {
    (0..4)
        .map(|i| {
            String::from_utf8_lossy(&p.read(&format!("seen/{i}")))
                .trim()
                .parse::<u32>()
                .unwrap_or(u32::MAX)
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn max_jobs_bounds_the_jobs_in_flight() {
    let c = cluster::shared();
    let one = crowd(c, 1);
    ok(&one.build(&["-j", "8"]));
    assert_eq!(
        most_seen(&one),
        1,
        "never two jobs at once with max_jobs = 1"
    );
    // Positive control: with room for more, the node runs two at once.
    let four = crowd(c, 4);
    ok(&four.build(&["-j", "8"]));
    assert!(most_seen(&four) >= 2, "the jobs never overlapped");
}

#[test]
fn an_unreachable_controller_is_a_clear_failure_retried_per_the_phase() {
    let own = cluster::Cluster::start();
    own.stop_controller();
    let p = Project::new(
        &own,
        r#"
[executor.cluster]
kind = "slurm"

[phase.lonely]
executor = "cluster"
run = "true"
retry = { attempts = 2, backoff = "10ms" }
"#,
    );
    let out = p.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    let events = p.events();
    assert_eq!(
        of_type(&events, "instance_retrying").len(),
        1,
        "{events:#?}"
    );
    let failed = of_type(&events, "instance_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["kind"], "spawn");
    let message = failed[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot submit to executor `cluster`") && message.contains("unreachable"),
        "{message}"
    );
}

#[test]
fn a_retried_job_asks_for_the_same_resources() {
    let c = cluster::shared();
    let p = Project::new(
        c,
        r#"
[executor.cluster]
kind = "slurm"

[phase.flaky]
executor = "cluster"
resources = { mem = "16M", time = "20m" }
run = "exit 1"
retry = { attempts = 2, backoff = "10ms" }
"#,
    );
    let out = p.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    let ids = job_ids(&p.events());
    assert_eq!(ids.len(), 2, "one job per attempt");
    for id in &ids {
        let shown = c
            .command("scontrol")
            .args(["show", "job", "--oneliner", id])
            .output()
            .expect("scontrol");
        let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
        for field in ["TimeLimit=00:20:00", "MinMemoryNode=16M"] {
            assert!(shown.contains(field), "job {id} lacks {field}: {shown}");
        }
    }
}

#[test]
fn a_symlinked_marker_directory_is_refused_not_followed() {
    let c = cluster::shared();
    let p = Project::new(
        c,
        r#"
[executor.cluster]
kind = "slurm"

[phase.one]
executor = "cluster"
run = "true"
"#,
    );
    let outside = tempfile::tempdir().expect("a directory outside the project");
    std::fs::create_dir_all(p.path().join(".orch")).expect(".orch");
    std::os::unix::fs::symlink(outside.path(), p.path().join(".orch/cluster")).expect("symlink");
    let out = p.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("not a directory"), "{text}");
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("read").count(),
        0,
        "orch wrote through the symlink"
    );
}
