//! A fluent builder for running the `orch` binary in a fresh project directory
//! (modelled on casey/just's `tests/test.rs`).
//!
//! ```ignore
//! let out = Test::new()
//!     .orchfile(ORCHFILE)
//!     .write("raw/a.txt", "x")
//!     .args(["build", "-j", "2"])
//!     .stdout_contains("ok")
//!     .run();
//! // Same directory, a second command:
//! out.again().args(["build"]).stdout_contains("nothing to do").run();
//! ```
//!
//! Every run uses `-C <dir>`, `NO_COLOR=1` and a null stdin. Expectations are checked
//! by `run()`, which panics with the whole stdout and stderr when one fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tempfile::TempDir;

/// The `orch` binary under test.
pub const ORCH: &str = env!("CARGO_BIN_EXE_orch");

/// A project directory shared by every command of one test.
#[derive(Clone)]
pub struct Project {
    dir: Rc<TempDir>,
}

impl Project {
    fn new() -> Project {
        Project {
            dir: Rc::new(
                tempfile::Builder::new()
                    .prefix("orch-it-")
                    .tempdir()
                    .expect("create a temporary directory"),
            ),
        }
    }

    /// The project root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `rel` inside the project.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    /// Writes `content` to `rel`, creating parent directories.
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent directories");
        }
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// The content of `rel`; panics when it cannot be read.
    pub fn read(&self, rel: &str) -> String {
        let p = self.join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    /// Whether `rel` exists.
    pub fn exists(&self, rel: &str) -> bool {
        self.join(rel).exists()
    }

    /// Removes the file `rel`.
    pub fn remove(&self, rel: &str) {
        let p = self.join(rel);
        std::fs::remove_file(&p).unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
    }

    /// Sets the modification time of `rel` to `secs_ago` seconds in the past (a `touch`
    /// that is certain to change the mtime), without changing its content.
    pub fn set_mtime_ago(&self, rel: &str, secs_ago: u64) {
        self.set_mtime(rel, SystemTime::now() - Duration::from_secs(secs_ago));
    }

    /// Sets the modification time of `rel` to `t`, without changing its content.
    pub fn set_mtime(&self, rel: &str, t: SystemTime) {
        let p = self.join(rel);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_modified(t))
            .unwrap_or_else(|e| panic!("set mtime of {}: {e}", p.display()));
    }

    /// The modification time of `rel`.
    pub fn mtime(&self, rel: &str) -> SystemTime {
        let p = self.join(rel);
        std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
    }

    /// Names of the entries of directory `rel` (sorted; empty when it does not exist).
    pub fn list(&self, rel: &str) -> Vec<String> {
        let mut v: Vec<String> = match std::fs::read_dir(self.join(rel)) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// Raw text of `.orch/runs/RUN/events.jsonl`.
    pub fn events_text(&self, run_id: &str) -> String {
        self.read(&format!(".orch/runs/{run_id}/events.jsonl"))
    }

    /// Parsed events of run `run_id`; panics on a line that is not JSON.
    pub fn events(&self, run_id: &str) -> Vec<Value> {
        parse_events(&self.events_text(run_id))
    }

    /// The run ids under `.orch/runs`, oldest first (by the mtime of `events.jsonl`,
    /// then by the `ts` of `run_started`).
    pub fn run_ids(&self) -> Vec<String> {
        let mut runs: Vec<(SystemTime, String, String)> = self
            .list(".orch/runs")
            .into_iter()
            .map(|id| {
                let file = format!(".orch/runs/{id}/events.jsonl");
                let mtime = std::fs::metadata(self.join(&file))
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let ts = std::fs::read_to_string(self.join(&file))
                    .ok()
                    .and_then(|t| {
                        t.lines()
                            .next()
                            .and_then(|l| serde_json::from_str::<Value>(l).ok())
                    })
                    .and_then(|v| v["ts"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                (mtime, ts, id)
            })
            .collect();
        runs.sort();
        runs.into_iter().map(|(_, _, id)| id).collect()
    }

    /// Events of the most recent run (prefer [`Project::events`] with an explicit
    /// `--run-id`).
    pub fn latest_events(&self) -> Vec<Value> {
        let id = self.run_ids().pop().expect("no run under .orch/runs");
        self.events(&id)
    }

    /// A fresh command (default `build`, expecting exit 0) in this project.
    pub fn test(&self) -> Test {
        Test {
            project: self.clone(),
            args: vec!["build".to_owned()],
            env: Vec::new(),
            env_remove: Vec::new(),
            status: Some(0),
            stdout_contains: Vec::new(),
            stdout_lacks: Vec::new(),
            stderr_contains: Vec::new(),
            stderr_lacks: Vec::new(),
        }
    }
}

/// One orch invocation being described.
#[must_use]
pub struct Test {
    project: Project,
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    status: Option<i32>,
    stdout_contains: Vec<String>,
    stdout_lacks: Vec<String>,
    stderr_contains: Vec<String>,
    stderr_lacks: Vec<String>,
}

impl Test {
    /// A fresh, empty project; the command is `orch build`, expected to exit 0.
    pub fn new() -> Test {
        Project::new().test()
    }

    /// The project this command runs in.
    pub fn project(&self) -> &Project {
        &self.project
    }

    /// Writes `Orchfile.toml`.
    pub fn orchfile(self, text: &str) -> Test {
        self.project.write("Orchfile.toml", text);
        self
    }

    /// Writes any file (creating parents).
    pub fn write(self, rel: &str, content: &str) -> Test {
        self.project.write(rel, content);
        self
    }

    /// Removes a file.
    pub fn remove(self, rel: &str) -> Test {
        self.project.remove(rel);
        self
    }

    /// Replaces the arguments (default: `build`).
    pub fn args<I, S>(mut self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets an environment variable for orch.
    pub fn env(mut self, key: &str, value: &str) -> Test {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Removes an environment variable for orch.
    pub fn env_remove(mut self, key: &str) -> Test {
        self.env_remove.push(key.to_owned());
        self
    }

    /// Expects this exit status (default 0).
    pub fn expect_status(mut self, status: i32) -> Test {
        self.status = Some(status);
        self
    }

    /// Expects stdout to contain `s`.
    pub fn stdout_contains(mut self, s: &str) -> Test {
        self.stdout_contains.push(s.to_owned());
        self
    }

    /// Expects stdout not to contain `s`.
    pub fn stdout_lacks(mut self, s: &str) -> Test {
        self.stdout_lacks.push(s.to_owned());
        self
    }

    /// Expects stderr to contain `s`.
    pub fn stderr_contains(mut self, s: &str) -> Test {
        self.stderr_contains.push(s.to_owned());
        self
    }

    /// Expects stderr not to contain `s`.
    pub fn stderr_lacks(mut self, s: &str) -> Test {
        self.stderr_lacks.push(s.to_owned());
        self
    }

    /// The command this test runs, not yet started (for tests that spawn it).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(ORCH);
        cmd.arg("-C")
            .arg(self.project.path())
            .args(&self.args)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null());
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the command with stdout and stderr piped, without waiting.
    pub fn spawn(&self) -> Child {
        self.command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn orch")
    }

    /// Runs the command and checks every expectation.
    pub fn run(self) -> Output {
        let out = self.command().output().expect("run orch");
        let output = Output {
            project: self.project.clone(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            status: out.status.code().unwrap_or(-1),
        };
        let mut failures = String::new();
        if let Some(s) = self.status
            && s != output.status
        {
            let _ = writeln!(failures, "expected exit status {s}, got {}", output.status);
        }
        for s in &self.stdout_contains {
            if !output.stdout.contains(s.as_str()) {
                let _ = writeln!(failures, "stdout lacks {s:?}");
            }
        }
        for s in &self.stdout_lacks {
            if output.stdout.contains(s.as_str()) {
                let _ = writeln!(failures, "stdout contains {s:?}");
            }
        }
        for s in &self.stderr_contains {
            if !output.stderr.contains(s.as_str()) {
                let _ = writeln!(failures, "stderr lacks {s:?}");
            }
        }
        for s in &self.stderr_lacks {
            if output.stderr.contains(s.as_str()) {
                let _ = writeln!(failures, "stderr contains {s:?}");
            }
        }
        if output.stderr.contains("panicked") {
            let _ = writeln!(failures, "orch panicked");
        }
        if !failures.is_empty() {
            panic!(
                "`orch {}` in {}:\n{failures}--- stdout ---\n{}--- stderr ---\n{}",
                self.args.join(" "),
                self.project.path().display(),
                output.stdout,
                output.stderr
            );
        }
        output
    }
}

/// What a finished command printed.
pub struct Output {
    /// The project it ran in.
    pub project: Project,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Its exit status (-1 when killed by a signal).
    pub status: i32,
}

impl Output {
    /// A new command in the same project (default `build`, expecting exit 0).
    pub fn again(&self) -> Test {
        self.project.test()
    }

    /// Stdout parsed as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl std::ops::Deref for Output {
    type Target = Project;
    fn deref(&self) -> &Project {
        &self.project
    }
}

/// Parses JSON Lines; panics (naming the line) on one that does not parse.
pub fn parse_events(text: &str) -> Vec<Value> {
    text.lines()
        .enumerate()
        .map(|(n, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("event line {} is not JSON ({e}): {l}", n + 1))
        })
        .collect()
}

/// Events of type `ty`.
pub fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

/// Instances named by events of type `ty`, in event order.
pub fn instances_of(events: &[Value], ty: &str) -> Vec<String> {
    of_type(events, ty)
        .into_iter()
        .filter_map(|e| e["instance"].as_str().map(str::to_owned))
        .collect()
}

/// Instances restored from the cache, in order.
pub fn cached(events: &[Value]) -> Vec<String> {
    instances_of(events, "instance_cached")
}

/// Instances whose command started, in order.
pub fn ran(events: &[Value]) -> Vec<String> {
    instances_of(events, "instance_started")
}

/// Instances skipped as up to date (including early cutoff), in order.
pub fn skipped(events: &[Value]) -> Vec<String> {
    instances_of(events, "instance_skipped")
}

/// Instances up to date before the build began, read as a consumer reads them: the
/// `selected` names without an event of their own, checked against the count
/// `plan_ready` gives (`up_to_date_unlisted`); sorted.
pub fn unlisted(events: &[Value], selected: &[&str]) -> Vec<String> {
    let named: std::collections::BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["instance"].as_str())
        .collect();
    let out: Vec<String> = selected
        .iter()
        .filter(|n| !named.contains(**n))
        .map(|n| (*n).to_owned())
        .collect();
    let plan = of_type(events, "plan_ready");
    assert_eq!(plan.len(), 1, "{events:#?}");
    assert_eq!(
        plan[0]["up_to_date_unlisted"].as_u64(),
        Some(out.len() as u64),
        "{events:#?}"
    );
    sorted(out)
}

/// Instances reported blocked, in order.
pub fn blocked(events: &[Value]) -> Vec<String> {
    instances_of(events, "instance_blocked")
}

/// The one event of type `ty` about `instance`; panics unless there is exactly one.
pub fn event<'a>(events: &'a [Value], ty: &str, instance: &str) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == ty && e["instance"] == instance)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one `{ty}` event for `{instance}`, found {}: {events:#?}",
        found.len()
    );
    found[0]
}

/// Sorted copy, for comparing sets of instance names.
pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// `["a", "b"]` as owned strings.
pub fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The entry of `instance` in `orch plan --json` / `orch status --json` output.
pub fn plan_entry<'a>(plan: &'a Value, instance: &str) -> &'a Value {
    plan["instances"]
        .as_array()
        .expect("`instances` is an array")
        .iter()
        .find(|e| e["instance"] == instance)
        .unwrap_or_else(|| panic!("no instance `{instance}` in {plan:#}"))
}

/// The reason codes of `instance` in a plan.
pub fn reasons(plan: &Value, instance: &str) -> Vec<String> {
    plan_entry(plan, instance)["reasons"]
        .as_array()
        .expect("`reasons` is an array")
        .iter()
        .map(|r| r.as_str().expect("a reason code").to_owned())
        .collect()
}

/// Waits, polling, until `cond` holds; panics after `limit`. For conditions another
/// process brings about (never as a substitute for a result orch reports).
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A shell snippet for `run` that waits (up to about `secs` seconds, in 10 ms steps)
/// until `cond` (a shell test) holds, and exits 1 if it never does. Contains no `{`.
pub fn sh_wait_until(cond: &str, secs: u32) -> String {
    let steps = secs * 100;
    format!(
        "i=0; until {cond}; do i=$((i+1)); if [ $i -gt {steps} ]; then echo 'gave up waiting for: {}' >&2; exit 1; fi; sleep 0.01; done",
        cond.replace('\'', "")
    )
}

/// A diamond: `a` (from `raw/*.txt`) → `b`, `c` → `d`.
pub const DIAMOND: &str = r#"
[orch]
format = 1

[phase.a]
description = "Concatenate the raw texts"
run = "cat {inputs} > {output}"
inputs = ["raw/*.txt"]
outputs = ["out/a.txt"]

[phase.b]
needs = ["a"]
run = "sed 's/^/b:/' {needs.a.outputs} > {output}"
outputs = ["out/b.txt"]

[phase.c]
needs = ["a"]
run = "sed 's/^/c:/' {needs.a.outputs} > {output}"
outputs = ["out/c.txt"]

[phase.d]
needs = ["b", "c"]
run = "cat {needs.b.outputs} {needs.c.outputs} > {output}"
outputs = ["out/d.txt"]
"#;

/// The diamond project with its two raw files, not yet built.
pub fn diamond() -> Test {
    Test::new()
        .orchfile(DIAMOND)
        .write("raw/1.txt", "one\n")
        .write("raw/2.txt", "two\n")
}

/// The diamond project, built once.
pub fn built_diamond() -> Output {
    diamond().args(["build", "--run-id", "first"]).run()
}
